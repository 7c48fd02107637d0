"""The Ray driver of a search: the loop behind ``evosearch run``.

The search algorithm (a :class:`~evosearch.search.searcher.Searcher`, chosen by ``search.algorithm``)
proposes and numbers candidates; the driver owns everything else: the Ray instance, resources,
retries, time limits, concurrency, deduplication, and the run directory. Each candidate:

1. structural dedupe — the same structure as an earlier candidate reuses its result;
2. probes on a CPU worker — a reject is recorded with its reasons and never trained; a probe with no
   verdict (out of its budget, its worker died) is run again, up to ``resources.retries`` times, then
   recorded inconclusive, and its structure stays open to structural dedupe's next proposal;
3. functional dedupe — the same fingerprint as an earlier candidate reuses its result;
4. training on every proxy task on the workers, in parallel (each task one objective), at the
   funnel's cheapest rung; the :class:`~evosearch.search.funnel.Funnel` then promotes the best of each
   rung to longer training and more training seeds (``search.fidelity``), up to the top rung, where
   the run's claims are made.

Whenever a worker is free, a promotion goes first; else a new candidate is proposed. Once no new
candidate may start (a budget is spent), the leader of each rung is taken on, so that a run ends
with its best layer confirmed at the top rung; ``search.max_train_steps`` stops that too.

Durability: the checkpoint (algorithm state, promotions decided, counters) is replaced atomically
after every proposal, promotion and finished candidate or rung, and a record (``events.jsonl``,
``rungs.jsonl``) is fsynced before the algorithm or the funnel hears of it. So a run killed at any
point resumes with nothing lost and nothing repeated: proposals and promotions in flight are run again
(they are in the checkpoint), and a record written just before the kill is applied on resume.

Stopping: the first Ctrl-C (SIGINT) or SIGTERM (what schedulers send before a kill) stops the loop at
its next safe point — never halfway through updating the state — and checkpoints; the evaluations
in flight end with the driver's Ray job, and ``--resume`` runs them again. A second Ctrl-C stops at
once; the checkpoint on disk is then the one from the last complete step, as after a ``kill -9``.
"""

from __future__ import annotations

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
from evosearch.outcomes import EVALUATED, TRAINED_EXITS, Status, candidate_status
from evosearch.runner.claims import (
    Claims,
    make_claims,
    run_exit,
    run_fidelity,
    run_score,
    trained_runs,
    write_results,
)
from evosearch.runner.lock import DRIVER, RunLock
from evosearch.runner.progress import Progress, SearchStats
from evosearch.runner.ray_cluster import start_ray
from evosearch.runner.rerank import RerankResult, transfer
from evosearch.runner.run_config import RunConfig, blocking_changes, load_tasks, load_transfer_tasks
from evosearch.runner.run_directory import (
    CandidateRecord,
    EventLog,
    RunDirectory,
    RungRecord,
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
from evosearch.search.funnel import Funnel
from evosearch.tasks.train import TaskConfig


@dataclass(frozen=True)
class _Run:
    """One training run of a candidate: a task (by index), a fraction of its steps, a seed offset."""

    task: int
    steps: float
    seed: int


@dataclass
class _Candidate:
    """A proposal in flight and what has come back for it so far (its rung-0 training runs)."""

    proposal: Proposal
    started: float
    structural_hash: str
    probe: dict[str, Any] | None = None
    probe_s: float = 0.0
    probe_attempts: int = 0
    train_started: float = 0.0
    results: dict[_Run, dict[str, Any]] = field(default_factory=dict)


@dataclass
class _Promotion:
    """A candidate promoted to ``rung``, in flight: the runs the rung needs, and those back so far
    (runs of lower rungs with the same steps and seed are back from the start)."""

    id: int
    rung: int
    graph: dict[str, Any]
    runs: list[_Run]
    started: float
    results: dict[_Run, dict[str, Any]] = field(default_factory=dict)


@dataclass
class SearchSummary:
    run_dir: str
    interrupted: bool
    stats: SearchStats
    claims: Claims
    objectives: list[str]
    transfer: RerankResult | None = None  # the transfer step's table, where the config has one


class SearchDriver:
    def __init__(self, config: RunConfig, tasks: list[TaskConfig], objectives: list[str], progress: Progress):
        self.config = config
        self.tasks = tasks
        self.objectives = objectives
        self.progress = progress
        self.run_dir = RunDirectory(config.run_dir)
        self.algorithm: Searcher = config.search.searcher(len(tasks), config.seed)
        self.fidelity = config.search.fidelity
        self.funnel = Funnel(self.fidelity)
        self.records: list[CandidateRecord] = []
        self.by_id: dict[int, CandidateRecord] = {}
        self.rung_records: list[RungRecord] = []
        self.runs_done: dict[tuple[int, _Run], dict[str, Any]] = {}  # (id, run) -> its training record
        self.promotions: dict[tuple[int, int], _Promotion] = {}  # (id, rung) -> in flight
        self.claims = make_claims([], [], objectives, self.fidelity)
        self.by_hash: dict[str, int] = {}  # structural hash -> record id (or id in flight)
        self.by_fingerprint: dict[str, int] = {}
        self.in_flight: dict[int, _Candidate] = {}
        # -> (candidate id, rung, run, t0); a probe has rung and run None
        self.refs: dict[ray.ObjectRef, tuple[int, int | None, _Run | None, float]] = {}
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
                "funnel": self.funnel.state_dict(),
                "elapsed_s": self.elapsed(),
                "evaluations": self.stats.evaluations,
                "candidates": self.stats.candidates,
            }
        )

    def restore(self, rebuild: bool = False) -> None:
        """Load the checkpoint and the records; apply records the checkpoint has not seen yet. With
        ``rebuild``, the checkpoint is set aside unread and the state rebuilt from the records."""
        events = self.run_dir.read_log(repair=True, log=self.progress.log)
        rung_records = self.run_dir.read_rungs(repair=True, log=self.progress.log)
        if rebuild:
            self._rebuild(events)
        elif (state := self.run_dir.load_checkpoint()) is not None:
            self._load_state(state)
        for record in events.records:
            self._remember(record)
            if record.id in self.algorithm.pending:  # recorded just before the crash, not yet told
                self._tell_algorithm(record)
        for rung_record in rung_records:  # after the records: a rung's result needs its candidate's
            self._remember_rung(rung_record)
        self.stats.evaluations = sum(r.status in EVALUATED for r in self.records)
        self.stats.candidates = len(self.records)
        self.checkpoint()
        self._write_claims()

    def _load_state(self, state: dict[str, Any]) -> None:
        """The checkpoint's state, into the algorithm. The run directory checked its outline
        (:meth:`RunDirectory.load_checkpoint`); the algorithm's own part is data too, and where it is
        not what the algorithm wrote, the way out is the same as for a lost checkpoint."""
        try:
            self.algorithm.load_state_dict(searcher_state(state)[1])
            # A checkpoint from before the funnel decided no promotion.
            self.funnel.load_state_dict(state.get("funnel", {"promoted": []}))
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
        had; the funnel's promotions are those with a result. What only the checkpoint held is lost,
        and said: the random generator starts again (:meth:`Searcher.resume_numbering`), proposals
        and promotions that were in flight are not run again (their ids stay unused), and the search
        clock is read from the records' times."""
        aside = self.run_dir.set_checkpoint_aside()
        self.algorithm.resume_numbering(events.highest_id() + 1)
        for record in events.records:
            self.algorithm.adopt(_proposal(record))
        self.elapsed_before = _records_span(events.records)
        kept = f"; the old one is kept as {aside.name}" if aside else ""
        self.progress.log(
            f"rebuilt the search state from {len(events.records)} records: ids go on from "
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
        for candidate_id, rung in self.funnel.in_flight:
            if candidate_id in self.by_id:  # else its record was set aside as damaged: nothing to train
                self._start_promotion(candidate_id, rung)
        with _stop_requests() as stop:
            try:
                while not stop.requested:
                    busy = time.monotonic()
                    self._fill()
                    if not self.in_flight and not self.promotions:
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

    def _fill(self) -> None:
        """Start work while workers are free: a promotion first (:meth:`Funnel.next_promotion`), else a
        new candidate; once no new candidate may start and none is in flight, the rungs' leaders."""
        while self._busy() < self.config.resources.concurrency and self._train_steps_left():
            promotion = self.funnel.next_promotion()
            if promotion is None and self._proposals_left():
                proposal = self.algorithm.suggest()
                self.checkpoint()
                self._start(proposal)
                continue
            if promotion is None and not self.in_flight:
                promotion = self.funnel.leader_promotion()
            if promotion is None:
                return
            self.checkpoint()
            self._start_promotion(*promotion)

    def _busy(self) -> int:
        return len(self.in_flight) + len(self.promotions)

    def _proposals_left(self) -> bool:
        """Whether a new candidate may start: no budget of ``search`` is spent."""
        search = self.config.search
        if (
            search.max_evaluations is not None
            and self.stats.evaluations + len(self.in_flight) >= search.max_evaluations
        ):
            return False
        limit = search.candidate_limit()
        if limit is not None and self.stats.candidates + len(self.in_flight) >= limit:
            return False
        return search.max_minutes is None or self.elapsed() < 60 * search.max_minutes

    def _train_steps_left(self) -> bool:
        limit = self.config.search.max_train_steps
        return limit is None or self.stats.train_steps < limit

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
        self.refs[ref] = (candidate.proposal.id, None, None, time.monotonic())

    def _on_ready(self, ref: ray.ObjectRef) -> None:
        candidate_id, rung, run, started = self.refs.pop(ref)
        if run is None:
            self._on_probe(self.in_flight[candidate_id], _get_probe(ref), time.monotonic() - started)
            return
        result = training_result(ref, timed_out=ref in self.timed_out)
        self.timed_out.discard(ref)
        entry = {**result, "task": self.objectives[run.task], "fidelity": [run.steps, run.seed]}
        self.stats.worker_s += float(result.get("wall_s") or 0.0)
        if rung == 0:
            candidate = self.in_flight[candidate_id]
            candidate.results[run] = entry
            if len(candidate.results) == len(self._runs(0)):
                self._finish_trained(candidate)
            return
        promotion = self.promotions[candidate_id, rung]
        promotion.results[run] = entry
        if len(promotion.results) == len(promotion.runs):
            self._finish_promotion(promotion)

    def _runs(self, rung: int) -> list[_Run]:
        """The training runs of ``rung``: each task with each of the rung's seeds."""
        steps_and_seeds = self.fidelity.rungs[rung].runs()
        return [_Run(k, steps, seed) for k in range(len(self.tasks)) for steps, seed in steps_and_seeds]

    def _submit_run(self, candidate_id: int, rung: int, graph: dict[str, Any], run: _Run) -> None:
        task = self.tasks[run.task].at_fidelity(run.steps, run.seed)
        ref = submit_training(graph, task, self.data_refs[run.task], self.config.resources)
        self.refs[ref] = (candidate_id, rung, run, time.monotonic())

    def _start_promotion(self, candidate_id: int, rung: int) -> None:
        """Train a promoted candidate at ``rung``: the runs no lower rung has done already."""
        graph = self.by_id[candidate_id].graph
        promotion = _Promotion(candidate_id, rung, graph, self._runs(rung), time.monotonic())
        for run in promotion.runs:
            if (candidate_id, run) in self.runs_done:
                promotion.results[run] = {**self.runs_done[candidate_id, run], "reused": True}
        self.promotions[candidate_id, rung] = promotion
        for run in promotion.runs:
            if run not in promotion.results:
                self._submit_run(candidate_id, rung, graph, run)

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
        for run in self._runs(0):
            self._submit_run(candidate.proposal.id, 0, graph_data, run)

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
        for ref, (_, _, run, started) in list(self.refs.items()):
            if run is not None and ref not in self.timed_out and now - started > limit:
                self.timed_out.add(ref)
                ray.cancel(ref, force=True)

    # ---- finishing a candidate ------------------------------------------------------------------

    def _finish_trained(self, candidate: _Candidate) -> None:
        runs = sorted(candidate.results, key=lambda run: (run.task, run.seed))
        results = [candidate.results[run] for run in runs]
        exits = [run_exit(r) for r in results]
        status = candidate_status(exits)
        reasons = [f"{r['task']}: {e}" for r, e in zip(results, exits, strict=True) if e not in TRAINED_EXITS]
        train_s = time.monotonic() - candidate.train_started
        scores = self._rung_scores(candidate.results)
        self._finish(candidate, status, reasons=reasons, tasks=results, scores=scores, train_s=train_s)

    def _rung_scores(self, results: dict[_Run, dict[str, Any]]) -> list[float]:
        """Per task, the mean top-1 accuracy over the runs' training seeds; a run that did not train
        to the end (hurdle, failure) scores :data:`WORST_SCORE`."""
        per_task: list[list[float]] = [[] for _ in self.tasks]
        for run, result in results.items():
            per_task[run.task].append(run_score(result))
        return [sum(scores) / len(scores) for scores in per_task]

    def _finish_promotion(self, promotion: _Promotion) -> None:
        record = RungRecord(
            id=promotion.id,
            rung=promotion.rung,
            tasks=[promotion.results[run] for run in promotion.runs],
            scores=self._rung_scores(promotion.results),
            seconds=time.monotonic() - promotion.started,
            finished_at=time.time(),
        )
        self.run_dir.append_rung(record)  # durable before it counts
        del self.promotions[promotion.id, promotion.rung]
        self._remember_rung(record)
        self.checkpoint()
        self._write_claims()

    def _finish_as_copy(self, candidate: _Candidate, status: Status, same_as: int) -> None:
        original = self.by_id.get(same_as)
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
        self._remember(record)
        self._tell_algorithm(record)
        self.stats.candidates += 1
        if status in EVALUATED:
            self.stats.evaluations += 1
        self.checkpoint()
        if status in EVALUATED:
            self._write_claims()

    def _write_claims(self) -> None:
        """``best/`` and ``noise.json`` from every result so far; the noise into the progress line."""
        self.claims = make_claims(self.records, self.rung_records, self.objectives, self.fidelity)
        write_results(self.run_dir, self.claims)
        self.stats.noise = {n: e.sd for n, e in self.claims.noise.items() if e.sd is not None}

    def _remember(self, record: CandidateRecord) -> None:
        """Index a finished record for deduplication and statistics. Only a record with a result of its
        own stands for its structure: not an inconclusive one (no result), nor a duplicate (its original
        stands, or, if that was inconclusive, nothing does), so a resumed run dedupes as the live one.
        An inconclusive probe may have computed a fingerprint before its budget ran out: that record
        stands for no function either.

        A record trained on its own enters the funnel at rung 0 (a seed of the run as a reference),
        and its runs are kept for higher rungs to reuse."""
        self.records.append(record)
        self.by_id[record.id] = record
        if record.status in EVALUATED and record.scores is not None:
            self.funnel.add_result(record.id, 0, record.scores, reference=record.origin == "seed")
            self._remember_runs(record.id, record.tasks)
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

    def _remember_rung(self, record: RungRecord) -> None:
        """A rung's result, into the funnel; its new runs kept for higher rungs to reuse."""
        if record.id not in self.by_id:  # its candidate's record was set aside as damaged
            return
        self.rung_records.append(record)
        self.funnel.add_result(record.id, record.rung, record.scores)
        self._remember_runs(record.id, trained_runs(record.tasks))

    def _remember_runs(self, candidate_id: int, entries: list[dict[str, Any]]) -> None:
        for entry in entries:
            run = self._run_of(entry)
            if run is not None:
                self.runs_done[candidate_id, run] = entry
                self.stats.train_steps += int(entry.get("steps") or 0)

    def _run_of(self, entry: dict[str, Any]) -> _Run | None:
        """Which run a training record is; None for a task not among the run's objectives."""
        if entry.get("task") not in self.objectives:
            return None
        return _Run(self.objectives.index(entry["task"]), *run_fidelity(entry))

    def _tell_algorithm(self, record: CandidateRecord) -> None:
        if record.status is Status.REJECTED or record.scores is None:
            self.algorithm.discard(record.id)
        elif record.status is Status.FAILED and all(s == WORST_SCORE for s in record.scores):
            self.algorithm.observe(record.id, None)
        else:
            self.algorithm.observe(record.id, record.scores)

    def _update_stats(self) -> None:
        self.stats.in_flight = self._busy()
        self.stats.training = sum(1 for _, _, run, _ in self.refs.values() if run is not None)
        self.stats.rungs = self.funnel.counts()
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
    load_transfer_tasks(config)
    driver = SearchDriver(config, tasks, objectives, progress)
    owns_ray = start_ray(config)  # before anything is written: a cluster out of reach leaves no trace
    transferred = None
    try:
        run_dir.write_config(config)
        run_dir.write_tasks(tasks, objectives)
        if resume:
            driver.restore(rebuild)
            progress.log(f"resuming {run_dir.path}: {driver.stats.candidates} candidates done")
        finished = driver.run()
        driver._update_stats()
        progress.close(driver.stats)
        if finished:
            transferred = transfer(run_dir.path, log=lambda line: progress.log(f"transfer: {line}"))
    finally:
        if owns_ray:
            ray.shutdown()
    return SearchSummary(
        str(run_dir.path), not finished, driver.stats, driver.claims, objectives, transferred
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
