"""A run directory holds what reading it later needs: its resolved tasks and objective names
(``tasks.yaml``), read by ``report``, ``export RUN``, ``rerank`` and ``--resume`` whatever becomes of
the task files; runs written before that file existed still read; a checkpoint of an unknown format
version is refused in one line; exit reasons and statuses keep their spelling on disk.

Most runs here are written by hand, without Ray, through :class:`RunDirectory` as the driver writes
them (config, events, best layers, tasks); one real search checks that resuming trains on the stored
tasks after the task file was edited and renamed.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import pytest
import yaml
from helpers import cli_error, cli_json

from evosearch.cli import main
from evosearch.config import ConfigError
from evosearch.errors import EvosearchError
from evosearch.layers.graph_io import graph_to_dict
from evosearch.layers.seeds import seed_graph
from evosearch.outcomes import EVALUATED, ExitReason, Status, candidate_status
from evosearch.runner.driver import LOOPBACK_ENV
from evosearch.runner.rerank import resolve_tasks
from evosearch.runner.run_config import load_run_config, load_tasks
from evosearch.runner.run_directory import CHECKPOINT_VERSION, CandidateRecord, RunDirectory

os.environ[LOOPBACK_ENV] = "0"  # Ray on 127.0.0.1 (the driver also pins it)

TINY_TASK = """\
dataset: {name: generated, image_size: 16, train_size: 128, val_size: 64}
model: {arch: cifar_resnet, depth: 8}
train: {steps: 4, batch_size: 32, lr: 0.2}
"""
SCORES = {"bn_relu": 0.5, "gn_relu": 0.4, "evonorm_s0": 0.6}  # in the order the run finished them


def write_run_config(root: Path, name: str, **sections) -> Path:
    """A run config whose one task is ``tiny_task.yaml``, a task file of its own (written here)."""
    (root / "tiny_task.yaml").write_text(TINY_TASK)
    data = {
        "name": name,
        "output_dir": str(root / "runs"),
        "tasks": [{"task": str(root / "tiny_task.yaml"), "set": {"train.log_every": 2}}],
        "resources": {"concurrency": 1, "num_cpus": 2},
        **sections,
    }
    path = root / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def write_run(root: Path, *, with_tasks: bool = True) -> Path:
    """A finished run as the driver writes it (config, events, best layers, tasks), without Ray: three
    trained seeds and a rejection. ``with_tasks=False``: a run written before ``tasks.yaml`` existed."""
    config = load_run_config(write_run_config(root, "handmade"))
    run = RunDirectory(config.run_dir)
    run.write_config(config)
    tasks, objectives = load_tasks(config)
    if with_tasks:
        run.write_tasks(tasks, objectives)
    records = [seed_record(i, name, [score], objectives) for i, (name, score) in enumerate(SCORES.items())]
    rejected = seed_record(len(records), "evonorm_b0", None, objectives)
    for record in [*records, rejected]:
        run.append_event(record)
    run.write_best(records, objectives)
    return run.path


def seed_record(id: int, name: str, scores: list[float] | None, objectives: list[str]) -> CandidateRecord:
    """A seed's record: trained with ``scores``, or rejected by the probes where they are None."""
    graph = seed_graph(name)
    record = CandidateRecord(
        id=id,
        status=Status.REJECTED,
        origin="seed",
        formula=graph.formula(),
        structural_hash=graph.structural_hash(),
        graph=graph_to_dict(graph),
        reasons=["gradient_ratio: 2e+03 > max_gradient_ratio 1000"],
    )
    if scores is None:
        return record
    tasks = [
        {"task": o, "exit_reason": "completed", "top1": s} for o, s in zip(objectives, scores, strict=True)
    ]
    return dataclasses.replace(record, status=Status.TRAINED, reasons=[], tasks=tasks, scores=scores)


def readings(capsys, run: Path, out: Path) -> dict:
    """What ``report`` and ``export`` say of a run, less the times they were written at."""
    report = cli_json(capsys, "report", str(run))
    report.pop("generated_at")
    exported = cli_json(capsys, "export", str(run), "--out", str(out))
    index = (out / "README.md").read_text().splitlines()
    return {"report": report, "export": exported, "index": [line for line in index if "Written" not in line]}


# ---- tasks.yaml ---------------------------------------------------------------------------------


def test_a_run_holds_its_resolved_tasks_and_objectives(tmp_path):
    run = RunDirectory(write_run(tmp_path))
    expected = load_tasks(run.read_config())
    assert run.read_tasks() == expected and run.objectives() == ["tiny_task"]
    stored = yaml.safe_load(run.tasks_path.read_text())
    assert stored["objectives"][0]["name"] == "tiny_task"
    assert stored["objectives"][0]["task"]["train"]["steps"] == 4  # every key, resolved: plain data
    assert stored["objectives"][0]["task"]["train"]["momentum"] == 0.9  # a default the file leaves out


def test_editing_or_renaming_a_task_file_leaves_report_and_export_as_they_were(tmp_path, capsys):
    run = write_run(tmp_path)
    before = readings(capsys, run, tmp_path / "out")
    tasks_before = RunDirectory(run).read_tasks()
    file = tmp_path / "tiny_task.yaml"
    file.write_text("name: edited\n" + TINY_TASK.replace("steps: 4", "steps: 7"))
    assert readings(capsys, run, tmp_path / "out") == before
    file.rename(tmp_path / "renamed.yaml")
    assert readings(capsys, run, tmp_path / "out") == before
    assert RunDirectory(run).read_tasks() == tasks_before
    assert before["report"]["objectives"] == ["tiny_task"] and before["export"][0]["tiny_task"] == 0.6


def test_a_run_written_before_tasks_yaml_still_reads(tmp_path, capsys):
    old = write_run(tmp_path, with_tasks=False)
    assert not (old / "tasks.yaml").exists()
    data = readings(capsys, old, tmp_path / "out")
    assert data["report"]["objectives"] == ["tiny_task"] and data["report"]["candidates"] == 4
    assert data["report"]["best"] == {"tiny_task": [0.5, 0.5, 0.6]}
    assert [row["id"] for row in data["export"]] == [2, 0, 1]
    assert any(line.startswith("| 0 | 2 | 0.6000 |") for line in data["index"])
    run = RunDirectory(old)
    assert run.read_tasks() == load_tasks(run.read_config())  # resolved from config.yaml, as before
    assert not (old / "tasks.yaml").exists()  # reading never writes


def test_rerank_trains_the_stored_tasks_with_overrides_on_top(tmp_path):
    run = RunDirectory(write_run(tmp_path))
    (tmp_path / "tiny_task.yaml").unlink()  # rerank needs no task file of the run
    (task,), names = resolve_tasks(run, [], ["train.steps=2", "train.lr=0.05"])
    assert names == ["tiny_task"] and (task.train.steps, task.train.lr) == (2, 0.05)
    assert task.dataset.train_size == 128  # the run's own settings stay under the overrides
    with pytest.raises(ConfigError, match=r"^tiny_task: unknown key train\.stepz; valid keys of train: "):
        resolve_tasks(run, [], ["train.stepz=2"])
    (other,), names = resolve_tasks(run, ["generated_mobilenet"], ["train.steps=3"])
    assert names == ["generated_mobilenet"] and other.train.steps == 3 and other.model.arch != task.model.arch


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("objectives: [", "tasks.yaml: malformed YAML"),
        ("objectives: []\n", "tasks.yaml: expected 'objectives:', a list of {name, task} entries"),
        ("- tiny_task\n", "tasks.yaml: expected 'objectives:', a list of {name, task} entries"),
    ],
)
def test_a_damaged_tasks_yaml_is_one_clear_line(tmp_path, capsys, text, message):
    run = write_run(tmp_path)
    (run / "tasks.yaml").write_text(text)
    assert message in cli_error(capsys, "report", str(run))
    assert message in cli_error(capsys, "export", str(run), "--out", str(tmp_path / "out"))


def test_report_reads_only_the_names_and_rerank_checks_the_tasks(tmp_path, capsys):
    run = write_run(tmp_path)
    stored = yaml.safe_load((run / "tasks.yaml").read_text())
    stored["objectives"][0]["task"]["train"]["stepz"] = 1  # a key from a later evosearch
    (run / "tasks.yaml").write_text(yaml.safe_dump(stored))
    assert cli_json(capsys, "report", str(run))["objectives"] == ["tiny_task"]
    with pytest.raises(ConfigError, match=r"tasks\.yaml: unknown key tiny_task\.train\.stepz; valid keys"):
        RunDirectory(run).read_tasks()


# ---- checkpoint ---------------------------------------------------------------------------------


def test_a_checkpoint_carries_its_version_and_an_unknown_one_is_refused(tmp_path, capsys):
    run = RunDirectory(write_run(tmp_path))
    run.save_checkpoint({"elapsed_s": 1.5})
    assert json.loads(run.checkpoint_path.read_text())["version"] == CHECKPOINT_VERSION
    assert run.load_checkpoint() == {"version": CHECKPOINT_VERSION, "elapsed_s": 1.5}
    for state in ({"version": CHECKPOINT_VERSION + 1, "elapsed_s": 1.5}, {"elapsed_s": 1.5}, [1]):
        run.checkpoint_path.write_text(json.dumps(state))
        with pytest.raises(EvosearchError, match=r"checkpoint version .* is not one this evosearch reads"):
            run.load_checkpoint()
    run.checkpoint_path.write_text(json.dumps({"version": 1, "evolution": {}}))
    assert run.load_checkpoint()["version"] == 1  # the layout before search.algorithm, still read
    run.checkpoint_path.write_text(json.dumps({"version": 99}))
    refused = "checkpoint version 99 is not one this evosearch reads (1, 2)"
    assert refused in cli_error(capsys, "report", str(run.path))
    assert refused in cli_error(capsys, "run", str(run.path), "--resume", "--quiet")


# ---- outcomes -----------------------------------------------------------------------------------


def test_exit_reasons_and_statuses_keep_their_spelling_on_disk():
    assert [str(e) for e in ExitReason] == [
        "completed", "time_limit", "quality_hurdle", "non_finite_loss", "error",
        "timeout", "cancelled", "out_of_memory", "worker_crashed", "device_error",
    ]  # fmt: skip
    assert [str(s) for s in Status] == ["trained", "hurdle", "failed", "rejected", "duplicate", "equivalent"]
    assert f"{Status.HURDLE}: {ExitReason.TIME_LIMIT}" == "hurdle: time_limit"


@pytest.mark.parametrize(
    ("exits", "status"),
    [
        (["completed", "time_limit"], Status.TRAINED),
        (["completed", "quality_hurdle"], Status.HURDLE),
        (["quality_hurdle", "quality_hurdle"], Status.HURDLE),
        (["quality_hurdle", "non_finite_loss"], Status.FAILED),
        (["completed", "error: ValueError: bad shape"], Status.FAILED),
        (["timeout"], Status.FAILED),
    ],
)
def test_a_candidate_status_follows_from_how_its_trainings_ended(exits, status):
    assert candidate_status(exits) is status


# ---- resume (a real search) ---------------------------------------------------------------------


def test_resume_trains_on_the_stored_tasks_after_the_task_file_changed(tmp_path):
    search = {"max_evaluations": 1, "seeds": ["bn_relu", "gn_relu"], "seed_mutations": 1, "random_graphs": 1}
    assert main(["run", str(write_run_config(tmp_path, "resumed", search=search)), "--quiet"]) == 0
    run = RunDirectory(tmp_path / "runs" / "resumed")
    stored = run.tasks_path.read_text()
    task_file = tmp_path / "tiny_task.yaml"

    task_file.write_text("name: edited\n" + TINY_TASK.replace("steps: 4", "steps: 7"))
    resume = ["run", str(run.path), "--resume", "--quiet", "--set"]
    assert main([*resume, "search.max_evaluations=2"]) == 0
    task_file.rename(tmp_path / "renamed.yaml")  # the run's config still names tiny_task.yaml
    assert main([*resume, "search.max_evaluations=3"]) == 0

    evaluated = [r for r in run.read_events() if r.status in EVALUATED]
    assert len(evaluated) == 3 and all(r.tasks[0]["task"] == "tiny_task" for r in evaluated)
    completed = [r.tasks[0] for r in evaluated if r.tasks[0]["exit_reason"] == "completed"]
    assert completed and all(task["steps"] == 4 for task in completed)  # not the edited file's 7
    assert run.tasks_path.read_text() == stored
