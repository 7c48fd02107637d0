"""Formula parsing: the vocabulary is accepted, everything else is a FormulaError (never evaluated)."""

from __future__ import annotations

import contextlib

import pytest
from helpers import reparse
from hypothesis import given, settings
from hypothesis import strategies as st

from evosearch.errors import EvosearchError, FormulaError
from evosearch.layers.formula import MAX_FORMULA_CHARS, parse_formula
from evosearch.layers.graph import INPUT, MAX_INLINE_DEPTH, LayerGraph
from evosearch.layers.graph_io import graph_to_dict, load_graph, save_graph
from evosearch.layers.seeds import seed_graph
from tests.random_graphs import random_graphs


def _ops(g: LayerGraph) -> list[str]:
    return [n.op for n in g.op_nodes]


# ---- accepted -----------------------------------------------------------------------------------


def test_evonorm_b0_example():
    g = parse_formula("x / max(batch_std(x), v1 * x + instance_std(x))")
    assert isinstance(g, LayerGraph)
    assert set(_ops(g)) == {"batch_std", "mul", "instance_std", "add", "max", "div"}
    assert g.vectors == {"v1": 1.0}
    assert g.formula() == "x / max(batch_std(x), v1 * x + instance_std(x))"
    assert g.batch_dependent
    assert g.resolved_hyperparameters() == {"eps": 1e-5, "momentum": 0.1}


def test_evonorm_s0_example():
    g = parse_formula("x * sigmoid(v1 * x) / group_std(x)")
    out = g.node(g.output)
    assert out.op == "div"
    assert g.node(out.inputs[0]).op == "mul" and g.node(out.inputs[1]).op == "group_std"
    assert not g.batch_dependent
    assert g.resolved_hyperparameters() == {"eps": 1e-5, "groups": 32}


def test_group_norm_relu_example_with_groups():
    g = parse_formula("max((x - group_mean(x, groups=8)) / group_std(x, groups=8), 0)")
    groups = {n.op: n.attr("groups") for n in g.op_nodes if n.op.startswith("group_")}
    assert groups == {"group_mean": 8, "group_std": 8}
    assert "groups" not in g.resolved_hyperparameters()  # every group op sets its own
    assert g.formula() == "max((x - group_mean(x, groups=8)) / group_std(x, groups=8), 0)"
    const = [n for n in g if n.op == "const"]
    assert [n.attr("value") for n in const] == [0.0]


def test_multi_line_formula_with_bindings():
    text = """
        mu = layer_mean(x)
        centered = x - mu
        sigma = layer_std(x)
        centered / sigma * v1 + v0
    """
    g = parse_formula("\n".join(line.strip() for line in text.strip().splitlines()))
    assert {"mu", "centered", "sigma"} <= {n.name for n in g}
    assert g.formula() == "(x - layer_mean(x)) / layer_std(x) * v1 + v0"
    assert g.vectors == {"v1": 1.0, "v0": 0.0}
    same = parse_formula("(x - layer_mean(x)) / layer_std(x) * v1 + v0")
    assert same.structural_hash() == g.structural_hash()


def test_bindings_may_use_earlier_bindings_and_be_reused():
    g = parse_formula("a = sigmoid(x)\nb = a * a\nb + a * x")
    assert _ops(g).count("sigmoid") == 1


def test_repeated_subexpressions_are_built_once():
    g = parse_formula("x / max(batch_std(x), batch_std(x) * x) + batch_std(x)")
    assert _ops(g).count("batch_std") == 1


def test_numbers_unary_and_semicolons():
    g = parse_formula("+x * -1.5 + 2 - -x; ")
    assert g.formula() == "x * -1.5 + 2 - -x"
    g = parse_formula("y = x * 2; y + 1")
    assert g.formula() == "x * 2 + 1"


def test_hyperparameters_and_custom_vectors():
    g = parse_formula(
        "max(x * gamma, tau) / (layer_std(x) + margin)",
        vectors={"gamma": 1.0, "tau": 0.0},
        hyperparameters={"margin": 0.5, "eps": 1e-3},
        final_affine=True,
        name="custom",
    )
    assert g.name == "custom" and g.final_affine
    assert g.vectors == {"gamma": 1.0, "tau": 0.0}
    assert g.node("margin").op == "hyper"
    assert g.resolved_hyperparameters() == {"eps": 1e-3, "margin": 0.5}
    # default hyperparameters may be used as values without being declared
    assert parse_formula("x * momentum").node("momentum").op == "hyper"


def test_every_search_op_parses_by_name():
    from primitives import PRIMITIVES, SEARCH_OPS

    for op in sorted(SEARCH_OPS):
        args = ", ".join(["x"] * PRIMITIVES[op].arity)
        g = parse_formula(f"x - {op}({args}) * v1")
        assert op in g.ops


# ---- rejected -----------------------------------------------------------------------------------

REJECTED = {
    "attribute": ("x.__class__", "unsupported syntax Attribute"),
    "attribute call": ("x.exp()", "only primitive ops can be called, by plain name"),
    "import": ("__import__('os')", "unknown op '__import__'"),
    "eval": ("eval('1')", "unknown op 'eval'"),
    "open": ("open('f')", "unknown op 'open'"),
    "exec": ("exec('import os') + x", "unknown op 'exec'"),
    "getattr": ("getattr(x, 'exp')", "unknown op 'getattr'"),
    "dunder name": ("__builtins__", "unknown name '__builtins__'"),
    "dunder in expression": ("x + __class__", "unknown name '__class__'"),
    "lambda": ("(lambda: x)()", "only primitive ops can be called"),
    "bare lambda": ("lambda: x", "unsupported syntax Lambda"),
    "list comprehension": ("[x for x in x]", "unsupported syntax ListComp"),
    "generator": ("abs(y for y in x)", "unsupported syntax GeneratorExp"),
    "subscript": ("x[0]", "unsupported syntax Subscript"),
    "string": ("'x'", "unsupported syntax Constant"),
    "bytes": ("x * b'1'", "unsupported syntax Constant"),
    "f-string": ("f'{x}'", "unsupported syntax JoinedStr"),
    "walrus": ("(y := x) + y", "unsupported syntax NamedExpr"),
    "starred": ("max(*x)", "starred arguments are not allowed"),
    "double starred": ("group_std(x, **{'groups': 2})", "takes no keyword None"),
    "keyword other than groups": (
        "layer_std(x, eps=1)",
        "op 'layer_std' takes no keyword 'eps' (allowed: none)",
    ),
    "unknown keyword on group op": ("group_std(x, axis=1)", "takes no keyword 'axis' (allowed: groups)"),
    "groups not a literal": ("group_std(x, groups=x)", "groups must be an integer literal"),
    "groups float": ("group_std(x, groups=2.0)", "groups must be an integer literal"),
    "groups bool": ("group_std(x, groups=True)", "groups must be an integer literal"),
    "groups negative": ("group_std(x, groups=-2)", "groups must be an integer literal"),
    "groups zero": ("x - group_std(x, groups=0)", "groups must be a positive integer, got 0"),
    "pow": ("x ** 2", "operator Pow is not in the vocabulary (use + - * /)"),
    "matmul": ("x @ x", "operator MatMult is not in the vocabulary"),
    "floordiv": ("x // 2", "operator FloorDiv is not in the vocabulary"),
    "bitwise": ("x | 1", "operator BitOr is not in the vocabulary"),
    "invert": ("~x", "unsupported syntax UnaryOp"),
    "not": ("not x", "unsupported syntax UnaryOp"),
    "comparison": ("x < 1", "unsupported syntax Compare"),
    "boolean": ("x and v1", "unsupported syntax BoolOp"),
    "conditional": ("x if v1 else v0", "unsupported syntax IfExp"),
    "tuple": ("x, x", "unsupported syntax Tuple"),
    "dict": ("{1: x}", "unsupported syntax Dict"),
    "boolean literal": ("x * True", "unsupported syntax Constant"),
    "none literal": ("x * None", "unsupported syntax Constant"),
    "complex literal": ("x * 1j", "unsupported syntax Constant"),
    "ellipsis": ("x * ...", "unsupported syntax Constant"),
    "unknown name": ("x * y", "unknown name 'y' (known names: x, v0, v1)"),
    "unknown op": ("softplus(x)", "unknown op 'softplus'; known ops: abs, add"),
    "op as a name": ("x * sigmoid", "unknown name 'sigmoid'"),
    "wrong arity": ("max(x)", "op 'max' takes 2 input(s), got 1"),
    "import statement": ("import os\nx", "only 'name = expression' lines may precede the output, not Import"),
    "two expressions": ("x\nx", "only 'name = expression' lines may precede the output, not Expr"),
    "assignment last": ("y = x", "a formula must end with the output expression"),
    "tuple target": ("a, b = x, x\na", "only 'name = expression' lines"),
    "attribute target": ("x.y = 1\nx", "only 'name = expression' lines"),
    "augmented assignment": ("y = x\ny += 1\ny", "not AugAssign"),
    "rebind x": ("x = v1\nx", "cannot rebind 'x'"),
    "rebind vector": ("v1 = x\nv1", "cannot rebind 'v1'"),
    "rebind op": ("sigmoid = x\nsigmoid", "cannot rebind 'sigmoid'"),
    "rebind hyperparameter": ("eps = x\neps", "cannot rebind 'eps'"),
    "def": ("def f(): pass\nx", "not FunctionDef"),
    "syntax error": ("x +", "cannot parse formula"),
    "unbalanced": ("max(x, 0", "cannot parse formula"),
    "tab indentation": ("  x\n    + 1", "cannot parse formula"),
    "null byte": ("x\0", "cannot parse formula"),
    "invalid graph: statistic output": ("layer_mean(x)", "is a statistic, not a feature map"),
    "invalid graph: no x": ("v1 + 1", "does not depend on the input x"),
    "invalid graph: unused binding": ("y = exp(x)\nx * 2", "is not used by the output"),
    "invalid graph: moment of a constant": ("x + layer_mean(v1)", "does not depend on x"),
}


@pytest.mark.parametrize("case", sorted(REJECTED))
def test_rejected_with_a_formula_error(case):
    text, message = REJECTED[case]
    with pytest.raises(FormulaError) as err:
        parse_formula(text)
    assert message in str(err.value)
    assert "\n" not in str(err.value)


def test_error_points_at_the_offending_text():
    with pytest.raises(FormulaError) as err:
        parse_formula("y = sigmoid(x)\ny * x.grad")
    assert str(err.value) == "unsupported syntax Attribute at line 2, column 5 ('x.grad')"


@pytest.mark.parametrize("text", ["", "   ", "\n\t\n", None, b"x", 3])
def test_empty_or_not_text(text):
    with pytest.raises(FormulaError, match="empty formula"):
        parse_formula(text)


def test_too_long():
    with pytest.raises(FormulaError, match=f"formula longer than {MAX_FORMULA_CHARS} characters"):
        parse_formula("x" + " + x" * MAX_FORMULA_CHARS)


@pytest.mark.parametrize(
    "text",
    [
        "(" * 5000 + "x" + ")" * 5000,
        "-" * 10000 + "x",
        "-" * 19000 + "x",
        "+" * 10000 + "x",
        "x" + " + x" * 4900,
        "x" + " * (x" * 3000 + ")" * 3000,
        "sigmoid(" * 2000 + "x" + ")" * 2000,
        "abs(" * 900 + "x" + ")" * 900,
        "neg(" * 1500 + "x" + ")" * 1500,
        "\n".join(f"y{i} = {'x' if i == 0 else f'y{i - 1}'} + x" for i in range(1500)) + "\ny1499",
    ],
)
def test_very_deep_nesting_is_a_formula_error_or_a_graph(text):
    try:
        g = parse_formula(text)
    except FormulaError as e:
        assert str(e)
        assert str(e) != "cannot parse formula: "  # a message, not an empty one
    else:
        assert isinstance(g, LayerGraph)
        assert not g.problems()


def test_nothing_is_evaluated(tmp_path):
    marker = tmp_path / "pwned"
    attempts = [
        f"__import__('os').system('touch {marker}')",
        f"open('{marker}', 'w')",
        f"exec(\"open('{marker}', 'w')\")",
        f"x + [open('{marker}', 'w') for _ in x]",
        f"y = open('{marker}', 'w')\nx",
    ]
    for text in attempts:
        with pytest.raises(FormulaError):
            parse_formula(text)
    assert not marker.exists()


def test_formula_error_is_an_evosearch_error():
    assert issubclass(FormulaError, EvosearchError)


_TOKENS = [
    "x",
    "v0",
    "v1",
    "1",
    "0.5",
    "+",
    "-",
    "*",
    "/",
    "**",
    "(",
    ")",
    ",",
    "=",
    "\n",
    " ",
    "max(",
    "group_std(",
    "groups=",
    "layer_mean(",
    "batch_std(",
    "sigmoid(",
    "y",
    ".",
    "[",
    "]",
    "'",
    "lambda",
    ":",
    "__class__",
    "import",
    "os",
    ";",
]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(_TOKENS), max_size=30).map("".join))
def test_token_soup_never_raises_anything_but_formula_error(text):
    try:
        g = parse_formula(text)
    except FormulaError as e:
        assert str(e)
    else:
        assert not g.problems()


@settings(max_examples=100, deadline=None)
@given(st.text(max_size=40))
def test_arbitrary_text_never_raises_anything_but_formula_error(text):
    with contextlib.suppress(FormulaError):
        parse_formula(text)


# ---- rendering shared sub-expressions: written once, read back ------------------------------------


def _doubling_chain(op_nodes: int) -> LayerGraph:
    """Each node read twice by the next: written out at every use, the formula doubles per node."""
    graph, node = LayerGraph("doubling"), INPUT
    for k in range(op_nodes):
        node = graph.add("mul" if k % 2 else "add", node, node)
    graph.set_output(node)
    return graph.validate()


def _nested_chain(op_nodes: int) -> LayerGraph:
    graph, node = LayerGraph("nested"), INPUT
    for _ in range(op_nodes):
        node = graph.add("sigmoid", node)
    graph.set_output(node)
    return graph.validate()


@pytest.mark.parametrize("build", [_doubling_chain, _nested_chain])
def test_formula_length_is_linear_in_the_nodes(build):
    for op_nodes in (8, 14, 26, 300):
        graph = build(op_nodes)
        assert len(graph.formula()) <= 20 * op_nodes
        again = reparse(graph)
        assert again.structural_hash() == graph.structural_hash()
        assert again.formula() == graph.formula()


def test_shared_sub_expressions_are_named_once():
    assert _doubling_chain(4).formula() == "t1 = (x + x) * (x + x); t2 = t1 + t1; t2 * t2"
    own_names = "mu = x - batch_mean(x); sd = sqrt(batch_mean(mu * mu) + eps); mu / sd + sd"
    assert parse_formula(own_names).formula() == own_names
    proxy_norm = "t1 = (x - group_mean(x)) / group_std(x); a = max(weight * t1 + bias, 0); (a - proxy_mean("
    assert seed_graph("gn_proxynorm").formula().startswith(proxy_norm)  # y: what docstrings call the output


def test_deep_nesting_is_cut_into_statements():
    """Python's parser reads at most 200 nested parentheses."""
    statements = _nested_chain(300).formula().split("; ")
    assert len(statements) > 1 and all(s.count("(") <= MAX_INLINE_DEPTH + 1 for s in statements)


def test_graphs_without_sharing_keep_one_expression():
    """A call on leaves alone is short, so written at each use, as Batch Renorm's batch_std(x)."""
    graph = seed_graph("batch_renorm_relu")
    assert "=" not in graph.formula() and graph.formula().count("batch_std(x)") == 2


def test_bound_names_stay_clear_of_every_other_name():
    """A node named after a vector, a hyperparameter, an op or a keyword, or as LayerGraph names
    nodes, is bound under a fresh name; fresh names skip every name the graph holds."""
    graph = LayerGraph("names", {"t1": 2.0})
    scaled = graph.add("mul", graph.add("sigmoid", INPUT, name="s"), graph.hyper("t1"), name="u")
    total = INPUT
    for k, name in enumerate(["t2", "eps", "sigmoid", "lambda", "mul_30", "c_9", "t3"]):
        node = graph.add("add", scaled, graph.const(k), name=name)
        total = graph.add("add", total, graph.add("mul", node, node))
    graph.set_output(total)
    graph.validate()
    names = [s.split(" = ")[0] for s in graph.formula().split("; ")[:-1]]
    assert names == ["u", "t2", "t4", "t5", "t6", "t7", "t8", "t3"]
    assert reparse(graph).structural_hash() == graph.structural_hash()


@settings(max_examples=60, deadline=None)
@given(random_graphs(max_steps=30))
def test_formula_round_trip_for_larger_random_graphs(graph):
    text = graph.formula()
    again = reparse(graph)
    assert again.structural_hash() == graph.structural_hash()
    assert again.formula() == text
    assert len(text) <= 60 * len(graph)


@pytest.mark.parametrize(
    "graph",
    [_doubling_chain(14), _nested_chain(14), _nested_chain(300), _doubling_chain(3000)],
    ids=["doubling_14", "nested_14", "nested_deep", "doubling_3000"],
)
def test_every_saved_graph_loads_back(tmp_path, graph):
    """The default max_nodes (14) at its worst, deep nesting, and a graph whose formula is too long
    to parse (saved without one)."""
    path = save_graph(graph, tmp_path / "g.yaml")
    assert load_graph(path).structural_hash() == graph.structural_hash()
    assert ("formula" in graph_to_dict(graph)) == (len(graph.formula()) <= MAX_FORMULA_CHARS)
