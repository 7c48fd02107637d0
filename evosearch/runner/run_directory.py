"""A run's directory and records: ``runs/<name>/``.

- ``config.yaml``: the resolved configuration.
- ``tasks.yaml``: the proxy tasks as resolved when the run started (every key of each task) and their
  objective names, in the order of every record's scores. ``report``, ``export``, ``rerank`` and
  ``--resume`` read the tasks from here, so editing or renaming a task file never changes a run made
  before (only a forced resume whose config changed ``tasks`` resolves them again). A run written
  before this file existed resolves its tasks from ``config.yaml`` instead.
- ``events.jsonl``: append-only, one :class:`CandidateRecord` per finished candidate; a record counts
  only once written, flushed and fsynced. A line torn by a crash is dropped when the run is reopened;
  any other damage loses no record (:meth:`RunDirectory.read_log`).
- ``events.jsonl.corrupt``: lines set aside from ``events.jsonl`` on resume, with their line numbers
  and why; evosearch only ever appends to it.
- ``rungs.jsonl``: append-only, one :class:`RungRecord` per result of the funnel above rung 0 (a
  candidate's rung-0 result is its record in ``events.jsonl``), read and repaired alike.
- ``checkpoint.json``: the search state (population, pending proposals, promotions decided, RNG,
  counters) with the format's ``version``, replaced atomically after every proposal and every record.
- ``best/``: the Pareto front of the layers confirmed at the funnel's top rung (mean ± sd over
  training seeds, labelled against each seed layer): graph files, exported modules, an index.
- ``noise.json``: each objective's seed-to-seed noise as estimated so far
  (:mod:`evosearch.runner.claims`).
- ``report.html``, ``plots/``: written by ``evosearch report`` (:mod:`evosearch.cli.report_html`).
- ``rerank/<task>.json``: written by ``evosearch rerank`` (:mod:`evosearch.runner.rerank`).
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import json
import os
import sys
import time
import types
import typing
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import moocore
import numpy as np
import yaml

from evosearch.config import ConfigError, from_dict, load_yaml, to_dict
from evosearch.errors import EvosearchError, brief, shorten
from evosearch.files import atomic_write_bytes, atomic_write_text, child_path, safe_filename
from evosearch.layers.codegen import layer_source
from evosearch.layers.graph_io import graph_from_dict, save_graph
from evosearch.outcomes import SCORED, Status
from evosearch.runner.run_config import RunConfig, load_tasks
from evosearch.tasks.train import TaskConfig

CONFIG_FILE = "config.yaml"
TASKS_FILE = "tasks.yaml"
EVENTS_FILE = "events.jsonl"
SET_ASIDE_FILE = "events.jsonl.corrupt"
RUNGS_FILE = "rungs.jsonl"
NOISE_FILE = "noise.json"
RERANK_DIR = "rerank"  # rerank/<task>.json: the tables of `evosearch rerank` and the transfer step
NOT_JSON = "not a line of JSON"
CHECKPOINT_FILE = "checkpoint.json"
ID_LIMIT = 2**63  # ids are below it: they go into file and class names
BEST_DIR = "best"
# Raise it when a change of layout would be misread by a reader of the last one; keep reading the old.
# 3: the funnel's promotions under "funnel"; 2: the searcher's state under "searcher", its name under
# "algorithm"; 1: regularized evolution's state alone, under "evolution".
CHECKPOINT_VERSION = 3
READABLE_CHECKPOINT_VERSIONS = (1, 2, CHECKPOINT_VERSION)
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
    def from_json(data: Any) -> CandidateRecord:
        """The record ``data`` (a line of ``events.jsonl``, parsed) holds. One rule: a JSON object with
        exactly this class's fields (those with defaults may be left out), each of its declared type;
        ``id``, ``parent`` and ``same_as`` are ints (not bools, floats or strings), a float field also
        takes an int. Anything else raises :class:`RecordError` naming the field: a record once read
        is trusted, its id even goes into file names."""
        _check_record(CandidateRecord, data)
        return CandidateRecord(**{**data, "status": Status(data["status"])})

    @property
    def key(self) -> int:
        """What no two records of the log share."""
        return self.id


@dataclass
class RungRecord:
    """A candidate's result at a rung of the funnel above rung 0 (rung 0's is its
    :class:`CandidateRecord`): one line of ``rungs.jsonl``. ``tasks`` holds one training record per
    task and training seed of the rung, runs of lower rungs it reuses included; ``scores`` one per
    task, the mean over the rung's seeds (a run that did not finish training scores worst)."""

    id: int
    rung: int
    tasks: list[dict[str, Any]]
    scores: list[float]
    seconds: float = 0.0  # from the promotion to the last result
    finished_at: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @staticmethod
    def from_json(data: Any) -> RungRecord:
        """As :meth:`CandidateRecord.from_json`: exactly this class's fields, each of its type."""
        _check_record(RungRecord, data)
        if not 0 < data["rung"] < 1000:
            raise RecordError("rung must be from 1 to 999")
        return RungRecord(**data)

    @property
    def key(self) -> tuple[int, int]:
        return self.id, self.rung


def _check_record(cls: type, data: Any) -> None:
    """Raise :class:`RecordError` unless ``data`` has exactly ``cls``'s fields (those with defaults may
    be left out), each of its declared type, its ids in range."""
    if not isinstance(data, dict):
        raise RecordError(f"not a JSON object but {type(data).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = _record_types(cls)
    unknown = [key for key in data if key not in fields]
    if unknown:
        raise RecordError(f"unknown key {shorten(str(unknown[0]), 40)}")
    missing = [name for name, f in fields.items() if name not in data and _is_required(f)]
    if missing:
        raise RecordError(f"missing key {missing[0]}")
    for name, value in data.items():
        if not _is_of(value, hints[name]):
            raise RecordError(f"{name} must be {_expected(fields[name], hints[name])}")
    for name in ("id", "parent", "same_as"):  # ids become file and class names: keep them short
        if data.get(name) is not None and not 0 <= data[name] < ID_LIMIT:
            raise RecordError(f"{name} must be an id from 0 to 2**63 - 1")


class RecordError(EvosearchError):
    """A line of a log is not a record of its kind: see :meth:`CandidateRecord.from_json`."""


@functools.cache
def _record_types(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _is_required(f: dataclasses.Field) -> bool:
    return f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING


def _is_of(value: Any, hint: Any) -> bool:
    """Whether ``value``, parsed JSON, is of the type ``hint`` (the kinds a record's fields use)."""
    args = typing.get_args(hint)
    if isinstance(hint, types.UnionType):
        return any(_is_of(value, arg) for arg in args)
    if typing.get_origin(hint) is list:
        return isinstance(value, list) and all(_is_of(item, args[0]) for item in value)
    if typing.get_origin(hint) is dict:
        return isinstance(value, dict) and all(_is_of(item, args[1]) for item in value.values())
    if hint is Any:
        return True
    if isinstance(value, bool):  # a bool is an int to Python, never to a record
        return hint is bool
    if hint is float:
        return isinstance(value, (int, float))
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        return isinstance(value, str) and value in {member.value for member in hint}
    return isinstance(value, hint)


def _expected(f: dataclasses.Field, hint: Any) -> str:
    """A field's type as its error message names it: the annotation, an enum's values."""
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        return "one of " + ", ".join(member.value for member in hint)
    return str(f.type)


@dataclass(frozen=True)
class DamagedLine:
    """A complete line of ``events.jsonl`` that is not a record to read, or repeats an id."""

    number: int  # from 1, in the file as read
    reason: str
    text: bytes  # as it was, newline included
    id: int | None = None  # the id it names, where one can be read: never handed out again


@dataclass
class EventLog:
    """What ``events.jsonl`` holds: the records to read, in the order they were written, and the
    lines that are not (see :meth:`RunDirectory.read_log`)."""

    records: list[CandidateRecord]
    damaged: list[DamagedLine]

    def highest_id(self) -> int:
        """The highest id of any record or damaged line; -1 where there is none."""
        ids = [r.id for r in self.records] + [d.id for d in self.damaged if d.id is not None]
        return max(ids, default=-1)

    def summary(self, limit: int = 3) -> str:
        """The damaged lines by number and reason, the first ``limit`` of them."""
        shown = "; ".join(f"line {d.number}: {d.reason}" for d in self.damaged[:limit])
        more = len(self.damaged) - limit
        return shown + (f"; {more} more" if more > 0 else "")


def warn(message: str) -> None:
    """Where a reader's warnings go unless it is given another ``log``: one line on stderr, in the
    form of the CLI's errors, so ``report``, ``export`` and ``rerank`` say what they skipped."""
    print(f"evosearch: warning: {message}", file=sys.stderr, flush=True)


class RunDirectory:
    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)

    # A run directory may come from elsewhere: a file of it that is a link out of it (events.jsonl ->
    # ~/.bashrc) would have evosearch append, truncate or delete there. Its paths refuse to lead out.

    @property
    def config_path(self) -> Path:
        return child_path(self.path, CONFIG_FILE)

    @property
    def tasks_path(self) -> Path:
        return child_path(self.path, TASKS_FILE)

    @property
    def events_path(self) -> Path:
        return child_path(self.path, EVENTS_FILE)

    @property
    def checkpoint_path(self) -> Path:
        return child_path(self.path, CHECKPOINT_FILE)

    @property
    def best_path(self) -> Path:
        return child_path(self.path, BEST_DIR)

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
        data = load_yaml(self.config_path)
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
        data = load_yaml(self.tasks_path)
        entries = data.get("objectives") if isinstance(data, dict) else None
        if not entries or not all(_is_task_entry(e) for e in entries):
            raise ConfigError(f"{self.tasks_path}: expected 'objectives:', a list of {{name, task}} entries")
        return entries

    # ---- events ---------------------------------------------------------------------------------

    def append_event(self, record: CandidateRecord) -> None:
        """Durable before it counts: written, flushed and fsynced."""
        _append_line(self.events_path, record.to_json())

    def append_rung(self, record: RungRecord) -> None:
        """A rung's result, durable before it counts, as :meth:`append_event`."""
        _append_line(self.rungs_path, record.to_json())

    @property
    def set_aside_path(self) -> Path:
        return child_path(self.path, SET_ASIDE_FILE)

    @property
    def rungs_path(self) -> Path:
        return child_path(self.path, RUNGS_FILE)

    def read_events(
        self, repair: bool = False, log: Callable[[str], None] | None = warn
    ) -> list[CandidateRecord]:
        """The records of :meth:`read_log`."""
        return self.read_log(repair, log).records

    def read_log(self, repair: bool = False, log: Callable[[str], None] | None = warn) -> EventLog:
        """Every intact record of ``events.jsonl``, in the order written; damage loses none of them.

        - A torn last line (no newline, not JSON: a crash mid-write) never counted and is left out:
          its candidate is still pending in the checkpoint and runs again. A last line that is whole
          JSON, only its newline missing, is read as any other.
        - Any other line that is not a record (:meth:`CandidateRecord.from_json`), and any record
          whose id an earlier one has (a past double-driver bug), is damaged: the others are read
          and ``log`` says so in one line (``log=None``: nowhere). Of an id, the record written
          first is kept: every reader before the repeat saw that one, and a later record's
          ``same_as`` or ``parent`` was most likely written against it.

        With ``repair`` (a resume, before appending), the damaged lines are first appended to
        ``events.jsonl.corrupt`` with their line numbers, never deleted, then ``events.jsonl`` is
        replaced at once by the records alone, newline-terminated, so it is clean to append to.
        Without it, reading writes nothing: ``report`` may read a run that is still going."""
        return _read_records(CandidateRecord, self.events_path, self.set_aside_path, repair, log)

    def read_rungs(self, repair: bool = False, log: Callable[[str], None] | None = warn) -> list[RungRecord]:
        """Every intact record of ``rungs.jsonl`` (the funnel's results above rung 0), in the order
        written, read and repaired as :meth:`read_log` reads ``events.jsonl``: a torn last line is a
        promotion still in flight, other damage goes to ``rungs.jsonl.corrupt``."""
        aside = child_path(self.path, RUNGS_FILE + ".corrupt")
        return _read_records(RungRecord, self.rungs_path, aside, repair, log).records

    # ---- checkpoint -----------------------------------------------------------------------------

    def save_checkpoint(self, state: dict[str, Any]) -> None:
        """``state`` stamped with :data:`CHECKPOINT_VERSION`, replacing the last checkpoint at once."""
        data = {"version": CHECKPOINT_VERSION, **state}
        atomic_write_text(self.checkpoint_path, json.dumps(data, allow_nan=True))

    def load_checkpoint(self) -> dict[str, Any] | None:
        """The last checkpoint; None where there is none. One of another format version is refused
        rather than misread, and so is one without what every reader takes from it (the algorithm,
        the next id, the pending proposals, the clock); the algorithm's own part is checked by its
        ``load_state_dict``."""
        if not self.checkpoint_path.is_file():
            return None
        try:
            state = json.loads(self.checkpoint_path.read_text())
        except (ValueError, RecursionError) as e:  # RecursionError: nested thousands of levels deep
            raise EvosearchError(
                f"{self.checkpoint_path} is unreadable ({shorten(str(e))}): restore it, or resume with "
                f"--rebuild-checkpoint to rebuild the search state from {EVENTS_FILE}"
            ) from None
        version = state.get("version") if isinstance(state, dict) else None
        if version not in READABLE_CHECKPOINT_VERSIONS or isinstance(version, bool):
            readable = ", ".join(map(str, READABLE_CHECKPOINT_VERSIONS))
            raise EvosearchError(
                f"{self.checkpoint_path}: checkpoint version {brief(version)} is not one this evosearch "
                f"reads ({readable}); use the evosearch version that wrote the run"
            )
        if not _is_search_state(state):
            raise EvosearchError(
                f"{self.checkpoint_path} does not hold a search state this evosearch reads: restore it, "
                f"or resume with --rebuild-checkpoint to rebuild the search state from {EVENTS_FILE}"
            )
        return state

    def set_checkpoint_aside(self) -> Path | None:
        """Move ``checkpoint.json`` out of the way of a rebuilt one, to a name with the time: a
        checkpoint is never deleted. The new path; None where there was no checkpoint."""
        if not self.checkpoint_path.exists():
            return None
        aside = self.checkpoint_path.with_name(f"{CHECKPOINT_FILE}.{time.strftime('%Y%m%d-%H%M%S')}")
        os.replace(self.checkpoint_path, aside)
        return aside

    # ---- best -----------------------------------------------------------------------------------

    def write_best(self, layers: list[tuple[int, dict[str, Any]]], index: str) -> None:
        """The run's best layers (id, graph) as graph files and modules, and ``index`` as the README
        (:func:`export_layers`). The files of ``best/`` are evosearch's: one that is not the best's
        goes (a folder there stays)."""
        best = self.best_path
        stems = export_layers(layers, best, index)
        keep = {f"{stem}{suffix}" for stem in stems for suffix in (".yaml", ".py")} | {"README.md"}
        for stale in best.iterdir():
            if stale.name not in keep and not stale.is_dir():
                stale.unlink()

    def write_noise(self, data: dict[str, Any]) -> None:
        """The run's noise estimates, ``noise.json``, replaced at once."""
        text = json.dumps(data, indent=2, allow_nan=True) + "\n"
        atomic_write_text(child_path(self.path, NOISE_FILE), text)


def _append_line(path: Path, data: dict[str, Any]) -> None:
    """One line of JSON appended to a log: written, flushed and fsynced before it counts."""
    line = json.dumps(data, allow_nan=True) + "\n"
    with open(path, "a", encoding="utf-8") as f:
        f.write(line)
        f.flush()
        os.fsync(f.fileno())


def _read_records(
    kind: type, path: Path, aside: Path, repair: bool, log: Callable[[str], None] | None
) -> EventLog:
    """The records of kind ``kind`` in the log at ``path``, as :meth:`RunDirectory.read_log` says;
    with ``repair``, damaged lines go to ``aside``."""
    if not path.exists():
        return EventLog([], [])
    if not path.is_file():
        raise EvosearchError(f"{path} is not a file: the run's records cannot be read")
    raw = path.read_bytes()
    *complete, tail = raw.split(b"\n")
    lines = [line + b"\n" for line in complete]
    events, kept = _parse_lines(kind, lines)
    last = _parse_line(kind, len(lines) + 1, tail + b"\n", {r.key for r in events.records}) if tail else None
    if isinstance(last, kind):  # whole but for its newline
        events.records.append(last)
        kept.append(tail + b"\n")
    elif last is not None and last.reason != NOT_JSON:  # whole too, but no record: damaged
        events.damaged.append(last)
    if events.damaged and log is not None:
        count = f"{len(events.damaged)} damaged line(s)"
        done = f"set aside {count} in {aside.name}" if repair else f"skipped {count}"
        kept_count = f"all {len(events.records)} intact records kept"
        log(f"{path}: {done} ({events.summary()}); {kept_count}")
    if repair and b"".join(kept) != raw:
        _set_aside(aside, path.name, events.damaged)
        atomic_write_bytes(path, b"".join(kept))
    return events


def _set_aside(aside: Path, source: str, damaged: list[DamagedLine]) -> None:
    """Append ``damaged`` to ``aside``, durably, under a line saying from where and when."""
    if not damaged:
        return
    entries = [f"line {d.number} ({d.reason}): ".encode() + d.text for d in damaged]
    header = f"# set aside from {source} on {time.strftime('%Y-%m-%d %H:%M:%S')}\n".encode()
    with open(aside, "ab") as f:
        f.write(header + b"".join(entries))
        f.flush()
        os.fsync(f.fileno())


def _parse_lines(kind: type, lines: list[bytes]) -> tuple[EventLog, list[bytes]]:
    """The records of ``kind`` and damaged lines among complete ``lines``; the lines of the records."""
    log, kept = EventLog([], []), []
    seen: set[Any] = set()
    for number, line in enumerate(lines, start=1):
        parsed = _parse_line(kind, number, line, seen)
        if isinstance(parsed, DamagedLine):
            log.damaged.append(parsed)
            continue
        log.records.append(parsed)
        kept.append(line)
        seen.add(parsed.key)
    return log, kept


def _parse_line(kind: type, number: int, line: bytes, seen: set[Any]) -> Any:
    """Line ``number``'s record of ``kind``, or why it is damaged (a :class:`DamagedLine`); ``seen``:
    the keys of the records before it."""
    try:
        data = json.loads(line.decode("utf-8-sig"))  # -sig: a byte order mark an editor put first
    except (ValueError, RecursionError):  # a UnicodeDecodeError is a ValueError
        return DamagedLine(number, NOT_JSON, line)
    named = data.get("id") if isinstance(data, dict) else None
    named = named if _is_of(named, int) and 0 <= named < ID_LIMIT else None
    try:
        record = kind.from_json(data)
    except RecordError as e:
        return DamagedLine(number, str(e), line, named)
    if record.key in seen:
        what = f"id {record.id}" if kind is CandidateRecord else f"candidate {record.id}'s rung {record.rung}"
        return DamagedLine(number, f"repeats {what}, whose first record is kept", line, record.id)
    return record


def _is_search_state(checkpoint: dict[str, Any]) -> bool:
    """Whether a checkpoint of a readable version has the parts every reader takes from it (a
    population is the evolution's, and only a list of members)."""
    key = "evolution" if checkpoint["version"] == 1 else "searcher"
    searcher = checkpoint.get(key)
    return (
        (checkpoint["version"] == 1 or isinstance(checkpoint.get("algorithm"), str))
        and _is_of(checkpoint.get("elapsed_s"), float)
        and isinstance(searcher, dict)
        and _is_of(searcher.get("next_id"), int)
        and 0 <= searcher["next_id"] <= ID_LIMIT
        and _is_of(searcher.get("pending"), list[dict[str, Any]])
        and _is_of(searcher.get("population", []), list[Any])
        and all(_is_member(m) for m in searcher.get("population", []))  # report reads it too
    )


def _is_member(member: Any) -> bool:
    """Whether a population member has what a report reads of it: an id, scores."""
    return (
        isinstance(member, dict)
        and _is_of(member.get("id"), int)
        and _is_of(member.get("scores"), list[float])
    )


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


def export_layers(layers: list[tuple[int, dict[str, Any]]], directory: Path, index: str) -> list[str]:
    """Each layer's (id, graph data) graph file and standalone module as ``<rank>_candidate_<id>.yaml``
    / ``.py`` (class ``Candidate<id>``), and ``index`` as ``README.md``; the file stems, in rank order.
    Every file lands in ``directory`` whatever the records hold (:func:`child_path`)."""
    directory.mkdir(parents=True, exist_ok=True)
    stems = []
    for rank, (candidate_id, graph_data) in enumerate(layers):
        stem = safe_filename(f"{rank:02d}_candidate_{candidate_id}")
        graph = graph_from_dict(graph_data)
        module = layer_source(graph, class_name=f"Candidate{candidate_id}")  # checked before any file
        save_graph(graph, child_path(directory, f"{stem}.yaml"))
        atomic_write_text(child_path(directory, f"{stem}.py"), module)
        stems.append(stem)
    atomic_write_text(child_path(directory, "README.md"), index)
    return stems
