"""The search end to end on a real local Ray instance (loopback, no dashboard).

Whole tiny searches: finished, with a worker killed mid-training, with the driver killed (-9) and
resumed — compared against an uninterrupted run of the same seed —, stopped by Ctrl-C or SIGTERM and
resumed; random search, finished and resumed; a checkpoint of the layout before the algorithm was a
choice, resumed; and bad configs.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import yaml
from helpers import processes_titled, records, wait_for, write_config

from evosearch.cli import main
from evosearch.outcomes import Status
from evosearch.runner.ray_cluster import LOOPBACK_ENV, loopback_only
from evosearch.runner.run_directory import CHECKPOINT_VERSION

os.environ[LOOPBACK_ENV] = "0"  # Ray on 127.0.0.1 (the driver also pins it)


def comparable(record: dict) -> dict:
    """A record without what legitimately differs between runs: times and worker processes."""
    out = {k: v for k, v in record.items() if k not in ("seconds", "finished_at", "probe")}
    out["tasks"] = [
        {k: v for k, v in t.items() if k not in ("wall_s", "images_per_s", "worker")} for t in record["tasks"]
    ]
    if record["probe"] is not None:
        timings = ("seconds", "cpu_seconds", "worker")
        out["probe"] = {k: v for k, v in record["probe"].items() if k not in timings}
    return out


def run_cli(*argv: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "evosearch.cli", *argv], capture_output=True, text=True, timeout=timeout
    )


def test_tiny_search_end_to_end(tmp_path, capsys):
    config = write_config(tmp_path, "e2e")
    data = yaml.safe_load(config.read_text())
    data["tasks"][0]["name"] = "tiny_resnet"  # an objective named apart from its task
    config.write_text(yaml.safe_dump(data))
    code = main(["run", str(config), "--quiet", "--json"])
    out = capsys.readouterr().out
    assert code == 0
    summary = json.loads(out)
    run_dir = tmp_path / "runs" / "e2e"
    events = records(run_dir)
    assert summary["evaluations"] == 5 == sum(e["status"] in ("trained", "hurdle", "failed") for e in events)
    assert summary["candidates"] == len(events)
    assert sorted(e["id"] for e in events) == list(range(len(events)))  # no id lost or repeated
    statuses = {e["status"] for e in events}
    assert statuses <= {s.value for s in Status}
    seeds = [e for e in events if e["origin"] == "seed"]
    assert {e["formula"] for e in seeds} >= {"x * sigmoid(v * x) / group_std(x)"}
    for e in events:
        if e["status"] == "rejected":
            assert e["reasons"] and e["probe"]["passed"] is False and not e["tasks"]
        if e["tasks"]:  # results and reasons name the objective, not the task it was made from
            assert e["tasks"][0]["task"] == "tiny_resnet"
            assert all(reason.startswith("tiny_resnet: ") for reason in e["reasons"])
        if e["status"] == "trained":
            assert len(e["scores"]) == 1 and 0 <= e["scores"][0] <= 1
            assert e["tasks"][0]["exit_reason"] == "completed" and e["tasks"][0]["worker"]["pid"] > 0
    checkpoint = json.loads((run_dir / "checkpoint.json").read_text())
    assert checkpoint["algorithm"] == "evolution" and checkpoint["searcher"]["pending"] == []
    assert yaml.safe_load((run_dir / "config.yaml").read_text())["name"] == "e2e"
    best = sorted(p.name for p in (run_dir / "best").iterdir())
    assert (
        "README.md" in best
        and any(n.endswith(".py") for n in best)
        and any(n.endswith(".yaml") for n in best)
    )
    assert summary["table"] and all("formula" in row for row in summary["table"])


def test_existing_run_needs_resume_and_a_finished_run_resumes_to_no_work(tmp_path, capsys):
    config = write_config(tmp_path, "again", evaluations=2)
    assert main(["run", str(config), "--quiet"]) == 0
    before = records(tmp_path / "runs" / "again")
    capsys.readouterr()
    assert main(["run", str(config), "--quiet"]) == 1
    assert "already exists" in capsys.readouterr().err
    assert main(["run", str(tmp_path / "runs" / "again"), "--resume", "--quiet"]) == 0
    assert records(tmp_path / "runs" / "again") == before  # nothing repeated
    # a changed config is refused unless forced; a larger budget is a permitted change
    assert main(["run", str(config), "--resume", "--quiet", "--set", "seed=8"]) == 1
    assert "differs from the run's saved config in seed" in capsys.readouterr().err
    assert main(["run", str(config), "--resume", "--quiet", "--set", "search.max_evaluations=3"]) == 0
    after = records(tmp_path / "runs" / "again")
    assert after[: len(before)] == before and sum(e["status"] != "rejected" for e in after) >= 3


def test_random_search_end_to_end_resumes_and_keeps_its_algorithm(tmp_path, capsys):
    config = write_config(tmp_path, "random", evaluations=3)
    data = yaml.safe_load(config.read_text())
    data["search"]["algorithm"] = "random"
    config.write_text(yaml.safe_dump(data))
    assert main(["run", str(config), "--quiet"]) == 0
    run_dir = tmp_path / "runs" / "random"
    first = records(run_dir)
    by_id = sorted(first, key=lambda e: e["id"])
    assert [e["origin"] for e in by_id[:3]] == ["seed"] * 3  # the references come first
    assert {e["origin"] for e in by_id[3:]} <= {"random"}
    assert all(e["parent"] is None and e["mutation"] is None for e in first)  # nothing is mutated
    checkpoint = json.loads((run_dir / "checkpoint.json").read_text())
    assert checkpoint["algorithm"] == "random" and checkpoint["searcher"]["pending"] == []
    assert "population" not in checkpoint["searcher"]

    # a larger budget resumes where the run stopped: the numbering goes on, only random graphs come
    assert main(["run", str(run_dir), "--resume", "--quiet", "--set", "search.max_evaluations=4"]) == 0
    after = records(run_dir)
    assert after[: len(first)] == first and len(after) > len(first)
    assert sorted(e["id"] for e in after) == list(range(len(after)))
    assert {e["origin"] for e in after[len(first) :]} == {"random"}

    # another algorithm cannot continue this run's state, not even forced, and nothing is written
    config_before = (run_dir / "config.yaml").read_text()
    capsys.readouterr()
    argv = ["run", str(run_dir), "--resume", "--quiet", "--force", "--set", "search.algorithm=evolution"]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert "was searched with search.algorithm=random; it cannot resume with evolution" in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert records(run_dir) == after and (run_dir / "config.yaml").read_text() == config_before


def test_a_checkpoint_from_before_the_algorithm_choice_resumes(tmp_path):
    config = write_config(tmp_path, "old", evaluations=2)
    assert main(["run", str(config), "--quiet"]) == 0
    run_dir = tmp_path / "runs" / "old"
    path = run_dir / "checkpoint.json"
    checkpoint = json.loads(path.read_text())
    checkpoint["evolution"] = checkpoint.pop("searcher")  # version 1: before search.algorithm
    del checkpoint["algorithm"]
    checkpoint["version"] = 1
    path.write_text(json.dumps(checkpoint))
    before = records(run_dir)
    assert main(["run", str(run_dir), "--resume", "--quiet", "--set", "search.max_evaluations=3"]) == 0
    after = records(run_dir)
    assert after[: len(before)] == before and sorted(e["id"] for e in after) == list(range(len(after)))
    resumed = json.loads(path.read_text())
    assert (
        resumed["version"] == CHECKPOINT_VERSION
        and resumed["algorithm"] == "evolution"
        and "evolution" not in resumed
    )
    old_members = [m["id"] for m in checkpoint["evolution"]["population"]]
    assert old_members and set(old_members) <= {m["id"] for m in resumed["searcher"]["population"]}


def test_worker_killed_mid_training_is_retried(tmp_path):
    config = write_config(tmp_path, "killworker", evaluations=3, concurrency=1, steps=150)
    proc = subprocess.Popen(
        [sys.executable, "-m", "evosearch.cli", "run", str(config), "--quiet"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        (victim,) = wait_for(
            lambda: processes_titled("ray::train_on_task", proc.pid)[:1], 120, "a training worker"
        )
        time.sleep(0.5)
        os.kill(victim, signal.SIGKILL)
        _, err = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 0, err
    events = records(tmp_path / "runs" / "killworker")
    trained = [e for e in events if e["tasks"]]
    assert len(trained) == 3
    assert all(e["status"] == "trained" for e in trained), [e["reasons"] for e in trained]
    assert victim not in {e["tasks"][0]["worker"]["pid"] for e in trained}  # the retry ran elsewhere


def test_driver_killed_then_resumed_matches_an_uninterrupted_run(tmp_path):
    straight = write_config(tmp_path, "straight", evaluations=5, concurrency=1)
    result = run_cli("run", str(straight), "--quiet")
    assert result.returncode == 0, result.stderr

    killed = write_config(tmp_path, "killed", evaluations=5, concurrency=1)
    run_dir = tmp_path / "runs" / "killed"
    proc = subprocess.Popen(
        [sys.executable, "-m", "evosearch.cli", "run", str(killed), "--quiet"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        events = run_dir / "events.jsonl"
        wait_for(lambda: events.is_file() and len(events.read_text().splitlines()) >= 3, 180, "3 records")
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the driver and its local Ray, mid-run
        proc.wait()
    done_before = records(run_dir)
    assert len(done_before) < len(records(tmp_path / "runs" / "straight"))

    result = run_cli("run", str(run_dir), "--resume", "--quiet")
    assert result.returncode == 0, result.stderr
    resumed = records(run_dir)
    expected = records(tmp_path / "runs" / "straight")
    assert [r["id"] for r in resumed[: len(done_before)]] == [r["id"] for r in done_before]  # none lost
    assert sorted(r["id"] for r in resumed) == list(range(len(resumed)))  # none repeated
    # the same candidates with the same results in the same order: deterministic replay with one worker
    assert [comparable(r) for r in resumed] == [comparable(r) for r in expected]
    a = json.loads((tmp_path / "runs" / "straight" / "checkpoint.json").read_text())["searcher"]
    b = json.loads((run_dir / "checkpoint.json").read_text())["searcher"]
    assert [m["id"] for m in b["population"]] == [m["id"] for m in a["population"]]
    assert [m["scores"] for m in b["population"]] == [m["scores"] for m in a["population"]]


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_ctrl_c_or_sigterm_stops_cleanly_and_resumes(tmp_path, signum):
    config = write_config(tmp_path, "stopped", evaluations=3, concurrency=2, steps=150)
    run_dir = tmp_path / "runs" / "stopped"
    proc = subprocess.Popen(
        [sys.executable, "-m", "evosearch.cli", "run", str(config)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        events = run_dir / "events.jsonl"
        wait_for(lambda: events.is_file() and events.read_text().strip(), 180, "a first record")
        os.killpg(proc.pid, signum)  # as a terminal's Ctrl-C: the driver and its Ray processes
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 130, err
    assert f"{signal.Signals(signum).name}: stopping" in err and "Traceback" not in err
    assert f"resume with: evosearch run {run_dir} --resume" in err
    done = records(run_dir)
    pending = json.loads((run_dir / "checkpoint.json").read_text())["searcher"]["pending"]
    assert pending, "candidates were in flight: they wait in the checkpoint to run again"
    assert not {p["id"] for p in pending} & {r["id"] for r in done}
    assert all(r["status"] != "failed" for r in done)  # the stop is not a failure of a candidate
    if signum == signal.SIGTERM:
        return  # resuming is the same after either signal; once is enough
    result = run_cli("run", str(run_dir), "--resume", "--quiet")
    assert result.returncode == 0, result.stderr
    resumed = records(run_dir)
    assert resumed[: len(done)] == done
    assert sorted(r["id"] for r in resumed) == list(range(len(resumed)))
    assert sum(r["status"] == "trained" for r in resumed) == 3


def test_a_local_instance_binds_to_loopback_whatever_ray_read_at_import(monkeypatch):
    from ray._private import ray_constants, services

    # As if Ray had been imported before anyone set the variable: it would bind to the network address.
    monkeypatch.setattr(ray_constants, "ENABLE_RAY_CLUSTER", True)
    monkeypatch.delenv(LOOPBACK_ENV)
    assert services.resolve_ip_for_localhost("127.0.0.1") != "127.0.0.1"
    with loopback_only():
        assert services.resolve_ip_for_localhost("127.0.0.1") == "127.0.0.1"
        assert os.environ[LOOPBACK_ENV] == "0"  # for the processes the instance starts
    assert ray_constants.ENABLE_RAY_CLUSTER is True and LOOPBACK_ENV not in os.environ  # joins advertise


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"search": {"populaton_size": 5}}, "unknown key search.populaton_size; valid keys of search:"),
        ({"search": {"algorithm": "annealing"}}, "search.algorithm: unknown search algorithm 'annealing'"),
        ({"search": {"population_size": "many"}}, "search.population_size must be an integer"),
        ({"tasks": [{"task": "no_such_task"}]}, "unknown task 'no_such_task'"),
        ({"tasks": [{"task": "generated_resnet", "set": {"train.stepz": 3}}]}, "unknown key train.stepz"),
        ({"search": {"ops": ["add", "frobnicate"]}}, "unknown ops frobnicate; known: add"),
        ({"search": {"seeds": ["bn_relu", "nope"]}}, "unknown seeds nope; seeds: bn_relu"),
        ({"resources": {"concurrency": 0}}, "resources.concurrency must be at least 1"),
        ({"search": {"layout": "sequence"}}, "search.layout must be one of image, tokens, got 'sequence'"),
        (  # an image network offered token seeds, and the reverse
            {"search": {"seeds": ["bn_relu", "dyt"]}},
            "search.seeds: dyt are not for the image layout (search.layout); its seeds: bn_relu",
        ),
        (
            {"search": {"layout": "tokens", "seeds": ["layernorm"]}},
            "tasks[0] (generated_resnet): its network (cifar_resnet) takes image layers (N, C, H, W), "
            "but search.layout is tokens",
        ),
        (
            {"search": {"layout": "tokens", "seeds": ["layernorm"]}, "tasks": [{"task": "generated_gpt"}]},
            "tasks[0] (generated_gpt) is causal, so its layers must not read other tokens, but search.ops "
            "has batch_mean, batch_rms, batch_std, batch_var, instance_mean, instance_rms and 2 more; "
            "set search.ops: per_token",
        ),
        (
            {"search": {"layout": "tokens", "ops": "per_token", "seeds": ["bn_relu"]}},
            "are not for the tokens",
        ),
        (
            {"tasks": [{"task": "cifar10_resnet20", "set": {"dataset.path": "/nonexistent/cifar"}}]},
            "CIFAR-10 not found",
        ),
    ],
)
def test_bad_configs_fail_before_any_work_with_one_line(tmp_path, capsys, change, message):
    path = write_config(tmp_path, "bad")
    data = yaml.safe_load(path.read_text())
    for key, value in change.items():
        data[key] = {**data[key], **value} if isinstance(value, dict) else value
    path.write_text(yaml.safe_dump(data))
    code = main(["run", str(path), "--quiet"])
    err = capsys.readouterr().err
    assert code == 1
    assert message in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert not (tmp_path / "runs" / "bad").exists()  # nothing was started


def test_malformed_yaml_and_missing_config(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("search: {population_size: [1, 2\n")
    assert main(["run", str(bad)]) == 1
    assert "malformed YAML" in capsys.readouterr().err
    assert main(["run", str(tmp_path / "missing.yaml")]) == 1
    assert "config file not found" in capsys.readouterr().err
    assert main(["run", str(tmp_path), "--quiet"]) == 1
    assert "is a directory" in capsys.readouterr().err
    assert main(["run", str(tmp_path / "nothing"), "--resume"]) == 1
    assert "config file not found" in capsys.readouterr().err
