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


class Layout(str, enum.Enum):
    """The tensor layout a layer is for: the shape of its input, and so the meaning of each moment's axes.

    A graph states its layout, and a slot takes one layout: a LayerNorm slot of a transformer does not
    take a layer written for the channels of an image, and the reverse.
    """

    IMAGE = "image"  # (N, C, H, W), or (N, C): channels at dim 1, as BatchNorm2d and GroupNorm take it
    TOKENS = "tokens"  # (N, L, C): features last, as LayerNorm and RMSNorm take it

    def __str__(self) -> str:
        return self.value

    @property
    def shape(self) -> str:
        return _LAYOUT_SHAPES[self]

    @property
    def channel_dim(self) -> int:
        """The dim of an input that holds the channels (features): 1 of an image, the last of tokens."""
        return -1 if self is Layout.TOKENS else 1

    @classmethod
    def parse(cls, value: object) -> Layout:
        """The layout ``value`` names; a ValueError listing the layouts for anything else."""
        try:
            return cls(value)
        except ValueError:
            layouts = ", ".join(m.value for m in cls)
            raise ValueError(f"layout must be one of {layouts}, got {repr(value)[:40]}") from None


_LAYOUT_SHAPES = {Layout.IMAGE: "(N, C, H, W)", Layout.TOKENS: "(N, L, C)"}


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
    template: str  # the image layout's; element-wise ops have one template for every layout
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
    # The token layout's template and fused kernel, where they differ from the image layout's (moments).
    # A moment whose token_template is "" does not exist there (proxy moments need per-channel samples).
    token_template: str | None = None
    token_fused_kernel: str = ""

    def template_for(self, layout: Layout) -> str:
        if layout is Layout.TOKENS and self.token_template is not None:
            return self.token_template
        return self.template

    def fused_kernel_for(self, layout: Layout) -> str:
        return self.token_fused_kernel if layout is Layout.TOKENS else self.fused_kernel

    def fuses_in(self, layout: Layout) -> bool:
        """Whether ``(a - mean(a)) / self(a)`` (std; ``fuses_with`` names the mean), or ``a / self(a)``
        (rms, no mean partner), is one kernel call in this layout."""
        return bool(self.fused_kernel_for(layout))

    def in_layout(self, layout: Layout) -> bool:
        return bool(self.template_for(layout))

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
    _elementwise("erf", 1, "torch.erf({0})", "erf(a), the Gaussian error function (Derf's point-wise map)"),
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

# What each moment's axes mean, per layout: the names stay, the axes follow what the layout's input is.
AXES_DOC = {
    Layout.IMAGE: {
        "batch": "over (N, H, W) per channel",
        "layer": "over (C, H, W) per sample",
        "instance": "over (H, W) per sample and channel",
        "group": "over (C/G, H, W) per sample and group of channels",
    },
    Layout.TOKENS: {
        "batch": "over (N, L) per feature",
        "layer": "over C per token (LayerNorm's and RMSNorm's axes)",
        "instance": "over L per sample and feature",
        "group": "over C/G per token and group of features",
    },
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
_TOKEN_MOMENT_TEMPLATES = {
    "layer": 'token_moment({0}, "{statistic}", {eps})',
    "instance": 'sequence_moment({0}, "{statistic}", {eps})',
    "group": 'token_group_moment({0}, "{statistic}", {eps}, {groups})',
    "batch": 'feature_moment({tracked}, "{statistic}", {eps}, {0})',
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
# The token layout's kernels: LayerNorm's, and RMSNorm's for a / layer_rms(a), times {weight} (no bias).
_TOKEN_FUSED_KERNELS = {
    ("layer", "std"): "layer_normalize({0}, {weight}, {bias}, {eps})",
    ("layer", "rms"): "rms_normalize({0}, {weight}, {eps})",
}


def _moment(
    name: str, axes: str, statistic: str, kind: Kind, templates: tuple[str, str], doc: str
) -> Primitive:
    fused = statistic == "std" and kind is not Kind.MOVING
    root = statistic in ("std", "rms") and kind is not Kind.MOVING
    image, tokens = (t.replace("{statistic}", statistic) for t in templates)
    return Primitive(
        name=name,
        arity=1,
        kind=kind,
        template=image,
        doc=doc,
        guard="float32 statistics" + (", eps inside the root" if root else ""),
        axes=axes,
        statistic=statistic,
        attrs=frozenset({"groups"}) if axes == "group" else frozenset(),
        sign=_STATISTIC_SIGN[statistic],
        fuses_with=f"{axes}_mean" if fused else "",
        fused_kernel=_FUSED_KERNELS[axes] if fused else "",
        token_template=tokens,
        token_fused_kernel=_TOKEN_FUSED_KERNELS.get((axes, statistic), "") if kind is Kind.MOMENT else "",
    )


def _moments() -> list[Primitive]:
    out = []
    for axes, template in _MOMENT_TEMPLATES.items():
        kind = Kind.BATCH_MOMENT if axes == "batch" else Kind.MOMENT
        templates = (template, _TOKEN_MOMENT_TEMPLATES[axes])
        for statistic, stat_doc in STATISTIC_DOC.items():
            doc = f"{stat_doc}: image {AXES_DOC[Layout.IMAGE][axes]}; tokens {AXES_DOC[Layout.TOKENS][axes]}"
            out.append(_moment(f"{axes}_{statistic}", axes, statistic, kind, templates, doc))
        if axes == "batch":
            moving = (
                'channel_moment({running}.clone(), "{statistic}", {eps}, {0})',
                'feature_moment({running}.clone(), "{statistic}", {eps}, {0})',
            )
            out.extend(
                _moment(
                    f"moving_{statistic}",
                    axes,
                    statistic,
                    Kind.MOVING,
                    moving,
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
        token_template="",  # its Gaussian samples stand per channel where the batch axis is: image only
    )
    for statistic in ("mean", "var")
]

PRIMITIVES: dict[str, Primitive] = {p.name: p for p in [*_ELEMENTWISE, *_moments(), *_PROXY]}

ELEMENTWISE_OPS = frozenset(n for n, p in PRIMITIVES.items() if p.kind is Kind.ELEMENTWISE)
MOMENT_OPS = frozenset(n for n, p in PRIMITIVES.items() if p.kind is not Kind.ELEMENTWISE)
BATCH_DEPENDENT_OPS = frozenset(n for n, p in PRIMITIVES.items() if p.batch_dependent)
COMMUTATIVE_OPS = frozenset(n for n, p in PRIMITIVES.items() if p.commutative)
# The EvoNorm search vocabulary: element-wise ops and mean/var/std/rms over the four axes. Moving
# estimates, proxy moments and stop_gradient exist for the hand-designed seeds; erf for the token
# layout's search, which adds it (Derf's map), so that the image search stays EvoNorm's.
SEARCH_OPS = frozenset(
    n for n, p in PRIMITIVES.items() if p.kind in (Kind.ELEMENTWISE, Kind.MOMENT, Kind.BATCH_MOMENT)
) - {"stop_gradient", "erf"}
TOKEN_SEARCH_OPS = SEARCH_OPS | {"erf"}


def search_ops(layout: Layout) -> frozenset[str]:
    """The search vocabulary of a layout."""
    return TOKEN_SEARCH_OPS if layout is Layout.TOKENS else SEARCH_OPS


BATCH_INDEPENDENT_SEARCH_OPS = SEARCH_OPS - BATCH_DEPENDENT_OPS
# Ops that see other tokens of the sequence in the token layout: statistics over L (instance) and over
# (N, L) (batch, moving). A causal model's layer must not use them, or it reads the future.
TOKEN_MIXING_OPS = frozenset(n for n, p in PRIMITIVES.items() if p.axes in ("instance", "batch"))
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
