"""At-initialization probes: cheap numbers that reject unstable candidate layers before any training.

A candidate fills every norm-act slot of two small networks at random (Kaiming-normal) initialization,
a pre-activation CIFAR ResNet and a plain CNN, which see one batch of the task's images; it is also run
alone on fixed random tensors. The probes follow "Beyond BatchNorm" (Lubana et al. 2021), EvoNorm's
stability rejection (Liu et al. 2020) and AutoML-Zero's functional equivalence check (Real et al. 2020):

``activation_growth`` (ResNet)
    Mean per-channel variance of the residual stream after the last block over that after the first.
    Without normalization it grows exponentially with depth (finding i).
``cosine_similarity``, ``stable_rank`` (plain CNN)
    The final features (output of the last slot) of the N samples, flattened and unit-normalized, are
    the rows of A; M = A·Aᵀ. ``cosine_similarity`` is the mean off-diagonal entry of M, ``stable_rank``
    is trace(M) / ‖M‖₂ (1 to N). Large groups make samples alike (finding ii).
``gradient_ratio``, ``gradient_profile`` (plain CNN)
    Frobenius norm of the cross-entropy gradient w.r.t. each conv output; the ratio first / last, and
    every layer's norm over the last's, input to output. Small groups explode early gradients
    (finding iii).
health (both networks; the scale and dead units on the plain CNN's final features)
    ``nonfinite_outputs`` / ``nonfinite_gradients``: a NaN or Inf in any slot's output or the logits,
    or in a gradient w.r.t. a conv output. ``dead_fraction``: fraction of final feature units (channel,
    position) constant across the batch. ``output_scale``: RMS of the final features.
``stability`` (layer alone)
    EvoNorm's worst-case gradient norm; see :func:`stability`.
``fingerprint`` (layer alone)
    A hash of the layer's outputs on a fixed input; see :func:`fingerprint`.

A token-layout graph (``graph.layout is Layout.TOKENS``) gets the token probes instead
(:mod:`evosearch.probes.tokens`: residual growth, token similarity, attention entropy and the gradient
ratio of a pre-norm ViT, health), and stability and fingerprint on token-shaped inputs, judged by
``ProbeConfig.tokens.thresholds``. A module class has no layout of its own: it is probed in the
``layout`` given to :func:`probe_layer`, the image layout by default.

:func:`probe_layer` runs the enabled probes and turns them into a verdict with :class:`Thresholds`. It
never raises: a compile error or a numerical failure is a reject with its reason, and so is a graph
too large to probe, refused by its size before it is compiled. A probe that runs out of its budget
(CPU seconds of the probing thread, or the wall-clock backstop) has no verdict: it is *inconclusive*,
never a reject, since how long it takes depends on what else the machine runs. Every random draw comes
from a local generator seeded from the config, and probing runs on one thread, so the numbers are
reproducible to the bit for the same config.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import math
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from evosearch.errors import one_line
from evosearch.layers.create import LayerFactory, LayerSource, layer_factory, resolve_layer
from evosearch.layers.graph import LayerGraph
from evosearch.probes.health import HealthThresholds
from evosearch.probes.tokens import (
    NETWORK_PROBES,
    TOKEN_PROBES,
    TokenProbeConfig,
    TokenThresholds,
    dead_fraction,
    transformer_probes,
)
from evosearch.tasks.generated import generate_images
from evosearch.tasks.models import cifar_resnet, kaiming_init, plain_cnn
from primitives import Layout

# Image probe names and the metrics each one reports; ``ProbeConfig.enabled`` lists these and the
# token probes (TOKEN_PROBES), and a layer runs those of its layout.
PROBES: dict[str, tuple[str, ...]] = {
    "activation_growth": ("activation_growth",),
    "cosine_similarity": ("cosine_similarity",),
    "stable_rank": ("stable_rank",),
    "gradient_ratio": ("gradient_ratio", "gradient_profile"),
    "health": ("nonfinite_outputs", "nonfinite_gradients", "dead_fraction", "output_scale"),
    "stability": ("stability",),
    "fingerprint": ("fingerprint",),
}
_RESNET_PROBES = {"activation_growth", "health"}
_PLAIN_PROBES = {"cosine_similarity", "stable_rank", "gradient_ratio", "health"}
PROBE_NAMES = [*PROBES, *(name for name in TOKEN_PROBES if name not in PROBES)]
_LAYOUT_PROBES = {Layout.IMAGE: PROBES, Layout.TOKENS: TOKEN_PROBES}

# The fingerprint input is fixed for good, not configurable: fingerprints stay comparable across runs.
FINGERPRINT_SHAPE = (4, 64, 4, 4)  # 64 channels: group moments (32 groups) differ from instance ones
TOKEN_FINGERPRINT_SHAPE = (4, 16, 64)  # (N, L, C): 64 features, 16 tokens for the instance moments
FINGERPRINT_SEED = 20200306  # AutoML-Zero's arXiv date
FINGERPRINT_DIGITS = 4
STABILITY_SHAPE = (8, 16, 8, 8)
TOKEN_STABILITY_SHAPE = (8, 64, 16)  # (N, L, C), as many values as STABILITY_SHAPE
_SHAPES = {  # fingerprint and stability inputs per layout
    Layout.IMAGE: (FINGERPRINT_SHAPE, STABILITY_SHAPE),
    Layout.TOKENS: (TOKEN_FINGERPRINT_SHAPE, TOKEN_STABILITY_SHAPE),
}
_SMALLEST = {
    "batch_size": 2,
    "image_size": 8,
    "plain_depth": 1,
    "plain_width": 1,
    "resnet_width": 1,
    "max_nodes": 1,
}

Metric = float | list[float] | str | bool


@dataclass
class Thresholds(HealthThresholds):
    """Bounds that turn the image layout's metrics into a verdict, read as :class:`HealthThresholds`
    says. Calibrated so that every seed passes with a margin; docs/probes.md lists the seeds' values
    and what each bound rejects."""

    max_activation_growth: float = 1000.0
    max_cosine_similarity: float = 0.99
    min_stable_rank: float = 1.01
    min_gradient_ratio: float = 0.01
    max_gradient_ratio: float = 1000.0


@dataclass
class ProbeConfig:
    """The ``probes`` section of a configuration: which probes run, on what, and the thresholds.

    Defaults are chosen to keep a probe under a second on two CPU cores while reproducing the three
    findings of Lubana et al. (ResNet-56 as in the paper, at width 8; a 20-layer plain CNN).

    The budget is ``cpu_limit_s``, CPU seconds of the probing thread: what the probe itself costs,
    which other work on the machine does not change (wall-clock time grew 25-fold under load and
    rejected good layers). ``time_limit``, in wall-clock seconds, is only a backstop for a probe that
    stalls. Past either the probe is inconclusive. ``max_nodes`` bounds the op nodes of a graph worth
    probing (a search proposes at most ``search.max_nodes``, 14 by default; a seed keeps its own size).
    """

    enabled: list[str] = field(default_factory=lambda: list(PROBE_NAMES))
    batch_size: int = 16  # the default batch: images of the built-in generated dataset
    image_size: int = 16
    seed: int = 0
    resnet_depth: int = 56
    resnet_width: int = 8
    plain_depth: int = 20
    plain_width: int = 16
    stability_steps: int = 5
    stability_radius: float = 0.1
    cpu_limit_s: float = 5.0  # CPU seconds per candidate; checked before every slot and between probes
    time_limit: float = 60.0  # wall-clock seconds per candidate, a backstop for a stalled probe
    max_nodes: int = 200  # op nodes; a larger graph is rejected unprobed
    thresholds: Thresholds = field(default_factory=Thresholds)
    tokens: TokenProbeConfig = field(default_factory=TokenProbeConfig)  # token layers' network, thresholds

    def __post_init__(self) -> None:
        unknown = [p for p in self.enabled if p not in PROBE_NAMES]
        if unknown:
            names = ", ".join(map(repr, unknown))
            raise ValueError(f"enabled lists unknown probe {names}; valid probes: {', '.join(PROBE_NAMES)}")
        for name, smallest in _SMALLEST.items():
            if getattr(self, name) < smallest:
                raise ValueError(f"{name} must be at least {smallest}, got {getattr(self, name)}")
        if self.resnet_depth < 8 or (self.resnet_depth - 2) % 6:
            raise ValueError(f"resnet_depth must be 6n + 2 (8, 14, 20, …, 56), got {self.resnet_depth}")
        if self.stability_steps < 0 or not self.stability_radius >= 0:
            raise ValueError("stability_steps and stability_radius must be >= 0")
        for name in ("cpu_limit_s", "time_limit"):
            if not getattr(self, name) > 0:  # NaN fails too; .inf switches a limit off
                raise ValueError(f"{name} must be > 0 (.inf: no limit), got {getattr(self, name)}")
        if self.image_size % self.tokens.patch_size:
            raise ValueError(
                f"image_size {self.image_size} must be divisible by "
                f"tokens.patch_size {self.tokens.patch_size}"
            )


@dataclass
class ProbeResult:
    """The verdict on one layer: ``reasons`` name each failed check as ``"<metric or cause>: detail"``.

    ``inconclusive``: no verdict, the probe ran out of its budget (``reasons`` says which); it did not
    pass, but it is no reject either: probed again, later or elsewhere, it may finish. ``seconds`` is
    wall-clock time, ``cpu_seconds`` the probing thread's CPU time (what the budget counts).
    """

    passed: bool
    reasons: list[str]
    metrics: dict[str, Metric]
    seconds: float
    cpu_seconds: float
    inconclusive: bool

    def to_json(self) -> dict:
        return dataclasses.asdict(self)


def probe_layer(
    layer: LayerSource,
    config: ProbeConfig | None = None,
    batch: tuple[torch.Tensor, torch.Tensor] | None = None,
    layout: Layout | None = None,
) -> ProbeResult:
    """Probe a layer at initialization and judge it. ``layer`` is a SOURCE (a seed name, a formula, a
    graph file, a ``LayerGraph`` or a module class); one that names nothing raises a ``SourceError``.
    A graph is probed in its own layout; ``layout``, when given, is the one it must have (else a
    ``LayoutError``), the one a formula is read in, and the one a module class is probed in (image
    when not given: a class states no layout).
    A bad layer never raises: a failure of any kind (compilation, an exception) is a reject with the
    reason named, and so is a graph over ``config.max_nodes``, refused before it is compiled; running
    out of the budget makes the result inconclusive.

    ``batch`` is the task's own data, (N×3×H×W images, uint8 or float; int64 labels); by default
    ``config.batch_size`` images of the built-in generated dataset at ``config.image_size``.
    """
    layer = resolve_layer(layer, layout)  # compiled below, where a failure is a reject
    layout = layer.layout if isinstance(layer, LayerGraph) else layout or Layout.IMAGE
    config = config or ProbeConfig()
    budget = _Budget(config.cpu_limit_s, config.time_limit)
    metrics: dict[str, Metric] = {}
    inconclusive = False
    try:
        _check_size(layer, config.max_nodes)
        with _one_thread():
            images, labels = default_batch(config) if batch is None else (standardize(batch[0]), batch[1])
            run = _Run(layer_factory(layer, layout), config, budget, images, labels)
            for step in _steps(config.enabled, layout):
                budget.check()
                _merge(metrics, step(run), config.enabled, _LAYOUT_PROBES[layout])
        reasons = verdict(metrics, config.tokens.thresholds if layout is Layout.TOKENS else config.thresholds)
    except _TooLarge as e:
        reasons = [str(e)]
    except _OutOfBudget as e:
        reasons, inconclusive = [str(e)], True
    except Exception as e:  # any failure of a candidate is a reject, never a crash of the search
        reasons = [f"error: {type(e).__name__}: {one_line(e)[:300]}"]
    return ProbeResult(
        not reasons, reasons, metrics, budget.wall_seconds(), budget.cpu_seconds(), inconclusive
    )


def verdict(metrics: dict[str, Metric], thresholds: Thresholds | TokenThresholds) -> list[str]:
    """The reasons to reject, in threshold order; empty means pass. Missing metrics are not judged."""
    reasons = [
        f"{name}: NaN or Inf in the networks' {name.split('_')[1]}"
        for name in ("nonfinite_outputs", "nonfinite_gradients")
        if metrics.get(name)
    ]
    nonfinite = bool(reasons)
    for f in dataclasses.fields(thresholds):
        bound, _, metric = f.name.partition("_")
        value, limit = metrics.get(metric), getattr(thresholds, f.name)
        if not isinstance(value, float):
            continue
        if math.isnan(value):
            if not nonfinite and f"{metric}: not a number" not in reasons:
                reasons.append(f"{metric}: not a number")
        elif (value > limit) if bound == "max" else (value < limit):
            reasons.append(f"{metric}: {value:.3g} {'>' if bound == 'max' else '<'} {f.name} {limit:g}")
    return reasons


@functools.lru_cache(maxsize=4)
def _generated_batch(count: int, seed: int, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    images, labels = generate_images(count, seed, size=size)
    return standardize(images), labels


def default_batch(config: ProbeConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """The probe's default images (standardized) and labels: the generated dataset, seeded by the config."""
    return _generated_batch(config.batch_size, config.seed, config.image_size)


def standardize(images: torch.Tensor) -> torch.Tensor:
    """Images on the 0..1 scale (uint8 ones divided by 255), standardized per channel over the batch."""
    x = images.float() / 255 if images.dtype == torch.uint8 else images.float()
    return (x - x.mean((0, 2, 3), keepdim=True)) / x.std((0, 2, 3), keepdim=True).clamp_min(1e-3)


class _TooLarge(Exception):
    """Raised before compiling a graph with more op nodes than ``ProbeConfig.max_nodes``."""


def _check_size(layer: LayerGraph | LayerFactory, max_nodes: int) -> None:
    """Refuse a graph too large to probe, by its size: compiling and running it would take minutes and
    gigabytes (a 10,000-node graph: 67 s, 3.2 GB) before any budget check could stop it. A module
    class has no graph to count."""
    if isinstance(layer, LayerGraph) and len(layer.op_nodes) > max_nodes:
        raise _TooLarge(f"too_large: {len(layer.op_nodes)} op nodes > max_nodes {max_nodes}")


class _OutOfBudget(Exception):
    """Raised inside probing when the budget is spent: the probe has no verdict."""


@dataclass(frozen=True)
class _Budget:
    """What one probe may spend, measured from its creation. The CPU seconds of the calling thread are
    the budget: probing runs on that thread alone (:func:`_one_thread`), forward and backward, so they
    count all of its work and nothing of the machine's other work; process CPU time would also count
    other threads (a Ray worker's own) and the spin-waits of contended intra-op threads. Wall-clock
    seconds are a backstop for a probe that stalls without using the CPU."""

    cpu_limit_s: float
    wall_limit_s: float
    cpu_start: float = field(default_factory=time.thread_time)
    wall_start: float = field(default_factory=time.perf_counter)

    def cpu_seconds(self) -> float:
        return time.thread_time() - self.cpu_start

    def wall_seconds(self) -> float:
        return time.perf_counter() - self.wall_start

    def check(self, *_hook_args) -> None:
        """Also a forward pre-hook: called before every slot runs. The check is cooperative: a slot
        call or a backward pass in flight finishes first."""
        if self.cpu_seconds() > self.cpu_limit_s:
            raise _OutOfBudget(f"cpu_limit: probing needed more than the {self.cpu_limit_s:g} CPU s limit")
        if self.wall_seconds() > self.wall_limit_s:
            raise _OutOfBudget(
                f"timeout: probing took longer than the {self.wall_limit_s:g} s wall-clock limit"
            )


@contextmanager
def _one_thread() -> Iterator[None]:
    """Run torch on the calling thread alone, then restore its thread count. The budget counts that
    thread's CPU time, and a verdict should not vary with the machine's core count: intra-op threads
    would do work the budget does not see, change float reductions, and on a busy machine stall one
    another (10-30x slower); the probe networks are too small to gain from them."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


@dataclass(frozen=True)
class _Run:
    """What every probe of one candidate shares."""

    make_layer: LayerFactory
    config: ProbeConfig
    budget: _Budget
    images: torch.Tensor
    labels: torch.Tensor
    slots: list[nn.Module] = field(default_factory=list)  # every layer made, to find them in a network

    def slot(self, num_features: int) -> nn.Module:
        """The norm-act factory: a fresh candidate layer that checks the budget before each call."""
        layer = self.make_layer(num_features)
        layer.register_forward_pre_hook(self.budget.check)
        self.slots.append(layer)
        return layer

    def generator(self, stream: int) -> torch.Generator:
        """An independent generator per use (each network, stability), all from ``config.seed``."""
        return torch.Generator().manual_seed(self.config.seed * 1_000_003 + stream)


def _steps(enabled: list[str], layout: Layout) -> list[Callable[[_Run], dict[str, Metric]]]:
    """The runs the enabled probes of ``layout`` need, cheapest first."""
    steps: list[Callable[[_Run], dict[str, Metric]]] = []
    fingerprint_shape, stability_shape = _SHAPES[layout]
    if "fingerprint" in enabled:
        steps.append(
            lambda run: {"fingerprint": fingerprint(run.slot(fingerprint_shape[layout.channel_dim]), layout)}
        )
    if "stability" in enabled:
        steps.append(
            lambda run: {
                "stability": stability(
                    run.slot(stability_shape[layout.channel_dim]), run.generator(3), run.config, layout
                )
            }
        )
    if layout is Layout.TOKENS:
        if NETWORK_PROBES.intersection(enabled):
            steps.append(_transformer_probes)
        return steps
    if _PLAIN_PROBES.intersection(enabled):
        steps.append(_plain_probes)
    if _RESNET_PROBES.intersection(enabled):
        steps.append(_resnet_probes)
    return steps


def _merge(
    metrics: dict[str, Metric], new: dict[str, Metric], enabled: list[str], probes: dict[str, tuple[str, ...]]
) -> None:
    """Add the metrics of the enabled ``probes`` (the layout's); a health flag raised by either network
    stays raised."""
    keep = {m for p in enabled if p in probes for m in probes[p]}
    for key, value in new.items():
        if key not in keep:
            continue
        if isinstance(value, bool):
            value = value or metrics.get(key) is True
        metrics[key] = value


# ---- the networks -------------------------------------------------------------------------------


@dataclass
class _Trace:
    """One forward and backward pass of a probe network."""

    outputs: dict[nn.Module, torch.Tensor]  # of the watched modules (the last call of each)
    slot_outputs: list[torch.Tensor]
    conv_grads: list[torch.Tensor]  # loss gradient w.r.t. each conv output, in forward order
    nonfinite_outputs: bool
    nonfinite_gradients: bool


def _trace(model: nn.Module, run: _Run, watch: list[nn.Module]) -> _Trace:
    """Run the model on the probe batch in training mode, recording slot outputs, the watched modules'
    outputs and the cross-entropy gradient w.r.t. every conv output."""
    outputs: dict[nn.Module, torch.Tensor] = {}
    slot_outputs: list[torch.Tensor] = []
    conv_outputs: list[torch.Tensor] = []
    slots = {id(layer) for layer in run.slots}
    for module in model.modules():
        if id(module) in slots:
            module.register_forward_hook(lambda m, i, out: slot_outputs.append(out))
        elif isinstance(module, nn.Conv2d):
            module.register_forward_hook(lambda m, i, out: conv_outputs.append(out))
    for module in watch:
        module.register_forward_hook(lambda m, i, out: outputs.__setitem__(m, out))
    logits = model.train()(run.images)
    loss = nn.functional.cross_entropy(logits, run.labels)
    grads = torch.autograd.grad(loss, conv_outputs, allow_unused=True)
    grads = [torch.zeros_like(o) if g is None else g for o, g in zip(conv_outputs, grads, strict=True)]
    return _Trace(
        outputs,
        slot_outputs,
        grads,
        nonfinite_outputs=not all(bool(torch.isfinite(t).all()) for t in [logits, *slot_outputs]),
        nonfinite_gradients=not all(bool(torch.isfinite(g).all()) for g in grads),
    )


def _num_classes(run: _Run) -> int:
    return max(10, int(run.labels.max()) + 1)


def _resnet_probes(run: _Run) -> dict[str, Metric]:
    """Activation growth (finding i) and numerical health, on the pre-activation ResNet."""
    config = run.config
    model = cifar_resnet(config.resnet_depth, config.resnet_width, run.slot, _num_classes(run))
    kaiming_init(model, run.generator(1))
    blocks = list(model.blocks)
    trace = _trace(model, run, [blocks[0], blocks[-1]])
    first, last = (_channel_variance(trace.outputs[b]) for b in (blocks[0], blocks[-1]))
    return {
        "activation_growth": last / first if first > 0 else math.nan,
        "nonfinite_outputs": trace.nonfinite_outputs,
        "nonfinite_gradients": trace.nonfinite_gradients,
    }


def _plain_probes(run: _Run) -> dict[str, Metric]:
    """Sample similarity (finding ii), the gradient profile (finding iii) and numerical health of the
    final features, on the plain CNN; health flags combine with the ResNet's."""
    config = run.config
    model = plain_cnn(config.plain_depth, config.plain_width, run.slot, _num_classes(run))
    kaiming_init(model, run.generator(2))
    trace = _trace(model, run, [])
    features = trace.slot_outputs[-1].detach().double()
    cosine, rank = _similarity(features)
    norms = [float(g.double().norm()) for g in trace.conv_grads]
    profile = [n / norms[-1] if norms[-1] > 0 else math.nan for n in norms]
    return {
        "cosine_similarity": cosine,
        "stable_rank": rank,
        "gradient_ratio": profile[0],
        "gradient_profile": profile,
        "dead_fraction": dead_fraction(features),
        "output_scale": float(features.square().mean().sqrt()),
        "nonfinite_outputs": trace.nonfinite_outputs,
        "nonfinite_gradients": trace.nonfinite_gradients,
    }


def _transformer_probes(run: _Run) -> dict[str, Metric]:
    """Residual growth, rank and entropy collapse, the gradient profile and health, on the probe ViT."""
    return transformer_probes(run.slot, run.config.tokens, run.generator(4), run.images, run.labels)


def _channel_variance(x: torch.Tensor) -> float:
    """Mean over channels of the variance over (N, H, W): the residual stream's scale."""
    return float(x.detach().double().transpose(0, 1).flatten(1).var(1, unbiased=False).mean())


def _similarity(features: torch.Tensor) -> tuple[float, float]:
    """Mean off-diagonal cosine similarity and stable rank of the samples' flattened features; NaN
    when they are not finite or a sample's features are all zero (no direction to compare)."""
    a = features.flatten(1)
    norms = a.norm(dim=1, keepdim=True)
    if not (torch.isfinite(norms).all() and (norms > 0).all()):
        return math.nan, math.nan
    a = a / norms
    m = a @ a.T
    n = m.shape[0]
    cosine = float((m.sum() - m.trace()) / (n * (n - 1)))
    return cosine, float(m.trace() / torch.linalg.eigvalsh(m)[-1])


# ---- the layer alone ----------------------------------------------------------------------------


def stability(
    layer: nn.Module, generator: torch.Generator, config: ProbeConfig, layout: Layout = Layout.IMAGE
) -> float:
    """EvoNorm's stability check: the worst gradient gain of the layer near a random input.

    With x, r ~ N(0, 1) of shape ``STABILITY_SHAPE`` (``TOKEN_STABILITY_SHAPE`` for a token layer),
    drawn from ``generator``, the gain at input z is
    ``‖∇_z ⟨layer(z), r⟩‖₂ / ‖r‖₂``: how much the layer amplifies a random output gradient (1 for the
    identity; 0.7 to 1.3 for the seeds). Starting at z = x, ``stability_steps`` steps of projected
    sign-gradient ascent on the gain move z within the L∞ ball of radius ``stability_radius · rms(x)``
    around x (step 2.5 · radius / steps, as in PGD); the result is the largest gain seen. A layer that
    divides by a statistic near zero, or has a steep slope anywhere, shows a large value.
    """
    shape = _SHAPES[layout][1]
    x = torch.randn(shape, generator=generator)
    r = torch.randn(shape, generator=generator)
    radius = config.stability_radius * float(x.square().mean().sqrt())
    step = 2.5 * radius / max(config.stability_steps, 1)
    delta = torch.zeros_like(x)
    worst = 0.0
    for k in range(config.stability_steps + 1):
        z = (x + delta).requires_grad_(True)
        (grad,) = torch.autograd.grad((layer.train()(z) * r).sum(), z, create_graph=True, allow_unused=True)
        if grad is None:  # the output does not depend on the input at all
            return 0.0
        gain = grad.norm() / r.norm()
        if math.isnan(gain.item()):
            return math.nan
        worst = max(worst, gain.item())
        if k == config.stability_steps or not gain.requires_grad:
            break
        (ascent,) = torch.autograd.grad(gain, z, allow_unused=True)
        if ascent is None:  # piecewise-linear layer: the gain is locally constant
            break
        delta = (delta + step * torch.nan_to_num(ascent).sign()).clamp(-radius, radius)
    return worst


def fingerprint(layer: nn.Module, layout: Layout = Layout.IMAGE) -> str:
    """A functional fingerprint (AutoML-Zero's FEC): 16 hex digits of sha256 over the layer's outputs
    on a fixed input, so that ``x + 0`` and ``x``, ``a + b`` and ``b + a`` hash alike.

    The layer runs in training mode on a fixed tensor of ``FINGERPRINT_SHAPE`` whose samples and
    channels have different scales and offsets. Each per-channel vector is first set to its initial
    value plus fixed noise keyed by the vector's name, so that functions agreeing only at
    initialization (``x`` and ``v1 * x``) are told apart. Outputs are rounded to
    ``FINGERPRINT_DIGITS`` significant digits of their RMS, which absorbs float reassociation;
    NaN and ±Inf hash as themselves. The layer needs 64 input features; a token layer gets a tensor of
    ``TOKEN_FINGERPRINT_SHAPE``, drawn alike (a scale per sample, an offset per sample and feature).
    """
    x = _fingerprint_input(layout)
    with torch.no_grad():
        for name, param in layer.named_parameters():
            key = int.from_bytes(hashlib.sha256(name.encode()).digest()[:6], "little")
            noise = torch.randn(param.shape, generator=torch.Generator().manual_seed(FINGERPRINT_SEED ^ key))
            param.add_(0.5 * noise)
        y = layer.train()(x).double()
    return _hash_values(y)


def _fingerprint_input(layout: Layout) -> torch.Tensor:
    """The fixed fingerprint input: N(0, 1) values times a scale per sample plus an offset per sample
    and feature, so that per-sample and per-feature statistics all differ."""
    g = torch.Generator().manual_seed(FINGERPRINT_SEED)
    shape = _SHAPES[layout][0]
    n, c = shape[0], shape[layout.channel_dim]
    per_sample = (n,) + (1,) * (len(shape) - 1)
    per_feature = (n, 1, c) if layout is Layout.TOKENS else (n, c, 1, 1)
    scale = torch.exp(torch.randn(per_sample, generator=g))
    offset = torch.randn(per_feature, generator=g)
    return torch.randn(shape, generator=g) * scale + offset


def _hash_values(y: torch.Tensor) -> str:
    finite = torch.isfinite(y)
    values = torch.where(finite, y, torch.zeros_like(y))
    rms = float(values.square().mean().sqrt())
    quantum = 10.0 ** (math.floor(math.log10(rms)) - FINGERPRINT_DIGITS + 1) if rms > 0 else 1.0
    digest = hashlib.sha256(repr(tuple(y.shape)).encode())
    digest.update(torch.round(values / quantum).to(torch.int64).numpy().tobytes())
    for mask in (torch.isnan(y), y == math.inf, y == -math.inf):
        digest.update(np.packbits(mask.numpy()).tobytes())
    return digest.hexdigest()[:16]
