"""A run directory holds what reading it later needs: its resolved tasks and objective names
(``tasks.yaml``), read by ``report``, ``export RUN``, ``rerank`` and ``--resume`` whatever becomes of
the task files; runs written before that file existed still read; a checkpoint of an unknown format
version, or a damaged one, is refused in one line; exit reasons and statuses keep their spelling on
disk. Damage to ``events.jsonl`` loses no record: only a torn last line is cut, other bad lines and
repeated ids are set aside on resume and skipped, with a warning, by readers; a record is checked
field by field. A lost or stale checkpoint is refused, or rebuilt from the records on request, and
no id is ever handed out twice.

Most runs here are written by hand, without Ray, through :class:`RunDirectory` as the driver writes
them (config, events, best layers, tasks); real searches check that resuming trains on the stored
tasks after the task file was edited and renamed, and that a run whose checkpoint was deleted resumes
only when asked to rebuild, with the population it had and no id reused.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from pathlib import Path

import pytest
import yaml
from helpers import cli_error, cli_json, records, write_config

from evosearch.cli import main
from evosearch.cli.run import resolve_run_config
from evosearch.config import ConfigError
from evosearch.errors import EvosearchError
from evosearch.layers.graph_io import graph_to_dict
from evosearch.layers.seeds import seed_graph
from evosearch.outcomes import EVALUATED, ExitReason, Status, candidate_status
from evosearch.runner.driver import SearchDriver
from evosearch.runner.progress import Progress
from evosearch.runner.ray_cluster import LOOPBACK_ENV
from evosearch.runner.rerank import resolve_tasks
from evosearch.runner.run_config import load_run_config, load_tasks
from evosearch.runner.run_directory import CHECKPOINT_VERSION, CandidateRecord, RecordError, RunDirectory

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
    run.write_best([(r.id, r.graph) for r in records], "# best\n")
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
    assert any(line.startswith("| 0 | 2 | 0 | 1 | 0.600 |") for line in data["index"])  # id, rung, seeds
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


SEARCH_STATE = {"next_id": 4, "rng": [3, [0] * 625, None], "pending": [], "population": []}
CHECKPOINT = {"algorithm": "evolution", "searcher": SEARCH_STATE, "elapsed_s": 1.5}


def test_a_checkpoint_carries_its_version_and_an_unknown_one_is_refused(tmp_path, capsys):
    run = RunDirectory(write_run(tmp_path))
    run.save_checkpoint(CHECKPOINT)
    assert json.loads(run.checkpoint_path.read_text())["version"] == CHECKPOINT_VERSION
    assert run.load_checkpoint() == {"version": CHECKPOINT_VERSION, **CHECKPOINT}
    for state in ({**CHECKPOINT, "version": CHECKPOINT_VERSION + 1}, CHECKPOINT, [1]):
        run.checkpoint_path.write_text(json.dumps(state))
        with pytest.raises(EvosearchError, match=r"checkpoint version .* is not one this evosearch reads"):
            run.load_checkpoint()
    run.checkpoint_path.write_text(json.dumps({"version": 1, "evolution": SEARCH_STATE, "elapsed_s": 0}))
    assert run.load_checkpoint()["version"] == 1  # the layout before search.algorithm, still read
    run.checkpoint_path.write_text(json.dumps({"version": 99}))
    refused = "checkpoint version 99 is not one this evosearch reads (1, 2, 3)"
    assert refused in cli_error(capsys, "report", str(run.path))
    assert refused in cli_error(capsys, "run", str(run.path), "--resume", "--quiet")


@pytest.mark.parametrize(
    "state",
    [
        "{not json",
        "[" * 100_000,
        {"version": 2},
        {**CHECKPOINT, "searcher": {}},
        {**CHECKPOINT, "searcher": []},
        {**CHECKPOINT, "searcher": {**SEARCH_STATE, "next_id": "5"}},
        {**CHECKPOINT, "searcher": {**SEARCH_STATE, "pending": None}},
        {**CHECKPOINT, "elapsed_s": None},
        {**CHECKPOINT, "searcher": {**SEARCH_STATE, "population": [{"id": [1], "scores": [0.5]}]}},
    ],
)
def test_a_damaged_checkpoint_is_one_line_that_names_the_way_out(tmp_path, capsys, state):
    run = RunDirectory(write_run(tmp_path))
    run.checkpoint_path.write_text(state if isinstance(state, str) else json.dumps({"version": 2, **state}))
    before = run.checkpoint_path.read_bytes()
    for command in (["report", str(run.path)], ["run", str(run.path), "--resume", "--quiet"]):
        err = cli_error(capsys, *command)
        assert "checkpoint.json" in err and "--rebuild-checkpoint" in err and len(err) < 400
    assert run.checkpoint_path.read_bytes() == before


# ---- outcomes -----------------------------------------------------------------------------------


def test_exit_reasons_and_statuses_keep_their_spelling_on_disk():
    assert [str(e) for e in ExitReason] == [
        "completed", "time_limit", "quality_hurdle", "non_finite_loss", "error",
        "timeout", "cancelled", "out_of_memory", "worker_crashed", "device_error",
    ]  # fmt: skip
    assert [str(s) for s in Status] == [
        "trained", "hurdle", "failed", "rejected", "duplicate", "equivalent", "inconclusive",
    ]  # fmt: skip
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


def test_resume_trains_on_the_stored_tasks_after_the_task_file_changed(local_ray, tmp_path):
    search = {"max_evaluations": 1, "seeds": ["bn_relu", "gn_relu"], "seed_mutations": 1, "random_graphs": 1}
    search["fidelity"] = {"rungs": [{"steps": 1.0}]}  # every run the task's whole schedule
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


# ---- damaged events.jsonl -----------------------------------------------------------------------

DAMAGE = {
    "garbage": b"\x00\xffnot json at all\n",
    "blank": b"\n",
    "truncated JSON": b'{"id": 9, "status": "trai\n',
    "a string id": None,  # a copy of record 1 with "id": "../../victim"
    "not an object": b"[1, 2, 3]\n",
    "nested 100,000 deep": b"[" * 100_000 + b"\n",
}


def damage_line(run: RunDirectory, kind: str) -> bytes:
    """The line ``kind`` names: bytes that are no record, or a record of the wrong types."""
    if DAMAGE[kind] is not None:
        return DAMAGE[kind]
    record = json.loads(run.events_path.read_text().splitlines()[1])
    return json.dumps({**record, "id": "../../victim"}).encode() + b"\n"


def insert_after_first_line(run: RunDirectory, line: bytes) -> list[bytes]:
    """``line`` inserted into ``events.jsonl`` after its first record; the intact lines, in order."""
    intact = run.events_path.read_bytes().splitlines(keepends=True)
    run.events_path.write_bytes(b"".join([intact[0], line, *intact[1:]]))
    return intact


@pytest.mark.parametrize("kind", list(DAMAGE))
def test_a_damaged_line_mid_log_loses_no_record_on_resume_and_is_set_aside(tmp_path, kind):
    run = RunDirectory(write_run(tmp_path))
    bad = damage_line(run, kind)
    intact = insert_after_first_line(run, bad)
    said: list[str] = []
    records = run.read_events(repair=True, log=said.append)
    assert [r.id for r in records] == [0, 1, 2, 3]  # every intact record, the ones after the damage too
    assert run.events_path.read_bytes() == b"".join(intact)
    corrupt = (run.path / "events.jsonl.corrupt").read_bytes()
    assert b"line 2 (" in corrupt and corrupt.endswith(bad)  # its line number, its bytes as they were
    assert len(said) == 1 and "set aside 1 damaged line" in said[0] and "events.jsonl.corrupt" in said[0]
    said.clear()
    assert [r.id for r in run.read_events(repair=True, log=said.append)] == [0, 1, 2, 3] and not said
    assert (run.path / "events.jsonl.corrupt").read_bytes() == corrupt  # set aside once, never deleted


def test_report_and_export_read_past_a_damaged_line_and_say_so(tmp_path, capsys):
    run = RunDirectory(write_run(tmp_path))
    before = readings(capsys, run.path, tmp_path / "out")
    insert_after_first_line(run, b"\n")
    code = main(["report", str(run.path), "--json"])
    captured = capsys.readouterr()
    assert code == 0 and json.loads(captured.out)["candidates"] == 4
    assert captured.err.count("\n") == 1 and "warning: " in captured.err and "line 2" in captured.err
    after = readings(capsys, run.path, tmp_path / "out")
    assert after["report"] == before["report"] and after["export"] == before["export"]
    assert not (run.path / "events.jsonl.corrupt").exists()  # reading never writes


def test_only_a_torn_last_line_is_cut_and_a_complete_one_is_kept(tmp_path):
    run = RunDirectory(write_run(tmp_path))
    intact = run.events_path.read_bytes()
    run.events_path.write_bytes(intact + b'{"id": 4, "status": "tra')  # a crash mid-write
    said: list[str] = []
    assert len(run.read_events(log=said.append)) == 4 and not said  # normal after a crash: no warning
    assert len(run.read_events(repair=True, log=said.append)) == 4
    assert run.events_path.read_bytes() == intact and not (run.path / "events.jsonl.corrupt").exists()
    run.events_path.write_bytes(intact[:-1])  # the last record whole, only its newline missing
    assert [r.id for r in run.read_events(repair=True)] == [0, 1, 2, 3]
    assert run.events_path.read_bytes() == intact


def test_what_editors_do_to_a_log_is_read_and_a_log_that_is_no_file_is_one_line(tmp_path, capsys):
    run = RunDirectory(write_run(tmp_path))
    lines = run.events_path.read_bytes().splitlines(keepends=True)
    run.events_path.write_bytes(b"\xef\xbb\xbf" + b"".join(line.replace(b"\n", b"\r\n") for line in lines))
    assert [r.id for r in run.read_events(log=pytest.fail)] == [0, 1, 2, 3]  # a byte order mark, CRLF
    run.events_path.unlink()
    run.events_path.mkdir()
    assert "events.jsonl is not a file" in cli_error(capsys, "report", str(run.path))


def test_a_repeated_id_keeps_the_first_record_and_sets_the_repeat_aside(tmp_path):
    run = RunDirectory(write_run(tmp_path))
    lines = run.events_path.read_bytes().splitlines(keepends=True)
    repeat = json.dumps({**json.loads(lines[2]), "formula": "x"}).encode() + b"\n"
    run.events_path.write_bytes(b"".join([*lines, repeat]))
    said: list[str] = []
    records = run.read_events(repair=True, log=said.append)
    assert [r.id for r in records] == [0, 1, 2, 3] and records[2].formula != "x"
    assert run.events_path.read_bytes() == b"".join(lines)
    assert (run.path / "events.jsonl.corrupt").read_bytes().endswith(repeat)
    assert "(line 5: repeats id 2, whose first record is kept)" in said[0]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"id": "3"}, "id must be int"),
        ({"id": True}, "id must be int"),
        ({"id": 3.0}, "id must be int"),
        ({"parent": "0"}, "parent must be int | None"),
        ({"status": "bogus"}, "status must be one of trained, hurdle"),
        ({"scores": ["high"]}, "scores must be list[float] | None"),
        ({"reasons": "one"}, "reasons must be list[str]"),
        ({"graph": None}, "graph must be dict[str, Any]"),
        ({"extra": 1}, "unknown key extra"),
        ({"x" * 10_000: 1}, "unknown key xxxxxxxx"),
    ],
)
def test_a_record_of_the_wrong_shape_is_refused_by_one_rule(change, message):
    data = seed_record(0, "bn_relu", [0.5], ["tiny_task"]).to_json()
    with pytest.raises(RecordError, match=f"^{re.escape(message)}") as refused:
        CandidateRecord.from_json({**data, **change})
    assert len(str(refused.value)) < 200  # never the whole value
    del data["formula"]
    with pytest.raises(RecordError, match=r"^missing key formula$"):
        CandidateRecord.from_json(data)
    with pytest.raises(RecordError, match=r"^not a JSON object"):
        CandidateRecord.from_json([data])


def driver_for(run_dir: Path) -> SearchDriver:
    """The driver a resume of ``run_dir`` builds, before Ray starts (restoring needs none)."""
    config = resolve_run_config(str(run_dir), [], resume=True)
    return SearchDriver(config, *RunDirectory(run_dir).read_tasks(), Progress(enabled=False))


def rebuilt_searcher_state(run_dir: Path) -> dict:
    """The searcher's state a resume with ``--rebuild-checkpoint`` rebuilds from the run's records."""
    driver = driver_for(run_dir)
    driver.restore(rebuild=True)
    return driver.algorithm.state_dict()


def test_a_rebuild_replays_the_records_and_keeps_the_old_checkpoint(tmp_path):
    run = RunDirectory(write_run(tmp_path))
    run.checkpoint_path.write_text("{not json")
    state = rebuilt_searcher_state(run.path)
    population = [(m["id"], m["scores"]) for m in state["population"]]
    assert population == [(0, [0.5]), (1, [0.4]), (2, [0.6])]  # the trained ones, in order; no reject
    assert state["next_id"] == 4 and state["pending"] == []
    (aside,) = run.path.glob("checkpoint.json.*")
    assert aside.read_text() == "{not json"
    assert json.loads(run.checkpoint_path.read_text())["version"] == CHECKPOINT_VERSION


def test_a_checkpoint_the_algorithm_cannot_load_is_one_line_too(tmp_path):
    run = RunDirectory(write_run(tmp_path))
    run.save_checkpoint({**CHECKPOINT, "searcher": {**SEARCH_STATE, "rng": "lost"}})
    expected = r"holds no evolution state this evosearch reads \(ValueError: .*--rebuild-checkpoint"
    with pytest.raises(EvosearchError, match=expected):
        driver_for(run.path).restore()


def test_a_lost_checkpoint_is_refused_or_rebuilt_from_the_records_and_no_id_is_reused(
    local_ray, tmp_path, capsys
):
    assert main(["run", str(write_config(tmp_path, "lost", evaluations=3)), "--quiet"]) == 0
    run = RunDirectory(tmp_path / "runs" / "lost")
    saved = json.loads(run.checkpoint_path.read_text())
    first = run.events_path.read_bytes()
    run.checkpoint_path.unlink()

    resume = ["run", str(run.path), "--resume", "--quiet", "--set", "search.max_evaluations=5"]
    err = cli_error(capsys, *resume)
    assert "checkpoint.json is missing" in err and "--rebuild-checkpoint" in err
    assert run.events_path.read_bytes() == first and not run.checkpoint_path.exists()  # nothing written

    copy = tmp_path / "copy" / "lost"
    copy.parent.mkdir()
    copy.mkdir()
    for name in ("config.yaml", "tasks.yaml", "events.jsonl"):
        (copy / name).write_bytes((run.path / name).read_bytes())
    rebuilt = rebuilt_searcher_state(copy)
    assert rebuilt["population"] == saved["searcher"]["population"]  # the same members, in the same order
    assert rebuilt["next_id"] == saved["searcher"]["next_id"] and rebuilt["pending"] == []

    assert main([*resume, "--rebuild-checkpoint"]) == 0
    after = records(run.path)
    assert run.events_path.read_bytes().startswith(first)  # every record intact
    ids, done = [e["id"] for e in after], first.count(b"\n")
    assert len(ids) > done and min(ids[done:]) == done  # the numbering goes on after the records
    assert sorted(ids) == list(range(len(ids)))  # no id reused
    assert all(e["same_as"] != e["id"] for e in after)
    assert sum(e["status"] in ("trained", "hurdle", "failed") for e in after) == 5

    run.checkpoint_path.write_text(json.dumps(saved))  # a checkpoint older than the records
    err = cli_error(capsys, *resume)
    assert "checkpoint.json is older than" in err and "--rebuild-checkpoint" in err
