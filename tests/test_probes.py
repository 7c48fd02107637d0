"""At-initialization probes: the seeds pass, broken layers are rejected with their reasons, the findings
of "Beyond BatchNorm" hold with the default settings, fingerprints identify functions, and probing
never raises."""

from __future__ import annotations

import dataclasses
import math
import random
import re
import time

import pytest
import torch
from helpers import busy_core
from hypothesis import HealthCheck, given, settings
from random_graphs import random_graphs
from torch import nn

from evosearch.config import ConfigError, from_dict
from evosearch.errors import LayoutError
from evosearch.layers.create import resolve_source
from evosearch.layers.graph import INPUT, LayerGraph
from evosearch.layers.seeds import SEEDS, seed_graph
from evosearch.probes.screen import PROBES, ProbeConfig, ProbeResult, Thresholds, probe_layer
from evosearch.probes.tokens import TOKEN_PROBES, TokenThresholds
from evosearch.search.mutation import SearchSpace, random_graph
from evosearch.tasks.generated import generate_images
from primitives import Layout

# Default settings, thresholds and budget: the budget counts the probe's own CPU time, so the tests
# running beside other work cannot turn a pass into anything else.
DEFAULT = ProbeConfig()
METRICS = {m for names in PROBES.values() for m in names}
REASON_KEYS = {*METRICS, "cpu_limit", "timeout", "too_large", "error"}
TOKEN_SEEDS = ("layernorm", "rmsnorm", "dyt", "derf")


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
    assert set(result.to_json()) == {"passed", "reasons", "metrics", "seconds", "cpu_seconds", "inconclusive"}
    assert 0 < result.cpu_seconds < DEFAULT.cpu_limit_s and not result.inconclusive


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
    image_seeds = [r for name, r in seed_results.items() if name not in TOKEN_SEEDS]
    assert max(r.metrics["activation_growth"] for r in image_seeds) < 100
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
            "unknown key thresholds.max_foo; valid keys of thresholds: max_dead_fraction",
        ),
        ({"enabled": ["stability", "foo"]}, "unknown probe 'foo'; valid probes: activation_growth, cosine"),
        ({"batch_size": "big"}, "batch_size must be an integer"),
        ({"thresholds": {"max_stability": "high"}}, "thresholds.max_stability must be a number"),
        ({"resnet_depth": 51}, "resnet_depth must be 6n + 2"),
        ({"time_limit": 0}, "time_limit must be > 0 (.inf: no limit), got 0"),
        ({"cpu_limit_s": -1}, "cpu_limit_s must be > 0 (.inf: no limit), got -1"),
        ({"max_nodes": 0}, "max_nodes must be at least 1, got 0"),
    ],
)
def test_config_errors_name_the_key(data, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        from_dict(ProbeConfig, data)


def test_thresholds_are_min_or_max_of_a_metric():
    for f in dataclasses.fields(Thresholds):
        bound, _, metric = f.name.partition("_")
        assert bound in ("min", "max") and metric in METRICS


def test_a_busy_machine_does_not_turn_a_pass_into_a_reject():
    """Four busy loops share one core with the probe (~0.35 CPU s at this batch size), which so takes
    at least five times that on the wall clock: longer than its CPU budget, so a wall-clock limit of
    that size rejected it (timeout). It passes, within the budget."""
    config = dataclasses.replace(DEFAULT, batch_size=32, cpu_limit_s=1.0)
    with busy_core(loops=4):
        result = probe("evonorm_s0", config)
    assert result.passed, result.reasons
    assert result.cpu_seconds < config.cpu_limit_s < result.seconds


@pytest.mark.parametrize(
    ("limits", "reason"),
    [
        ({"cpu_limit_s": 1e-4}, "cpu_limit: probing needed more than the 0.0001 CPU s limit"),
        ({"time_limit": 1e-4}, "timeout: probing took longer than the 0.0001 s wall-clock limit"),
    ],
)
def test_a_probe_out_of_budget_is_inconclusive_not_a_reject(limits, reason):
    result = probe("bn_relu", dataclasses.replace(DEFAULT, **limits))
    assert result.inconclusive and not result.passed and result.reasons == [reason]


def test_a_slow_layer_is_stopped_by_the_cpu_budget():
    """Proxy Norm over 65,536 proxy samples (the most a graph may ask) takes ~2 CPU s to probe; the
    budget stops it a slot call after 0.5."""
    graph = seed_graph("gn_proxynorm")
    graph.hyperparameters["proxy_samples"] = 65_536
    result = probe_layer(graph, dataclasses.replace(DEFAULT, cpu_limit_s=0.5))
    assert result.inconclusive and reason_keys(result) == {"cpu_limit"}
    assert result.cpu_seconds < 1.5


def test_a_limit_that_is_not_a_number_is_refused():
    with pytest.raises(ValueError, match=re.escape("cpu_limit_s must be > 0 (.inf: no limit), got nan")):
        ProbeConfig(cpu_limit_s=math.nan)


def test_a_graph_too_large_to_probe_is_refused_by_size_before_compiling():
    """Compiling 10,000 nodes alone takes seconds (probing them took 67 s and 3.2 GB): refused in a
    fraction of that, a true verdict, not an inconclusive one."""
    graph, node = LayerGraph("chain"), INPUT
    for _ in range(10_000):
        node = graph.add("tanh", node)
    graph.set_output(node)
    start = time.perf_counter()
    result = probe_layer(graph, DEFAULT)
    assert time.perf_counter() - start < 0.5
    assert result.reasons == ["too_large: 10000 op nodes > max_nodes 200"] and result.metrics == {}
    assert not result.passed and not result.inconclusive


def test_max_nodes_counts_op_nodes():
    graph = seed_graph("bn_relu")
    size = len(graph.op_nodes)
    assert probe_layer(graph, dataclasses.replace(DEFAULT, max_nodes=size)).passed
    refused = probe_layer(graph, dataclasses.replace(DEFAULT, max_nodes=size - 1))
    assert refused.reasons == [f"too_large: {size} op nodes > max_nodes {size - 1}"]


def test_probing_runs_on_one_thread_and_restores_the_callers_count():
    """One thread while probing (what the CPU budget counts, the same numbers on any machine), and the
    caller's thread count back after."""
    seen: set[int] = set()

    class ThreadCounter(nn.Module):
        def __init__(self, num_features: int):
            super().__init__()

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            seen.add(torch.get_num_threads())
            return x

    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        probe_layer(ThreadCounter, DEFAULT)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(threads)
    assert seen == {1}


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


# ---- token layout ---------------------------------------------------------------------------------

TOKEN_METRICS = {m for names in TOKEN_PROBES.values() for m in names}


def token_probe(formula: str, config: ProbeConfig = DEFAULT) -> ProbeResult:
    return probe_layer(formula, config, layout=Layout.TOKENS)


def test_token_seeds_get_the_token_probes_and_pass(seed_results):
    for name in TOKEN_SEEDS:
        result = seed_results[name]
        assert result.passed, (name, result.reasons)
        assert set(result.metrics) == TOKEN_METRICS
        assert len(result.metrics["entropy_profile"]) == DEFAULT.tokens.depth
        assert result.metrics["similarity_profile"][-1] <= 1 and result.metrics["gradient_profile"][-1] == 1.0


@pytest.mark.parametrize(
    ("formula", "expected"),
    [
        ("x", "residual_growth"),  # no normalization: the stream grows over depth (~1000x in 8 blocks)
        ("x", "attention_entropy"),  # ... and attention collapses onto one token
        ("x - x + 1", "token_similarity"),  # constant: every token the same
        ("x - x + 1", "dead_fraction"),
        ("x * 4", "residual_growth"),  # exploding
        ("exp(x) * x", "nonfinite_outputs"),
        ("x / layer_rms(x) * 0.001", "output_scale"),  # collapsed scale
        ("layer_mean(x) + x * 0.001", "token_similarity"),  # tokens made alike: rank collapse
    ],
)
def test_broken_token_layers_are_rejected_with_the_reason(formula, expected):
    result = token_probe(formula)
    assert not result.passed and not result.inconclusive
    assert expected in reason_keys(result), result.reasons


def test_token_probes_give_the_same_numbers_twice():
    first, second = probe("dyt"), probe("dyt")
    assert first.metrics == second.metrics
    other_seed = probe("dyt", dataclasses.replace(DEFAULT, seed=1))
    assert other_seed.metrics["residual_growth"] != first.metrics["residual_growth"]
    assert other_seed.metrics["fingerprint"] == first.metrics["fingerprint"]


def test_a_nan_token_layer_is_a_reject_not_a_crash():
    result = token_probe("x / (x - x)")
    assert not result.passed and not result.inconclusive
    assert {"nonfinite_outputs", "nonfinite_gradients"} <= reason_keys(result)


def test_token_thresholds_judge_token_layers_and_image_thresholds_image_layers():
    strict = dataclasses.replace(DEFAULT.tokens, thresholds=TokenThresholds(max_residual_growth=1.0))
    result = probe("layernorm", dataclasses.replace(DEFAULT, tokens=strict))
    assert reason_keys(result) == {"residual_growth"}
    assert probe("bn_relu", dataclasses.replace(DEFAULT, tokens=strict)).passed


def test_token_fingerprints_identify_functions():
    def token_fingerprint(formula: str) -> str:
        return token_probe(formula, ProbeConfig(enabled=["fingerprint"])).metrics["fingerprint"]

    assert token_fingerprint("x + 0") == token_fingerprint("x")
    assert token_fingerprint("x / layer_std(x)") != token_fingerprint("x / layer_rms(x)")
    assert token_fingerprint("x / layer_std(x)") != token_fingerprint("x / instance_std(x)")
    assert token_fingerprint("x") != fingerprint("x")  # a token input, not an image one


def test_a_module_class_is_probed_in_the_layout_asked_for():
    result = probe_layer(nn.LayerNorm, DEFAULT, layout=Layout.TOKENS)
    assert result.passed and set(result.metrics) == TOKEN_METRICS
    layernorm = probe("layernorm").metrics
    assert result.metrics["residual_growth"] == pytest.approx(layernorm["residual_growth"], rel=1e-4)
    assert "activation_growth" in probe_layer(nn.Identity, DEFAULT).metrics  # image by default


def test_a_graph_of_the_other_layout_is_a_layout_error():
    with pytest.raises(LayoutError, match="tokens layout"):
        probe_layer("dyt", DEFAULT, layout=Layout.IMAGE)
