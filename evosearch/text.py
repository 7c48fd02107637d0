"""Plain-text tables and values, as the CLI prints them and reports show them.

Text from data (a graph's name, a record's formula, a path) may hold control characters: an ANSI
escape would recolour or clear the user's terminal. Every value goes out through :func:`printable`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any


def table(rows: list[Mapping[str, Any]], columns: Sequence[str] | None = None) -> str:
    if not rows:
        return "(none)"
    columns = list(columns or rows[0].keys())
    cells = [[format_value(row.get(c, "")) for c in columns] for row in rows]
    columns = [printable(str(c)) for c in columns]
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
        return ", ".join(f"{printable(str(k))}={format_value(v)}" for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return "; ".join(format_value(v) for v in value)
    return printable(str(value))


def printable(text: str) -> str:
    """``text`` with each non-printable character (control characters, ANSI escapes' ESC) written as
    its Python escape, ``\\x1b``: shown as text, never obeyed by a terminal."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)
