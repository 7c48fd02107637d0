"""``evosearch report RUN``: the numbers of a run, its plots, and one self-contained HTML page.

:func:`collect` reads a run directory into a :class:`RunReport` (plain data: ``--json`` prints it);
:func:`write_report` renders the plots as PNG files into ``RUN/plots/`` and ``RUN/report.html`` with
the same images embedded as data URIs, so the page can be mailed or archived alone.

A run may be read while it is still going or after it was interrupted: the event log is read once and
a torn last line is dropped (:meth:`RunDirectory.read_events`); a missing checkpoint only means the
"last population" falls back to every trained candidate. The objectives are the run's own
(:meth:`RunDirectory.objectives`): a task file edited or renamed since the run leaves its report as
it was. Figures are drawn with matplotlib's object-oriented API on the Agg canvas, never through
pyplot, so a report changes no global state and needs no display.

What the report may claim is what ``evosearch run`` claims (:mod:`evosearch.runner.claims`): layers of
the funnel's top rung, mean ± sd over training seeds, labelled against each seed layer by a stated
test. Everything else it shows (curves, the population, the top layers, probe correlations) is rung-0
accuracy, one training run per task and seed, and says so: a gap there may be noise.
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
import numbers
import string
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from evosearch.errors import EvosearchError
from evosearch.files import atomic_write_bytes, atomic_write_text, child_path
from evosearch.outcomes import EVALUATED, SCORED, Status
from evosearch.runner.claims import Claims, claim_rows, format_score, layer_rows, make_claims, trained_runs
from evosearch.runner.run_directory import (
    RERANK_DIR,
    CandidateRecord,
    RunDirectory,
    RungRecord,
    pareto_front,
    rank_records,
    searcher_state,
    warn,
)
from evosearch.search.funnel import FidelitySettings

REPORT_FILE = "report.html"
PLOTS_DIR = "plots"
# Where the transfer tables are: RUN/rerank/<task>.json, as evosearch.runner.rerank writes them (that
# module imports Ray, which a report does not load).


@dataclass
class SeedScore:
    """A seed layer's rung-0 accuracies, one per objective: a reference line on the plots, not a
    tested comparison."""

    name: str
    id: int
    scores: list[float]


@dataclass
class PopulationPoint:
    id: int
    scores: list[float]
    on_front: bool


@dataclass
class ProbeCorrelation:
    """One probe metric against rung-0 accuracy (the mean score over tasks) of the trained candidates:
    Spearman's rank correlation, None where fewer than three points or a constant side."""

    metric: str
    spearman: float | None
    n: int
    points: list[list[float]]  # [metric value, accuracy]


@dataclass
class TopRow:
    rank: int
    id: int
    name: str
    origin: str
    status: str
    on_front: bool
    scores: dict[str, float]
    probe: dict[str, float]
    formula: str


@dataclass
class RungCount:
    """A rung of the funnel: its training budget and how many layers have a result there."""

    rung: int
    steps: float  # a fraction of each task's training steps
    seeds: int  # training seeds per task
    layers: int


@dataclass
class TransferRow:
    """One layer of a transfer table: its accuracy on a held-out task over training seeds."""

    layer: str
    kind: str  # "candidate" or "reference"
    id: int | None
    mean: float | None  # None where no training run finished
    std: float | None  # None for fewer than two finished runs
    n: int
    exits: list[str]


@dataclass
class TransferTable:
    """``RUN/rerank/<task>.json``: the run's best layers and reference seeds trained again on a task."""

    task: str
    file: str
    seeds: list[int]
    rows: list[TransferRow]


@dataclass
class RunReport:
    run_dir: str
    name: str
    objectives: list[str]
    candidates: int
    evaluations: int
    budget: int | None
    pending: int | None  # proposals in flight at the last checkpoint; None without a checkpoint
    statuses: dict[str, int]
    best: dict[str, list[float | None]]  # per objective: best rung-0 accuracy after each evaluation
    seeds: list[SeedScore]
    population_source: str  # "checkpoint" or "all trained candidates"
    population: list[PopulationPoint]
    rejections: dict[str, int]
    rejection_events: list[tuple[int, str]]  # (candidate index in finishing order, first reason)
    probes: list[ProbeCorrelation]
    top: list[TopRow]  # ranked by rung-0 accuracy
    rungs: list[RungCount]
    eta: int  # the best 1/eta of a rung go on to the next
    train_steps: int  # summed over every training run, a run reused by a higher rung counted once
    claims: Claims  # the noise, the test, the top rung's Pareto front labelled against the seeds
    claim_table: list[dict[str, Any]]  # the table `evosearch run` prints
    unconfirmed_table: list[dict[str, Any]]  # the best layers below the top rung
    transfer: list[TransferTable]
    warnings: list[str]  # files read in part or skipped
    generated_at: str = field(default_factory=lambda: time.strftime("%Y-%m-%d %H:%M:%S"))

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "claims": self.claims.to_json()}


# ---- collecting ---------------------------------------------------------------------------------


def collect(path: str | Path, top: int = 10) -> RunReport:
    """The report's numbers for the run at ``path``; ``top`` rows of the ranking table."""
    if top < 1:
        raise EvosearchError(f"--top must be at least 1, got {top}")
    run = RunDirectory(path)
    config = run.read_config()  # also: a clear error where path is not a run directory
    objectives = run.objectives()
    records = run.read_events()
    rung_records = run.read_rungs()
    fidelity = config.search.fidelity
    claims = make_claims(records, rung_records, objectives, fidelity)
    checkpoint = run.load_checkpoint()
    population, source = _last_population(records, checkpoint)
    front_ids = {r.id for r in pareto_front(population)}
    rejected = [(i, _reason(r)) for i, r in enumerate(records) if r.status is Status.REJECTED]
    transfer, warnings = read_transfer(run.path)
    for line in warnings:
        warn(line)
    return RunReport(
        run_dir=str(run.path),
        name=config.name,
        objectives=objectives,
        candidates=len(records),
        evaluations=sum(r.status in EVALUATED for r in records),
        budget=config.search.max_evaluations,
        pending=None if checkpoint is None else len(searcher_state(checkpoint)[1]["pending"]),
        statuses=dict(Counter(r.status.value for r in records)),
        best=_best_curves(records, objectives),
        seeds=[
            SeedScore(layer_name(r), r.id, list(r.scores))
            for r in records
            if r.origin == "seed" and r.status is Status.TRAINED and r.scores
        ],
        population_source=source,
        population=[PopulationPoint(r.id, list(r.scores), r.id in front_ids) for r in _scored(population)],
        rejections=dict(Counter(reason for _, reason in rejected).most_common()),
        rejection_events=rejected,
        probes=_probe_correlations(records),
        top=_top_rows(records, objectives, top),
        rungs=rung_counts(records, rung_records, fidelity),
        eta=fidelity.eta,
        train_steps=train_steps(records, rung_records),
        claims=claims,
        claim_table=claim_rows(claims),
        unconfirmed_table=layer_rows(claims.unconfirmed[:top], objectives),
        transfer=transfer,
        warnings=warnings,
    )


def rung_counts(
    records: list[CandidateRecord], rung_records: list[RungRecord], fidelity: FidelitySettings
) -> list[RungCount]:
    """Each rung with the number of layers that have a result there. Every layer trained on its own
    has one at rung 0 (its record); a result above it counts where its candidate's record was read."""
    trained = {r.id for r in records if r.status in EVALUATED and r.scores is not None}
    reached = [trained] + [
        {r.id for r in rung_records if r.rung == k and r.id in trained} for k in range(1, len(fidelity.rungs))
    ]
    return [
        RungCount(k, rung.steps, rung.seeds, len(ids))
        for k, (rung, ids) in enumerate(zip(fidelity.rungs, reached, strict=True))
    ]


def train_steps(records: list[CandidateRecord], rung_records: list[RungRecord]) -> int:
    """Training steps the run spent: every training run of every rung, task and seed, once."""
    runs = [run for r in [*records, *rung_records] for run in trained_runs(r.tasks)]
    return sum(_steps(run) for run in runs)


def _steps(run: dict[str, Any]) -> int:
    """A training run's steps; 0 where its record has none (a run that failed to start) or holds
    something else than a count."""
    steps = run.get("steps")
    return steps if isinstance(steps, int) and not isinstance(steps, bool) and steps > 0 else 0


def _scored(records: list[CandidateRecord]) -> list[CandidateRecord]:
    return [r for r in records if r.status in SCORED and r.scores]


def _last_population(
    records: list[CandidateRecord], checkpoint: dict[str, Any] | None
) -> tuple[list[CandidateRecord], str]:
    """The population of the last checkpoint, as records; without a checkpoint, or for an algorithm
    without a population (random search), every trained record. A member whose record is not read
    yet (the run is still writing it) is left out."""
    state = None if checkpoint is None else searcher_state(checkpoint)[1]
    if state is None or "population" not in state:
        return _scored(records), "all trained candidates"
    by_id = {r.id: r for r in records}
    ids = [m["id"] for m in state["population"]]
    return [by_id[i] for i in ids if i in by_id], "checkpoint"


def _reason(record: CandidateRecord) -> str:
    """The first reason's metric, as the search's progress line counts them."""
    return record.reasons[0].split(":")[0] if record.reasons else "unknown"


def _best_curves(records: list[CandidateRecord], objectives: list[str]) -> dict[str, list[float | None]]:
    """Per objective, the best accuracy of a completed training after each evaluation."""
    curves: dict[str, list[float | None]] = {name: [] for name in objectives}
    for record in (r for r in records if r.status in EVALUATED):
        for k, name in enumerate(objectives):
            previous = curves[name][-1] if curves[name] else None
            score = record.scores[k] if record.status is Status.TRAINED and record.scores else None
            candidates = [v for v in (previous, score) if v is not None and math.isfinite(v)]
            curves[name].append(max(candidates) if candidates else None)
    return curves


def layer_name(record: CandidateRecord) -> str:
    """The name of the record's layer; "layer" (a graph file's default) where its graph has no name,
    or something else than text there: a report shows what it can of a damaged record."""
    name = record.graph.get("name")
    return name if isinstance(name, str) else "layer"


def probe_metrics(record: CandidateRecord) -> dict[str, float]:
    """The record's scalar probe metrics (numbers, not flags, profiles or the fingerprint)."""
    metrics = (record.probe or {}).get("metrics")
    if not isinstance(metrics, dict):  # a record is read as its types say; a probe's content is free
        return {}
    return {
        k: float(v)
        for k, v in metrics.items()
        if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
    }


def _probe_correlations(records: list[CandidateRecord]) -> list[ProbeCorrelation]:
    trained = [r for r in records if r.status is Status.TRAINED and r.scores]
    points: dict[str, list[list[float]]] = {}
    for record in trained:
        accuracy = float(np.mean(record.scores))
        for metric, value in probe_metrics(record).items():
            points.setdefault(metric, []).append([value, accuracy])
    return [
        ProbeCorrelation(metric, spearman([p[0] for p in pts], [p[1] for p in pts]), len(pts), pts)
        for metric, pts in sorted(points.items())
    ]


def _top_rows(records: list[CandidateRecord], objectives: list[str], top: int) -> list[TopRow]:
    front_ids = {r.id for r in pareto_front(records)}
    return [
        TopRow(
            rank=rank,
            id=r.id,
            name=layer_name(r),
            origin=r.origin,
            status=r.status.value,
            on_front=r.id in front_ids,
            scores=dict(zip(objectives, r.scores, strict=False)),
            probe=probe_metrics(r),
            formula=r.formula,
        )
        for rank, r in enumerate(rank_records(records)[:top])
    ]


def rank_values(values: np.ndarray) -> np.ndarray:
    """Ranks from 1, tied values sharing their average rank."""
    order = np.argsort(values, kind="stable")
    ranks = np.empty(len(values), dtype=float)
    ranks[order] = np.arange(1, len(values) + 1)
    _, inverse, counts = np.unique(values, return_inverse=True, return_counts=True)
    sums = np.bincount(inverse, weights=ranks)
    return (sums / counts)[inverse]


def spearman(x: list[float], y: list[float]) -> float | None:
    """Spearman's rank correlation (the Pearson correlation of the tie-averaged ranks); None where it
    is undefined: fewer than three pairs, or one side constant."""
    if len(x) < 3:
        return None
    rx, ry = rank_values(np.asarray(x, dtype=float)), rank_values(np.asarray(y, dtype=float))
    if rx.std() == 0 or ry.std() == 0:
        return None
    return float(np.corrcoef(rx, ry)[0, 1])


def read_transfer(run_path: Path) -> tuple[list[TransferTable], list[str]]:
    """The transfer tables of ``RUN/rerank/*.json``, by file name, and a warning for each file that
    is not one (it is skipped): a report shows what it can of a run."""
    try:
        folder = child_path(run_path, RERANK_DIR)
    except EvosearchError as e:
        return [], [f"transfer tables skipped: {e}"]
    tables, warnings = [], []
    for file in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        try:
            tables.append(_transfer_table(child_path(folder, file.name)))
        except (OSError, ValueError, RecursionError, EvosearchError) as e:  # a JSON error is a ValueError
            warnings.append(f"{file}: not a transfer table, skipped ({e})")
    return tables, warnings


def _transfer_table(file: Path) -> TransferTable:
    data = json.loads(file.read_text(encoding="utf-8"))
    if not isinstance(data, dict) or not isinstance(data.get("task"), str):
        raise EvosearchError("no task name")
    layers, seeds = data.get("layers"), data.get("seeds", [])
    if not isinstance(layers, list) or not isinstance(seeds, list) or not all(map(_is_integer, seeds)):
        raise EvosearchError("layers must be a list, seeds a list of integers")
    return TransferTable(
        data["task"], str(file), seeds, [_transfer_row(k, layer) for k, layer in enumerate(layers)]
    )


def _transfer_row(index: int, layer: Any) -> TransferRow:
    """One layer's entry of a transfer table, each field checked for its type."""
    if not isinstance(layer, dict):
        raise EvosearchError(f"layer {index} is not an object")
    wrong = next((name for name, is_valid in _TRANSFER_FIELDS.items() if not is_valid(layer.get(name))), None)
    if wrong is not None:
        raise EvosearchError(f"layer {index}: {wrong} is missing or not of its type")
    return TransferRow(
        layer["label"],
        layer["kind"],
        layer.get("id"),
        layer["mean"],
        layer["std"],
        layer["n"],
        layer["exits"],
    )


def _is_integer(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_count(value: Any) -> bool:
    return _is_integer(value) and value >= 0


def _is_accuracy(value: Any) -> bool:
    """A finite number, or None (no finished run)."""
    return value is None or (
        isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)
    )


_TRANSFER_FIELDS = {
    "label": lambda v: isinstance(v, str),
    "kind": lambda v: isinstance(v, str),
    "id": lambda v: v is None or _is_count(v),
    "mean": _is_accuracy,
    "std": _is_accuracy,
    "n": _is_count,
    "exits": lambda v: isinstance(v, list) and all(isinstance(e, str) for e in v),
}


# ---- plots --------------------------------------------------------------------------------------


def _plain(text: str) -> str:
    """``text`` (a name from the run) as matplotlib shows it, character for character: between two
    ``$`` it would parse mathtext, and fail to draw the figure where that does not parse."""
    return text.replace("$", r"\$")


def _png(figure: Figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    return buffer.getvalue()


def _integer_x(axes) -> None:
    axes.xaxis.set_major_locator(MaxNLocator(integer=True))


def _no_data(axes, text: str) -> None:
    axes.text(0.5, 0.5, text, ha="center", va="center", transform=axes.transAxes, color="gray")
    axes.set_xticks([])
    axes.set_yticks([])


def plot_best(report: RunReport) -> bytes:
    """Best rung-0 accuracy per objective against evaluations, the seeds' rung-0 accuracies as dashed
    lines: unconfirmed scores, labelled as such."""
    count = len(report.objectives)
    figure = Figure(figsize=(6.5, 3.2 * count))
    for k, (name, curve) in enumerate(report.best.items()):
        axes = figure.add_subplot(count, 1, k + 1)
        steps = [(i + 1, v) for i, v in enumerate(curve) if v is not None]
        if not steps:
            _no_data(axes, "no completed training yet")
            axes.set_title(_plain(name))
            continue
        xs, ys = zip(*steps, strict=True)
        axes.step(
            [*xs, len(curve)], [*ys, ys[-1]], where="post", color="C0", label="best rung-0 accuracy so far"
        )
        for j, seed in enumerate(report.seeds):
            axes.axhline(
                seed.scores[k],
                color=f"C{j + 1}",
                linestyle="--",
                linewidth=1,
                label=f"{_plain(seed.name)} (rung 0)",
            )
        axes.set_title(_plain(name))
        axes.set_xlabel("evaluations")
        _integer_x(axes)
        axes.set_ylabel("rung-0 top-1 accuracy")
        axes.legend(fontsize="small", loc="lower right")
    return _png(figure)


def plot_pareto(report: RunReport) -> bytes:
    """The last population's rung-0 accuracies on the first two objectives (one objective: sorted by
    score), the front of those scores highlighted."""
    figure = Figure(figsize=(6.5, 4.5))
    axes = figure.add_subplot()
    points = report.population
    axes.set_title(f"last population ({report.population_source}), rung-0 accuracy; front in red")
    if not points:
        _no_data(axes, "no trained candidate yet")
        return _png(figure)
    if len(report.objectives) >= 2:
        xs, ys = [p.scores[0] for p in points], [p.scores[1] for p in points]
        axes.set_xlabel(_plain(report.objectives[0]))
        axes.set_ylabel(_plain(report.objectives[1]))
    else:
        points = sorted(points, key=lambda p: -p.scores[0])
        xs, ys = list(range(1, len(points) + 1)), [p.scores[0] for p in points]
        axes.set_xlabel("rank in the population")
        _integer_x(axes)
        axes.set_ylabel(_plain(report.objectives[0]))
    colors = ["C3" if p.on_front else "C7" for p in points]
    axes.scatter(xs, ys, c=colors, s=28)
    for x, y, p in zip(xs, ys, points, strict=True):
        if p.on_front:
            axes.annotate(str(p.id), (x, y), textcoords="offset points", xytext=(4, 4), fontsize=8)
    return _png(figure)


def plot_rejections(report: RunReport) -> bytes:
    """Cumulative rejections per reason against candidates finished."""
    figure = Figure(figsize=(6.5, 3.5))
    axes = figure.add_subplot()
    axes.set_title("rejections by reason")
    if not report.rejection_events:
        _no_data(axes, "no rejections")
        return _png(figure)
    for reason in report.rejections:
        xs = [i + 1 for i, r in report.rejection_events if r == reason]
        axes.step(
            [0, *xs, report.candidates],
            [0, *range(1, len(xs) + 1), len(xs)],
            where="post",
            label=_plain(reason),
        )
    axes.set_xlabel("candidates finished")
    _integer_x(axes)
    axes.set_ylabel("rejected (cumulative)")
    axes.yaxis.set_major_locator(MaxNLocator(integer=True))
    axes.legend(fontsize="small", loc="upper left")
    return _png(figure)


def plot_probes(report: RunReport) -> bytes:
    """Each probe metric against rung-0 accuracy, with Spearman's rank correlation in the title."""
    shown = report.probes
    columns = 3
    rows = max(1, math.ceil(len(shown) / columns))
    figure = Figure(figsize=(4 * columns, 3.2 * rows))
    if not shown:
        _no_data(figure.add_subplot(), "no trained candidate with probe values yet")
        return _png(figure)
    for k, correlation in enumerate(shown):
        axes = figure.add_subplot(rows, columns, k + 1)
        xs, ys = zip(*correlation.points, strict=True)
        axes.scatter(xs, ys, s=16)
        if min(xs) > 0 and max(xs) / min(xs) > 100:
            axes.set_xscale("log")
        rho = "n/a" if correlation.spearman is None else f"{correlation.spearman:+.2f}"
        axes.set_title(f"{_plain(correlation.metric)}: ρ = {rho} (n = {correlation.n})", fontsize=10)
        axes.set_ylabel("rung-0 accuracy")
    figure.tight_layout()
    return _png(figure)


PLOTS = {"best": plot_best, "pareto": plot_pareto, "rejections": plot_rejections, "probes": plot_probes}


# ---- HTML ---------------------------------------------------------------------------------------
#
# Every value from a run (names, formulas, origins, the run's own path) is text that may hold HTML:
# a record can say anything. The page is therefore built only through :func:`fill`, which escapes
# each value it inserts unless the value is :class:`Markup` this module built, so that forgetting to
# escape cannot happen; the templates are constants of this module.

_CSS = """
body { font-family: sans-serif; margin: 2em; color: #222; }
table { border-collapse: collapse; margin: 1em 0; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: left; }
code { font-size: 0.95em; }
img { max-width: 100%; display: block; margin: 1em 0; }
"""

_PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>evosearch report: $name</title>
<style>$css</style></head><body>
<h1>Run $name</h1>
<p>$run_dir, read $generated_at.</p>
$warnings
$summary
<h2>Noise over training seeds</h2>
$noise
<h2>The funnel</h2>
$funnel
<h2>Confirmed layers</h2>
$claims
<h2>Transfer to held-out settings</h2>
$transfer
<h2>Best rung-0 accuracy per objective</h2>
<p>The best rung-0 accuracy ($rung0) after each evaluation; dashed lines: the seed layers' rung-0
accuracies. Rung-0 scores are not confirmed: a gap between two of them may be noise (above), not a
tested difference.</p>
$best_plot
<h2>Pareto front of the last population</h2>
<p>Rung-0 accuracies ($rung0).</p>
$pareto_plot
<h2>Rejections by reason</h2>
$rejections_plot
<h2>Do the at-initialization probes predict trained quality?</h2>
<p>Each probe metric against the mean rung-0 accuracy of the trained candidates.</p>
$correlations
$probes_plot
<h2>Top $count layers by rung-0 accuracy</h2>
<p>The Pareto front of the rung-0 accuracies ($rung0) first, then the others by mean score: a ranking
of rung-0 scores, not a tested one. The tested claims are those under Confirmed layers.</p>
$top
</body></html>
"""


class Markup(str):
    """HTML this module built from its templates: :func:`fill` inserts it as it is."""


def escape(value: object) -> Markup:
    """``value`` as HTML: its text with ``&<>"'`` escaped (safe in an element and in a quoted
    attribute), or itself where it is :class:`Markup` already."""
    return value if isinstance(value, Markup) else Markup(html.escape(str(value), quote=True))


def fill(template: str, **values: object) -> Markup:
    """``template`` (a ``string.Template`` of this module) with each ``$name`` replaced by its value,
    escaped by :func:`escape`."""
    return Markup(string.Template(template).substitute({k: escape(v) for k, v in values.items()}))


def join(parts: Iterable[object]) -> Markup:
    """``parts`` one after the other, each escaped by :func:`escape`."""
    return Markup("".join(escape(part) for part in parts))


def _table(header: list[object], rows: list[list[object]]) -> Markup:
    head = join(fill("<th>$cell</th>", cell=cell) for cell in header)
    body = join(
        fill("<tr>$cells</tr>", cells=join(fill("<td>$cell</td>", cell=c) for c in row)) for row in rows
    )
    return fill("<table><tr>$head</tr>$body</table>", head=head, body=body)


def _number(value: float | None) -> str:
    return "–" if value is None else f"{value:.4g}"


def _image(name: str, png: bytes) -> Markup:
    return fill(
        '<img alt="$name" src="data:image/png;base64,$data">', name=name, data=base64.b64encode(png).decode()
    )


def render_html(report: RunReport, images: dict[str, bytes]) -> str:
    """One page, the images inline: nothing it shows lives outside the file."""
    return fill(
        _PAGE,
        css=Markup(_CSS),
        name=report.name,
        run_dir=report.run_dir,
        generated_at=report.generated_at,
        warnings=join(_paragraph(f"Warning: {line}") for line in report.warnings),
        summary=_summary_html(report),
        noise=_noise_html(report),
        funnel=_funnel_html(report),
        claims=_claims_html(report),
        transfer=_transfer_html(report.transfer),
        rung0=budget_words(report.rungs[0]),
        correlations=_table(
            ["probe metric", "Spearman ρ vs. rung-0 accuracy", "n"],
            [[c.metric, _number(c.spearman), c.n] for c in report.probes],
        ),
        count=len(report.top),
        top=_top_html(report),
        **{f"{name}_plot": _image(name, png) for name, png in images.items()},
    )


def budget_words(rung: RungCount) -> str:
    """A rung's training budget in words: ``34% of each task's steps, 1 training seed``."""
    seeds = f"{rung.seeds} training seed" + ("s" if rung.seeds > 1 else "")
    return f"{rung.steps:.0%} of each task's steps, {seeds}"


def _paragraph(text: str) -> Markup:
    return fill("<p>$text</p>", text=text)


def _summary_html(report: RunReport) -> Markup:
    budget = f" of {report.budget}" if report.budget else ""
    pending = "no checkpoint" if report.pending is None else f"{report.pending} in flight at the checkpoint"
    statuses = ", ".join(f"{k} {v}" for k, v in report.statuses.items()) or "none"
    return _table(
        ["candidates", "evaluations", "statuses", "state"],
        [[report.candidates, f"{report.evaluations}{budget}", statuses, pending]],
    )


def _noise_html(report: RunReport) -> Markup:
    claims = report.claims
    text = (
        "Each objective's seed-to-seed sd of top-1 accuracy, pooled over the layers trained with several "
        f"training seeds at the top rung's steps ({report.rungs[-1].steps:.0%} of each task's), each "
        f"layer centred on its own mean; dof: its degrees of freedom. The test behind the labels of the "
        f"confirmed layers: {claims.test}."
    )
    rows = [
        [name, "not estimated yet" if e.sd is None else f"{e.sd:.4f}", e.dof, e.layers]
        for name, e in claims.noise.items()
    ]
    return join([_paragraph(text), _table(["objective", "sd", "dof", "layers"], rows)])


def _funnel_html(report: RunReport) -> Markup:
    text = (
        f"The best 1/{report.eta} of a rung (Pareto rank over the objectives) go on to the next; the seed "
        f"layers go through every rung. Training steps spent: {report.train_steps} (every training run of "
        "every rung, task and seed; a run that a higher rung reuses counted once)."
    )
    rows = [[r.rung, f"{r.steps:.0%}", r.seeds, r.layers] for r in report.rungs]
    header = ["rung", "steps (of each task's)", "training seeds", "layers that reached it"]
    return join([_paragraph(text), _table(header, rows)])


def _claims_html(report: RunReport) -> Markup:
    """The table ``evosearch run`` ends with; where no layer reached the top rung, the best below it,
    said to be unconfirmed."""
    claims = report.claims
    if not report.claim_table:
        text = (
            f"No layer reached the top rung (rung {claims.rung}): nothing is confirmed. "
            "The best layers so far, unconfirmed:"
        )
        return join([_paragraph(text), _rows_table(report.unconfirmed_table)])
    text = (
        f"The Pareto front of rung {claims.rung} ({budget_words(report.rungs[-1])}): mean ± sd of top-1 "
        f"accuracy over training seeds, and one label per objective ({' / '.join(claims.objectives)}) "
        "against each seed layer at that rung, by the test stated under Noise."
    )
    if not claims.references:
        text += " No seed layer reached this rung: no label could be tested."
    return join([_paragraph(text), _rows_table(report.claim_table)])


def _rows_table(rows: list[dict[str, Any]]) -> Markup:
    """Rows of one shape as a table, their keys the header; a formula as code."""
    if not rows:
        return _paragraph("No trained layer yet.")
    cells = [[fill("<code>$v</code>", v=v) if k == "formula" else v for k, v in row.items()] for row in rows]
    return _table(list(rows[0]), cells)


def _transfer_html(tables: list[TransferTable]) -> Markup:
    if not tables:
        return _paragraph(f"No transfer table in {RERANK_DIR}/ (evosearch rerank RUN writes them).")
    text = (
        "The run's best layers and reference seeds trained again on each task: mean ± sd of top-1 "
        "accuracy over training seeds, n the runs that finished. Not a tested comparison."
    )
    return join([_paragraph(text), *(_transfer_task_html(table) for table in tables)])


def _transfer_task_html(table: TransferTable) -> Markup:
    seeds = ", ".join(map(str, table.seeds)) or "not recorded"
    rows = [[row.layer, row.kind, transfer_score(row), row.n] for row in table.rows]
    return join(
        [
            _paragraph(f"Task {table.task} ({table.file}), training seeds {seeds}:"),
            _table(["layer", "kind", "mean ± sd", "n"], rows),
        ]
    )


def transfer_score(row: TransferRow) -> str:
    """``0.712 ± 0.010``, or how the runs ended where none finished."""
    if row.mean is None:
        return f"failed ({', '.join(sorted(set(row.exits))) or 'no run'})"
    return format_score(row.mean, row.std)


def _top_html(report: RunReport) -> Markup:
    metrics = sorted({m for row in report.top for m in row.probe})
    header = ["rank", "id", "layer", "origin", "rung-0 front", *report.objectives, *metrics, "formula"]
    rows = [
        [
            r.rank,
            r.id,
            r.name,
            r.origin,
            "yes" if r.on_front else "",
            *(_number(r.scores.get(o)) for o in report.objectives),
            *(_number(r.probe.get(m)) for m in metrics),
            fill("<code>$formula</code>", formula=r.formula),
        ]
        for r in report.top
    ]
    return _table(header, rows)


# ---- writing ------------------------------------------------------------------------------------


@dataclass
class WrittenReport:
    report: RunReport
    html: Path
    plots: dict[str, Path]


def write_report(path: str | Path, top: int = 10) -> WrittenReport:
    """Collect the run's numbers, write ``plots/*.png`` and ``report.html`` into the run. A run
    directory from elsewhere may hold links out of it: every path is checked (:func:`child_path`)
    before the plots are drawn, and each file is replaced atomically."""
    report = collect(path, top)
    page = child_path(path, REPORT_FILE)
    plots_dir = child_path(path, PLOTS_DIR)
    plots = {name: child_path(plots_dir, f"{name}.png") for name in PLOTS}
    images = {name: draw(report) for name, draw in PLOTS.items()}
    for name, png in images.items():
        atomic_write_bytes(plots[name], png)
    atomic_write_text(page, render_html(report, images))
    return WrittenReport(report, page, plots)
