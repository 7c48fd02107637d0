"""The driver's ways of finishing a candidate without a score of its own, each on a tiny real search (a
local Ray instance on loopback, real probes and trainings), read from the run's ``events.jsonl``: a
structural duplicate and a functional equivalent reuse an earlier candidate's result untrained, and
a training past ``resources.evaluation_timeout_s`` is cancelled and recorded while the search goes on.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

import pytest
from helpers import records, write_config

from evosearch.cli import main
from evosearch.layers.seeds import SEEDS
from evosearch.runner.ray_cluster import LOOPBACK_ENV

os.environ[LOOPBACK_ENV] = "0"  # Ray on 127.0.0.1 (the driver also pins it)

# The shipped seeds are pairwise different functions, so the tests add BN-ReLU written two more ways:
# with the operands of max, + and * swapped (the structural hash sorts them: the same structure), and
# with the weight multiplied before the division (another structure, the same function).
BN_RELU_REWRITTEN = {
    "bn_relu_commuted": "max(0, bias + weight * ((x - batch_mean(x)) / batch_std(x)))",
    "bn_relu_reassociated": "max(weight * (x - batch_mean(x)) / batch_std(x) + bias, 0)",
}
PROBES = {"resnet_depth": 8, "time_limit": 60.0}  # a busy machine must not turn a pass into a timeout


@pytest.fixture
def rewritten_seeds(monkeypatch):
    for name, formula in BN_RELU_REWRITTEN.items():
        monkeypatch.setitem(SEEDS, name, dataclasses.replace(SEEDS["bn_relu"], formula=formula))


def search(tmp_path: Path, name: str, seeds: list[str], **settings: Any) -> list[dict]:
    """The records, by id, of a search that evaluates ``seeds`` (the first proposals), one at a time."""
    config = write_config(
        tmp_path,
        name,
        evaluations=2,
        concurrency=1,  # each candidate finishes before the next is proposed
        search={"seeds": seeds, "max_candidates": len(seeds)},
        probes=PROBES,
        **settings,
    )
    assert main(["run", str(config), "--quiet"]) == 0
    return sorted(records(tmp_path / "runs" / name), key=lambda r: r["id"])


def test_a_structural_duplicate_reuses_the_result_without_a_probe_or_training(
    local_ray, rewritten_seeds, tmp_path
):
    first, second = search(tmp_path, "duplicate", ["bn_relu", "bn_relu_commuted"])
    assert first["status"] == "trained" and len(first["tasks"]) == 1
    assert second["formula"] != first["formula"] and second["structural_hash"] == first["structural_hash"]
    assert second["status"] == "duplicate" and second["same_as"] == first["id"]
    assert second["scores"] == first["scores"]
    assert second["probe"] is None and second["tasks"] == []


def test_a_functional_equivalent_is_probed_then_reuses_the_result_without_training(
    local_ray, rewritten_seeds, tmp_path
):
    first, second = search(tmp_path, "equivalent", ["bn_relu", "bn_relu_reassociated"])
    assert first["status"] == "trained" and len(first["tasks"]) == 1
    assert second["structural_hash"] != first["structural_hash"]
    assert second["probe"]["passed"] and second["fingerprint"] == first["fingerprint"]
    assert second["status"] == "equivalent" and second["same_as"] == first["id"]
    assert second["scores"] == first["scores"] and second["tasks"] == []


def test_a_training_past_the_evaluation_timeout_is_recorded_and_the_search_goes_on(local_ray, tmp_path):
    timeout_s = 3.0
    trainings = search(
        tmp_path,
        "timeout",
        ["bn_relu", "gn_relu"],
        steps=100_000,  # hours of training: only the timeout ends it
        resources={"evaluation_timeout_s": timeout_s},
    )
    assert [r["id"] for r in trainings] == [0, 1]  # the second was proposed after the first timed out
    for record in trainings:
        assert record["status"] == "failed" and record["reasons"] == ["generated_resnet: timeout"]
        assert [t["exit_reason"] for t in record["tasks"]] == ["timeout"]
        assert record["seconds"]["train"] >= timeout_s
