"""How training tasks run on Ray workers (a real local instance on loopback): GPU evaluations each in
a new process, device faults retried in new processes and then recorded with their reason."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import ray
import torch
from test_train import tiny_task

from evosearch.config import from_dict
from evosearch.layers.graph_io import graph_to_dict
from evosearch.layers.seeds import seed_graph
from evosearch.runner.driver import LOOPBACK_ENV, start_ray
from evosearch.runner.run_config import ResourcesConfig, RunConfig
from evosearch.runner.workers import pack_data, submit_training, training_options, training_result
from evosearch.tasks.datasets import load_dataset

os.environ[LOOPBACK_ENV] = "0"  # Ray on 127.0.0.1 (the driver also pins it)

TINY = tiny_task(steps=2)


@pytest.fixture(scope="module")
def local_ray():
    # A GPU resource the machine need not have: Ray only schedules by it, and training runs on
    # the CPU where CUDA is absent, so the GPU path's process handling is tested anywhere.
    assert start_ray(from_dict(RunConfig, {"resources": {"num_cpus": 2, "num_gpus": 1}}))
    yield
    ray.shutdown()


def test_gpu_evaluations_each_get_a_new_worker_process(local_ray):
    resources = ResourcesConfig(cpus_per_evaluation=1, gpus_per_evaluation=0.5)
    data = ray.put(pack_data(load_dataset(TINY.dataset)))
    graph = graph_to_dict(seed_graph("bn_relu"))
    results = [training_result(submit_training(graph, TINY, data, resources)) for _ in range(2)]
    assert all(r["exit_reason"] == "completed" for r in results), results
    assert len({r["worker"]["pid"] for r in results}) == 2  # no process reused across GPU evaluations


def test_a_device_fault_is_retried_in_new_processes_then_recorded(local_ray, tmp_path: Path):
    def fails_on_the_device(log: str) -> None:  # local: Ray ships it by value, not by module name
        with open(log, "a") as f:
            f.write(f"{os.getpid()}\n")
        raise torch.AcceleratorError("CUDA error: an illegal memory access was encountered")

    resources = ResourcesConfig(gpus_per_evaluation=0.5, retries=2)
    log = tmp_path / "attempts"
    remote = ray.remote(max_calls=1)(fails_on_the_device)  # as submit_training's GPU path
    result = training_result(remote.options(**training_options(resources)).remote(str(log)))
    assert result["exit_reason"].startswith("device_error: AcceleratorError: CUDA error: an illegal")
    attempts = log.read_text().split()
    assert len(attempts) == 1 + resources.retries and len(set(attempts)) == len(attempts)
