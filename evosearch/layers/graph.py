"""Layer graphs: a normalization-activation layer as a DAG over primitive ops.

Every value is a :class:`Node`: the leaves (:class:`Leaf`) are the input ``x``, per-channel trainable
vectors, per-layer trainable scalars, numeric constants and layer hyperparameters used as values; the
others apply a primitive to earlier nodes. A graph is for one :class:`~primitives.Layout` (image
``(N, C, H, W)`` or tokens ``(N, L, C)``), which gives its moments their axes. Nodes are added through
:meth:`LayerGraph.add` only, which checks op, arity and inputs, so a graph is always in topological order;
:meth:`LayerGraph.validate` checks the whole (one output, nothing unused, shapes that make sense, the
allowed op set, ops the layout has). :meth:`LayerGraph.shapes` and
:meth:`LayerGraph.users` are the analyses that passes over a graph (lowering, for one) build on.

A layer computes ``y = graph(x)``, then ``weight * y + bias`` when ``final_affine`` is set.
"""

from __future__ import annotations

import builtins
import enum
import hashlib
import itertools
import keyword
import math
import re
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import networkx as nx

from evosearch.errors import GraphError, brief, listing
from primitives import PREFIX_OPS, PRIMITIVES, Kind, Layout, Primitive, UnknownOpError, get_primitive


class Leaf(str, enum.Enum):
    """The kinds of leaf node, kept in ``Node.op`` where op nodes keep a primitive's name."""

    INPUT = "input"  # the layer's input, named x
    VECTOR = "vector"  # a per-channel trainable vector; attribute init
    SCALAR = "scalar"  # a per-layer trainable scalar (DyT's alpha); attribute init
    CONST = "const"  # a number; attribute value
    HYPER = "hyper"  # a layer hyperparameter read as a value, named after it

    def __str__(self) -> str:
        return self.value


INPUT = "x"
# What docstrings call the output and the layer's result (``y = ...``, ``out = weight * y + bias``):
# formulas do not bind them, so that the two never read as one of its sub-expressions.
OUTPUT_NAMES = ("y", "out")

# Hyperparameters a layer gets when its graph needs them and does not set them.
DEFAULT_HYPERPARAMETERS: dict[str, float | int] = {
    "eps": 1e-5,  # moments: inside the square root of std and rms
    "momentum": 0.1,  # batch moments: running-estimate update (PyTorch's convention)
    "groups": 32,  # group moments, unless the node sets its own
    "proxy_samples": 256,  # proxy moments: number of Gaussian quantiles
}
_INT_HYPERPARAMETERS = {"groups", "proxy_samples"}
# Their bound: more groups than any layer has channels, more quantiles than any batch needs. A bound
# keeps them exact wherever they go (float arithmetic, formulas, torch's int64).
MAX_INT_HYPERPARAMETER = 2**16

AFFINE_NAMES = ("weight", "bias")  # the final affine's parameters
# Names a vector or hyperparameter cannot take: they would shadow the generated module's attributes
# and methods, Python's keywords and builtins, or names the generated code uses itself.
_IDENTIFIER = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")
# The names LayerGraph makes up: <op>, <op>_1, ... for an op node; c, c_1, ... for a constant.
_GENERATED_SUFFIX = re.compile(r"_[0-9]+$")
_CONST_STEM = "c"
# torch.nn.Module's public attributes, as a static list so that graphs load without importing torch;
# a test checks it against the installed torch.
MODULE_ATTRIBUTES = frozenset(
    {
        "T_destination",
        "add_module",
        "apply",
        "bfloat16",
        "buffers",
        "call_super_init",
        "children",
        "compile",
        "cpu",
        "cuda",
        "double",
        "dump_patches",
        "eval",
        "extra_repr",
        "float",
        "forward",
        "get_buffer",
        "get_extra_state",
        "get_parameter",
        "get_submodule",
        "half",
        "ipu",
        "load_state_dict",
        "modules",
        "mtia",
        "named_buffers",
        "named_children",
        "named_modules",
        "named_parameters",
        "parameters",
        "register_backward_hook",
        "register_buffer",
        "register_forward_hook",
        "register_forward_pre_hook",
        "register_full_backward_hook",
        "register_full_backward_pre_hook",
        "register_load_state_dict_post_hook",
        "register_load_state_dict_pre_hook",
        "register_module",
        "register_parameter",
        "register_state_dict_post_hook",
        "register_state_dict_pre_hook",
        "requires_grad_",
        "set_extra_state",
        "set_submodule",
        "share_memory",
        "state_dict",
        "to",
        "to_empty",
        "train",
        "type",
        "xpu",
        "zero_grad",
    }
)
RESERVED_NAMES = frozenset(
    # training: nn.Module's instance flag; graph, code, reset_parameters: the generated class's own.
    {INPUT, "self", "torch", "nn", "math", "shape", "num_features", "training", "graph", "code"}
    | {"reset_parameters"}
    | MODULE_ATTRIBUTES
    | set(dir(builtins))
    | set(keyword.kwlist)
    | set(PRIMITIVES)
)


def is_finite(value: float) -> bool:
    """``math.isfinite``, false for an integer too large for a float (where ``isfinite`` raises)."""
    try:
        return math.isfinite(value)
    except OverflowError:
        return False


def check_identifier(name: Any, what: str, reserved: Iterable[str] = RESERVED_NAMES) -> str:
    """Names from graph files become Python identifiers: only plain, unreserved ones pass."""
    if not isinstance(name, str) or not _IDENTIFIER.match(name) or len(name) > 64:
        raise GraphError(f"{what} {brief(name)} is not a valid name (letters, digits, '_'; 64 at most)")
    if name in reserved or name.startswith("running_"):
        raise GraphError(f"{what} {brief(name)} is a reserved name")
    return name


def _usable_node_name(name: str | None) -> bool:
    """Whether a name hint (``mu = ...`` in a formula) is a node name a graph file can load back."""
    try:
        check_identifier(name, "node", reserved=())
    except GraphError:
        return False
    return True


@dataclass(frozen=True)
class Node:
    """One value of the graph: a leaf, or a primitive applied to earlier nodes."""

    name: str
    op: str
    inputs: tuple[str, ...] = ()
    attrs: tuple[tuple[str, Any], ...] = ()

    def attr(self, key: str, default: Any = None) -> Any:
        return dict(self.attrs).get(key, default)

    @property
    def is_leaf(self) -> bool:
        return self.op in _LEAF_KINDS

    @property
    def primitive(self) -> Primitive:
        return get_primitive(self.op)

    def describe(self) -> str:
        if self.is_leaf:
            return f"{self.op} {brief(self.name)}"
        return f"node {brief(self.name)} ({self.op}({listing(self.inputs)}))"


@dataclass(frozen=True)
class Shape:
    """Which axes of x a value spans: batch (N), channel (C), spatial (H, W); a missing one broadcasts."""

    batch: bool
    channel: bool
    spatial: bool

    def __or__(self, other: Shape) -> Shape:
        return Shape(self.batch or other.batch, self.channel or other.channel, self.spatial or other.spatial)


_FULL, _CHANNEL, _SCALAR = Shape(True, True, True), Shape(False, True, False), Shape(False, False, False)
_LEAF_KINDS = frozenset(Leaf)
_LEAF_SHAPES = {
    Leaf.INPUT: _FULL,
    Leaf.VECTOR: _CHANNEL,
    Leaf.SCALAR: _SCALAR,
    Leaf.CONST: _SCALAR,
    Leaf.HYPER: _SCALAR,
}
PARAMETER_LEAVES = (Leaf.VECTOR, Leaf.SCALAR)  # the leaves that are trainable parameters
# Leaves the output need not use: a parameter it does not read would have no gradient.
_MAY_BE_UNUSED = {Leaf.INPUT, Leaf.CONST, Leaf.HYPER}


@dataclass
class LayerGraph:
    """A layer as a DAG of :class:`Node` records, held in topological order over a networkx DAG."""

    name: str = "layer"
    hyperparameters: dict[str, float | int] = field(default_factory=dict)
    final_affine: bool = False
    output: str | None = None
    layout: Layout = Layout.IMAGE

    def __post_init__(self) -> None:
        self.layout = Layout(self.layout)
        self._nodes: dict[str, Node] = {}
        self._dag = nx.DiGraph()
        self._counter: dict[str, int] = {}
        self._interned: dict[tuple, str] = {}
        self._insert(Node(INPUT, Leaf.INPUT))

    # ---- construction -------------------------------------------------------------------------

    def _insert(self, node: Node) -> str:
        if node.name in self._nodes:
            raise GraphError(f"duplicate node name {brief(node.name)}")
        self._nodes[node.name] = node
        self._dag.add_node(node.name)
        self._dag.add_edges_from((i, node.name) for i in node.inputs)
        self._interned.setdefault((node.op, node.inputs, node.attrs), node.name)
        return node.name

    def _fresh_name(self, stem: str) -> str:
        while True:
            k = self._counter.get(stem, 0)
            self._counter[stem] = k + 1
            name = stem if k == 0 else f"{stem}_{k}"
            if name not in self._nodes:
                return name

    def vector(self, name: str, init: float) -> str:
        """A per-channel trainable vector, initialised to ``init`` (EvoNorm: v0 = 0, v1 = 1)."""
        return self._parameter(Leaf.VECTOR, name, init)

    def scalar(self, name: str, init: float) -> str:
        """A per-layer trainable scalar, initialised to ``init`` (DyT's alpha: 0.5)."""
        return self._parameter(Leaf.SCALAR, name, init)

    def _parameter(self, kind: Leaf, name: str, init: float) -> str:
        check_identifier(name, str(kind))
        if isinstance(init, bool) or not isinstance(init, (int, float)) or not is_finite(init):
            raise GraphError(f"{kind} {name!r}: initial value must be a finite number, got {brief(init)}")
        if name in self._nodes:
            node = self._nodes[name]
            if node.op != kind:
                raise GraphError(f"{kind} {name!r} clashes with {node.describe()}")
            if node.attr("init") != float(init):
                raise GraphError(f"{kind} {name!r} is already defined with init {node.attr('init')!r}")
            return name
        return self._insert(Node(name, kind, attrs=(("init", float(init)),)))

    def const(self, value: float) -> str:
        if not is_finite(value):
            raise GraphError(f"constant {brief(value)} is not finite")
        value = float(value) + 0.0  # -0.0 -> 0.0: it renders as "0" and hashes as 0.0
        key = (Leaf.CONST, (), (("value", value),))
        if key in self._interned:
            return self._interned[key]
        return self._insert(Node(self._fresh_name(_CONST_STEM), Leaf.CONST, attrs=(("value", value),)))

    def hyper(self, name: str) -> str:
        """A layer hyperparameter used as a value (e.g. Batch Renorm's ``rmax``)."""
        check_identifier(name, "hyperparameter")
        if name not in self.hyperparameters and name not in DEFAULT_HYPERPARAMETERS:
            raise GraphError(f"hyperparameter {brief(name)} is used but not declared")
        if name in self._nodes:
            if self._nodes[name].op != Leaf.HYPER:
                raise GraphError(f"hyperparameter {brief(name)} clashes with {self._nodes[name].describe()}")
            return name
        return self._insert(Node(name, Leaf.HYPER))

    def add(
        self, op: str, *inputs: str, name: str | None = None, hint: str | None = None, **attrs: Any
    ) -> str:
        """Apply a primitive to existing nodes; the one path that creates op nodes.

        Without ``name``, an identical existing node is reused, so a formula that repeats a
        sub-expression builds it once; a new node is then named ``hint`` if free, else after its op.
        """
        label = name or op
        try:
            prim = get_primitive(op)
        except UnknownOpError as e:
            raise GraphError(f"node {brief(label)}: {e}") from None
        if len(inputs) != prim.arity:
            raise GraphError(
                f"node {brief(label)}: op {brief(op)} takes {prim.arity} input(s), "
                f"got {len(inputs)} ({listing(inputs)})"
            )
        for i in inputs:
            if i not in self._nodes:
                raise GraphError(f"node {brief(label)} ({op}): input {brief(i)} is not defined before it")
        unknown = set(attrs) - prim.attrs
        if unknown:
            unknown_attrs = listing(sorted(unknown))
            raise GraphError(f"node {brief(label)}: op {brief(op)} takes no attribute {unknown_attrs}")
        if "groups" in attrs and (
            not isinstance(attrs["groups"], int)
            or isinstance(attrs["groups"], bool)
            or not 1 <= attrs["groups"] <= MAX_INT_HYPERPARAMETER
        ):
            groups = brief(attrs["groups"])
            raise GraphError(
                f"node {brief(label)}: groups must be a positive integer, got {groups} "
                f"(at most {MAX_INT_HYPERPARAMETER})"
            )
        node_attrs = tuple(sorted(attrs.items()))
        if name is None:
            existing = self._interned.get((op, tuple(inputs), node_attrs))
            if existing is not None and not self._nodes[existing].is_leaf:
                return existing
        else:
            check_identifier(name, "node", reserved=())
        if name is None:
            name = hint if _usable_node_name(hint) and hint not in self._nodes else self._fresh_name(op)
        return self._insert(Node(name, op, tuple(inputs), node_attrs))

    def set_output(self, name: str) -> None:
        if name not in self._nodes:
            raise GraphError(f"output {brief(name)} is not a node of the graph")
        self.output = name

    # ---- access -------------------------------------------------------------------------------

    def __iter__(self) -> Iterator[Node]:
        """Nodes in a canonical topological order: x, vectors by name, constants by value,
        hyperparameters by name, then op nodes as added. A graph and its reload from a file
        iterate alike, so whatever walks a graph (codegen, mutation) sees the same sequence."""
        nodes = self._nodes.values()
        leaves = sorted((n for n in nodes if n.is_leaf), key=_leaf_order)
        return iter([*leaves, *(n for n in nodes if not n.is_leaf)])

    def __len__(self) -> int:
        return len(self._nodes)

    def __contains__(self, name: object) -> bool:
        return name in self._nodes

    def node(self, name: str) -> Node:
        return self._nodes[name]

    @property
    def op_nodes(self) -> list[Node]:
        return [n for n in self if not n.is_leaf]

    @property
    def vectors(self) -> dict[str, float]:
        """Trainable per-channel vectors and their initial values."""
        return {n.name: n.attr("init") for n in self if n.op == Leaf.VECTOR}

    @property
    def scalars(self) -> dict[str, float]:
        """Trainable per-layer scalars and their initial values."""
        return {n.name: n.attr("init") for n in self if n.op == Leaf.SCALAR}

    @property
    def parameters(self) -> dict[str, float]:
        """Every trainable leaf (vectors, then scalars) and its initial value."""
        return {**self.vectors, **self.scalars}

    @property
    def ops(self) -> set[str]:
        return {n.op for n in self.op_nodes}

    @property
    def batch_dependent(self) -> bool:
        return any(n.primitive.batch_dependent for n in self.op_nodes)

    def ancestors(self, name: str) -> set[str]:
        return nx.ancestors(self._dag, name)

    def users(self) -> dict[str, list[str]]:
        """For every node, the op nodes that read it (each once, in graph order), as torch.fx's
        ``Node.users``; reading the output is not a use."""
        users: dict[str, list[str]] = {n.name: [] for n in self}
        for node in self.op_nodes:
            for i in dict.fromkeys(node.inputs):
                users[i].append(node.name)
        return users

    def resolved_hyperparameters(self) -> dict[str, float | int]:
        """The hyperparameters the layer uses: those its ops need and those read as values, with the
        declared value or the default. Declared but unused ones drop out (they change nothing)."""
        needed = {n.name for n in self if n.op == Leaf.HYPER}
        for n in self.op_nodes:
            prim = n.primitive
            if prim.kind is not Kind.ELEMENTWISE:
                needed.add("eps")
            if prim.batch_dependent:
                needed.add("momentum")
            if prim.axes == "group" and n.attr("groups") is None:
                needed.add("groups")
            if prim.kind is Kind.PROXY:
                needed.add("proxy_samples")
        out = {k: v for k, v in self.hyperparameters.items() if k in needed}
        out.update({k: DEFAULT_HYPERPARAMETERS[k] for k in sorted(needed - set(out))})
        return out

    def copy(self) -> LayerGraph:
        new = LayerGraph(self.name, dict(self.hyperparameters), self.final_affine, layout=self.layout)
        for node in self:
            if node.name != INPUT:
                new._insert(node)
        new._counter = dict(self._counter)
        new.output = self.output
        return new

    def pruned(self) -> LayerGraph:
        """A copy without the nodes the output does not use."""
        keep = self.ancestors(self.output) | {self.output, INPUT}
        new = LayerGraph(self.name, dict(self.hyperparameters), self.final_affine, layout=self.layout)
        for node in self:
            if node.name in keep and node.name != INPUT:
                new._insert(node)
        new.output = self.output
        return new

    # ---- validation ---------------------------------------------------------------------------

    def problems(self, allowed_ops: Iterable[str] | None = None) -> list[str]:
        """Everything wrong with the graph, one message per problem (empty when valid)."""
        out = [*self._hyperparameter_problems()]
        if self.final_affine:
            out.extend(
                f"{self.node(v).op} {brief(v)} clashes with the final affine's parameter"
                for v in self.parameters
                if v in AFFINE_NAMES
            )
        if self.output is None:
            return [*out, "graph has no output"]
        allowed = None if allowed_ops is None else set(allowed_ops)
        used = self.ancestors(self.output) | {self.output}
        for node in self:
            if node.name not in used and node.op not in _MAY_BE_UNUSED:
                out.append(f"{node.describe()} is not used by the output")
            if allowed is not None and not node.is_leaf and node.op not in allowed:
                out.append(f"{node.describe()} uses op {brief(node.op)}, outside the allowed set")
            if not node.is_leaf and not node.primitive.in_layout(self.layout):
                out.append(
                    f"{node.describe()}: op {brief(node.op)} has no meaning in the {self.layout} layout"
                )
        shapes = self.shapes()
        depends = self._depends_on_input()
        for node in self.op_nodes:
            out.extend(self._node_problems(node, shapes, depends))
        if not depends[self.output]:
            out.append(f"output {brief(self.output)} does not depend on the input x")
        elif shapes[self.output] != _FULL:
            out.append(
                f"output {brief(self.output)} ({self.node(self.output).op}) is a statistic, not a feature map"
            )
        return out

    def validate(self, allowed_ops: Iterable[str] | None = None) -> LayerGraph:
        problems = self.problems(allowed_ops)
        if problems:
            raise GraphError(f"invalid layer graph {brief(self.name)}: " + "; ".join(problems))
        return self

    def _hyperparameter_problems(self) -> Iterator[str]:
        # Hyperparameter names become constructor arguments and attributes of the generated class.
        taken = {*self.parameters, *(AFFINE_NAMES if self.final_affine else ())}
        for key in {**self.hyperparameters, **self.resolved_hyperparameters()}:
            try:
                check_identifier(key, "hyperparameter")
            except GraphError as e:
                yield str(e)
                continue
            if key in taken:
                yield f"hyperparameter {brief(key)} clashes with the parameter of the same name"
        for key, value in self.hyperparameters.items():
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not is_finite(value):
                yield f"hyperparameter {brief(key)} must be a finite number, got {brief(value)}"
            elif key in _INT_HYPERPARAMETERS and (not isinstance(value, int) or value < 1):
                yield f"hyperparameter {brief(key)} must be a positive integer, got {brief(value)}"
            elif key in _INT_HYPERPARAMETERS and value > MAX_INT_HYPERPARAMETER:
                bound = MAX_INT_HYPERPARAMETER
                yield f"hyperparameter {brief(key)} must be at most {bound}, got {brief(value)}"
            elif key == "eps" and value <= 0:
                yield f"hyperparameter 'eps' must be positive, got {brief(value)}"
            elif key == "momentum" and not 0 <= value <= 1:
                yield f"hyperparameter 'momentum' must be in [0, 1], got {brief(value)}"

    def _node_problems(self, node: Node, shapes: dict, depends: dict) -> Iterator[str]:
        prim = node.primitive
        if prim.kind is Kind.ELEMENTWISE:
            return
        if prim.kind is Kind.PROXY:
            yield from self._proxy_problems(node, depends)
            return
        (arg,) = node.inputs
        if not depends[arg]:
            yield f"{node.describe()}: input {brief(arg)} does not depend on x; moments need a feature map"
        elif prim.kind in (Kind.BATCH_MOMENT, Kind.MOVING) and not shapes[arg].channel:
            no_channel = "has no channel axis left for a per-channel statistic"
            yield f"{node.describe()}: input {brief(arg)} {no_channel}"

    def _proxy_problems(self, node: Node, depends: dict) -> Iterator[str]:
        """proxy_*(a, y, scale, shift): a must be an element-wise function of y and per-channel values."""
        a, y, scale, shift = node.inputs
        for operand in (scale, shift):
            if depends[operand]:
                yield f"{node.describe()}: {brief(operand)} must be per-channel (not depend on x)"
        if y not in self.ancestors(a):
            yield f"{node.describe()}: {brief(a)} does not depend on {brief(y)}"
            return
        for name in self.proxy_path(a, y):
            inner = self.node(name)
            if inner.is_leaf or inner.primitive.kind is not Kind.ELEMENTWISE:
                between = f"between {brief(y)} and {brief(a)}"
                yield f"{node.describe()}: {inner.describe()} {between} is not element-wise"
            for i in inner.inputs:
                if i != y and depends[i] and y not in self.ancestors(i) | {i}:
                    yield f"{node.describe()}: {inner.describe()} mixes in {brief(i)}, which depends on x"

    def proxy_path(self, a: str, y: str) -> list[str]:
        """Nodes on paths from y to a (a included, y not), in topological order."""
        between = (nx.descendants(self._dag, y) & self.ancestors(a)) | {a}
        return [n.name for n in self if n.name in between]

    def shapes(self) -> dict[str, Shape]:
        """The shape pass: which axes of x each value spans (as torch.fx's ShapeProp, symbolically)."""
        shapes: dict[str, Shape] = {}
        for node in self:
            if node.is_leaf:
                shapes[node.name] = _LEAF_SHAPES[node.op]
            else:
                shapes[node.name] = _op_shape(node.primitive, [shapes[i] for i in node.inputs], self.layout)
        return shapes

    def _depends_on_input(self) -> dict[str, bool]:
        depends: dict[str, bool] = {}
        for node in self:
            depends[node.name] = node.op == Leaf.INPUT or any(depends[i] for i in node.inputs)
            if not node.is_leaf and node.primitive.kind is Kind.PROXY:
                depends[node.name] = False  # a proxy moment is a per-channel function of parameters
        return depends

    # ---- identity and text --------------------------------------------------------------------

    def structural_hash(self) -> str:
        """Canonical hash: equal for isomorphic graphs, commutative operands in either order.

        Built from each node's op, attributes and its inputs' keys (sorted for commutative ops), so
        node names and the order of equivalent operands do not matter; parameter names and initial
        values, the resolved hyperparameters, the final affine and the layout do (an image graph's key
        leaves the layout out, as it did before there were two: hashes in run directories stay valid).
        """
        if self.output is None:
            raise GraphError("graph has no output")
        keys = self.structural_keys()
        header = repr((sorted(self.resolved_hyperparameters().items()), self.final_affine))
        if self.layout is not Layout.IMAGE:
            header += f"layout:{self.layout}"
        return _digest(header + keys[self.output])

    def structural_keys(self) -> dict[str, str]:
        """Every node's structural key: equal for equal sub-expressions (see :meth:`structural_hash`)."""
        keys: dict[str, str] = {}
        for node in self:
            keys[node.name] = _digest(_node_key(node, keys))
        return keys

    def formula(self) -> str:
        """The output as readable text, e.g. ``x / max(batch_std(x), v1 * x + instance_std(x))``.

        A sub-expression used more than once is written once, as a ``name = expression`` statement
        before the output expression, statements separated by ``; `` so that the text stays one line
        in tables: written out at every use, each level of sharing doubles the text (a graph of 26
        nodes read as 470 MB). Text that depends on the structure alone parses back to a graph
        whose formula is the same text; see :class:`_FormulaWriter`.
        """
        return "; ".join(self.formula_statements())

    def formula_statements(self) -> list[str]:
        """The formula's statements: ``name = expression`` for each named sub-expression, then the
        output expression (the text :meth:`formula` joins)."""
        if self.output is None:
            raise GraphError("graph has no output")
        return _FormulaWriter(self).statements()

    def __repr__(self) -> str:
        out = self.formula() if self.output else "<no output>"
        layout = "" if self.layout is Layout.IMAGE else f", layout={self.layout.value!r}"
        return f"LayerGraph({self.name!r}, {out!r}, final_affine={self.final_affine}{layout})"


_LEAF_RANK = {kind: rank for rank, kind in enumerate(Leaf)}


def _leaf_order(node: Node) -> tuple:
    return (_LEAF_RANK[node.op], node.attr("value", 0.0), node.name)


def _op_shape(prim: Primitive, inputs: list[Shape], layout: Layout) -> Shape:
    """The axes of an op's value. ``spatial`` is (H, W) in the image layout and the tokens L in the
    token layout, where the moments over the features (layer, group) keep one value per token."""
    if prim.kind is Kind.ELEMENTWISE:
        shape = _SCALAR
        for s in inputs:
            shape = shape | s
        return shape
    (arg, *_) = inputs
    if prim.kind in (Kind.BATCH_MOMENT, Kind.MOVING, Kind.PROXY):
        return _CHANNEL
    per_token = layout is Layout.TOKENS and prim.axes in ("layer", "group")
    spatial = arg.spatial if per_token else False
    if prim.axes == "layer":
        return Shape(arg.batch, False, spatial)
    return Shape(arg.batch, arg.channel, spatial)  # group (per channel, broadcast), instance


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:32]


# A leaf's part of the structural hash. Vectors keep the tag of their first name, "param": hashes are
# stored in run directories (duplicates on resume, rerank) and must not change with a rename.
_LEAF_KEYS: dict[Leaf, Callable[[Node], str]] = {
    Leaf.INPUT: lambda node: "input",
    Leaf.VECTOR: lambda node: f"param:{node.name}:{node.attr('init')!r}",
    Leaf.SCALAR: lambda node: f"scalar:{node.name}:{node.attr('init')!r}",
    Leaf.CONST: lambda node: f"const:{node.attr('value')!r}",
    Leaf.HYPER: lambda node: f"hyper:{node.name}",
}


def _node_key(node: Node, keys: dict[str, str]) -> str:
    if node.is_leaf:
        return _LEAF_KEYS[node.op](node)
    children = [keys[i] for i in node.inputs]
    if node.primitive.commutative:
        children.sort()
    return repr((node.op, node.attrs, children))


# Formula rendering: the records' infix and prefix symbols for arithmetic, calls for the rest, with
# the records' precedences (as in Python). A name, number or call binds tighter than any operator.
_ATOM = 1 + max(p.precedence for p in PRIMITIVES.values())
_NEGATIVE = PRIMITIVES[PREFIX_OPS["-"]].precedence  # a negative number reads as a unary minus
# Deeper sub-expressions are bound to names: Python's parser reads at most 200 nested parentheses,
# and parse_formula recurses on each level of the expression.
MAX_INLINE_DEPTH = 24


def format_number(value: float) -> str:
    return str(int(value)) if value.is_integer() and abs(value) < 1e15 else repr(value)


class _Text(NamedTuple):
    """A sub-expression's text, the precedence of its outermost operator, and its nesting depth."""

    text: str
    precedence: int
    depth: int


class _FormulaWriter:
    """A graph as formula text, each distinct sub-expression (by structural key) written once.

    A sub-expression is bound to a name, on a ``name = expression`` statement of its own, where it
    is used more than once (unless it is a call on leaves alone, as ``batch_std(x)``: short), and
    where it nests deeper than :data:`MAX_INLINE_DEPTH`, which Python's parser could not read back.
    A bound node keeps its own name where a formula can bind it (``mu = ...`` named it) and it is
    not one of :data:`OUTPUT_NAMES`; otherwise, as for the ``<op>_<k>`` and ``c_<k>`` that
    :class:`LayerGraph` makes up, it is ``t1``, ``t2``, ...
    """

    def __init__(self, graph: LayerGraph):
        self.graph = graph
        self.keys = graph.structural_keys()
        self.nodes: dict[str, Node] = {}  # the output's sub-expressions, one node per key, in order
        needed = graph.ancestors(graph.output) | {graph.output}
        for node in graph:
            if node.name in needed:
                self.nodes.setdefault(self.keys[node.name], node)
        uses = Counter(self.keys[i] for node in self.nodes.values() for i in node.inputs)
        self.shared = {
            key
            for key, node in self.nodes.items()
            if uses[key] > 1 and not all(graph.node(i).is_leaf for i in node.inputs)
        }
        self.reserved = {
            *(INPUT, *OUTPUT_NAMES),
            *graph.hyperparameters,
            *DEFAULT_HYPERPARAMETERS,
            *PRIMITIVES,
            *graph.parameters,
        }
        unused = (f"t{k}" for k in itertools.count(1))
        self.fresh = (name for name in unused if name not in self.reserved and name not in graph)

    def statements(self) -> list[str]:
        output = self.keys[self.graph.output]
        texts: dict[str, _Text] = {}
        statements = []
        for key, node in self.nodes.items():
            text = _render(node, [texts[self.keys[i]] for i in node.inputs])
            if key != output and (key in self.shared or text.depth > MAX_INLINE_DEPTH):
                name = self.name_for(node)
                statements.append(f"{name} = {text.text}")
                text = _Text(name, _ATOM, 0)
            texts[key] = text
        return [*statements, texts[output].text]

    def name_for(self, node: Node) -> str:
        """The node's own name where parsing the formula names the node so again, else a fresh one."""
        name = node.name
        stem = _GENERATED_SUFFIX.sub("", name)
        own = (
            _IDENTIFIER.match(name) is not None
            and not keyword.iskeyword(name)
            and name not in self.reserved
            and stem not in PRIMITIVES
            and stem != _CONST_STEM
        )
        return name if own else next(self.fresh)


def _render(node: Node, args: list[_Text]) -> _Text:
    """A node's text, from its inputs' (in order)."""
    if node.op == Leaf.CONST:
        text = format_number(node.attr("value"))
        return _Text(text, _NEGATIVE if text.startswith("-") else _ATOM, 0)
    if node.is_leaf:
        return _Text(node.name, _ATOM, 0)
    depth = 1 + max(a.depth for a in args)
    text, precedence = _render_op(node, [(a.text, a.precedence) for a in args])
    return _Text(text, precedence, depth)


def _render_op(node: Node, args: list[tuple[str, int]]) -> tuple[str, int]:
    prim = node.primitive
    if prim.symbol and prim.arity == 2:
        (lt, lp), (rt, rp) = args
        left = lt if lp >= prim.precedence else f"({lt})"
        right = rt if rp > prim.precedence else f"({rt})"
        return f"{left} {prim.symbol} {right}", prim.precedence
    if prim.symbol:
        ((t, p),) = args
        if t[:1].isdigit():  # "-2" would read back as the constant -2, not neg(2)
            return f"{node.op}({t})", _ATOM
        return f"{prim.symbol}{t}" if p >= _ATOM else f"{prim.symbol}({t})", prim.precedence
    call_args = [t for t, _ in args] + [f"{k}={v}" for k, v in node.attrs]  # attrs are integers
    return f"{node.op}({', '.join(call_args)})", _ATOM
