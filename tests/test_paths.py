"""A run directory is data, possibly from elsewhere: no value in it (a record's id, a task's name) and
no symbolic link in it makes evosearch write, or delete, a file outside the directory it writes to.

Record ids are checked on load (an id is a non-negative integer); every file name built from data
goes through :func:`safe_filename`, every output path through :func:`child_path`. The runs here are
written by hand (``write_handmade_run``); one real ``rerank`` on a local Ray instance checks that a
task named ``../../escaped`` writes its table inside the run.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from helpers import cli_error, cli_json, trained_record, write_handmade_run

from evosearch.errors import EvosearchError
from evosearch.files import MAX_FILENAME, child_path, safe_filename
from evosearch.runner.ray_cluster import LOOPBACK_ENV
from evosearch.runner.run_directory import CandidateRecord, RunDirectory

os.environ[LOOPBACK_ENV] = "0"  # Ray on 127.0.0.1 (the driver also pins it)

OBJECTIVES = ["tiny"]
VICTIM_TEXT = "a file of the user's, outside every run\n"


def files_outside(root: Path, *inside: Path) -> dict[Path, bytes]:
    """Every file under ``root`` but those under ``inside``, with its bytes: what a command writing
    only into ``inside`` leaves as it was."""
    return {
        path: path.read_bytes()
        for path in root.rglob("*")
        if path.is_file() and not any(path.is_relative_to(d) for d in inside)
    }


def victim(tmp_path: Path, name: str) -> Path:
    path = tmp_path / name
    path.write_text(VICTIM_TEXT)
    return path


# ---- record ids ---------------------------------------------------------------------------------


def test_export_of_a_run_whose_id_climbs_out_writes_only_into_out(tmp_path, capsys):
    """The red-team case: the id made ``out/00_candidate_/../../victim.yaml`` of the best layer."""
    victim(tmp_path, "victim.yaml")
    hostile = trained_record("/../../victim", OBJECTIVES, seed="gn_relu", scores=[0.9])
    run = write_handmade_run(tmp_path, [trained_record(0, OBJECTIVES), hostile], OBJECTIVES)
    out = tmp_path / "out"
    before = files_outside(tmp_path, out)
    exported = cli_json(capsys, "export", str(run), "--out", str(out))
    assert [row["id"] for row in exported] == [0]  # the hostile record is not read
    assert files_outside(tmp_path, out) == before
    assert sorted(p.name for p in out.iterdir()) == ["00_candidate_0.py", "00_candidate_0.yaml", "README.md"]


def test_export_of_a_run_into_what_is_not_a_directory_is_one_line(tmp_path, capsys):
    run = write_handmade_run(tmp_path, [trained_record(0, OBJECTIVES)], OBJECTIVES)
    (tmp_path / "a_file").write_text(VICTIM_TEXT)
    for out in ("a_file", "a_file/sub"):
        error = cli_error(capsys, "export", str(run), "--out", str(tmp_path / out))
        assert f"--out {tmp_path / out}: cannot make a directory there" in error
    assert (tmp_path / "a_file").read_text() == VICTIM_TEXT


@pytest.mark.parametrize("bad_id", ["/../../victim", "7", True, -1, 1.5, None, [0], 2**63])
def test_a_record_whose_id_is_not_a_small_non_negative_integer_is_not_read(tmp_path, bad_id):
    run = write_handmade_run(
        tmp_path, [trained_record(0, OBJECTIVES), trained_record(bad_id, OBJECTIVES)], OBJECTIVES
    )
    assert [r.id for r in RunDirectory(run).read_events()] == [0]


def test_the_pareto_front_is_written_inside_best_whatever_the_id(tmp_path):
    """Where the driver writes ``best/`` (after every record, and on resume), an id that is not a
    number fails as a class name before any file is written."""
    victim(tmp_path, "victim.yaml")
    run = RunDirectory(write_handmade_run(tmp_path, [], OBJECTIVES))
    record = CandidateRecord.from_json(trained_record(0, OBJECTIVES))
    before = files_outside(tmp_path, run.best_path)
    with pytest.raises(EvosearchError, match="is not a usable Python class name"):
        run.write_best([("/../../../victim", record.graph)], "# best\n")
    assert files_outside(tmp_path, run.best_path) == before


# ---- symbolic links in a run directory ----------------------------------------------------------


def test_a_best_directory_linked_elsewhere_is_refused_and_nothing_there_deleted(tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    victim(elsewhere, "notes.txt")
    run = RunDirectory(write_handmade_run(tmp_path, [], OBJECTIVES))
    run.best_path.symlink_to(elsewhere, target_is_directory=True)
    record = CandidateRecord.from_json(trained_record(0, OBJECTIVES))
    with pytest.raises(EvosearchError, match=r"best leads outside .*; refusing to follow it"):
        run.write_best([(record.id, record.graph)], "# best\n")
    assert [p.name for p in elsewhere.iterdir()] == ["notes.txt"]


def test_best_keeps_a_folder_put_there_and_drops_a_stale_file(tmp_path):
    run = RunDirectory(write_handmade_run(tmp_path, [], OBJECTIVES))
    (run.best_path / "notes").mkdir(parents=True)
    (run.best_path / "00_candidate_7.yaml").write_text("a layer no longer on the front")
    record = CandidateRecord.from_json(trained_record(0, OBJECTIVES))
    run.write_best([(record.id, record.graph)], "# best\n")
    assert sorted(p.name for p in run.best_path.iterdir()) == [
        "00_candidate_0.py",
        "00_candidate_0.yaml",
        "README.md",
        "notes",
    ]


def test_resume_appends_to_no_file_a_link_of_the_run_points_at(tmp_path):
    """A damaged line set aside on resume is the file's own text: through a link to ``~/.bashrc`` it
    would become a command the user's next shell runs."""
    target = victim(tmp_path, "bashrc")
    run = RunDirectory(write_handmade_run(tmp_path, [trained_record(0, OBJECTIVES)], OBJECTIVES))
    with open(run.path / "events.jsonl", "a") as f:
        f.write(";echo run by the shell\n")
    (run.path / "events.jsonl.corrupt").symlink_to(target)
    with pytest.raises(EvosearchError, match=r"events\.jsonl\.corrupt leads outside"):
        run.read_events(repair=True)
    (run.path / "events.jsonl.corrupt").unlink()
    (run.path / "events.jsonl").rename(tmp_path / "events.jsonl")
    (run.path / "events.jsonl").symlink_to(target)
    with pytest.raises(EvosearchError, match=r"events\.jsonl leads outside"):
        run.append_event(CandidateRecord.from_json(trained_record(1, OBJECTIVES)))
    assert target.read_text() == VICTIM_TEXT


def test_report_follows_no_link_out_of_the_run(tmp_path, capsys):
    target = victim(tmp_path, "victim.png")
    run = write_handmade_run(tmp_path, [trained_record(0, OBJECTIVES)], OBJECTIVES)
    (run / "plots").mkdir()
    (run / "plots" / "best.png").symlink_to(target)
    assert "plots/best.png leads outside" in cli_error(capsys, "report", str(run))
    assert target.read_text() == VICTIM_TEXT


# ---- task names ---------------------------------------------------------------------------------


def test_rerank_writes_a_task_named_to_climb_out_inside_the_run(local_ray, tmp_path, capsys):
    run = write_handmade_run(tmp_path, [trained_record(0, ["../../escaped"])], ["../../escaped"])
    before = files_outside(tmp_path, run / "rerank")
    argv = ["rerank", str(run), "--top", "1", "--seeds", "1", "--reference-seeds", "", "--quiet"]
    data = cli_json(capsys, *argv, "--set", "train.steps=2")
    assert data["files"] == [str(run / "rerank" / "_.._escaped.json")]
    assert [p.name for p in (run / "rerank").iterdir()] == ["_.._escaped.json"]
    assert files_outside(tmp_path, run / "rerank") == before


def test_rerank_refuses_task_names_that_make_one_file_name_before_training(tmp_path, capsys):
    names = ["a/b", "a_b"]
    run = write_handmade_run(tmp_path, [trained_record(0, names, scores=[0.5, 0.5])], names)
    error = cli_error(capsys, "rerank", str(run), "--quiet")
    assert "tasks 'a/b' and 'a_b' would both write rerank/a_b.json" in error
    assert not (run / "rerank").exists()


# ---- the helpers --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "name"),
    [
        ("generated_resnet", "generated_resnet"),
        ("cifar10-v2.1", "cifar10-v2.1"),
        ("../../escaped", "_.._escaped"),
        ("/etc/passwd", "_etc_passwd"),
        ("..", "_"),
        (".hidden", "hidden"),
        ("", "_"),
        ("a b\tc\nd", "a_b_c_d"),
        ("<script>", "_script_"),
        ("näme\0", "n_me_"),
        ("x" * 300, "x" * MAX_FILENAME),
    ],
)
def test_safe_filename_keeps_a_name_in_its_directory(tmp_path, text, name):
    assert safe_filename(text) == name
    assert child_path(tmp_path, safe_filename(text)) == tmp_path / name


@pytest.mark.parametrize("name", ["../x", "a/b", "/etc/passwd", ".", "..", "", "loop"])
def test_child_path_refuses_what_leads_elsewhere(tmp_path, name):
    (tmp_path / "loop").symlink_to(tmp_path / "loop")
    with pytest.raises(EvosearchError, match="leads outside"):
        child_path(tmp_path, name)


def test_child_path_refuses_a_file_for_a_directory(tmp_path, capsys):
    run = write_handmade_run(tmp_path, [trained_record(0, OBJECTIVES)], OBJECTIVES)
    (run / "plots").write_text(VICTIM_TEXT)
    assert "plots is not a directory; best.png cannot go there" in cli_error(capsys, "report", str(run))
