"""Arguments shared by several commands."""

import argparse

from primitives import Layout

SOURCE_HELP = "a seed name (see 'evosearch seeds'), a graph file (.yaml), or a formula in quotes"


def add_layout_option(parser: argparse.ArgumentParser) -> None:
    """``--layout image|tokens``: the layout a formula is read in (``args.layout``, a Layout or None);
    a seed or a graph file states its own, and must then agree."""
    parser.add_argument(
        "--layout",
        type=Layout,
        choices=list(Layout),
        help="the layout of the layer: image (N, C, H, W) or tokens (N, L, C); a formula is read in it "
        "(default: image), a seed or graph file must be of it",
    )


def add_set_option(parser: argparse.ArgumentParser, example: str) -> None:
    """``--set KEY=VALUE`` (repeatable), the one override mechanism of every command (``args.set``)."""
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help=f"override a configuration key, e.g. {example} (repeatable; values are YAML)",
    )
