"""Torch implementations behind the primitive ops.

These functions are the runtime of every generated layer: the compiled module calls them, and an
exported layer file carries the source of the ones it uses, so both run exactly the same code. Keep
each one self-contained (only ``torch``, ``math`` and the other functions here).

Statistics are computed in float32 and cast back to the input dtype, as timm's EvoNorm layers do.
"""

import math

import torch

# Numerical guards of the element-wise ops (documented per op in ``primitives.registry``).
DIV_EPS = 1e-6
# eps of std and rms is floored here, so every std / rms is at least sqrt(MIN_EPS) = DIV_EPS and a
# division by one needs no guard (the code generator relies on it).
MIN_EPS = DIV_EPS**2
SQRT_EPS = 1e-6
EXP_MAX = 10.0


def safe_div(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """a / b with |b| floored at DIV_EPS (sign kept, zero counts as positive)."""
    tiny = torch.full_like(b, DIV_EPS)
    b = torch.where(b.abs() < DIV_EPS, torch.where(b < 0, -tiny, tiny), b)
    return a / b


def safe_log(a: torch.Tensor) -> torch.Tensor:
    """Symmetric log: sign(a) * log(1 + |a|); finite and monotone everywhere."""
    return torch.sign(a) * torch.log1p(a.abs())


def safe_sqrt(a: torch.Tensor) -> torch.Tensor:
    """Sign-preserving root: sign(a) * sqrt(max(|a|, SQRT_EPS)); the gradient stays finite at 0."""
    return torch.sign(a) * torch.sqrt(a.abs().clamp_min(SQRT_EPS))


def safe_exp(a: torch.Tensor) -> torch.Tensor:
    """exp(min(a, EXP_MAX)): no overflow, also in float16."""
    return torch.exp(a.clamp_max(EXP_MAX))


def channel_shape(x: torch.Tensor) -> tuple[int, ...]:
    """Shape that broadcasts a per-channel vector over x (NC or NCHW...)."""
    return (1, -1) + (1,) * (x.dim() - 2)


def as_channel(v: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """A per-channel vector viewed and cast for broadcasting against x."""
    return v.to(x.dtype).view(channel_shape(x))


def reduce_moment(x: torch.Tensor, dims: tuple[int, ...], statistic: str, eps: float):
    """A moment of x over dims, in float32, keepdim. Biased variance; eps inside the root."""
    xf = x.float()
    eps = max(eps, MIN_EPS)
    if statistic == "mean":
        return xf.mean(dims, keepdim=True)
    if statistic == "var":
        return xf.var(dims, unbiased=False, keepdim=True)
    if statistic == "std":
        return xf.var(dims, unbiased=False, keepdim=True).add(eps).sqrt()
    if statistic == "rms":
        return xf.square().mean(dims, keepdim=True).add(eps).sqrt()
    raise ValueError(f"unknown statistic {statistic!r}")


def layer_moment(x: torch.Tensor, statistic: str, eps: float) -> torch.Tensor:
    """Moment per sample over (C, H, W)."""
    return reduce_moment(x, tuple(range(1, x.dim())), statistic, eps).to(x.dtype)


def instance_moment(x: torch.Tensor, statistic: str, eps: float) -> torch.Tensor:
    """Moment per sample and channel over (H, W)."""
    if x.dim() < 3:
        raise ValueError(f"instance moments need spatial dims (N, C, H, W); got shape {tuple(x.shape)}")
    return reduce_moment(x, tuple(range(2, x.dim())), statistic, eps).to(x.dtype)


def resolve_groups(channels: int, groups: int) -> int:
    """The group count actually used: the largest divisor of channels that is <= groups."""
    groups = max(1, min(groups, channels))
    while channels % groups:
        groups -= 1
    return groups


def group_moment(x: torch.Tensor, statistic: str, eps: float, groups: int) -> torch.Tensor:
    """Moment per sample and group of channels over (C/G, H, W), shape (N, C, 1, ...).

    Kept reduced over space (not expanded to x's shape): it broadcasts where it is used.
    """
    n, c = x.shape[0], x.shape[1]
    g = resolve_groups(c, groups)
    grouped = x.reshape(n, g, c // g, -1)
    moment = reduce_moment(grouped, (2, 3), statistic, eps)
    moment = moment.expand(n, g, c // g, 1).reshape((n, c) + (1,) * (x.dim() - 2))
    return moment.to(x.dtype)


def token_moment(x: torch.Tensor, statistic: str, eps: float) -> torch.Tensor:
    """Moment per token over the features (the last dim): LayerNorm's and RMSNorm's axes."""
    return reduce_moment(x, (-1,), statistic, eps).to(x.dtype)


def token_group_moment(x: torch.Tensor, statistic: str, eps: float, groups: int) -> torch.Tensor:
    """Moment per token and group of features over C/G, expanded to x's shape (..., C)."""
    c = x.shape[-1]
    g = resolve_groups(c, groups)
    grouped = x.reshape(*x.shape[:-1], g, c // g)
    moment = reduce_moment(grouped, (-1,), statistic, eps).expand(grouped.shape)
    return moment.reshape(x.shape).to(x.dtype)


def sequence_moment(x: torch.Tensor, statistic: str, eps: float) -> torch.Tensor:
    """Moment per sequence and feature over its tokens: dim -2 of (N, L, C), or of (N, heads, L, C)
    as attention's query and key norms see them."""
    if x.dim() < 3:
        raise ValueError(f"sequence moments need tokens (N, L, C); got shape {tuple(x.shape)}")
    return reduce_moment(x, (-2,), statistic, eps).to(x.dtype)


def as_feature(v: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """A per-feature vector viewed and cast for broadcasting against x (..., C): (1, ..., 1, C), so
    that it keeps x's number of dims, as a per-token statistic does."""
    return v.to(x.dtype).view((1,) * (x.dim() - 1) + (-1,))


def feature_statistic(x: torch.Tensor, base: str) -> torch.Tensor:
    """Per-feature batch statistic over every dim but the last, float32, shape (C,): the token
    layout's ``channel_statistic``."""
    return channel_statistic(x.reshape(-1, x.shape[-1]), base)


def feature_moment(stat: torch.Tensor, statistic: str, eps: float, x: torch.Tensor) -> torch.Tensor:
    """The value of a batch moment op from its tracked per-feature statistic (token layout)."""
    if statistic in ("std", "rms"):
        stat = stat.float().add(max(eps, MIN_EPS)).sqrt()
    return as_feature(stat, x)


def layer_normalize(x: torch.Tensor, weight, bias, eps: float) -> torch.Tensor:
    """weight * (x - token_mean(x)) / token_std(x) + bias in one fused kernel (torch's layer_norm over
    the last dim); weight and bias per-feature or None. Float32 at least."""
    dtype = kernel_dtype(x, weight)
    out = torch.nn.functional.layer_norm(
        x.to(dtype), x.shape[-1:], cast_or_none(weight, dtype), cast_or_none(bias, dtype), max(eps, MIN_EPS)
    )
    return out.to(x.dtype)


def rms_normalize(x: torch.Tensor, weight, eps: float) -> torch.Tensor:
    """weight * x / token_rms(x) in one fused kernel (torch's rms_norm over the last dim); weight
    per-feature or None. Float32 at least."""
    dtype = kernel_dtype(x, weight)
    out = torch.nn.functional.rms_norm(
        x.to(dtype), x.shape[-1:], cast_or_none(weight, dtype), max(eps, MIN_EPS)
    )
    return out.to(x.dtype)


def kernel_dtype(x: torch.Tensor, weight: torch.Tensor | None) -> torch.dtype:
    """The dtype a fused kernel computes in: float32 at least, the weight's if wider."""
    dtype = torch.promote_types(x.dtype, torch.float32)
    return dtype if weight is None else torch.promote_types(dtype, weight.dtype)


def batch_normalize(x, running_mean, running_var, weight, bias, training: bool, momentum: float, eps: float):
    """weight * (x - batch_mean(x)) / batch_std(x) + bias in one fused kernel (weight, bias: per-channel
    or None), updating the running estimates (unbiased variance, PyTorch's momentum) in training.

    Computed in the running estimates' dtype (float32 unless the module was converted)."""
    dtype = running_mean.dtype
    out = torch.nn.functional.batch_norm(
        x.to(dtype),
        running_mean,
        running_var,
        cast_or_none(weight, dtype),
        cast_or_none(bias, dtype),
        training,
        momentum,
        max(eps, MIN_EPS),
    )
    return out.to(x.dtype)


def group_normalize(x: torch.Tensor, groups: int | None, weight, bias, eps: float) -> torch.Tensor:
    """weight * (x - group_mean(x)) / group_std(x) + bias in one fused kernel (layer: G = 1; instance:
    groups=None, G = C); weight and bias per-channel or None. Float32 at least."""
    if groups is None:
        if x.dim() < 3:
            raise ValueError(f"instance moments need spatial dims (N, C, H, W); got shape {tuple(x.shape)}")
        groups = x.shape[1]
    dtype = kernel_dtype(x, weight)
    groups = resolve_groups(x.shape[1], groups)
    out = torch.nn.functional.group_norm(
        x.to(dtype), groups, cast_or_none(weight, dtype), cast_or_none(bias, dtype), max(eps, MIN_EPS)
    )
    return out.to(x.dtype)


def cast_or_none(t: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor | None:
    return None if t is None else t.to(dtype)


def channel_statistic(x: torch.Tensor, base: str) -> torch.Tensor:
    """Per-channel batch statistic over every dim but 1, float32, shape (C,).

    base is "mean", "var" (biased) or "sq" (mean of squares): what running estimates track.
    """
    xf = x.float()
    dims = (0, *range(2, x.dim()))
    if base == "mean":
        return xf.mean(dims)
    if base == "var":
        return xf.var(dims, unbiased=False)
    if base == "sq":
        return xf.square().mean(dims)
    raise ValueError(f"unknown batch statistic {base!r}")


def channel_moment(stat: torch.Tensor, statistic: str, eps: float, x: torch.Tensor):
    """The value of a batch moment op from its tracked per-channel statistic."""
    if statistic in ("std", "rms"):
        stat = stat.float().add(max(eps, MIN_EPS)).sqrt()
    return as_channel(stat, x)


@torch.no_grad()
def update_running(running: torch.Tensor, stat: torch.Tensor, momentum: float, x, base: str):
    """running <- (1 - momentum) * running + momentum * stat (PyTorch's convention).

    The variance is tracked unbiased, as BatchNorm does.
    """
    if base == "var":
        n = x.numel() / stat.numel()  # values a statistic is over, in either layout
        stat = stat * (n / max(n - 1.0, 1.0))
    running.copy_(running * (1.0 - momentum) + stat.detach().to(running.dtype) * momentum)


def gaussian_proxy(scale: torch.Tensor, shift: torch.Tensor, samples: int, x: torch.Tensor):
    """Proxy samples scale * U + shift, U the n deterministic standard-normal quantiles.

    Shape (samples, C, 1, ...) in float32: the sample axis stands where the batch axis is, so a
    sub-graph written for x re-evaluates on it unchanged.
    """
    i = torch.arange(samples, device=x.device, dtype=torch.float32)
    u = math.sqrt(2.0) * torch.erfinv(2.0 * (i + 0.5) / samples - 1.0)
    u = u.view((samples,) + (1,) * (x.dim() - 1))
    return scale.float() * u + shift.float()


def proxy_moment(values: torch.Tensor, statistic: str, x: torch.Tensor) -> torch.Tensor:
    """Mean or biased variance over the proxy samples (axis 0), cast to x's dtype."""
    values = values.float()
    if statistic == "mean":
        return values.mean(0, keepdim=True).to(x.dtype)
    return values.var(0, unbiased=False, keepdim=True).to(x.dtype)
