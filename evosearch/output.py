"""The one output sink of the CLI: commands hand it data; it prints a table or ``--json`` on stdout.

Logs and progress go to stderr, so stdout stays clean for scripts.
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Mapping, Sequence
from typing import Any, TextIO


def emit(data: Any, *, as_json: bool, columns: Sequence[str] | None = None, stream: TextIO | None = None):
    """Print ``data``: a list of records as a table (``columns`` picks and orders them), a mapping as
    ``key: value`` lines; with ``as_json`` the same data as JSON."""
    stream = stream or sys.stdout
    if as_json:
        stream.write(json.dumps(data, indent=2, default=str, allow_nan=True) + "\n")
    elif isinstance(data, Mapping):
        width = max((len(str(k)) for k in data), default=0)
        for key, value in data.items():
            stream.write(f"{str(key) + ':':<{width + 1}} {format_value(value)}\n")
    else:
        stream.write(table(list(data), columns) + "\n")
    stream.flush()


def table(rows: list[Mapping[str, Any]], columns: Sequence[str] | None = None) -> str:
    if not rows:
        return "(none)"
    columns = list(columns or rows[0].keys())
    cells = [[format_value(row.get(c, "")) for c in columns] for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(columns)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)).rstrip()]
    lines.append("  ".join("-" * w for w in widths))
    lines.extend("  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip() for r in cells)
    return "\n".join(lines)


def format_value(value: Any) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        if math.isnan(value) or math.isinf(value):
            return str(value)
        return f"{value:.4g}"
    if isinstance(value, Mapping):
        return ", ".join(f"{k}={format_value(v)}" for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return "; ".join(format_value(v) for v in value)
    return str(value)
