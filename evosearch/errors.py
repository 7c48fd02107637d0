"""Errors a user can act on. The CLI prints their message as one line and exits 1.

Messages quote values from files and the command line through :func:`brief` and :func:`shorten`, never
a plain ``repr``: a value is as large as its file, and a message must stay one short line.
"""

from __future__ import annotations

import math
import reprlib
from collections.abc import Iterable
from typing import Any

from evosearch.text import printable

# Past this many bits an integer is shown by its size: Python refuses to convert one of more than
# 4,300 digits to text, and converting one of thousands of digits is quadratic.
_LONG_INT_BITS = 4096


class EvosearchError(Exception):
    """Base of every error caused by input (a file, a formula, a config, a name)."""


class GraphError(EvosearchError):
    """A layer graph is malformed: the message names the node, its op and its inputs."""


class FormulaError(EvosearchError):
    """A formula uses syntax or names outside the vocabulary."""


class SourceError(EvosearchError):
    """A SOURCE names no layer: not a seed name, a formula, a graph file, a LayerGraph or a module class."""


class LayoutError(SourceError):
    """A layer offered for a slot of the other layout (an image layer for tokens, or the reverse)."""


class DatasetError(EvosearchError):
    """A dataset is missing or malformed: the message says what was expected where and how to get it."""


def one_line(error: BaseException) -> str:
    """An exception's message folded onto one line (its type's name when it has no message)."""
    return " ".join(str(error).split()) or type(error).__name__


class _BriefRepr(reprlib.Repr):
    """reprlib's bounded repr (a few items of a few levels), with huge integers shown by size."""

    def __init__(self) -> None:
        super().__init__()
        self.maxlevel = 3
        self.maxlist = self.maxtuple = self.maxdict = self.maxset = self.maxfrozenset = 4
        self.maxstring = self.maxother = 80
        self.maxlong = 40

    def repr_int(self, x: int, level: int) -> str:
        if x.bit_length() > _LONG_INT_BITS:
            return f"<an integer of {math.floor(math.log10(abs(x))) + 1} digits>"
        return super().repr_int(x, level)


_BRIEF_REPR = _BriefRepr()


def brief(value: Any, limit: int = 80) -> str:
    """``repr(value)`` cut to ``limit`` characters, for messages. Only what is shown is visited: an
    alias bomb's shared lists hold a billion strings, and their full repr would never finish."""
    return _cut(_BRIEF_REPR.repr(value), limit)


def shorten(text: str, limit: int = 80) -> str:
    """``text`` (a key, a name, a path) cut to ``limit`` characters, control characters escaped so
    that a terminal shows them as text rather than obeying them."""
    return printable(_cut(text, limit))


def listing(names: Iterable[Any], count: int = 6) -> str:
    """The first ``count`` names, shortened and comma-separated, with how many more there are."""
    texts = [n if isinstance(n, str) else brief(n) for n in names]
    shown = ", ".join(shorten(t, 40) for t in texts[:count])
    return shown if len(texts) <= count else f"{shown} and {len(texts) - count} more"


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."
