"""Asynchronous regularized (aging) evolution over layer graphs, multi-objective.

The algorithm knows nothing of Ray, workers, probes or training: the driver asks it for a proposal
(:meth:`RegularizedEvolution.suggest`), runs the candidate, and reports back with :meth:`observe`
(trained: K objective scores, higher is better; failed: ``None``, which counts as worst) or
:meth:`discard` (rejected before training, or a duplicate: never becomes a parent). Its whole state is
plain data (:meth:`state_dict`), so a run resumes exactly where it stopped.

- Initial proposals: the seeds, then mutations of seeds, then random graphs (counts in config).
- Then steady state: sample ``tournament_size`` members at random; the parent is drawn uniformly from
  the Pareto front of the sample over the K scores (EvoNorm's multi-objective tournament); the child
  is a mutation of the parent. No generation barrier: every call returns a new proposal.
- Aging: a new member joins the population; beyond ``population_size``, the oldest leaves.
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import moocore
import numpy as np

from evosearch.errors import EvosearchError
from evosearch.layers.graph import LayerGraph
from evosearch.layers.graph_io import graph_from_dict, graph_to_dict
from evosearch.search.mutation import MUTATIONS, Mutation, SearchSpace, mutate, random_graph

WORST_SCORE = 0.0  # objectives are accuracies in [0, 1]; a failed evaluation scores this on each


@dataclass(frozen=True)
class EvolutionSettings:
    population_size: int = 100
    tournament_size: int = 10
    seed_mutations: int = 20  # initial proposals: mutations of randomly chosen seeds
    random_graphs: int = 20  # initial proposals: random graphs
    mutation_weights: dict[str, float] = field(default_factory=lambda: dict.fromkeys(MUTATIONS, 1.0))

    def __post_init__(self) -> None:
        if self.population_size < 2 or self.tournament_size < 1:
            raise EvosearchError("population_size must be >= 2 and tournament_size >= 1")
        if self.seed_mutations < 0 or self.random_graphs < 0:
            raise EvosearchError("seed_mutations and random_graphs must be >= 0")
        unknown = set(self.mutation_weights) - set(MUTATIONS)
        if unknown or not any(w > 0 for w in self.mutation_weights.values()):
            raise EvosearchError(
                f"mutation weights: unknown {sorted(unknown)} or none positive; "
                f"mutations: {', '.join(MUTATIONS)}"
            )


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


@dataclass(frozen=True)
class Member:
    id: int
    graph: LayerGraph
    scores: tuple[float, ...]


class RegularizedEvolution:
    """Steady-state aging evolution with a Pareto tournament; see the module docstring."""

    def __init__(
        self,
        settings: EvolutionSettings,
        space: SearchSpace,
        seeds: Sequence[LayerGraph],
        num_objectives: int,
        seed: int = 0,
    ):
        if num_objectives < 1:
            raise EvosearchError("at least one objective is needed")
        self.settings = settings
        self.space = space
        self.seeds = list(seeds)
        self.num_objectives = num_objectives
        self.rng = random.Random(seed)
        self.next_id = 0
        self.population: deque[Member] = deque()
        self.pending: dict[int, Proposal] = {}

    # ---- the contract ---------------------------------------------------------------------------

    def suggest(self) -> Proposal:
        proposal = self._initial_proposal() or self._child()
        self.next_id += 1
        self.pending[proposal.id] = proposal
        return proposal

    def observe(self, proposal_id: int, scores: Sequence[float] | None) -> None:
        """A trained candidate's K scores (higher is better), or None for a failed evaluation."""
        proposal = self._take(proposal_id)
        if scores is None:
            scores = (WORST_SCORE,) * self.num_objectives
        if len(scores) != self.num_objectives:
            raise EvosearchError(f"expected {self.num_objectives} scores, got {len(scores)}")
        self.population.append(Member(proposal.id, proposal.graph, tuple(float(s) for s in scores)))
        while len(self.population) > self.settings.population_size:
            self.population.popleft()  # aging: the oldest leaves, however good

    def discard(self, proposal_id: int) -> None:
        """A candidate rejected before training (probes, duplicate): it never becomes a parent."""
        self._take(proposal_id)

    # ---- state ----------------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        version, internal, gauss = self.rng.getstate()
        return {
            "next_id": self.next_id,
            "rng": [version, list(internal), gauss],
            "population": [
                {"id": m.id, "scores": list(m.scores), "graph": graph_to_dict(m.graph)}
                for m in self.population
            ],
            "pending": [p.to_json() for p in self.pending.values()],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        version, internal, gauss = state["rng"]
        self.rng.setstate((version, tuple(internal), gauss))
        self.next_id = state["next_id"]
        self.population = deque(
            Member(m["id"], graph_from_dict(m["graph"]), tuple(m["scores"])) for m in state["population"]
        )
        self.pending = {p["id"]: Proposal.from_json(p) for p in state["pending"]}

    # ---- internals ------------------------------------------------------------------------------

    def _take(self, proposal_id: int) -> Proposal:
        try:
            return self.pending.pop(proposal_id)
        except KeyError:
            raise EvosearchError(f"proposal {proposal_id} is not pending") from None

    def _initial_proposal(self) -> Proposal | None:
        k = self.next_id
        if k < len(self.seeds):
            return Proposal(k, self.seeds[k], "seed")
        k -= len(self.seeds)
        if k < self.settings.seed_mutations and self.seeds:
            parent = self.rng.randrange(len(self.seeds))
            graph, mutation = self._mutate(self.seeds[parent])
            return Proposal(self.next_id, graph, "seed_mutation", mutation=mutation)
        k -= self.settings.seed_mutations
        if k < self.settings.random_graphs:
            return Proposal(self.next_id, self._random(), "random")
        return None

    def _child(self) -> Proposal:
        if not self.population:  # nothing observed yet (all in flight or failed): keep exploring
            return Proposal(self.next_id, self._random(), "random")
        parent = self._tournament()
        graph, mutation = self._mutate(parent.graph)
        return Proposal(self.next_id, graph, "mutation", parent=parent.id, mutation=mutation)

    def _tournament(self) -> Member:
        size = min(self.settings.tournament_size, len(self.population))
        sample = self.rng.sample(list(self.population), size)
        scores = np.array([m.scores for m in sample], dtype=float)
        front = np.flatnonzero(moocore.is_nondominated(scores, maximise=True, keep_weakly=True))
        return sample[int(front[self.rng.randrange(len(front))])]

    def _mutate(self, graph: LayerGraph) -> tuple[LayerGraph, Mutation]:
        weights = [self.settings.mutation_weights.get(k, 0.0) for k in MUTATIONS]
        child, mutation = mutate(graph, self.rng, self.space, MUTATIONS, weights)
        child.name = f"candidate_{self.next_id}"
        return child, mutation

    def _random(self) -> LayerGraph:
        return random_graph(self.rng, self.space, name=f"candidate_{self.next_id}")
