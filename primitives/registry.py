"""The op vocabulary: one declarative record per primitive, built from tables.

A primitive says how many inputs it takes, what kind of op it is, whether it looks across the batch,
and how it is written in generated code (``template``: a Python expression over operand names
``{0}``, ``{1}``… and layer settings ``{eps}``, ``{groups}``). The code generator is the only reader
of templates; the functions they call live in ``primitives.functional``.

The vocabulary is closed: anything composable (clip, SiLU, an affine) is written as a graph of these.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class Kind(str, enum.Enum):
    ELEMENTWISE = "elementwise"
    MOMENT = "moment"  # per-sample statistic: layer, instance or group axes
    BATCH_MOMENT = "batch_moment"  # batch statistic in training, running estimate in eval
    MOVING = "moving"  # the running estimate of a batch statistic, in training too
    PROXY = "proxy"  # moment of a sub-graph re-evaluated on Gaussian proxy samples


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

    @property
    def batch_dependent(self) -> bool:
        return self.kind in (Kind.BATCH_MOMENT, Kind.MOVING)

    @property
    def tracked(self) -> str:
        """For batch and moving moments: the running statistic behind the op (mean, var, sq)."""
        return {"mean": "mean", "var": "var", "std": "var", "rms": "sq"}.get(self.statistic, "")


def _elementwise(name, arity, template, doc, guard="none", commutative=False) -> Primitive:
    return Primitive(name, arity, Kind.ELEMENTWISE, template, doc, guard, commutative)


_ELEMENTWISE = [
    _elementwise("add", 2, "{0} + {1}", "a + b", commutative=True),
    _elementwise("sub", 2, "{0} - {1}", "a - b"),
    _elementwise("mul", 2, "{0} * {1}", "a * b", commutative=True),
    _elementwise("div", 2, "safe_div({0}, {1})", "a / b", "|b| floored at 1e-6, sign kept"),
    _elementwise("max", 2, "torch.maximum({0}, {1})", "max(a, b)", commutative=True),
    _elementwise("min", 2, "torch.minimum({0}, {1})", "min(a, b)", commutative=True),
    _elementwise("neg", 1, "-{0}", "-a"),
    _elementwise("sigmoid", 1, "torch.sigmoid({0})", "1 / (1 + exp(-a))"),
    _elementwise("tanh", 1, "torch.tanh({0})", "tanh(a)"),
    _elementwise("exp", 1, "safe_exp({0})", "exp(a)", "argument clamped at 10 (fits float16)"),
    _elementwise("log", 1, "safe_log({0})", "log", "sign-safe: sign(a) * log(1 + |a|)"),
    _elementwise("abs", 1, "torch.abs({0})", "|a|"),
    _elementwise("square", 1, "torch.square({0})", "a * a"),
    _elementwise("sqrt", 1, "safe_sqrt({0})", "sqrt", "sign-safe: sign(a) * sqrt(max(|a|, 1e-6))"),
    _elementwise("stop_gradient", 1, "{0}.detach()", "a, with no gradient flowing back"),
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
_MOMENT_TEMPLATES = {
    "layer": 'layer_moment({0}, "{statistic}", {eps})',
    "instance": 'instance_moment({0}, "{statistic}", {eps})',
    "group": 'group_moment({0}, "{statistic}", {eps}, {groups})',
    # {tracked} is the per-channel statistic of this batch (training) or the running one (eval).
    "batch": 'channel_moment({tracked}, "{statistic}", {eps}, {0})',
}


def _moments() -> list[Primitive]:
    out = []
    for axes, template in _MOMENT_TEMPLATES.items():
        kind = Kind.BATCH_MOMENT if axes == "batch" else Kind.MOMENT
        for statistic, stat_doc in STATISTIC_DOC.items():
            out.append(
                Primitive(
                    name=f"{axes}_{statistic}",
                    arity=1,
                    kind=kind,
                    template=template.replace("{statistic}", statistic),
                    doc=f"{stat_doc} {AXES_DOC[axes]}",
                    guard="float32 statistics"
                    + (", eps inside the root" if statistic in ("std", "rms") else ""),
                    axes=axes,
                    statistic=statistic,
                    attrs=frozenset({"groups"}) if axes == "group" else frozenset(),
                )
            )
        if axes == "batch":
            out.extend(
                Primitive(
                    name=f"moving_{statistic}",
                    arity=1,
                    kind=Kind.MOVING,
                    template=f'channel_moment({{running}}.clone(), "{statistic}", {{eps}}, {{0}})',
                    doc=f"running estimate of the batch {stat_doc}, before this step's update",
                    guard="float32 statistics",
                    axes="batch",
                    statistic=statistic,
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


class UnknownOpError(KeyError):
    def __init__(self, name: str):
        super().__init__(name)
        self.name = name

    def __str__(self) -> str:
        return f"unknown op {self.name!r}; known ops: {', '.join(sorted(PRIMITIVES))}"


def get_primitive(name: str) -> Primitive:
    try:
        return PRIMITIVES[name]
    except KeyError:
        raise UnknownOpError(name) from None
