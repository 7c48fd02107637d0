"""Fixtures shared by several test modules."""

import os

import pytest
import ray
import torch

from evosearch.config import from_dict
from evosearch.runner.ray_cluster import LOOPBACK_ENV, start_ray
from evosearch.runner.run_config import RunConfig


@pytest.fixture(scope="module")
def one_torch_thread():
    """The probe networks and images are small: intra-op threads gain little, and they stall one
    another when other work shares the machine (10-30x slower), so these tests run on one."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# Modules opt in: pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def local_ray():
    """One local Ray instance on loopback for a module's in-process searches: each ``evosearch run``
    joins it instead of starting and stopping its own, which costs seconds a run."""
    os.environ[LOOPBACK_ENV] = "0"  # Ray on 127.0.0.1 (the driver also pins it)
    assert start_ray(from_dict(RunConfig, {"resources": {"num_cpus": 2}}))
    yield
    ray.shutdown()
