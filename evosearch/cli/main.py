"""``evosearch`` command line: parse, call the library, hand data to the output sink.

Errors caused by input print one line on stderr and exit 1; set ``EVOSEARCH_DEBUG=1`` for tracebacks.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from evosearch import __version__
from evosearch.cli import data, layers, probe, report, run, train
from evosearch.errors import EvosearchError, one_line

COMMAND_GROUPS = (layers, data, probe, train, run, report)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="evosearch",
        description="Evolutionary search for normalization-activation layers.",
    )
    parser.add_argument("--version", action="version", version=f"evosearch {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for group in COMMAND_GROUPS:
        group.register(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    debug = bool(os.environ.get("EVOSEARCH_DEBUG"))
    try:
        return args.handler(args)
    except EvosearchError as e:
        if debug:
            raise
        print(f"evosearch: error: {one_line(e)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("evosearch: interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # a bug, not bad input: still one line, the traceback on request
        if debug:
            raise
        print(
            f"evosearch: internal error: {type(e).__name__}: {one_line(e)} "
            "(set EVOSEARCH_DEBUG=1 for the traceback)",
            file=sys.stderr,
        )
        return 2
