"""SOURCE: how a layer is named, on the command line and in the Python API alike.

A SOURCE is a seed name, a formula, a graph file (``.yaml``, as a str or a path), a
:class:`~evosearch.layers.graph.LayerGraph`, or — in Python — a module class with the constructor
``(num_features, **hyperparameters)`` (or any callable of that shape, such as a ``functools.partial``),
as timm's ``create_norm_act_layer`` takes a name or a class. Every function that takes a layer resolves
it here: :func:`resolve_source` gives the graph (what the commands, the search and export work on),
:func:`layer_factory` the constructor, :func:`create_layer` a module.

A slot takes one :class:`~primitives.Layout`: given one, a graph of the other layout is a
:class:`~evosearch.errors.LayoutError`, and a formula (whose text says no layout) is read in the slot's.

Importing this module does not import torch, so that the command line resolves graphs without it;
torch comes in when a layer is built, or when a class is checked (and a class means torch is loaded).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from evosearch.errors import LayoutError, SourceError, brief
from evosearch.layers.formula import FORMULA_SCALARS, parse_formula
from evosearch.layers.graph import LayerGraph
from evosearch.layers.graph_io import load_graph
from evosearch.layers.seeds import SEEDS, seed_graph
from primitives import Layout

if TYPE_CHECKING:
    from torch import nn

GRAPH_SUFFIXES = (".yaml", ".yml")
GRAPH_KINDS = "a seed name, a formula, a graph file (.yaml) or a LayerGraph"
SOURCE_KINDS = (
    "a seed name, a formula, a graph file (.yaml), a LayerGraph "
    "or an nn.Module class with the constructor (num_features, **hyperparameters)"
)

# A layer's constructor: ``(num_features, **hyperparameters) -> nn.Module``; a class or any callable.
LayerFactory = Callable[..., "nn.Module"]
LayerSource = str | os.PathLike[str] | LayerGraph | LayerFactory


def create_layer(
    source: LayerSource, num_features: int, layout: Layout | None = None, **hyperparameters: Any
) -> nn.Module:
    """The layer ``source`` names, built for ``num_features`` channels; hyperparameters (``eps``,
    ``groups``, …) default to those of the graph or class. ``layout``: see :func:`layer_factory`."""
    return layer_factory(source, layout)(num_features, **hyperparameters)


def layer_factory(source: LayerSource, layout: Layout | None = None) -> LayerFactory:
    """The constructor ``(num_features, **hyperparameters)`` of ``source``: a graph compiled, a class
    or callable as it is. With ``layout`` (the slot's), a graph of the other layout is a
    :class:`LayoutError` and a formula is read in this one."""
    layer = resolve_layer(source, layout)
    if isinstance(layer, LayerGraph):
        from evosearch.layers.codegen import compile_layer  # torch, only once a layer is built

        return compile_layer(layer)
    return layer


def resolve_layer(source: LayerSource, layout: Layout | None = None) -> LayerGraph | LayerFactory:
    """The graph ``source`` names, or the constructor it is; a :class:`SourceError` for anything else.
    Nothing is compiled yet, so a caller can resolve first and build where it catches build errors."""
    if isinstance(source, (str, os.PathLike, LayerGraph)):
        return resolve_source(source, layout)
    if callable(source):
        return _checked_factory(source)
    raise SourceError(f"a layer SOURCE is {SOURCE_KINDS}, not {type(source).__name__}")


def resolve_source(source: str | os.PathLike[str] | LayerGraph, layout: Layout | None = None) -> LayerGraph:
    """The graph a SOURCE names: a seed, a formula, a graph file (str or path), a graph as it is. A
    formula gets EvoNorm's vectors (v0, v1), in the token layout DyT's scalar (alpha), and a final
    affine, and is read in ``layout`` (image by default). With ``layout``, a graph of another layout
    is a :class:`LayoutError`. What the commands, the search and export use, since they work on the
    graph; a class here is a :class:`SourceError`."""
    graph = _resolve_graph(source, layout or Layout.IMAGE)
    if layout is not None:
        check_layout(graph, layout, source_label(source))
    return graph


def check_layout(graph: LayerGraph, layout: Layout, label: str | None = None) -> LayerGraph:
    """``graph`` if it is for ``layout``; else one :class:`LayoutError` that names both."""
    if graph.layout is not layout:
        raise LayoutError(
            f"layer {brief(label or graph.name)} is for the {graph.layout} layout {graph.layout.shape}; "
            f"the {layout} layout {layout.shape} is needed here"
        )
    return graph


def _resolve_graph(source: str | os.PathLike[str] | LayerGraph, layout: Layout) -> LayerGraph:
    if isinstance(source, LayerGraph):
        return source
    if isinstance(source, os.PathLike):
        return _graph_file(Path(source))
    if not isinstance(source, str):
        kind = "a module class" if callable(source) else type(source).__name__
        raise SourceError(f"a layer graph is needed here: {GRAPH_KINDS}, not {kind}")
    if source in SEEDS:
        return seed_graph(source)
    path = Path(source)
    if path.suffix in GRAPH_SUFFIXES or _is_file(path):
        return _graph_file(path)
    if source.isidentifier() and source != "x":
        seeds = ", ".join(SEEDS)
        raise SourceError(f"{brief(source)} is not a seed, a graph file or a formula; seeds: {seeds}")
    return parse_formula(
        source, name="layer", final_affine=True, layout=layout, scalars=FORMULA_SCALARS[layout]
    )


def source_label(source: LayerSource) -> str:
    """How a SOURCE is shown in tables and records: a seed, file or formula as given (a long one
    shortened), a graph by its name, a class by its name."""
    if isinstance(source, LayerGraph):
        return source.name
    if isinstance(source, (str, os.PathLike)):
        text = os.fspath(source)
        return text if len(text) <= 48 else text[:45] + "..."
    return getattr(source, "__name__", type(source).__name__)


def _is_file(path: Path) -> bool:
    """Whether ``path`` is a file; False where it cannot name one (a formula past the file-name limit,
    one with a NUL), which ``Path.is_file`` answers with an ``OSError``."""
    try:
        return path.is_file()
    except (OSError, ValueError):
        return False


def _graph_file(path: Path) -> LayerGraph:
    if not path.is_file():
        raise SourceError(f"graph file not found: {path}")
    return load_graph(path)


def _checked_factory(source: LayerFactory) -> LayerFactory:
    """``source`` if it can build a fresh layer per slot: a module class or a callable, not a module."""
    from torch import nn  # a callable was passed: torch is in use already

    if isinstance(source, nn.Module):
        raise SourceError(
            f"a layer SOURCE is {SOURCE_KINDS}, not a module instance ({type(source).__name__}): "
            "pass its class, since every slot needs a layer of its own"
        )
    if isinstance(source, type) and not issubclass(source, nn.Module):
        raise SourceError(f"a layer SOURCE is {SOURCE_KINDS}, not the class {source.__name__}")
    return source
