"""A hypothesis strategy for random valid layer graphs over the search vocabulary (shared by tests)."""

from __future__ import annotations

from hypothesis import assume
from hypothesis import strategies as st

from evosearch.layers.graph import INPUT, LayerGraph
from primitives import PRIMITIVES, SEARCH_OPS, Kind

SORTED_SEARCH_OPS = sorted(SEARCH_OPS)
NORMALIZE = "<normalize>"  # a macro step: (a - M_mean(a)) / M_std(a), sometimes with an affine after it


def _normalize(draw, graph: LayerGraph, ops: list[str], a: str) -> str:
    axes = draw(st.sampled_from([m for m in ("batch", "layer", "instance", "group") if f"{m}_std" in ops]))
    attrs = {"groups": draw(st.integers(1, 8))} if axes == "group" and draw(st.booleans()) else {}
    mean = graph.add(f"{axes}_mean", a, **attrs)
    out = graph.add("div", graph.add("sub", a, mean), graph.add(f"{axes}_std", a, **attrs))
    if draw(st.booleans()):
        gamma, beta = graph.vector("gamma", 1.0), graph.vector("beta", 0.0)
        scaled = graph.add("mul", *draw(st.permutations([gamma, out])))
        out = graph.add("add", *draw(st.permutations([scaled, beta])))
    return out


@st.composite
def random_graphs(draw, ops: list[str] = SORTED_SEARCH_OPS, max_steps: int = 8) -> LayerGraph:
    """Ops drawn from ``ops``, inputs from earlier nodes; only graphs valid after pruning are kept."""
    graph = LayerGraph(
        "random",
        hyperparameters={"eps": draw(st.sampled_from([1e-5, 1e-3]))},
        final_affine=draw(st.booleans()),
    )
    pool = [INPUT]
    if draw(st.booleans()):
        pool.append(graph.vector("v0", 0.0))
    if draw(st.booleans()):
        pool.append(graph.vector("v1", draw(st.sampled_from([1.0, 0.5, -2.0]))))
    for value in draw(st.lists(st.sampled_from([0.0, 1.0, -1.0, 2.0, 0.5]), max_size=2, unique=True)):
        pool.append(graph.const(value))
    on_x = [INPUT]  # nodes that depend on x: the operands moments need
    last = INPUT
    for _ in range(draw(st.integers(1, max_steps))):
        op = draw(st.sampled_from([*ops, NORMALIZE] if any(o.endswith("_std") for o in ops) else ops))
        if op == NORMALIZE:
            a = last if last in on_x and draw(st.booleans()) else draw(st.sampled_from(on_x))
            last = _normalize(draw, graph, ops, a)
            pool.append(last)
            on_x.append(last)
            continue
        prim = PRIMITIVES[op]
        # The latest node is a likely operand, so that chains grow deep as well as wide.
        choices = pool if prim.kind is Kind.ELEMENTWISE else on_x
        inputs = [
            last if last in choices and draw(st.booleans()) else draw(st.sampled_from(choices))
            for _ in range(prim.arity)
        ]
        attrs = {}
        if "groups" in prim.attrs and draw(st.booleans()):
            attrs["groups"] = draw(st.integers(1, 8))
        last = graph.add(op, *inputs, **attrs)
        if last not in pool:
            pool.append(last)
            if any(i in on_x for i in inputs):
                on_x.append(last)
    graph.set_output(last)
    if graph.pruned().problems():
        # A statistic, or a value without x, as the last node: combine it with x into a feature map.
        graph.set_output(graph.add(draw(st.sampled_from(["add", "sub", "mul", "div"])), INPUT, last))
    pruned = graph.pruned()
    assume(not pruned.problems())
    return pruned
