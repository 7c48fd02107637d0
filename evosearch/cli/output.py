"""The one output sink of the CLI: commands hand it data; it prints a table or ``--json`` on stdout.

Logs and progress go to stderr, so stdout stays clean for scripts.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping, Sequence
from typing import Any, TextIO

from evosearch.text import format_value, printable, table


def emit(data: Any, *, as_json: bool, columns: Sequence[str] | None = None, stream: TextIO | None = None):
    """Print ``data``: a list of records as a table (``columns`` picks and orders them), a mapping as
    ``key: value`` lines; with ``as_json`` the same data as JSON."""
    stream = stream or sys.stdout
    if as_json:
        stream.write(json.dumps(data, indent=2, default=str, allow_nan=True) + "\n")
    elif isinstance(data, Mapping):
        keys = [printable(str(k)) for k in data]
        width = max((len(k) for k in keys), default=0)
        for key, value in zip(keys, data.values(), strict=True):
            stream.write(f"{key + ':':<{width + 1}} {format_value(value)}\n")
    else:
        stream.write(table(list(data), columns) + "\n")
    stream.flush()
