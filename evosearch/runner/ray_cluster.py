"""The Ray instance a search or a rerank runs on: a cluster joined by address, or a new local one
bound to loopback."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

import ray

from evosearch.errors import EvosearchError, one_line

if TYPE_CHECKING:
    from evosearch.runner.run_config import RunConfig


def start_ray(config: RunConfig) -> bool:
    """Join the configured cluster, or start a local instance on loopback; True if we started it."""
    if ray.is_initialized():
        return False
    resources = config.resources
    address = resources.address or os.environ.get("RAY_ADDRESS")
    if address:
        try:
            ray.init(address=address, log_to_driver=False)
        except (ConnectionError, RuntimeError, ValueError) as e:
            raise EvosearchError(f"cannot join the Ray cluster at {address}: {one_line(e)}") from None
        return True
    with loopback_only():
        ray.init(
            address="local",  # a new instance: never join a cluster someone else started on this machine
            num_cpus=resources.num_cpus,
            num_gpus=resources.num_gpus,
            include_dashboard=False,
            log_to_driver=False,
            _node_ip_address="127.0.0.1",
        )
    return True


LOOPBACK_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"


@contextmanager
def loopback_only() -> Iterator[None]:
    """Let a Ray instance started inside bind to 127.0.0.1.

    Ray replaces 127.0.0.1 by this machine's network address unless its cluster mode is off, which it
    reads from ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER`` once, at import: setting the variable later, or
    passing ``_node_ip_address``, is not enough. So both the variable (for the processes Ray starts)
    and the constant Ray read are set here, and put back after: the started instance keeps its
    address, and a later join of a real cluster from this process advertises a reachable one.
    """
    from ray._private import ray_constants

    saved = ray_constants.ENABLE_RAY_CLUSTER, os.environ.get(LOOPBACK_ENV)
    ray_constants.ENABLE_RAY_CLUSTER, os.environ[LOOPBACK_ENV] = False, "0"
    try:
        yield
    finally:
        ray_constants.ENABLE_RAY_CLUSTER = saved[0]
        if saved[1] is None:
            os.environ.pop(LOOPBACK_ENV)
        else:
            os.environ[LOOPBACK_ENV] = saved[1]
