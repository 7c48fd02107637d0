"""How training tasks run on Ray workers (a real local instance on loopback), submitted through
:func:`submit_training` as the driver and ``rerank`` submit them: GPU evaluations each in a new
process, device faults retried in new processes and then recorded with their reason."""

from __future__ import annotations

import os

import pytest
import ray
from helpers import processes_titled, tiny_task

from evosearch.config import from_dict
from evosearch.layers.graph_io import graph_to_dict
from evosearch.layers.seeds import seed_graph
from evosearch.runner.ray_cluster import LOOPBACK_ENV, start_ray
from evosearch.runner.run_config import ResourcesConfig, RunConfig
from evosearch.runner.workers import pack_data, submit_training, training_result
from evosearch.tasks.datasets import load_dataset

os.environ[LOOPBACK_ENV] = "0"  # Ray on 127.0.0.1 (the driver also pins it)

TINY = tiny_task(steps=2)
BN_RELU = graph_to_dict(seed_graph("bn_relu"))


@pytest.fixture(scope="module")
def data_ref():
    # A GPU resource the machine need not have: Ray only schedules by it, and training runs on
    # the CPU where CUDA is absent, so the GPU path's process handling is tested anywhere.
    assert start_ray(from_dict(RunConfig, {"resources": {"num_cpus": 2, "num_gpus": 1}}))
    yield ray.put(pack_data(load_dataset(TINY.dataset)))
    ray.shutdown()


def test_gpu_evaluations_each_get_a_new_worker_process(data_ref):
    resources = ResourcesConfig(cpus_per_evaluation=1, gpus_per_evaluation=0.5)
    results = [training_result(submit_training(BN_RELU, TINY, data_ref, resources)) for _ in range(2)]
    assert all(r["exit_reason"] == "completed" for r in results), results
    assert len({r["worker"]["pid"] for r in results}) == 2  # no process reused across GPU evaluations


def test_a_device_fault_is_retried_in_new_processes_then_recorded(data_ref):
    resources = ResourcesConfig(gpus_per_evaluation=0.5, retries=2)
    faulty = tiny_task(steps=2, inject_device_fault_at_step=1)  # every attempt faults
    earlier = set(processes_titled("ray::train_on_task", os.getsid(0)))  # still exiting after the last test
    ref = submit_training(BN_RELU, faulty, data_ref, resources)
    attempts: set[int] = set()  # the processes seen running it: a new one takes seconds to its first step
    while True:
        attempts.update(processes_titled("ray::train_on_task", os.getsid(0)))
        if ray.wait([ref], timeout=0.01)[0]:
            break
    attempts -= earlier
    result = training_result(ref)
    assert result["exit_reason"] == (
        "device_error: AcceleratorError: injected device fault at step 1 (train.inject_device_fault_at_step)"
    )
    assert len(attempts) == 1 + resources.retries, attempts  # each attempt in a process of its own
