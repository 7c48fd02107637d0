"""Lowering: where the generated forward computes something cheaper than one primitive per node.

A pass over a validated graph, as torch.fx's passes are: it reads the graph's analyses
(:meth:`~evosearch.layers.graph.LayerGraph.users`, :meth:`~evosearch.layers.graph.LayerGraph.shapes`)
and the facts on the op records, and returns a :class:`Lowering` plan. The code generator asks the
plan what to fuse, which guards to drop and which nodes it need not compute, and writes the code.
Each rewrite is declared on a record in ``primitives.registry``:

- ``fuses_with`` / ``fused_kernel`` (std moments): ``(a - M_mean(a)) / M_std(a)``, and
  ``weight * . + bias`` after it when both are vectors, is one call of torch's batch_norm or
  group_norm kernel (layer_norm in the token layout); ``a / layer_rms(a)``, and ``weight * .``
  after it, is one call of torch's rms_norm in the token layout (``token_fused_kernel``);
- ``with_zero``: ``max(a, 0)`` is ``relu(a)``;
- ``unguarded`` with the ``sign`` rules: a division by a value proven ``>= DIV_EPS`` needs no guard.
"""

from __future__ import annotations

from dataclasses import dataclass

from evosearch.layers.graph import LayerGraph, Leaf, Node
from primitives import INFIX_OPS, Kind, Sign
from primitives.functional import DIV_EPS

# The arithmetic of the patterns, by the symbols formulas write them with: (a - m) / s, w * y + b.
_CENTER, _SCALE, _AFFINE_SCALE, _AFFINE_SHIFT = (INFIX_OPS[s] for s in "-/*+")


@dataclass(frozen=True)
class Normalization:
    """``(a - mean(a)) / std(a)``, or ``a / rms(a)`` (``mean`` None), times ``weight`` plus ``bias``
    (vectors) when the pattern has them: ``std``'s fused kernel computes it in one call."""

    a: str
    mean: Node | None
    std: Node
    weight: str | None = None
    bias: str | None = None


@dataclass(frozen=True)
class Lowering:
    """What the forward computes differently from the graph's one primitive per node."""

    fused: dict[str, Normalization]  # by the node whose value the kernel gives (the div, or the affine's add)
    with_zero: dict[str, str]  # op(a, 0) nodes whose record has a with_zero template -> a
    unguarded: set[str]  # guarded ops whose last operand is proven >= DIV_EPS: the unguarded template
    live: set[str]  # nodes the forward computes (those only fused patterns read are dropped)
    tracked: set[tuple[str, str]]  # (input, statistic): running statistics the forward tracks itself


def lower(graph: LayerGraph) -> Lowering:
    """The lowering plan of a validated graph."""
    fused = _fused_normalizations(graph)
    with_zero = {}
    for node in graph.op_nodes:
        operands = [i for i in node.inputs if not _is_zero(graph.node(i))]
        if node.primitive.with_zero and len(operands) == len(node.inputs) - 1:
            (with_zero[node.name],) = operands
    live = _live(graph, fused, with_zero)
    tracked = {
        (n.inputs[0], n.primitive.tracked)
        for n in graph.op_nodes
        if n.name in live and n.primitive.batch_dependent
    }
    proven = signs(graph)
    unguarded = {
        n.name for n in graph.op_nodes if n.primitive.unguarded and proven[n.inputs[-1]] is Sign.POSITIVE
    }
    return Lowering(fused, with_zero, unguarded - set(fused), live, tracked)


def signs(graph: LayerGraph) -> dict[str, Sign]:
    """What is proven about each value: constants by their value, the other leaves nothing, op nodes
    by their record's sign rule from their inputs'."""
    out: dict[str, Sign] = {}
    for node in graph:
        if node.is_leaf:
            out[node.name] = _leaf_sign(node)
        else:
            out[node.name] = node.primitive.sign_of([out[i] for i in node.inputs])
    return out


def _leaf_sign(node: Node) -> Sign:
    if node.op != Leaf.CONST:
        return Sign.UNKNOWN
    value = node.attr("value")
    return Sign.POSITIVE if value >= DIV_EPS else Sign.NONNEGATIVE if value >= 0 else Sign.UNKNOWN


def _is_zero(node: Node) -> bool:
    return node.op == Leaf.CONST and node.attr("value") == 0.0


def _live(graph: LayerGraph, fused: dict[str, Normalization], with_zero: dict[str, str]) -> set[str]:
    """The nodes the output needs once fused patterns and with_zero ops read only their operand."""
    live = {graph.output}
    for node in reversed(list(graph)):
        if node.name not in live:
            continue
        if node.name in fused:
            live.add(fused[node.name].a)
        elif node.name in with_zero:
            live.add(with_zero[node.name])
        else:
            live.update(node.inputs)
        if not node.is_leaf and node.primitive.kind is Kind.PROXY:  # its sub-graph is emitted again
            a, y = node.inputs[:2]
            live.update(i for name in graph.proxy_path(a, y) for i in graph.node(name).inputs)
    return live


def _fused_normalizations(graph: LayerGraph) -> dict[str, Normalization]:
    """The normalizations that torch's fused kernels compute, by the node whose value they give."""
    users = graph.users()
    shapes = graph.shapes()
    fused = {}
    for node in graph.op_nodes:
        norm = _normalization(graph, node)
        if norm is None:
            continue
        if not (shapes[norm.a].batch and shapes[norm.a].spatial):
            # The kernels refuse one value per channel (e.g. a batch statistic normalized again over
            # the batch); the primitives give 0 there.
            continue
        if norm.std.primitive.batch_dependent and not _kernel_owns_statistics(graph, users, node, norm):
            continue
        kernel = norm.std.primitive.fused_kernel_for(graph.layout)
        affine = _affine_around(graph, users, node.name, with_bias="{bias}" in kernel)
        if affine is None:
            fused[node.name] = norm
        else:
            add, weight, bias = affine
            fused[add] = Normalization(norm.a, norm.mean, norm.std, weight, bias)
    return fused


def _normalization(graph: LayerGraph, node: Node) -> Normalization | None:
    """For ``(a - M_mean(a)) / M_std(a)``, same attributes, where M_std fuses with M_mean, or for
    ``a / M_rms(a)`` where M_rms has a kernel of its own: its parts."""
    if node.op != _SCALE:
        return None
    center, std = (graph.node(i) for i in node.inputs)
    if std.is_leaf or not std.primitive.fuses_in(graph.layout):
        return None
    if not std.primitive.fuses_with:  # no mean partner: a / rms(a)
        return Normalization(center.name, None, std) if std.inputs == (center.name,) else None
    if center.op != _CENTER:
        return None
    a, mean_name = center.inputs
    mean = graph.node(mean_name)
    if mean.op != std.primitive.fuses_with or mean.inputs != (a,) or std.inputs != (a,):
        return None
    if mean.attrs != std.attrs:
        return None
    return Normalization(a, mean, std)


def _kernel_owns_statistics(
    graph: LayerGraph, users: dict[str, list[str]], node: Node, norm: Normalization
) -> bool:
    """Whether batch_norm may update both running estimates itself: nothing else reads them, and the
    pattern's mean, centering and std feed nothing else."""
    readers = {n.name for n in graph.op_nodes if n.primitive.batch_dependent and n.inputs[0] == norm.a}
    center = node.inputs[0]
    return (
        readers == {norm.mean.name, norm.std.name}
        and _sole_user(graph, users, norm.mean.name) == center
        and _sole_user(graph, users, center) == node.name
        and _sole_user(graph, users, norm.std.name) == node.name
    )


def _affine_around(
    graph: LayerGraph, users: dict[str, list[str]], name: str, with_bias: bool
) -> tuple[str, str, str | None] | None:
    """For ``weight * name + bias`` (vectors, either operand order) that alone reads name:
    (the add node, weight, bias), which the fused kernel's affine can compute; for a kernel without a
    bias (``with_bias`` false), ``weight * name``: (the mul node, weight, None)."""
    mul = _sole_user(graph, users, name)
    if mul is None or graph.node(mul).op != _AFFINE_SCALE:
        return None
    if not with_bias:
        weight = next((i for i in graph.node(mul).inputs if i != name), None)
        return (mul, weight, None) if weight is not None and _is_vector(graph, weight) else None
    add = _sole_user(graph, users, mul)
    if add is None or graph.node(add).op != _AFFINE_SHIFT:
        return None
    weight = next((i for i in graph.node(mul).inputs if i != name), None)  # none in name * name
    bias = next((i for i in graph.node(add).inputs if i != mul), None)
    if weight is None or bias is None or not (_is_vector(graph, weight) and _is_vector(graph, bias)):
        return None
    return add, weight, bias


def _sole_user(graph: LayerGraph, users: dict[str, list[str]], name: str) -> str | None:
    """The one op node that reads ``name``, if there is one and the output is not ``name`` itself."""
    if name == graph.output or len(users[name]) != 1:
        return None
    return users[name][0]


def _is_vector(graph: LayerGraph, name: str) -> bool:
    return graph.node(name).op == Leaf.VECTOR
