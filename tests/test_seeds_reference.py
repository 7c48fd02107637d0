"""Every seed layer trains identically to its reference implementation.

References: torch's BatchNorm / GroupNorm + ReLU, timm's EvoNorm2d* and FilterResponseNormTlu2d, and
small independent modules written here from the formulas in normalization-layers.md for Batch Renorm
and Proxy Norm; for the token layout torch's LayerNorm and RMSNorm, and DyT and Derf written here from
their papers' formulas. Each comparison starts from the same (perturbed, not default) state, feeds the same
batches, and checks outputs, gradients, parameters and running buffers to 1e-4 through a few SGD
steps, in training and in eval mode.
"""

from __future__ import annotations

import copy
import math
import os
import zlib
from collections.abc import Callable

import pytest
import torch
import torch.nn.functional as F
from timm.layers import (
    EvoNorm2dB0,
    EvoNorm2dB1,
    EvoNorm2dB2,
    EvoNorm2dS0,
    EvoNorm2dS1,
    EvoNorm2dS2,
    FilterResponseNormTlu2d,
)
from torch import nn

from evosearch.layers.codegen import build_layer
from evosearch.layers.seeds import SEEDS, seed_graph, seed_names
from primitives import Layout

TOL = {"rtol": 1e-4, "atol": 1e-4}
CHANNELS = 64
BATCH, IN_CHANNELS, SIZE = 8, 8, 6  # the layer sees 8 x 64 x 6 x 6
# (N, C) input: with 32 groups, 64 channels would leave groups of 2 values whose std can be tiny and
# ill-conditioned in float32; 256 channels give groups of 8.
BATCH_2D, IN_FEATURES_2D, CHANNELS_2D = 32, 16, 256
TOKENS = 6  # token input: 8 x 6 x 64
STEPS = 4
IMAGE_SEEDS = seed_names(Layout.IMAGE)

# Inductor compiles C++ for each graph: about 35 s from a cold cache on the 2-core test machine, too
# slow for this file's budget, so torch.compile is checked with backend="aot_eager" (Dynamo capture with
# fullgraph=True plus AOTAutograd forward/backward tracing). Set EVOSEARCH_COMPILE_BACKEND=inductor to
# run the same test through inductor.
COMPILE_BACKEND = os.environ.get("EVOSEARCH_COMPILE_BACKEND", "aot_eager")


# ---- references ---------------------------------------------------------------------------------


def _channel_view(v: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return v.view((1, -1) + (1,) * (x.dim() - 2))


class BatchNorm2dReLU(nn.BatchNorm2d):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(super().forward(x))


class BatchNorm1dReLU(nn.BatchNorm1d):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(super().forward(x))


class GroupNormReLU(nn.GroupNorm):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(super().forward(x))


class BatchRenormReLURef(nn.Module):
    """Batch Renorm (Ioffe 2017) + ReLU, straight from the formula.

    Training: x̂ = (x − μ_B)/σ_B · r + d with r = clip(σ_B/σ_mov, 1/rmax, rmax) and
    d = clip((μ_B − μ_mov)/σ_mov, −dmax, dmax), both without gradient and taken from the running
    estimates before this step's update; σ = sqrt(var + eps). The running variance is tracked unbiased
    with momentum 0.1. Eval: x̂ = (x − μ_mov)/sqrt(var_mov + eps).
    """

    def __init__(self, num_features: int, eps=1e-5, momentum=0.1, rmax=3.0, dmax=5.0):
        super().__init__()
        self.eps, self.momentum, self.rmax, self.dmax = eps, momentum, rmax, dmax
        self.weight = nn.Parameter(torch.ones(num_features))
        self.bias = nn.Parameter(torch.zeros(num_features))
        self.register_buffer("running_mean", torch.zeros(num_features))
        self.register_buffer("running_var", torch.ones(num_features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        def view(v):
            return _channel_view(v, x)

        sigma_mov = (self.running_var + self.eps).sqrt()
        if self.training:
            dims = (0, *range(2, x.dim()))
            mu = x.mean(dims)
            sigma = (x.var(dims, unbiased=False) + self.eps).sqrt()
            with torch.no_grad():
                r = (sigma / sigma_mov).clamp(1.0 / self.rmax, self.rmax)
                d = ((mu - self.running_mean) / sigma_mov).clamp(-self.dmax, self.dmax)
                self.running_mean.mul_(1 - self.momentum).add_(self.momentum * mu)
                self.running_var.mul_(1 - self.momentum).add_(self.momentum * x.var(dims, unbiased=True))
            x_hat = (x - view(mu)) / view(sigma) * view(r) + view(d)
        else:
            x_hat = (x - view(self.running_mean)) / view(sigma_mov)
        return F.relu(view(self.weight) * x_hat + view(self.bias))


class ProxyNormRef(nn.Module):
    """GroupNorm / LayerNorm (no affine) followed by Proxy Norm (Labatie et al. 2021), φ = ReLU.

    z = (φ(γy+β) − E[φ(γY+β)]) / sqrt(Var[φ(γY+β)] + 0.03), Y = (1+γ′)U + β′ per channel,
    U = sqrt(2)·erfinv(2(i+0.5)/n − 1), n = 256; moments over the n proxy samples, biased variance.
    """

    def __init__(self, num_features: int, groups: int, eps=1e-5, proxy_eps=0.03, samples=256):
        super().__init__()
        self.groups, self.eps, self.proxy_eps, self.samples = groups, eps, proxy_eps, samples
        self.weight = nn.Parameter(torch.ones(num_features))
        self.bias = nn.Parameter(torch.zeros(num_features))
        self.proxy_scale = nn.Parameter(torch.zeros(num_features))
        self.proxy_shift = nn.Parameter(torch.zeros(num_features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.group_norm(x, self.groups, eps=self.eps)
        a = F.relu(_channel_view(self.weight, x) * y + _channel_view(self.bias, x))
        i = torch.arange(self.samples, dtype=torch.float64)
        u = (math.sqrt(2.0) * torch.special.erfinv(2 * (i + 0.5) / self.samples - 1)).float()
        proxy_y = (1 + self.proxy_scale) * u[:, None] + self.proxy_shift  # (n, C)
        proxy_a = F.relu(self.weight * proxy_y + self.bias)
        mean = proxy_a.mean(0)
        var = proxy_a.var(0, unbiased=False)
        return (a - _channel_view(mean, x)) / _channel_view((var + self.proxy_eps).sqrt(), x)


def _flat(cls: type[nn.Module]) -> type[nn.Module]:
    """A timm 2-D layer applied to (N, C) input as (N, C, 1, 1), same parameter names."""

    class Flat(cls):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return super().forward(x[:, :, None, None]).flatten(1)

    Flat.__name__ = f"Flat{cls.__name__}"
    return Flat


REFERENCES: dict[str, Callable[[int], nn.Module]] = {
    "bn_relu": BatchNorm2dReLU,
    "batch_renorm_relu": BatchRenormReLURef,
    "gn_relu": lambda c: GroupNormReLU(32, c),
    "ln_relu": lambda c: GroupNormReLU(1, c),
    "in_relu": lambda c: GroupNormReLU(c, c),
    "frn_tlu": FilterResponseNormTlu2d,
    "evonorm_b0": EvoNorm2dB0,
    "evonorm_b1": EvoNorm2dB1,
    "evonorm_b2": EvoNorm2dB2,
    "evonorm_s0": EvoNorm2dS0,
    "evonorm_s1": EvoNorm2dS1,
    "evonorm_s2": EvoNorm2dS2,
    "gn_proxynorm": lambda c: ProxyNormRef(c, groups=32),
    "ln_proxynorm": lambda c: ProxyNormRef(c, groups=1),
}

# (N, C) input: batch, layer and group statistics are defined; instance statistics are not.
REFERENCES_2D: dict[str, Callable[[int], nn.Module]] = {
    "bn_relu": BatchNorm1dReLU,
    "batch_renorm_relu": BatchRenormReLURef,
    "gn_relu": lambda c: GroupNormReLU(32, c),
    "ln_relu": lambda c: GroupNormReLU(1, c),
    "evonorm_s0": _flat(EvoNorm2dS0),
    "evonorm_s1": _flat(EvoNorm2dS1),
    "evonorm_s2": _flat(EvoNorm2dS2),
    "gn_proxynorm": lambda c: ProxyNormRef(c, groups=32),
    "ln_proxynorm": lambda c: ProxyNormRef(c, groups=1),
}
NEEDS_SPATIAL = sorted(set(IMAGE_SEEDS) - set(REFERENCES_2D))


class DyTRef(nn.Module):
    """DyT (Zhu et al. 2025), written from the paper: weight * tanh(alpha * x) + bias, alpha a
    learnable scalar (init 0.5), weight and bias per feature."""

    def __init__(self, features: int, alpha: float = 0.5):
        super().__init__()
        self.alpha = nn.Parameter(torch.full((1,), alpha))
        self.weight = nn.Parameter(torch.ones(features))
        self.bias = nn.Parameter(torch.zeros(features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.weight * torch.tanh(self.alpha * x) + self.bias


class DerfRef(DyTRef):
    """Derf (Chen et al. 2025), from the paper: weight * erf(alpha * x + shift) + bias, with learnable
    scalars alpha and shift."""

    def __init__(self, features: int, alpha: float = 0.5, shift: float = 0.0):
        super().__init__(features, alpha)
        self.shift = nn.Parameter(torch.full((1,), shift))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.weight * torch.erf(self.alpha * x + self.shift) + self.bias


TOKEN_REFERENCES: dict[str, Callable[[int], nn.Module]] = {
    "layernorm": nn.LayerNorm,
    "rmsnorm": lambda c: nn.RMSNorm(c, eps=1e-6),
    "dyt": DyTRef,
    "derf": DerfRef,
}
# How each input kind is made: the layer's width, and the shape of a batch (a linear map or a conv
# in front of the layer turns it into the layer's input).
IMAGE, FLAT, TOKEN = "image", "flat", "tokens"


def _layer_input(gen: torch.Generator, seed: str, *, batch: int = BATCH) -> torch.Tensor:
    """A random input of the seed's layout, with CHANNELS channels or features."""
    if SEEDS[seed].layout is Layout.TOKENS:
        return _randn(gen, batch, TOKENS, CHANNELS)
    return _randn(gen, batch, CHANNELS, SIZE, SIZE)


# ---- helpers ------------------------------------------------------------------------------------


def _generator(*keys: object) -> torch.Generator:
    return torch.Generator().manual_seed(zlib.crc32(repr(keys).encode()))


def _randn(gen: torch.Generator, *shape: int) -> torch.Tensor:
    return torch.randn(shape, generator=gen)


@torch.no_grad()
def _perturb(module: nn.Module, gen: torch.Generator) -> None:
    """Move parameters and running estimates away from their init, so nothing is trivially equal."""
    for p in module.parameters():
        p.add_(0.3 * torch.randn(p.shape, generator=gen))
    for name, b in module.named_buffers():
        if name.endswith("running_var"):
            b.mul_(torch.empty(b.shape).uniform_(-2.0, 2.0, generator=gen).exp())
        elif name.endswith("running_mean"):
            b.add_(0.5 * torch.randn(b.shape, generator=gen))


def _copy_state(reference: nn.Module, ours: nn.Module) -> None:
    """Load the reference's state into ours by name; the names must match (BN's counter aside)."""
    ref_state, our_state = reference.state_dict(), ours.state_dict()
    assert {n for n, _ in ours.named_parameters()} == {n for n, _ in reference.named_parameters()}
    extra = {k for k in set(ref_state) - set(our_state) if not k.endswith("num_batches_tracked")}
    assert set(our_state) <= set(ref_state) and not extra, (sorted(our_state), sorted(ref_state))
    ours.load_state_dict({k: ref_state[k].clone() for k in our_state})


def _assert_state_close(ours: nn.Module, reference: nn.Module, **tol) -> None:
    ref_state = reference.state_dict()
    for name, value in ours.state_dict().items():
        torch.testing.assert_close(value, ref_state[name], **(tol or TOL), msg=lambda m, n=name: f"{n}: {m}")


class Net(nn.Module):
    """A small linear map in front of the layer, so the layer's input moves as training goes."""

    def __init__(self, norm: nn.Module, kind: str):
        super().__init__()
        if kind == IMAGE:
            self.pre = nn.Conv2d(IN_CHANNELS, CHANNELS, 3, padding=1)
        else:  # a linear map of the last dim: (N, F) or (N, L, F)
            self.pre = nn.Linear(IN_FEATURES_2D, CHANNELS_2D if kind == FLAT else CHANNELS)
        self.norm = norm

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.pre(x))


def _train_against_reference(seed: str, reference: nn.Module, kind: str) -> None:
    gen = _generator(seed, kind != FLAT)
    ref_net = Net(reference, kind)
    _perturb(ref_net.norm, gen)
    our_net = Net(build_layer(seed_graph(seed), CHANNELS_2D if kind == FLAT else CHANNELS), kind)
    our_net.pre.load_state_dict(ref_net.pre.state_dict())
    _copy_state(ref_net.norm, our_net.norm)
    initial = {k: v.clone() for k, v in our_net.norm.state_dict().items()}
    nets = (ref_net, our_net)

    def batch() -> torch.Tensor:
        shapes = {
            IMAGE: (BATCH, IN_CHANNELS, SIZE, SIZE),
            FLAT: (BATCH_2D, IN_FEATURES_2D),
            TOKEN: (BATCH, TOKENS, IN_FEATURES_2D),
        }
        return _randn(gen, *shapes[kind])

    def eval_outputs_match() -> None:
        x = batch()
        with torch.no_grad():
            ref_out, our_out = (net.eval()(x) for net in nets)
        torch.testing.assert_close(our_out, ref_out, **TOL)

    eval_outputs_match()
    optimizers = [torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9) for net in nets]
    for _ in range(STEPS):
        x = batch()
        for net, opt in zip(nets, optimizers, strict=True):
            net.train()
            opt.zero_grad()
        ref_out, our_out = (net(x) for net in nets)
        torch.testing.assert_close(our_out, ref_out, **TOL)
        target = torch.randn(ref_out.shape, generator=gen)
        for out in (ref_out, our_out):
            F.mse_loss(out, target).backward()
        ref_grads = dict(ref_net.named_parameters())
        for name, p in our_net.named_parameters():
            torch.testing.assert_close(p.grad, ref_grads[name].grad, **TOL, msg=lambda m, n=name: f"{n}: {m}")
        for opt in optimizers:
            opt.step()
        _assert_state_close(our_net, ref_net)
    eval_outputs_match()

    # Training moved every trainable vector and running estimate, so the matches above are not trivial.
    for name, value in our_net.norm.state_dict().items():
        assert not torch.allclose(value, initial[name], atol=1e-4), f"{name} did not change in training"


# ---- tests --------------------------------------------------------------------------------------


def test_every_seed_has_a_reference():
    assert set(REFERENCES) == set(IMAGE_SEEDS)
    assert set(TOKEN_REFERENCES) == set(seed_names(Layout.TOKENS))


@pytest.mark.parametrize("seed", sorted(REFERENCES))
def test_seed_trains_like_reference(seed):
    _train_against_reference(seed, REFERENCES[seed](CHANNELS), IMAGE)


@pytest.mark.parametrize("seed", sorted(REFERENCES_2D))
def test_seed_trains_like_reference_on_2d_input(seed):
    _train_against_reference(seed, REFERENCES_2D[seed](CHANNELS_2D), FLAT)


@pytest.mark.parametrize("seed", sorted(TOKEN_REFERENCES))
def test_token_seed_trains_like_reference(seed):
    """Outputs, gradients, parameters to 1e-4 through SGD steps; the state_dict loads by name."""
    _train_against_reference(seed, TOKEN_REFERENCES[seed](CHANNELS), TOKEN)


@pytest.mark.parametrize("seed", sorted(TOKEN_REFERENCES))
def test_token_seed_state_dict_is_the_references(seed):
    reference, ours = TOKEN_REFERENCES[seed](CHANNELS), build_layer(seed_graph(seed), CHANNELS)
    assert {k: v.shape for k, v in ours.state_dict().items()} == {
        k: v.shape for k, v in reference.state_dict().items()
    }
    x = _layer_input(_generator(seed, "init"), seed)
    torch.testing.assert_close(ours(x), reference(x), rtol=1e-6, atol=1e-6)  # same init too


@pytest.mark.parametrize("seed", NEEDS_SPATIAL)
def test_instance_statistics_reject_2d_input(seed):
    layer = build_layer(seed_graph(seed), CHANNELS)
    with pytest.raises(ValueError, match="spatial dims"):
        layer(torch.randn(4, CHANNELS))


def test_batch_renorm_with_rmax_1_dmax_0_is_batchnorm():
    """With r clipped to 1 and d to 0 (the start of the paper's ramp), training is BatchNorm's."""
    gen = _generator("renorm-as-bn")
    reference = BatchNorm2dReLU(CHANNELS)
    _perturb(reference, gen)
    ours = build_layer(seed_graph("batch_renorm_relu"), CHANNELS, rmax=1.0, dmax=0.0)
    _copy_state(reference, ours)
    for _ in range(2):
        x = _randn(gen, BATCH, CHANNELS, SIZE, SIZE)
        torch.testing.assert_close(ours.train()(x), reference.train()(x), **TOL)
        _assert_state_close(ours, reference)


LOW_PRECISION_TOL = {
    torch.float16: {"rtol": 1e-2, "atol": 1e-2},
    torch.bfloat16: {"rtol": 5e-2, "atol": 5e-2},
}


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("seed", sorted(SEEDS))
def test_low_precision_input_stays_close_to_float32(seed, dtype):
    gen = _generator(seed, "low-precision")
    layer32 = build_layer(seed_graph(seed), CHANNELS)
    _perturb(layer32, gen)
    layer_lp = copy.deepcopy(layer32)
    x = _layer_input(gen, seed).to(dtype)
    for training in (True, False):
        out_lp = layer_lp.train(training)(x)
        out32 = layer32.train(training)(x.float())
        assert out_lp.dtype == dtype
        torch.testing.assert_close(out_lp.float(), out32, **LOW_PRECISION_TOL[dtype])
    # Statistics are computed in float32 from the same (rounded) input values, so the running
    # estimates agree with the float32 layer's far more tightly than a low-precision reduction could.
    for name, buffer in layer_lp.named_buffers():
        assert buffer.dtype == torch.float32, name
        torch.testing.assert_close(buffer, dict(layer32.named_buffers())[name], rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("seed", sorted(SEEDS))
def test_float16_statistics_do_not_overflow(seed):
    """Input around 300: x² overflows float16 (max 65504); float32 statistics stay finite."""
    gen = _generator(seed, "overflow")
    layer16 = build_layer(seed_graph(seed), CHANNELS)
    _perturb(layer16, gen)
    layer32 = copy.deepcopy(layer16)
    x = (300 * _layer_input(gen, seed)).half()
    assert torch.isinf(x.square()).any()
    for training in (True, False):
        out16 = layer16.train(training)(x)
        out32 = layer32.train(training)(x.float())
        assert torch.isfinite(out16).all()
        torch.testing.assert_close(out16.float(), out32, rtol=1e-2, atol=1e-2)
    for name, buffer in layer16.named_buffers():
        assert torch.isfinite(buffer).all(), name


@pytest.mark.parametrize("seed", ["evonorm_b0", "bn_relu", "rmsnorm", "dyt"])
def test_torch_compile_matches_eager(seed):
    torch._dynamo.reset()
    gen = _generator(seed, "compile")
    eager = build_layer(seed_graph(seed), CHANNELS)
    _perturb(eager, gen)
    layer = copy.deepcopy(eager)
    compiled = torch.compile(layer, backend=COMPILE_BACKEND, fullgraph=True)
    for training in (True, False, True):
        eager.train(training)
        layer.train(training)
        x = _layer_input(gen, seed)
        x_eager, x_compiled = x.clone().requires_grad_(), x.clone().requires_grad_()
        out_eager, out_compiled = eager(x_eager), compiled(x_compiled)
        torch.testing.assert_close(out_compiled, out_eager, **TOL)
        grad = torch.randn(out_eager.shape, generator=gen)
        out_eager.backward(grad)
        out_compiled.backward(grad)
        torch.testing.assert_close(x_compiled.grad, x_eager.grad, **TOL)
        eager_params = dict(eager.named_parameters())
        for name, p in layer.named_parameters():
            torch.testing.assert_close(p.grad, eager_params[name].grad, **TOL)
        _assert_state_close(layer, eager)


@pytest.mark.parametrize(
    ("channels", "groups", "used"),
    [(24, 32, 24), (48, 32, 24), (40, 32, 20), (96, 32, 32), (64, 16, 16), (36, 8, 6)],
)
def test_group_count_falls_back_to_largest_divisor(channels, groups, used):
    references = {
        "gn_relu": GroupNormReLU(used, channels),
        "evonorm_s0": EvoNorm2dS0(channels, groups=used),
        "evonorm_s2": EvoNorm2dS2(channels, groups=used),
        "gn_proxynorm": ProxyNormRef(channels, groups=used),
    }
    for seed, reference in references.items():
        gen = _generator(seed, channels, groups)
        _perturb(reference, gen)
        ours = build_layer(seed_graph(seed), channels, groups=groups)
        _copy_state(reference, ours)
        x = _randn(gen, 4, channels, SIZE, SIZE)
        torch.testing.assert_close(ours(x), reference(x), **TOL)
