"""The configuration of ``evosearch run``: search, probes, tasks and resources, one YAML file.

Every key has a default; a file sets what it changes and ``--set key=value`` overrides any key. The
resolved configuration is saved as ``runs/<name>/config.yaml``; resuming compares against it.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from evosearch.config import ConfigError, config_names, config_path, load_config, shipped_configs, to_dict
from evosearch.errors import EvosearchError, brief, listing, shorten
from evosearch.layers.formula import FORMULA_SCALARS
from evosearch.layers.seeds import SEEDS, seed_graph, seed_names
from evosearch.probes.screen import ProbeConfig
from evosearch.runner.lock import MIN_LOCK_TIMEOUT_S, STALE_AFTER_S
from evosearch.search import Searcher, create_searcher, searcher_class
from evosearch.search.evolution import EvolutionSettings
from evosearch.search.funnel import FidelitySettings
from evosearch.search.mutation import SearchSpace
from evosearch.tasks.specs import load_task
from evosearch.tasks.train import TaskConfig
from primitives import (
    BATCH_DEPENDENT_OPS,
    BATCH_INDEPENDENT_SEARCH_OPS,
    PRIMITIVES,
    TOKEN_MIXING_OPS,
    Layout,
    search_ops,
)

# The named op sets, per layout. "search" is the layout's whole vocabulary; "batch_independent" (the
# S family) leaves out batch statistics; "per_token" leaves out every statistic over other tokens,
# which a causal model's layer must not read (it would see the future).
OP_SETS = {
    Layout.IMAGE: {"search": search_ops(Layout.IMAGE), "batch_independent": BATCH_INDEPENDENT_SEARCH_OPS},
    Layout.TOKENS: {
        "search": search_ops(Layout.TOKENS),
        "batch_independent": search_ops(Layout.TOKENS) - BATCH_DEPENDENT_OPS,
        "per_token": search_ops(Layout.TOKENS) - TOKEN_MIXING_OPS,
    },
}

# Keys a resumed run may change without --force: they do not change what the search computes.
# Nor does where the run directory is: a moved run resumes where it now is.
RESUMABLE_CHANGES = (
    "resources.",
    "search.max_evaluations",
    "search.max_minutes",
    "search.max_candidates",
    "search.max_train_steps",
    "output_dir",
    "name",
)


_EVOLUTION = EvolutionSettings()  # the one place the evolution settings' defaults are written


@dataclass
class SearchConfig:
    algorithm: str = "evolution"  # a name in evosearch.search.SEARCHERS: "evolution" or "random"
    population_size: int = _EVOLUTION.population_size  # evolution: members kept
    tournament_size: int = _EVOLUTION.tournament_size  # evolution: members sampled per tournament
    max_evaluations: int | None = 100  # candidates trained on the proxy tasks (the budget)
    max_minutes: float | None = None  # wall-clock budget, summed over resumed sessions
    max_candidates: int | None = None  # proposals of any fate; default 20 x max_evaluations
    # Training steps summed over every run (each rung, task and training seed): once spent, nothing
    # new starts, promotions included. The budget to compare searches at equal compute.
    max_train_steps: int | None = None
    fidelity: FidelitySettings = field(default_factory=FidelitySettings)  # the funnel's rungs and eta
    # The layout of the searched layers: "image" (N, C, H, W) for CNN tasks, "tokens" (N, L, C) for
    # transformer tasks. Seeds, ops and every task must be of it.
    layout: str = "image"
    # "search", "batch_independent" (S family), "per_token" (tokens: none over other tokens), or a list
    ops: str | list[str] = "search"
    max_nodes: int = 14
    scalars: dict[str, float] | None = None  # per-layer scalars new nodes may read; default per layout
    seeds: str | list[str] = "all"  # seed layers in the initial population: "all" (the layout's), or names
    seed_mutations: int = _EVOLUTION.seed_mutations  # evolution: initial mutations of seeds
    random_graphs: int = _EVOLUTION.random_graphs  # evolution: initial random graphs
    mutation_weights: dict[str, float] = field(default_factory=lambda: dict(_EVOLUTION.mutation_weights))

    def __post_init__(self) -> None:
        for key in ("max_evaluations", "max_candidates", "max_train_steps"):
            value = getattr(self, key)
            if value is not None and value < 1:
                raise ConfigError(f"search.{key} must be at least 1, got {value}")
        if self.max_minutes is not None and not 0 < self.max_minutes < math.inf:
            raise ConfigError(f"search.max_minutes must be positive and finite, got {self.max_minutes}")
        try:
            searcher_class(self.algorithm)
        except EvosearchError as e:
            raise ConfigError(f"search.algorithm: {e}") from None
        try:
            self.layout = Layout.parse(self.layout).value
        except ValueError as e:
            raise ConfigError(f"search.{e}") from None
        self.op_set()
        self.seed_names()
        self.space()
        self.evolution_settings()

    def evolution_settings(self) -> EvolutionSettings:
        """The evolution's settings from this section: built (so checked) as the config loads, so that
        ``evosearch config`` refuses what ``evosearch run`` would."""
        try:
            return EvolutionSettings(**{f.name: getattr(self, f.name) for f in fields(EvolutionSettings)})
        except EvosearchError as e:
            raise ConfigError(f"search: {e}") from None

    @property
    def space_layout(self) -> Layout:
        return Layout(self.layout)

    def op_set(self) -> frozenset[str]:
        if isinstance(self.ops, str):
            sets = OP_SETS[self.space_layout]
            if self.ops not in sets:
                known = ", ".join(sets)
                where = f"for the {self.layout} layout"
                raise ConfigError(f"search.ops: unknown op set {brief(self.ops)} {where}; sets: {known}")
            return sets[self.ops]
        unknown = sorted(set(self.ops) - set(PRIMITIVES))
        if unknown or not self.ops:
            raise ConfigError(
                f"search.ops: unknown ops {listing(unknown) or '(empty)'}; known: {', '.join(PRIMITIVES)}"
            )
        return frozenset(self.ops)

    def seed_names(self) -> list[str]:
        if self.seeds == "all":
            names = seed_names(self.space_layout)
        elif isinstance(self.seeds, str):
            raise ConfigError(f"search.seeds must be 'all' or a list of seed names, got {brief(self.seeds)}")
        else:
            names = list(self.seeds)
        unknown = [n for n in names if n not in SEEDS]
        if unknown:
            raise ConfigError(f"search.seeds: unknown seeds {listing(unknown)}; seeds: {', '.join(SEEDS)}")
        foreign = [n for n in names if SEEDS[n].layout is not self.space_layout]
        if foreign:
            ours = ", ".join(seed_names(self.space_layout))
            raise ConfigError(
                f"search.seeds: {listing(foreign)} are not for the {self.layout} layout (search.layout); "
                f"its seeds: {ours}"
            )
        return names

    def space(self) -> SearchSpace:
        scalars = FORMULA_SCALARS[self.space_layout] if self.scalars is None else self.scalars
        try:
            return SearchSpace(
                ops=self.op_set(), max_nodes=self.max_nodes, layout=self.space_layout, scalars=scalars
            )
        except EvosearchError as e:
            raise ConfigError(f"search: {e}") from None

    def searcher(self, num_objectives: int, seed: int) -> Searcher:
        """The configured algorithm over the configured space, starting from the configured seeds."""
        seeds = [seed_graph(name) for name in self.seed_names()]
        return create_searcher(self.algorithm, self.space(), seeds, num_objectives, seed, to_dict(self))

    def candidate_limit(self) -> int | None:
        if self.max_candidates is not None:
            return self.max_candidates
        return None if self.max_evaluations is None else 20 * self.max_evaluations


@dataclass
class TaskSpec:
    """One proxy task, one objective: a task name (``configs/tasks/<task>.yaml``) or a YAML path,
    with overrides written as in ``--set`` (``{train.steps: 100}``)."""

    task: str = "generated_resnet"
    set: dict[str, Any] = field(default_factory=dict)
    name: str | None = None  # the objective's label; default: the task's name


@dataclass
class TransferConfig:
    """EvoNorm's last step, run when the search ends (``evosearch rerank``): the ``top`` layers (on the
    evidence of the funnel: the highest rung first) and the run's seed layers trained again with
    ``seeds`` training seeds on held-out ``tasks`` (another batch size, depth or dataset), each
    labelled against each seed layer. No tasks: no transfer step."""

    tasks: list[TaskSpec] = field(default_factory=list)
    top: int = 3
    seeds: int = 3

    def __post_init__(self) -> None:
        if self.top < 1 or self.seeds < 1:
            raise ConfigError(
                f"transfer.top and transfer.seeds must be at least 1, got {self.top}, {self.seeds}"
            )


@dataclass
class ResourcesConfig:
    address: str | None = None  # a Ray cluster ("auto", "HOST:6379"); default RAY_ADDRESS, else local
    num_cpus: int | None = None  # CPUs of the local Ray instance (default: all of this machine)
    num_gpus: int | None = None  # GPUs of the local Ray instance (default: those visible)
    concurrency: int = 2  # candidates in flight at once
    cpus_per_evaluation: float = 1.0
    gpus_per_evaluation: float = 0.0  # fractional values pack several evaluations on one GPU
    cpus_per_probe: float = 1.0
    retries: int = 2  # re-runs of a training whose worker died or device faulted, of a probe with no verdict
    evaluation_timeout_s: float = 1800.0  # per training task
    # A driver's lock with no heartbeat for this long is taken over (a driver on this machine whose
    # process is gone: at once). Above the file system's attribute caching: NFS caches up to 60 s.
    lock_timeout_s: float = STALE_AFTER_S

    def __post_init__(self) -> None:
        if self.concurrency < 1:
            raise ConfigError("resources.concurrency must be at least 1")
        if self.retries < 0 or not 0 < self.evaluation_timeout_s < math.inf:
            raise ConfigError("resources.retries must be >= 0 and evaluation_timeout_s positive and finite")
        for key in ("num_cpus", "num_gpus"):
            if getattr(self, key) is not None and getattr(self, key) < 0:
                raise ConfigError(f"resources.{key} must be >= 0, got {getattr(self, key)}")
        if not MIN_LOCK_TIMEOUT_S <= self.lock_timeout_s < math.inf:
            least = f"{MIN_LOCK_TIMEOUT_S:.0f} s"
            raise ConfigError(f"resources.lock_timeout_s must be finite and at least {least}")
        for key in ("cpus_per_evaluation", "gpus_per_evaluation", "cpus_per_probe"):
            if not 0 <= getattr(self, key) < math.inf:
                raise ConfigError(f"resources.{key} must be >= 0 and finite, got {getattr(self, key)}")
        self._check_tasks_fit()

    def _check_tasks_fit(self) -> None:
        """A local instance too small for one evaluation or probe would wait for resources forever."""
        needs = {
            "num_cpus": max(self.cpus_per_evaluation, self.cpus_per_probe),
            "num_gpus": self.gpus_per_evaluation,
        }
        for key, need in needs.items():
            have = getattr(self, key)
            if have is not None and have < need:
                raise ConfigError(f"resources.{key} is {have}: one evaluation or probe needs {need:g}")


@dataclass
class RunConfig:
    name: str = "run"
    output_dir: str = "runs"
    seed: int = 0
    search: SearchConfig = field(default_factory=SearchConfig)
    probes: ProbeConfig = field(default_factory=ProbeConfig)
    tasks: list[TaskSpec] = field(default_factory=lambda: [TaskSpec()])
    transfer: TransferConfig = field(default_factory=TransferConfig)
    resources: ResourcesConfig = field(default_factory=ResourcesConfig)

    def __post_init__(self) -> None:
        if not self.name or "/" in self.name or self.name.startswith(".") or not self.name.isprintable():
            raise ConfigError(f"name {brief(self.name)} must be a plain directory name")
        if not self.output_dir or not self.output_dir.isprintable():
            raise ConfigError(f"output_dir {brief(self.output_dir)} must be a path of printable characters")
        if not self.tasks:
            raise ConfigError("tasks: at least one proxy task is needed")

    @property
    def run_dir(self) -> Path:
        return Path(self.output_dir) / self.name


def load_tasks(config: RunConfig, overrides: Sequence[str] = ()) -> tuple[list[TaskConfig], list[str]]:
    """The proxy tasks (each one objective) and their names, resolved from the task files; ``overrides``
    (``key=value``) apply to every task after its own ``set``. An unknown task or key fails here.
    A run keeps what this gave at its start (:meth:`RunDirectory.read_tasks`)."""
    tasks, names = [], []
    for i, spec in enumerate(config.tasks):
        own = [f"{key}={json.dumps(value)}" for key, value in spec.set.items()]  # JSON is YAML
        try:
            task = load_task(spec.task, [*own, *overrides])
        except ConfigError as e:
            raise ConfigError(f"tasks[{i}] ({shorten(spec.task)}): {e}") from None
        _check_task_fits_search(task, config.search, f"tasks[{i}] ({shorten(spec.task)})")
        tasks.append(task)
        names.append(spec.name or task.name)
    if len(set(names)) != len(names):
        got = listing(names)
        raise ConfigError(f"tasks: objective names must differ, got {got}; set 'name:' on each task")
    return tasks, names


def _check_task_fits_search(task: TaskConfig, search: SearchConfig, label: str) -> None:
    """A task trains layers of one layout, which must be the search's; a causal model's layers must
    not read other tokens (the future), so the op set must not have them (no token seed does, and
    :func:`~evosearch.tasks.models.slot_layer` refuses any layer that does where it is trained)."""
    if task.model.layout is not search.space_layout:
        raise ConfigError(
            f"{label}: its network ({task.model.arch}) takes {task.model.layout} layers "
            f"{task.model.layout.shape}, but search.layout is {search.layout}"
        )
    if not task.model.causal:
        return
    mixing = sorted(search.op_set() & TOKEN_MIXING_OPS)
    if mixing:
        raise ConfigError(
            f"{label} is causal, so its layers must not read other tokens, but search.ops has "
            f"{listing(mixing)}; set search.ops: per_token"
        )


def load_transfer_tasks(config: RunConfig) -> tuple[list[TaskConfig], list[str]]:
    """The transfer step's held-out tasks, resolved as :func:`load_tasks` resolves the search's; none
    where the config has no transfer step. Called at the start, so that a task that cannot load
    fails before the search rather than after it."""
    if not config.transfer.tasks:
        return [], []
    try:
        return load_tasks(RunConfig(tasks=config.transfer.tasks, search=config.search))
    except ConfigError as e:
        raise ConfigError(f"transfer.{e}") from None


def run_config_names() -> list[str]:
    """The run configs shipped with the package (the repository's ``configs/*.yaml``)."""
    return config_names(shipped_configs())


def load_run_config(source: str | Path | None, overrides: Sequence[str] = ()) -> RunConfig:
    """The defaults, then a run config (a shipped name such as ``quickstart``, or a file), then
    the overrides."""
    path = None if source is None else config_path(source, shipped_configs(), "run config")
    return load_config(RunConfig, path, overrides)


def config_changes(saved: dict[str, Any], current: dict[str, Any], prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two resolved configs."""
    keys = sorted(set(saved) | set(current))
    out = []
    for key in keys:
        a, b = saved.get(key), current.get(key)
        dotted = f"{prefix}{key}"
        if isinstance(a, dict) and isinstance(b, dict):
            out.extend(config_changes(a, b, dotted + "."))
        elif a != b:
            out.append(dotted)
    return out


def blocking_changes(saved: RunConfig, current: RunConfig) -> list[str]:
    """Changes that would make a resumed run compute something else."""
    changes = config_changes(to_dict(saved), to_dict(current))
    return [c for c in changes if not c.startswith(RESUMABLE_CHANGES)]
