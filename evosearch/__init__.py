"""evosearch: evolutionary search for normalization-activation layers.

Layers are graphs over primitive ops (:mod:`primitives`); the hand-designed layers are seeds of the
search; any graph compiles to a PyTorch module and exports to a standalone file.

The package is layered, each folder importing only from those before it::

    primitives  <-  layers  <-  tasks  <-  probes  <-  runner  <-  cli
                          \\_________  search  _______/

The names below are the public API, imported on first use: ``import evosearch`` (and the graph and
search modules) stays free of torch, Ray and matplotlib until a name that needs them is touched.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# Public name -> the module that defines it.
_EXPORTS = {
    "EvosearchError": "evosearch.errors",
    "FormulaError": "evosearch.errors",
    "GraphError": "evosearch.errors",
    "SourceError": "evosearch.errors",
    "LayerGraph": "evosearch.layers.graph",
    "Node": "evosearch.layers.graph",
    "parse_formula": "evosearch.layers.formula",
    "dump_graph": "evosearch.layers.graph_io",
    "graph_from_dict": "evosearch.layers.graph_io",
    "load_graph": "evosearch.layers.graph_io",
    "save_graph": "evosearch.layers.graph_io",
    "SEEDS": "evosearch.layers.seeds",
    "seed_graph": "evosearch.layers.seeds",
    "seed_names": "evosearch.layers.seeds",
    "build_layer": "evosearch.layers.codegen",
    "compile_layer": "evosearch.layers.codegen",
    "export_layer": "evosearch.layers.codegen",
    "layer_source": "evosearch.layers.codegen",
    "create_layer": "evosearch.layers.create",
    "resolve_source": "evosearch.layers.create",
    "SwapReport": "evosearch.layers.swap",
    "swap_norm_act": "evosearch.layers.swap",
}

__all__ = [
    "SEEDS",
    "EvosearchError",
    "FormulaError",
    "GraphError",
    "LayerGraph",
    "Node",
    "SourceError",
    "SwapReport",
    "__version__",
    "build_layer",
    "compile_layer",
    "create_layer",
    "dump_graph",
    "export_layer",
    "graph_from_dict",
    "layer_source",
    "load_graph",
    "parse_formula",
    "resolve_source",
    "save_graph",
    "seed_graph",
    "seed_names",
    "swap_norm_act",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'evosearch' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS})


if TYPE_CHECKING:  # static analysers and IDEs see the names directly
    from evosearch.errors import EvosearchError, FormulaError, GraphError, SourceError
    from evosearch.layers.codegen import build_layer, compile_layer, export_layer, layer_source
    from evosearch.layers.create import create_layer, resolve_source
    from evosearch.layers.formula import parse_formula
    from evosearch.layers.graph import LayerGraph, Node
    from evosearch.layers.graph_io import dump_graph, graph_from_dict, load_graph, save_graph
    from evosearch.layers.seeds import SEEDS, seed_graph, seed_names
    from evosearch.layers.swap import SwapReport, swap_norm_act
