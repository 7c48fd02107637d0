"""``report``, ``export RUN`` and ``rerank`` on one tiny real run (a local Ray instance, ~30 s),
built once for the module; copies of it stand for a run with a torn event log, one without a
checkpoint, and one with a rejection. What a report shows of the funnel, the noise, the confirmed
claims and the transfer tables is checked on runs written record by record (no Ray), their values
chosen so that each label is known."""

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
from helpers import cli_error, cli_json, tiny_task, write_config

from evosearch import compile_layer, load_graph, swap_norm_act
from evosearch.cli import main
from evosearch.cli.report_html import collect, spearman
from evosearch.layers.graph_io import graph_from_dict, graph_to_dict
from evosearch.layers.seeds import seed_graph
from evosearch.outcomes import Status
from evosearch.runner.claims import LayerResult, ranked_layers
from evosearch.runner.lock import RERANK, RunLock
from evosearch.runner.run_config import RunConfig, SearchConfig, load_tasks
from evosearch.runner.run_directory import CandidateRecord, RunDirectory, RungRecord, rank_records
from evosearch.search.funnel import FidelitySettings, Rung

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


# ---- the funnel, noise, claims and transfer, on runs written record by record ---------------------

STEPS = 100  # every training run's steps
# Top-rung accuracies over training seeds 0, 1, 2 (seed 0's run is rung 0's, reused by rung 1). The
# candidate against bn_relu: 0.73 vs 0.61, sd 0.01 each, t = 14.7, better; against gn_relu: 0.73 vs 0.72
# (sd 0.02), t = 0.77, within noise. Pooled noise: sqrt((0.01² + 0.02² + 0.01²) / 3) = 0.01414, dof 6.
TOP_RUNG = {"bn_relu": [0.60, 0.61, 0.62], "gn_relu": [0.70, 0.72, 0.74], "evonorm_b0": [0.72, 0.73, 0.74]}
UNPROMOTED = 0.9  # a lucky rung-0 score of a layer that never went on: not a claim


def training_run(top1: float, seed: int, **extra) -> dict:
    return {
        "task": "tiny",
        "exit_reason": "completed",
        "top1": top1,
        "steps": STEPS,
        "fidelity": [1.0, seed],
        **extra,
    }


def layer_record(candidate_id: int, seed_name: str, origin: str, top1: float) -> CandidateRecord:
    graph = seed_graph(seed_name)
    return CandidateRecord(
        id=candidate_id,
        status=Status.TRAINED,
        origin=origin,
        formula=graph.formula(),
        structural_hash=graph.structural_hash(),
        graph=graph_to_dict(graph),
        tasks=[training_run(top1, 0)],
        scores=[top1],
    )


def funnel_run(root: Path, promoted: bool = True, stopped: str | None = None) -> Path:
    """A run with a two-rung funnel (one seed, then three): two seed layers and a candidate (evonorm_b0's
    graph, a mutation) at the top rung, and a candidate that stayed at rung 0; without ``promoted`` no
    layer has gone on; the layer named ``stopped`` failed the hurdle on its third training seed."""
    run = RunDirectory(root / "funnel")
    fidelity = FidelitySettings(rungs=[Rung(1.0, 1), Rung(1.0, 3)], eta=3)
    run.write_config(RunConfig(name="funnel", output_dir=str(root), search=SearchConfig(fidelity=fidelity)))
    run.write_tasks([tiny_task()], ["tiny"])
    layers = [(0, "bn_relu", "seed"), (1, "gn_relu", "seed"), (2, "evonorm_b0", "mutation")]
    for candidate_id, name, origin in layers:
        run.append_event(layer_record(candidate_id, name, origin, TOP_RUNG[name][0]))
    run.append_event(layer_record(3, "evonorm_s0", "mutation", UNPROMOTED))
    for candidate_id, name, _ in layers if promoted else []:
        scores = TOP_RUNG[name]
        runs = [training_run(scores[0], 0, reused=True), training_run(scores[1], 1)]
        exit_reason = "quality_hurdle" if name == stopped else "completed"
        runs.append(training_run(scores[2], 2, exit_reason=exit_reason))
        run.append_rung(RungRecord(candidate_id, 1, runs, [sum(scores) / 3]))
    return run.path


def test_report_shows_the_noise_the_funnel_and_the_labelled_claims(tmp_path, capsys):
    path = funnel_run(tmp_path)
    data = cli_json(capsys, "report", str(path))
    noise = data["claims"]["noise"]["tiny"]
    assert noise["sd"] == pytest.approx(0.014142, abs=1e-6) and (noise["dof"], noise["layers"]) == (6, 3)
    assert "Welch t-test" in data["claims"]["test"]
    assert [(r["rung"], r["seeds"], r["layers"]) for r in data["rungs"]] == [(0, 1, 4), (1, 3, 3)]
    assert data["train_steps"] == (4 + 3 * 2) * STEPS  # the reused seed-0 runs count once
    row = data["claim_table"][0]  # the front first: the candidate alone beats the seeds' means
    assert (row["id"], row["front"], row["seeds"], row["tiny"]) == (2, "*", 3, "0.730 ± 0.010")
    assert (row["vs bn_relu"], row["vs gn_relu"]) == ("better", "within noise")
    assert [r["front"] for r in data["claim_table"][1:]] == ["", ""]  # the seeds, confirmed too
    [claim] = [c for c in data["claims"]["claims"] if c["layer"]["origin"] != "seed"]
    assert claim["versus"]["bn_relu"][0]["verdict"] == "better"

    page = (path / "report.html").read_text()
    cells = ("<td>0.730 ± 0.010</td>", "<td>better</td>", "<td>within noise</td>", "<td>0.0141</td>")
    assert all(cell in page for cell in cells)
    assert "Welch t-test" in page and "Training steps spent: 1000" in page
    assert "nothing is confirmed" not in page and "beat" not in page

    assert main(["report", str(path)]) == 0
    text = capsys.readouterr().out
    assert "tiny sd 0.0141 (dof 6, 3 layers)" in text and "Confirmed at rung 1" in text
    assert "rung 0: 4 layers (100% of each task's steps, 1 training seed)" in text


def test_a_run_stopped_before_the_end_is_said_in_the_table_not_shown_as_a_bare_score(tmp_path, capsys):
    path = funnel_run(tmp_path, stopped="gn_relu")
    rows = {row["layer"]: row["tiny"] for row in cli_json(capsys, "report", str(path))["claim_table"]}
    assert rows["gn_relu"] == "0.473 ± 0.410 (1/3 stopped)"  # the stopped run scores 0
    assert rows["bn_relu"] == "0.610 ± 0.010"


def test_report_without_a_layer_at_the_top_rung_confirms_nothing(tmp_path, capsys):
    path = funnel_run(tmp_path, promoted=False)
    data = cli_json(capsys, "report", str(path))
    assert data["claim_table"] == [] and data["claims"]["claims"] == []
    assert data["claims"]["noise"]["tiny"] == {"sd": None, "dof": 0, "layers": 0}
    shown = [(row["id"], row["rung"], row["tiny"]) for row in data["unconfirmed_table"]]
    assert shown == [(3, 0, "0.900"), (2, 0, "0.720"), (1, 0, "0.700"), (0, 0, "0.600")]
    page = (path / "report.html").read_text()
    assert "No layer reached the top rung (rung 1): nothing is confirmed" in page and "unconfirmed" in page
    assert "not estimated yet" in page and "vs bn_relu" not in page


def rerank_table(task: str, layers: list[dict]) -> str:
    return json.dumps({"task": task, "config": {}, "seeds": [7, 8], "layers": layers})


def test_report_shows_transfer_tables_and_skips_a_malformed_one_with_a_warning(tmp_path, capsys):
    path = funnel_run(tmp_path)
    folder = path / "rerank"
    folder.mkdir()
    good = {
        "label": "evonorm_b0",
        "kind": "candidate",
        "id": 2,
        "top1": [0.5, 0.7],
        "exits": ["completed"] * 2,
    }
    failed = {"label": "bn_relu", "kind": "reference", "id": None, "top1": [], "exits": ["error", "error"]}
    (folder / "batch8.json").write_text(
        rerank_table(
            "batch8",
            [{**good, "mean": 0.6, "std": 0.1414, "n": 2}, {**failed, "mean": None, "std": None, "n": 0}],
        )
    )
    (folder / "cut.json").write_text(rerank_table("cut", [])[:30])
    (folder / "odd.json").write_text(rerank_table("odd", [{**good, "mean": "high", "std": None, "n": 2}]))
    data = cli_json(capsys, "report", str(path))
    [table] = data["transfer"]
    assert table["task"] == "batch8" and table["seeds"] == [7, 8]
    assert [(r["layer"], r["mean"], r["n"]) for r in table["rows"]] == [
        ("evonorm_b0", 0.6, 2),
        ("bn_relu", None, 0),
    ]
    assert len(data["warnings"]) == 2 and all("not a transfer table, skipped" in w for w in data["warnings"])
    assert "odd.json" in data["warnings"][1] and "layer 0: mean" in data["warnings"][1]
    page = (path / "report.html").read_text()
    assert "0.600 ± 0.141" in page and "failed (error)" in page and "Warning: " in page

    assert main(["report", str(path)]) == 0
    captured = capsys.readouterr()
    assert captured.err.count("evosearch: warning: ") == 2 and "Traceback" not in captured.err
    assert "Transfer to batch8" in captured.out and "0.600 ± 0.141" in captured.out


# ---- export -------------------------------------------------------------------------------------


def ranked_layers_of(run_dir: Path) -> list[LayerResult]:
    run = RunDirectory(run_dir)
    return ranked_layers(run.read_events(), run.read_rungs(), run.objectives())


def load_module_class(path: Path, name: str) -> type[torch.nn.Module]:
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return getattr(module, name)


def test_export_round_trip_of_the_top_layers(run_dir, tmp_path, capsys):
    out = tmp_path / "layers"
    rows = cli_json(capsys, "export", str(run_dir), "--top", "3", "--out", str(out))
    ranked = ranked_layers_of(run_dir)[:3]
    assert [row["id"] for row in rows] == [layer.id for layer in ranked]
    readme = (out / "README.md").read_text()
    for rank, layer in enumerate(ranked):
        stem = out / f"{rank:02d}_candidate_{layer.id}"  # the run's one rung trains one seed
        assert f"| {rank} | {layer.id} | 0 | 1 | {layer.means[0]:.3f} | `{layer.formula}` |" in readme
        graph = load_graph(stem.with_suffix(".yaml"))
        assert graph.structural_hash() == graph_from_dict(layer.graph).structural_hash()
        source = stem.with_suffix(".py").read_text()
        assert "evosearch" not in "".join(line for line in source.splitlines() if "import" in line)
        exported = load_module_class(stem.with_suffix(".py"), f"Candidate{layer.id}")
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
    best = next(layer for layer in ranked_layers_of(run_dir) if not layer.is_reference)
    assert data["tasks"] == ["generated_resnet"] and data["seeds"] == 1
    assert data["rows"][0]["id"] == best.id and data["rows"][0]["kind"] == "candidate"
    assert [(r["label"], r["kind"]) for r in data["rows"][1:]] == [("bn_relu", "reference")]
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
