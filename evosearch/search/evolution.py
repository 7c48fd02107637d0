"""Asynchronous regularized (aging) evolution over layer graphs, multi-objective.

A :class:`~evosearch.search.searcher.Searcher` (the contract: suggest, observe, discard, pending,
state). A trained candidate joins the population with its K scores, a failed one with the worst
scores; a discarded one (rejected before training, or a duplicate) never becomes a parent.

- Initial proposals: the seeds, then mutations of seeds, then random graphs (counts in the settings).
- Then steady state: sample ``tournament_size`` members at random; the parent is drawn uniformly from
  the Pareto front of the sample over the K scores (EvoNorm's multi-objective tournament); the child
  is a mutation of the parent. No generation barrier: every call returns a new proposal.
- Aging: a new member joins the population; beyond ``population_size``, the oldest leaves.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any

import moocore
import numpy as np

from evosearch.errors import EvosearchError
from evosearch.layers.graph import LayerGraph
from evosearch.layers.graph_io import graph_from_dict, graph_to_dict
from evosearch.search.mutation import MUTATIONS, Mutation, SearchSpace, mutate
from evosearch.search.searcher import Proposal, Searcher


@dataclass(frozen=True)
class EvolutionSettings:
    """The evolution's settings; the run config's ``search`` keys of the same names default to these."""

    population_size: int = 50
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
        weights = self.mutation_weights.values()
        if not all(0 <= w < math.inf for w in weights):  # NaN fails too: random.choices would misdraw
            raise EvosearchError("mutation weights must be >= 0 and finite")
        if unknown or not any(w > 0 for w in weights):
            raise EvosearchError(
                f"mutation weights: unknown {sorted(unknown)} or none positive; "
                f"mutations: {', '.join(MUTATIONS)}"
            )


@dataclass(frozen=True)
class Member:
    id: int
    graph: LayerGraph
    scores: tuple[float, ...]


class RegularizedEvolution(Searcher):
    """Steady-state aging evolution with a Pareto tournament; see the module docstring."""

    def __init__(
        self,
        settings: EvolutionSettings,
        space: SearchSpace,
        seeds: Sequence[LayerGraph],
        num_objectives: int,
        seed: int = 0,
    ) -> None:
        super().__init__(space, seeds, num_objectives, seed)
        self.settings = settings
        self.population: deque[Member] = deque()

    @classmethod
    def create(
        cls,
        space: SearchSpace,
        seeds: Sequence[LayerGraph],
        num_objectives: int,
        seed: int = 0,
        settings: Mapping[str, Any] | None = None,
    ) -> RegularizedEvolution:
        """Built from the ``settings`` keys that name :class:`EvolutionSettings` fields."""
        names = {f.name for f in fields(EvolutionSettings)}
        chosen = {key: value for key, value in (settings or {}).items() if key in names}
        return cls(EvolutionSettings(**chosen), space, seeds, num_objectives, seed)

    # ---- the algorithm --------------------------------------------------------------------------

    def _propose(self, proposal_id: int) -> Proposal:
        return self._initial_proposal(proposal_id) or self._child(proposal_id)

    def _learn(self, proposal: Proposal, scores: tuple[float, ...]) -> None:
        self.population.append(Member(proposal.id, proposal.graph, scores))
        while len(self.population) > self.settings.population_size:
            self.population.popleft()  # aging: the oldest leaves, however good

    def _algorithm_state(self) -> dict[str, Any]:
        return {
            "population": [
                {"id": m.id, "scores": list(m.scores), "graph": graph_to_dict(m.graph)}
                for m in self.population
            ]
        }

    def _load_algorithm_state(self, state: dict[str, Any]) -> None:
        self.population = deque(
            Member(m["id"], graph_from_dict(m["graph"]), tuple(m["scores"])) for m in state["population"]
        )

    # ---- internals ------------------------------------------------------------------------------

    def _initial_proposal(self, proposal_id: int) -> Proposal | None:
        k = proposal_id
        if k < len(self.seeds):
            return Proposal(proposal_id, self.seeds[k], "seed")
        k -= len(self.seeds)
        if k < self.settings.seed_mutations and self.seeds:
            parent = self.rng.randrange(len(self.seeds))
            graph, mutation = self._mutate(self.seeds[parent], proposal_id)
            return Proposal(proposal_id, graph, "seed_mutation", mutation=mutation)
        k -= self.settings.seed_mutations
        if k < self.settings.random_graphs:
            return Proposal(proposal_id, self._random_graph(proposal_id), "random")
        return None

    def _child(self, proposal_id: int) -> Proposal:
        if not self.population:  # nothing observed yet (all in flight or failed): keep exploring
            return Proposal(proposal_id, self._random_graph(proposal_id), "random")
        parent = self._tournament()
        graph, mutation = self._mutate(parent.graph, proposal_id)
        return Proposal(proposal_id, graph, "mutation", parent=parent.id, mutation=mutation)

    def _tournament(self) -> Member:
        size = min(self.settings.tournament_size, len(self.population))
        sample = self.rng.sample(list(self.population), size)
        scores = np.array([m.scores for m in sample], dtype=float)
        front = np.flatnonzero(moocore.is_nondominated(scores, maximise=True, keep_weakly=True))
        return sample[int(front[self.rng.randrange(len(front))])]

    def _mutate(self, graph: LayerGraph, proposal_id: int) -> tuple[LayerGraph, Mutation]:
        weights = [self.settings.mutation_weights.get(k, 0.0) for k in MUTATIONS]
        child, mutation = mutate(graph, self.rng, self.space, MUTATIONS, weights)
        child.name = self._candidate_name(proposal_id)
        return child, mutation
