"""The primitive ops that layer graphs are built from (torch only)."""

from primitives.registry import (
    BATCH_DEPENDENT_OPS,
    BATCH_INDEPENDENT_SEARCH_OPS,
    COMMUTATIVE_OPS,
    ELEMENTWISE_OPS,
    INFIX_OPS,
    MOMENT_OPS,
    PREFIX_OPS,
    PRIMITIVES,
    SEARCH_OPS,
    Kind,
    Primitive,
    Sign,
    SignRule,
    UnknownOpError,
    get_primitive,
)

__all__ = [
    "BATCH_DEPENDENT_OPS",
    "BATCH_INDEPENDENT_SEARCH_OPS",
    "COMMUTATIVE_OPS",
    "ELEMENTWISE_OPS",
    "INFIX_OPS",
    "MOMENT_OPS",
    "PREFIX_OPS",
    "PRIMITIVES",
    "SEARCH_OPS",
    "Kind",
    "Primitive",
    "Sign",
    "SignRule",
    "UnknownOpError",
    "get_primitive",
]
