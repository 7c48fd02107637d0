"""Arguments shared by several commands."""

import argparse

SOURCE_HELP = "a seed name (see 'evosearch seeds'), a graph file (.yaml), or a formula in quotes"


def add_set_option(parser: argparse.ArgumentParser, example: str) -> None:
    """``--set KEY=VALUE`` (repeatable), the one override mechanism of every command (``args.set``)."""
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help=f"override a configuration key, e.g. {example} (repeatable; values are YAML)",
    )
