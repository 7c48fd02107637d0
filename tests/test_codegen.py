"""Code generation: the compiled layer, the standalone exported file, hostile names, random graphs."""

from __future__ import annotations

import ast
import copy
import json
import subprocess
import sys
import traceback

import pytest
import torch
from helpers import layer_input
from hypothesis import HealthCheck, assume, given, settings
from random_graphs import random_graphs

import primitives.functional as F
from evosearch.errors import EvosearchError, GraphError
from evosearch.layers.codegen import (
    buffer_names,
    build_layer,
    class_name_for,
    compile_layer,
    export_layer,
    layer_source,
)
from evosearch.layers.formula import parse_formula
from evosearch.layers.graph import LayerGraph, Leaf
from evosearch.layers.graph_io import graph_from_dict
from evosearch.layers.lowering import lower
from evosearch.layers.seeds import SEEDS, seed_graph
from primitives import Kind, Layout

C = 8

# Run in a fresh interpreter: load each exported file by path, alone, and replay the saved inputs.
_CHILD = r"""
import importlib.util, json, sys
import torch

manifest = json.load(open(sys.argv[1]))
for item in manifest:
    spec = importlib.util.spec_from_file_location(item["module"], item["path"])
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    if "class_name" not in item:
        continue
    layer = getattr(module, item["class_name"])(item["num_features"])
    layer.load_state_dict(torch.load(item["state"]))
    x = torch.load(item["x"])
    layer.train()
    train = layer(x)
    after = {k: v.clone() for k, v in layer.state_dict().items()}
    layer.eval()
    evaluated = layer(x)
    torch.save({"train": train, "eval": evaluated, "after": after, "keys": list(layer.state_dict())},
               item["result"])
loaded = sorted(name for name in sys.modules if name.split(".")[0] in ("evosearch", "primitives"))
print(json.dumps({"loaded": loaded}))
"""


def _run_child(manifest: list[dict], tmp_path) -> dict:
    manifest_path = tmp_path / "manifest.json"
    manifest_path.write_text(json.dumps(manifest))
    proc = subprocess.run(
        [sys.executable, "-c", _CHILD, str(manifest_path)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _perturbed(layer: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Parameters and running estimates moved off their initial values, so that loading matters."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in layer.parameters():
            p.add_(0.2 * torch.randn(p.shape, generator=gen))
        for name, b in layer.named_buffers():
            fresh = torch.randn(b.shape, generator=gen)
            b.copy_(0.3 * fresh if "mean" in name else 0.5 + fresh.abs())
    return layer


def _imports(source: str) -> set[str]:
    roots = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            roots.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, "relative import"
            roots.add(node.module.split(".")[0])
    return roots


def _class_names(source: str) -> list[str]:
    return [n.name for n in ast.parse(source).body if isinstance(n, ast.ClassDef)]


HOSTILE_LAYER_NAME = '"""\nimport os\nos.system("echo pwned")\nopen("PWNED", "w")\n"""\\ \\" \\\\ \\x00 end\\'


def test_export_round_trip_in_a_fresh_interpreter(tmp_path):
    manifest, expected = [], {}
    for i, name in enumerate(sorted(SEEDS)):
        graph = seed_graph(name)
        path = export_layer(graph, tmp_path / f"{name}_layer.py")
        source = path.read_text()
        assert _imports(source) <= {"torch", "math"}
        assert all(root == "torch" or root in sys.stdlib_module_names for root in _imports(source))
        assert "evosearch" not in source.split('"""', 2)[2].replace("evosearch from its graph", "")
        assert _class_names(source) == [class_name_for(graph)]
        layer = _perturbed(build_layer(graph, C), i)
        state = {k: v.clone() for k, v in layer.state_dict().items()}
        x = layer_input(graph.layout, C, 100 + i)
        layer.train()
        train = layer(x)
        after = {k: v.clone() for k, v in layer.state_dict().items()}
        layer.eval()
        expected[name] = (train.detach(), layer(x).detach(), after)
        torch.save(state, tmp_path / f"{name}_state.pt")
        torch.save(x, tmp_path / f"{name}_x.pt")
        manifest.append(
            {
                "module": f"exported_{name}",
                "path": str(path),
                "class_name": class_name_for(graph),
                "num_features": C,
                "state": str(tmp_path / f"{name}_state.pt"),
                "x": str(tmp_path / f"{name}_x.pt"),
                "result": str(tmp_path / f"{name}_result.pt"),
            }
        )
    # A layer whose name tries to break out of the docstring: importing it must run nothing.
    hostile = graph_from_dict({"evosearch_graph": 1, "name": HOSTILE_LAYER_NAME, "formula": "x * sigmoid(x)"})
    hostile_path = export_layer(hostile, tmp_path / "hostile_layer.py")
    manifest.append({"module": "hostile_layer", "path": str(hostile_path)})

    report = _run_child(manifest, tmp_path)
    assert report["loaded"] == []  # neither evosearch nor primitives was imported by the child
    assert not (tmp_path / "PWNED").exists()
    for name, (train, evaluated, after) in expected.items():
        got = torch.load(tmp_path / f"{name}_result.pt")
        torch.testing.assert_close(got["train"], train, rtol=1e-6, atol=1e-6, msg=f"{name} (train)")
        torch.testing.assert_close(got["eval"], evaluated, rtol=1e-6, atol=1e-6, msg=f"{name} (eval)")
        assert got["keys"] == list(after), name
        for key, value in after.items():
            torch.testing.assert_close(got["after"][key], value, msg=f"{name}: {key}")
        if SEEDS[name].final_affine or "weight" in SEEDS[name].vectors:
            assert {"weight"} <= set(after)


@pytest.mark.parametrize("name", sorted(SEEDS))
def test_state_dict_keys(name):
    graph = seed_graph(name)
    layer = build_layer(graph, C)
    params = {k for k, _ in layer.named_parameters()}
    assert params == set(graph.parameters) | ({"weight", "bias"} if graph.final_affine else set())
    buffers = {k for k, _ in layer.named_buffers()}
    assert all(b.startswith("running_") for b in buffers)
    assert bool(buffers) == graph.batch_dependent
    for key, value in layer.state_dict().items():
        assert value.shape == ((1,) if key in graph.scalars else (C,)), key
    for vector, init in graph.vectors.items():
        assert torch.equal(getattr(layer, vector).detach(), torch.full((C,), float(init)))
    for scalar, init in graph.scalars.items():
        assert torch.equal(getattr(layer, scalar).detach(), torch.full((1,), float(init)))


def test_constructor_takes_hyperparameters():
    graph = seed_graph("evonorm_b0")
    layer = build_layer(graph, C, eps=1e-2, momentum=0.5)
    assert (layer.eps, layer.momentum, layer.num_features) == (1e-2, 0.5, C)
    assert "eps=0.01, momentum=0.5" in repr(layer)
    default = build_layer(graph, C)
    assert (default.eps, default.momentum) == (1e-3, 0.1)
    with pytest.raises(TypeError):
        build_layer(graph, C, groups=4)  # evonorm_b0 has no group moments


def test_class_names():
    assert class_name_for(seed_graph("evonorm_b0")) == "EvonormB0"
    assert class_name_for(seed_graph("batch_renorm_relu")) == "BatchRenormRelu"
    assert class_name_for(LayerGraph("3d-norm")) == "Layer3dNorm"
    assert class_name_for(LayerGraph("!!!")) == "Layer"
    assert class_name_for(LayerGraph(HOSTILE_LAYER_NAME)).isidentifier()
    cls = compile_layer(seed_graph("evonorm_b0"))
    assert cls.__name__ == "EvonormB0"
    assert compile_layer(seed_graph("evonorm_b0"), "MyNorm").__name__ == "MyNorm"


def test_class_name_override_in_export(tmp_path):
    path = export_layer(seed_graph("evonorm_s0"), tmp_path / "s0.py", class_name="SwishGroupNorm")
    assert _class_names(path.read_text()) == ["SwishGroupNorm"]


@pytest.mark.parametrize(
    "name",
    ["1abc", "my-norm", "a b", "class", "None", "torch", "nn", "safe_div", "_Hidden", "x", "print", "é-"],
)
def test_invalid_class_names(name, tmp_path):
    path = tmp_path / "layer.py"
    with pytest.raises(EvosearchError, match="is not a usable Python class name"):
        export_layer(seed_graph("evonorm_s0"), path, class_name=name)
    assert not path.exists()
    with pytest.raises(EvosearchError, match="is not a usable Python class name"):
        compile_layer(seed_graph("evonorm_s0"), name)


def test_hostile_layer_name_is_sanitized():
    graph = graph_from_dict({"evosearch_graph": 1, "name": HOSTILE_LAYER_NAME, "formula": "x * sigmoid(x)"})
    source = layer_source(graph)
    ast.parse(source)
    assert "os.system" not in source and "import os" not in source
    assert "PWNED" in source  # kept as harmless text in the docstring
    tree = ast.parse(source)
    calls = [n for n in ast.walk(tree) if isinstance(n, ast.Call) and getattr(n.func, "id", "") == "open"]
    assert not calls
    layer = compile_layer(graph)(C)
    assert layer(torch.randn(2, C, 3, 3)).shape == (2, C, 3, 3)


@pytest.mark.parametrize("name", ["__class__", "forward", "x); import os; (", "eval", "training", "__init__"])
def test_hostile_vector_and_hyperparameter_names_are_rejected(name, tmp_path):
    with pytest.raises(GraphError):
        graph_from_dict({"evosearch_graph": 1, "vectors": {name: 1.0}, "nodes": [], "output": "x"})
    # a formula-only file: vectors the formula does not use never become part of the graph
    unused = graph_from_dict({"evosearch_graph": 1, "vectors": {name: 1.0}, "formula": "x * 2"})
    assert name not in unused.vectors and "import os" not in layer_source(unused)
    with pytest.raises(GraphError):
        graph_from_dict(
            {
                "evosearch_graph": 1,
                "hyperparameters": {name: 1.0},
                "nodes": [{"name": "n", "op": "neg", "inputs": ["x"]}],
                "output": "n",
            }
        )
    # a graph changed after it was built is checked again before any code is written
    graph = parse_formula("x * sigmoid(x)")
    graph.hyperparameters[name] = 1.0
    path = tmp_path / "layer.py"
    with pytest.raises(GraphError, match="hyperparameter"):
        export_layer(graph, path)
    assert not path.exists()
    with pytest.raises(GraphError):
        compile_layer(graph)


def test_hostile_names_never_reach_the_source():
    """Whatever the graph holds, the source parses and every name in it is a plain identifier."""
    graph = graph_from_dict(
        {
            "evosearch_graph": 1,
            "name": "a\\b\"'\n#x",
            "vectors": {"Forward2": 1.0, "mu": 0.0},
            "hyperparameters": {"rmax": 3.0},
            "nodes": [
                {"name": "self_", "op": "mul", "inputs": ["x", "Forward2"]},
                {"name": "torch1", "op": "add", "inputs": ["self_", "mu"]},
                {"name": "out", "op": "min", "inputs": ["torch1", "rmax"]},
            ],
            "output": "out",
        }
    )
    source = layer_source(graph)
    tree = ast.parse(source)
    assert _imports(source) <= {"torch", "math"}
    assert not [n for n in ast.walk(tree) if isinstance(n, (ast.Global, ast.Nonlocal, ast.Lambda))]
    layer = compile_layer(graph)(C)
    assert layer(torch.randn(2, C, 3, 3)).shape == (2, C, 3, 3)


def test_compiled_class_exposes_graph_and_code():
    graph = seed_graph("gn_proxynorm")
    cls = compile_layer(graph)
    assert cls.graph is graph
    assert cls.code == layer_source(graph)
    layer = cls(C)
    assert layer.graph is graph and layer.code == cls.code
    assert f"class {cls.__name__}(nn.Module):" in cls.code
    compile(cls.code, "layer.py", "exec")


def test_runtime_error_shows_the_generated_line():
    graph = parse_formula("x / instance_rms(x) * v1", name="needs_space")
    layer = build_layer(graph, C)
    with pytest.raises(ValueError, match="instance moments need spatial dims") as err:
        layer(torch.randn(4, C))  # dense input: instance moments are undefined
    frames = traceback.extract_tb(err.value.__traceback__)
    generated = [f for f in frames if f.filename.startswith("<evosearch layer NeedsSpace")]
    assert generated, [f.filename for f in frames]
    forward = [f for f in generated if f.name == "forward"]
    assert forward and 'instance_moment(x, "rms", self.eps)' in forward[-1].line
    text = "".join(traceback.format_exception(err.value))
    assert 'instance_moment(x, "rms", self.eps)' in text
    assert "raise ValueError" in text  # the helper's own line, from the generated module too


def test_batch_layers_track_and_use_running_estimates():
    graph = seed_graph("bn_relu")
    layer = build_layer(graph, C)
    reference = torch.nn.BatchNorm2d(C)
    x = torch.randn(6, C, 4, 4) * 3 + 1
    for _ in range(3):
        torch.testing.assert_close(layer.train()(x), torch.relu(reference.train()(x)), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(layer.running_mean, reference.running_mean)
    torch.testing.assert_close(layer.running_var, reference.running_var)
    torch.testing.assert_close(layer.eval()(x), torch.relu(reference.eval()(x)), rtol=1e-5, atol=1e-5)


# ---- agreement with the primitives, node by node --------------------------------------------------


@torch.no_grad()
def _interpret(graph: LayerGraph, layer: torch.nn.Module, x: torch.Tensor, training: bool):
    """The graph evaluated node by node from the primitive records, as the layer should compute it.

    Returns the output and, for training, the running estimates the layer should hold afterwards.
    Reads the layer's vectors, hyperparameters and running estimates (call it before the layer's forward).
    """
    hp = {k: getattr(layer, k) for k in graph.resolved_hyperparameters()}
    buffers = buffer_names(graph)
    tokens = graph.layout is Layout.TOKENS
    as_channel = F.as_feature if tokens else F.as_channel
    statistic_of = F.feature_statistic if tokens else F.channel_statistic
    moment_of = F.feature_moment if tokens else F.channel_moment
    env: dict[str, torch.Tensor] = {}
    for node in graph:
        if node.op == Leaf.INPUT:
            value = x
        elif node.op == Leaf.VECTOR:
            value = as_channel(getattr(layer, node.name), x)
        elif node.op == Leaf.SCALAR:
            value = getattr(layer, node.name).to(x.dtype)
        elif node.op == Leaf.CONST:
            value = x.new_tensor(node.attr("value"))
        elif node.op == Leaf.HYPER:
            value = x.new_tensor(float(hp[node.name]))
        else:
            prim = node.primitive
            args = [env[i] for i in node.inputs]
            running = (
                getattr(layer, buffers[(node.inputs[0], prim.tracked)]) if prim.batch_dependent else None
            )
            if prim.kind is Kind.ELEMENTWISE:
                names = {f"a{i}": a for i, a in enumerate(args)}
                value = eval(prim.template.format(*names), {"torch": torch, **vars(F)}, names)
            elif prim.kind is Kind.BATCH_MOMENT:
                stat = statistic_of(args[0], prim.tracked) if training else running
                value = moment_of(stat, prim.statistic, hp["eps"], x)
            elif prim.kind is Kind.MOVING:
                value = moment_of(running, prim.statistic, hp["eps"], x)
            elif prim.kind is Kind.PROXY:
                raise NotImplementedError("proxy moments")
            elif prim.axes == "group":
                groups = node.attr("groups") or hp["groups"]
                group_moment = F.token_group_moment if tokens else F.group_moment
                value = group_moment(args[0], prim.statistic, hp["eps"], groups)
            else:
                per_sample = {"layer": F.layer_moment, "instance": F.instance_moment}
                per_token = {"layer": F.token_moment, "instance": F.sequence_moment}
                fn = (per_token if tokens else per_sample)[prim.axes]
                value = fn(args[0], prim.statistic, hp["eps"])
        env[node.name] = value
    out = env[graph.output]
    if graph.final_affine:
        out = out * as_channel(layer.weight, x) + as_channel(layer.bias, x)
    updated = {}
    for (arg, base), name in buffers.items():
        old = getattr(layer, name)
        if not training:
            updated[name] = old.clone()
            continue
        stat = statistic_of(env[arg], base)
        if base == "var":  # tracked unbiased, as BatchNorm does
            n = env[arg].numel() / stat.numel()
            stat = stat * n / max(n - 1, 1)
        updated[name] = (1 - hp["momentum"]) * old + hp["momentum"] * stat
    return out, updated


def _check_against_primitives(graph: LayerGraph, x: torch.Tensor, tol: float = 1e-4) -> None:
    """Train and eval outputs and the running estimates, compiled layer vs node-by-node evaluation."""
    layer = _perturbed(build_layer(graph, x.shape[graph.layout.channel_dim]), 0)
    for training in (True, False, True):
        layer.train(training)
        want, want_buffers = _interpret(graph, layer, x, training)
        with torch.no_grad():
            got = layer(x)
        torch.testing.assert_close(got, want, rtol=tol, atol=tol, equal_nan=True)
        for name, value in want_buffers.items():
            torch.testing.assert_close(getattr(layer, name), value, rtol=1e-5, atol=1e-6, msg=name)


@pytest.mark.parametrize("name", [n for n in sorted(SEEDS) if "proxy" not in n])
def test_seed_layers_agree_with_their_primitives(name):
    graph = seed_graph(name)
    x = layer_input(graph.layout, C, 3) * 2 + 0.5
    _check_against_primitives(graph, x)


@pytest.mark.parametrize(
    "formula",
    [
        # a normalization of a per-channel statistic: one value per channel in the batch
        "x + (batch_mean(x) - batch_mean(batch_mean(x))) / batch_std(batch_mean(x))",
        # the batch mean read again elsewhere, the normalized value used twice
        "y = (x - batch_mean(x)) / batch_std(x)\ny * v1 + v0 + y * batch_mean(x)",
        "(x - group_mean(x, groups=3)) / group_std(x, groups=3) * v1 + v0",
        "(x - instance_mean(x)) / instance_std(x) + instance_mean(x)",
        "max((x - layer_mean(x)) / layer_std(x), 0) - max(x, 0) + min(x, 0)",
        "x / (layer_std(x) + v0) + x / max(instance_rms(x), v1)",
        # a normalization times itself: no affine for the kernel to absorb
        "y = (x - layer_mean(x)) / layer_std(x)\ny * y + v0",
    ],
)
def test_layers_agree_with_their_primitives(formula):
    x = torch.randn(4, C, 5, 5, generator=torch.Generator().manual_seed(4))
    _check_against_primitives(parse_formula(formula), x)


def test_division_guard_holds_for_any_eps():
    """div floors |b| at DIV_EPS whatever the layer's eps: std >= sqrt(eps) is no guarantee."""
    x = torch.full((2, C, 3, 3), 0.5)  # constant: every std is sqrt(eps)
    for eps in (1e-16, 1e-12, 1e-5):
        graph = parse_formula("x / layer_std(x)", hyperparameters={"eps": eps})
        want = F.safe_div(x, F.layer_moment(x, "std", eps))
        torch.testing.assert_close(build_layer(graph, C)(x), want)
        torch.testing.assert_close(build_layer(seed_graph("evonorm_s1"), C, eps=eps)(x), _evonorm_s1(x, eps))


def _evonorm_s1(x: torch.Tensor, eps: float) -> torch.Tensor:
    return F.safe_div(x * torch.sigmoid(x), F.group_moment(x, "std", eps, 32))


@pytest.mark.parametrize("name", sorted(SEEDS))
def test_seed_layers_run_in_float64_and_float16(name):
    """Like torch's own layers: .double() works, and half-precision input keeps its dtype."""
    graph = seed_graph(name)
    x = layer_input(graph.layout, C, 5)
    layer = build_layer(graph, C)
    want = copy.deepcopy(layer).train()(x)
    wide = copy.deepcopy(layer).double().train()
    got = wide(x.double())
    assert got.dtype == torch.float64
    torch.testing.assert_close(got.float(), want, rtol=1e-4, atol=1e-4)
    half = copy.deepcopy(layer).train()(x.half())
    assert half.dtype == torch.float16
    torch.testing.assert_close(half.float(), want, rtol=2e-2, atol=2e-2)


# ---- lowering: fused kernels, ReLU, guards left out ----------------------------------------------


def _forward_source(graph: LayerGraph) -> str:
    return layer_source(graph).split("def forward")[1]


@pytest.mark.parametrize(
    ("formula", "unguarded"),
    [
        ("x / layer_std(x)", True),
        ("x / (abs(x) + layer_rms(x))", True),
        ("x / (square(v1) + 0.5)", True),
        ("x / (layer_std(x) * layer_std(x))", False),  # products of values >= DIV_EPS can be smaller
        ("x / max(x, 1e-6)", True),
        ("x / max(x, 1e-7)", False),
        ("x / min(layer_std(x), 2)", True),
        ("x / min(layer_std(x), v1)", False),
        ("x / sqrt(layer_var(x) + instance_std(x))", True),
        ("x / sqrt(abs(x))", False),
        ("x / exp(x)", False),
        ("x / (exp(x) + 1)", True),
        ("x / stop_gradient(batch_rms(x))", True),
        ("x / moving_std(x)", True),
        ("x / layer_var(x)", False),
        ("x / (sigmoid(x) - -1)", False),  # sub proves nothing
    ],
)
def test_division_guard_is_left_out_only_where_the_divisor_is_proven(formula, unguarded):
    graph = parse_formula(formula)
    assert (graph.output in lower(graph).unguarded) == unguarded
    assert ("safe_div(" in _forward_source(graph)) != unguarded


_BATCH_KERNEL = (
    "batch_normalize(x, self.running_mean, self.running_var, {}, self.training, self.momentum, self.eps)"
)


@pytest.mark.parametrize(
    ("formula", "kernel"),
    [
        ("(x - layer_mean(x)) / layer_std(x)", "group_normalize(x, 1, None, None, self.eps)"),
        (
            "v1 * ((x - instance_mean(x)) / instance_std(x)) + v0",
            "group_normalize(x, None, self.v1, self.v0, self.eps)",
        ),
        (
            "(x - group_mean(x, groups=4)) / group_std(x, groups=4) * v1 + v0",
            "group_normalize(x, 4, self.v1, self.v0, self.eps)",
        ),
        ("(x - group_mean(x)) / group_std(x)", "group_normalize(x, self.groups, None, None, self.eps)"),
        ("max((x - batch_mean(x)) / batch_std(x), 0)", _BATCH_KERNEL.format("None, None")),
        ("v0 + (x - batch_mean(x)) / batch_std(x) * v1", _BATCH_KERNEL.format("self.v1, self.v0")),
        ("y = (x - layer_mean(x)) / layer_std(x)\ny * y + v0", "group_normalize(x, 1, None, None, self.eps)"),
        ("(x - layer_mean(x)) / instance_std(x)", None),  # different axes
        ("(x - group_mean(x, groups=4)) / group_std(x)", None),  # different groups
        ("(x - moving_mean(x)) / moving_std(x)", None),  # no fused kernel for running estimates
        # batch_norm would update a running mean that something else reads
        ("(x - batch_mean(x)) / batch_std(x) + batch_mean(x)", None),
        # a constant is no bias vector: the kernel normalizes, the affine stays outside
        ("(x - layer_mean(x)) / layer_std(x) * v1 + 2", "group_normalize(x, 1, None, None, self.eps)"),
    ],
)
def test_fused_normalizations(formula, kernel):
    graph = parse_formula(formula)
    forward = _forward_source(graph)
    if kernel is None:
        assert not lower(graph).fused
        assert "normalize(" not in forward
    else:
        assert f" = {kernel}\n" in forward


def test_max_with_zero_is_a_relu():
    assert "torch.relu(x)" in _forward_source(parse_formula("max(0, x) * v1"))
    assert lower(parse_formula("max(x, 0)")).with_zero == {"max": "x"}
    assert not lower(parse_formula("max(x, v0)")).with_zero
    assert not lower(parse_formula("min(x, 0)")).with_zero


# ---- random graphs ------------------------------------------------------------------------------


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.filter_too_much, HealthCheck.too_slow],
)
@given(random_graphs())
def test_random_graphs_compile_and_run(graph):
    layer = _perturbed(build_layer(graph, C), 0)
    x = torch.randn(3, C, 4, 4, generator=torch.Generator().manual_seed(1), requires_grad=True)
    layer.train()
    # A graph whose output float32 rounding decides (the sign of a mean that is 0 in exact arithmetic,
    # fed to a floored sqrt) has no value two implementations can agree on: the reference itself,
    # evaluated in float64, tells them apart.
    want64, _ = _interpret(graph, copy.deepcopy(layer).double(), x.detach().double(), training=True)
    want, want_buffers = _interpret(graph, layer, x.detach(), training=True)
    assume(torch.allclose(want, want64.float(), rtol=1e-4, atol=1e-4, equal_nan=True))
    out = layer(x)
    assert out.shape == x.shape and out.dtype == x.dtype
    (out.float() * torch.linspace(-1, 1, out.numel()).view_as(out)).sum().backward()
    assert x.grad is not None and x.grad.shape == x.shape
    torch.testing.assert_close(out.detach(), want, rtol=1e-3, atol=1e-3, equal_nan=True)
    for name, value in want_buffers.items():
        torch.testing.assert_close(getattr(layer, name), value, rtol=1e-4, atol=1e-5, equal_nan=True)
    layer.eval()
    want, _ = _interpret(graph, layer, x.detach(), training=False)
    with torch.no_grad():
        torch.testing.assert_close(layer(x), want, rtol=1e-3, atol=1e-3, equal_nan=True)
        assert layer(x.half()).dtype == torch.float16
    assert layer.code == layer_source(graph)
    ast.parse(layer.code)
