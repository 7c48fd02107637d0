"""evosearch: evolutionary search for normalization-activation layers.

Layers are graphs over primitive ops (:mod:`primitives`); the hand-designed layers are seeds of the
search; any graph compiles to a PyTorch module and exports to a standalone file.
"""

__version__ = "0.1.0"

from evosearch.codegen import build_layer, compile_layer, export_layer, layer_source
from evosearch.errors import EvosearchError, FormulaError, GraphError, SourceError
from evosearch.formula import parse_formula
from evosearch.graph import LayerGraph, Node
from evosearch.graph_io import dump_graph, graph_from_dict, load_graph, save_graph
from evosearch.seeds import SEEDS, seed_graph, seed_names
from evosearch.sources import resolve_source
from evosearch.swap import SwapReport, swap_norm_act

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
