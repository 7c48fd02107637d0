"""``train``: train one layer on one proxy task and print the result record."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from evosearch.cli.options import SOURCE_HELP, add_set_option
from evosearch.cli.output import emit
from evosearch.errors import EvosearchError, one_line
from evosearch.layers.create import resolve_source
from evosearch.tasks.specs import DEFAULT_TASK, load_task, task_names
from evosearch.tasks.train import DEVICE_FAULTS, resolve_device, train_candidate
from evosearch.text import format_value, printable


def register(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser("train", help="train one layer on a proxy task: accuracy, loss curve, speed")
    p.add_argument("source", metavar="SOURCE", help=SOURCE_HELP)
    p.add_argument(
        "--task",
        default=DEFAULT_TASK,
        help=f"a task name ({', '.join(task_names())}) or a task .yaml file (default {DEFAULT_TASK})",
    )
    add_set_option(p, "train.steps=50, model.depth=14, dataset.train_size=1000")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(handler=train)


def train(args: argparse.Namespace) -> int:
    task = load_task(args.task, args.set)
    graph = resolve_source(args.source, task.model.layout)  # a formula is read in the task's layout
    device = resolve_device(task.train.device)
    what = printable(f"training {graph.name} on {task.name}")
    print(f"{what} ({task.train.steps} steps, {device})", file=sys.stderr)
    try:
        record = train_candidate(graph, task).to_json()
    except DEVICE_FAULTS as e:  # the device's doing, not the layer's: a search would retry it elsewhere
        raise EvosearchError(f"device fault while training on {device}: {one_line(e)}") from None
    emit(record if args.json else _readable(record), as_json=args.json)
    return 0


def _readable(record: dict[str, Any]) -> dict[str, Any]:
    """The record with its loss curve on one line, ``step:loss`` pairs."""
    curve = " ".join(f"{step}:{format_value(loss)}" for step, loss in record["loss_curve"])
    return {**record, "loss_curve": curve}
