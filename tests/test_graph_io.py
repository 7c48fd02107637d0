"""The YAML graph file: round trips, strict keys and versions, safe loading, atomic saves."""

from __future__ import annotations

import os
import re

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from random_graphs import random_graphs

from evosearch.errors import EvosearchError, FormulaError, GraphError
from evosearch.files import atomic_write_text
from evosearch.layers.formula import parse_formula
from evosearch.layers.graph import LayerGraph
from evosearch.layers.graph_io import (
    FORMAT_KEY,
    dump_graph,
    graph_from_dict,
    graph_to_dict,
    load_graph,
    save_graph,
)
from evosearch.layers.seeds import SEEDS, seed_graph
from primitives import Layout, search_ops

TOP_KEYS = (
    "evosearch_graph, final_affine, formula, hyperparameters, layout, name, nodes, output, scalars, vectors"
)


def _s0_dict() -> dict:
    return graph_to_dict(seed_graph("evonorm_s0"))


@pytest.mark.parametrize("name", sorted(SEEDS))
def test_yaml_round_trip_for_every_seed(name, tmp_path):
    g = seed_graph(name)
    text = dump_graph(g)
    data = yaml.safe_load(text)
    assert data[FORMAT_KEY] == 1 and data["name"] == name
    again = graph_from_dict(data)
    assert again.structural_hash() == g.structural_hash()
    assert dump_graph(again) == text
    assert again.formula() == g.formula()
    assert again.vectors == g.vectors
    assert again.resolved_hyperparameters() == g.resolved_hyperparameters()
    assert again.final_affine == g.final_affine
    path = save_graph(g, tmp_path / f"{name}.yaml")
    assert path.read_text() == text
    assert load_graph(path).structural_hash() == g.structural_hash()


def test_file_with_only_a_formula():
    g = graph_from_dict(
        {
            "evosearch_graph": 1,
            "name": "b0",
            "formula": "x / max(batch_std(x), v * x + instance_std(x))",
            "vectors": {"v": 1.0},
            "hyperparameters": {"eps": 1e-3, "momentum": 0.1},
            "final_affine": True,
        }
    )
    assert g.structural_hash() == seed_graph("evonorm_b0").structural_hash()
    minimal = graph_from_dict({"evosearch_graph": 1, "formula": "x * sigmoid(x)"})
    assert minimal.name == "layer" and not minimal.final_affine
    assert minimal.formula() == "x * sigmoid(x)"


def test_formula_only_file_with_a_bad_formula():
    with pytest.raises(FormulaError, match="unknown name 'v'"):
        graph_from_dict({"evosearch_graph": 1, "formula": "x * v"})


def test_formula_that_disagrees_with_the_nodes():
    data = _s0_dict()
    data["formula"] = "x * sigmoid(v * x) / group_rms(x)"
    with pytest.raises(
        GraphError, match=re.escape("'formula' and 'nodes' describe different graphs (nodes give ")
    ):
        graph_from_dict(data)
    data["formula"] = "x * sigmoid(v * x) /"
    with pytest.raises(GraphError, match="field 'formula' does not parse: cannot parse formula"):
        graph_from_dict(data)
    # the same graph written differently agrees
    data["formula"] = "x * sigmoid(x * v) / group_std(x)"
    assert graph_from_dict(data).structural_hash() == seed_graph("evonorm_s0").structural_hash()
    del data["formula"]
    assert graph_from_dict(data).structural_hash() == seed_graph("evonorm_s0").structural_hash()


def test_missing_version():
    data = _s0_dict()
    del data[FORMAT_KEY]
    with pytest.raises(GraphError, match=re.escape("missing 'evosearch_graph: 1' (the format version)")):
        graph_from_dict(data)


@pytest.mark.parametrize("version", [2, 0, "1", 1.5, True])
def test_wrong_version(version):
    data = {**_s0_dict(), FORMAT_KEY: version}
    with pytest.raises(GraphError, match=re.escape(f"graph format version {version!r} is not supported")):
        graph_from_dict(data)


def test_unknown_top_level_key():
    data = {**_s0_dict(), "nodez": [], "extra": 1}
    with pytest.raises(GraphError) as err:
        graph_from_dict(data)
    assert str(err.value) == f"graph file: unknown key(s) extra, nodez; valid keys: {TOP_KEYS}"


def test_unknown_node_key():
    data = _s0_dict()
    data["nodes"][1]["input"] = ["x"]
    with pytest.raises(GraphError) as err:
        graph_from_dict(data)
    assert str(err.value) == "node #2: unknown key(s) input; valid keys: attrs, inputs, name, op"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"name": 3}, "'name' must be a str, got 3"),
        ({"final_affine": "yes"}, "'final_affine' must be a bool, got 'yes'"),
        ({"hyperparameters": [1]}, "'hyperparameters' must be a dict, got [1]"),
        ({"vectors": {"v": "one"}}, "vector 'v': initial value must be a number, got 'one'"),
        ({"vectors": {"v": True}}, "vector 'v': initial value must be a number, got True"),
        ({"nodes": {"a": 1}}, "'nodes' must be a list"),
        ({"nodes": ["neg(x)"]}, "node #1 must be a mapping with name, op and inputs"),
        ({"nodes": [{"op": "neg", "inputs": ["x"]}]}, "node #1: missing or duplicate name None"),
        ({"nodes": [{"name": "n", "inputs": ["x"]}]}, "node 'n': missing op"),
        ({"nodes": [{"name": "n", "op": "neg", "inputs": "x"}]}, "node 'n': inputs must be a list"),
        (
            {"nodes": [{"name": "n", "op": "neg", "inputs": [None]}]},
            "node 'n': input None must be a name or a number",
        ),
        (
            {"nodes": [{"name": "n", "op": "group_std", "inputs": ["x"], "attrs": [8]}]},
            "attrs must be a mapping",
        ),
        ({"output": ["a"]}, "node 'output': input ['a'] must be a name or a number"),
        ({"output": "nowhere"}, "node 'output': input 'nowhere' is not defined"),
        ({"output": 1.0}, "does not depend on the input x"),
    ],
)
def test_malformed_fields(change, message):
    data = {**_s0_dict(), **change}
    data.pop("formula")
    with pytest.raises(GraphError, match=re.escape(message)):
        graph_from_dict(data)


def test_duplicate_node_names_in_a_file():
    data = _s0_dict()
    data.pop("formula")
    data["nodes"].append(dict(data["nodes"][0]))
    with pytest.raises(GraphError, match=r"node #\d+: missing or duplicate name"):
        graph_from_dict(data)


@pytest.mark.parametrize("data", [None, [], "x * sigmoid(x)", 3])
def test_not_a_mapping(data):
    with pytest.raises(GraphError, match="a graph file must be a mapping"):
        graph_from_dict(data)


def test_nodes_may_reference_numbers_hyperparameters_and_later_nodes():
    data = {
        "evosearch_graph": 1,
        "hyperparameters": {"rmax": 3.0},
        "nodes": [
            {"name": "out", "op": "min", "inputs": ["scaled", "rmax"]},  # uses a node defined below
            {"name": "scaled", "op": "mul", "inputs": ["x", 2]},
        ],
        "output": "out",
    }
    g = graph_from_dict(data)
    assert g.formula() == "min(x * 2, rmax)"
    assert [n.name for n in g.op_nodes] == ["scaled", "out"]


def test_malformed_yaml(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("evosearch_graph: 1\nnodes: [\n  {name: a, op: neg\n")
    with pytest.raises(GraphError, match=r"bad\.yaml: malformed YAML: "):
        load_graph(path)
    path.write_text("evosearch_graph: 1\n\tname: x\n")
    with pytest.raises(GraphError, match="malformed YAML"):
        load_graph(path)


def test_python_object_tags_are_refused_not_executed(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.yaml"
    for tag in (
        f'!!python/object/apply:os.system ["touch {marker}"]',
        f'!!python/object/apply:subprocess.check_call [["touch", "{marker}"]]',
        "!!python/name:os.system",
    ):
        path.write_text(f"evosearch_graph: 1\nname: {tag}\nformula: x * sigmoid(x)\n")
        with pytest.raises(GraphError, match="malformed YAML: could not determine a constructor"):
            load_graph(path)
        path.write_text(f"{tag}\n")
        with pytest.raises(GraphError, match="malformed YAML"):
            load_graph(path)
    assert not marker.exists()


def test_unreadable_files(tmp_path):
    with pytest.raises(EvosearchError, match="graph file not found"):
        load_graph(tmp_path / "missing.yaml")
    binary = tmp_path / "binary.yaml"
    binary.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(EvosearchError, match="cannot read graph file"):
        load_graph(binary)


def test_load_errors_name_the_file(tmp_path):
    path = tmp_path / "g.yaml"
    path.write_text("evosearch_graph: 1\nformula: x ** 2\n")
    with pytest.raises(FormulaError, match=r"g\.yaml: operator Pow"):
        load_graph(path)


def test_hostile_names_in_a_file_are_refused():
    for vectors in ({"__class__": 1.0}, {"forward": 1.0}, {"x); import os; (": 1.0}, {"eval": 1.0}):
        data = {"evosearch_graph": 1, "vectors": vectors, "nodes": [], "output": "x"}
        with pytest.raises(GraphError, match=r"is not a valid name|is a reserved name"):
            graph_from_dict(data)
    data = {"evosearch_graph": 1, "hyperparameters": {"x): import os": 1.0}, "formula": "x * 2"}
    with pytest.raises(EvosearchError, match="is not a valid name"):
        graph_from_dict(data)


def test_dump_refuses_invalid_graphs():
    g = LayerGraph()
    g.set_output(g.add("layer_mean", "x"))
    with pytest.raises(GraphError, match="is a statistic"):
        dump_graph(g)


def test_dump_is_plain_yaml():
    text = dump_graph(seed_graph("gn_relu"))
    assert "!!" not in text and "&" not in text  # no tags, no anchors
    assert text.startswith("evosearch_graph: 1\nname: gn_relu\nlayout: image\nformula: ")


def test_save_graph_is_atomic(tmp_path):
    """Written through a temporary file and os.replace: the old file is replaced whole, never rewritten."""
    path = tmp_path / "sub" / "layer.yaml"
    save_graph(seed_graph("evonorm_b0"), path)  # creates the folder
    old_text = path.read_text()
    old_inode = path.stat().st_ino
    with open(path) as reader:  # a reader holding the old file sees it complete
        save_graph(seed_graph("batch_renorm_relu"), path)
        assert reader.read() == old_text
    assert path.stat().st_ino != old_inode  # a new file took the name: os.replace, not truncation
    assert path.read_text() == dump_graph(seed_graph("batch_renorm_relu"))
    assert yaml.safe_load(path.read_text())["name"] == "batch_renorm_relu"
    assert sorted(os.listdir(path.parent)) == ["layer.yaml"]  # no temporary file left behind


def test_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    path = tmp_path / "layer.yaml"
    save_graph(seed_graph("evonorm_s0"), path)
    before = path.read_text()
    with pytest.raises(UnicodeEncodeError):
        atomic_write_text(path, "evosearch_graph: 1\nname: \udc80\n")  # fails while writing
    assert path.read_text() == before
    assert os.listdir(tmp_path) == ["layer.yaml"]
    g = LayerGraph()
    g.set_output(g.add("layer_mean", "x"))
    with pytest.raises(GraphError):
        save_graph(g, path)  # an invalid graph is refused before anything is written
    assert path.read_text() == before


def test_formula_bindings_survive_a_yaml_round_trip():
    """Names bound in a formula become node names; ones a file cannot hold are replaced."""
    g = parse_formula(
        "mu = layer_mean(x)\n_tmp = x - mu\nrunning_mean = _tmp * 2\nrunning_mean / layer_std(x)"
    )
    names = {n.name for n in g}
    assert "mu" in names and "_tmp" not in names and "running_mean" not in names
    again = graph_from_dict(yaml.safe_load(dump_graph(g)))
    assert again.structural_hash() == g.structural_hash()


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.filter_too_much, HealthCheck.too_slow]
)
@given(random_graphs())
def test_yaml_round_trip_for_random_graphs(graph):
    text = dump_graph(graph)
    again = graph_from_dict(yaml.safe_load(text))
    assert again.structural_hash() == graph.structural_hash()
    assert dump_graph(again) == text


def test_a_reloaded_graph_mutates_exactly_like_the_original():
    """Regression: reloading reordered leaves and kept unused hyperparameters, so a resumed search
    drew different children than an uninterrupted one."""
    import random

    from evosearch.search.mutation import SearchSpace, mutate, random_graph

    spaces = {layout: SearchSpace(layout=layout, ops=search_ops(layout)) for layout in Layout}
    layouts = list(Layout)
    graphs = [random_graph(random.Random(s), spaces[layouts[s % 2]]) for s in range(40)]
    graphs += [seed_graph(name) for name in SEEDS]
    for graph in graphs:
        space = spaces[graph.layout]
        reloaded = graph_from_dict(yaml.safe_load(dump_graph(graph)))
        assert [(n.op, n.attrs) for n in reloaded] == [(n.op, n.attrs) for n in graph]
        for k in range(3):
            ours, _ = mutate(graph, random.Random(k), space)
            theirs, _ = mutate(reloaded, random.Random(k), space)
            assert ours.structural_hash() == theirs.structural_hash()


def test_unused_hyperparameters_do_not_change_identity():
    plain = parse_formula("x * sigmoid(x) / layer_std(x)")
    declared = parse_formula("x * sigmoid(x) / layer_std(x)", hyperparameters={"groups": 8, "momentum": 0.5})
    assert declared.resolved_hyperparameters() == {"eps": 1e-5}
    assert declared.structural_hash() == plain.structural_hash()
    assert "groups" not in dump_graph(declared)
