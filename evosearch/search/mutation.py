"""Random layer graphs and the mutations of the search (EvoNorm-style).

A :class:`SearchSpace` says what new nodes may be: the layout, the allowed primitives, the initial
leaves (the input ``x``, per-channel vectors such as EvoNorm's ``v0`` and ``v1``, per-layer scalars
such as DyT's ``alpha``, constants) and a bound on the number of op nodes. :func:`random_graph` draws
a random DAG over it; :func:`mutate` applies one of four mutations to a parent graph:

- ``change_op``: an op node gets a random allowed op (inputs dropped or added when arities differ);
- ``rewire``: one input of an op node is replaced by a random node earlier in topological order;
- ``insert``: a new random op node is routed into one input of a consumer, or into the output;
- ``delete``: an op node is removed and its consumers are reconnected to one of its inputs.

Children are rebuilt through :class:`~evosearch.layers.graph.LayerGraph`'s public API with the parent's node
names, pruned of what the output no longer uses, validated, and differ structurally from their
parent. Everything random comes from the ``random.Random`` passed in, and nothing depends on set or
hash order, so the same seed gives the same graph in every process.
"""

from __future__ import annotations

import math
import random
import re
from collections.abc import Callable, Container, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from types import MappingProxyType

from evosearch.errors import EvosearchError, GraphError, brief
from evosearch.layers.formula import EVONORM_VECTORS
from evosearch.layers.graph import (
    AFFINE_NAMES,
    INPUT,
    LayerGraph,
    Leaf,
    Node,
    check_identifier,
    format_number,
    is_finite,
)
from primitives import PRIMITIVES, SEARCH_OPS, Kind, Layout

MUTATIONS = ("change_op", "rewire", "insert", "delete")
MAX_ATTEMPTS = 100  # tries of one mutation kind before falling back to another
MAX_RANDOM_ATTEMPTS = 1000  # random DAGs drawn before random_graph gives up
# Random DAGs: an input's weight shrinks by this factor per step back in the order; each leaf weighs
# as much as the op node two steps back.
RECENCY = 0.5


@dataclass(frozen=True)
class SearchSpace:
    """What random graphs and mutations may build.

    ``vectors``, ``scalars`` and ``constants`` are the initial leaves besides ``x`` (EvoNorm: a
    constant zero and the vectors v0 = 0, v1 = 1). ``hyperparameters``, ``final_affine`` and ``layout``
    are given to every random graph; a mutated child keeps its parent's (whose layout must be the
    space's). ``max_nodes`` bounds the op nodes of a random graph and
    of any child that grows (a seed larger than the bound may still be mutated but never grows).
    """

    ops: frozenset[str] = SEARCH_OPS
    max_nodes: int = 14
    vectors: Mapping[str, float] = field(default_factory=lambda: dict(EVONORM_VECTORS))
    constants: tuple[float, ...] = (0.0,)
    hyperparameters: Mapping[str, float | int] = field(default_factory=dict)
    final_affine: bool = True
    layout: Layout = Layout.IMAGE
    scalars: Mapping[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        ops = frozenset(self.ops)
        unknown = sorted(ops - set(PRIMITIVES))
        if not ops or unknown:
            raise EvosearchError(f"search space: unknown or no ops ({', '.join(unknown) or 'empty'})")
        layout = Layout(self.layout)
        foreign = sorted(op for op in ops if not PRIMITIVES[op].in_layout(layout))
        if foreign:
            raise EvosearchError(
                f"search space: op(s) {', '.join(foreign)} have no meaning in the {layout} layout"
            )
        if not isinstance(self.max_nodes, int) or isinstance(self.max_nodes, bool) or self.max_nodes < 1:
            raise EvosearchError(
                f"search space: max_nodes must be a positive integer, got {brief(self.max_nodes)}"
            )
        vectors = {
            check_identifier(k, "vector"): _finite(v, f"vector {k!r}") for k, v in self.vectors.items()
        }
        scalars = {
            check_identifier(k, "scalar"): _finite(v, f"scalar {k!r}") for k, v in self.scalars.items()
        }
        parameters = set(vectors) | set(scalars)
        if set(vectors) & set(scalars):
            raise EvosearchError("search space: a scalar has the name of a vector")
        if self.final_affine and parameters & set(AFFINE_NAMES):
            raise EvosearchError("search space: parameters 'weight' and 'bias' clash with the final affine")
        if parameters & set(self.hyperparameters):
            raise EvosearchError("search space: a hyperparameter has the name of a vector or scalar")
        constants = tuple(_finite(c, "constant") for c in self.constants)
        probe = LayerGraph("space", dict(self.hyperparameters), self.final_affine)
        probe.set_output(INPUT)
        if probe.problems():
            raise EvosearchError("search space: " + "; ".join(probe.problems()))
        object.__setattr__(self, "ops", ops)
        object.__setattr__(self, "layout", layout)
        object.__setattr__(self, "vectors", MappingProxyType(vectors))
        object.__setattr__(self, "scalars", MappingProxyType(scalars))
        object.__setattr__(self, "constants", constants)
        object.__setattr__(self, "hyperparameters", MappingProxyType(dict(self.hyperparameters)))


@dataclass(frozen=True)
class Mutation:
    """What a mutation did, as plain strings (``dataclasses.asdict`` gives JSON).

    ``node`` names the parent's op node that changed or was deleted, or the inserted node (a child keeps
    its parent's node names, unless one clashes with a rebuilt constant's name); ``detail`` says how,
    e.g. ``"mul -> add"`` or ``"input 1: x -> v1"``. Constants appear as their value.
    """

    kind: str
    node: str
    detail: str


def random_graph(rng: random.Random, space: SearchSpace, name: str = "random") -> LayerGraph:
    """A valid random graph over ``space``: k op nodes (k uniform in [1, max_nodes]), pruned.

    Each node draws a random op; one input is the node before it, the others come from the leaves and
    earlier nodes, recent ones favoured, so most of the k nodes survive pruning. Moments only read
    values that depend on x, and the last node, the output, is an element-wise op reading a feature
    map. Draws that are still invalid (e.g. a batch moment of a layer statistic) are redrawn.
    """
    for _ in range(MAX_RANDOM_ATTEMPTS):
        draft = _random_draft(rng, space)
        graph = _build(draft, name, space.hyperparameters, space.final_affine, space.layout)
        if graph is not None and _acceptable(graph, space.ops, space.max_nodes):
            return graph
    raise EvosearchError(f"no valid random graph over the search space after {MAX_RANDOM_ATTEMPTS} draws")


def mutate(
    parent: LayerGraph,
    rng: random.Random,
    space: SearchSpace,
    kinds: Sequence[str] = MUTATIONS,
    weights: Sequence[float] | None = None,
) -> tuple[LayerGraph, Mutation]:
    """A valid child of ``parent`` with a different structural hash, and what changed.

    The kind is drawn from ``kinds`` (with ``weights``); after :data:`MAX_ATTEMPTS` failed tries it
    falls back to the other kinds of positive weight, in random order. New ops come from
    ``space.ops``; the parent's own nodes may use others (a seed's moving moments, proxy moments).
    """
    kinds = list(kinds)
    weights = [1.0] * len(kinds) if weights is None else [float(w) for w in weights]
    unknown = [k for k in kinds if k not in _MUTATORS]
    if not kinds or unknown or len(weights) != len(kinds):
        raise EvosearchError(
            f"mutation kinds must be a non-empty subset of {', '.join(MUTATIONS)} with one weight each; "
            f"got kinds {kinds}, weights {weights}"
        )
    if any(not math.isfinite(w) or w < 0 for w in weights) or sum(weights) <= 0:
        raise EvosearchError(f"mutation weights must be non-negative with a positive sum, got {weights}")
    if parent.layout is not space.layout:
        raise EvosearchError(
            f"cannot mutate {brief(parent.name)}: it is for the {parent.layout} layout, "
            f"the search space for the {space.layout} layout"
        )
    parent_hash = parent.structural_hash()
    allowed = space.ops | parent.ops
    limit = max(space.max_nodes, len(parent.op_nodes))
    draft = _parent_draft(parent, space)
    first = rng.choices(kinds, weights)[0]
    rest = sorted(
        {k for k, w in zip(kinds, weights, strict=True) if w > 0 and k != first}, key=MUTATIONS.index
    )
    rng.shuffle(rest)
    for kind in [first, *rest]:
        if not _feasible(kind, draft, limit):
            continue
        for _ in range(MAX_ATTEMPTS):
            result = _MUTATORS[kind](draft, rng, space)
            if result is None:
                continue
            child_draft, mutation = result
            child = _build(
                child_draft, parent.name, parent.hyperparameters, parent.final_affine, parent.layout
            )
            if (
                child is not None
                and _acceptable(child, allowed, limit)
                and child.structural_hash() != parent_hash
            ):
                return child, mutation
    raise EvosearchError(
        f"cannot mutate {brief(parent.name)}: no valid, different child from {', '.join([first, *rest])} "
        f"in {MAX_ATTEMPTS} attempts each"
    )


# ---- drafts: a graph as plain lists, edited by the mutations and rebuilt through LayerGraph ------


@dataclass
class _Draft:
    leaves: list[Node]  # every leaf but x, in build order
    ops: list[Node]  # op nodes in topological order
    output: str

    def names(self) -> set[str]:
        return {INPUT, *(n.name for n in self.leaves), *(n.name for n in self.ops)}

    def pool(self, position: int) -> list[str]:
        """Nodes an op node at ``position`` may read: x, the leaves, the op nodes before it."""
        return [INPUT, *(n.name for n in self.leaves), *(n.name for n in self.ops[:position])]

    def label(self, name: str) -> str:
        for leaf in self.leaves:
            if leaf.name == name and leaf.op == Leaf.CONST:
                return format_number(leaf.attr("value"))
        return name

    def call(self, node: Node) -> str:
        return f"{node.op}({', '.join(self.label(i) for i in node.inputs)})"


def _finite(value: float, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not is_finite(value):
        raise EvosearchError(f"search space: {what} must be a finite number, got {brief(value)}")
    return float(value)


def _fresh(stem: str, taken: Container[str]) -> str:
    base = re.sub(r"_\d+$", "", stem) or "n"
    name, k = base, 1
    while name in taken:
        name, k = f"{base}_{k}", k + 1
    return name


def _space_leaves(space: SearchSpace, existing: Iterable[Node], final_affine: bool) -> list[Node]:
    """The space's parameters and constants that ``existing`` leaves lack (clashing names skipped)."""
    existing = list(existing)
    taken = {INPUT, *(n.name for n in existing)}
    values = {n.attr("value") for n in existing if n.op == Leaf.CONST}
    out = []
    parameters = [
        *((name, init, Leaf.VECTOR) for name, init in space.vectors.items()),
        *((name, init, Leaf.SCALAR) for name, init in space.scalars.items()),
    ]
    for name, init, kind in parameters:
        if name not in taken and not (final_affine and name in AFFINE_NAMES):
            out.append(Node(name, kind, attrs=(("init", init),)))
            taken.add(name)
    for value in space.constants:
        if value not in values:
            name = _fresh("const", taken)  # a placeholder: the rebuilt graph names its constants
            out.append(Node(name, Leaf.CONST, attrs=(("value", value),)))
            taken.add(name)
            values.add(value)
    return out


def _parent_draft(parent: LayerGraph, space: SearchSpace) -> _Draft:
    leaves = [n for n in parent if n.is_leaf and n.name != INPUT]
    leaves += _space_leaves(space, leaves, parent.final_affine)
    return _Draft(leaves, list(parent.op_nodes), parent.output)


def _random_draft(rng: random.Random, space: SearchSpace) -> _Draft:
    """k random op nodes, each reading the one before it (so few are pruned) and recent others."""
    draft = _Draft(_space_leaves(space, (), space.final_affine), [], INPUT)
    leaves = draft.names()
    taken = set(leaves)
    depends = dict.fromkeys(leaves, False) | {INPUT: True}  # reads x
    spatial = dict(depends)  # a feature map: reads x through element-wise ops only
    ops = sorted(space.ops)
    # The last node is the output, so a feature map: an element-wise op with a feature map input.
    map_ops = [op for op in ops if PRIMITIVES[op].kind is Kind.ELEMENTWISE]
    count = rng.randint(1, space.max_nodes)
    for position in range(count):
        previous = draft.ops[-1].name if draft.ops else None
        last = position == count - 1 and bool(map_ops)
        choices = map_ops if last else ops
        if last and previous is not None and not spatial[previous]:
            # Keep the chain and add a feature map beside it (x * f(...), x / f(...)) where possible.
            choices = [op for op in map_ops if PRIMITIVES[op].arity > 1] or map_ops
        op = rng.choice(choices)
        prim = PRIMITIVES[op]
        pool = draft.pool(position)
        if prim.arity == 1 and prim.kind is not Kind.ELEMENTWISE:
            pool = [p for p in pool if depends[p]]  # a moment of a per-channel value is invalid
        inputs = [_recent_choice(rng, pool, leaves) for _ in range(prim.arity)]
        chain = rng.randrange(prim.arity)
        if previous in pool:
            inputs[chain] = previous
        if last and not any(spatial[i] for i in inputs):
            slot = rng.choice([k for k in range(prim.arity) if k != chain] or [chain])
            inputs[slot] = _recent_choice(rng, [p for p in pool if spatial[p]], leaves)
        name = _fresh(op, taken)
        taken.add(name)
        draft.ops.append(Node(name, op, tuple(inputs)))
        depends[name] = any(depends[i] for i in inputs)
        spatial[name] = prim.kind is Kind.ELEMENTWISE and any(spatial[i] for i in inputs)
    draft.output = draft.ops[-1].name
    return draft


def _recent_choice(rng: random.Random, pool: list[str], leaves: Container[str]) -> str:
    """One of ``pool``: op nodes weigh RECENCY per step back from the newest, leaves RECENCY**2 each."""
    steps = sum(1 for p in pool if p not in leaves)  # op nodes in the pool, in order
    weights, k = [], steps
    for p in pool:
        if p in leaves:
            weights.append(RECENCY**2)
        else:
            k -= 1
            weights.append(RECENCY**k)
    return rng.choices(pool, weights)[0]


def _build(
    draft: _Draft, name: str, hyperparameters: Mapping[str, float | int], final_affine: bool, layout: Layout
) -> LayerGraph | None:
    """The draft as a pruned LayerGraph, with the draft's op node names; None if it cannot be built."""
    graph = LayerGraph(name, dict(hyperparameters), final_affine, layout=layout)
    real = {INPUT: INPUT}
    try:
        for leaf in draft.leaves:
            if leaf.op == Leaf.VECTOR:
                real[leaf.name] = graph.vector(leaf.name, leaf.attr("init"))
            elif leaf.op == Leaf.SCALAR:
                real[leaf.name] = graph.scalar(leaf.name, leaf.attr("init"))
            elif leaf.op == Leaf.CONST:
                real[leaf.name] = graph.const(leaf.attr("value"))
            else:
                real[leaf.name] = graph.hyper(leaf.name)
        for node in draft.ops:
            inputs = [real[i] for i in node.inputs]
            label = node.name if node.name not in graph else _fresh(node.name, graph)
            real[node.name] = graph.add(node.op, *inputs, name=label, **dict(node.attrs))
        graph.set_output(real[draft.output])
    except GraphError:
        return None
    return graph.pruned()


def _acceptable(graph: LayerGraph, allowed: frozenset[str] | set[str], limit: int) -> bool:
    count = len(graph.op_nodes)
    return 1 <= count <= limit and not graph.node(graph.output).is_leaf and not graph.problems(allowed)


def _feasible(kind: str, draft: _Draft, limit: int) -> bool:
    if kind == "insert":
        return len(draft.ops) < limit
    if kind == "delete":
        return len(draft.ops) >= 2
    return bool(draft.ops)


# ---- the mutations: each returns an edited copy of the draft and its record, or None -----------

_Result = tuple[_Draft, Mutation] | None


def _change_op(draft: _Draft, rng: random.Random, space: SearchSpace) -> _Result:
    position = rng.randrange(len(draft.ops))
    node = draft.ops[position]
    choices = sorted(space.ops - {node.op})
    if not choices:
        return None
    op = rng.choice(choices)
    prim = PRIMITIVES[op]
    inputs = list(node.inputs)
    if prim.arity < len(inputs):
        keep = sorted(rng.sample(range(len(inputs)), prim.arity))
        inputs = [inputs[k] for k in keep]
    pool = draft.pool(position)
    while len(inputs) < prim.arity:
        inputs.insert(rng.randrange(len(inputs) + 1), rng.choice(pool))
    attrs = tuple((k, v) for k, v in node.attrs if k in prim.attrs)
    new = replace(node, op=op, inputs=tuple(inputs), attrs=attrs)
    detail = f"{node.op} -> {op}" if new.inputs == node.inputs else f"{draft.call(node)} -> {draft.call(new)}"
    ops = [*draft.ops[:position], new, *draft.ops[position + 1 :]]
    return replace(draft, ops=ops), Mutation("change_op", node.name, detail)


def _rewire(draft: _Draft, rng: random.Random, space: SearchSpace) -> _Result:
    position = rng.randrange(len(draft.ops))
    node = draft.ops[position]
    slot = rng.randrange(len(node.inputs))
    old = node.inputs[slot]
    pool = [p for p in draft.pool(position) if p != old]
    if not pool:
        return None
    new_input = rng.choice(pool)
    inputs = (*node.inputs[:slot], new_input, *node.inputs[slot + 1 :])
    ops = [*draft.ops[:position], replace(node, inputs=inputs), *draft.ops[position + 1 :]]
    detail = f"input {slot}: {draft.label(old)} -> {draft.label(new_input)}"
    return replace(draft, ops=ops), Mutation("rewire", node.name, detail)


def _insert(draft: _Draft, rng: random.Random, space: SearchSpace) -> _Result:
    edges = [(i, slot) for i, node in enumerate(draft.ops) for slot in range(len(node.inputs))]
    position, slot = rng.choice([*edges, (len(draft.ops), -1)])  # (len, -1): the output
    routed = draft.ops[position].inputs[slot] if slot >= 0 else draft.output
    op = rng.choice(sorted(space.ops))
    arity = PRIMITIVES[op].arity
    pool = draft.pool(position)
    inputs = [rng.choice(pool) for _ in range(arity)]
    inputs[rng.randrange(arity)] = routed
    new = Node(_fresh(op, draft.names()), op, tuple(inputs))
    ops = [*draft.ops[:position], new, *draft.ops[position:]]
    if slot >= 0:
        consumer = ops[position + 1]
        ops[position + 1] = replace(
            consumer, inputs=(*consumer.inputs[:slot], new.name, *consumer.inputs[slot + 1 :])
        )
        where = f"input {slot} of {consumer.name}"
    else:
        where = "the output"
    child = replace(draft, ops=ops, output=new.name if slot < 0 else draft.output)
    return child, Mutation("insert", new.name, f"{child.call(new)} into {where}")


def _delete(draft: _Draft, rng: random.Random, space: SearchSpace) -> _Result:
    node = rng.choice(draft.ops)
    op_names = {n.name for n in draft.ops}
    # The output must stay an op node: a deleted output hands over to one of its op inputs.
    choices = [i for i in node.inputs if node.name != draft.output or i in op_names]
    if not choices:
        return None
    target = rng.choice(choices)
    ops = [
        replace(n, inputs=tuple(target if i == node.name else i for i in n.inputs))
        for n in draft.ops
        if n.name != node.name
    ]
    output = target if draft.output == node.name else draft.output
    detail = f"{draft.call(node)} removed; its consumers read {draft.label(target)}"
    return replace(draft, ops=ops, output=output), Mutation("delete", node.name, detail)


_MUTATORS: dict[str, Callable[[_Draft, random.Random, SearchSpace], _Result]] = {
    "change_op": _change_op,
    "rewire": _rewire,
    "insert": _insert,
    "delete": _delete,
}
