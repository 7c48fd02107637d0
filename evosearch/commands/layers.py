"""Layer commands: ``seeds``, ``show``, ``export``."""

from __future__ import annotations

import argparse
from pathlib import Path

from evosearch.codegen import class_name_for, export_layer
from evosearch.output import emit
from evosearch.seeds import SEEDS, seed_graph
from evosearch.sources import resolve_source

SOURCE_HELP = "a seed name (see 'evosearch seeds'), a graph file (.yaml), or a formula in quotes"


def register(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser("seeds", help="list the hand-designed seed layers")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(handler=seeds)

    p = commands.add_parser("show", help="describe one layer: formula, nodes, parameters, validation")
    p.add_argument("source", help=SOURCE_HELP)
    p.add_argument("--num-features", type=int, default=64, help="channels for the parameter count")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(handler=show)

    p = commands.add_parser("export", help="write a layer as a standalone PyTorch module file")
    p.add_argument("source", help=SOURCE_HELP)
    p.add_argument("--out", required=True, type=Path, help="the .py file to write")
    p.add_argument("--class-name", help="class name (default: the layer's name in CamelCase)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(handler=export)


def seeds(args: argparse.Namespace) -> int:
    rows = [
        {
            "name": name,
            "formula": seed_graph(name).formula(),
            "batch_dependent": seed_graph(name).batch_dependent,
            "reference": seed.reference,
        }
        for name, seed in SEEDS.items()
    ]
    emit(rows, as_json=args.json, columns=["name", "batch_dependent", "formula"])
    return 0


def show(args: argparse.Namespace) -> int:
    graph = resolve_source(args.source)
    per_channel = len(graph.vectors) + (2 if graph.final_affine else 0)
    emit(
        {
            "source": args.source,
            "name": graph.name,
            "formula": graph.formula(),
            "final_affine": graph.final_affine,
            "op_nodes": len(graph.op_nodes),
            "ops": sorted(graph.ops),
            "batch_dependent": graph.batch_dependent,
            "vectors": graph.vectors,
            "hyperparameters": graph.resolved_hyperparameters(),
            "parameters_per_channel": per_channel,
            "parameters": per_channel * args.num_features,
            "structural_hash": graph.structural_hash(),
            "validation": "ok",
        },
        as_json=args.json,
    )
    return 0


def export(args: argparse.Namespace) -> int:
    graph = resolve_source(args.source)
    class_name = args.class_name or class_name_for(graph)
    path = export_layer(graph, args.out, class_name)
    emit(
        {"path": str(path), "class_name": class_name, "formula": graph.formula()},
        as_json=args.json,
    )
    return 0
