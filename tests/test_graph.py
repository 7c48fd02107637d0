"""Layer graphs: validation messages, structural hash, formula rendering round trip."""

from __future__ import annotations

import re

import pytest
from helpers import reparse
from hypothesis import HealthCheck, given, settings
from random_graphs import random_graphs

from evosearch.errors import GraphError
from evosearch.layers.formula import parse_formula
from evosearch.layers.graph import LayerGraph, Leaf, Shape
from evosearch.layers.graph_io import graph_from_dict
from evosearch.layers.seeds import SEEDS, seed_graph
from primitives import PRIMITIVES


def _file(**fields) -> dict:
    return {"evosearch_graph": 1, "name": "t", **fields}


def _evonorm_s0_like(order: str = "forward", names: bool = False) -> LayerGraph:
    """x * sigmoid(v * x) / group_std(x), built in two different orders and namings."""
    g = LayerGraph("s0", hyperparameters={"eps": 1e-5, "groups": 32}, final_affine=True)
    v = g.vector("v", 1.0)
    if order == "forward":
        gate = g.add("sigmoid", g.add("mul", v, "x", name="vx" if names else None))
        std = g.add("group_std", "x", name="sd" if names else None)
    else:
        std = g.add("group_std", "x", name="zz" if names else None)
        gate = g.add(
            "sigmoid", g.add("mul", v, "x", name="aa" if names else None), name="q" if names else None
        )
    g.set_output(g.add("div", g.add("mul", "x", gate), std))
    return g.validate()


# ---- validation ---------------------------------------------------------------------------------


def test_cycle_in_a_graph_file():
    nodes = [
        {"name": "a", "op": "add", "inputs": ["b", "x"]},
        {"name": "b", "op": "mul", "inputs": ["a", "x"]},
    ]
    with pytest.raises(GraphError, match=r"the graph has a cycle: (a -> b -> a|b -> a -> b)"):
        graph_from_dict(_file(nodes=nodes, output="a"))
    self_loop = [{"name": "a", "op": "neg", "inputs": ["a"]}]
    with pytest.raises(GraphError, match="the graph has a cycle: a -> a"):
        graph_from_dict(_file(nodes=self_loop, output="a"))


def test_unknown_op():
    g = LayerGraph()
    with pytest.raises(GraphError, match=r"node 'softplus': unknown op 'softplus'; known ops: abs, add, "):
        g.add("softplus", "x")
    with pytest.raises(GraphError, match=r"node 'n1': unknown op 'softplus'"):
        graph_from_dict(_file(nodes=[{"name": "n1", "op": "softplus", "inputs": ["x"]}], output="n1"))


def test_wrong_arity():
    g = LayerGraph()
    with pytest.raises(GraphError, match=re.escape("node 'add': op 'add' takes 2 input(s), got 1 (x)")):
        g.add("add", "x")
    with pytest.raises(GraphError, match=re.escape("node 'n': op 'sigmoid' takes 1 input(s), got 2 (x, x)")):
        g.add("sigmoid", "x", "x", name="n")


def test_no_output():
    g = LayerGraph("empty")
    assert g.problems() == ["graph has no output"]
    with pytest.raises(GraphError, match="invalid layer graph 'empty': graph has no output"):
        g.validate()
    with pytest.raises(GraphError, match="graph has no output"):
        g.structural_hash()
    with pytest.raises(GraphError, match="output 'nope' is not a node of the graph"):
        g.set_output("nope")
    with pytest.raises(GraphError, match="missing 'output'"):
        graph_from_dict(_file(nodes=[{"name": "n", "op": "neg", "inputs": ["x"]}]))


def test_unused_node():
    g = LayerGraph()
    g.add("sigmoid", "x")
    g.set_output(g.add("tanh", "x"))
    assert g.problems() == ["node 'sigmoid' (sigmoid(x)) is not used by the output"]
    v = g.vector("v", 1.0)
    assert "vector 'v' is not used by the output" in g.problems()
    g.const(3.0)  # unused constants and hyperparameters are harmless
    assert len(g.problems()) == 2
    assert not g.pruned().problems()
    assert v not in g.pruned()


def test_op_outside_the_allowed_set():
    g = LayerGraph()
    g.set_output(g.add("mul", "x", g.add("exp", "x")))
    assert g.validate(allowed_ops={"mul", "exp"}) is g
    with pytest.raises(
        GraphError, match=re.escape("node 'exp' (exp(x)) uses op 'exp', outside the allowed set")
    ):
        g.validate(allowed_ops={"mul"})
    problems = g.problems(allowed_ops=set())
    assert len(problems) == 2 and all("outside the allowed set" in p for p in problems)


def test_input_not_defined():
    g = LayerGraph()
    with pytest.raises(GraphError, match="node 'neg' \\(neg\\): input 'y' is not defined before it"):
        g.add("neg", "y")
    with pytest.raises(GraphError, match=r"node 'n': input 'y' is not defined \(x, v, or a node name\)"):
        graph_from_dict(
            _file(vectors={"v": 1.0}, nodes=[{"name": "n", "op": "add", "inputs": ["x", "y"]}], output="n")
        )


def test_moment_of_a_constant():
    g = LayerGraph()
    v = g.vector("v", 1.0)
    for op, arg in [("layer_mean", g.const(2.0)), ("instance_std", v)]:
        g = LayerGraph()
        arg = g.const(2.0) if op == "layer_mean" else g.vector("v", 1.0)
        stat = g.add(op, arg)
        g.set_output(g.add("add", "x", stat))
        (problem,) = g.problems()
        assert problem == (
            f"node {stat!r} ({op}({arg})): input {arg!r} does not depend on x; moments need a feature map"
        )


def test_batch_moment_of_a_value_without_channels():
    g = LayerGraph()
    stat = g.add("batch_mean", g.add("layer_mean", "x"))
    g.set_output(g.add("sub", "x", stat))
    (problem,) = g.problems()
    assert "input 'layer_mean' has no channel axis left for a per-channel statistic" in problem


def test_output_that_does_not_depend_on_x():
    g = LayerGraph()
    g.set_output(g.add("add", g.vector("v", 1.0), g.const(1.0)))
    assert g.problems() == ["output 'add' does not depend on the input x"]
    g = LayerGraph()
    g.set_output(g.const(1.0))
    assert g.problems() == ["output 'c' does not depend on the input x"]


@pytest.mark.parametrize("op", ["layer_mean", "instance_std", "group_mean", "batch_var", "batch_rms"])
def test_output_that_is_a_reduced_statistic(op):
    g = LayerGraph()
    stat = g.add(op, "x")
    g.set_output(g.add("add", stat, g.vector("v", 0.0)))
    assert g.problems() == [f"output 'add' ({'add'}) is a statistic, not a feature map"]
    g.set_output(stat)
    assert f"output {stat!r} ({op}) is a statistic, not a feature map" in g.problems()


@pytest.mark.parametrize("groups", [0, -1, True, 2.5, "8", None])
def test_bad_groups(groups):
    with pytest.raises(GraphError, match=f"groups must be a positive integer, got {re.escape(repr(groups))}"):
        LayerGraph().add("group_std", "x", groups=groups)


def test_groups_on_an_op_without_groups():
    with pytest.raises(GraphError, match="node 'layer_std': op 'layer_std' takes no attribute groups"):
        LayerGraph().add("layer_std", "x", groups=4)
    with pytest.raises(GraphError, match="op 'sigmoid' takes no attribute axis"):
        LayerGraph().add("sigmoid", "x", axis=1)


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("eps", 0, "hyperparameter 'eps' must be positive, got 0"),
        ("eps", -1e-5, "hyperparameter 'eps' must be positive, got -1e-05"),
        ("eps", float("nan"), "hyperparameter 'eps' must be a finite number, got nan"),
        ("eps", float("inf"), "hyperparameter 'eps' must be a finite number, got inf"),
        ("eps", "1e-5", "hyperparameter 'eps' must be a finite number, got '1e-5'"),
        ("eps", True, "hyperparameter 'eps' must be a finite number, got True"),
        ("eps", None, "hyperparameter 'eps' must be a finite number, got None"),
        ("momentum", 1.5, "hyperparameter 'momentum' must be in [0, 1], got 1.5"),
        ("momentum", -0.1, "hyperparameter 'momentum' must be in [0, 1], got -0.1"),
        ("groups", 0, "hyperparameter 'groups' must be a positive integer, got 0"),
        ("groups", 4.0, "hyperparameter 'groups' must be a positive integer, got 4.0"),
        ("proxy_samples", -3, "hyperparameter 'proxy_samples' must be a positive integer, got -3"),
        ("rmax", [3], "hyperparameter 'rmax' must be a finite number, got [3]"),
    ],
)
def test_bad_hyperparameter_values(key, value, message):
    g = LayerGraph(hyperparameters={key: value})
    g.set_output(g.add("sub", "x", g.add("batch_mean", g.add("group_std", "x"))))
    assert message in g.problems()
    with pytest.raises(GraphError, match=re.escape(message)):
        g.validate()


def test_good_hyperparameters_pass():
    g = LayerGraph(hyperparameters={"eps": 1e-3, "momentum": 0, "groups": 8, "rmax": 3})
    g.set_output(g.add("mul", "x", g.hyper("rmax")))
    assert not g.problems()
    with pytest.raises(GraphError, match="hyperparameter 'dmax' is used but not declared"):
        g.hyper("dmax")


HOSTILE_NAMES = [
    "x",
    "self",
    "forward",
    "eval",
    "training",
    "graph",
    "code",
    "reset_parameters",
    "__class__",
    "__init__",
    "_private",
    "x); import os; (",
    "a b",
    "a\nb",
    "running_mean",
    "running_var_x",
    "sigmoid",
    "torch",
    "nn",
    "class",
    "lambda",
    "num_features",
    "print",
    "a" * 65,
    "é",
    "",
    "1v",
    1,
    None,
]


@pytest.mark.parametrize("name", HOSTILE_NAMES)
def test_reserved_or_hostile_vector_names(name):
    with pytest.raises(GraphError, match=r"^vector .* (is not a valid name|is a reserved name)"):
        LayerGraph().vector(name, 1.0)


@pytest.mark.parametrize("name", HOSTILE_NAMES)
def test_reserved_or_hostile_hyperparameter_names(name):
    g = LayerGraph(hyperparameters={name: 1.0})
    g.set_output(g.add("neg", "x"))
    with pytest.raises(GraphError, match=r"hyperparameter .* (is not a valid name|is a reserved name)"):
        g.validate()
    with pytest.raises(GraphError, match=r"hyperparameter .* (is not a valid name|is a reserved name)"):
        LayerGraph(hyperparameters={name: 1.0}).hyper(name)


@pytest.mark.parametrize("name", ["x); import os; (", "__class__", "a b", "running_mean", "_a"])
def test_hostile_node_names(name):
    with pytest.raises(GraphError, match=r"node .* is not a valid name|is a reserved name"):
        LayerGraph().add("neg", "x", name=name)
    with pytest.raises(GraphError, match=r"is not a valid name|is a reserved name"):
        graph_from_dict(_file(nodes=[{"name": name, "op": "neg", "inputs": ["x"]}], output=name))


def test_vector_and_hyperparameter_clashes():
    g = LayerGraph(hyperparameters={"v": 1.0})
    g.set_output(g.add("mul", "x", g.vector("v", 1.0)))
    assert "hyperparameter 'v' clashes with the parameter of the same name" in g.problems()
    g = LayerGraph()  # eps is resolved (the moment needs it) and clashes with a vector named eps
    g.set_output(g.add("mul", g.add("sub", "x", g.add("layer_mean", "x")), g.vector("eps", 1.0)))
    assert "hyperparameter 'eps' clashes with the parameter of the same name" in g.problems()
    g = LayerGraph(hyperparameters={"weight": 2.0}, final_affine=True)
    g.set_output(g.add("neg", "x"))
    assert "hyperparameter 'weight' clashes with the parameter of the same name" in g.problems()
    g = LayerGraph(final_affine=True)
    g.set_output(g.add("mul", "x", g.vector("bias", 0.0)))
    assert g.problems() == ["vector 'bias' clashes with the final affine's parameter"]


def test_vector_clash_and_init():
    g = LayerGraph()
    g.vector("v", 1.0)
    assert g.vector("v", 1) == "v"
    with pytest.raises(GraphError, match=re.escape("vector 'v' is already defined with init 1.0")):
        g.vector("v", 0.0)
    g.hyper("eps")
    with pytest.raises(GraphError, match="vector 'eps' clashes with hyper 'eps'"):
        g.vector("eps", 1.0)
    for bad in (float("nan"), float("inf"), "1", True):
        with pytest.raises(GraphError, match="initial value must be a finite number"):
            LayerGraph().vector("w", bad)
    with pytest.raises(GraphError, match="constant inf is not finite"):
        g.const(float("inf"))
    with pytest.raises(GraphError, match="duplicate node name 'n'"):
        g.add("neg", "x", name="n")
        g.add("abs", "x", name="n")


def test_validation_reports_every_problem_at_once():
    g = LayerGraph("many", hyperparameters={"eps": -1})
    g.add("exp", "x")
    g.set_output(g.add("layer_mean", "x"))
    problems = g.problems(allowed_ops={"exp"})
    assert len(problems) == 4, problems
    with pytest.raises(GraphError) as err:
        g.validate(allowed_ops={"exp"})
    assert str(err.value).startswith("invalid layer graph 'many': ")
    assert str(err.value).count("; ") >= 3


# ---- structural hash ----------------------------------------------------------------------------


def test_hash_invariant_under_names_and_construction_order():
    hashes = {
        _evonorm_s0_like(order, names).structural_hash()
        for order in ("forward", "backward")
        for names in (False, True)
    }
    assert len(hashes) == 1
    assert hashes == {seed_graph("evonorm_s0").structural_hash()}


def test_hash_invariant_under_commutative_operand_order():
    for op in ("add", "mul", "max", "min"):
        a, b = LayerGraph(), LayerGraph()
        a.set_output(a.add(op, "x", a.add("sigmoid", "x")))
        b.set_output(b.add(op, b.add("sigmoid", "x"), "x"))
        assert a.structural_hash() == b.structural_hash(), op
    f1 = parse_formula("max(v1 * x + instance_std(x), batch_std(x)) * (1 + x)")
    f2 = parse_formula("(x + 1) * max(batch_std(x), instance_std(x) + x * v1)")
    assert f1.structural_hash() == f2.structural_hash()


def test_hash_ignores_duplicated_subgraphs():
    """Two identical nodes hash as one: the hash is a function of the expression."""
    a = LayerGraph()
    s1 = a.add("sigmoid", "x", name="s1")
    s2 = a.add("sigmoid", "x", name="s2")
    a.set_output(a.add("mul", s1, s2))
    assert a.structural_hash() == parse_formula("sigmoid(x) * sigmoid(x)").structural_hash()


def _hash(formula: str, **kw) -> str:
    return parse_formula(formula, **kw).structural_hash()


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("x * sigmoid(x)", "x * tanh(x)"),  # different op
        ("x - sigmoid(x)", "sigmoid(x) - x"),  # non-commutative operands swapped
        ("x / group_std(x)", "group_std(x) / x"),
        ("x / group_std(x)", "x / group_std(x, groups=8)"),  # node attribute
        ("x / group_std(x, groups=4)", "x / group_std(x, groups=8)"),
        ("x / group_std(x)", "x / group_rms(x)"),
        ("x / layer_std(x)", "x / instance_std(x)"),
        ("x * v1", "x * v0"),  # different vector (name and init)
        ("x + 1", "x + 2"),  # different constant
        ("x - x * 0", "x"),
    ],
)
def test_hash_differences(a, b):
    assert _hash(a) != _hash(b)


def test_hash_depends_on_hyperparameters_final_affine_and_vector_init():
    base = _hash("x / group_std(x)")
    assert _hash("x / group_std(x)", hyperparameters={"eps": 1e-3}) != base
    assert _hash("x / group_std(x)", hyperparameters={"groups": 8}) != base
    assert _hash("x / group_std(x)", hyperparameters={"eps": 1e-5, "groups": 32}) == base  # the defaults
    assert _hash("x / group_std(x)", final_affine=True) != base
    assert _hash("x * v", vectors={"v": 1.0}) != _hash("x * v", vectors={"v": 2.0})


def test_hash_is_pinned():
    """Hashes are stored in run directories (duplicates on resume, rerank): renames must not move them."""
    g = parse_formula(
        "x * sigmoid(v1 * x) / max(group_std(x, groups=8), v0 + 0.001) - batch_mean(x) * rmax",
        hyperparameters={"rmax": 3.0},
        final_affine=True,
    )
    assert g.structural_hash() == "460bdd8c683da80d6dab27302dded02e"


def test_hash_is_stable_across_copies():
    g = seed_graph("batch_renorm_relu")
    assert g.copy().structural_hash() == g.pruned().structural_hash() == g.structural_hash()
    assert len(g.structural_hash()) == 32


# ---- analyses: users and shapes ------------------------------------------------------------------


def test_users():
    g = LayerGraph()
    gate = g.add("sigmoid", "x")
    v = g.vector("v", 1.0)
    g.const(2.0)  # unused: no users
    g.set_output(g.add("add", g.add("mul", gate, gate), "x"))
    assert g.users() == {
        "x": ["sigmoid", "add"],
        v: [],
        "c": [],
        "sigmoid": ["mul"],
        "mul": ["add"],
        "add": [],
    }


def test_shapes():
    g = parse_formula("x / layer_std(x) + batch_mean(x) * v1 + instance_mean(x) * 2 + group_rms(x)")
    shapes = g.shapes()
    assert shapes["x"] == Shape(batch=True, channel=True, spatial=True)
    assert shapes["v1"] == shapes["batch_mean"] == Shape(batch=False, channel=True, spatial=False)
    assert shapes["layer_std"] == Shape(batch=True, channel=False, spatial=False)
    assert shapes["instance_mean"] == shapes["group_rms"] == Shape(batch=True, channel=True, spatial=False)
    assert shapes["c"] == Shape(batch=False, channel=False, spatial=False)  # the constant 2
    assert shapes["mul"] == Shape(batch=False, channel=True, spatial=False)
    assert shapes[g.output] == shapes["div"] == Shape(batch=True, channel=True, spatial=True)


def test_leaf_kinds_are_not_op_names():
    assert {kind.value for kind in Leaf} == {"input", "vector", "scalar", "const", "hyper"}
    assert not {kind.value for kind in Leaf} & set(PRIMITIVES)
    g = parse_formula("x * v1 + rmax + 2", hyperparameters={"rmax": 3.0})
    assert {n.name: n.op for n in g if n.is_leaf} == {
        "x": "input",
        "v1": "vector",
        "c": "const",
        "rmax": "hyper",
    }
    assert [n.describe() for n in g if n.is_leaf][:2] == ["input 'x'", "vector 'v1'"]


# ---- formula rendering --------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(SEEDS))
def test_formula_round_trip_for_seeds(name):
    g = seed_graph(name)
    again = reparse(g)
    assert again.structural_hash() == g.structural_hash()
    assert again.formula() == g.formula()
    assert reparse(again).structural_hash() == g.structural_hash()


@pytest.mark.parametrize(
    ("formula", "rendered"),
    [
        ("x - (x - v1)", "x - (x - v1)"),
        ("(x - v1) - x", "x - v1 - x"),
        ("x / (x * v1)", "x / (x * v1)"),
        ("(x / v1) * x", "x / v1 * x"),
        ("-(x + 1)", "-(x + 1)"),
        ("-(-x)", "-(-x)"),
        ("x * -2", "x * -2"),
        ("x - -2", "x - -2"),
        ("x * neg(2)", "x * neg(2)"),
        ("x * -(-2)", "x * -(-2)"),
        ("x * 0.5 + 1e-20", "x * 0.5 + 1e-20"),
        ("x * -0.0", "x * 0"),
        ("group_std(x, groups=8) * x", "group_std(x, groups=8) * x"),
        ("m = x - layer_mean(x)\nm / layer_std(x)", "(x - layer_mean(x)) / layer_std(x)"),
    ],
)
def test_formula_rendering(formula, rendered):
    g = parse_formula(formula)
    assert g.formula() == rendered
    assert reparse(g).structural_hash() == g.structural_hash()


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.filter_too_much, HealthCheck.too_slow]
)
@given(random_graphs())
def test_formula_round_trip_for_random_graphs(graph):
    again = reparse(graph)
    assert again.structural_hash() == graph.structural_hash()
    assert again.formula() == graph.formula()
    assert not again.problems()


def test_repr():
    assert repr(seed_graph("evonorm_s1")) == (
        "LayerGraph('evonorm_s1', 'x * sigmoid(x) / group_std(x)', final_affine=True)"
    )
    assert "<no output>" in repr(LayerGraph())
