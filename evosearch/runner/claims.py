"""What a run may claim: each layer's evidence at its highest rung, the noise, and tested labels.

A candidate's record (``events.jsonl``) holds its rung-0 training runs; each promotion adds a
:class:`~evosearch.runner.run_directory.RungRecord` (``rungs.jsonl``) with every run of that rung.
From them:

- :func:`layer_results`: every trained layer at the highest rung it reached, its accuracy on each
  objective per training seed, their mean and sd;
- :func:`noise_estimates`: each objective's seed-to-seed sd, pooled over every layer trained with
  several seeds at the top rung's steps (:func:`~evosearch.search.significance.pooled_noise`);
- :func:`make_claims`: the layers of the top rung, the Pareto front of their means first, each
  labelled against each seed layer of the run on each objective as *better*, *worse* or *within
  noise* (:func:`~evosearch.search.significance.compare`). Nothing else is a claim: a layer below the
  top rung is shown as *unconfirmed*.

The driver writes ``best/`` and ``noise.json`` from these; ``evosearch run`` prints the table and
``evosearch report`` shows the same.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import moocore
import numpy as np

from evosearch.outcomes import EVALUATED, TRAINED_EXITS, ExitReason
from evosearch.runner.run_directory import CandidateRecord, RunDirectory, RungRecord
from evosearch.search import WORST_SCORE
from evosearch.search.funnel import FidelitySettings, rank_results
from evosearch.search.significance import (
    DEFAULT_ALPHA,
    Comparison,
    NoiseEstimate,
    describe_test,
    mean_sd,
    pooled_noise,
)
from evosearch.search.significance import compare as compare_scores


def run_exit(result: dict[str, Any]) -> str:
    """How a training run ended, as its record says."""
    return str(result.get("exit_reason", ExitReason.ERROR))


def run_score(result: dict[str, Any]) -> float:
    """A training run's score: its top-1 accuracy where it trained to the end, else the worst. A record
    is data: an accuracy that is not a finite number (a damaged line) counts as no accuracy."""
    top1 = result.get("top1")
    accuracy = isinstance(top1, (int, float)) and not isinstance(top1, bool) and math.isfinite(top1)
    return float(top1) if accuracy and run_exit(result) in TRAINED_EXITS else WORST_SCORE


def trained_runs(results: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The training runs a record trained itself: a rung that reuses a lower rung's run holds a copy
    of it marked ``reused``, which must not count twice (training steps, runs to reuse)."""
    return [result for result in results if not result.get("reused")]


def run_fidelity(result: dict[str, Any]) -> tuple[float, int]:
    """(steps fraction, seed offset) of a training run; a run from before the funnel trained the
    task's whole schedule with the task's own seed."""
    steps, seed = result.get("fidelity") or (1.0, 0)
    return float(steps), int(seed)


@dataclass
class LayerResult:
    """A layer at one rung: its accuracies per objective, one per training seed, and their summary."""

    id: int
    name: str
    origin: str
    formula: str
    rung: int
    seeds: list[list[float]]  # per objective, per training seed
    means: list[float]
    sds: list[float | None]
    graph: dict[str, Any] = field(repr=False)
    # Per objective, the runs that did not train to the end (hurdle, non-finite loss, an error):
    # each scores the worst, which a table says rather than show a bare 0.
    stopped: list[int] = field(default_factory=list)

    def score_text(self, objective: int) -> str:
        """``0.712 ± 0.010``, and ``(2/3 stopped)`` where runs did not train to the end."""
        text = format_score(self.means[objective], self.sds[objective])
        stopped = self.stopped[objective] if self.stopped else 0
        return f"{text} ({stopped}/{len(self.seeds[objective])} stopped)" if stopped else text

    @property
    def is_reference(self) -> bool:
        return self.origin == "seed"

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        del data["graph"]
        return data


@dataclass
class Claim:
    """A layer of the top rung against each seed layer: one comparison per objective."""

    layer: LayerResult
    versus: dict[str, list[Comparison]]  # seed layer name -> per objective
    on_front: bool  # no layer of the top rung has a higher mean on every objective

    def to_json(self) -> dict[str, Any]:
        return {
            "on_front": self.on_front,
            "layer": self.layer.to_json(),
            "versus": {name: [c.to_json() for c in comparisons] for name, comparisons in self.versus.items()},
        }


@dataclass
class Claims:
    """A run's confirmed results: see :func:`make_claims`."""

    objectives: list[str]
    rung: int  # the rung the claims are made at: the funnel's top
    test: str  # the test behind the labels, in words
    noise: dict[str, NoiseEstimate]
    claims: list[Claim]  # every layer of the top rung, best first (the Pareto front first)
    confirmed: list[LayerResult]  # every layer of the top rung, best first
    references: list[LayerResult]  # the seed layers at the top rung
    unconfirmed: list[LayerResult]  # the best layers below the top rung, best first

    def to_json(self) -> dict[str, Any]:
        return {
            "objectives": self.objectives,
            "rung": self.rung,
            "test": self.test,
            "noise": {name: estimate.to_json() for name, estimate in self.noise.items()},
            "claims": [c.to_json() for c in self.claims],
            "confirmed": [layer.to_json() for layer in self.confirmed],
            "references": [layer.to_json() for layer in self.references],
            "unconfirmed": [layer.to_json() for layer in self.unconfirmed],
        }


def layer_results(
    records: Sequence[CandidateRecord], rung_records: Sequence[RungRecord], objectives: list[str]
) -> dict[int, LayerResult]:
    """Every layer trained on its own (no duplicate's copy), at the highest rung it reached."""
    by_id = {r.id: r for r in records if r.status in EVALUATED and r.scores is not None}
    runs: dict[int, tuple[int, list[dict[str, Any]]]] = {i: (0, r.tasks) for i, r in by_id.items()}
    for rung_record in rung_records:
        if rung_record.id in runs and rung_record.rung > runs[rung_record.id][0]:
            runs[rung_record.id] = (rung_record.rung, rung_record.tasks)
    return {i: _layer(by_id[i], rung, tasks, objectives) for i, (rung, tasks) in runs.items()}


def _layer(
    record: CandidateRecord, rung: int, runs: list[dict[str, Any]], objectives: list[str]
) -> LayerResult:
    per_objective: list[list[float]] = [[] for _ in objectives]
    stopped = [0] * len(objectives)
    for run in sorted(runs, key=lambda r: run_fidelity(r)[1]):
        if run.get("task") in objectives:
            index = objectives.index(run["task"])
            per_objective[index].append(run_score(run))
            stopped[index] += run_exit(run) not in TRAINED_EXITS
    summaries = [mean_sd(scores) if scores else (WORST_SCORE, None) for scores in per_objective]
    name = str(record.graph.get("name") or f"candidate_{record.id}")
    return LayerResult(
        id=record.id,
        name=name,
        origin=record.origin,
        formula=record.formula,
        rung=rung,
        seeds=per_objective,
        means=[m for m, _ in summaries],
        sds=[sd for _, sd in summaries],
        graph=record.graph,
        stopped=stopped,
    )


def ranked_layers(
    records: Sequence[CandidateRecord], rung_records: Sequence[RungRecord], objectives: list[str]
) -> list[LayerResult]:
    """Every layer trained on its own, best first: the highest rung first (more evidence), then as
    the funnel ranks a rung."""
    return _best_first(list(layer_results(records, rung_records, objectives).values()))


def noise_estimates(
    records: Sequence[CandidateRecord],
    rung_records: Sequence[RungRecord],
    objectives: list[str],
    steps: float,
) -> dict[str, NoiseEstimate]:
    """Each objective's seed-to-seed sd at ``steps`` (a fraction of the tasks' steps), pooled over the
    layers with several training seeds there; every repeated evaluation adds to it. Runs that did
    not train to the end are left out: a layer that passes its hurdle on some seeds and not others
    would otherwise set the noise of every layer (its own spread still counts in its own tests)."""
    scores: dict[tuple[int, str], dict[int, float]] = defaultdict(dict)
    all_runs = [(r.id, r.tasks) for r in records if r.status in EVALUATED]
    all_runs += [(r.id, r.tasks) for r in rung_records]
    for candidate_id, runs in all_runs:
        for run in runs:
            run_steps, seed = run_fidelity(run)
            if run_steps == steps and run.get("task") in objectives and run_exit(run) in TRAINED_EXITS:
                scores[candidate_id, run["task"]][seed] = run_score(run)
    return {
        name: pooled_noise(list(seeds.values()) for (_, task), seeds in scores.items() if task == name)
        for name in objectives
    }


def make_claims(
    records: Sequence[CandidateRecord],
    rung_records: Sequence[RungRecord],
    objectives: list[str],
    fidelity: FidelitySettings,
    alpha: float = DEFAULT_ALPHA,
) -> Claims:
    """The run's claims at the funnel's top rung; see the module docstring."""
    layers = layer_results(records, rung_records, objectives)
    top = fidelity.top
    confirmed = _best_first([layer for layer in layers.values() if layer.rung == top])
    references = [layer for layer in confirmed if layer.is_reference]
    front = {layer.id for layer in _front(confirmed)}
    claims = [
        Claim(
            layer,
            {ref.name: _compare(layer, ref, alpha) for ref in references if ref.id != layer.id},
            layer.id in front,
        )
        for layer in confirmed
    ]
    below = _best_first([layer for layer in layers.values() if layer.rung < top])
    return Claims(
        objectives=objectives,
        rung=top,
        test=describe_test(alpha),
        noise=noise_estimates(records, rung_records, objectives, fidelity.rungs[top].steps),
        claims=claims,
        confirmed=confirmed,
        references=references,
        unconfirmed=below,
    )


def _compare(layer: LayerResult, reference: LayerResult, alpha: float) -> list[Comparison]:
    return [compare_scores(a, b, alpha=alpha) for a, b in zip(layer.seeds, reference.seeds, strict=True)]


def _best_first(layers: list[LayerResult]) -> list[LayerResult]:
    """By rung, then as the funnel ranks a rung: Pareto rank over the means, mean, id."""
    by_id = {layer.id: layer for layer in layers}
    ranked: list[LayerResult] = []
    for rung in sorted({layer.rung for layer in layers}, reverse=True):
        order = rank_results({layer.id: layer.means for layer in layers if layer.rung == rung})
        ranked.extend(by_id[i] for i in order)
    return ranked


def _front(layers: list[LayerResult]) -> list[LayerResult]:
    """The layers (of one rung) no other dominates on the means, in the order given."""
    if not layers:
        return []
    means = np.array([layer.means for layer in layers], dtype=float)
    keep = moocore.is_nondominated(means, maximise=True, keep_weakly=True)
    return [layer for layer, kept in zip(layers, keep, strict=True) if kept]


# ---- writing and showing ------------------------------------------------------------------------


def format_score(mean: float, sd: float | None) -> str:
    """``0.712 ± 0.010``; the mean alone where there is no spread to show (one seed)."""
    return f"{mean:.3f}" if sd is None else f"{mean:.3f} ± {sd:.3f}"


def verdicts(comparisons: Sequence[Comparison]) -> str:
    """One label per objective, in the objectives' order: ``better / within noise``."""
    return " / ".join(str(c.verdict) for c in comparisons)


def claim_rows(claims: Claims) -> list[dict[str, Any]]:
    """The final table: each layer of the top rung (``front``: on its Pareto front) with its mean ± sd
    over training seeds on each objective, and its labels against each seed layer."""
    rows = []
    for claim in claims.claims:
        layer = claim.layer
        row: dict[str, Any] = {"id": layer.id, "layer": layer.name, "front": "*" if claim.on_front else ""}
        row["seeds"] = max(map(len, layer.seeds))
        row.update({name: layer.score_text(k) for k, name in enumerate(claims.objectives)})
        for ref in claims.references:  # a seed on the front is one of the references: "itself" there
            row[f"vs {ref.name}"] = verdicts(claim.versus[ref.name]) if ref.name in claim.versus else "itself"
        row["formula"] = layer.formula
        rows.append(row)
    return rows


def noise_line(claims: Claims) -> str:
    """Each objective's noise in a few words, for the summary and the progress log."""
    parts = []
    for name, estimate in claims.noise.items():
        shown = (
            "not estimated yet" if estimate.sd is None else f"sd {estimate.sd:.3f} ({estimate.layers} layers)"
        )
        parts.append(f"{name} {shown}")
    return "noise over training seeds: " + ", ".join(parts)


def layer_rows(
    layers: Sequence[LayerResult], objectives: list[str], numbers: bool = False
) -> list[dict[str, Any]]:
    """A table of layers: the rung each reached, its mean ± sd over training seeds per objective, as
    text; with ``numbers`` (for JSON), the means under the objectives' names and the sds under ``sd``."""
    rows = []
    for layer in layers:
        row: dict[str, Any] = {"id": layer.id, "rung": layer.rung, "seeds": max(map(len, layer.seeds))}
        for k, name in enumerate(objectives):
            row[name] = layer.means[k] if numbers else layer.score_text(k)
        if numbers:
            row["sd"] = dict(zip(objectives, layer.sds, strict=True))
        rows.append({**row, "formula": layer.formula})
    return rows


def markdown_table(rows: Sequence[dict[str, Any]]) -> list[str]:
    """Rows as the lines of a Markdown table, a rank first; formulas as code."""
    if not rows:
        return []
    columns = list(rows[0])
    lines = ["| rank | " + " | ".join(columns) + " |", "|" + "---|" * (len(columns) + 1)]
    for rank, row in enumerate(rows):
        cells = [f"`{v}`" if k == "formula" else str(v) for k, v in row.items()]
        lines.append(f"| {rank} | " + " | ".join(cells) + " |")
    return lines


def best_index(claims: Claims, title: str = "Best layers, confirmed") -> str:
    """``best/README.md``: the claims table in Markdown, the test and the noise said."""
    rows = claim_rows(claims)
    lines = [
        f"# {title}",
        "",
        f"The layers of the funnel's top rung (rung {claims.rung}), with the mean ± sd of their accuracy "
        "over training seeds; those of its Pareto front (`*`: no layer there has a higher mean on every "
        "objective) have a graph file and a module here. Labels, one per objective, against each seed "
        f"layer of the run: {claims.test}. {noise_line(claims)}.",
        "",
    ]
    if not rows:
        return "\n".join([*lines, "No layer has reached the top rung yet."]) + "\n"
    return "\n".join(lines + markdown_table(rows)) + "\n"


def write_results(run_dir: RunDirectory, claims: Claims) -> None:
    """``best/`` (the top rung's front: modules, graph files; a table of every layer there) and
    ``noise.json``."""
    front = [(c.layer.id, c.layer.graph) for c in claims.claims if c.on_front]
    run_dir.write_best(front, best_index(claims))
    noise = {name: {**estimate.to_json(), "rung": claims.rung} for name, estimate in claims.noise.items()}
    run_dir.write_noise({"test": claims.test, "objectives": noise})
