"""The run configs shipped in configs/ load, validate and resolve their tasks (no data needed)."""

from __future__ import annotations

from pathlib import Path

import pytest

from evosearch.runner.run_config import load_run_config, load_tasks

CONFIGS = sorted((Path(__file__).parent.parent / "configs").glob("*.yaml"))


def test_the_shipped_configs_are_found():
    assert {p.stem for p in CONFIGS} >= {"quickstart", "cifar10_proxy", "imagenet_proxy"}


@pytest.mark.parametrize("path", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_a_shipped_config_loads_with_its_tasks(path):
    config = load_run_config(path)
    tasks, objectives = load_tasks(config)
    assert len(tasks) == len(objectives) == len(config.tasks) >= 1
