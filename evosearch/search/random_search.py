"""Random search: the baseline any search algorithm has to beat.

A :class:`~evosearch.search.searcher.Searcher` that proposes the seeds first — so the run has its
reference layers, scored on the same tasks as everything else — and then independent random graphs
from the search space, forever. Results change nothing: there is no population and nothing is
mutated, so its state is only the random generator, the next id and the pending proposals.
"""

from __future__ import annotations

from typing import Any

from evosearch.search.searcher import Proposal, Searcher


class RandomSearch(Searcher):
    """The seeds, then random graphs over the search space; see the module docstring."""

    def _propose(self, proposal_id: int) -> Proposal:
        if proposal_id < len(self.seeds):
            return Proposal(proposal_id, self.seeds[proposal_id], "seed")
        return Proposal(proposal_id, self._random_graph(proposal_id), "random")

    def _learn(self, proposal: Proposal, scores: tuple[float, ...]) -> None:
        """Nothing: the next random graph does not depend on how the last ones scored."""

    def _algorithm_state(self) -> dict[str, Any]:
        return {}  # nothing beyond the generator, the next id and the pending proposals

    def _load_algorithm_state(self, state: dict[str, Any]) -> None:
        """Nothing to restore: see :meth:`_algorithm_state`."""
