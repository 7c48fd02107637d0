"""The search-algorithm contract: all that the driver asks of a search algorithm.

A searcher decides *what* to evaluate next. The driver (:mod:`evosearch.runner.driver`) owns the
rest — Ray, workers, probes, training, retries, time limits, concurrency, deduplication — so a
searcher imports neither Ray nor torch and is tested by calling it. The conversation:

- :meth:`Searcher.suggest` hands out a :class:`Proposal`: a graph, a fresh id, and how it was made.
  It never blocks and never runs out; the driver decides how many proposals are in flight.
- Every proposal handed out gets exactly one answer, in any order: :meth:`Searcher.observe` with its K
  objective scores (higher is better) once it was evaluated, or ``None`` when the evaluation failed
  (it then scores :data:`WORST_SCORE` on every objective); or :meth:`Searcher.discard` when it was
  never evaluated (rejected by the probes, a duplicate of another candidate). Answering an id that is
  not pending is an :class:`~evosearch.errors.EvosearchError`, and changes nothing.
- :attr:`Searcher.pending`: the proposals handed out and not answered yet, read-only, in id order.
- :meth:`Searcher.state_dict` / :meth:`Searcher.load_state_dict`: the whole state as plain JSON data.
  A searcher built with the same arguments and loaded with a state continues exactly as the one that
  saved it: the same pending proposals, then the same suggestions. The driver checkpoints the state
  after every suggestion and every answer, so a run resumes with nothing lost and nothing repeated.

Ids belong to the searcher: it numbers its proposals 0, 1, 2, ... in the order it hands them out, and
the run's records use these numbers as the candidates' ids. The next id is part of the state, so a
resumed run continues the numbering. Where the saved state is lost, the driver rebuilds one from the
run's records: :meth:`Searcher.resume_numbering` past every recorded id, then each record's proposal
taken back (:meth:`Searcher.adopt`) and answered as it was, in the order it was.

A new algorithm subclasses :class:`Searcher`, which keeps the ids, the pending proposals and the
random generator, and implements :meth:`~Searcher._propose` (the next candidate),
:meth:`~Searcher._learn` (an evaluated candidate's scores), and :meth:`~Searcher._algorithm_state` /
:meth:`~Searcher._load_algorithm_state` (its own state, such as a population: all four are abstract,
so exact resume is never left to chance). Everything random must come from :attr:`Searcher.rng`,
which the state restores. Settings of its own it reads from the run config's ``search`` section in
:meth:`~Searcher.create`. Then it is registered by name in :data:`evosearch.search.SEARCHERS`, and
``search.algorithm`` in a run config selects it.
"""

from __future__ import annotations

import abc
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from evosearch.errors import EvosearchError
from evosearch.layers.graph import LayerGraph
from evosearch.layers.graph_io import graph_from_dict, graph_to_dict
from evosearch.search.mutation import Mutation, SearchSpace, random_graph

WORST_SCORE = 0.0  # objectives are accuracies in [0, 1]; a failed evaluation scores this on each


@dataclass(frozen=True)
class Proposal:
    """A candidate to evaluate: where it came from and how."""

    id: int
    graph: LayerGraph
    origin: str  # seed, seed_mutation, random, mutation
    parent: int | None = None
    mutation: Mutation | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "origin": self.origin,
            "parent": self.parent,
            "mutation": None if self.mutation is None else vars(self.mutation),
            "graph": graph_to_dict(self.graph),
        }

    @staticmethod
    def from_json(data: dict[str, Any]) -> Proposal:
        mutation = data.get("mutation")
        return Proposal(
            id=data["id"],
            graph=graph_from_dict(data["graph"]),
            origin=data["origin"],
            parent=data.get("parent"),
            mutation=None if mutation is None else Mutation(**mutation),
        )


class Searcher(abc.ABC):
    """A search algorithm over layer graphs in ``space``, starting from ``seeds``; see the module
    docstring for the contract. ``seed`` seeds :attr:`rng`, the only source of randomness."""

    def __init__(
        self, space: SearchSpace, seeds: Sequence[LayerGraph], num_objectives: int, seed: int = 0
    ) -> None:
        if num_objectives < 1:
            raise EvosearchError("at least one objective is needed")
        self.space = space
        self.seeds = list(seeds)
        self.num_objectives = num_objectives
        self.rng = random.Random(seed)
        self.next_id = 0
        self._pending: dict[int, Proposal] = {}

    @classmethod
    def create(
        cls,
        space: SearchSpace,
        seeds: Sequence[LayerGraph],
        num_objectives: int,
        seed: int = 0,
        settings: Mapping[str, Any] | None = None,
    ) -> Searcher:
        """Build from a run config's ``search`` section (``settings``): each algorithm reads the keys
        it has a use for. By default it has none."""
        return cls(space, seeds, num_objectives, seed)

    # ---- the contract ---------------------------------------------------------------------------

    def suggest(self) -> Proposal:
        """The next candidate to evaluate, numbered with the next id; pending until answered."""
        proposal = self._propose(self.next_id)
        self.next_id += 1
        self._pending[proposal.id] = proposal
        return proposal

    def observe(self, proposal_id: int, scores: Sequence[float] | None) -> None:
        """An evaluated candidate's K scores (higher is better), or None for a failed evaluation."""
        proposal = self._pending_proposal(proposal_id)
        if scores is None:
            scores = (WORST_SCORE,) * self.num_objectives
        if len(scores) != self.num_objectives:
            raise EvosearchError(f"expected {self.num_objectives} scores, got {len(scores)}")
        del self._pending[proposal_id]
        self._learn(proposal, tuple(float(s) for s in scores))

    def discard(self, proposal_id: int) -> None:
        """A candidate never evaluated (rejected by the probes, a duplicate): the search learns nothing."""
        self._pending_proposal(proposal_id)
        del self._pending[proposal_id]

    def resume_numbering(self, next_id: int) -> None:
        """Number the next proposal ``next_id``, for a state rebuilt where the saved one is lost: the
        run's records hold ids up to ``next_id - 1``, and an id is never handed out twice. The saved
        generator is lost too; it starts again from one drawn from the seed and ``next_id``, so the
        rebuilt search does not replay the draws the run began with, and two rebuilds of the same
        records continue alike."""
        if next_id < self.next_id:
            raise EvosearchError(f"ids up to {self.next_id - 1} are handed out; cannot number from {next_id}")
        self.next_id = next_id
        self.rng.seed(self.rng.getrandbits(64) + next_id)

    def adopt(self, proposal: Proposal) -> None:
        """Take back ``proposal``, handed out before the saved state was lost, as pending: its answer
        (:meth:`observe`, :meth:`discard`) then teaches the algorithm what the first one did, so that
        the run's records, answered again in their order, rebuild what it learnt (a population)."""
        if proposal.id >= self.next_id or proposal.id in self._pending:
            raise EvosearchError(f"proposal {proposal.id} was not handed out, or is pending already")
        self._pending = dict(sorted({**self._pending, proposal.id: proposal}.items()))

    @property
    def pending(self) -> Mapping[int, Proposal]:
        """The proposals handed out and not answered yet, by id, in id order (read-only)."""
        return MappingProxyType(self._pending)

    def state_dict(self) -> dict[str, Any]:
        version, internal, gauss = self.rng.getstate()
        return {
            "next_id": self.next_id,
            "rng": [version, list(internal), gauss],
            "pending": [p.to_json() for p in self._pending.values()],
            **self._algorithm_state(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        version, internal, gauss = state["rng"]
        self.rng.setstate((version, tuple(internal), gauss))
        self.next_id = state["next_id"]
        proposals = sorted((Proposal.from_json(p) for p in state["pending"]), key=lambda p: p.id)
        self._pending = {p.id: p for p in proposals}
        self._load_algorithm_state(state)

    # ---- what an algorithm implements -----------------------------------------------------------

    @abc.abstractmethod
    def _propose(self, proposal_id: int) -> Proposal:
        """The next candidate, numbered ``proposal_id``."""

    @abc.abstractmethod
    def _learn(self, proposal: Proposal, scores: tuple[float, ...]) -> None:
        """What the algorithm makes of an evaluated candidate's scores (K of them, failures worst)."""

    @abc.abstractmethod
    def _algorithm_state(self) -> dict[str, Any]:
        """State beyond the ids, the pending proposals and the generator (which the base class keeps),
        as JSON data under keys of the algorithm's own."""

    @abc.abstractmethod
    def _load_algorithm_state(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`_algorithm_state` saved (``state`` is the whole state dict)."""

    # ---- helpers --------------------------------------------------------------------------------

    def _pending_proposal(self, proposal_id: int) -> Proposal:
        try:
            return self._pending[proposal_id]
        except KeyError:
            raise EvosearchError(f"proposal {proposal_id} is not pending") from None

    @staticmethod
    def _candidate_name(proposal_id: int) -> str:
        return f"candidate_{proposal_id}"

    def _random_graph(self, proposal_id: int) -> LayerGraph:
        return random_graph(self.rng, self.space, name=self._candidate_name(proposal_id))
