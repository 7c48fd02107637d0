"""Hostile input at the command line: every case is refused with one line (``evosearch: error: ...``,
exit 1) before anything is written or Ray is started, or, where the input is in fact fine, accepted.
The cases are the ones a user or a damaged file produces: out-of-range and non-finite numbers, integers
beyond Python's digit limit, paths that are directories or cannot be written, damaged checkpoints and
datasets, control characters in names, and a run directory moved before it is resumed."""

from __future__ import annotations

import io
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import ray
from helpers import cli_error, write_config

from evosearch.cli import main
from evosearch.layers.graph_io import save_graph
from evosearch.layers.seeds import seed_graph
from evosearch.runner.progress import Progress, SearchStats
from evosearch.runner.run_config import RunConfig, load_tasks
from evosearch.runner.run_directory import RunDirectory
from evosearch.tasks import image_folder

os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"  # Ray on 127.0.0.1 (the driver also pins it)

HUGE = "9" * 5000  # beyond Python's 4,300-digit limit on int <-> str conversion
UNWRITABLE = "/sys/evosearch-test"  # sysfs refuses new entries, even to root


def refused(capsys, *argv: str) -> str:
    """The one error line of a command that must fail, no longer than a line a terminal shows whole."""
    err = cli_error(capsys, *argv)
    assert len(err) < 400, err
    return err


# ---- numbers: non-finite, out of range, beyond the digit limit ----------------------------------


@pytest.mark.parametrize(
    "override",
    [
        "search.max_minutes=.nan",
        "search.max_minutes=.inf",
        "search.max_minutes=-1",
        "search.max_nodes=0",
        "search.population_size=1",
        "search.tournament_size=0",
        "search.seed_mutations=-1",
        "search.mutation_weights={add_node: .nan}",
        "resources.num_cpus=-1",
        "resources.num_gpus=-1",
        "resources.cpus_per_evaluation=.nan",
        "resources.gpus_per_evaluation=.inf",
        "resources.cpus_per_probe=-.inf",
        "resources.evaluation_timeout_s=.nan",
        "resources.evaluation_timeout_s=.inf",
        "resources.retries=-1",
        "resources.num_cpus=0",  # no evaluation would ever be scheduled: the run would wait forever
        f"seed={HUGE}",
        f"search.max_evaluations={2**70}",
        "name=a\x00b",
        "name=a\x1b[31mb",
        "output_dir=runs\x00",
    ],
)
def test_config_refuses_what_run_would_refuse_or_misread(capsys, override):
    assert "evosearch: error: " in refused(capsys, "config", "--set", override)


@pytest.mark.parametrize(
    "tasks",
    [
        "[{task: no_such_task}]",
        "[{task: generated_resnet, set: {train.lr: .nan}}]",
        "[{task: generated_resnet}, {task: generated_resnet}]",  # two objectives of one name
    ],
)
def test_config_checks_the_tasks_as_run_does(capsys, tasks):
    refused(capsys, "config", "--set", f"tasks={tasks}")


def test_a_config_file_with_an_integer_beyond_the_digit_limit_is_one_line(capsys, tmp_path):
    path = tmp_path / "huge.yaml"
    path.write_text(f"seed: {HUGE}\n")
    refused(capsys, "config", str(path))


@pytest.mark.parametrize(
    "override",
    [
        "train.device=banana",
        "model.width_multiplier=.inf",
        "train.lr=.nan",
        "train.time_limit_s=.inf",
        f"train.steps={HUGE}",
        "dataset.train_size=100000000000",
        "dataset.image_size=2",
        "dataset.image_size=100000",
    ],
)
def test_train_refuses_bad_task_settings_before_training(capsys, override):
    refused(capsys, "train", "bn_relu", "--set", override)


def test_a_device_this_machine_lacks_is_one_line(capsys):
    missing = "cuda:99" if torch_has_cuda() else "cuda"
    refused(capsys, "train", "bn_relu", "--set", f"train.device={missing}")


def torch_has_cuda() -> bool:
    import torch

    return torch.cuda.is_available()


# ---- formulas and graphs ------------------------------------------------------------------------


def test_a_formula_longer_than_a_file_name_is_a_formula(capsys):
    formula = " + ".join(["x"] * 200)  # 797 bytes, no '/': not a path
    assert main(["show", formula]) == 0
    capsys.readouterr()
    err = refused(capsys, "show", formula + " +")
    assert formula not in err  # the message quotes a bounded part of it


def test_show_refuses_a_channel_count_below_one(capsys):
    refused(capsys, "show", "bn_relu", "--num-features", "-5")


@pytest.mark.parametrize("groups", ["9" * 400, str(10**16), "0"])
def test_groups_must_be_a_bounded_positive_integer(capsys, groups):
    refused(capsys, "show", f"x / sqrt(group_var(x, groups={groups}) + eps)")


def test_a_graph_file_with_huge_groups_is_one_line(capsys, tmp_path):
    graph = seed_graph("gn_relu")
    path = save_graph(graph, tmp_path / "gn.yaml")
    path.write_text(path.read_text().replace("groups: 32", f"groups: {'9' * 400}"))
    refused(capsys, "show", str(path))


def test_control_characters_in_a_graph_name_are_not_printed_raw(capsys, tmp_path):
    graph = seed_graph("bn_relu")
    graph.name = "evil\x1b[2J\x07name"
    path = save_graph(graph, tmp_path / "evil.yaml")
    assert main(["show", str(path)]) == 0
    out = capsys.readouterr().out
    assert "\x1b" not in out and "\x07" not in out
    assert "evil\\x1b[2J\\x07name" in out  # shown escaped, not dropped


# ---- files: outputs that cannot be written ------------------------------------------------------


@pytest.mark.parametrize("out", ["directory", UNWRITABLE + "/layer.py"])
def test_export_to_a_directory_or_an_unwritable_path_is_one_line(capsys, tmp_path, out):
    target = tmp_path if out == "directory" else out
    refused(capsys, "export", "bn_relu", "--out", str(target))


def test_data_prepare_to_an_unwritable_path_is_one_line(capsys, tmp_path):
    from PIL import Image

    for label in ("a", "b"):
        (tmp_path / "src" / label).mkdir(parents=True)
        for i in range(2):
            Image.new("RGB", (8, 8), (i * 90, 0, 0)).save(tmp_path / "src" / label / f"{i}.png")
    refused(capsys, "data", "prepare", str(tmp_path / "src"), "--out", str(tmp_path), "--size", "8")
    refused(capsys, "data", "prepare", str(tmp_path / "src"), "--out", UNWRITABLE + "/d.npz", "--size", "8")


@pytest.mark.parametrize("output_dir", ["a_file", UNWRITABLE])
def test_run_refuses_an_unusable_output_dir_before_starting_ray(capsys, tmp_path, output_dir):
    location = tmp_path / output_dir if output_dir == "a_file" else Path(output_dir)
    if output_dir == "a_file":
        location.write_text("not a directory")
    path = write_config(tmp_path, "tiny", output_dir=str(location))
    refused(capsys, "run", str(path), "--quiet")
    assert not ray.is_initialized()


# ---- damaged files: a checkpoint, a dataset -----------------------------------------------------


def tiny_run_directory(path: Path) -> RunDirectory:
    """A run directory as a run leaves it at its start, with the searcher's first checkpoint: no Ray."""
    config = RunConfig(name=path.name, output_dir=str(path.parent))
    run = RunDirectory(path)
    tasks, objectives = load_tasks(config)
    run.write_config(config)
    run.write_tasks(tasks, objectives)
    searcher = config.search.searcher(num_objectives=1, seed=0)
    searcher.suggest()
    state = {"algorithm": "evolution", "searcher": searcher.state_dict(), "elapsed_s": 1.0}
    run.save_checkpoint({**state, "evaluations": 0, "candidates": 0})
    return run


def damage(state: dict, how: str) -> None:
    searcher = state["searcher"]
    if how == "searcher_not_a_dict":
        state["searcher"] = [1, 2]
    elif how == "no_algorithm":
        del state["algorithm"]
    elif how == "next_id_a_string":
        searcher["next_id"] = "7"
    elif how == "rng_truncated":
        searcher["rng"] = [3]
    elif how == "pending_not_a_list":
        searcher["pending"] = {"0": 1}
    elif how == "elapsed_a_string":
        state["elapsed_s"] = "long"
    elif how == "no_population":
        del searcher["population"]


CHECKPOINT_DAMAGE = [
    "searcher_not_a_dict",
    "no_algorithm",
    "next_id_a_string",
    "rng_truncated",
    "pending_not_a_list",
    "elapsed_a_string",
    "no_population",
]


@pytest.mark.parametrize("how", CHECKPOINT_DAMAGE)
def test_a_checkpoint_of_the_wrong_structure_is_one_line(capsys, tmp_path, how):
    run = tiny_run_directory(tmp_path / "run")
    state = json.loads(run.checkpoint_path.read_text())
    damage(state, how)
    run.checkpoint_path.write_text(json.dumps(state))
    assert "checkpoint" in refused(capsys, "run", str(run.path), "--resume", "--quiet")
    assert not ray.is_initialized()
    if main(["report", str(run.path)]) == 0:  # what report reads of it is intact (the rng it is not)
        return
    err = capsys.readouterr().err
    assert err.startswith("evosearch: error: ") and err.count("\n") == 1 and "checkpoint" in err, err


def write_npz(path: Path, *, version, size: int) -> Path:
    images = np.zeros((4, 3, size, size), np.uint8)
    labels = np.array([0, 1, 0, 1])
    arrays = {"class_names": np.array(["a", "b"]), "train_images": images, "train_labels": labels}
    np.savez(path, format_version=np.array(version), val_images=images, val_labels=labels, **arrays)
    return path


@pytest.mark.parametrize(
    ("version", "size", "complaint"),
    [
        ("1", 8, "format version"),
        ("one", 8, "format version"),
        (1.5, 8, "format version"),
        (1, 0, "too small"),
        (1, 2, "too small"),
    ],
    ids=["version_text", "version_word", "version_float", "images_0x0", "images_2x2"],
)
def test_a_damaged_image_folder_file_is_one_line(capsys, tmp_path, version, size, complaint):
    path = write_npz(tmp_path / "data.npz", version=version, size=size)
    assert set(np.load(path).files) == set(image_folder.KEYS)
    overrides = ["dataset.name=image_folder", f"dataset.path={path}", "dataset.train_size=null"]
    assert main(["train", "bn_relu", *(a for o in overrides for a in ("--set", o))]) == 1
    progress, error = capsys.readouterr().err.splitlines()  # the dataset loads once training starts
    assert progress.startswith("training bn_relu") and error.startswith("evosearch: error: ")
    assert complaint in error


# ---- a moved run directory resumes --------------------------------------------------------------


def test_a_moved_run_directory_resumes_where_it_now_is(local_ray, capsys, tmp_path):
    path = write_config(tmp_path, "tiny", evaluations=1, steps=2, probes={"resnet_depth": 8})
    assert main(["run", str(path), "--quiet"]) == 0
    moved = Path(shutil.move(tmp_path / "runs" / "tiny", tmp_path / "elsewhere"))
    capsys.readouterr()
    assert main(["run", str(moved), "--resume", "--quiet", "--json"]) == 0, capsys.readouterr().err
    summary = json.loads(capsys.readouterr().out)
    assert summary["run_dir"] == str(moved) and summary["evaluations"] == 1
    assert not (tmp_path / "runs" / "tiny").exists()


def test_progress_lines_escape_control_characters_from_the_config():
    stream = io.StringIO()
    progress = Progress(stream)
    progress.log("resuming runs/evil\x1b[2J")
    progress.update(SearchStats(best={"task\x1b]0;title\x07": 0.5}), force=True)
    assert "\x1b" not in stream.getvalue() and "\x07" not in stream.getvalue()
    assert "evil\\x1b[2J" in stream.getvalue()


def _no_room_for_files() -> None:
    """In the child: files may not grow past 100 bytes, as on a full disk (EFBIG, not a signal)."""
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (100, 100))


@pytest.mark.parametrize("command", [["export", "bn_relu", "--out", "layer.py"], ["report", "run"]])
def test_a_write_the_disk_refuses_is_one_line(tmp_path, command):
    """A full disk as a command meets it: a write fails with an ``OSError`` partway through a file."""
    if command[0] == "report":
        tiny_run_directory(tmp_path / "run")
    argv = [sys.executable, "-m", "evosearch.cli", *command]
    done = subprocess.run(argv, cwd=tmp_path, capture_output=True, text=True, preexec_fn=_no_room_for_files)
    assert done.returncode == 1, done.stderr
    assert done.stderr.startswith("evosearch: error: File too large") and done.stderr.count("\n") == 1


def test_a_usage_error_quotes_a_huge_argument_briefly(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["show", "bn_relu", "--num-features", HUGE])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and "invalid int value" in err and len(err) < 1000
