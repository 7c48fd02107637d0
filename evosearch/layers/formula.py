"""Formulas as input: ``x / max(batch_std(x), v1 * x + instance_std(x))`` → :class:`LayerGraph`.

The text is parsed with :mod:`ast` and walked against a whitelist: arithmetic (``+ - * /``, unary
minus), calls of primitive ops by name (group ops also take ``groups=N``), numbers, and names. Names
are ``x``, the layer's vectors and scalars, its hyperparameters, and names bound earlier in the
formula: a formula may be several lines of ``name = expression`` ending in the output expression.
Nothing is evaluated. The text does not say which layout it is for: the caller does (image by default).
"""

from __future__ import annotations

import ast
from collections.abc import Mapping

from evosearch.errors import FormulaError, GraphError, brief, listing
from evosearch.layers.graph import DEFAULT_HYPERPARAMETERS, INPUT, LayerGraph
from primitives import INFIX_OPS, PREFIX_OPS, PRIMITIVES, Layout

# EvoNorm's trainable vectors, available to any formula: v0 (init 0) and v1 (init 1).
EVONORM_VECTORS: dict[str, float] = {"v0": 0.0, "v1": 1.0}
# The per-layer scalars a formula (and a search space) of each layout has: DyT's alpha for tokens.
FORMULA_SCALARS: dict[Layout, dict[str, float]] = {Layout.IMAGE: {}, Layout.TOKENS: {"alpha": 0.5}}
MAX_FORMULA_CHARS = 20_000

# Python's operators as the symbols that op records declare (INFIX_OPS, PREFIX_OPS say which op).
_INFIX_SYMBOLS = {ast.Add: "+", ast.Sub: "-", ast.Mult: "*", ast.Div: "/"}
_PREFIX_SYMBOLS = {ast.USub: "-"}


def parse_formula(
    text: str,
    *,
    name: str = "layer",
    vectors: Mapping[str, float] | None = None,
    scalars: Mapping[str, float] | None = None,
    hyperparameters: Mapping[str, float | int] | None = None,
    final_affine: bool = False,
    layout: Layout | str = Layout.IMAGE,
) -> LayerGraph:
    """Build a validated graph from a formula. ``vectors`` and ``scalars`` map the allowed names of
    per-channel and per-layer parameters to their inits (vectors default to EvoNorm's v0, v1)."""
    if not isinstance(text, str) or not text.strip():
        raise FormulaError("empty formula")
    if len(text) > MAX_FORMULA_CHARS:
        raise FormulaError(f"formula longer than {MAX_FORMULA_CHARS} characters")
    try:
        tree = ast.parse(text.strip(), mode="exec")
    except (RecursionError, MemoryError):  # the parser's stack: MemoryError() carries no message
        raise FormulaError("cannot parse formula: nested too deeply") from None
    except (SyntaxError, ValueError) as e:
        raise FormulaError(f"cannot parse formula: {getattr(e, 'msg', e)}") from None
    graph = LayerGraph(name, dict(hyperparameters or {}), final_affine, layout=Layout(layout))
    vectors = dict(EVONORM_VECTORS if vectors is None else vectors)
    parser = _Parser(graph, vectors, dict(scalars or {}), text)
    try:
        graph.set_output(parser.program(tree))
        graph.validate()
    except RecursionError:
        raise FormulaError("formula nested too deeply") from None
    except GraphError as e:
        raise FormulaError(str(e)) from None
    return graph


class _Parser:
    def __init__(self, graph: LayerGraph, vectors: dict[str, float], scalars: dict[str, float], text: str):
        self.graph = graph
        self.vectors = vectors
        self.scalars = scalars
        self.text = text
        self.bound: dict[str, str] = {}

    def fail(self, node: ast.AST, message: str) -> FormulaError:
        where = ""
        if hasattr(node, "lineno"):
            snippet = ast.get_source_segment(self.text.strip(), node) or ""
            where = f" at line {node.lineno}, column {node.col_offset + 1}"
            if snippet:
                where += f" ({brief(snippet, 60)})"
        return FormulaError(message + where)

    def program(self, tree: ast.Module) -> str:
        if not tree.body or not isinstance(tree.body[-1], ast.Expr):
            raise FormulaError("a formula must end with the output expression")
        for stmt in tree.body[:-1]:
            if not (
                isinstance(stmt, ast.Assign)
                and len(stmt.targets) == 1
                and isinstance(stmt.targets[0], ast.Name)
            ):
                raise self.fail(
                    stmt,
                    f"only 'name = expression' lines may precede the output, not {type(stmt).__name__}",
                )
            target = stmt.targets[0].id
            if target in self.reserved:
                raise self.fail(stmt, f"cannot rebind {brief(target)}")
            self.bound[target] = self.expr(stmt.value, hint=target)
        return self.expr(tree.body[-1].value)

    @property
    def reserved(self) -> set[str]:
        return {
            INPUT,
            *self.vectors,
            *self.scalars,
            *self.graph.hyperparameters,
            *DEFAULT_HYPERPARAMETERS,
            *PRIMITIVES,
        }

    def expr(self, node: ast.AST, hint: str | None = None) -> str:
        """The graph node of an expression; ``hint`` names it when it is new (``mu = ...``)."""
        if isinstance(node, ast.BinOp):
            return self.binary(node, hint)
        if isinstance(node, ast.UnaryOp) and type(node.op) in (*_PREFIX_SYMBOLS, ast.UAdd):
            return self.unary(node, hint)
        if _is_number(node):
            return self.graph.const(node.value)
        if isinstance(node, ast.Name):
            return self.name(node)
        if isinstance(node, ast.Call):
            return self.call(node, hint)
        raise self.fail(node, f"unsupported syntax {type(node).__name__}")

    def binary(self, node: ast.BinOp, hint: str | None) -> str:
        op = INFIX_OPS.get(_INFIX_SYMBOLS.get(type(node.op), ""))
        if op is None:
            operators = " ".join(INFIX_OPS)
            raise self.fail(
                node, f"operator {type(node.op).__name__} is not in the vocabulary (use {operators})"
            )
        return self.graph.add(op, self.expr(node.left), self.expr(node.right), hint=hint)

    def unary(self, node: ast.UnaryOp, hint: str | None) -> str:
        if isinstance(node.op, ast.UAdd):
            return self.expr(node.operand)
        if isinstance(node.op, ast.USub) and _is_number(node.operand):
            return self.graph.const(-node.operand.value)  # -2 is a number, not the op applied to 2
        return self.graph.add(PREFIX_OPS[_PREFIX_SYMBOLS[type(node.op)]], self.expr(node.operand), hint=hint)

    def name(self, node: ast.Name) -> str:
        ident = node.id
        if ident in self.bound:
            return self.bound[ident]
        if ident == INPUT:
            return INPUT
        if ident in self.vectors:
            return self.graph.vector(ident, self.vectors[ident])
        if ident in self.scalars:
            return self.graph.scalar(ident, self.scalars[ident])
        if ident in self.graph.hyperparameters or ident in DEFAULT_HYPERPARAMETERS:
            return self.graph.hyper(ident)
        known = [INPUT, *sorted(self.vectors), *sorted(self.scalars), *sorted(self.bound)]
        raise self.fail(node, f"unknown name {brief(ident)} (known names: {listing(known)})")

    def call(self, node: ast.Call, hint: str | None = None) -> str:
        if not isinstance(node.func, ast.Name):
            raise self.fail(node, "only primitive ops can be called, by plain name")
        op = node.func.id
        prim = PRIMITIVES.get(op)
        if prim is None:
            raise self.fail(node, f"unknown op {brief(op)}; known ops: {', '.join(sorted(PRIMITIVES))}")
        if any(isinstance(a, ast.Starred) for a in node.args):
            raise self.fail(node, "starred arguments are not allowed")
        if len(node.args) != prim.arity:
            raise self.fail(node, f"op {brief(op)} takes {prim.arity} input(s), got {len(node.args)}")
        attrs = {}
        for kw in node.keywords:
            if kw.arg not in prim.attrs:
                allowed = ", ".join(sorted(prim.attrs)) or "none"
                raise self.fail(node, f"op {brief(op)} takes no keyword {brief(kw.arg)} (allowed: {allowed})")
            if not (_is_number(kw.value) and isinstance(kw.value.value, int)):
                raise self.fail(kw.value, f"{kw.arg} must be an integer literal")
            attrs[kw.arg] = kw.value.value
        inputs = [self.expr(a) for a in node.args]
        try:
            return self.graph.add(op, *inputs, hint=hint, **attrs)
        except GraphError as e:
            raise self.fail(node, str(e)) from None


def _is_number(node: ast.AST) -> bool:
    return (
        isinstance(node, ast.Constant)
        and isinstance(node.value, (int, float))
        and not isinstance(node.value, bool)
    )
