"""Search algorithms over layer graphs: what to evaluate next. No torch, no Ray.

- :mod:`.searcher`: the contract every algorithm implements (suggest, observe, discard, pending, state).
- :mod:`.evolution`: regularized (aging) evolution with a Pareto tournament.
- :mod:`.random_search`: the seeds, then random graphs: the baseline.
- :mod:`.mutation`: the search space, mutation operators and random graphs.

:data:`SEARCHERS` names the algorithms a run config's ``search.algorithm`` may select.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from evosearch.errors import EvosearchError, brief
from evosearch.layers.graph import LayerGraph
from evosearch.search.evolution import EvolutionSettings, RegularizedEvolution
from evosearch.search.mutation import SearchSpace
from evosearch.search.random_search import RandomSearch
from evosearch.search.searcher import WORST_SCORE, Proposal, Searcher

__all__ = [
    "SEARCHERS",
    "WORST_SCORE",
    "EvolutionSettings",
    "Proposal",
    "RandomSearch",
    "RegularizedEvolution",
    "Searcher",
    "create_searcher",
    "searcher_class",
]

SEARCHERS: dict[str, type[Searcher]] = {"evolution": RegularizedEvolution, "random": RandomSearch}


def searcher_class(name: str) -> type[Searcher]:
    try:
        return SEARCHERS[name]
    except KeyError:
        raise EvosearchError(
            f"unknown search algorithm {brief(name)}; algorithms: {', '.join(SEARCHERS)}"
        ) from None


def create_searcher(
    name: str,
    space: SearchSpace,
    seeds: Sequence[LayerGraph],
    num_objectives: int,
    seed: int = 0,
    settings: Mapping[str, Any] | None = None,
) -> Searcher:
    """The algorithm registered as ``name``, built from a run config's ``search`` section (``settings``)."""
    return searcher_class(name).create(space, seeds, num_objectives, seed, settings)
