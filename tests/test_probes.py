"""At-initialization probes: the seeds pass, broken layers are rejected with their reasons, the findings
of "Beyond BatchNorm" hold with the default settings, fingerprints identify functions, and probing
never raises."""

from __future__ import annotations

import dataclasses
import math
import random
import re

import pytest
from hypothesis import HealthCheck, given, settings
from random_graphs import random_graphs

from evosearch.config import ConfigError, from_dict
from evosearch.layers.create import resolve_source
from evosearch.layers.graph import LayerGraph
from evosearch.layers.seeds import SEEDS, seed_graph
from evosearch.probes.screen import PROBES, ProbeConfig, ProbeResult, Thresholds, probe_layer
from evosearch.search.mutation import SearchSpace, random_graph
from evosearch.tasks.generated import generate_images

# Default settings and thresholds; only the time limit is wide, so that a busy machine (tests run in
# parallel with other work) cannot turn a pass into a timeout.
DEFAULT = ProbeConfig(time_limit=60.0)
METRICS = {m for names in PROBES.values() for m in names}
REASON_KEYS = {*METRICS, "timeout", "error"}


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # see conftest.py


def gn_relu(groups: int) -> str:
    """GroupNorm-ReLU with an explicit group count (width 16: 16 groups = instance, 1 = layer)."""
    return f"max(v1 * ((x - group_mean(x, groups={groups})) / group_std(x, groups={groups})) + v0, 0)"


def probe(source: str, config: ProbeConfig = DEFAULT) -> ProbeResult:
    return probe_layer(resolve_source(source), config)


def reason_keys(result: ProbeResult) -> set[str]:
    return {reason.partition(":")[0] for reason in result.reasons}


@pytest.fixture(scope="module")
def seed_results() -> dict[str, ProbeResult]:
    return {name: probe_layer(seed_graph(name), DEFAULT) for name in SEEDS}


def test_every_seed_passes(seed_results):
    assert {name: r.reasons for name, r in seed_results.items() if not r.passed} == {}


def test_result_shape(seed_results):
    result = seed_results["evonorm_s0"]
    assert set(result.metrics) == METRICS
    flags = {"nonfinite_outputs", "nonfinite_gradients"}
    assert all(result.metrics[m] is False for m in flags)
    assert all(
        isinstance(result.metrics[m], float) for m in METRICS - flags - {"gradient_profile", "fingerprint"}
    )
    assert len(result.metrics["fingerprint"]) == 16
    profile = result.metrics["gradient_profile"]
    assert len(profile) == DEFAULT.plain_depth and profile[0] == result.metrics["gradient_ratio"]
    assert profile[-1] == 1.0
    assert set(result.to_json()) == {"passed", "reasons", "metrics", "seconds"}
    assert 0 < result.seconds < DEFAULT.time_limit


@pytest.mark.parametrize(
    ("formula", "expected"),
    [
        ("x", "activation_growth"),  # no normalization at all
        ("max(x, 0)", "activation_growth"),  # a pure activation: ReLU
        ("x * sigmoid(x)", "activation_growth"),  # SiLU
        ("sigmoid(x)", "dead_fraction"),  # saturates: constant features, no gradient
        ("sigmoid(x)", "gradient_ratio"),
        ("x * 0", "dead_fraction"),  # constant output
        ("x - x", "output_scale"),
        ("0.000001 * x / layer_std(x)", "output_scale"),  # vanishing output
        ("square(square(x))", "nonfinite_outputs"),  # overflow
        ("square(square(x))", "nonfinite_gradients"),
        ("tanh(100 * x)", "gradient_ratio"),  # bounded output, exploding gradients
        ("x / (layer_std(x) - 1)", "stability"),  # divides by a statistic that can vanish
    ],
)
def test_broken_layers_are_rejected_with_the_reason(formula, expected):
    result = probe(formula)
    assert not result.passed
    assert expected in reason_keys(result), result.reasons


def test_findings_of_beyond_batchnorm(seed_results):
    """(i) no normalization: exponential growth, every seed bounded; (ii) samples grow alike and (iii)
    early gradients shrink as groups grow: instance, group (4 of 16 channels), layer."""
    for formula in ("x", "max(x, 0)"):
        assert probe(formula).metrics["activation_growth"] > 1e4
    assert max(r.metrics["activation_growth"] for r in seed_results.values()) < 100
    shallow = dataclasses.replace(DEFAULT, resnet_depth=20, enabled=["activation_growth"])
    relu_20, relu_56 = (probe("max(x, 0)", c).metrics["activation_growth"] for c in (shallow, DEFAULT))
    assert math.log(relu_56) > 2 * math.log(relu_20)  # 9 -> 27 blocks: the exponent about triples

    instance, group, layer = (probe(f).metrics for f in (gn_relu(16), gn_relu(4), gn_relu(1)))
    assert instance["cosine_similarity"] < group["cosine_similarity"] < layer["cosine_similarity"]
    assert instance["gradient_ratio"] > group["gradient_ratio"] > layer["gradient_ratio"]
    assert instance["cosine_similarity"] == seed_results["in_relu"].metrics["cosine_similarity"]


def test_same_config_same_numbers_to_the_bit():
    first, second = probe("evonorm_b0"), probe("evonorm_b0")
    assert first.metrics == second.metrics
    other_seed = probe("evonorm_b0", dataclasses.replace(DEFAULT, seed=1))
    assert other_seed.metrics["activation_growth"] != first.metrics["activation_growth"]
    assert other_seed.metrics["fingerprint"] == first.metrics["fingerprint"]  # fixed input, always


def test_probes_run_on_the_tasks_own_batch():
    images, labels = generate_images(8, seed=5, size=32)
    result = probe_layer(seed_graph("gn_relu"), DEFAULT, batch=(images, labels))
    assert result.passed
    assert result.metrics["cosine_similarity"] != probe("gn_relu").metrics["cosine_similarity"]


def test_identity_has_unit_stability():
    assert probe("x").metrics["stability"] == pytest.approx(1.0)


def fingerprint(source: str) -> str:
    return probe(source, ProbeConfig(enabled=["fingerprint"])).metrics["fingerprint"]


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("x + 0", "x"),
        ("x * 1", "x"),
        ("x + layer_std(x)", "layer_std(x) + x"),
        ("max(x, 0) * sigmoid(v1 * x)", "sigmoid(v1 * x) * max(x, 0)"),
        ("(x - layer_mean(x)) / layer_std(x)", "(x - layer_mean(x)) * (1 / layer_std(x))"),
        ("x * 0", "x - x"),
    ],
)
def test_equal_functions_share_a_fingerprint(a, b):
    assert fingerprint(a) == fingerprint(b)


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("x", "2 * x"),
        ("x", "v1 * x"),  # equal at initialization only
        ("x / group_std(x)", "x / instance_std(x)"),
        ("x / layer_std(x)", "x / layer_rms(x)"),
        ("max(x, 0)", "max(x, v0)"),
    ],
)
def test_different_functions_have_different_fingerprints(a, b):
    assert fingerprint(a) != fingerprint(b)


def test_nonfinite_outputs_hash_deterministically():
    overflow, nan = "x * 1e30 * 1e30", "x * 1e30 * 1e30 - x * 1e30 * 1e30"
    assert fingerprint(overflow) == fingerprint(overflow)
    assert fingerprint(nan) == fingerprint(nan)
    assert len({fingerprint(overflow), fingerprint(nan), fingerprint("x")}) == 3


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"foo": 1}, "unknown key foo; valid keys: enabled, batch_size"),
        (
            {"thresholds": {"max_foo": 1}},
            "unknown key thresholds.max_foo; valid keys of thresholds: max_activation",
        ),
        ({"enabled": ["stability", "foo"]}, "unknown probe 'foo'; valid probes: activation_growth, cosine"),
        ({"batch_size": "big"}, "batch_size must be an integer"),
        ({"thresholds": {"max_stability": "high"}}, "thresholds.max_stability must be a number"),
        ({"resnet_depth": 51}, "resnet_depth must be 6n + 2"),
        ({"time_limit": 0}, "time_limit > 0"),
    ],
)
def test_config_errors_name_the_key(data, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        from_dict(ProbeConfig, data)


def test_thresholds_are_min_or_max_of_a_metric():
    for f in dataclasses.fields(Thresholds):
        bound, _, metric = f.name.partition("_")
        assert bound in ("min", "max") and metric in METRICS


def test_a_tiny_time_limit_rejects_with_timeout():
    result = probe("bn_relu", ProbeConfig(time_limit=1e-4))
    assert not result.passed and result.reasons == ["timeout: probing took longer than the 0.0001 s limit"]


def test_a_slow_layer_is_stopped_by_the_time_limit():
    """Proxy Norm over 400,000 proxy samples takes ~25 s to probe; the limit stops it after one slot."""
    graph = seed_graph("gn_proxynorm")
    graph.hyperparameters["proxy_samples"] = 400_000
    result = probe_layer(graph, ProbeConfig(time_limit=0.5))
    assert reason_keys(result) == {"timeout"}
    assert result.seconds < 10


def test_random_graphs_never_raise():
    rng, space = random.Random(11), SearchSpace()
    results = [probe_layer(random_graph(rng, space), DEFAULT) for _ in range(25)]
    for result in results:
        assert result.passed == (not result.reasons)
        assert reason_keys(result) <= REASON_KEYS
    assert sum(not r.passed for r in results) > len(results) / 2  # most random graphs are useless


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(random_graphs())
def test_arbitrary_graphs_never_raise(graph):
    result = probe_layer(graph, DEFAULT)
    assert reason_keys(result) <= REASON_KEYS


def test_an_invalid_graph_is_a_reject_not_an_exception():
    result = probe_layer(LayerGraph("no_output"), DEFAULT)
    assert not result.passed and len(result.reasons) == 1
    assert result.reasons[0].startswith("error: GraphError: ") and "graph has no output" in result.reasons[0]
