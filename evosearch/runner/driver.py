"""The Ray driver of a search: the loop behind ``evosearch run``.

The search algorithm (a :class:`~evosearch.search.searcher.Searcher`, chosen by ``search.algorithm``)
proposes and numbers candidates; the driver owns everything else: the Ray instance, resources,
retries, time limits, concurrency, deduplication, and the run directory. Each candidate:

1. structural dedupe — the same structure as an earlier candidate reuses its result;
2. probes on a CPU worker — a reject is recorded with its reasons and never trained; a probe with no
   verdict (out of its budget, its worker died) is run again, up to ``resources.retries`` times, then
   recorded inconclusive, and its structure stays open to structural dedupe's next proposal;
3. functional dedupe — the same fingerprint as an earlier candidate reuses its result;
4. training on every proxy task on the workers, in parallel (each task one objective).

Durability: the checkpoint (algorithm state, counters) is replaced atomically after every proposal and
every finished candidate, and a candidate's record is fsynced before the algorithm hears of it. So a
run killed at any point resumes with nothing lost and nothing repeated: proposals in flight are run
again (they are in the checkpoint), and a record written just before the kill is applied on resume.

Stopping: the first Ctrl-C (SIGINT) or SIGTERM (what schedulers send before a kill) stops the loop at
its next safe point — never halfway through updating the state — and checkpoints; the evaluations
in flight end with the driver's Ray job, and ``--resume`` runs them again. A second Ctrl-C stops at
once; the checkpoint on disk is then the one from the last complete step, as after a ``kill -9``.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import ray
import ray.exceptions

from evosearch.config import from_dict
from evosearch.errors import EvosearchError, one_line, shorten
from evosearch.layers.graph_io import graph_to_dict
from evosearch.outcomes import EVALUATED, SCORED, TRAINED_EXITS, ExitReason, Status, candidate_status
from evosearch.runner.lock import DRIVER, RunLock
from evosearch.runner.progress import Progress, SearchStats
from evosearch.runner.run_config import RunConfig, blocking_changes, load_tasks
from evosearch.runner.run_directory import (
    CandidateRecord,
    EventLog,
    RunDirectory,
    pareto_front,
    searcher_state,
)
from evosearch.runner.workers import (
    load_packed_datasets,
    probe_remote,
    put_datasets,
    submit_training,
    training_result,
)
from evosearch.search import WORST_SCORE, Proposal, Searcher
from evosearch.tasks.train import TaskConfig


@dataclass
class _Candidate:
    """A proposal in flight and what has come back for it so far."""

    proposal: Proposal
    started: float
    structural_hash: str
    probe: dict[str, Any] | None = None
    probe_s: float = 0.0
    probe_attempts: int = 0
    train_started: float = 0.0
    results: dict[int, dict[str, Any]] = field(default_factory=dict)


@dataclass
class SearchSummary:
    run_dir: str
    interrupted: bool
    stats: SearchStats
    front: list[CandidateRecord]
    objectives: list[str]


class SearchDriver:
    def __init__(self, config: RunConfig, tasks: list[TaskConfig], objectives: list[str], progress: Progress):
        self.config = config
        self.tasks = tasks
        self.objectives = objectives
        self.progress = progress
        self.run_dir = RunDirectory(config.run_dir)
        self.algorithm: Searcher = config.search.searcher(len(tasks), config.seed)
        self.records: list[CandidateRecord] = []
        self.by_hash: dict[str, int] = {}  # structural hash -> record id (or id in flight)
        self.by_fingerprint: dict[str, int] = {}
        self.in_flight: dict[int, _Candidate] = {}
        self.refs: dict[ray.ObjectRef, tuple[int, int | None, float]] = {}  # -> (id, task or None, t0)
        self.timed_out: set[ray.ObjectRef] = set()
        self.datasets = load_packed_datasets(tasks)  # missing or malformed data fails here, before any work
        self.data_refs: list[ray.ObjectRef] = []
        self.elapsed_before = 0.0
        self.session_start = time.monotonic()
        self.stats = SearchStats(
            budget=config.search.max_evaluations, concurrency=config.resources.concurrency
        )

    # ---- state ----------------------------------------------------------------------------------

    def checkpoint(self) -> None:
        self.run_dir.save_checkpoint(
            {
                "algorithm": self.config.search.algorithm,
                "searcher": self.algorithm.state_dict(),
                "elapsed_s": self.elapsed(),
                "evaluations": self.stats.evaluations,
                "candidates": self.stats.candidates,
            }
        )

    def restore(self, rebuild: bool = False) -> None:
        """Load the checkpoint and the records; apply records the checkpoint has not seen yet. With
        ``rebuild``, the checkpoint is set aside unread and the state rebuilt from the records."""
        events = self.run_dir.read_log(repair=True, log=self.progress.log)
        self.records = events.records
        if rebuild:
            self._rebuild(events)
        elif (state := self.run_dir.load_checkpoint()) is not None:
            self._load_state(state)
        for record in self.records:
            self._remember(record)
            if record.id in self.algorithm.pending:  # recorded just before the crash, not yet told
                self._tell_algorithm(record)
        self.stats.evaluations = sum(r.status in EVALUATED for r in self.records)
        self.stats.candidates = len(self.records)
        self.checkpoint()

    def _load_state(self, state: dict[str, Any]) -> None:
        """The checkpoint's state, into the algorithm. The run directory checked its outline
        (:meth:`RunDirectory.load_checkpoint`); the algorithm's own part is data too, and where it is
        not what the algorithm wrote, the way out is the same as for a lost checkpoint."""
        try:
            self.algorithm.load_state_dict(searcher_state(state)[1])
        except (KeyError, TypeError, ValueError, IndexError, EvosearchError) as e:
            raise EvosearchError(
                f"{self.run_dir.checkpoint_path} holds no {self.config.search.algorithm} state this "
                f"evosearch reads ({type(e).__name__}: {shorten(one_line(e))}): restore it, or resume "
                "with --rebuild-checkpoint to rebuild the search state from the records"
            ) from None
        self.elapsed_before = state["elapsed_s"]

    def _rebuild(self, events: EventLog) -> None:
        """The search state from the records alone, for a checkpoint lost, unreadable or older than
        the records (``--rebuild-checkpoint``). What the records hold comes back exactly: numbering
        goes on past every recorded id (a damaged line's too), the counters are counted, and each
        record's proposal is taken back by the algorithm to be answered as it was, in the order it
        was (:meth:`restore`), so what it learnt, such as the evolution's population, is what it
        had. What only the checkpoint held is lost, and said: the random generator starts again
        (:meth:`Searcher.resume_numbering`), proposals that were in flight are not run again (their
        ids stay unused), and the search clock is read from the records' times."""
        aside = self.run_dir.set_checkpoint_aside()
        self.algorithm.resume_numbering(events.highest_id() + 1)
        for record in self.records:
            self.algorithm.adopt(_proposal(record))
        self.elapsed_before = _records_span(self.records)
        kept = f"; the old one is kept as {aside.name}" if aside else ""
        self.progress.log(
            f"rebuilt the search state from {len(self.records)} records: ids go on from "
            f"{self.algorithm.next_id}, the random generator starts again, the search clock reads "
            f"{self.elapsed_before / 60:.1f} min{kept}"
        )

    def elapsed(self) -> float:
        return self.elapsed_before + time.monotonic() - self.session_start

    # ---- the loop -------------------------------------------------------------------------------

    def run(self) -> bool:
        """Search until a budget is spent; True when it finished, False when interrupted."""
        self.session_start = time.monotonic()  # the clock runs from here: Ray's start-up is not search time
        self.data_refs = put_datasets(self.datasets)
        for proposal in sorted(self.algorithm.pending.values(), key=lambda p: p.id):
            self._start(proposal)  # in flight when the last session stopped: run again
        with _stop_requests() as stop:
            try:
                while not stop.requested:
                    busy = time.monotonic()
                    self._fill()
                    if not self.in_flight:
                        break
                    self.stats.driver_s += time.monotonic() - busy
                    ready, _ = ray.wait(list(self.refs), num_returns=1, timeout=1.0)
                    if stop.requested:  # a result that raced the signal is run again on resume
                        break
                    busy = time.monotonic()
                    for ref in ready:
                        self._on_ready(ref)
                    self._enforce_timeouts()
                    self._update_stats()
                    self.progress.update(self.stats)
                    self.stats.driver_s += time.monotonic() - busy
            except KeyboardInterrupt:  # the second Ctrl-C: the last checkpoint on disk stands
                return False
        if stop.requested:
            # No ray.cancel of what is in flight: cancelling races task replies inside Ray (a fatal
            # RAY_CHECK, ray-project/ray#54846). The job's workers end with the driver anyway.
            self.progress.log(
                f"{stop.requested}: stopping; the evaluations in flight are dropped and run again on --resume"
            )
            self.checkpoint()
            return False
        self.checkpoint()
        return True

    def _can_propose(self) -> bool:
        search = self.config.search
        if len(self.in_flight) >= self.config.resources.concurrency:
            return False
        if (
            search.max_evaluations is not None
            and self.stats.evaluations + len(self.in_flight) >= search.max_evaluations
        ):
            return False
        limit = search.candidate_limit()
        if limit is not None and self.stats.candidates + len(self.in_flight) >= limit:
            return False
        return search.max_minutes is None or self.elapsed() < 60 * search.max_minutes

    def _fill(self) -> None:
        while self._can_propose():
            proposal = self.algorithm.suggest()
            self.checkpoint()
            self._start(proposal)

    def _start(self, proposal: Proposal) -> None:
        structural_hash = proposal.graph.structural_hash()
        candidate = _Candidate(proposal, time.monotonic(), structural_hash)
        self.in_flight[proposal.id] = candidate
        if structural_hash in self.by_hash:
            self._finish_as_copy(candidate, Status.DUPLICATE, self.by_hash[structural_hash])
            return
        self.by_hash[structural_hash] = proposal.id
        self._submit_probe(candidate)

    def _submit_probe(self, candidate: _Candidate) -> None:
        """Probe the candidate on a CPU worker. Ray does not retry it (``max_retries=0``): the driver
        runs again every probe that came back without a verdict, whatever the cause
        (:meth:`_on_inconclusive_probe`)."""
        candidate.probe_attempts += 1
        ref = probe_remote.options(num_cpus=self.config.resources.cpus_per_probe, max_retries=0).remote(
            graph_to_dict(candidate.proposal.graph), self.config.probes
        )
        self.refs[ref] = (candidate.proposal.id, None, time.monotonic())

    def _on_ready(self, ref: ray.ObjectRef) -> None:
        candidate_id, task_index, started = self.refs.pop(ref)
        candidate = self.in_flight[candidate_id]
        if task_index is None:
            self._on_probe(candidate, _get_probe(ref), time.monotonic() - started)
            return
        result = training_result(ref, timed_out=ref in self.timed_out)
        self.timed_out.discard(ref)
        candidate.results[task_index] = {**result, "task": self.objectives[task_index]}
        self.stats.worker_s += float(result.get("wall_s") or 0.0)
        if len(candidate.results) == len(self.tasks):
            self._finish_trained(candidate)

    def _on_probe(self, candidate: _Candidate, probe: dict[str, Any], seconds: float) -> None:
        candidate.probe = {**probe, "attempts": candidate.probe_attempts}
        candidate.probe_s += seconds
        self.stats.worker_s += float(probe.get("seconds") or 0.0)
        if probe.get("inconclusive"):
            self._on_inconclusive_probe(candidate, list(probe.get("reasons") or ["no verdict"]))
            return
        if not probe.get("passed"):
            self._finish(candidate, Status.REJECTED, reasons=list(probe.get("reasons", ["probe failed"])))
            return
        fingerprint = probe.get("metrics", {}).get("fingerprint")
        if fingerprint is not None and fingerprint in self.by_fingerprint:
            self._finish_as_copy(candidate, Status.EQUIVALENT, self.by_fingerprint[fingerprint])
            return
        if fingerprint is not None:
            self.by_fingerprint[fingerprint] = candidate.proposal.id
        candidate.train_started = time.monotonic()
        graph_data = graph_to_dict(candidate.proposal.graph)
        for k, (task, data_ref) in enumerate(zip(self.tasks, self.data_refs, strict=True)):
            ref = submit_training(graph_data, task, data_ref, self.config.resources)
            self.refs[ref] = (candidate.proposal.id, k, time.monotonic())

    def _on_inconclusive_probe(self, candidate: _Candidate, reasons: list[str]) -> None:
        """No verdict, which is no reject: probe again, up to ``resources.retries`` times; then record the
        candidate inconclusive and free its structure, so that a later proposal of it is probed anew
        instead of reusing a result that says nothing about the layer."""
        if candidate.probe_attempts <= self.config.resources.retries:
            self._submit_probe(candidate)
            return
        if self.by_hash.get(candidate.structural_hash) == candidate.proposal.id:
            del self.by_hash[candidate.structural_hash]
        self._finish(candidate, Status.INCONCLUSIVE, reasons=reasons)

    def _enforce_timeouts(self) -> None:
        limit = self.config.resources.evaluation_timeout_s
        now = time.monotonic()
        for ref, (_, task_index, started) in list(self.refs.items()):
            if task_index is not None and ref not in self.timed_out and now - started > limit:
                self.timed_out.add(ref)
                ray.cancel(ref, force=True)

    # ---- finishing a candidate ------------------------------------------------------------------

    def _finish_trained(self, candidate: _Candidate) -> None:
        results = [candidate.results[k] for k in range(len(self.tasks))]
        exits = [str(r.get("exit_reason", ExitReason.ERROR)) for r in results]
        scores = [
            float(r["top1"]) if e in TRAINED_EXITS and r.get("top1") is not None else WORST_SCORE
            for r, e in zip(results, exits, strict=True)
        ]
        status = candidate_status(exits)
        reasons = [f"{r['task']}: {e}" for r, e in zip(results, exits, strict=True) if e not in TRAINED_EXITS]
        train_s = time.monotonic() - candidate.train_started
        self._finish(candidate, status, reasons=reasons, tasks=results, scores=scores, train_s=train_s)

    def _finish_as_copy(self, candidate: _Candidate, status: Status, same_as: int) -> None:
        original = next((r for r in self.records if r.id == same_as), None)
        if original is None:  # the original is still in flight: nothing to reuse yet
            self._finish(
                candidate, status, reasons=[f"same as candidate {same_as} (in flight)"], same_as=same_as
            )
            return
        self._finish(
            candidate,
            status,
            reasons=[f"same as candidate {same_as} ({original.status.value})"],
            scores=original.scores,
            same_as=same_as,
        )

    def _finish(
        self,
        candidate: _Candidate,
        status: Status,
        reasons: list[str] | None = None,
        tasks: list[dict[str, Any]] | None = None,
        scores: list[float] | None = None,
        same_as: int | None = None,
        train_s: float = 0.0,
    ) -> None:
        proposal = candidate.proposal
        probe = candidate.probe
        record = CandidateRecord(
            id=proposal.id,
            status=status,
            origin=proposal.origin,
            formula=proposal.graph.formula(),
            structural_hash=candidate.structural_hash,
            graph=graph_to_dict(proposal.graph),
            parent=proposal.parent,
            mutation=None if proposal.mutation is None else vars(proposal.mutation),
            fingerprint=None if probe is None else probe.get("metrics", {}).get("fingerprint"),
            reasons=reasons or [],
            probe=probe,
            tasks=tasks or [],
            scores=scores,
            same_as=same_as,
            seconds={
                "probe": candidate.probe_s,
                "train": train_s,
                "total": time.monotonic() - candidate.started,
            },
            finished_at=time.time(),
        )
        self.run_dir.append_event(record)  # durable before it counts
        del self.in_flight[proposal.id]
        self.records.append(record)
        self._remember(record)
        self._tell_algorithm(record)
        self.stats.candidates += 1
        if status in EVALUATED:
            self.stats.evaluations += 1
        self.checkpoint()
        if status in SCORED:
            self.run_dir.write_best(self.records, self.objectives)

    def _remember(self, record: CandidateRecord) -> None:
        """Index a finished record for deduplication and statistics. Only a record with a result of its
        own stands for its structure: not an inconclusive one (no result), nor a duplicate (its original
        stands, or, if that was inconclusive, nothing does), so a resumed run dedupes as the live one.
        An inconclusive probe may have computed a fingerprint before its budget ran out: that record
        stands for no function either."""
        if record.status not in (Status.INCONCLUSIVE, Status.DUPLICATE):
            self.by_hash.setdefault(record.structural_hash, record.id)
        if record.fingerprint and record.status not in (Status.REJECTED, Status.INCONCLUSIVE):
            self.by_fingerprint.setdefault(record.fingerprint, record.id)
        self.stats.statuses[record.status.value] += 1
        if record.status is Status.TRAINED and record.scores:
            for name, score in zip(self.objectives, record.scores, strict=True):
                self.stats.best[name] = max(score, self.stats.best.get(name, score))
        if record.status is Status.REJECTED:
            self.stats.rejections.update(reason.split(":")[0] for reason in record.reasons[:1])

    def _tell_algorithm(self, record: CandidateRecord) -> None:
        if record.status is Status.REJECTED or record.scores is None:
            self.algorithm.discard(record.id)
        elif record.status is Status.FAILED and all(s == WORST_SCORE for s in record.scores):
            self.algorithm.observe(record.id, None)
        else:
            self.algorithm.observe(record.id, record.scores)

    def _update_stats(self) -> None:
        self.stats.in_flight = len(self.in_flight)
        self.stats.training = sum(1 for _, k, _ in self.refs.values() if k is not None)
        self.stats.elapsed_s = self.elapsed()


def _proposal(record: CandidateRecord) -> Proposal:
    """The proposal a record was made from."""
    fields = ("id", "origin", "parent", "mutation", "graph")
    try:
        return Proposal.from_json({name: getattr(record, name) for name in fields})
    except (TypeError, EvosearchError) as e:  # TypeError: a mutation of other keys
        message = f"candidate {record.id}'s record cannot be replayed: {shorten(one_line(e))}"
        raise EvosearchError(message) from None


def _records_span(records: list[CandidateRecord]) -> float:
    """Seconds from the first record's start to the last one's finish: the search clock of a run of
    one session; more where it had several, the pauses between them counted."""
    if not records:
        return 0.0
    started = min(r.finished_at - r.seconds.get("total", 0.0) for r in records)
    return max(0.0, max(r.finished_at for r in records) - started)


def _get_probe(ref: ray.ObjectRef) -> dict[str, Any]:
    """The probe's result; one without a verdict where its worker failed (died, out of memory): that
    says nothing about the layer, and may depend on what else ran on the node."""
    try:
        return ray.get(ref)
    except ray.exceptions.RayError as e:
        reason = f"probe worker failed: {type(e).__name__}"
        return {"passed": False, "inconclusive": True, "reasons": [reason], "metrics": {}}


@dataclass
class _StopRequest:
    requested: str | None = None  # the name of the signal that asked for the stop


@contextmanager
def _stop_requests() -> Iterator[_StopRequest]:
    """Turn the first SIGINT/SIGTERM into a request the loop polls; a second SIGINT interrupts."""
    stop = _StopRequest()
    if threading.current_thread() is not threading.main_thread():  # signals reach the main thread only
        yield stop
        return

    def handle(signum: int, frame: object) -> None:
        if stop.requested is not None:
            raise KeyboardInterrupt
        stop.requested = signal.Signals(signum).name  # no I/O here: the handler may interrupt a write

    previous = {sig: signal.signal(sig, handle) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield stop
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


# ---- entry point --------------------------------------------------------------------------------


def run_search(
    config: RunConfig,
    *,
    resume: bool = False,
    force: bool = False,
    rebuild_checkpoint: bool = False,
    progress: Progress | None = None,
) -> SearchSummary:
    """Run (or resume) the search ``config`` describes; see :class:`SearchDriver`.

    A resumed run trains on the tasks it started with, read from its ``tasks.yaml``: a task file
    edited or renamed since then changes nothing, so a requeued job neither fails on it nor mixes two
    definitions of a task in one run's scores. The task files are resolved again only where the
    config's ``tasks`` changed, which ``force`` allows.

    A resume continues from the checkpoint, which must cover the records: one missing while there
    are records, or older than them, would hand out recorded ids again, so it is refused in one line
    (:func:`_refuse_a_lost_checkpoint`). ``rebuild_checkpoint`` (``--rebuild-checkpoint``) is the
    researcher's choice to continue without it: the checkpoint is set aside unread and the state
    rebuilt from the records (:meth:`SearchDriver._rebuild` says what comes back and what does not).
    Not the default, because the rebuilt run no longer replays as the original would have.

    The run directory's lock is held throughout, taken before anything is checked, started or
    written: a second driver on the same run (a requeued job beside the running one) is refused, and
    every check it makes sees a directory no one else writes.
    """
    progress = progress or Progress()
    run_dir = RunDirectory(config.run_dir)
    with RunLock(run_dir.path, DRIVER, stale_after_s=config.resources.lock_timeout_s) as lock:
        return _search_locked(
            config, run_dir, lock, resume=resume, force=force, rebuild=rebuild_checkpoint, progress=progress
        )


def _search_locked(
    config: RunConfig,
    run_dir: RunDirectory,
    lock: RunLock,
    *,
    resume: bool,
    force: bool,
    rebuild: bool,
    progress: Progress,
) -> SearchSummary:
    changes: list[str] = []
    if resume:
        if not run_dir.exists():
            raise EvosearchError(f"nothing to resume: {run_dir.path} is not a run directory")
        saved = from_dict(RunConfig, run_dir.read_config_data(), "saved config")
        changes = blocking_changes(saved, config)
        if changes and not force:
            raise EvosearchError(
                f"the config differs from the run's saved config in {', '.join(changes)}; "
                "resume with the saved one (evosearch run RUN_DIR --resume) or pass --force"
            )
        if not rebuild:  # a rebuilt state is the records': the checkpoint is not read
            _refuse_another_algorithm(run_dir, config)
            _refuse_a_lost_checkpoint(run_dir)
    elif any(path != lock.path for path in run_dir.path.iterdir()):
        raise EvosearchError(
            f"{run_dir.path} already exists: resume it with --resume, or choose another name (--set name=...)"
        )
    tasks, objectives = run_dir.read_tasks() if resume and "tasks" not in changes else load_tasks(config)
    driver = SearchDriver(config, tasks, objectives, progress)
    owns_ray = start_ray(config)  # before anything is written: a cluster out of reach leaves no trace
    try:
        run_dir.write_config(config)
        run_dir.write_tasks(tasks, objectives)
        if resume:
            driver.restore(rebuild)
            progress.log(f"resuming {run_dir.path}: {driver.stats.candidates} candidates done")
        finished = driver.run()
    finally:
        if owns_ray:
            ray.shutdown()
    driver._update_stats()
    progress.close(driver.stats)
    return SearchSummary(
        str(run_dir.path), not finished, driver.stats, pareto_front(driver.records), objectives
    )


def _refuse_another_algorithm(run_dir: RunDirectory, config: RunConfig) -> None:
    """A checkpoint holds the state of the algorithm that wrote it, which no other can continue:
    refused before anything is written, even with --force."""
    checkpoint = run_dir.load_checkpoint()
    algorithm = None if checkpoint is None else searcher_state(checkpoint)[0]
    if algorithm not in (None, config.search.algorithm):
        raise EvosearchError(
            f"{run_dir.path} was searched with search.algorithm={algorithm}; it cannot resume with "
            f"{config.search.algorithm}: start a new run for another algorithm"
        )


def _refuse_a_lost_checkpoint(run_dir: RunDirectory) -> None:
    """Refuse, before anything is written, a checkpoint that does not cover the records: missing
    while there are records (the ids would start at 0 again, and the records' own structures make
    the new candidates duplicates of themselves), or older than them, e.g. restored from a copy
    (ids would be handed out again). Damaged lines are said once, by the resume itself."""
    events = run_dir.read_log(log=None)
    checkpoint = run_dir.load_checkpoint()
    rebuild = "--rebuild-checkpoint to rebuild the search state from the records"
    if checkpoint is None and events.records:
        raise EvosearchError(
            f"{run_dir.checkpoint_path} is missing, but {run_dir.events_path} holds "
            f"{len(events.records)} records: restore it, or resume with {rebuild}"
        )
    next_id = 0 if checkpoint is None else searcher_state(checkpoint)[1]["next_id"]
    recorded = max((r.id for r in events.records), default=-1)
    if recorded >= next_id:
        raise EvosearchError(
            f"{run_dir.checkpoint_path} is older than {run_dir.events_path}: it numbers the next "
            f"candidate {next_id}, the records reach id {recorded}; restore the latest checkpoint, "
            f"or resume with {rebuild}"
        )


def start_ray(config: RunConfig) -> bool:
    """Join the configured cluster, or start a local instance on loopback; True if we started it."""
    if ray.is_initialized():
        return False
    resources = config.resources
    address = resources.address or os.environ.get("RAY_ADDRESS")
    if address:
        try:
            ray.init(address=address, log_to_driver=False)
        except (ConnectionError, RuntimeError, ValueError) as e:
            raise EvosearchError(f"cannot join the Ray cluster at {address}: {one_line(e)}") from None
        return True
    with loopback_only():
        ray.init(
            address="local",  # a new instance: never join a cluster someone else started on this machine
            num_cpus=resources.num_cpus,
            num_gpus=resources.num_gpus,
            include_dashboard=False,
            log_to_driver=False,
            _node_ip_address="127.0.0.1",
        )
    return True


LOOPBACK_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"


@contextmanager
def loopback_only() -> Iterator[None]:
    """Let a Ray instance started inside bind to 127.0.0.1.

    Ray replaces 127.0.0.1 by this machine's network address unless its cluster mode is off, which it
    reads from ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER`` once, at import: setting the variable later, or
    passing ``_node_ip_address``, is not enough. So both the variable (for the processes Ray starts)
    and the constant Ray read are set here, and put back after: the started instance keeps its
    address, and a later join of a real cluster from this process advertises a reachable one.
    """
    from ray._private import ray_constants

    saved = ray_constants.ENABLE_RAY_CLUSTER, os.environ.get(LOOPBACK_ENV)
    ray_constants.ENABLE_RAY_CLUSTER, os.environ[LOOPBACK_ENV] = False, "0"
    try:
        yield
    finally:
        ray_constants.ENABLE_RAY_CLUSTER = saved[0]
        if saved[1] is None:
            os.environ.pop(LOOPBACK_ENV)
        else:
            os.environ[LOOPBACK_ENV] = saved[1]
