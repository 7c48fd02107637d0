"""Primitive ops: templates and runtime against direct torch formulas, values and gradients."""

from __future__ import annotations

import ast
import itertools
import math
from pathlib import Path

import pytest
import torch

import evosearch
import primitives.functional as F
from evosearch.errors import GraphError
from evosearch.layers.codegen import build_layer
from evosearch.layers.graph import LayerGraph, Leaf
from primitives import (
    BATCH_DEPENDENT_OPS,
    BATCH_INDEPENDENT_SEARCH_OPS,
    COMMUTATIVE_OPS,
    ELEMENTWISE_OPS,
    INFIX_OPS,
    MOMENT_OPS,
    PREFIX_OPS,
    PRIMITIVES,
    SEARCH_OPS,
    TOKEN_MIXING_OPS,
    TOKEN_SEARCH_OPS,
    Kind,
    Sign,
    UnknownOpError,
    get_primitive,
)

# ---- element-wise ops ---------------------------------------------------------------------------


def _ref_div(a, b):
    # |b| floored at 1e-6 with its sign kept (zero counts as positive); the floor has no gradient.
    sign = torch.where(b < 0, -1.0, 1.0).to(b.dtype)
    return a / (sign * b.abs().clamp_min(1e-6))


REFERENCE = {
    "add": lambda a, b: a + b,
    "sub": lambda a, b: a - b,
    "mul": lambda a, b: a * b,
    "div": _ref_div,
    "max": lambda a, b: torch.where(a > b, a, b),
    "min": lambda a, b: torch.where(a < b, a, b),
    "neg": lambda a: -a,
    "sigmoid": lambda a: 1 / (1 + torch.exp(-a)),
    "tanh": lambda a: (torch.exp(a) - torch.exp(-a)) / (torch.exp(a) + torch.exp(-a)),
    "erf": lambda a: 2 * torch.special.ndtr(a * 2**0.5) - 1,  # erf through the normal CDF
    "exp": lambda a: torch.exp(torch.where(a > 10, torch.full_like(a, 10.0), a)),
    "log": lambda a: torch.sign(a) * torch.log(1 + a.abs()),
    "abs": lambda a: torch.where(a < 0, -a, a),
    "square": lambda a: a * a,
    "sqrt": lambda a: torch.sign(a) * torch.where(a.abs() < 1e-6, torch.full_like(a, 1e-6), a.abs()) ** 0.5,
    "stop_gradient": lambda a: a,
}


def _run_template(op: str, *args: torch.Tensor) -> torch.Tensor:
    """Evaluate the op's code template as the code generator writes it, against the runtime."""
    names = [f"a{i}" for i in range(len(args))]
    code = get_primitive(op).template.format(*names)
    return eval(code, {"torch": torch, **vars(F)}, dict(zip(names, args, strict=True)))


def _operands(arity: int, dtype=torch.float64) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(arity)
    # Spread values, with no ties between operands (max/min) and nothing at exactly 0.
    out = [torch.randn(2, 3, 4, 5, generator=gen, dtype=dtype) * 2 + 0.01 * k for k in range(arity)]
    return [t.requires_grad_() for t in out]


def test_reference_covers_every_elementwise_op():
    assert set(REFERENCE) == set(ELEMENTWISE_OPS)


@pytest.mark.parametrize("op", sorted(ELEMENTWISE_OPS))
def test_elementwise_template_values_and_gradients(op):
    prim = get_primitive(op)
    args = _operands(prim.arity)
    got = _run_template(op, *args)
    want = REFERENCE[op](*args)
    torch.testing.assert_close(got, want)
    if op == "stop_gradient":
        assert not got.requires_grad
        return
    weights = torch.randn_like(got)
    got_grads = torch.autograd.grad((got * weights).sum(), args)
    want_grads = torch.autograd.grad((want * weights).sum(), args)
    for g, w in zip(got_grads, want_grads, strict=True):
        torch.testing.assert_close(g, w)


@pytest.mark.parametrize("op", sorted(ELEMENTWISE_OPS))
def test_elementwise_compiled_layer(op):
    """The op in a compiled layer, applied to x (and a per-channel vector), as a direct formula."""
    c = 3
    prim = get_primitive(op)
    graph = LayerGraph(op)
    operands = ["x"] if prim.arity == 1 else ["x", graph.vector("v", 0.5)]
    graph.set_output(graph.add(op, *operands))
    layer = build_layer(graph.validate(), c).double()
    if prim.arity == 2:
        with torch.no_grad():
            layer.v.copy_(torch.tensor([-1.5, 0.25, 3.0]))
    x = _operands(1)[0]
    got = layer(x)
    args = [x] if prim.arity == 1 else [x, layer.v.view(1, c, 1, 1)]
    want = REFERENCE[op](*args)
    torch.testing.assert_close(got, want)
    if op == "stop_gradient":
        assert not got.requires_grad
        return
    leaves = [x, *layer.parameters()]
    got_grads = torch.autograd.grad(got.sum(), leaves)
    want_grads = torch.autograd.grad(want.sum(), leaves)
    for g, w in zip(got_grads, want_grads, strict=True):
        torch.testing.assert_close(g, w)


def test_commutative_ops_are_commutative():
    a, b = _operands(2)
    for op in COMMUTATIVE_OPS:
        torch.testing.assert_close(_run_template(op, a, b), _run_template(op, b, a))
    assert {"add", "mul", "max", "min"} == COMMUTATIVE_OPS


# ---- guards ---------------------------------------------------------------------------------------


def test_div_by_near_zero_is_floored_with_sign():
    a = torch.ones(6, requires_grad=True)
    b = torch.tensor([0.0, 1e-9, -1e-9, -0.0, 1e-6, -2.0], requires_grad=True)
    out = F.safe_div(a, b)
    torch.testing.assert_close(out, torch.tensor([1e6, 1e6, -1e6, 1e6, 1e6, -0.5]))
    out.sum().backward()
    assert torch.isfinite(a.grad).all() and torch.isfinite(b.grad).all()
    # The floored entries pass no gradient to b; the others get -a / b^2.
    torch.testing.assert_close(b.grad, torch.tensor([0.0, 0.0, 0.0, 0.0, -1e12, -0.25]))
    torch.testing.assert_close(a.grad, 1 / torch.tensor([1e-6, 1e-6, -1e-6, 1e-6, 1e-6, -2.0]))


def test_log_of_negatives_is_sign_symmetric():
    a = torch.tensor([-3.0, -1e-3, 0.0, 1e-3, 3.0, -1e30], requires_grad=True)
    out = F.safe_log(a)
    want = torch.tensor([-math.log(4.0), -math.log1p(1e-3), 0.0, math.log1p(1e-3), math.log(4.0), -69.0776])
    torch.testing.assert_close(out, want)
    out.sum().backward()
    assert torch.isfinite(a.grad).all()
    torch.testing.assert_close(a.grad[[0, 4]], torch.tensor([0.25, 0.25]))


def test_sqrt_of_negatives_and_zero():
    a = torch.tensor([-4.0, -1e-12, 0.0, 1e-12, 9.0], requires_grad=True)
    out = F.safe_sqrt(a)
    torch.testing.assert_close(out, torch.tensor([-2.0, -1e-3, 0.0, 1e-3, 3.0]))
    out.sum().backward()
    assert torch.isfinite(a.grad).all()
    torch.testing.assert_close(a.grad[[0, 4]], torch.tensor([0.25, 1 / 6]))
    assert a.grad[2] == 0  # clamped below SQRT_EPS: no gradient, and no inf


def test_exp_overflow_is_clamped():
    a = torch.tensor([-50.0, 0.0, 9.0, 10.0, 11.0, 1e4], requires_grad=True)
    out = F.safe_exp(a)
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out, torch.exp(torch.tensor([-50.0, 0.0, 9.0, 10.0, 10.0, 10.0])))
    out.sum().backward()
    torch.testing.assert_close(a.grad[:3], torch.exp(torch.tensor([-50.0, 0.0, 9.0])))
    assert (a.grad[4:] == 0).all()  # beyond the clamp the gradient is cut, not inf


def test_exp_fits_float16():
    a = torch.tensor([0.0, 10.0, 12.0, 1000.0], dtype=torch.float16)
    assert torch.isinf(torch.exp(a)).any()  # the raw op overflows in half precision
    out = F.safe_exp(a)
    assert out.dtype == torch.float16
    assert torch.isfinite(out).all()
    torch.testing.assert_close(
        out.float(), torch.tensor([1.0, math.exp(10)] + [math.exp(10)] * 2), rtol=1e-3, atol=0
    )


def _guard_layer(divide_by_zero: bool):
    """log, sqrt and exp of extreme values, optionally divided by x - x (zero)."""
    graph = LayerGraph("guards")
    log = graph.add("log", graph.add("neg", "x"))
    root = graph.add("sqrt", graph.add("sub", log, "x"))
    big = graph.add("exp", graph.add("mul", "x", graph.const(100.0)))
    out = graph.add("add", root, big)
    if divide_by_zero:
        out = graph.add("div", out, graph.add("sub", "x", "x"))
    graph.set_output(out)
    return build_layer(graph.validate(), 2)


X_EXTREME = torch.tensor([[[[0.0, -5.0], [5.0, 1e-8]], [[-1e-8, 100.0], [-100.0, 0.5]]]])


def test_guarded_ops_stay_finite_in_a_compiled_layer():
    x = X_EXTREME.clone().requires_grad_()
    out = _guard_layer(True)(x)
    out.sum().backward()
    assert torch.isfinite(out).all() and torch.isfinite(x.grad).all()


def test_guarded_ops_in_float16():
    """exp's clamp fits half precision; log and sqrt stay finite (division by ~0 does not fit it)."""
    x = X_EXTREME.half().requires_grad_()
    out = _guard_layer(False)(x)
    assert out.dtype == torch.float16
    want = _guard_layer(False)(X_EXTREME.double())
    torch.testing.assert_close(out.double(), want, rtol=1e-2, atol=1e-2)
    out.float().sum().backward()
    assert torch.isfinite(x.grad).all()


# ---- moments --------------------------------------------------------------------------------------

EPS = 1e-3
F32 = {"rtol": 1e-5, "atol": 1e-5}  # statistics are computed in float32, also for float64 input


def _stat(t: torch.Tensor, dims, statistic: str) -> torch.Tensor:
    mean = t.mean(dims, keepdim=True)
    var = ((t - mean) ** 2).mean(dims, keepdim=True)
    return {
        "mean": mean,
        "var": var,
        "std": torch.sqrt(var + EPS),
        "rms": torch.sqrt((t * t).mean(dims, keepdim=True) + EPS),
    }[statistic]


def _ref_moment(x: torch.Tensor, axes: str, statistic: str, groups: int) -> torch.Tensor:
    n, c, h, w = x.shape
    if axes == "layer":
        return _stat(x, (1, 2, 3), statistic)
    if axes == "instance":
        return _stat(x, (2, 3), statistic)
    if axes == "batch":
        return _stat(x, (0, 2, 3), statistic)
    grouped = x.reshape(n, groups, c // groups, h, w)
    return _stat(grouped, (2, 3, 4), statistic).expand_as(grouped).reshape(n, c, h, w)


STATISTIC_OPS = sorted(n for n, p in PRIMITIVES.items() if p.kind in (Kind.MOMENT, Kind.BATCH_MOMENT))


def _input(shape=(3, 8, 4, 5), dtype=torch.float64) -> torch.Tensor:
    gen = torch.Generator().manual_seed(7)
    return (torch.randn(shape, generator=gen, dtype=dtype) * 1.5 + 0.3).requires_grad_()


def test_statistic_ops_are_the_sixteen():
    assert len(STATISTIC_OPS) == 16
    assert {get_primitive(op).axes for op in STATISTIC_OPS} == {"batch", "layer", "instance", "group"}


@pytest.mark.parametrize("op", [o for o in STATISTIC_OPS if not o.startswith("batch_")])
def test_per_sample_moment_runtime(op):
    prim = get_primitive(op)
    x = _input(dtype=torch.float32)
    fn = {"layer": F.layer_moment, "instance": F.instance_moment}.get(prim.axes)
    got = fn(x, prim.statistic, EPS) if fn else F.group_moment(x, prim.statistic, EPS, 4)
    want = _ref_moment(x.double(), prim.axes, prim.statistic, 4).float()
    assert got.dtype == x.dtype
    assert torch.broadcast_shapes(got.shape, x.shape) == x.shape  # reduced axes kept, for broadcasting
    torch.testing.assert_close(got.expand_as(x), want.expand_as(x), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("op", STATISTIC_OPS)
def test_moment_in_compiled_layer(op):
    """``x - op(x)`` (group ops with groups=4) against the direct computation, with gradients."""
    prim = get_primitive(op)
    graph = LayerGraph(op, hyperparameters={"eps": EPS, "groups": 4})
    graph.set_output(graph.add("sub", "x", graph.add(op, "x")))
    layer = build_layer(graph.validate(), 8).double().train()
    x = _input()
    got = layer(x)
    want = x - _ref_moment(x, prim.axes, prim.statistic, 4)
    torch.testing.assert_close(got, want, **F32)
    weights = torch.randn_like(got)
    (g,) = torch.autograd.grad((got * weights).sum(), x)
    (w,) = torch.autograd.grad((want * weights).sum(), x)
    torch.testing.assert_close(g, w, **F32)


@pytest.mark.parametrize("statistic", ["mean", "var", "std", "rms"])
def test_group_moment_node_groups_and_divisor_fallback(statistic):
    """A node's own groups beat the layer's; a count that does not divide C falls back to a divisor."""
    x = _input()
    for node_groups, used in [(2, 2), (3, 2), (8, 8), (100, 8), (1, 1)]:
        graph = LayerGraph("g", hyperparameters={"eps": EPS, "groups": 4})
        graph.set_output(graph.add("sub", "x", graph.add(f"group_{statistic}", "x", groups=node_groups)))
        got = build_layer(graph.validate(), 8).double()(x)
        torch.testing.assert_close(got, x - _ref_moment(x, "group", statistic, used), **F32)


def test_resolve_groups():
    assert [F.resolve_groups(12, g) for g in (1, 5, 6, 7, 12, 32, 0)] == [1, 4, 6, 6, 12, 12, 1]


@pytest.mark.parametrize("statistic", ["mean", "var", "std", "rms"])
def test_batch_moment_running_estimate(statistic):
    """Training: the batch statistic; the running estimate follows BatchNorm; eval uses it."""
    momentum = 0.25
    graph = LayerGraph("b", hyperparameters={"eps": EPS, "momentum": momentum})
    graph.set_output(graph.add("sub", "x", graph.add(f"batch_{statistic}", "x")))
    layer = build_layer(graph.validate(), 8).double()
    x = _input()
    layer.train()
    layer(x)
    n = x.numel() / x.shape[1]
    mean = x.detach().mean((0, 2, 3))
    unbiased = x.detach().var((0, 2, 3), unbiased=True)
    sq = x.detach().square().mean((0, 2, 3))
    buffers = dict(layer.named_buffers())
    if statistic == "mean":
        (running,) = buffers.values()
        torch.testing.assert_close(running, momentum * mean)
        expected = running
    elif statistic in ("var", "std"):
        (running,) = buffers.values()
        torch.testing.assert_close(running, (1 - momentum) + momentum * unbiased)
        # cross-check the unbiased correction against BatchNorm2d itself
        bn = torch.nn.BatchNorm2d(8, momentum=momentum).double().train()
        bn(x.detach())
        torch.testing.assert_close(running, bn.running_var)
        expected = running if statistic == "var" else (running + EPS).sqrt()
    else:
        (running,) = buffers.values()
        torch.testing.assert_close(running, (1 - momentum) + momentum * sq)
        expected = (running + EPS).sqrt()
    assert n > 1
    layer.eval()
    out = layer(x)
    torch.testing.assert_close(out, x - expected.view(1, -1, 1, 1))
    before = {k: v.clone() for k, v in layer.named_buffers()}
    layer(x)
    for k, v in layer.named_buffers():
        assert torch.equal(v, before[k])  # eval never updates


def test_moving_moment_uses_running_estimate_in_training():
    graph = LayerGraph("m", hyperparameters={"eps": EPS, "momentum": 0.5})
    graph.set_output(graph.add("sub", "x", graph.add("moving_mean", "x")))
    layer = build_layer(graph.validate(), 8).double().train()
    x = _input()
    out1 = layer(x)
    torch.testing.assert_close(out1, x)  # the estimate before this step's update: zeros
    torch.testing.assert_close(layer.running_mean, 0.5 * x.detach().mean((0, 2, 3)))
    out2 = layer(x)
    torch.testing.assert_close(out2, x - 0.5 * x.mean((0, 2, 3)).view(1, -1, 1, 1))


def test_moments_on_dense_input():
    x = _input((6, 8), torch.float32)
    torch.testing.assert_close(F.layer_moment(x, "mean", EPS), x.mean(1, keepdim=True))
    torch.testing.assert_close(F.group_moment(x, "var", EPS, 8), torch.zeros_like(x))
    torch.testing.assert_close(F.channel_statistic(x, "mean"), x.mean(0))
    with pytest.raises(ValueError, match="instance moments need spatial dims"):
        F.instance_moment(x, "mean", EPS)


def test_moments_in_float16_are_computed_in_float32():
    x = (_input(dtype=torch.float32) * 100).detach()
    half = x.half()
    for fn in (F.layer_moment, F.instance_moment):
        got = fn(half, "var", EPS)
        assert got.dtype == torch.float16
        torch.testing.assert_close(got.float(), fn(half.float(), "var", EPS), rtol=1e-3, atol=0)
    assert torch.isinf(half.square()).any()  # squares overflow in half precision, not in float32
    rms = F.layer_moment(half, "rms", EPS)
    assert torch.isfinite(rms).all()
    torch.testing.assert_close(
        rms.float(), x.square().mean((1, 2, 3), keepdim=True).add(EPS).sqrt(), rtol=1e-3, atol=0
    )
    with pytest.raises(ValueError, match="unknown statistic"):
        F.reduce_moment(x, (1,), "median", EPS)


# ---- registry -------------------------------------------------------------------------------------


def test_registry_sets():
    assert len(PRIMITIVES) == 16 + 16 + 4 + 2
    moving = {n for n in PRIMITIVES if n.startswith("moving_")}
    proxy = {n for n in PRIMITIVES if n.startswith("proxy_")}
    assert moving == {"moving_mean", "moving_var", "moving_std", "moving_rms"}
    assert proxy == {"proxy_mean", "proxy_var"}
    assert not SEARCH_OPS & (moving | proxy | {"stop_gradient"})
    assert (ELEMENTWISE_OPS - {"stop_gradient", "erf"}) | set(STATISTIC_OPS) == SEARCH_OPS
    assert SEARCH_OPS | {"erf"} == TOKEN_SEARCH_OPS
    assert {n for n in MOMENT_OPS if n.split("_")[0] in ("batch", "moving", "instance")} == TOKEN_MIXING_OPS
    assert set(STATISTIC_OPS) | moving | proxy == MOMENT_OPS
    assert {f"batch_{s}" for s in ("mean", "var", "std", "rms")} | moving == BATCH_DEPENDENT_OPS
    assert not any(op.startswith("batch_") or op.startswith("moving_") for op in BATCH_INDEPENDENT_SEARCH_OPS)
    assert {"batch_mean", "batch_var", "batch_std", "batch_rms"} == SEARCH_OPS - BATCH_INDEPENDENT_SEARCH_OPS
    assert all(not PRIMITIVES[op].batch_dependent for op in BATCH_INDEPENDENT_SEARCH_OPS)


def test_primitive_records():
    for name, prim in PRIMITIVES.items():
        assert prim.name == name and prim.doc
        fields = {"eps": "e", "groups": "g", "tracked": "t", "running": "r", "proxy_values": "p", "x": "x"}
        text = prim.template.format(*[f"a{i}" for i in range(prim.arity)], **fields)
        compile(text, name, "eval")  # every template is a Python expression
        if prim.kind is not Kind.ELEMENTWISE and prim.kind is not Kind.PROXY:
            assert prim.statistic in ("mean", "var", "std", "rms")
            assert prim.axes in ("batch", "layer", "instance", "group")
        assert ("groups" in prim.attrs) == (prim.axes == "group")
    assert get_primitive("batch_std").tracked == "var"
    assert get_primitive("moving_rms").tracked == "sq"


def test_unknown_op():
    with pytest.raises(UnknownOpError, match="unknown op 'softmax'; known ops: abs, add"):
        get_primitive("softmax")
    with pytest.raises(GraphError, match="unknown op 'softmax'"):
        LayerGraph().add("softmax", "x")


# ---- facts on the records, checked against torch --------------------------------------------------

SHAPE, GROUPS = (4, 6, 3, 3), 3  # groups of two channels
# Statistics are computed in float32: a std of zero spread is sqrt(MIN_EPS) = DIV_EPS rounded there.
DIV_EPS_F32 = float(torch.tensor(F.DIV_EPS, dtype=torch.float32))


def _evaluate(prim, args: list[torch.Tensor], eps: float = 1e-30, template: str | None = None):
    """The op's template (or another of its record) evaluated against the runtime, as the code
    generator writes it: batch and running statistics are those of the first operand, proxy values
    are the first operand (its axis 0 the proxy samples)."""
    names = [f"a{i}" for i in range(len(args))]
    statistic = f'channel_statistic(a0, "{prim.tracked}")'
    fields = {"eps": repr(eps), "groups": GROUPS, "x": "a0", "proxy_values": "a0"}
    fields |= {"tracked": statistic, "running": statistic}
    code = (template or prim.template).format(*names, **fields)
    return eval(code, {"torch": torch, **vars(F)}, dict(zip(names, args, strict=True)))


def _satisfying(sign: Sign, seed: int, dtype: torch.dtype) -> torch.Tensor:
    """Random values of which exactly ``sign`` is known, reaching its bound: values of either sign
    from 1e-8 to 1e3 in size, exact zeros, -1000 (exp and sigmoid underflow to 0), a constant sample
    and two constant channels (a group: every moment's variance is 0 there)."""
    gen = torch.Generator().manual_seed(seed)
    scale = 10.0 ** torch.randint(-8, 4, SHAPE, generator=gen)
    values = torch.randn(SHAPE, generator=gen, dtype=torch.float64) * scale
    values[0] = 0.0
    values[:, :2] = 0.0
    values[1, 2, 0] = -1000.0
    if sign is Sign.NONNEGATIVE:
        values = values.abs()
    elif sign is Sign.POSITIVE:
        values = values.abs() + F.DIV_EPS
    return values.to(dtype)


def _holds(sign: Sign, values: torch.Tensor) -> bool:
    if sign is Sign.POSITIVE:
        return bool((values >= DIV_EPS_F32).all())
    if sign is Sign.NONNEGATIVE:
        return bool((values >= 0).all())
    return True


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("op", sorted(PRIMITIVES))
def test_sign_facts_hold_on_random_inputs(op, dtype):
    """Whatever an op's record proves of its result from its inputs' signs holds on inputs with just
    those signs: a division the code generator leaves unguarded on that proof never divides by less
    than DIV_EPS."""
    prim = get_primitive(op)
    for k, premises in enumerate(itertools.product(Sign, repeat=prim.arity)):
        args = [_satisfying(sign, 10 * k + i, dtype) for i, sign in enumerate(premises)]
        claim = prim.sign_of(premises)
        result = _evaluate(prim, args)
        assert _holds(claim, result), f"{op}{tuple(s.name for s in premises)} is not {claim.name}"


def test_sign_facts_are_not_vacuous():
    assert {get_primitive(op).sign_of([Sign.UNKNOWN] * get_primitive(op).arity) for op in PRIMITIVES} == set(
        Sign
    )
    assert get_primitive("add").sign_of([Sign.POSITIVE, Sign.NONNEGATIVE]) is Sign.POSITIVE
    assert get_primitive("mul").sign_of([Sign.POSITIVE, Sign.POSITIVE]) is Sign.NONNEGATIVE
    assert get_primitive("max").sign_of([Sign.UNKNOWN, Sign.POSITIVE]) is Sign.POSITIVE
    assert get_primitive("min").sign_of([Sign.UNKNOWN, Sign.POSITIVE]) is Sign.UNKNOWN


@pytest.mark.parametrize("op", sorted(n for n, p in PRIMITIVES.items() if p.unguarded))
def test_unguarded_template_equals_the_guarded_one_past_the_bound(op):
    """Where the last operand is at least DIV_EPS in size (either sign), the guard changes nothing."""
    prim = get_primitive(op)
    args = [_satisfying(Sign.UNKNOWN, i, torch.float64) for i in range(prim.arity - 1)]
    signs = torch.randn(SHAPE, generator=torch.Generator().manual_seed(5)).sign()
    args.append(_satisfying(Sign.POSITIVE, prim.arity, torch.float64) * signs)
    assert torch.equal(_evaluate(prim, args, template=prim.unguarded), _evaluate(prim, args))


@pytest.mark.parametrize("op", sorted(n for n, p in PRIMITIVES.items() if p.with_zero))
def test_with_zero_template(op):
    prim = get_primitive(op)
    (a,) = _operands(1)
    zero = torch.zeros_like(a)
    want = _evaluate(prim, [a], template=prim.with_zero)
    torch.testing.assert_close(_evaluate(prim, [a, zero]), want)
    if prim.commutative:
        torch.testing.assert_close(_evaluate(prim, [zero, a]), want)


def test_symbols_are_the_ops_and_precedence_is_pythons():
    """``a <symbol> b`` computes the op (operands away from any guard), and the declared precedences
    group operators as Python parses them, so rendered formulas read back as the same graph."""
    for symbol, op in INFIX_OPS.items():
        a, b = _operands(2)
        torch.testing.assert_close(eval(f"a {symbol} b"), _run_template(op, a, b))
    for symbol, op in PREFIX_OPS.items():
        (a,) = _operands(1)
        torch.testing.assert_close(eval(f"{symbol}a"), _run_template(op, a))
    assert set(INFIX_OPS) == {"+", "-", "*", "/"} and set(PREFIX_OPS) == {"-"}
    with_symbols = sorted(op for op, p in PRIMITIVES.items() if p.symbol)
    assert sorted([*INFIX_OPS.values(), *PREFIX_OPS.values()]) == with_symbols  # one op per symbol
    for left, right in itertools.product(INFIX_OPS, repeat=2):
        tree = ast.parse(f"a {left} b {right} c", mode="eval").body
        grouped_left = get_primitive(INFIX_OPS[left]).precedence >= get_primitive(INFIX_OPS[right]).precedence
        assert isinstance(tree.left, ast.BinOp) == grouped_left, (left, right)
    for prefix, infix in itertools.product(PREFIX_OPS, INFIX_OPS):
        tree = ast.parse(f"{prefix}a {infix} b", mode="eval").body
        binds_tighter = (
            get_primitive(PREFIX_OPS[prefix]).precedence > get_primitive(INFIX_OPS[infix]).precedence
        )
        assert isinstance(tree, ast.BinOp) == binds_tighter, (prefix, infix)


FUSED_OPS = sorted(n for n, p in PRIMITIVES.items() if p.fused_kernel)


def test_every_std_moment_but_the_moving_one_has_a_fused_kernel():
    assert FUSED_OPS == ["batch_std", "group_std", "instance_std", "layer_std"]
    for op in FUSED_OPS:
        std, mean = get_primitive(op), get_primitive(get_primitive(op).fuses_with)
        assert (mean.kind, mean.axes, mean.statistic) == (std.kind, std.axes, "mean")


@pytest.mark.parametrize("affine", [False, True], ids=["plain", "affine"])
@pytest.mark.parametrize("op", FUSED_OPS)
def test_fused_kernel_computes_the_normalization(op, affine):
    """``(a - mean(a)) / std(a) * weight + bias`` from the primitives equals one call of the std
    record's kernel; for batch moments in training and in eval (running estimates), where batch_norm
    also updates the running estimates as the batch moments' tracking does."""
    std = get_primitive(op)
    mean = get_primitive(std.fuses_with)
    gen = torch.Generator().manual_seed(11)
    a = torch.randn(SHAPE, generator=gen) * 2 + 0.5
    weight, bias = (torch.randn(SHAPE[1], generator=gen) for _ in range(2))
    running = {"mean": torch.randn(SHAPE[1], generator=gen), "var": torch.rand(SHAPE[1], generator=gen) + 0.5}
    eps, momentum = 1e-3, 0.25
    for training in (True, False) if std.batch_dependent else (True,):
        if training:
            centered = a - _evaluate(mean, [a], eps)
            want = centered / _evaluate(std, [a], eps)
        else:
            want = (a - F.as_channel(running["mean"], a)) / F.channel_moment(running["var"], "std", eps, a)
        if affine:
            want = want * F.as_channel(weight, a) + F.as_channel(bias, a)
        names = {"a": a, "w": weight, "b": bias, "rm": running["mean"].clone(), "rv": running["var"].clone()}
        fields = {"weight": "w" if affine else "None", "bias": "b" if affine else "None", "eps": eps}
        fields |= {"groups": GROUPS, "running_mean": "rm", "running_var": "rv"}
        fields |= {"training": training, "momentum": momentum}
        code = std.fused_kernel.format("a", **fields)
        got = eval(code, {"torch": torch, **vars(F)}, names)
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)
        if std.batch_dependent:
            for base, key in (("mean", "rm"), ("var", "rv")):
                want_running = running[base].clone()
                if training:
                    F.update_running(want_running, F.channel_statistic(a, base), momentum, a, base)
                torch.testing.assert_close(names[key], want_running, msg=f"{op}: running {base}")


# ---- op names stay in the registry --------------------------------------------------------------

OP_NAMES = {*PRIMITIVES, *(kind.value for kind in Leaf), "param"}


def _is_op(node: ast.AST) -> bool:
    return isinstance(node, ast.Attribute) and node.attr == "op"


def _op_name_tests(source: str) -> list[int]:
    """Lines that test an op's name: ``.op`` compared to an op or leaf name, or string surgery on it."""
    lines = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Compare):
            operands = [node.left, *node.comparators]
            strings = {c.value for o in operands for c in ast.walk(o) if isinstance(c, ast.Constant)}
            if any(_is_op(o) for o in operands) and strings & OP_NAMES:
                lines.append(node.lineno)
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and _is_op(node.func.value):
            lines.append(node.lineno)
    return sorted(set(lines))


def test_no_module_outside_primitives_tests_op_names():
    """What the compiler and the mutator need to know about an op is a fact on its record: code in
    evosearch/ asks the record (or compares to ``Leaf`` members); it never tests an op's name."""
    offences = {
        str(path.relative_to(Path(evosearch.__file__).parent)): lines
        for path in sorted(Path(evosearch.__file__).parent.rglob("*.py"))
        if (lines := _op_name_tests(path.read_text()))
    }
    assert not offences


def test_op_name_tests_are_found():
    source = """
if node.op in ("abs", "exp") or graph.node(i).op == "const":
    pass
if mean.op != std.op.replace("_std", "_mean") or node.op == "call_module" or node.op == Leaf.CONST:
    pass
"""
    assert _op_name_tests(source) == [2, 4]
