"""The graph file format (YAML, versioned). Loading never executes code: plain YAML, read safely.

::

    evosearch_graph: 1
    name: evonorm_b0
    layout: image
    formula: x / max(batch_std(x), v * x + instance_std(x))
    final_affine: true
    hyperparameters: {eps: 0.001, momentum: 0.1}
    vectors: {v: 1.0}
    nodes:
    - {name: batch_std, op: batch_std, inputs: [x]}
    - ...
    output: div

``nodes`` is the graph; ``formula`` is written for people, and left out where it would be longer
than a formula may be. A hand-written file may give only the formula; when a file gives both, they
must describe the same graph. Node inputs name ``x``, a vector, a scalar, a hyperparameter or another
node, or are numbers (constants). ``attrs`` (e.g. ``{groups: 8}``) is optional. ``layout`` is ``image``
(the default, for files written before there were two) or ``tokens``; ``scalars`` (per-layer
parameters, e.g. DyT's ``{alpha: 0.5}``) is written where the graph has any.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import networkx as nx
import yaml

from evosearch.config import ConfigError, load_yaml
from evosearch.errors import EvosearchError, FormulaError, GraphError, brief, listing
from evosearch.files import atomic_write_text
from evosearch.layers.formula import MAX_FORMULA_CHARS, parse_formula
from evosearch.layers.graph import DEFAULT_HYPERPARAMETERS, INPUT, LayerGraph, Leaf
from primitives import Layout

FORMAT_KEY = "evosearch_graph"
FORMAT_VERSION = 1
_TOP_KEYS = {
    FORMAT_KEY,
    "name",
    "layout",
    "formula",
    "final_affine",
    "hyperparameters",
    "vectors",
    "scalars",
    "nodes",
    "output",
}
_NODE_KEYS = {"name", "op", "inputs", "attrs"}


def graph_to_dict(graph: LayerGraph) -> dict[str, Any]:
    graph.validate()
    nodes = []
    for node in graph.op_nodes:
        inputs = [_input_ref(graph, i) for i in node.inputs]
        entry: dict[str, Any] = {"name": node.name, "op": node.op, "inputs": inputs}
        if node.attrs:
            entry["attrs"] = dict(node.attrs)
        nodes.append(entry)
    formula = graph.formula()
    return {
        FORMAT_KEY: FORMAT_VERSION,
        "name": graph.name,
        "layout": graph.layout.value,
        # For people, and checked against the nodes on loading: left out where too long to parse.
        **({"formula": formula} if len(formula) <= MAX_FORMULA_CHARS else {}),
        "final_affine": graph.final_affine,
        "hyperparameters": graph.resolved_hyperparameters(),
        "vectors": graph.vectors,
        **({"scalars": graph.scalars} if graph.scalars else {}),
        "nodes": nodes,
        "output": _input_ref(graph, graph.output),
    }


def _input_ref(graph: LayerGraph, name: str) -> str | float:
    node = graph.node(name)
    return node.attr("value") if node.op == Leaf.CONST else name


def dump_graph(graph: LayerGraph) -> str:
    return yaml.safe_dump(graph_to_dict(graph), sort_keys=False, default_flow_style=None, width=100)


def save_graph(graph: LayerGraph, path: str | os.PathLike) -> Path:
    return atomic_write_text(path, dump_graph(graph))


def load_graph(path: str | os.PathLike) -> LayerGraph:
    try:
        data = load_yaml(path, kind="graph")
    except ConfigError as e:
        raise GraphError(str(e)) from None
    try:
        return graph_from_dict(data)
    except EvosearchError as e:
        raise type(e)(f"{path}: {e}") from None


def graph_from_dict(data: Any) -> LayerGraph:
    if not isinstance(data, dict):
        raise GraphError("a graph file must be a mapping with an 'evosearch_graph' version key")
    version = data.get(FORMAT_KEY)
    if version is None:
        raise GraphError(f"missing '{FORMAT_KEY}: {FORMAT_VERSION}' (the format version)")
    if version != FORMAT_VERSION or isinstance(version, bool):  # true == 1 in Python
        raise GraphError(
            f"graph format version {brief(version)} is not supported (this evosearch reads {FORMAT_VERSION})"
        )
    _check_keys(data, _TOP_KEYS, "graph file")
    name = _typed(data, "name", str, "layer")
    final_affine = _typed(data, "final_affine", bool, False)
    hyperparameters = _typed(data, "hyperparameters", dict, {})
    vectors = _typed(data, "vectors", dict, {})
    scalars = _typed(data, "scalars", dict, {})
    for kind, parameters in (("vector", vectors), ("scalar", scalars)):
        for key, init in parameters.items():
            if not isinstance(init, (int, float)) or isinstance(init, bool):
                raise GraphError(f"{kind} {brief(key)}: initial value must be a number, got {brief(init)}")
    layout = _layout(data.get("layout", Layout.IMAGE.value))
    formula = data.get("formula")
    if "nodes" not in data:
        if not isinstance(formula, str):
            raise GraphError("a graph file needs 'nodes' and 'output', or a 'formula'")
        return parse_formula(
            formula,
            name=name,
            vectors=vectors,
            scalars=scalars,
            hyperparameters=hyperparameters,
            final_affine=final_affine,
            layout=layout,
        )
    graph = LayerGraph(name, dict(hyperparameters), final_affine, layout=layout)
    for key, init in vectors.items():
        graph.vector(key, init)
    for key, init in scalars.items():
        graph.scalar(key, init)
    _add_nodes(graph, _typed(data, "nodes", list, []))
    output = data.get("output")
    graph.set_output(_resolve(graph, output) if output is not None else _missing("output"))
    graph.validate()
    if isinstance(formula, str):
        _check_formula_agrees(graph, formula, vectors, scalars)
    return graph


def _layout(value: Any) -> Layout:
    try:
        return Layout.parse(value)
    except ValueError as e:
        raise GraphError(str(e)) from None


def _add_nodes(graph: LayerGraph, specs: list) -> None:
    """Add node specs in dependency order; a cycle or a dangling reference is an error."""
    by_name: dict[str, dict] = {}
    for i, spec in enumerate(specs):
        if not isinstance(spec, dict):
            raise GraphError(f"node #{i + 1} must be a mapping with name, op and inputs")
        _check_keys(spec, _NODE_KEYS, f"node #{i + 1}")
        name = spec.get("name")
        if not isinstance(name, str) or name in by_name:
            raise GraphError(f"node #{i + 1}: missing or duplicate name {brief(name)}")
        if not isinstance(spec.get("op"), str):
            raise GraphError(f"node {brief(name)}: missing op")
        if not isinstance(spec.get("inputs", []), list):
            raise GraphError(f"node {brief(name)}: inputs must be a list")
        by_name[name] = spec
    deps = nx.DiGraph()
    order = {name: i for i, name in enumerate(by_name)}
    deps.add_nodes_from(by_name)
    for name, spec in by_name.items():
        deps.add_edges_from((i, name) for i in spec.get("inputs", []) if isinstance(i, str) and i in by_name)
    try:
        cycle = nx.find_cycle(deps)
    except nx.NetworkXNoCycle:
        cycle = None
    if cycle:
        path = " -> ".join([u for u, _ in cycle] + [cycle[0][0]])
        raise GraphError(f"the graph has a cycle: {path}")
    for name in nx.lexicographical_topological_sort(deps, key=order.__getitem__):
        spec = by_name[name]
        inputs = [_resolve(graph, i, context=name) for i in spec.get("inputs", [])]
        attrs = spec.get("attrs") or {}
        if not isinstance(attrs, dict):
            raise GraphError(f"node {brief(name)}: attrs must be a mapping")
        graph.add(spec["op"], *inputs, name=name, **attrs)


def _resolve(graph: LayerGraph, ref: Any, context: str = "output") -> str:
    if isinstance(ref, (int, float)) and not isinstance(ref, bool):
        return graph.const(ref)
    if not isinstance(ref, str):
        raise GraphError(f"node {brief(context)}: input {brief(ref)} must be a name or a number")
    if ref in graph:
        return ref
    if ref in graph.hyperparameters or ref in DEFAULT_HYPERPARAMETERS:
        return graph.hyper(ref)
    known = listing([INPUT, *graph.parameters])
    raise GraphError(f"node {brief(context)}: input {brief(ref)} is not defined ({known}, or a node name)")


def _check_formula_agrees(graph: LayerGraph, formula: str, vectors: dict, scalars: dict) -> None:
    try:
        other = parse_formula(
            formula,
            name=graph.name,
            vectors=vectors,
            scalars=scalars,
            hyperparameters=graph.hyperparameters,
            final_affine=graph.final_affine,
            layout=graph.layout,
        )
    except FormulaError as e:
        raise GraphError(f"field 'formula' does not parse: {e}") from None
    if other.structural_hash() != graph.structural_hash():
        raise GraphError(
            f"'formula' and 'nodes' describe different graphs (nodes give {brief(graph.formula())}); "
            "fix one or delete 'formula'"
        )


def _check_keys(data: dict, valid: set[str], where: str) -> None:
    unknown = sorted(k if isinstance(k, str) else brief(k) for k in data if k not in valid)
    if unknown:
        valid_keys = ", ".join(sorted(valid))
        raise GraphError(f"{where}: unknown key(s) {listing(unknown)}; valid keys: {valid_keys}")


def _typed(data: dict, key: str, kind: type, default: Any) -> Any:
    value = data.get(key, default)
    if not isinstance(value, kind):
        raise GraphError(f"{brief(key)} must be a {kind.__name__}, got {brief(value)}")
    return value


def _missing(key: str):
    raise GraphError(f"missing {brief(key)}")
