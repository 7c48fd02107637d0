"""SOURCE arguments: a seed name, a graph file path, or a formula."""

from __future__ import annotations

from pathlib import Path

from evosearch.errors import SourceError
from evosearch.layers.formula import parse_formula
from evosearch.layers.graph import LayerGraph
from evosearch.layers.graph_io import load_graph
from evosearch.layers.seeds import SEEDS, seed_graph

GRAPH_SUFFIXES = (".yaml", ".yml")


def resolve_source(source: str) -> LayerGraph:
    """The graph a SOURCE names. A formula gets EvoNorm's vectors (v0, v1) and a final affine."""
    if source in SEEDS:
        return seed_graph(source)
    path = Path(source)
    if path.suffix in GRAPH_SUFFIXES or path.is_file():
        if not path.is_file():
            raise SourceError(f"graph file not found: {source}")
        return load_graph(path)
    if source.isidentifier() and source != "x":
        raise SourceError(f"{source!r} is not a seed, a graph file or a formula; seeds: {', '.join(SEEDS)}")
    return parse_formula(source, name="layer", final_affine=True)


def source_label(source: str) -> str:
    """How a SOURCE is shown in tables: a seed or file as given, a formula shortened."""
    return source if len(source) <= 48 else source[:45] + "..."
