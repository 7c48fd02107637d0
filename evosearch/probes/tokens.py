"""Token-layout probes: signal propagation through a pre-norm transformer at initialization.

A token-layout candidate fills every norm slot (``norm1``, ``norm2`` of each block and the final norm)
of a small ViT (:class:`~evosearch.tasks.transformers.VisionTransformer`, patch tokens of the probe
images), which runs one forward and backward pass in training mode with the cross-entropy loss. The
metrics follow the literature on signal propagation in transformers:

``residual_growth``
    Mean per-feature variance (over N, L) of the residual stream after the last block over that after
    the first. Without normalization every branch adds a copy of its own input's scale, so the stream
    grows exponentially with depth; with it, each branch adds a bounded amount.
``token_similarity``, ``similarity_profile``
    Rank collapse (Dong et al. 2021; Noci et al. 2022): the mean absolute cosine similarity between the
    distinct tokens of a sample, averaged over the samples, of the final features (the last slot's
    output, what the head sees); the profile is the same on the residual stream after each block.
    Absolute, because a rank-one output may point its tokens to +u or -u (a per-token mean broadcast
    over the features takes the mean's sign), which a signed mean would average to nothing.
``attention_entropy``, ``entropy_profile``
    Entropy collapse (Zhai et al. 2023): the entropy of each attention row over log L (1: uniform, 0:
    one-hot), averaged per block; the metric is the smallest block's.
``gradient_ratio``, ``gradient_profile``
    Frobenius norm of the loss gradient w.r.t. the first block's output over that w.r.t. the last's;
    the profile has every block's, first to last, over the last's.
health
    As for images: ``nonfinite_outputs`` (a slot's output or the logits), ``nonfinite_gradients`` (a
    gradient w.r.t. a block output), ``dead_fraction`` (final feature units (token, feature) constant
    across the batch) and ``output_scale`` (RMS of the final features).

The network is initialised by :func:`probe_init`, not by the ViT's training initialisation: see there.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn

from evosearch.probes.health import HealthThresholds
from evosearch.tasks.models import ModelConfig, kaiming_init
from evosearch.tasks.transformers import VisionTransformer

# Probe names and the metrics each reports; "gradient_ratio", "health", "stability" and "fingerprint"
# share their name (and metrics) with the image probes, so one ``enabled`` list serves both layouts.
TOKEN_PROBES: dict[str, tuple[str, ...]] = {
    "residual_growth": ("residual_growth",),
    "token_similarity": ("token_similarity", "similarity_profile"),
    "attention_entropy": ("attention_entropy", "entropy_profile"),
    "gradient_ratio": ("gradient_ratio", "gradient_profile"),
    "health": ("nonfinite_outputs", "nonfinite_gradients", "dead_fraction", "output_scale"),
    "stability": ("stability",),
    "fingerprint": ("fingerprint",),
}
NETWORK_PROBES = {"residual_growth", "token_similarity", "attention_entropy", "gradient_ratio", "health"}


@dataclass
class TokenThresholds(HealthThresholds):
    """The verdict's bounds for token layers, read as :class:`HealthThresholds` says.
    docs/probes.md lists the token seeds' values and what each bound rejects."""

    max_residual_growth: float = 20.0
    max_token_similarity: float = 0.95
    min_attention_entropy: float = 0.5
    min_gradient_ratio: float = 0.1
    max_gradient_ratio: float = 100.0


@dataclass
class TokenProbeConfig:
    """The ``probes.tokens`` section: the probe ViT's shape and the token thresholds. The probe images
    (``probes.batch_size``, ``probes.image_size``) are the image probes'; at 16×16 with patch 2 they
    make 64 tokens. Eight blocks of width 64 separate the seeds from an unnormalized stream by more
    than 10× in growth at ~0.1 CPU s."""

    depth: int = 8
    dim: int = 64
    heads: int = 4
    patch_size: int = 2
    mlp_ratio: float = 4.0
    thresholds: TokenThresholds = field(default_factory=TokenThresholds)

    def __post_init__(self) -> None:
        try:  # the probe ViT's shape is checked as a task's ViT is
            self.model_config()
        except ValueError as e:
            raise ValueError(f"tokens: {e}") from None

    def model_config(self) -> ModelConfig:
        shape = {k: getattr(self, k) for k in ("depth", "dim", "heads", "patch_size", "mlp_ratio")}
        return ModelConfig(arch="vit", **shape)


def probe_init(model: nn.Module, generator: torch.Generator) -> nn.Module:
    """Variance-preserving weights: normal with sd 1/√fan_in for every linear and conv layer, unit
    normal position embeddings, zero biases; the slots keep their own initialisation.

    The ViT trains from sd 0.02 (:func:`~evosearch.tasks.transformers.transformer_init`), which at the
    probe's width makes each linear layer shrink its input (gain 0.02·√64 = 0.16) and every branch a
    small perturbation of the stream: every layer looks alike there, the identity included (growth
    1.01, attention entropy 1.00, as LayerNorm's). At unit gain, the setting of the signal-propagation
    analyses (Noci et al. 2022) and the effective scale of a wide model, a branch is as large as its
    input, so what the norm does to that input compounds over depth."""
    for name, parameter in model.named_parameters():
        if name.endswith("pos_embed"):
            nn.init.normal_(parameter, generator=generator)
    return kaiming_init(model, generator, nonlinearity="linear")


def transformer_probes(
    slot: Callable[[int], nn.Module],
    config: TokenProbeConfig,
    generator: torch.Generator,
    images: torch.Tensor,
    labels: torch.Tensor,
) -> dict[str, float | list[float] | bool]:
    """Every network metric of the module docstring, from one pass of the probe ViT whose norms come
    from ``slot`` (``num_features -> nn.Module``) on standardized ``images`` (N×3×S×S)."""
    num_classes = max(10, int(labels.max()) + 1)
    model = VisionTransformer(
        images.shape[-1], config.patch_size, config.dim, config.depth, config.heads, config.mlp_ratio,
        num_classes, slot,
    )  # fmt: skip
    probe_init(model, generator)
    blocks = list(model.blocks)
    block_outputs: list[torch.Tensor] = []
    attention_inputs: list[torch.Tensor] = []
    slot_outputs: list[torch.Tensor] = []
    for block in blocks:
        block.register_forward_hook(lambda m, i, out: block_outputs.append(out))
        block.attn.register_forward_pre_hook(lambda m, args: attention_inputs.append(args[0]))
        for norm in (block.norm1, block.norm2):
            norm.register_forward_hook(lambda m, i, out: slot_outputs.append(out))
    features = model.train().features(images)
    logits = model.head(features.mean(dim=1))
    loss = nn.functional.cross_entropy(logits, labels)
    grads = torch.autograd.grad(loss, block_outputs, allow_unused=True)
    grads = [torch.zeros_like(o) if g is None else g for o, g in zip(block_outputs, grads, strict=True)]
    norms = [float(g.double().norm()) for g in grads]
    gradient_profile = [n / norms[-1] if norms[-1] > 0 else math.nan for n in norms]
    entropy_profile = _entropy_profile(blocks, attention_inputs)
    final = features.detach().double()
    outputs = [logits, features, *slot_outputs]
    first, last = (_feature_variance(block_outputs[k]) for k in (0, -1))
    return {
        "residual_growth": last / first if first > 0 else math.nan,
        "token_similarity": _token_similarity(final),
        "similarity_profile": [_token_similarity(o.detach().double()) for o in block_outputs],
        "attention_entropy": min(entropy_profile),
        "entropy_profile": entropy_profile,
        "gradient_ratio": gradient_profile[0],
        "gradient_profile": gradient_profile,
        "dead_fraction": dead_fraction(final),
        "output_scale": float(final.square().mean().sqrt()),
        "nonfinite_outputs": not all(bool(torch.isfinite(t).all()) for t in outputs),
        "nonfinite_gradients": not all(bool(torch.isfinite(g).all()) for g in grads),
    }


def _entropy_profile(blocks: list[nn.Module], attention_inputs: list[torch.Tensor]) -> list[float]:
    """Each block's mean attention-row entropy over log L, from the inputs its attention saw (the
    fused kernel of the forward pass does not expose its probabilities); NaN for non-finite ones."""
    with torch.no_grad():
        profile = []
        for block, x in zip(blocks, attention_inputs, strict=True):
            probs = block.attn.attention_probs(x).double()
            entropy = -(probs * probs.clamp_min(1e-300).log()).sum(-1)
            profile.append(float(entropy.mean() / math.log(x.shape[1])) if x.shape[1] > 1 else math.nan)
    return profile


def _feature_variance(x: torch.Tensor) -> float:
    """Mean over features of the variance over (N, L): the residual stream's scale."""
    return float(x.detach().double().flatten(0, 1).var(0, unbiased=False).mean())


def _token_similarity(x: torch.Tensor) -> float:
    """Mean |cosine| between the distinct tokens of each sample of ``x`` (N, L, C), over the samples;
    NaN when a token is all zero or not finite (no direction to compare)."""
    norms = x.norm(dim=-1, keepdim=True)
    length = x.shape[1]
    if length < 2 or not (torch.isfinite(norms).all() and (norms > 0).all()):
        return math.nan
    a = x / norms
    cosines = (a @ a.transpose(1, 2)).abs()
    off_diagonal = cosines.sum((1, 2)) - cosines.diagonal(dim1=1, dim2=2).sum(1)
    return float((off_diagonal / (length * (length - 1))).mean())


def dead_fraction(features: torch.Tensor) -> float:
    """Fraction of units (every index past the batch's: (channel, position) of an image, (token,
    feature) of tokens) whose value is the same for every sample, up to a tolerance relative to the
    features' overall scale (exactly 0 spread for an all-zero output); NaN for non-finite features."""
    if not torch.isfinite(features).all():
        return math.nan
    spread = features.amax(0) - features.amin(0)
    return float((spread <= 1e-6 * features.abs().max()).double().mean())
