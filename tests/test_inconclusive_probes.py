"""A probe with no verdict, on a real search (a local Ray instance on loopback, real probes): it is run
again, then recorded inconclusive, never rejected, and neither the same structure nor the same function
proposed later is dismissed as a copy of it: it is probed anew, in the same session and after a resume.
And structural dedupe after a resume matches the live run's."""

from __future__ import annotations

import dataclasses
import itertools
import os
from collections import Counter

import pytest
from helpers import cli_json, records, write_config

from evosearch.cli import main
from evosearch.layers.seeds import SEEDS
from evosearch.runner.progress import SearchStats
from evosearch.runner.ray_cluster import LOOPBACK_ENV

os.environ[LOOPBACK_ENV] = "0"  # Ray on 127.0.0.1 (the driver also pins it)

# No probe finishes within a microsecond of CPU time (compiling the layer alone takes more), so every
# try is inconclusive, on any machine and under any load.
PROBES = {"resnet_depth": 8, "cpu_limit_s": 1e-6}
RETRIES = 1


@pytest.fixture
def chained_bn_relu(monkeypatch):
    """BN-ReLU followed by 150 nodes ``h = max(h, h)``: the same function, so the same fingerprint, as
    ``bn_relu``, and a probe of ``resnet_depth: 8`` that costs ~2.6 CPU s against ~0.09, of which
    compiling, the fingerprint and stability take ~0.12."""
    names = ["h", *(f"h{k}" for k in range(150))]
    chain = [f"{after} = max({before}, {before})" for before, after in itertools.pairwise(names)]
    formula = "\n".join([f"h = {SEEDS['bn_relu'].formula}", *chain, names[-1]])
    monkeypatch.setitem(SEEDS, "bn_relu_chained", dataclasses.replace(SEEDS["bn_relu"], formula=formula))


def test_an_inconclusive_probe_is_retried_recorded_and_its_structure_probed_again(
    local_ray, tmp_path, capsys
):
    config = write_config(
        tmp_path,
        "inconclusive",
        evaluations=2,
        concurrency=1,  # each candidate finishes before the next is proposed
        search={"seeds": ["bn_relu"] * 3, "max_candidates": 2},  # one structure, proposed three times
        probes=PROBES,
        resources={"retries": RETRIES},
    )
    summary = cli_json(capsys, "run", str(config), "--quiet")
    assert summary["statuses"] == {"inconclusive": 2} and summary["rejections"] == {}
    run_dir = tmp_path / "runs" / "inconclusive"
    assert main(["run", str(run_dir), "--resume", "--quiet", "--set", "search.max_candidates=3"]) == 0

    found = sorted(records(run_dir), key=lambda r: r["id"])
    assert [r["id"] for r in found] == [0, 1, 2]  # the third after a restore from the log
    for record in found:
        assert record["status"] == "inconclusive" and record["same_as"] is None
        assert record["reasons"] == ["cpu_limit: probing needed more than the 1e-06 CPU s limit"]
        assert record["probe"]["inconclusive"] and record["probe"]["attempts"] == RETRIES + 1
        assert record["scores"] is None and record["tasks"] == []


def test_the_progress_line_counts_inconclusive_probes():
    assert "| inconclusive 3 |" in SearchStats(statuses=Counter(inconclusive=3, trained=1)).line()
    assert "inconclusive" not in SearchStats(statuses=Counter(trained=1)).line()


def test_an_inconclusive_probe_is_no_functional_original(local_ray, chained_bn_relu, tmp_path):
    """The chained layer's probe computes its fingerprint, then runs out of budget; BN-ReLU, the same
    function, passes its probe after it and is trained, not reused as an equivalent of a candidate
    that has no result."""
    config = write_config(
        tmp_path,
        "same_function",
        evaluations=2,
        concurrency=1,
        search={"seeds": ["bn_relu_chained", "bn_relu"], "max_candidates": 2},
        probes={"resnet_depth": 8, "cpu_limit_s": 0.5},
        resources={"retries": 0},
    )
    assert main(["run", str(config), "--quiet"]) == 0
    chained, plain = sorted(records(tmp_path / "runs" / "same_function"), key=lambda r: r["id"])
    assert chained["status"] == "inconclusive" and chained["fingerprint"] is not None
    assert chained["reasons"] == ["cpu_limit: probing needed more than the 0.5 CPU s limit"]
    assert plain["fingerprint"] == chained["fingerprint"]
    assert plain["status"] == "trained" and plain["same_as"] is None


def test_a_resumed_run_dedupes_structures_as_the_live_one(local_ray, tmp_path):
    """A duplicate recorded while its original was in flight has no result of its own: after a resume,
    the structure's next proposal reuses the original's, as it would have without the resume."""
    config = write_config(
        tmp_path,
        "resumed_dedupe",
        evaluations=2,
        concurrency=2,  # the second proposal is made while the first is in flight
        search={"seeds": ["bn_relu"] * 3, "max_candidates": 2},
        probes={"resnet_depth": 8},
    )
    assert main(["run", str(config), "--quiet"]) == 0
    run_dir = tmp_path / "runs" / "resumed_dedupe"
    assert main(["run", str(run_dir), "--resume", "--quiet", "--set", "search.max_candidates=3"]) == 0
    original, in_flight_copy, later_copy = sorted(records(run_dir), key=lambda r: r["id"])
    assert in_flight_copy["status"] == "duplicate" and in_flight_copy["scores"] is None
    assert original["status"] == "trained"
    assert later_copy["status"] == "duplicate" and later_copy["same_as"] == original["id"]
    assert later_copy["scores"] == original["scores"]
