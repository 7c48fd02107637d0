"""The hand-designed layers, as graphs: the seeds of the search.

Each seed is a formula with its parameters, hyperparameters, final affine and layout; the defaults
match the reference implementations the tests compare against: for images torch's BatchNorm2d /
GroupNorm + ReLU, timm's EvoNorm2d* and FilterResponseNormTlu2d, the formulas of Batch Renorm and
Proxy Norm; for tokens torch's LayerNorm and RMSNorm, and DyT and Derf as their papers write them.
Parameter names are the references' (``weight``, ``bias``; DyT's ``alpha``), so that a reference's
``state_dict`` loads into the generated layer.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from evosearch.errors import SourceError, brief
from evosearch.layers.formula import parse_formula
from evosearch.layers.graph import LayerGraph
from primitives import Layout

_AFFINE = {
    "weight": 1.0,
    "bias": 0.0,
}  # an affine written inside the formula (before the activation)
_PROXY = {**_AFFINE, "proxy_scale": 0.0, "proxy_shift": 0.0}


@dataclass(frozen=True)
class Seed:
    formula: str
    reference: str
    vectors: dict[str, float] = field(default_factory=dict)
    hyperparameters: dict[str, float | int] = field(default_factory=dict)
    final_affine: bool = False
    layout: Layout = Layout.IMAGE
    scalars: dict[str, float] = field(default_factory=dict)

    def graph(self, name: str) -> LayerGraph:
        return parse_formula(
            self.formula,
            name=name,
            vectors=self.vectors,
            scalars=self.scalars,
            hyperparameters=self.hyperparameters,
            final_affine=self.final_affine,
            layout=self.layout,
        )


def _normalized_relu(axes: str) -> str:
    return f"max(weight * ((x - {axes}_mean(x)) / {axes}_std(x)) + bias, 0)"


def _proxy_norm(axes: str) -> str:
    # Proxy Norm after GN/LN: the proxy Y = (1 + proxy_scale) * U + proxy_shift goes through the
    # same affine and ReLU as y; its moments over the Gaussian quantiles U normalize the output.
    return "\n".join(
        [
            f"y = (x - {axes}_mean(x)) / {axes}_std(x)",
            "a = max(weight * y + bias, 0)",
            "scale = 1 + proxy_scale",
            "mean = proxy_mean(a, y, scale, proxy_shift)",
            "var = proxy_var(a, y, scale, proxy_shift)",
            "(a - mean) / sqrt(var + proxy_eps)",
        ]
    )


_BATCH_RENORM = "\n".join(
    [
        "mu = batch_mean(x)",
        "sigma = batch_std(x)",
        "r = stop_gradient(min(max(sigma / moving_std(x), 1 / rmax), rmax))",
        "d = stop_gradient(min(max((mu - moving_mean(x)) / moving_std(x), -dmax), dmax))",
        "max(weight * ((x - mu) / sigma * r + d) + bias, 0)",
    ]
)

SEEDS: dict[str, Seed] = {
    "bn_relu": Seed(_normalized_relu("batch"), "BatchNorm2d + ReLU", _AFFINE, {"eps": 1e-5, "momentum": 0.1}),
    "batch_renorm_relu": Seed(
        _BATCH_RENORM,
        "Batch Renorm (Ioffe 2017) + ReLU; set layer.rmax / layer.dmax to ramp them during training",
        _AFFINE,
        {"eps": 1e-5, "momentum": 0.1, "rmax": 3.0, "dmax": 5.0},
    ),
    "gn_relu": Seed(_normalized_relu("group"), "GroupNorm + ReLU", _AFFINE, {"eps": 1e-5, "groups": 32}),
    "ln_relu": Seed(_normalized_relu("layer"), "GroupNorm(1, C) + ReLU", _AFFINE, {"eps": 1e-5}),
    "in_relu": Seed(_normalized_relu("instance"), "GroupNorm(C, C) + ReLU", _AFFINE, {"eps": 1e-5}),
    "frn_tlu": Seed(
        "max(weight * (x / instance_rms(x)) + bias, tau)",
        "timm FilterResponseNormTlu2d",
        {**_AFFINE, "tau": 0.0},
        {"eps": 1e-5},
    ),
    "evonorm_b0": Seed(
        "x / max(batch_std(x), v * x + instance_std(x))",
        "timm EvoNorm2dB0",
        {"v": 1.0},
        {"eps": 1e-3, "momentum": 0.1},
        final_affine=True,
    ),
    "evonorm_b1": Seed(
        "x / max(batch_std(x), (x + 1) * instance_rms(x))",
        "timm EvoNorm2dB1",
        {},
        {"eps": 1e-5, "momentum": 0.1},
        final_affine=True,
    ),
    "evonorm_b2": Seed(
        "x / max(batch_std(x), instance_rms(x) - x)",
        "timm EvoNorm2dB2",
        {},
        {"eps": 1e-5, "momentum": 0.1},
        final_affine=True,
    ),
    "evonorm_s0": Seed(
        "x * sigmoid(v * x) / group_std(x)",
        "timm EvoNorm2dS0",
        {"v": 1.0},
        {"eps": 1e-5, "groups": 32},
        final_affine=True,
    ),
    "evonorm_s1": Seed(
        "x * sigmoid(x) / group_std(x)",
        "timm EvoNorm2dS1",
        {},
        {"eps": 1e-5, "groups": 32},
        final_affine=True,
    ),
    "evonorm_s2": Seed(
        "x * sigmoid(x) / group_rms(x)",
        "timm EvoNorm2dS2",
        {},
        {"eps": 1e-5, "groups": 32},
        final_affine=True,
    ),
    "gn_proxynorm": Seed(
        _proxy_norm("group"),
        "GroupNorm + Proxy Norm (Labatie et al. 2021)",
        _PROXY,
        {"eps": 1e-5, "groups": 32, "proxy_eps": 0.03, "proxy_samples": 256},
    ),
    "ln_proxynorm": Seed(
        _proxy_norm("layer"),
        "LayerNorm + Proxy Norm (Labatie et al. 2021)",
        _PROXY,
        {"eps": 1e-5, "proxy_eps": 0.03, "proxy_samples": 256},
    ),
    # Token layout (N, L, C): the norms of transformers, per token over the features.
    "layernorm": Seed(
        "weight * ((x - layer_mean(x)) / layer_std(x)) + bias",
        "torch.nn.LayerNorm(C)",
        _AFFINE,
        {"eps": 1e-5},
        layout=Layout.TOKENS,
    ),
    "rmsnorm": Seed(
        "weight * (x / layer_rms(x))",
        "torch.nn.RMSNorm(C, eps=1e-6) (Zhang & Sennrich 2019; LLaMA's eps)",
        {"weight": 1.0},
        {"eps": 1e-6},
        layout=Layout.TOKENS,
    ),
    "dyt": Seed(
        "tanh(alpha * x)",
        "DyT (Zhu et al. 2025): weight * tanh(alpha * x) + bias, alpha a scalar, init 0.5",
        final_affine=True,
        layout=Layout.TOKENS,
        scalars={"alpha": 0.5},
    ),
    "derf": Seed(
        "erf(alpha * x + shift)",
        "Derf (Chen et al. 2025): weight * erf(alpha * x + shift) + bias, scalars alpha 0.5, shift 0",
        final_affine=True,
        layout=Layout.TOKENS,
        scalars={"alpha": 0.5, "shift": 0.0},
    ),
}


def seed_names(layout: Layout | None = None) -> list[str]:
    """The seeds, or those of one layout."""
    return [name for name, seed in SEEDS.items() if layout is None or seed.layout is layout]


def seed_graph(name: str) -> LayerGraph:
    try:
        seed = SEEDS[name]
    except KeyError:
        raise SourceError(f"unknown seed {brief(name)}; seeds: {', '.join(SEEDS)}") from None
    return seed.graph(name)
