"""The labels of confirmed claims (better / worse / within noise / untested) on constructed results, the
p-values against Welch's formula worked by hand, and the noise estimates against numpy."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import numpy as np
import pytest
from scipy import stats

from evosearch.errors import EvosearchError
from evosearch.search.significance import (
    TEST_DESCRIPTION,
    Comparison,
    NoiseEstimate,
    Verdict,
    binomial_sd,
    compare,
    mean_sd,
    pooled_noise,
)

HIGH = [0.80, 0.81, 0.82]
LOW = [0.70, 0.71, 0.69]


def test_a_clearly_higher_candidate_is_better_and_the_reverse_worse():
    better = compare(HIGH, LOW)
    assert better.verdict is Verdict.BETTER
    assert better.difference == pytest.approx(0.11)
    assert 0 < better.p_value < 0.001
    assert better.n == (3, 3)
    worse = compare(LOW, HIGH)
    assert worse.verdict is Verdict.WORSE
    assert worse.difference == pytest.approx(-0.11)
    assert worse.p_value == pytest.approx(better.p_value)  # the same evidence, the other direction


def test_overlapping_results_are_within_noise_with_the_smaller_one_sided_p():
    # The measured seeds: EvoNorm-B0 and BN-ReLU on generated_resnet, training seeds 1-4.
    b0, bn = [0.700, 0.720, 0.688, 0.694], [0.690, 0.712, 0.684, 0.656]
    result = compare(b0, bn)
    assert result.verdict is Verdict.WITHIN_NOISE
    assert result.difference > 0
    p_higher = stats.ttest_ind(b0, bn, equal_var=False, alternative="greater").pvalue
    assert result.p_value == pytest.approx(p_higher)
    assert 0.05 < result.p_value < 0.5


def test_p_value_equals_welchs_statistic_worked_by_hand():
    a, b = [0.71, 0.74, 0.70, 0.73], [0.69, 0.70, 0.68]
    n1, n2 = len(a), len(b)
    m1, m2 = sum(a) / n1, sum(b) / n2
    v1 = sum((x - m1) ** 2 for x in a) / (n1 - 1)  # sample variances
    v2 = sum((x - m2) ** 2 for x in b) / (n2 - 1)
    se1, se2 = v1 / n1, v2 / n2
    t = (m1 - m2) / math.sqrt(se1 + se2)  # Welch: t = (m1 - m2) / sqrt(v1/n1 + v2/n2)
    # Welch-Satterthwaite: dof = (v1/n1 + v2/n2)^2 / ((v1/n1)^2/(n1 - 1) + (v2/n2)^2/(n2 - 1))
    dof = (se1 + se2) ** 2 / (se1**2 / (n1 - 1) + se2**2 / (n2 - 1))
    p_higher = stats.t.sf(t, dof)  # one-sided: P(T >= t) for "a's mean is higher"
    result = compare(a, b)
    assert result.verdict is Verdict.BETTER
    assert result.p_value == pytest.approx(p_higher, rel=1e-9)
    assert result.difference == pytest.approx(m1 - m2)
    assert compare(b, a).p_value == pytest.approx(p_higher, rel=1e-9)


def test_alpha_sets_where_a_difference_becomes_a_claim():
    a, b = [0.71, 0.74, 0.70, 0.73], [0.69, 0.70, 0.68]
    p = compare(a, b).p_value
    assert compare(a, b, alpha=p * 1.01).verdict is Verdict.BETTER
    assert compare(a, b, alpha=p * 0.99).verdict is Verdict.WITHIN_NOISE
    # At alpha = 0.5 any positive t is a claim, and a zero one still is not.
    assert compare([0.70, 0.72, 0.71], [0.70, 0.72, 0.709], alpha=0.5).verdict is Verdict.BETTER
    assert compare([0.70, 0.72, 0.71], [0.70, 0.72, 0.71], alpha=0.5).verdict is Verdict.WITHIN_NOISE


def test_fewer_seeds_than_required_is_untested():
    result = compare([0.80, 0.81], LOW)
    assert result == Comparison(Verdict.UNTESTED, pytest.approx(0.105), None, (2, 3))
    assert compare(HIGH, [0.70]).verdict is Verdict.UNTESTED
    assert compare([0.80, 0.81], [0.70, 0.71], min_seeds=2).verdict is Verdict.BETTER
    assert compare(HIGH, LOW, min_seeds=4).verdict is Verdict.UNTESTED


def test_two_constant_sides_are_deterministic_evidence():
    # Two layers that both sat at chance on every seed tie; with unequal constants the order is certain.
    # 0.1 is chosen on purpose: numpy's mean of [0.1, 0.1, 0.1] is not 0.1, and the means must still tie.
    tie = compare([0.1, 0.1, 0.1], [0.1, 0.1, 0.1, 0.1])
    assert tie == Comparison(Verdict.WITHIN_NOISE, 0.0, 0.5, (3, 4))
    assert compare([0.2] * 3, [0.1] * 3) == Comparison(Verdict.BETTER, pytest.approx(0.1), 0.0, (3, 3))
    assert compare([0.1] * 3, [0.2] * 3) == Comparison(Verdict.WORSE, pytest.approx(-0.1), 0.0, (3, 3))


def test_one_constant_side_is_welch_with_a_zero_variance():
    a, b = [0.1, 0.1, 0.1], [0.2, 0.21, 0.19]
    result = compare(a, b)
    # With v1 = 0, t = (m1 - m2) / sqrt(v2/n2) and dof = n2 - 1.
    t = (0.1 - 0.2) / math.sqrt(0.01**2 / 3)
    assert result.verdict is Verdict.WORSE
    assert result.p_value == pytest.approx(stats.t.cdf(t, 2), rel=1e-6)
    assert compare([0.1] * 3, [0.09, 0.12, 0.10]).verdict is Verdict.WITHIN_NOISE


def test_false_claims_and_power_match_the_docstrings_figures():
    """Simulated layers with normal noise of sd 0.015, 3 seeds each: equal layers are called better about
    5% of the time; a true difference of 0.026 about half the time; 0.041 about four times in five."""
    rng = np.random.default_rng(0)

    def share_better(true_difference: float, trials: int = 1000) -> float:
        draws = rng.normal(0.0, 0.015, (trials, 2, 3))
        verdicts = [compare(list(d[0] + true_difference), list(d[1])).verdict for d in draws]
        return verdicts.count(Verdict.BETTER) / trials

    assert 0.03 < share_better(0.0) < 0.07
    assert 0.44 < share_better(0.026) < 0.56
    assert 0.76 < share_better(0.041) < 0.86


def test_difference_needed_with_three_seeds_at_sd_0015():
    # Equal sample sds s and 3 seeds a side: Welch's dof is 4 and se = s * sqrt(2/3); the smallest
    # significant difference is t(0.95, 4) * se = 2.132 * 0.01225 = 0.0261.
    needed = stats.t.ppf(0.95, 4) * 0.015 * math.sqrt(2 / 3)
    assert needed == pytest.approx(0.0261, abs=5e-5)
    spread = [-0.015, 0.0, 0.015]  # sample sd 0.015
    assert mean_sd(spread)[1] == pytest.approx(0.015)
    for scale, verdict in [(1.01, Verdict.BETTER), (0.99, Verdict.WITHIN_NOISE)]:
        a = [0.7 + needed * scale + x for x in spread]
        assert compare(a, [0.7 + x for x in spread]).verdict is verdict


def test_comparison_serializes_as_plain_json():
    record = compare(HIGH, LOW).to_json()
    assert json.loads(json.dumps(record)) == record
    assert record["verdict"] == "better" and record["n"] == [3, 3]
    assert compare([0.8], LOW).to_json()["p_value"] is None
    assert str(Verdict.WITHIN_NOISE) == "within noise" and f"{Verdict.BETTER}" == "better"


def test_mean_sd():
    mean, sd = mean_sd([0.70, 0.72, 0.69])
    assert mean == pytest.approx(np.mean([0.70, 0.72, 0.69]))
    assert sd == pytest.approx(np.std([0.70, 0.72, 0.69], ddof=1))
    assert mean_sd([0.7]) == (0.7, None)
    assert mean_sd([0.1, 0.1, 0.1]) == (0.1, 0.0)


def test_pooled_noise_against_numpy():
    groups = [[0.70, 0.72, 0.69, 0.71], [0.60, 0.65], [0.5], [], [0.80, 0.78, 0.83]]
    counted = [np.array(g) for g in groups if len(g) >= 2]
    dof = sum(len(g) - 1 for g in counted)
    variance = sum(np.var(g, ddof=1) * (len(g) - 1) for g in counted) / dof
    estimate = pooled_noise(iter(groups))
    assert estimate.dof == 6 and estimate.layers == 3
    assert estimate.sd == pytest.approx(math.sqrt(variance))
    # Differences between layers are not noise: shifting one layer's accuracies changes nothing.
    shifted = [[x + 0.2 for x in groups[0]], *groups[1:]]
    assert pooled_noise(shifted).sd == pytest.approx(estimate.sd)
    assert pooled_noise([[0.5], [0.6]]) == NoiseEstimate(None, 0, 0)
    assert pooled_noise([]).to_json() == {"sd": None, "dof": 0, "layers": 0}


def test_binomial_sd():
    assert binomial_sd(0.7, 500) == pytest.approx(0.0205, abs=5e-5)
    assert binomial_sd(0.7, 5000) == pytest.approx(0.0065, abs=5e-5)
    assert binomial_sd(1.0, 100) == 0.0


@pytest.mark.parametrize(
    "call",
    [
        lambda: compare([0.7, float("nan"), 0.7], LOW),
        lambda: compare(HIGH, [0.7, 0.7, float("inf")]),
        lambda: compare(HIGH, ["0.7", "0.7", "0.7"]),
        lambda: compare(HIGH, "0.7"),
        lambda: compare(HIGH, [[0.7], [0.7]]),
        lambda: compare([], LOW),
        lambda: compare(HIGH, LOW, alpha=0.0),
        lambda: compare(HIGH, LOW, alpha=0.6),
        lambda: compare(HIGH, LOW, alpha=float("nan")),
        lambda: compare(HIGH, LOW, alpha="0.05"),
        lambda: compare(HIGH, LOW, min_seeds=1),
        lambda: compare(HIGH, LOW, min_seeds=2.5),
        lambda: mean_sd([]),
        lambda: pooled_noise([[0.7, 0.7], [0.7, float("nan")]]),
        lambda: pooled_noise([[0.7, 0.7], [None]]),
        lambda: binomial_sd(1.2, 500),
        lambda: binomial_sd(float("nan"), 500),
        lambda: binomial_sd(0.7, 0),
        lambda: binomial_sd(0.7, 500.0),
    ],
)
def test_bad_input_is_one_clear_error(call):
    with pytest.raises(EvosearchError) as error:
        call()
    assert "\n" not in str(error.value)


def test_description_names_the_test_and_its_level():
    assert "Welch" in TEST_DESCRIPTION and "one-sided" in TEST_DESCRIPTION
    assert "p < 0.05" in TEST_DESCRIPTION and "3 seeds" in TEST_DESCRIPTION


def test_importing_the_module_leaves_scipy_torch_and_ray_unloaded():
    code = (
        "import sys, evosearch.search.significance; "
        "print(sorted(m for m in ('scipy', 'torch', 'ray') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr
