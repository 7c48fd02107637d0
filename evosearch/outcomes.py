"""How an evaluation ends and what a candidate's record says: the vocabulary of results, in one place.

A training on one proxy task ends with an :class:`ExitReason`, written by the training itself
(:class:`~evosearch.tasks.train.TrainResult`) or, where the worker could not return a result, by the
runner (:func:`~evosearch.runner.workers.training_result`, which may add details after ``": "``, as in
``"error: ValueError: ..."``). The driver turns a candidate's exit reasons into its record's
:class:`Status` (:func:`candidate_status`). Both are stored as these exact strings in ``events.jsonl``
and ``rerank/*.json``: a value may be added, never respelled, or old runs stop reading.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable


class _Spelled(str, enum.Enum):
    """A string enum that prints as its value (what Python 3.11's ``StrEnum`` does; 3.10 has none), so
    that f-strings and tables show ``completed``, not ``ExitReason.COMPLETED``."""

    def __str__(self) -> str:
        return self.value


class ExitReason(_Spelled):
    """How one training on one task ended."""

    COMPLETED = "completed"  # every step ran; evaluated on the whole validation split
    TIME_LIMIT = "time_limit"  # stopped at train.time_limit_s and still evaluated: the accuracy counts
    QUALITY_HURDLE = "quality_hurdle"  # below train.hurdle_accuracy at train.hurdle_step: stopped early
    NON_FINITE_LOSS = "non_finite_loss"  # the loss became NaN or infinite: the layer diverged
    ERROR = "error"  # the layer failed to compile or crashed in forward/backward, or the worker raised
    TIMEOUT = "timeout"  # cancelled by the runner after resources.evaluation_timeout_s
    CANCELLED = "cancelled"  # cancelled for another reason (the driver stopping)
    OUT_OF_MEMORY = "out_of_memory"  # host or device memory ran out, on every retry
    WORKER_CRASHED = "worker_crashed"  # the worker process or its node died, on every retry
    DEVICE_ERROR = "device_error"  # a CUDA error, on every retry in a new process


class Status(_Spelled):
    """What became of a candidate: one per record in ``events.jsonl``."""

    TRAINED = "trained"  # every proxy task ran to the end (completed or time limit)
    HURDLE = "hurdle"  # stopped by the quality hurdle on some task: scores worst there
    FAILED = "failed"  # an evaluation crashed, timed out, or diverged
    REJECTED = "rejected"  # the at-initialization probes said no; never trained
    DUPLICATE = "duplicate"  # same structure as an earlier candidate: its result reused
    EQUIVALENT = "equivalent"  # same function (fingerprint) as an earlier candidate: its result reused
    # The probes gave no verdict on any try (out of budget, or their worker died): never trained, no
    # reject either; the same structure proposed again is probed again.
    INCONCLUSIVE = "inconclusive"


# A training that ended so has a final top-1 accuracy that counts as the task's score.
TRAINED_EXITS = frozenset({ExitReason.COMPLETED, ExitReason.TIME_LIMIT})
# Records whose training ran: they spend the search's evaluation budget.
EVALUATED = frozenset({Status.TRAINED, Status.HURDLE, Status.FAILED})
# Records with scores that rank: they can enter the population's front and the run's best layers.
SCORED = frozenset({Status.TRAINED, Status.HURDLE})


def candidate_status(exits: Iterable[str]) -> Status:
    """A trained candidate's status from how its training on each task ended: trained where every
    accuracy counts; hurdle where the others stopped at the quality hurdle; failed otherwise."""
    exits = list(exits)
    if all(e in TRAINED_EXITS for e in exits):
        return Status.TRAINED
    if all(e in TRAINED_EXITS or e == ExitReason.QUALITY_HURDLE for e in exits):
        return Status.HURDLE
    return Status.FAILED
