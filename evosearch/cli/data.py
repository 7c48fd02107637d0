"""Data commands: ``data prepare`` converts a class-per-folder image tree into an ``image_folder`` file."""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

from evosearch.cli.output import emit
from evosearch.tasks.image_folder import prepare_image_folder


def register(commands: argparse._SubParsersAction) -> None:
    group = commands.add_parser("data", help="prepare datasets for the proxy tasks")
    actions = group.add_subparsers(dest="data_command", metavar="ACTION", required=True)

    p = actions.add_parser(
        "prepare",
        help="convert SRC/<class>/<images> into one .npz for the image_folder dataset (needs Pillow)",
    )
    p.add_argument("src", type=Path, help="a directory with one subdirectory of images per class")
    p.add_argument("--out", required=True, type=Path, help="the .npz file to write")
    p.add_argument("--size", type=int, default=32, help="side of the square images (default 32)")
    p.add_argument(
        "--val-fraction",
        type=float,
        default=0.1,
        help="share of each class kept for validation (default 0.1)",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the train/validation split (default 0)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(handler=prepare)


def prepare(args: argparse.Namespace) -> int:
    summary = prepare_image_folder(
        args.src, args.out, size=args.size, val_fraction=args.val_fraction, seed=args.seed
    )
    emit(dataclasses.asdict(summary), as_json=args.json)
    return 0
