"""Layer commands: ``seeds``, ``show``, ``export``."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from evosearch.cli.options import SOURCE_HELP, add_layout_option
from evosearch.cli.output import emit
from evosearch.errors import EvosearchError
from evosearch.layers.codegen import class_name_for, export_layer
from evosearch.layers.create import resolve_source
from evosearch.layers.seeds import SEEDS, seed_graph
from evosearch.runner.claims import layer_rows, markdown_table, ranked_layers
from evosearch.runner.run_directory import RunDirectory, export_layers

DEFAULT_TOP = 5


def register(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser("seeds", help="list the hand-designed seed layers")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(handler=seeds)

    p = commands.add_parser("show", help="describe one layer: formula, nodes, parameters, validation")
    p.add_argument("source", help=SOURCE_HELP)
    p.add_argument("--num-features", type=int, default=64, help="channels for the parameter count")
    add_layout_option(p)
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(handler=show)

    p = commands.add_parser(
        "export",
        help="write a layer as a standalone PyTorch module file, or a run's top layers into a directory",
    )
    p.add_argument("source", help=f"{SOURCE_HELP}; or a run directory")
    p.add_argument("--out", required=True, type=Path, help="the .py file to write; for a run, a directory")
    p.add_argument("--class-name", help="class name (default: the layer's name in CamelCase)")
    p.add_argument("--top", type=int, help=f"for a run: how many layers, best first (default {DEFAULT_TOP})")
    add_layout_option(p)
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(handler=export)


def seeds(args: argparse.Namespace) -> int:
    rows = [
        {
            "name": name,
            "layout": seed.layout.value,
            "formula": seed_graph(name).formula(),
            "batch_dependent": seed_graph(name).batch_dependent,
            "reference": seed.reference,
        }
        for name, seed in SEEDS.items()
    ]
    emit(rows, as_json=args.json, columns=["name", "layout", "batch_dependent", "formula"])
    return 0


def show(args: argparse.Namespace) -> int:
    if args.num_features < 1:
        raise EvosearchError(f"--num-features must be at least 1, got {args.num_features}")
    graph = resolve_source(args.source, args.layout)
    per_channel = len(graph.vectors) + (2 if graph.final_affine else 0)
    emit(
        {
            "source": args.source,
            "name": graph.name,
            "layout": graph.layout.value,
            "formula": graph.formula(),
            "final_affine": graph.final_affine,
            "op_nodes": len(graph.op_nodes),
            "ops": sorted(graph.ops),
            "batch_dependent": graph.batch_dependent,
            "vectors": graph.vectors,
            "scalars": graph.scalars,
            "hyperparameters": graph.resolved_hyperparameters(),
            "parameters_per_channel": per_channel,
            "parameters": per_channel * args.num_features + len(graph.scalars),
            "structural_hash": graph.structural_hash(),
            "validation": "ok",
        },
        as_json=args.json,
    )
    return 0


def export(args: argparse.Namespace) -> int:
    if Path(args.source).is_dir():
        return export_run(args)
    if args.top is not None:
        raise EvosearchError("--top applies to a run directory only")
    graph = resolve_source(args.source, args.layout)
    class_name = args.class_name or class_name_for(graph)
    path = export_layer(graph, args.out, class_name)
    emit(
        {"path": str(path), "class_name": class_name, "formula": graph.formula()},
        as_json=args.json,
    )
    return 0


def export_run(args: argparse.Namespace) -> int:
    """A run's top layers, ranked (the Pareto front first): for each a graph file and a standalone
    module in ``--out``, and a README table of their scores and formulas."""
    top = DEFAULT_TOP if args.top is None else args.top
    if top < 1:
        raise EvosearchError(f"--top must be at least 1, got {top}")
    if args.class_name:
        raise EvosearchError("--class-name applies to one layer; a run's layers are named Candidate<id>")
    run = RunDirectory(args.source)
    objectives = run.objectives()  # also: a clear error where SOURCE is not a run directory
    layers = ranked_layers(run.read_events(), run.read_rungs(), objectives)[:top]
    if not layers:
        raise EvosearchError(f"{run.path}: no trained candidate yet")
    title = f"Top {len(layers)} layers of {run.path.name}"
    index = "\n".join([f"# {title}", "", EXPORT_NOTE, "", *markdown_table(layer_rows(layers, objectives))])
    rows = layer_rows(layers, objectives, numbers=args.json)
    stems = export_layers(
        [(layer.id, layer.graph) for layer in layers], output_directory(args.out), index + "\n"
    )
    for rank, (row, stem) in enumerate(zip(rows, stems, strict=True)):
        row.update(rank=rank, graph=str(args.out / f"{stem}.yaml"), module=str(args.out / f"{stem}.py"))
    emit(rows, as_json=args.json, columns=["rank", "id", "rung", *objectives, "module", "formula"])
    return 0


EXPORT_NOTE = (
    "Ranked by the evidence behind them: layers of a higher rung of the funnel first, then by Pareto "
    "rank and mean score; each score is the mean ± sd of the accuracy over the rung's training seeds. "
    "Each layer has a graph file (`.yaml`) and a standalone PyTorch module (`.py`)."
)


def output_directory(out: Path) -> Path:
    """``--out`` for a run's layers: a directory, made where missing; one clear line, before any file
    is written, where that cannot be (a file there, a folder that cannot be written)."""
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise EvosearchError(f"--out {out}: cannot make a directory there ({e.strerror})") from None
    if not os.access(out, os.W_OK | os.X_OK):
        raise EvosearchError(f"--out {out}: the directory cannot be written")
    return out
