"""``report``, ``export RUN`` and ``rerank`` on one tiny real run (a local Ray instance, ~30 s),
built once for the module; copies of it stand for a run with a torn event log, one without a
checkpoint, and one with a rejection."""

from __future__ import annotations

import base64
import dataclasses
import importlib.util
import json
import os
import re
import shutil
from pathlib import Path

import pytest
import torch
import torchvision
from helpers import cli_error, cli_json, write_config

from evosearch import compile_layer, load_graph, swap_norm_act
from evosearch.cli import main
from evosearch.cli.report_html import collect, spearman
from evosearch.layers.graph_io import graph_from_dict
from evosearch.outcomes import Status
from evosearch.runner.lock import RERANK, RunLock
from evosearch.runner.run_config import load_tasks
from evosearch.runner.run_directory import RunDirectory, rank_records

os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"  # Ray on 127.0.0.1 (the driver also pins it)

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
EVALUATIONS = 4


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("report")
    search = {"population_size": 4, "tournament_size": 2, "seed_mutations": 1, "random_graphs": 1}
    path = write_config(
        root, "tiny", evaluations=EVALUATIONS, steps=4, seed=3, search=search, probes={"resnet_depth": 8}
    )
    assert main(["run", str(path), "--quiet"]) == 0
    return root / "runs" / "tiny"


def copy_run(run_dir: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(run_dir, tmp_path / "copy", ignore=shutil.ignore_patterns("plots", "rerank")))


# ---- report -------------------------------------------------------------------------------------


def test_report_of_a_finished_run(run_dir, capsys):
    data = cli_json(capsys, "report", str(run_dir), "--top", "3")
    records = RunDirectory(run_dir).read_events()
    assert data["objectives"] == ["generated_resnet"]
    assert data["candidates"] == len(records) and data["evaluations"] == EVALUATIONS
    assert data["pending"] == 0 and data["population_source"] == "checkpoint"
    assert len(data["best"]["generated_resnet"]) == EVALUATIONS
    trained = [r.scores[0] for r in records if r.status is Status.TRAINED]
    assert data["best"]["generated_resnet"][-1] == max(trained)
    assert {s["name"] for s in data["seeds"]} <= {"bn_relu", "evonorm_s0", "gn_relu"} and data["seeds"]
    assert any(p["on_front"] for p in data["population"])
    assert [row["id"] for row in data["top"]] == [r.id for r in rank_records(records)[:3]]
    assert all(row["formula"] and "generated_resnet" in row["scores"] for row in data["top"])
    assert {c["metric"] for c in data["probes"]} >= {"gradient_ratio", "activation_growth"}
    for correlation in data["probes"]:
        assert correlation["n"] == len(correlation["points"])
        assert correlation["spearman"] is None or -1 <= correlation["spearman"] <= 1

    page = (run_dir / "report.html").read_text()
    links = re.findall(r"""(?:href|src)\s*=\s*["']?([^"'\s>]*)""", page)
    assert links and all(link.startswith("data:image/png;base64,") for link in links)  # nothing outside
    assert not re.search(r"<(script|link|iframe)|url\(|@import", page)
    images = re.findall(r'src="data:image/png;base64,([^"]+)"', page)
    assert len(images) == 4 and all(base64.b64decode(i).startswith(PNG_SIGNATURE) for i in images)
    for name in ("best", "pareto", "rejections", "probes"):
        png = (run_dir / "plots" / f"{name}.png").read_bytes()
        assert png.startswith(PNG_SIGNATURE) and png[12:16] == b"IHDR" and len(png) > 1000
    assert "<table>" in page and records[0].formula.split("(")[0] in page


def test_a_run_holds_its_tasks_as_resolved_at_its_start(run_dir):
    run = RunDirectory(run_dir)
    assert run.tasks_path.is_file() and run.objectives() == ["generated_resnet"]
    tasks, objectives = run.read_tasks()
    assert (tasks, objectives) == load_tasks(run.read_config())
    assert tasks[0].train.steps == 4 and tasks[0].dataset.train_size == 128


def test_report_reads_a_torn_event_log_without_touching_it(run_dir, tmp_path, capsys):
    copy = copy_run(run_dir, tmp_path)
    events = copy / "events.jsonl"
    raw = events.read_bytes()
    events.write_bytes(raw[: len(raw) - 40])  # cut inside the last line, as a crash mid-write would
    data = cli_json(capsys, "report", str(copy))
    assert data["candidates"] == raw.count(b"\n") - 1
    assert events.read_bytes() == raw[: len(raw) - 40]  # a report never writes into the log
    assert (copy / "report.html").is_file()


def test_report_without_a_checkpoint_uses_every_trained_candidate(run_dir, tmp_path, capsys):
    copy = copy_run(run_dir, tmp_path)
    (copy / "checkpoint.json").unlink()
    data = cli_json(capsys, "report", str(copy))
    trained = [r for r in RunDirectory(copy).read_events() if r.status in (Status.TRAINED, Status.HURDLE)]
    assert data["pending"] is None and data["population_source"] == "all trained candidates"
    assert sorted(p["id"] for p in data["population"]) == sorted(r.id for r in trained)


def test_report_counts_rejections_by_their_first_reason(run_dir, tmp_path):
    copy = copy_run(run_dir, tmp_path)
    run = RunDirectory(copy)
    template = run.read_events()[0]
    for k, reasons in enumerate(
        [["gradient_ratio: 2e+03 > max_gradient_ratio 1000"], ["stability: 20 > x", "y"]]
    ):
        rejected = dataclasses.replace(
            template, id=100 + k, status=Status.REJECTED, reasons=reasons, tasks=[], scores=None
        )
        run.append_event(rejected)
    report = collect(copy)
    assert report.rejections == {"gradient_ratio": 1, "stability": 1}
    assert [i for i, _ in report.rejection_events] == [report.candidates - 2, report.candidates - 1]


def test_spearman_matches_the_textbook_values():
    assert spearman([1, 2, 3, 4, 5], [5, 6, 7, 8, 7]) == pytest.approx(0.8207826816681233)  # scipy's example
    assert spearman([1, 2, 3], [30, 20, 10]) == pytest.approx(-1.0)
    assert spearman([1, 1, 2, 2], [1, 2, 3, 4]) == pytest.approx(0.8944271909999159)  # ties averaged
    assert spearman([1, 2], [1, 2]) is None and spearman([1, 1, 1], [1, 2, 3]) is None


# ---- export -------------------------------------------------------------------------------------


def load_module_class(path: Path, name: str) -> type[torch.nn.Module]:
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return getattr(module, name)


def test_export_round_trip_of_the_top_layers(run_dir, tmp_path, capsys):
    out = tmp_path / "layers"
    rows = cli_json(capsys, "export", str(run_dir), "--top", "3", "--out", str(out))
    ranked = rank_records(RunDirectory(run_dir).read_events())[:3]
    assert [row["id"] for row in rows] == [r.id for r in ranked]
    readme = (out / "README.md").read_text()
    for rank, record in enumerate(ranked):
        stem = out / f"{rank:02d}_candidate_{record.id}"
        assert f"| {rank} | {record.id} | {record.scores[0]:.4f} | `{record.formula}` |" in readme
        graph = load_graph(stem.with_suffix(".yaml"))
        assert graph.structural_hash() == graph_from_dict(record.graph).structural_hash()
        source = stem.with_suffix(".py").read_text()
        assert "evosearch" not in "".join(line for line in source.splitlines() if "import" in line)
        exported = load_module_class(stem.with_suffix(".py"), f"Candidate{record.id}")
        x = torch.randn(4, 32, 6, 6, generator=torch.Generator().manual_seed(rank))
        ours, theirs = compile_layer(graph)(32), exported(32)
        for train in (True, False):
            torch.testing.assert_close(theirs.train(train)(x), ours.train(train)(x))
    model = torchvision.models.resnet18(weights=None)  # an exported class drops into a real model
    assert swap_norm_act(model, exported).counts["norm_act"] == 9


def test_export_and_report_refuse_bad_run_dirs_and_top_values(run_dir, tmp_path, capsys):
    not_a_run = tmp_path / "empty"
    not_a_run.mkdir()
    for command in ("report", "rerank"):
        assert "is not a run directory" in cli_error(capsys, command, str(not_a_run))
        assert "is not a run directory" in cli_error(capsys, command, str(tmp_path / "missing"))
    assert "is not a run directory" in cli_error(
        capsys, "export", str(not_a_run), "--out", str(tmp_path / "o")
    )
    for top in ("0", "-1"):
        assert "--top must be at least 1" in cli_error(capsys, "report", str(run_dir), "--top", top)
        assert "--top must be at least 1" in cli_error(capsys, "rerank", str(run_dir), "--top", top)
        out = str(tmp_path / "o")
        assert "--top must be at least 1" in cli_error(
            capsys, "export", str(run_dir), "--top", top, "--out", out
        )
    assert "run directory only" in cli_error(
        capsys, "export", "bn_relu", "--top", "2", "--out", str(tmp_path / "a.py")
    )

    untrained = copy_run(run_dir, tmp_path)
    (untrained / "events.jsonl").write_text("")
    assert "no trained candidate" in cli_error(capsys, "export", str(untrained), "--out", str(tmp_path / "o"))
    assert "no trained candidate" in cli_error(capsys, "rerank", str(untrained))


# ---- rerank -------------------------------------------------------------------------------------


def test_rerank_the_top_layer_and_a_reference(run_dir, capsys):
    argv = ["rerank", str(run_dir), "--top", "1", "--seeds", "1", "--reference-seeds", "bn_relu"]
    data = cli_json(capsys, *argv, "--set", "train.steps=2", "--quiet")
    best = rank_records(RunDirectory(run_dir).read_events())[0]
    assert data["tasks"] == ["generated_resnet"] and data["seeds"] == 1
    assert data["rows"][0]["id"] == best.id and data["rows"][0]["kind"] == "candidate"
    assert [r["label"] for r in data["rows"][1:]] == ([] if best.graph["name"] == "bn_relu" else ["bn_relu"])
    for row in data["rows"]:
        scores = row["tasks"]["generated_resnet"]
        assert scores["exits"] == ["completed"] and scores["n"] == 1 and scores["std"] is None
        assert scores["mean"] == scores["top1"][0] and 0 <= scores["mean"] <= 1
    saved = json.loads((run_dir / "rerank" / "generated_resnet.json").read_text())
    assert saved["config"]["train"]["steps"] == 2 and saved["config"]["dataset"]["train_size"] == 128
    assert [layer["label"] for layer in saved["layers"]] == [r["label"] for r in data["rows"]]


def test_rerank_is_refused_while_another_rerank_holds_the_run(run_dir, capsys):
    before = sorted(p.name for p in run_dir.rglob("*"))
    with RunLock(run_dir, RERANK):  # held by this process: a live holder all the same
        err = cli_error(capsys, "rerank", str(run_dir), "--top", "1", "--seeds", "1", "--quiet")
        assert sorted(p.name for p in run_dir.rglob("*")) == sorted([*before, "rerank.lock"])  # nothing else
    assert f"in use by pid {os.getpid()} on host " in err and "rerank.lock" in err
    assert sorted(p.name for p in run_dir.rglob("*")) == before
