"""The op vocabulary: one declarative record per primitive, built from tables.

A primitive says how many inputs it takes, what kind of op it is, whether it looks across the batch,
and how it is written in generated code (``template``: a Python expression over operand names
``{0}``, ``{1}``… and layer settings ``{eps}``, ``{groups}``). The code generator is the only reader
of templates; the functions they call live in ``primitives.functional``.

The records also carry what the compiler and the formula language need to know about an op, so that
no other module compares op names:

- ``sign``: how the result relates to zero given what is known of the inputs (:class:`SignRule`);
  a division by a value proven ``>= DIV_EPS`` needs no guard (``unguarded``: the template then).
- ``symbol`` and ``precedence``: the op's infix (or prefix, for arity 1) form in formulas.
- ``with_zero``: the template when one operand is the constant 0 (``max(a, 0)`` is a ReLU).
- ``fuses_with`` and ``fused_kernel`` (std moments): ``(a - mean(a)) / std(a)`` with that mean
  partner, and a ``weight * . + bias`` after it, is one call of a fused torch kernel.

The vocabulary is closed: anything composable (clip, SiLU, an affine) is written as a graph of these.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Sequence
from dataclasses import dataclass


class Kind(str, enum.Enum):
    ELEMENTWISE = "elementwise"
    MOMENT = "moment"  # per-sample statistic: layer, instance or group axes
    BATCH_MOMENT = "batch_moment"  # batch statistic in training, running estimate in eval
    MOVING = "moving"  # the running estimate of a batch statistic, in training too
    PROXY = "proxy"  # moment of a sub-graph re-evaluated on Gaussian proxy samples


class Sign(enum.IntEnum):
    """What is proven about a value, each fact implying the ones below it."""

    UNKNOWN = 0
    NONNEGATIVE = 1  # >= 0 everywhere
    POSITIVE = 2  # >= DIV_EPS everywhere (primitives.functional): dividing by it needs no guard


class SignRule(enum.Enum):
    """How an op's result :class:`Sign` follows from its inputs' (a test checks each against torch)."""

    UNKNOWN = "unknown"  # nothing proven (sub, neg, tanh, log, means, ...)
    NONNEGATIVE = "nonnegative"  # whatever the inputs: abs, square, sigmoid, exp, variances
    POSITIVE = "positive"  # whatever the inputs: std, rms (eps, floored at MIN_EPS, inside the root)
    ANY = "any"  # what one input is: max
    ALL = "all"  # what every input is: min; unary ops keeping the sign and the DIV_EPS floor (sqrt)
    SUM = "sum"  # non-negative if every input is, positive if moreover one is: add
    PRODUCT = "product"  # non-negative if every input is (small positives multiply to less): mul

    def apply(self, inputs: Sequence[Sign]) -> Sign:
        return _SIGN_RULES[self](inputs)


_SIGN_RULES: dict[SignRule, Callable[[Sequence[Sign]], Sign]] = {
    SignRule.UNKNOWN: lambda inputs: Sign.UNKNOWN,
    SignRule.NONNEGATIVE: lambda inputs: Sign.NONNEGATIVE,
    SignRule.POSITIVE: lambda inputs: Sign.POSITIVE,
    SignRule.ANY: max,
    SignRule.ALL: min,
    SignRule.SUM: lambda inputs: max(inputs) if min(inputs) >= Sign.NONNEGATIVE else Sign.UNKNOWN,
    SignRule.PRODUCT: lambda inputs: Sign.NONNEGATIVE if min(inputs) >= Sign.NONNEGATIVE else Sign.UNKNOWN,
}


@dataclass(frozen=True)
class Primitive:
    name: str
    arity: int
    kind: Kind
    template: str
    doc: str
    guard: str = "none"
    commutative: bool = False
    axes: str = ""  # moments: batch, layer, instance, group
    statistic: str = ""  # moments: mean, var, std, rms
    attrs: frozenset[str] = frozenset()  # node attributes the op accepts
    sign: SignRule = SignRule.UNKNOWN
    unguarded: str = ""  # the template when the last operand is Sign.POSITIVE: the guard changes nothing
    symbol: str = ""  # formulas: infix (arity 2) or prefix (arity 1) operator
    precedence: int = 0  # of the symbol, as in Python: higher binds tighter
    with_zero: str = ""  # the template over the other operand when one operand is the constant 0
    fuses_with: str = ""  # std moments: the mean op of the normalization a fused kernel computes
    fused_kernel: str = ""  # that kernel's call over {0} (a) and {weight}, {bias}, {eps}, ...

    @property
    def batch_dependent(self) -> bool:
        return self.kind in (Kind.BATCH_MOMENT, Kind.MOVING)

    @property
    def tracked(self) -> str:
        """For batch and moving moments: the running statistic behind the op (mean, var, sq)."""
        return {"mean": "mean", "var": "var", "std": "var", "rms": "sq"}.get(self.statistic, "")

    def sign_of(self, inputs: Sequence[Sign]) -> Sign:
        """What is proven about the result, given what is proven about each input."""
        return self.sign.apply(inputs)


def _elementwise(name, arity, template, doc, guard="none", **facts) -> Primitive:
    return Primitive(name, arity, Kind.ELEMENTWISE, template, doc, guard, **facts)


_ELEMENTWISE = [
    _elementwise(
        "add", 2, "{0} + {1}", "a + b", commutative=True, sign=SignRule.SUM, symbol="+", precedence=1
    ),
    _elementwise("sub", 2, "{0} - {1}", "a - b", symbol="-", precedence=1),
    _elementwise(
        "mul", 2, "{0} * {1}", "a * b", commutative=True, sign=SignRule.PRODUCT, symbol="*", precedence=2
    ),
    _elementwise(
        "div",
        2,
        "safe_div({0}, {1})",
        "a / b",
        "|b| floored at 1e-6, sign kept",
        unguarded="{0} / {1}",
        symbol="/",
        precedence=2,
    ),
    _elementwise(
        "max",
        2,
        "torch.maximum({0}, {1})",
        "max(a, b)",
        commutative=True,
        sign=SignRule.ANY,
        with_zero="torch.relu({0})",
    ),
    _elementwise("min", 2, "torch.minimum({0}, {1})", "min(a, b)", commutative=True, sign=SignRule.ALL),
    _elementwise("neg", 1, "-{0}", "-a", symbol="-", precedence=3),
    _elementwise("sigmoid", 1, "torch.sigmoid({0})", "1 / (1 + exp(-a))", sign=SignRule.NONNEGATIVE),
    _elementwise("tanh", 1, "torch.tanh({0})", "tanh(a)"),
    _elementwise(
        "exp",
        1,
        "safe_exp({0})",
        "exp(a)",
        "argument clamped at 10 (fits float16)",
        sign=SignRule.NONNEGATIVE,
    ),
    _elementwise("log", 1, "safe_log({0})", "log", "sign-safe: sign(a) * log(1 + |a|)"),
    _elementwise("abs", 1, "torch.abs({0})", "|a|", sign=SignRule.NONNEGATIVE),
    _elementwise("square", 1, "torch.square({0})", "a * a", sign=SignRule.NONNEGATIVE),
    _elementwise(
        "sqrt", 1, "safe_sqrt({0})", "sqrt", "sign-safe: sign(a) * sqrt(max(|a|, 1e-6))", sign=SignRule.ALL
    ),
    _elementwise("stop_gradient", 1, "{0}.detach()", "a, with no gradient flowing back", sign=SignRule.ALL),
]

AXES_DOC = {
    "batch": "over (N, H, W) per channel",
    "layer": "over (C, H, W) per sample",
    "instance": "over (H, W) per sample and channel",
    "group": "over (C/G, H, W) per sample and group of channels",
}
STATISTIC_DOC = {
    "mean": "mean",
    "var": "biased variance",
    "std": "sqrt(variance + eps)",
    "rms": "sqrt(mean of squares + eps)",
}
_STATISTIC_SIGN = {
    "mean": SignRule.UNKNOWN,
    "var": SignRule.NONNEGATIVE,
    "std": SignRule.POSITIVE,
    "rms": SignRule.POSITIVE,
}
_MOMENT_TEMPLATES = {
    "layer": 'layer_moment({0}, "{statistic}", {eps})',
    "instance": 'instance_moment({0}, "{statistic}", {eps})',
    "group": 'group_moment({0}, "{statistic}", {eps}, {groups})',
    # {tracked} is the per-channel statistic of this batch (training) or the running one (eval).
    "batch": 'channel_moment({tracked}, "{statistic}", {eps}, {0})',
}
# (a - M_mean(a)) / M_std(a), times {weight} plus {bias} (vectors, or None), as one torch kernel.
# batch_norm normalizes with the batch statistics in training and updates both running estimates.
_FUSED_KERNELS = {
    "layer": "group_normalize({0}, 1, {weight}, {bias}, {eps})",
    "instance": "group_normalize({0}, None, {weight}, {bias}, {eps})",
    "group": "group_normalize({0}, {groups}, {weight}, {bias}, {eps})",
    "batch": (
        "batch_normalize({0}, {running_mean}, {running_var}, {weight}, {bias}, {training}, {momentum}, {eps})"
    ),
}


def _moment(name: str, axes: str, statistic: str, kind: Kind, template: str, doc: str) -> Primitive:
    fused = statistic == "std" and kind is not Kind.MOVING
    root = statistic in ("std", "rms") and kind is not Kind.MOVING
    return Primitive(
        name=name,
        arity=1,
        kind=kind,
        template=template.replace("{statistic}", statistic),
        doc=doc,
        guard="float32 statistics" + (", eps inside the root" if root else ""),
        axes=axes,
        statistic=statistic,
        attrs=frozenset({"groups"}) if axes == "group" else frozenset(),
        sign=_STATISTIC_SIGN[statistic],
        fuses_with=f"{axes}_mean" if fused else "",
        fused_kernel=_FUSED_KERNELS[axes] if fused else "",
    )


def _moments() -> list[Primitive]:
    out = []
    for axes, template in _MOMENT_TEMPLATES.items():
        kind = Kind.BATCH_MOMENT if axes == "batch" else Kind.MOMENT
        for statistic, stat_doc in STATISTIC_DOC.items():
            out.append(
                _moment(
                    f"{axes}_{statistic}", axes, statistic, kind, template, f"{stat_doc} {AXES_DOC[axes]}"
                )
            )
        if axes == "batch":
            out.extend(
                _moment(
                    f"moving_{statistic}",
                    axes,
                    statistic,
                    Kind.MOVING,
                    'channel_moment({running}.clone(), "{statistic}", {eps}, {0})',
                    f"running estimate of the batch {stat_doc}, before this step's update",
                )
                for statistic, stat_doc in STATISTIC_DOC.items()
            )
    return out


_PROXY = [
    Primitive(
        name=f"proxy_{statistic}",
        arity=4,
        kind=Kind.PROXY,
        template=f'proxy_moment({{proxy_values}}, "{statistic}", {{x}})',
        doc=(
            f"proxy_{statistic}(a, y, scale, shift): {STATISTIC_DOC[statistic]} of a re-evaluated with "
            "y replaced by Gaussian proxy samples scale * U + shift (U: n normal quantiles per channel)"
        ),
        guard="float32 statistics",
        statistic=statistic,
        sign=_STATISTIC_SIGN[statistic],
    )
    for statistic in ("mean", "var")
]

PRIMITIVES: dict[str, Primitive] = {p.name: p for p in [*_ELEMENTWISE, *_moments(), *_PROXY]}

ELEMENTWISE_OPS = frozenset(n for n, p in PRIMITIVES.items() if p.kind is Kind.ELEMENTWISE)
MOMENT_OPS = frozenset(n for n, p in PRIMITIVES.items() if p.kind is not Kind.ELEMENTWISE)
BATCH_DEPENDENT_OPS = frozenset(n for n, p in PRIMITIVES.items() if p.batch_dependent)
COMMUTATIVE_OPS = frozenset(n for n, p in PRIMITIVES.items() if p.commutative)
# The EvoNorm search vocabulary: element-wise ops and mean/var/std/rms over the four axes. Moving
# estimates, proxy moments and stop_gradient exist for the hand-designed seeds.
SEARCH_OPS = frozenset(
    n for n, p in PRIMITIVES.items() if p.kind in (Kind.ELEMENTWISE, Kind.MOMENT, Kind.BATCH_MOMENT)
) - {"stop_gradient"}
BATCH_INDEPENDENT_SEARCH_OPS = SEARCH_OPS - BATCH_DEPENDENT_OPS
# Formulas: the op written ``a + b`` (INFIX_OPS["+"] == "add") and the one written ``-a``.
INFIX_OPS = {p.symbol: n for n, p in PRIMITIVES.items() if p.symbol and p.arity == 2}
PREFIX_OPS = {p.symbol: n for n, p in PRIMITIVES.items() if p.symbol and p.arity == 1}


class UnknownOpError(KeyError):
    def __init__(self, name: str):
        super().__init__(name)
        self.name = name

    def __str__(self) -> str:
        shown = repr(self.name[:60]) if isinstance(self.name, str) else type(self.name).__name__
        return f"unknown op {shown}; known ops: {', '.join(sorted(PRIMITIVES))}"


def get_primitive(name: str) -> Primitive:
    try:
        return PRIMITIVES[name]
    except KeyError:
        raise UnknownOpError(name) from None
