"""The primitive ops that layer graphs are built from (torch only)."""

from primitives.registry import (
    BATCH_DEPENDENT_OPS,
    BATCH_INDEPENDENT_SEARCH_OPS,
    COMMUTATIVE_OPS,
    ELEMENTWISE_OPS,
    MOMENT_OPS,
    PRIMITIVES,
    SEARCH_OPS,
    Kind,
    Primitive,
    UnknownOpError,
    get_primitive,
)

__all__ = [
    "BATCH_DEPENDENT_OPS",
    "BATCH_INDEPENDENT_SEARCH_OPS",
    "COMMUTATIVE_OPS",
    "ELEMENTWISE_OPS",
    "MOMENT_OPS",
    "PRIMITIVES",
    "SEARCH_OPS",
    "Kind",
    "Primitive",
    "UnknownOpError",
    "get_primitive",
]
