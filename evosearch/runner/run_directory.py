"""A run's directory and records: ``runs/<name>/``.

- ``config.yaml``: the resolved configuration.
- ``tasks.yaml``: the proxy tasks as resolved when the run started (every key of each task) and their
  objective names, in the order of every record's scores. ``report``, ``export``, ``rerank`` and
  ``--resume`` read the tasks from here, so editing or renaming a task file never changes a run made
  before (only a forced resume whose config changed ``tasks`` resolves them again). A run written
  before this file existed resolves its tasks from ``config.yaml`` instead.
- ``events.jsonl``: append-only, one :class:`CandidateRecord` per finished candidate; a record counts
  only once written, flushed and fsynced. A line torn by a crash is dropped when the run is reopened.
- ``checkpoint.json``: the search state (population, pending proposals, RNG, counters) with the
  format's ``version``, replaced atomically after every proposal and every record.
- ``best/``: the Pareto front of all trained candidates: graph files, exported modules, an index.
- ``report.html``, ``plots/``: written by ``evosearch report`` (:mod:`evosearch.cli.report_html`).
- ``rerank/<task>.json``: written by ``evosearch rerank`` (:mod:`evosearch.runner.rerank`).
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import moocore
import numpy as np
import yaml

from evosearch.config import ConfigError, from_dict, to_dict
from evosearch.errors import EvosearchError, one_line
from evosearch.files import atomic_write_text
from evosearch.layers.codegen import export_layer
from evosearch.layers.graph_io import graph_from_dict, save_graph
from evosearch.outcomes import SCORED, Status
from evosearch.runner.run_config import RunConfig, load_tasks
from evosearch.tasks.train import TaskConfig

CONFIG_FILE = "config.yaml"
TASKS_FILE = "tasks.yaml"
EVENTS_FILE = "events.jsonl"
CHECKPOINT_FILE = "checkpoint.json"
BEST_DIR = "best"
# Raise it when a change of layout would be misread by a reader of the last one; keep reading the old.
CHECKPOINT_VERSION = 2  # the searcher's state under "searcher", its name under "algorithm"
READABLE_CHECKPOINT_VERSIONS = (1, CHECKPOINT_VERSION)  # 1: regularized evolution's state under "evolution"
TASKS_HEADER = (
    "# The proxy tasks of this run as resolved when it started, one per objective, in the order of every\n"
    "# record's scores. The run reads them from here: the task files are not read again.\n"
)


@dataclass
class CandidateRecord:
    """Everything known about one candidate, as plain JSON data."""

    id: int
    status: Status
    origin: str
    formula: str
    structural_hash: str
    graph: dict[str, Any]
    parent: int | None = None
    mutation: dict[str, Any] | None = None
    fingerprint: str | None = None
    reasons: list[str] = field(default_factory=list)
    probe: dict[str, Any] | None = None
    tasks: list[dict[str, Any]] = field(default_factory=list)  # one train record per task
    scores: list[float] | None = None  # one per task, higher is better; None: never trained
    same_as: int | None = None  # duplicate / equivalent: the candidate whose result was reused
    seconds: dict[str, float] = field(default_factory=dict)  # probe, train, total
    finished_at: float = 0.0

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["status"] = self.status.value
        return data

    @staticmethod
    def from_json(data: dict[str, Any]) -> CandidateRecord:
        return CandidateRecord(**{**data, "status": Status(data["status"])})


class RunDirectory:
    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)

    @property
    def config_path(self) -> Path:
        return self.path / CONFIG_FILE

    @property
    def tasks_path(self) -> Path:
        return self.path / TASKS_FILE

    @property
    def events_path(self) -> Path:
        return self.path / EVENTS_FILE

    @property
    def checkpoint_path(self) -> Path:
        return self.path / CHECKPOINT_FILE

    @property
    def best_path(self) -> Path:
        return self.path / BEST_DIR

    def exists(self) -> bool:
        return self.config_path.is_file()

    def _check_is_run(self) -> None:
        if not self.exists():
            raise EvosearchError(f"{self.path} is not a run directory (no {CONFIG_FILE})")

    # ---- config ---------------------------------------------------------------------------------

    def write_config(self, config: Any) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        text = yaml.safe_dump(to_dict(config), sort_keys=False, default_flow_style=False)
        atomic_write_text(self.config_path, text)

    def read_config_data(self) -> dict[str, Any]:
        self._check_is_run()
        try:
            data = yaml.safe_load(self.config_path.read_text())
        except yaml.YAMLError as e:
            raise EvosearchError(f"{self.config_path}: malformed YAML: {one_line(e)}") from None
        if not isinstance(data, dict):
            raise EvosearchError(f"{self.config_path}: not a run configuration")
        return data

    def read_config(self) -> RunConfig:
        return from_dict(RunConfig, self.read_config_data(), str(self.config_path))

    # ---- tasks ----------------------------------------------------------------------------------

    def write_tasks(self, tasks: list[TaskConfig], objectives: list[str]) -> None:
        """The resolved tasks and their objective names, written once at the start: what the run
        trains on, and what reading it later needs, whatever becomes of the task files."""
        entries = [{"name": n, "task": to_dict(task)} for n, task in zip(objectives, tasks, strict=True)]
        text = yaml.safe_dump({"objectives": entries}, sort_keys=False, default_flow_style=False)
        atomic_write_text(self.tasks_path, TASKS_HEADER + text)

    def read_tasks(self) -> tuple[list[TaskConfig], list[str]]:
        """The run's proxy tasks and objective names, as :func:`load_tasks` gives them: from
        ``tasks.yaml``; for a run written before that file existed, resolved from ``config.yaml``."""
        entries = self._task_entries()
        if entries is None:
            return load_tasks(self.read_config())
        try:
            tasks = [from_dict(TaskConfig, e["task"], e["name"]) for e in entries]
        except ConfigError as e:
            raise ConfigError(f"{self.tasks_path}: {e}") from None
        return tasks, [e["name"] for e in entries]

    def objectives(self) -> list[str]:
        """The objective names, one per proxy task, in the order of every record's scores. Only the
        names are read: a run stays readable where a later evosearch changed the task keys."""
        entries = self._task_entries()
        if entries is None:
            return load_tasks(self.read_config())[1]
        return [e["name"] for e in entries]

    def _task_entries(self) -> list[dict[str, Any]] | None:
        """The entries of ``tasks.yaml``, checked for shape; None where the run has no such file."""
        self._check_is_run()
        if not self.tasks_path.is_file():
            return None
        try:
            data = yaml.safe_load(self.tasks_path.read_text())
        except yaml.YAMLError as e:
            raise ConfigError(f"{self.tasks_path}: malformed YAML: {one_line(e)}") from None
        entries = data.get("objectives") if isinstance(data, dict) else None
        if not entries or not all(_is_task_entry(e) for e in entries):
            raise ConfigError(f"{self.tasks_path}: expected 'objectives:', a list of {{name, task}} entries")
        return entries

    # ---- events ---------------------------------------------------------------------------------

    def append_event(self, record: CandidateRecord) -> None:
        """Durable before it counts: written, flushed and fsynced."""
        line = json.dumps(record.to_json(), allow_nan=True) + "\n"
        with open(self.events_path, "a", encoding="utf-8") as f:
            f.write(line)
            f.flush()
            os.fsync(f.fileno())

    def read_events(self, repair: bool = False) -> list[CandidateRecord]:
        """All complete records. A torn last line (a crash mid-write) is ignored, and with ``repair``
        cut from the file so that appending continues cleanly."""
        if not self.events_path.is_file():
            return []
        raw = self.events_path.read_bytes()
        records, good_end = [], 0
        for line in raw.splitlines(keepends=True):
            if not line.endswith(b"\n"):
                break
            try:
                records.append(CandidateRecord.from_json(json.loads(line)))
            except (ValueError, TypeError, KeyError):
                break
            good_end += len(line)
        if repair and good_end < len(raw):
            with open(self.events_path, "r+b") as f:
                f.truncate(good_end)
        return records

    # ---- checkpoint -----------------------------------------------------------------------------

    def save_checkpoint(self, state: dict[str, Any]) -> None:
        """``state`` stamped with :data:`CHECKPOINT_VERSION`, replacing the last checkpoint at once."""
        data = {"version": CHECKPOINT_VERSION, **state}
        atomic_write_text(self.checkpoint_path, json.dumps(data, allow_nan=True))

    def load_checkpoint(self) -> dict[str, Any] | None:
        """The last checkpoint; None where there is none. One of another format version is refused
        rather than misread."""
        if not self.checkpoint_path.is_file():
            return None
        try:
            state = json.loads(self.checkpoint_path.read_text())
        except ValueError as e:
            raise EvosearchError(
                f"{self.checkpoint_path} is unreadable ({e}); the run cannot resume"
            ) from None
        version = state.get("version") if isinstance(state, dict) else None
        if version not in READABLE_CHECKPOINT_VERSIONS or isinstance(version, bool):
            readable = ", ".join(map(str, READABLE_CHECKPOINT_VERSIONS))
            raise EvosearchError(
                f"{self.checkpoint_path}: checkpoint version {version!r} is not one this evosearch "
                f"reads ({readable}); use the evosearch version that wrote the run"
            )
        return state

    # ---- best -----------------------------------------------------------------------------------

    def write_best(self, records: list[CandidateRecord], objectives: list[str]) -> list[CandidateRecord]:
        """The Pareto front of the trained records as graph files, modules and an index."""
        front = pareto_front(records)
        stems = export_records(front, self.best_path, objectives, title="Pareto front")
        keep = {f"{stem}{suffix}" for stem in stems for suffix in (".yaml", ".py")} | {"README.md"}
        for stale in self.best_path.iterdir():
            if stale.name not in keep:
                stale.unlink()
        return front


def searcher_state(checkpoint: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """The search algorithm's name (``search.algorithm``) and state in a checkpoint. Version 1, from
    before the algorithm was a choice, holds the evolution's state alone, under ``"evolution"``."""
    if checkpoint["version"] == 1:
        return "evolution", checkpoint["evolution"]
    return checkpoint["algorithm"], checkpoint["searcher"]


def pareto_front(records: list[CandidateRecord]) -> list[CandidateRecord]:
    """Trained records not dominated on their scores, best mean score first."""
    trained = _trained(records)
    if not trained:
        return []
    scores = np.array([r.scores for r in trained], dtype=float)
    mask = moocore.is_nondominated(scores, maximise=True, keep_weakly=True)
    front = [r for r, keep in zip(trained, mask, strict=True) if keep]
    return sorted(front, key=_best_mean_first)


def rank_records(records: list[CandidateRecord]) -> list[CandidateRecord]:
    """Trained records best first: the Pareto front by mean score, then the others by mean score.
    The front leads because no later layer beats a front layer on every task."""
    front = pareto_front(records)
    on_front = {r.id for r in front}
    rest = [r for r in _trained(records) if r.id not in on_front]
    return front + sorted(rest, key=_best_mean_first)


def _trained(records: list[CandidateRecord]) -> list[CandidateRecord]:
    return [r for r in records if r.status in SCORED and r.scores]


def _is_task_entry(entry: Any) -> bool:
    return (
        isinstance(entry, dict) and isinstance(entry.get("name"), str) and isinstance(entry.get("task"), dict)
    )


def _best_mean_first(record: CandidateRecord) -> tuple[float, int]:
    return -float(np.mean(record.scores)), record.id


def export_records(
    records: list[CandidateRecord], directory: Path, objectives: list[str], title: str
) -> list[str]:
    """Each record's graph file and standalone module as ``<rank>_candidate_<id>.yaml`` / ``.py``
    (class ``Candidate<id>``), and ``README.md`` indexing them; the file stems, in rank order."""
    directory.mkdir(parents=True, exist_ok=True)
    stems = []
    for rank, record in enumerate(records):
        stem = f"{rank:02d}_candidate_{record.id}"
        graph = graph_from_dict(record.graph)
        save_graph(graph, directory / f"{stem}.yaml")
        export_layer(graph, directory / f"{stem}.py", class_name=f"Candidate{record.id}")
        stems.append(stem)
    atomic_write_text(directory / "README.md", best_index(records, objectives, title))
    return stems


def best_index(records: list[CandidateRecord], objectives: list[str], title: str = "Pareto front") -> str:
    header = "| rank | candidate | " + " | ".join(objectives) + " | formula |"
    lines = [
        f"# {title}",
        "",
        f"Written {time.strftime('%Y-%m-%d %H:%M:%S')}. Each layer has a graph file (`.yaml`) and a "
        "standalone PyTorch module (`.py`).",
        "",
        header,
        "|" + "---|" * (len(objectives) + 3),
    ]
    for rank, r in enumerate(records):
        scores = " | ".join(f"{s:.4f}" for s in r.scores)
        lines.append(f"| {rank} | {r.id} | {scores} | `{r.formula}` |")
    return "\n".join(lines) + "\n"
