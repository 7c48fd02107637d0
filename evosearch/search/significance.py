"""Is a layer better than another, or only luckier? The statistics behind the labels of confirmed claims.

A layer's score on an objective is its accuracy averaged over training seeds (each seed changes the
initialization and the data order). :func:`compare` labels a candidate against a reference layer:

- *better*: a one-sided Welch t-test (unequal variances) finds the candidate's mean higher at p < alpha;
- *worse*: the opposite one-sided test finds it lower at p < alpha;
- *within noise*: neither, so the data cannot tell the two apart (which is not evidence that they tie);
- *untested*: a side has fewer than ``min_seeds`` accuracies, too few to estimate its spread.

Each direction is tested at ``alpha`` (0.05 by default): between two equal layers, *better* and *worse*
each appear about 5% of the time.

How little three seeds can see: with a sample sd of 0.015 on both sides and 3 seeds each, Welch's test
has 4 degrees of freedom and the means must differ by about 0.026 (1.74 sd: t(0.95, 4) = 2.13 times the
standard error 0.015 * sqrt(2/3)) for p < 0.05; with 5 seeds each about 0.018. A true difference of 0.026
is therefore labelled *better* only about half the time; about 0.041 (2.7 sd) is needed for four times in
five (simulated with normal noise). The gaps between the top layers of a run are often 0.01-0.03, so
most of them end *within noise*, as they should.

:func:`pooled_noise` estimates an objective's seed-to-seed sd from every layer trained with several
seeds; :func:`binomial_sd` is the part of it that a finite validation split alone contributes.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from evosearch.errors import EvosearchError, brief
from evosearch.outcomes import _Spelled

DEFAULT_ALPHA = 0.05
DEFAULT_MIN_SEEDS = 3


class Verdict(_Spelled):
    """How a candidate compares with a reference layer; stored as these exact strings."""

    BETTER = "better"
    WORSE = "worse"
    WITHIN_NOISE = "within noise"
    UNTESTED = "untested"


@dataclass(frozen=True)
class Comparison:
    """A candidate against a reference: the label and the evidence behind it."""

    verdict: Verdict
    difference: float  # mean(candidate) - mean(reference)
    # The one-sided p-value of the direction that decided: of "higher" for better, of "lower" for worse,
    # the smaller of the two for within noise; None when untested.
    p_value: float | None
    n: tuple[int, int]  # accuracies of the candidate and of the reference

    def to_json(self) -> dict[str, Any]:
        return {
            "verdict": str(self.verdict),
            "difference": self.difference,
            "p_value": self.p_value,
            "n": list(self.n),
        }


@dataclass(frozen=True)
class NoiseEstimate:
    """An objective's seed-to-seed sd, pooled over the layers trained with several training seeds."""

    sd: float | None  # None until some layer has two accuracies
    dof: int  # degrees of freedom: the sum over layers of (accuracies - 1)
    layers: int  # the layers that contributed

    def to_json(self) -> dict[str, Any]:
        return {"sd": self.sd, "dof": self.dof, "layers": self.layers}


def describe_test(alpha: float = DEFAULT_ALPHA, min_seeds: int = DEFAULT_MIN_SEEDS) -> str:
    """One sentence naming the test behind the labels, for tables and docs."""
    return (
        f"better / worse: a one-sided Welch t-test finds the mean accuracy over training seeds "
        f"higher / lower at p < {alpha:g} (at least {min_seeds} seeds per layer); within noise otherwise"
    )


TEST_DESCRIPTION = describe_test()


def compare(
    a: Sequence[float],
    b: Sequence[float],
    *,
    alpha: float = DEFAULT_ALPHA,
    min_seeds: int = DEFAULT_MIN_SEEDS,
) -> Comparison:
    """Label candidate accuracies ``a`` (one per training seed) against a reference layer's ``b``."""
    # Above 0.5 both directions could be significant at once.
    if not isinstance(alpha, numbers.Real) or not 0 < alpha <= 0.5:
        raise EvosearchError(f"alpha must be in (0, 0.5]; got {brief(alpha)}")
    if not isinstance(min_seeds, int) or min_seeds < 2:
        raise EvosearchError(f"min_seeds must be an integer of at least 2; got {brief(min_seeds)}")
    mean_a, sd_a = mean_sd(a)
    mean_b, sd_b = mean_sd(b)
    n = (len(a), len(b))
    difference = mean_a - mean_b
    if min(n) < min_seeds:
        return Comparison(Verdict.UNTESTED, difference, None, n)
    if sd_a == sd_b == 0.0:
        # Welch's statistic is 0/0. Two constant sides are deterministic evidence: layers that both sat
        # at chance on every seed tie; otherwise the difference is certain.
        if difference == 0.0:
            return Comparison(Verdict.WITHIN_NOISE, difference, 0.5, n)  # what a zero t gives
        return Comparison(Verdict.BETTER if difference > 0 else Verdict.WORSE, difference, 0.0, n)
    # Imported here: scipy.stats takes most of a second to import, and `import evosearch.search` should not
    # pay it where nothing is compared. From the summary statistics rather than the values so that a
    # constant side's sd is exactly 0 (mean_sd), not a rounding residue that scipy warns about.
    from scipy.stats import ttest_ind_from_stats

    summary = (mean_a, sd_a, n[0], mean_b, sd_b, n[1])
    p_higher, p_lower = (
        float(ttest_ind_from_stats(*summary, equal_var=False, alternative=side).pvalue)
        for side in ("greater", "less")
    )
    if p_higher < alpha:
        return Comparison(Verdict.BETTER, difference, p_higher, n)
    if p_lower < alpha:
        return Comparison(Verdict.WORSE, difference, p_lower, n)
    return Comparison(Verdict.WITHIN_NOISE, difference, min(p_higher, p_lower), n)


def mean_sd(values: Sequence[float]) -> tuple[float, float | None]:
    """The mean and the sample sd (ddof=1; None for one value) of accuracies over training seeds.

    Values that are all equal give that value and 0.0 exactly (numpy's mean of [0.1, 0.1, 0.1] is
    0.10000000000000002), so that two layers that scored the same on every seed compare as equal.
    """
    x = _finite(values, "accuracies")
    if x.size == 0:
        raise EvosearchError("no accuracies: a mean needs at least one")
    if x.min() == x.max():
        return float(x[0]), (0.0 if len(x) > 1 else None)
    return float(x.mean()), float(x.std(ddof=1))


def pooled_noise(groups: Iterable[Sequence[float]]) -> NoiseEstimate:
    """The seed-to-seed sd of an objective, from groups of accuracies of one layer each.

    Each group is centred on its own mean, so differences between layers do not count as noise: the
    pooled variance is the sum of squared deviations over the sum of (n_i - 1). Groups of fewer than two
    accuracies carry no information on the spread and are skipped.
    """
    squares, dof, layers = 0.0, 0, 0
    for index, group in enumerate(groups):
        x = _finite(group, f"accuracies of group {index}")
        if x.size < 2:
            continue
        squares += float(((x - x.mean()) ** 2).sum())
        dof += len(x) - 1
        layers += 1
    return NoiseEstimate(math.sqrt(squares / dof) if dof else None, dof, layers)


def binomial_sd(accuracy: float, n: int) -> float:
    """The sd of an accuracy measured on ``n`` validation examples from the split's finite size alone:
    sqrt(p(1 - p) / n), 0.020 at 70% on 500 examples."""
    if not isinstance(accuracy, numbers.Real) or not 0.0 <= accuracy <= 1.0:
        raise EvosearchError(f"an accuracy must be a number in [0, 1]; got {brief(accuracy)}")
    if not isinstance(n, numbers.Integral) or n < 1:
        raise EvosearchError(f"the number of validation examples must be a positive integer; got {brief(n)}")
    return math.sqrt(accuracy * (1.0 - accuracy) / n)


def _finite(values: Sequence[float], what: str) -> np.ndarray:
    """``values`` as a float array, or one clear error: a NaN would silently turn every label into
    within noise, and a string would be parsed by numpy as a number."""
    if isinstance(values, (str, bytes)) or not all(isinstance(v, numbers.Real) for v in values):
        raise EvosearchError(f"{what} must be a sequence of numbers; got {brief(values)}")
    x = np.asarray(values, dtype=np.float64)
    if not np.isfinite(x).all():
        raise EvosearchError(f"{what} must be finite; got {brief(values)}")
    return x
