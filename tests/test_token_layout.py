"""The token layout (N, L, C): what each moment means there, the fused kernels it lowers to, scalars,
and how graphs of the two layouts are kept apart (hashes, files, formulas)."""

from __future__ import annotations

import pytest
import torch
import yaml

from evosearch.errors import FormulaError, GraphError
from evosearch.layers.codegen import build_layer, layer_source
from evosearch.layers.formula import parse_formula
from evosearch.layers.graph_io import dump_graph, graph_from_dict
from evosearch.layers.seeds import seed_graph
from primitives import Layout

C = 12
TOKENS = Layout.TOKENS


def _tokens(seed: int = 0) -> torch.Tensor:
    return torch.randn(4, 6, C, generator=torch.Generator().manual_seed(seed)) * 2 + 0.5


def _layer(formula: str, **hyperparameters) -> torch.nn.Module:
    graph = parse_formula(formula, layout=TOKENS, hyperparameters=hyperparameters, vectors={})
    return build_layer(graph, C)


@pytest.mark.parametrize(
    ("formula", "reference"),
    [
        ("layer_mean(x)", lambda x: x.mean(-1, keepdim=True)),  # per token, over the features
        ("layer_var(x)", lambda x: x.var(-1, unbiased=False, keepdim=True)),
        ("instance_mean(x)", lambda x: x.mean(1, keepdim=True)),  # per sample and feature, over the tokens
        ("batch_mean(x)", lambda x: x.mean((0, 1))),  # per feature, over (N, L)
        (
            "group_mean(x, groups=3)",  # per token and group of C/G features
            lambda x: x.reshape(4, 6, 3, 4).mean(-1, keepdim=True).expand(4, 6, 3, 4).reshape(4, 6, C),
        ),
    ],
)
def test_each_moment_has_the_axes_of_the_token_layout(formula, reference):
    x = _tokens()
    layer = _layer(f"x - {formula}").train()
    torch.testing.assert_close(layer(x), x - reference(x), rtol=1e-5, atol=1e-5)


def test_token_moments_take_per_head_input_as_qk_norms_see_it():
    """timm's q_norm / k_norm see (N, heads, L, head_dim): the leading dims are sequences."""
    x = torch.randn(2, 3, 5, C, generator=torch.Generator().manual_seed(2))
    layer = _layer("x - instance_mean(x) + layer_mean(x)").train()
    want = x - x.mean(-2, keepdim=True) + x.mean(-1, keepdim=True)
    torch.testing.assert_close(layer(x), want, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match=r"sequence moments need tokens \(N, L, C\)"):
        layer(torch.randn(4, C))


def test_batch_moments_track_running_estimates_over_batch_and_tokens():
    x = _tokens(1)
    layer = _layer("(x - batch_mean(x)) / batch_std(x)", momentum=0.5)
    reference = torch.nn.BatchNorm1d(C, momentum=0.5, affine=False)
    for _ in range(2):  # BatchNorm1d on (N·L, C) is the token layout's batch norm
        torch.testing.assert_close(layer.train()(x), reference.train()(x.reshape(-1, C)).reshape(x.shape))
    torch.testing.assert_close(layer.running_var, reference.running_var)
    torch.testing.assert_close(layer.eval()(x), reference.eval()(x.reshape(-1, C)).reshape(x.shape))


@pytest.mark.parametrize(
    ("seed", "kernel"),
    [("layernorm", "layer_normalize(x, self.weight, self.bias"), ("rmsnorm", "rms_normalize(x, self.weight")],
)
def test_layernorm_and_rmsnorm_lower_to_torchs_kernels(seed, kernel):
    source = layer_source(seed_graph(seed))
    forward = source[source.index("def forward") :]
    assert kernel in forward and "token_moment" not in forward


def test_a_normalization_the_kernel_cannot_take_stays_unfused():
    """rms with a bias added after the scale: rms_norm has no bias, so the add stays its own line."""
    forward = layer_source(parse_formula("v1 * (x / layer_rms(x)) + v0", layout=TOKENS))
    assert "rms_normalize(x, self.v1, self.eps)" in forward and "= as_feature(self.v0, x)" in forward


def test_scalars_are_per_layer_parameters_shaped_like_dyts():
    graph = parse_formula("tanh(a * x) * b", layout=TOKENS, scalars={"a": 0.25, "b": 2.0}, vectors={})
    layer = build_layer(graph, C)
    assert {k: tuple(v.shape) for k, v in layer.state_dict().items()} == {"a": (1,), "b": (1,)}
    x = _tokens()
    torch.testing.assert_close(layer(x), torch.tanh(0.25 * x) * 2)
    layer(x).sum().backward()
    assert layer.a.grad is not None and layer.b.grad is not None


def test_a_scalar_the_output_does_not_use_is_an_error():
    graph = parse_formula("x * 2", layout=TOKENS, scalars={"alpha": 0.5}, vectors={})
    graph.scalar("alpha", 0.5)
    with pytest.raises(GraphError, match="scalar 'alpha' is not used by the output"):
        graph.validate()


def test_the_layout_is_part_of_a_graphs_identity_and_file():
    image, tokens = parse_formula("x / layer_rms(x)"), parse_formula("x / layer_rms(x)", layout=TOKENS)
    assert image.structural_hash() != tokens.structural_hash()
    reloaded = graph_from_dict(yaml.safe_load(dump_graph(seed_graph("derf"))))
    assert reloaded.layout is TOKENS and reloaded.scalars == {"alpha": 0.5, "shift": 0.0}
    assert reloaded.structural_hash() == seed_graph("derf").structural_hash()
    old = {"evosearch_graph": 1, "formula": "x * sigmoid(x)"}  # a file from before layouts: image
    assert graph_from_dict(old).layout is Layout.IMAGE
    with pytest.raises(GraphError, match="layout must be one of image, tokens, got 'nhwc'"):
        graph_from_dict({**old, "layout": "nhwc"})
    with pytest.raises(GraphError, match="scalar 'alpha': initial value must be a number, got True"):
        graph_from_dict({**old, "layout": "tokens", "scalars": {"alpha": True}})
    with pytest.raises(FormulaError, match="scalar 'alpha': initial value must be a finite number"):
        graph_from_dict(
            {**old, "layout": "tokens", "formula": "tanh(alpha * x)", "scalars": {"alpha": 1e400}}
        )


def test_proxy_moments_have_no_token_layout():
    with pytest.raises(FormulaError, match="op 'proxy_mean' has no meaning in the tokens layout"):
        parse_formula("proxy_mean(max(x, 0), x, v1, v0)", layout=TOKENS)
