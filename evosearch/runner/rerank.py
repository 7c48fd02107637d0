"""``evosearch rerank RUN``: EvoNorm's last step — train the best layers of a search again, longer or
on a held-out task, with several seeds each, next to the hand-designed seeds as a reference. A run
config's ``transfer`` section runs it when the search ends (:func:`transfer`).

A proxy score is one short run with one seed; the ranking it gives is noisy. Reranking trains each of
the top K layers (and each reference seed) once per (task, seed) on the same Ray workers the search
uses, and records the mean and standard deviation of the final top-1 accuracy. By default the tasks
are the run's own, as it trained on them (``RUN/tasks.yaml``), whatever became of the task files.
Every task's results go to ``RUN/rerank/<task>.json``, replaced atomically; the task's name is made a
plain file name there (:func:`safe_filename`), so that no name leads out of the run.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import ray

from evosearch.config import ConfigError, to_dict, with_overrides
from evosearch.errors import EvosearchError, brief
from evosearch.files import atomic_write_text, child_path, safe_filename
from evosearch.layers.graph_io import graph_to_dict
from evosearch.layers.seeds import seed_graph
from evosearch.outcomes import TRAINED_EXITS, ExitReason
from evosearch.runner.claims import format_score, ranked_layers, verdicts
from evosearch.runner.lock import RERANK, RunLock
from evosearch.runner.ray_cluster import start_ray
from evosearch.runner.run_config import RunConfig, TaskSpec, load_tasks, load_transfer_tasks
from evosearch.runner.run_directory import RERANK_DIR, RunDirectory
from evosearch.runner.workers import load_packed_datasets, put_datasets, submit_training, training_result
from evosearch.search.significance import compare
from evosearch.tasks.train import TaskConfig

REFERENCE_SEEDS = ("bn_relu", "gn_relu", "evonorm_b0", "evonorm_s0")


@dataclass
class Layer:
    """A layer to train: one of the run's top candidates, or a reference seed."""

    label: str
    kind: str  # "candidate" or "reference"
    id: int | None
    formula: str
    graph: dict[str, Any]


@dataclass
class TaskScores:
    """One layer on one task: the top-1 accuracy of every seed whose training ran (completed or hit
    the time limit), how each run ended, and their mean and sample standard deviation (None for
    fewer than two)."""

    top1: list[float]
    exits: list[str]
    mean: float | None
    std: float | None

    @property
    def n(self) -> int:
        return len(self.top1)


@dataclass
class RerankRow:
    label: str
    kind: str
    id: int | None
    formula: str
    tasks: dict[str, TaskScores] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        for name, scores in self.tasks.items():
            data["tasks"][name]["n"] = scores.n
        return data


@dataclass
class RerankResult:
    run_dir: str
    tasks: list[str]
    seeds: int  # per layer and task: train.seed, train.seed + 1, ...
    rows: list[RerankRow]
    files: list[str]

    def to_json(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "rows": [r.to_json() for r in self.rows]}


def select_layers(run: RunDirectory, top: int, references: list[str]) -> list[Layer]:
    """The run's ``top`` best layers that are not seeds, ranked on the evidence behind them (the
    highest rung of the funnel first: :func:`~evosearch.runner.claims.ranked_layers`), then the
    reference seeds."""
    if top < 1:
        raise EvosearchError(f"--top must be at least 1, got {top}")
    ranked = ranked_layers(run.read_events(), run.read_rungs(), run.objectives())
    if not ranked:
        raise EvosearchError(f"{run.path}: no trained candidate yet")
    candidates = [layer for layer in ranked if not layer.is_reference][:top]  # none: the seeds alone
    layers = [Layer(r.name, "candidate", r.id, r.formula, r.graph) for r in candidates]
    for name in references:
        graph = seed_graph(name)
        layers.append(Layer(name, "reference", None, graph.formula(), graph_to_dict(graph)))
    return layers


def resolve_tasks(
    run: RunDirectory, tasks: Sequence[str | TaskSpec], overrides: Sequence[str]
) -> tuple[list[TaskConfig], list[str]]:
    """The given tasks (names or files of tasks, or task specs as a run config's ``tasks`` holds),
    or by default the run's own tasks as it trained them; ``overrides`` (``key=value``) apply to each
    on top."""
    if tasks:
        specs = [t if isinstance(t, TaskSpec) else TaskSpec(task=t) for t in tasks]
        return load_tasks(RunConfig(tasks=specs), overrides)
    own, names = run.read_tasks()
    resolved = []
    for name, task in zip(names, own, strict=True):
        try:
            resolved.append(with_overrides(task, overrides))
        except ConfigError as e:
            raise ConfigError(f"{name}: {e}") from None
    return resolved, names


def rerank(
    run_dir: str | Path,
    *,
    top: int = 5,
    seeds: int = 3,
    tasks: Sequence[str | TaskSpec] = (),
    overrides: Sequence[str] = (),
    references: Sequence[str] = REFERENCE_SEEDS,
    address: str | None = None,
    log: Callable[[str], None] | None = None,
) -> RerankResult:
    """Train the top layers and the references ``seeds`` times on each task; write and return the
    table. Training seeds are the task's ``train.seed`` plus 0, 1, ... ``log`` hears one line once
    everything is checked, before the training starts."""
    if seeds < 1:
        raise EvosearchError(f"--seeds must be at least 1, got {seeds}")
    run = RunDirectory(run_dir)
    config = run.read_config()
    if address:
        config = dataclasses.replace(config, resources=dataclasses.replace(config.resources, address=address))
    layers = select_layers(run, top, list(references))
    task_configs, names = resolve_tasks(run, list(tasks), list(overrides))
    paths = task_files(run, names)  # as the data: a name that cannot be written fails before training
    packed = load_packed_datasets(task_configs)  # missing data fails here, before Ray starts
    if log is not None:
        log(
            f"training {len(layers)} layers x {len(names)} tasks x {seeds} seeds "
            f"= {len(layers) * len(names) * seeds} runs"
        )
    # One rerank at a time writes RUN/rerank/; a search running beside it writes other files.
    with RunLock(run.path, RERANK, stale_after_s=config.resources.lock_timeout_s):
        owns_ray = start_ray(config)
        try:
            results = _train_all(config, layers, task_configs, packed, seeds)
        finally:
            if owns_ray:
                ray.shutdown()
        rows = [RerankRow(layer.label, layer.kind, layer.id, layer.formula) for layer in layers]
        for (i, k), runs in results.items():
            rows[i].tasks[names[k]] = _scores(runs)
        files = [
            _write_task(path, name, task, seeds, rows)
            for path, name, task in zip(paths, names, task_configs, strict=True)
        ]
    return RerankResult(str(run.path), names, seeds, rows, files)


def task_files(run: RunDirectory, names: list[str]) -> list[Path]:
    """Where each task's table goes: ``RUN/rerank/<name>.json``, the name made a plain file name. Two
    names that make one file name (``a/b``, ``a_b``) are refused rather than one table lost."""
    folder = child_path(run.path, RERANK_DIR)
    paths = [child_path(folder, f"{safe_filename(name)}.json") for name in names]
    first: dict[Path, str] = {}
    for name, path in zip(names, paths, strict=True):
        if path in first:
            raise EvosearchError(
                f"tasks {brief(first[path])} and {brief(name)} would both write {RERANK_DIR}/{path.name}; "
                "rename one of them"
            )
        first[path] = name
    return paths


def _train_all(
    config: RunConfig, layers: list[Layer], tasks: list[TaskConfig], packed: list[dict[str, Any]], seeds: int
) -> dict[tuple[int, int], list[dict[str, Any]]]:
    """Every (layer, task, seed) training on the workers; results by (layer index, task index)."""
    resources = config.resources
    data_refs = put_datasets(packed)
    refs: dict[tuple[int, int], list[ray.ObjectRef]] = {}
    for i, layer in enumerate(layers):
        for k, (task, data_ref) in enumerate(zip(tasks, data_refs, strict=True)):
            refs[i, k] = [
                submit_training(layer.graph, _with_seed(task, task.train.seed + s), data_ref, resources)
                for s in range(seeds)
            ]
    return {key: [training_result(ref) for ref in task_refs] for key, task_refs in refs.items()}


def _with_seed(task: TaskConfig, seed: int) -> TaskConfig:
    return dataclasses.replace(task, train=dataclasses.replace(task.train, seed=seed))


def _scores(runs: list[dict[str, Any]]) -> TaskScores:
    exits = [str(r.get("exit_reason", ExitReason.ERROR)) for r in runs]
    top1 = [
        float(r["top1"])
        for r, e in zip(runs, exits, strict=True)
        if e in TRAINED_EXITS and r.get("top1") is not None
    ]
    mean = float(np.mean(top1)) if top1 else None
    std = float(np.std(top1, ddof=1)) if len(top1) >= 2 else None
    return TaskScores(top1, exits, mean, std)


def _write_task(path: Path, name: str, task: TaskConfig, seeds: int, rows: list[RerankRow]) -> str:
    layers = []
    for row in rows:
        data = row.to_json()
        layers.append({**{k: v for k, v in data.items() if k != "tasks"}, **data["tasks"][name]})
    data = {
        "task": name,
        "config": to_dict(task),
        "seeds": [task.train.seed + s for s in range(seeds)],
        "layers": layers,
    }
    return str(atomic_write_text(path, json.dumps(data, indent=2, allow_nan=True) + "\n"))


def rerank_rows(result: RerankResult) -> list[dict[str, Any]]:
    """The table of a rerank: each layer's mean ± sd over seeds on each task and, for a candidate, its
    labels (one per task) against each reference layer, by the test the search's claims use."""
    references = [row for row in result.rows if row.kind == "reference"]
    rows = []
    for row in result.rows:
        shown: dict[str, Any] = {"layer": row.label, "kind": row.kind}
        shown.update({name: _summary(row.tasks[name]) for name in result.tasks})
        for ref in references:
            if row.kind == "candidate":
                comparisons = [
                    compare(row.tasks[n].top1 or [0.0], ref.tasks[n].top1 or [0.0]) for n in result.tasks
                ]
                shown[f"vs {ref.label}"] = verdicts(comparisons)
            else:
                shown[f"vs {ref.label}"] = "itself" if ref is row else ""
        rows.append(shown)
    return rows


def _summary(scores: TaskScores) -> str:
    if scores.mean is None:
        return f"failed ({', '.join(sorted(set(scores.exits)))})"
    return f"{format_score(scores.mean, scores.std)} (n={scores.n})"


def transfer(run_dir: str | Path, log: Callable[[str], None] | None = None) -> RerankResult | None:
    """The run config's ``transfer`` step, run when the search ends: the top layers and the run's seed
    layers trained again on the held-out tasks; None where the config has no transfer tasks. A run
    whose transfer tables are all written already (a finished run resumed) is not trained again."""
    run = RunDirectory(run_dir)
    settings = run.read_config().transfer
    if not settings.tasks:
        return None
    names = load_transfer_tasks(run.read_config())[1]
    if all(path.is_file() for path in task_files(run, names)):
        if log is not None:
            log(f"transfer: done already ({RERANK_DIR}/); `evosearch rerank` trains it again")
        return None
    return rerank(
        run.path,
        top=settings.top,
        seeds=settings.seeds,
        tasks=settings.tasks,
        references=run.read_config().search.seed_names(),
        log=log,
    )
