"""CLI command groups: each module registers its subcommands and returns data to the output sink."""

import argparse


def add_set_option(parser: argparse.ArgumentParser, example: str) -> None:
    """``--set KEY=VALUE`` (repeatable), the one override mechanism of every command (``args.set``)."""
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help=f"override a configuration key, e.g. {example} (repeatable; values are YAML)",
    )
