"""The multi-fidelity funnel: asynchronous successive halving (ASHA, Li et al. 2020) over rungs.

The searcher decides *what* to evaluate; the funnel decides *how much*. Every candidate that passes
the probes is trained at the cheapest rung, rung 0. A rung is a training budget: a fraction of each
task's steps and a number of training seeds (:class:`Rung`); the last rung, with three seeds or more,
confirms. Whenever a worker is free, the driver asks :meth:`Funnel.next_promotion` before it asks the
searcher for a new candidate, and the funnel answers, from the highest rung down, a candidate that is

- among the best ``1/eta`` of all candidates that have completed its rung so far (ranked by Pareto
  rank over the objectives, then by mean score: :func:`rank_results`), and not promoted yet; or
- a reference layer (a seed of the run): references go through every rung, even where they fail a
  short one, since the seeds' spread over training seeds is the run's noise estimate and every
  claim is made against them.

No barrier: a rung's ranking is the one at the moment of asking, so a few candidates go on that a
synchronous funnel would have stopped, which costs little (ASHA's finding). Candidates are compared
only on results of the same rung: the searcher learns from rung 0, which every candidate has, and
the run's best layers are those of the top rung.

When the search stops taking new candidates, :meth:`Funnel.leader_promotion` takes the best
candidate of each rung on, one rung at a time, so that a run ends with its leader confirmed however
few candidates it had (``floor(n / eta)`` is 0 for fewer than ``eta``).

State: the results come from the run's records, which are durable before they count; the funnel's
own state is the set of promotions it decided (:meth:`state_dict`). A promotion decided but with no
result yet is in flight: a resumed run trains it again (:attr:`Funnel.in_flight`).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import moocore
import numpy as np

from evosearch.errors import EvosearchError
from evosearch.search.searcher import WORST_SCORE


@dataclass(frozen=True)
class Rung:
    """One fidelity: ``steps``, a fraction of each task's ``train.steps`` (its warm-up and hurdle step
    scaled alike), and ``seeds`` training seeds, ``train.seed + 0, 1, ...``; the rung's score on a
    task is the mean over them. A training run of a lower rung with the same steps and seed counts
    again here: it is not repeated."""

    steps: float = 1.0
    seeds: int = 1

    def __post_init__(self) -> None:
        if not 0 < self.steps <= 1 or self.seeds < 1:
            raise ValueError(f"a rung needs 0 < steps <= 1 and seeds >= 1, got {self}")

    def runs(self) -> list[tuple[float, int]]:
        """The (steps fraction, seed offset) of each training run of this rung, on every task."""
        return [(self.steps, seed) for seed in range(self.seeds)]


def _default_rungs() -> list[Rung]:
    return [Rung(steps=0.34), Rung(steps=1.0), Rung(steps=1.0, seeds=3)]


@dataclass(frozen=True)
class FidelitySettings:
    """The funnel: ``rungs`` cheapest first, and ``eta``, the reduction factor (the best 1/eta of a
    rung go on). One rung is single-fidelity search. A claim of better or worse needs the top rung to
    train ``min_confirm_seeds`` seeds or more (:mod:`evosearch.search.significance`)."""

    rungs: list[Rung] = field(default_factory=_default_rungs)
    eta: int = 3

    def __post_init__(self) -> None:
        if not self.rungs:
            raise ValueError("the funnel needs at least one rung")
        if self.eta < 2:
            raise ValueError(f"eta must be at least 2, got {self.eta}")
        budgets = [(r.steps, r.seeds) for r in self.rungs]
        climbing = all(a[0] <= b[0] and a[1] <= b[1] and a != b for a, b in itertools.pairwise(budgets))
        if not climbing:
            raise ValueError(
                "each rung must train at least as many steps and seeds as the one below, and more of one"
            )

    @property
    def top(self) -> int:
        return len(self.rungs) - 1


def rank_results(results: dict[int, Sequence[float]]) -> list[int]:
    """Candidate ids best first: by Pareto rank over the objectives (every objective higher is
    better), then by mean score, then by id (older first)."""
    if not results:
        return []
    ids = list(results)
    scores = np.array([results[i] for i in ids], dtype=float)
    ranks = moocore.pareto_rank(scores, maximise=True)
    order = sorted(range(len(ids)), key=lambda k: (int(ranks[k]), -float(np.mean(scores[k])), ids[k]))
    return [ids[k] for k in order]


def _failed(scores: Sequence[float]) -> bool:
    return all(s == WORST_SCORE for s in scores)


class Funnel:
    """Which candidate goes on to which rung; see the module docstring. ``references``: the ids of
    the run's seed layers, which go through every rung."""

    def __init__(self, settings: FidelitySettings) -> None:
        self.settings = settings
        self.results: list[dict[int, tuple[float, ...]]] = [{} for _ in settings.rungs]
        self.promoted: set[tuple[int, int]] = set()  # (id, rung it was promoted to)
        self.references: set[int] = set()

    # ---- what happened --------------------------------------------------------------------------

    def add_result(
        self, candidate_id: int, rung: int, scores: Sequence[float], reference: bool = False
    ) -> None:
        """A candidate's scores at ``rung`` (the mean over the rung's seeds, per objective)."""
        if not 0 <= rung <= self.settings.top:
            raise EvosearchError(f"rung {rung} does not exist: the funnel has {len(self.settings.rungs)}")
        if rung > 0 and (candidate_id, rung) not in self.promoted:
            self.promoted.add((candidate_id, rung))  # a result there means it was promoted
        self.results[rung][candidate_id] = tuple(float(s) for s in scores)
        if reference:
            self.references.add(candidate_id)

    # ---- what to do next ------------------------------------------------------------------------

    def next_promotion(self) -> tuple[int, int] | None:
        """The next (candidate id, rung to train it at), from the highest rung down; None where no
        candidate may go on now. The promotion counts as decided: it is in flight until its result."""
        for rung in range(self.settings.top - 1, -1, -1):
            for candidate_id in self._promotable(rung):
                return self._promote(candidate_id, rung + 1)
        return None

    def leader_promotion(self) -> tuple[int, int] | None:
        """For a search that takes no new candidates: the best candidate of the lowest rung whose
        best has not gone on, promoted; None where every rung's best has (or nothing is left)."""
        for rung in range(self.settings.top):
            ranked = [i for i in rank_results(self.results[rung]) if not _failed(self.results[rung][i])]
            if ranked and (ranked[0], rung + 1) not in self.promoted:
                return self._promote(ranked[0], rung + 1)
        return None

    @property
    def in_flight(self) -> list[tuple[int, int]]:
        """Promotions decided whose result is not in yet, in the order of their ids and rungs."""
        return sorted((i, r) for i, r in self.promoted if i not in self.results[r])

    def counts(self) -> list[int]:
        """Candidates with a result at each rung."""
        return [len(results) for results in self.results]

    def _promotable(self, rung: int) -> Iterable[int]:
        results = self.results[rung]
        quota = math.floor(len(results) / self.settings.eta)
        top = rank_results(results)[:quota]
        going_on = [i for i in top if not _failed(results[i])]
        # A seed layer goes on even where it failed here: every claim is made against it.
        chosen = [*going_on, *sorted(self.references & set(results))]
        return (i for i in chosen if (i, rung + 1) not in self.promoted)

    def _promote(self, candidate_id: int, rung: int) -> tuple[int, int]:
        self.promoted.add((candidate_id, rung))
        return candidate_id, rung

    # ---- state ----------------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """The promotions decided; the results come back from the run's records."""
        return {"promoted": sorted([i, r] for i, r in self.promoted)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        promoted = {(int(i), int(r)) for i, r in state["promoted"]}
        if any(not 0 < r <= self.settings.top for _, r in promoted):
            raise EvosearchError("the funnel state names a rung this funnel does not have")
        self.promoted |= promoted
