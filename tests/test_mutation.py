"""Random graphs and mutations: always valid, bounded, deterministic, and different from the parent."""

from __future__ import annotations

import dataclasses
import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers import lineage_fingerprint
from hypothesis import given, settings
from hypothesis import strategies as st

from evosearch.errors import EvosearchError
from evosearch.layers.codegen import build_layer
from evosearch.layers.formula import parse_formula
from evosearch.layers.seeds import seed_graph, seed_names
from evosearch.search.mutation import MUTATIONS, Mutation, SearchSpace, mutate, random_graph
from primitives import BATCH_DEPENDENT_OPS, BATCH_INDEPENDENT_SEARCH_OPS, SEARCH_OPS, TOKEN_SEARCH_OPS, Layout

TESTS = Path(__file__).resolve().parent  # `python -c` there imports the helpers module
SPACE = SearchSpace()
TOKEN_SPACE = SearchSpace(ops=TOKEN_SEARCH_OPS, layout=Layout.TOKENS, scalars={"alpha": 0.5}, max_nodes=10)
S_SPACE = SearchSpace(ops=BATCH_INDEPENDENT_SEARCH_OPS, hyperparameters={"groups": 8, "eps": 1e-5})
ROOMY = SearchSpace(max_nodes=32)  # every seed fits, so every kind can apply to every seed


def _random_graphs(space: SearchSpace, count: int, offset: int = 0):
    return [random_graph(random.Random(offset + seed), space, name=f"r{seed}") for seed in range(count)]


def _check_child(parent, child, mutation, space, limit):
    assert not child.problems(space.ops | parent.ops), child.problems(space.ops | parent.ops)
    assert 1 <= len(child.op_nodes) <= limit
    assert child.structural_hash() != parent.structural_hash()
    assert mutation.kind in MUTATIONS
    assert child.hyperparameters == parent.hyperparameters
    assert child.final_affine == parent.final_affine
    assert child.ops - parent.ops <= space.ops  # only new ops come from the space


def test_random_graphs_are_valid_bounded_and_not_trivial():
    graphs = _random_graphs(SPACE, 300)
    for g in graphs:
        g.validate(SPACE.ops)
        assert 1 <= len(g.op_nodes) <= SPACE.max_nodes
        assert g.final_affine and g.name.startswith("r")
    sizes = [len(g.op_nodes) for g in graphs]
    assert sum(sizes) / len(sizes) >= 4  # k is uniform in [1, 14]; pruning keeps most of it
    assert sum(s == 1 for s in sizes) < len(sizes) / 5
    assert len({g.structural_hash() for g in graphs}) > 250
    assert max(sizes) == SPACE.max_nodes


def test_random_graph_gets_the_space_settings():
    space = SearchSpace(max_nodes=5, vectors={"gamma": 0.5}, constants=(1.0, 2.0), final_affine=False)
    for g in _random_graphs(space, 50):
        g.validate(space.ops)
        assert len(g.op_nodes) <= 5 and not g.final_affine
        assert set(g.vectors) <= {"gamma"}
    for g in _random_graphs(S_SPACE, 20):
        assert g.hyperparameters == {"groups": 8, "eps": 1e-5}


def test_random_graph_is_deterministic():
    for seed in range(30):
        a = random_graph(random.Random(seed), SPACE)
        b = random_graph(random.Random(seed), SPACE)
        assert a.structural_hash() == b.structural_hash()
        assert [n for n in a] == [n for n in b]  # same names too


def test_same_seed_same_graphs_across_processes():
    # Another string-hash seed reorders sets and frozensets: nothing may depend on that order.
    script = "from helpers import lineage_fingerprint; print(lineage_fingerprint())"
    env = {**os.environ, "PYTHONHASHSEED": str(random.randrange(1, 2**31))}
    run = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, cwd=TESTS)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == lineage_fingerprint()


def test_batch_independent_space_has_no_batch_op():
    parents = _random_graphs(S_SPACE, 300)
    for g in parents:
        g.validate(BATCH_INDEPENDENT_SEARCH_OPS)
        assert not g.batch_dependent and not (g.ops & BATCH_DEPENDENT_OPS)
    rng = random.Random(0)
    for g in parents[:100]:
        child, _ = mutate(g, rng, S_SPACE)
        assert not child.batch_dependent
    child, _ = mutate(seed_graph("evonorm_s0"), rng, S_SPACE)
    assert not child.batch_dependent


@pytest.mark.parametrize("kind", MUTATIONS)
def test_every_kind_from_random_graphs(kind):
    rng = random.Random(kind)
    parents = [g for g in _random_graphs(SPACE, 80, offset=1000) if len(g.op_nodes) >= 2]
    parents = [g for g in parents if kind != "insert" or len(g.op_nodes) < SPACE.max_nodes]
    for parent in parents:
        before = parent.structural_hash()
        for _ in range(3):
            child, mutation = mutate(parent, rng, SPACE, kinds=[kind])
            assert mutation.kind == kind
            _check_child(parent, child, mutation, SPACE, SPACE.max_nodes)
        assert parent.structural_hash() == before  # the parent is untouched


@pytest.mark.parametrize("name", seed_names())
def test_every_kind_from_every_seed(name):
    parent = seed_graph(name)
    parent_names = {n.name for n in parent.op_nodes}
    rng = random.Random(name)
    space = ROOMY if parent.layout is Layout.IMAGE else TOKEN_SPACE
    for kind in MUTATIONS:
        for _ in range(10):
            child, mutation = mutate(parent, rng, space, kinds=[kind])
            assert mutation.kind == kind
            assert child.layout is parent.layout
            _check_child(parent, child, mutation, space, space.max_nodes)
            child_names = {n.name for n in child.op_nodes}
            # The parent's nodes keep their names; only an inserted node is new.
            if kind == "insert":
                assert child_names == parent_names | {mutation.node}
                assert mutation.node not in parent_names
            else:
                assert child_names <= parent_names
                assert (mutation.node in child_names) == (kind != "delete")
            for node in child.op_nodes:
                if node.name in parent_names and node.name != mutation.node and kind != "delete":
                    assert node.op == parent.node(node.name).op


def test_a_seed_larger_than_the_space_is_mutated_but_never_grows():
    parent = seed_graph("batch_renorm_relu")
    assert len(parent.op_nodes) > SPACE.max_nodes
    rng = random.Random(0)
    kinds = set()
    for _ in range(30):
        child, mutation = mutate(parent, rng, SPACE)
        _check_child(parent, child, mutation, SPACE, len(parent.op_nodes))
        kinds.add(mutation.kind)
    assert "insert" not in kinds and "delete" in kinds
    with pytest.raises(EvosearchError, match="cannot mutate 'batch_renorm_relu'"):
        mutate(parent, rng, SPACE, kinds=["insert"])


def test_falls_back_to_another_kind_and_fails_clearly_when_impossible():
    single = parse_formula("neg(x)", name="single")
    space = SearchSpace(ops=frozenset({"neg"}), vectors={}, constants=())
    # delete needs two op nodes and change_op another op: only insert can apply.
    child, mutation = mutate(single, random.Random(0), space, kinds=["delete", "change_op", "insert"])
    assert mutation.kind == "insert" and child.formula() == "-(-x)"
    with pytest.raises(EvosearchError, match="cannot mutate 'single'"):
        mutate(single, random.Random(0), space, kinds=["delete", "change_op"])
    identity = parse_formula("x", name="identity")  # no op node: only insert applies
    child, mutation = mutate(identity, random.Random(0), SPACE)
    assert mutation.kind == "insert" and len(child.op_nodes) == 1
    assert mutation.detail.endswith("into the output")


def test_weights_choose_the_kind():
    parent = seed_graph("evonorm_b0")
    rng = random.Random(0)
    counts = {k: 0 for k in MUTATIONS}
    for _ in range(200):
        counts[mutate(parent, rng, SPACE, weights=[0, 3, 1, 0])[1].kind] += 1
    assert counts["change_op"] == counts["delete"] == 0
    assert counts["rewire"] > counts["insert"] > 0


def test_bad_arguments_are_clear_errors():
    parent = seed_graph("evonorm_s0")
    with pytest.raises(EvosearchError, match="mutation kinds"):
        mutate(parent, random.Random(0), SPACE, kinds=["swap"])
    with pytest.raises(EvosearchError, match="mutation kinds"):
        mutate(parent, random.Random(0), SPACE, weights=[1, 1])
    with pytest.raises(EvosearchError, match="weights"):
        mutate(parent, random.Random(0), SPACE, weights=[0, 0, 0, 0])
    with pytest.raises(EvosearchError, match="unknown"):
        SearchSpace(ops=frozenset({"add", "frobnicate"}))
    with pytest.raises(EvosearchError, match="max_nodes"):
        SearchSpace(max_nodes=0)
    with pytest.raises(EvosearchError, match="not a valid name"):
        SearchSpace(vectors={"1v": 0.0})
    with pytest.raises(EvosearchError, match="final affine"):
        SearchSpace(vectors={"weight": 1.0})
    with pytest.raises(EvosearchError, match="name of a vector"):
        SearchSpace(hyperparameters={"v0": 1.0})
    with pytest.raises(EvosearchError, match="constant"):
        SearchSpace(constants=(float("nan"),))
    with pytest.raises(EvosearchError, match="eps"):
        SearchSpace(hyperparameters={"eps": -1.0})
    assert SearchSpace(ops={"add", "neg"}).ops == frozenset({"add", "neg"})


def test_mutate_is_deterministic():
    parent = seed_graph("gn_relu")
    a = [mutate(parent, random.Random(s), SPACE) for s in range(20)]
    b = [mutate(parent, random.Random(s), SPACE) for s in range(20)]
    assert [(c.structural_hash(), m) for c, m in a] == [(c.structural_hash(), m) for c, m in b]


def test_mutation_records_are_json():
    rng = random.Random(0)
    records = [mutate(seed_graph("bn_relu"), rng, SPACE, kinds=[k])[1] for k in MUTATIONS for _ in range(5)]
    for record in records:
        assert isinstance(record, Mutation)
        data = json.loads(json.dumps(dataclasses.asdict(record)))
        assert Mutation(**data) == record
        assert all(isinstance(v, str) and v for v in data.values())
    details = {r.kind: r.detail for r in records}
    assert " -> " in details["change_op"] and details["rewire"].startswith("input ")


def test_long_lineage_stays_valid():
    rng = random.Random(3)
    graph = random_graph(rng, SPACE)
    for _ in range(300):
        child, mutation = mutate(graph, rng, SPACE)
        _check_child(graph, child, mutation, SPACE, SPACE.max_nodes)
        graph = child


@settings(max_examples=150, deadline=None)
@given(seed=st.integers(0, 2**64), batch_independent=st.booleans(), max_nodes=st.integers(1, 20))
def test_any_seed_gives_valid_graphs_and_children(seed, batch_independent, max_nodes):
    ops = BATCH_INDEPENDENT_SEARCH_OPS if batch_independent else SEARCH_OPS
    space = SearchSpace(ops=ops, max_nodes=max_nodes)
    rng = random.Random(seed)
    graph = random_graph(rng, space)
    graph.validate(ops)
    assert len(graph.op_nodes) <= max_nodes
    for _ in range(3):
        child, mutation = mutate(graph, rng, space)
        _check_child(graph, child, mutation, space, max_nodes)
        graph = child


def test_compiled_graphs_and_children_run():
    torch.manual_seed(0)
    x = torch.randn(4, 16, 5, 5)
    rng = random.Random(5)
    graphs = _random_graphs(SPACE, 12, offset=500) + _random_graphs(S_SPACE, 6, offset=500)
    graphs += [mutate(g, rng, SPACE)[0] for g in graphs[:12]]
    graphs += [mutate(seed_graph(name), rng, ROOMY)[0] for name in seed_names(Layout.IMAGE)]
    for g in graphs:
        layer = build_layer(g, 16)
        y = layer(x)
        assert y.shape == x.shape, g.formula()
        layer.eval()
        assert layer(x).shape == x.shape


def test_token_space_draws_and_mutates_token_graphs():
    """Random graphs and children keep the token layout, read its scalars, and run on (N, L, C)."""
    x = torch.randn(4, 7, 16)
    rng = random.Random(11)
    graphs = _random_graphs(TOKEN_SPACE, 12, offset=700)
    graphs += [mutate(g, rng, TOKEN_SPACE)[0] for g in graphs[:6]]
    graphs += [mutate(seed_graph(name), rng, TOKEN_SPACE)[0] for name in seed_names(Layout.TOKENS)]
    assert all(g.layout is Layout.TOKENS for g in graphs)
    assert any("alpha" in g.scalars for g in graphs)
    for g in graphs:
        layer = build_layer(g, 16)
        assert layer(x).shape == x.shape, g.formula()
        assert layer.eval()(x).shape == x.shape


def test_a_space_refuses_a_parent_or_an_op_of_another_layout():
    with pytest.raises(EvosearchError, match="is for the tokens layout, the search space for the image"):
        mutate(seed_graph("dyt"), random.Random(0), SPACE)
    with pytest.raises(EvosearchError, match="proxy_mean have no meaning in the tokens layout"):
        SearchSpace(ops={"add", "proxy_mean"}, layout=Layout.TOKENS)


def test_default_space_is_evonorms():
    assert SPACE.ops == SEARCH_OPS and SPACE.max_nodes == 14
    assert dict(SPACE.vectors) == {"v0": 0.0, "v1": 1.0} and SPACE.constants == (0.0,)
