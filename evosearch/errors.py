"""Errors a user can act on. The CLI prints their message as one line and exits 1."""


class EvosearchError(Exception):
    """Base of every error caused by input (a file, a formula, a config, a name)."""


class GraphError(EvosearchError):
    """A layer graph is malformed: the message names the node, its op and its inputs."""


class FormulaError(EvosearchError):
    """A formula uses syntax or names outside the vocabulary."""


class SourceError(EvosearchError):
    """A SOURCE names no layer: not a seed name, a formula, a graph file, a LayerGraph or a module class."""


class DatasetError(EvosearchError):
    """A dataset is missing or malformed: the message says what was expected where and how to get it."""


def one_line(error: BaseException) -> str:
    """An exception's message folded onto one line (its type's name when it has no message)."""
    return " ".join(str(error).split()) or type(error).__name__
