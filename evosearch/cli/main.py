"""``evosearch`` command line: parse, call the library, hand data to the output sink.

Errors caused by input print one line on stderr and exit 1; set ``EVOSEARCH_DEBUG=1`` for tracebacks.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from typing import NoReturn

from evosearch import __version__
from evosearch.cli import data, layers, probe, report, run, train
from evosearch.errors import EvosearchError, one_line, shorten
from evosearch.text import printable

COMMAND_GROUPS = (layers, data, probe, train, run, report)


class _Parser(argparse.ArgumentParser):
    """argparse's parser, whose usage errors quote the bad argument shortened and escaped: an
    argument may be 5,000 digits or hold terminal escapes."""

    def error(self, message: str) -> NoReturn:
        super().error(shorten(message, 300))  # escaped as well as shortened


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
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
        print(f"evosearch: error: {printable(one_line(e))}", file=sys.stderr)
        return 1
    except OSError as e:  # the file system's answer (full, read-only, not a directory): the user's to act on
        if debug:
            raise
        print(f"evosearch: error: {printable(os_error_line(e))}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("evosearch: interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # a bug, not bad input: still one line, the traceback on request
        if debug:
            raise
        print(
            f"evosearch: internal error: {type(e).__name__}: {printable(one_line(e))} "
            "(set EVOSEARCH_DEBUG=1 for the traceback)",
            file=sys.stderr,
        )
        return 2


def os_error_line(error: OSError) -> str:
    """What failed on which file: the target of a rename (``os.replace``) rather than its temporary
    source, which is all an atomic write shows otherwise."""
    path = error.filename2 if error.filename2 is not None else error.filename
    reason = error.strerror or one_line(error)
    return f"{reason}: {shorten(str(path), 200)}" if path is not None else reason
