"""A run's directory and records: ``runs/<name>/``.

- ``config.yaml``: the resolved configuration.
- ``events.jsonl``: append-only, one :class:`CandidateRecord` per finished candidate; a record counts
  only once written, flushed and fsynced. A line torn by a crash is dropped when the run is reopened.
- ``checkpoint.json``: the search state (population, pending proposals, RNG, counters), replaced
  atomically after every proposal and every record.
- ``best/``: the Pareto front of all trained candidates: graph files, exported modules, an index.
- ``report.html``, ``plots/``: written by ``evosearch report`` (:mod:`evosearch.cli.report_html`).
- ``rerank/<task>.json``: written by ``evosearch rerank`` (:mod:`evosearch.runner.rerank`).
"""

from __future__ import annotations

import enum
import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import moocore
import numpy as np
import yaml

from evosearch.config import from_dict, to_dict
from evosearch.errors import EvosearchError
from evosearch.files import atomic_write_text
from evosearch.layers.codegen import export_layer
from evosearch.layers.graph_io import graph_from_dict, save_graph
from evosearch.runner.run_config import RunConfig, load_tasks

CONFIG_FILE = "config.yaml"
EVENTS_FILE = "events.jsonl"
CHECKPOINT_FILE = "checkpoint.json"
BEST_DIR = "best"


class Status(str, enum.Enum):
    TRAINED = "trained"  # every proxy task ran to the end
    HURDLE = "hurdle"  # stopped by the quality hurdle on some task: scores worst there
    FAILED = "failed"  # an evaluation crashed, timed out, or diverged
    REJECTED = "rejected"  # the at-initialization probes said no; never trained
    DUPLICATE = "duplicate"  # same structure as an earlier candidate: its result reused
    EQUIVALENT = "equivalent"  # same function (fingerprint) as an earlier candidate: its result reused


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

    # ---- config ---------------------------------------------------------------------------------

    def write_config(self, config: Any) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        text = yaml.safe_dump(to_dict(config), sort_keys=False, default_flow_style=False)
        atomic_write_text(self.config_path, text)

    def read_config_data(self) -> dict[str, Any]:
        if not self.config_path.is_file():
            raise EvosearchError(f"{self.path} is not a run directory (no {CONFIG_FILE})")
        try:
            data = yaml.safe_load(self.config_path.read_text())
        except yaml.YAMLError as e:
            raise EvosearchError(f"{self.config_path}: malformed YAML: {' '.join(str(e).split())}") from None
        if not isinstance(data, dict):
            raise EvosearchError(f"{self.config_path}: not a run configuration")
        return data

    def read_config(self) -> RunConfig:
        return from_dict(RunConfig, self.read_config_data(), str(self.config_path))

    def objectives(self) -> list[str]:
        """The objective names, one per proxy task, in the order of every record's scores."""
        return load_tasks(self.read_config())[1]

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
        atomic_write_text(self.checkpoint_path, json.dumps(state, allow_nan=True))

    def load_checkpoint(self) -> dict[str, Any] | None:
        if not self.checkpoint_path.is_file():
            return None
        try:
            return json.loads(self.checkpoint_path.read_text())
        except ValueError as e:
            raise EvosearchError(
                f"{self.checkpoint_path} is unreadable ({e}); the run cannot resume"
            ) from None

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
    return [r for r in records if r.status in (Status.TRAINED, Status.HURDLE) and r.scores]


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
