"""The multi-fidelity funnel: promotion by rung (pure), and whole searches with it on a local Ray
instance — rung records, reused runs, confirmed claims, and a driver killed with a promotion in
flight, resumed to the same results as a run never interrupted."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import cli_error, records, tiny_task, wait_for, write_config

from evosearch.config import ConfigError
from evosearch.errors import EvosearchError
from evosearch.runner.ray_cluster import LOOPBACK_ENV
from evosearch.runner.run_config import load_run_config
from evosearch.search.funnel import FidelitySettings, Funnel, Rung, rank_results

os.environ[LOOPBACK_ENV] = "0"

THREE_RUNGS = FidelitySettings(rungs=[Rung(0.5, 1), Rung(1.0, 1), Rung(1.0, 3)], eta=3)


def funnel_with(results: dict[int, tuple[float, ...]], settings: FidelitySettings = THREE_RUNGS) -> Funnel:
    funnel = Funnel(settings)
    for candidate_id, scores in results.items():
        funnel.add_result(candidate_id, 0, scores)
    return funnel


def promotions(funnel: Funnel) -> list[tuple[int, int]]:
    out = []
    while (promotion := funnel.next_promotion()) is not None:
        out.append(promotion)
    return out


# ---- promotion rules ----------------------------------------------------------------------------


def test_the_best_third_of_a_rung_goes_on_as_results_arrive_with_no_barrier():
    funnel = funnel_with({0: (0.5,), 1: (0.7,)})
    assert funnel.next_promotion() is None  # floor(2 / 3) = 0: nobody yet
    funnel.add_result(2, 0, (0.6,))
    assert promotions(funnel) == [(1, 1)]  # the best of three, at once
    funnel.add_result(3, 0, (0.9,))
    funnel.add_result(4, 0, (0.1,))
    assert promotions(funnel) == [(3, 1)]  # floor(5 / 3) = 1: the best now, though 1 went before
    funnel.add_result(5, 0, (0.2,))
    assert funnel.next_promotion() is None  # 6 results: the top two, 3 and 1, are on already
    assert funnel.in_flight == [(1, 1), (3, 1)]


def test_promotion_looks_from_the_highest_rung_down():
    funnel = funnel_with({i: (0.1 * i,) for i in range(6)})
    assert promotions(funnel) == [(5, 1), (4, 1)]
    for i, score in ((5, 0.9), (4, 0.5), (9, 0.1)):
        funnel.add_result(i, 1, (score,))
    funnel.add_result(3, 0, (0.35,))  # no change at rung 0
    assert funnel.next_promotion() == (5, 2)  # rung 1 first: 3 results, its best goes to the top


def test_ranking_is_by_pareto_rank_then_mean():
    results = {0: (0.9, 0.1), 1: (0.1, 0.9), 2: (0.5, 0.45), 3: (0.4, 0.4)}
    # 0, 1 and 2 are non-dominated; 2's mean (0.475) is below 0 and 1 (0.5), and 0 is older than 1
    assert rank_results(results) == [0, 1, 2, 3]


def test_seed_layers_go_through_every_rung_and_failed_candidates_never_go_on():
    funnel = Funnel(THREE_RUNGS)
    funnel.add_result(0, 0, (0.0,), reference=True)  # a seed that failed a short rung goes on too
    funnel.add_result(1, 0, (0.2,), reference=True)
    assert promotions(funnel) == [(0, 1), (1, 1)]  # references go on at once, whatever their rank
    funnel.add_result(1, 1, (0.3,))
    assert promotions(funnel) == [(1, 2)]
    failed = funnel_with({i: (0.0,) for i in range(9)})
    assert failed.next_promotion() is None and failed.leader_promotion() is None


def test_leaders_are_confirmed_when_the_search_takes_no_new_candidates():
    funnel = funnel_with({0: (0.4,), 1: (0.6,)})  # too few for the quota
    assert funnel.next_promotion() is None
    assert funnel.leader_promotion() == (1, 1)
    assert funnel.leader_promotion() is None  # rung 1 has no result yet: wait for it
    funnel.add_result(1, 1, (0.62,))
    assert funnel.leader_promotion() == (1, 2)
    funnel.add_result(1, 2, (0.61,))
    assert funnel.leader_promotion() is None and funnel.counts() == [2, 1, 1]


def test_the_state_restores_the_promotions_in_flight_exactly():
    funnel = funnel_with({i: (0.1 * i,) for i in range(7)})
    assert funnel.next_promotion() == (6, 1)
    funnel.add_result(6, 1, (0.7,))
    assert funnel.next_promotion() == (5, 1)  # in flight when the state is saved
    state = json.loads(json.dumps(funnel.state_dict()))

    resumed = funnel_with({i: (0.1 * i,) for i in range(7)})
    resumed.load_state_dict(state)
    resumed.add_result(6, 1, (0.7,))
    assert resumed.in_flight == [(5, 1)] and resumed.next_promotion() is None
    with pytest.raises(EvosearchError, match="rung"):
        Funnel(THREE_RUNGS).load_state_dict({"promoted": [[1, 7]]})


@pytest.mark.parametrize(
    "override, message",
    [
        ("search.fidelity.eta=1", "eta must be at least 2"),
        ("search.fidelity.rungs=[]", "at least one rung"),
        ("search.fidelity.rungs=[{steps: 0}]", "0 < steps <= 1"),
        ("search.fidelity.rungs=[{steps: 1, seeds: 3}, {steps: 0.5, seeds: 3}]", "at least as many steps"),
        ("search.fidelity.rungs=[{steps: 1}, {steps: 1}]", "more of one"),
        ("search.fidelity.rungs=[{step: 1}]", "unknown key"),
    ],
)
def test_bad_rungs_are_one_config_error(override, message):
    with pytest.raises(ConfigError, match=message):
        load_run_config("quickstart", [override])


def test_a_rung_trains_a_fraction_of_the_schedule_with_its_seed():
    task = tiny_task(steps=300, warmup_steps=30, hurdle_step=100, seed=4)
    short = task.at_fidelity(0.34, seed_offset=2).train
    assert (short.steps, short.warmup_steps, short.hurdle_step, short.seed) == (102, 10, 100, 6)
    assert task.at_fidelity(0.25).train.hurdle_step is None  # it ends before the hurdle: none
    assert task.at_fidelity(1.0) == task


# ---- whole searches -----------------------------------------------------------------------------

FUNNEL = {"fidelity": {"eta": 2, "rungs": [{"steps": 0.5}, {"steps": 1.0}, {"steps": 1.0, "seeds": 3}]}}


def funnel_config(tmp_path, name, **sections):
    return write_config(tmp_path, name, evaluations=5, concurrency=1, steps=8, search=FUNNEL, **sections)


def run_cli(*argv: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "evosearch.cli", *argv], capture_output=True, text=True, timeout=timeout
    )


def rung_records(run_dir) -> list[dict]:
    path = run_dir / "rungs.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.is_file() else []


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> tuple[Path, dict]:
    """One tiny funnel search run to the end, with one worker (so it replays exactly): its run
    directory and its summary. Tests that change a run work on a copy."""
    root = tmp_path_factory.mktemp("funnel")
    result = run_cli("run", str(funnel_config(root, "straight")), "--quiet", "--json")
    assert result.returncode == 0, result.stderr
    return root / "runs" / "straight", json.loads(result.stdout)


def test_a_funnel_search_trains_each_rung_reuses_runs_and_confirms_at_the_top(finished):
    run_dir, summary = finished
    trained = [r for r in records(run_dir) if r["tasks"]]
    assert all(t["steps"] == 4 and t["fidelity"] == [0.5, 0] for r in trained for t in r["tasks"])
    rungs = rung_records(run_dir)
    seeds = {r["id"] for r in records(run_dir) if r["origin"] == "seed" and r["status"] == "trained"}
    top = [r for r in rungs if r["rung"] == 2]
    assert seeds <= {r["id"] for r in top}  # every seed layer is confirmed: the claims' references
    by_rung = {(r["id"], r["rung"]): r for r in rungs}
    for record in top:
        assert [t["fidelity"] for t in record["tasks"]] == [[1.0, 0], [1.0, 1], [1.0, 2]]
        assert [t["seed"] for t in record["tasks"]] == [0, 1, 2]  # the task's train.seed, plus 0, 1, 2
        reused = record["tasks"][0]
        assert reused["reused"] and reused["top1"] == by_rung[record["id"], 1]["tasks"][0]["top1"]
        top1 = [t["top1"] if t["exit_reason"] == "completed" else 0.0 for t in record["tasks"]]
        assert record["scores"] == [pytest.approx(sum(top1) / 3)]
    claims = summary["claims"]
    assert claims["rung"] == 2 and claims["noise"]["generated_resnet"]["dof"] >= 2 * len(seeds)
    labels = {c["verdict"] for claim in claims["claims"] for v in claim["versus"].values() for c in v}
    assert labels <= {"better", "worse", "within noise"} and claims["claims"]
    new_steps = sum(t["steps"] for r in trained for t in r["tasks"])
    new_steps += sum(t["steps"] for r in rungs for t in r["tasks"] if not t.get("reused"))
    assert summary["train_steps"] == new_steps
    noise = json.loads((run_dir / "noise.json").read_text())
    assert noise["objectives"]["generated_resnet"]["sd"] == claims["noise"]["generated_resnet"]["sd"]
    readme = (run_dir / "best" / "README.md").read_text()
    assert "Welch" in readme and "± " in readme


def comparable(entry: dict) -> dict:
    """A record, or a rung record, without what differs between runs: times and worker processes."""
    out = {k: v for k, v in entry.items() if k not in ("seconds", "finished_at", "probe")}
    skip = ("wall_s", "images_per_s", "worker")
    out["tasks"] = [{k: v for k, v in t.items() if k not in skip} for t in entry["tasks"]]
    return out


def test_a_driver_killed_with_a_promotion_in_flight_resumes_to_the_same_results(tmp_path, finished):
    run_dir = tmp_path / "runs" / "killed"
    proc = subprocess.Popen(
        [sys.executable, "-m", "evosearch.cli", "run", str(funnel_config(tmp_path, "killed")), "--quiet"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        wait_for(lambda: promotion_in_flight(run_dir), 180, "a promotion in flight")
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the driver and its local Ray, a promotion under way
        proc.wait()
    in_flight = promotion_in_flight(run_dir)
    assert in_flight, "the kill came after the promotion finished"

    result = run_cli("run", str(run_dir), "--resume", "--quiet")
    assert result.returncode == 0, result.stderr
    straight = finished[0]
    assert [comparable(r) for r in records(run_dir)] == [comparable(r) for r in records(straight)]
    assert [comparable(r) for r in rung_records(run_dir)] == [comparable(r) for r in rung_records(straight)]
    keys = [(r["id"], r["rung"]) for r in rung_records(run_dir)]
    assert in_flight <= set(keys) and len(keys) == len(set(keys))  # run once, and only once


def promotion_in_flight(run_dir) -> set[tuple[int, int]]:
    """Promotions the checkpoint says are decided and ``rungs.jsonl`` has no result of."""
    try:
        checkpoint = json.loads((run_dir / "checkpoint.json").read_text())
    except (OSError, ValueError):
        return set()
    done = {(r["id"], r["rung"]) for r in rung_records(run_dir)}
    return {(i, r) for i, r in checkpoint.get("funnel", {}).get("promoted", [])} - done


def test_a_damaged_rung_record_is_set_aside_on_resume_and_its_promotion_runs_again(tmp_path, finished):
    run_dir = tmp_path / "damaged"
    shutil.copytree(finished[0], run_dir)
    lines = (run_dir / "rungs.jsonl").read_text().splitlines(keepends=True)
    first = json.loads(lines[0])
    lines[0] = json.dumps({**first, "rung": "one"}) + "\n"
    (run_dir / "rungs.jsonl").write_text("".join(lines))
    result = run_cli("run", str(run_dir), "--resume")
    assert result.returncode == 0, result.stderr
    assert "set aside 1 damaged line(s) in rungs.jsonl.corrupt" in result.stderr
    assert "rung must be int" in (run_dir / "rungs.jsonl.corrupt").read_text()
    keys = [(r["id"], r["rung"]) for r in rung_records(run_dir)]
    assert (first["id"], first["rung"]) in keys and len(keys) == len(set(keys))  # trained again, once


def test_a_transfer_task_that_cannot_load_fails_before_the_search(tmp_path, capsys):
    config = funnel_config(tmp_path, "transfer", transfer={"tasks": [{"task": "no_such_task"}]})
    message = cli_error(capsys, "run", str(config), "--quiet")
    assert "no_such_task" in message
    assert not (tmp_path / "runs" / "transfer").exists()
