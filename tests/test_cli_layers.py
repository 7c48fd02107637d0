"""The layer commands: seeds, show, export — output shape, and one-line errors with no traceback."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from evosearch.cli import main
from evosearch.layers.seeds import SEEDS


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_seeds_json_lists_every_seed_with_formula(capsys):
    code, out, _ = run_cli(capsys, "seeds", "--json")
    assert code == 0
    rows = json.loads(out)
    assert [r["name"] for r in rows] == list(SEEDS)
    assert all(isinstance(r["formula"], str) and "x" in r["formula"] for r in rows)
    assert next(r for r in rows if r["name"] == "evonorm_b0")["formula"] == (
        "x / max(batch_std(x), v * x + instance_std(x))"
    )


def test_seeds_table(capsys):
    code, out, _ = run_cli(capsys, "seeds")
    assert code == 0
    assert out.splitlines()[0].split() == ["name", "layout", "batch_dependent", "formula"]
    assert any(line.startswith("evonorm_s0 ") for line in out.splitlines())
    assert any(line.split()[:2] == ["dyt", "tokens"] for line in out.splitlines())


def test_a_formula_is_read_in_the_layout_asked_for(capsys):
    code, out, _ = run_cli(capsys, "show", "tanh(alpha * x)", "--layout", "tokens", "--json")
    assert code == 0
    shown = json.loads(out)
    assert (shown["layout"], shown["scalars"], shown["parameters"]) == ("tokens", {"alpha": 0.5}, 129)
    code, _, err = run_cli(capsys, "show", "dyt", "--layout", "image")
    assert code != 0
    assert err.strip().splitlines() == [
        "evosearch: error: layer 'dyt' is for the tokens layout (N, L, C); "
        "the image layout (N, C, H, W) is needed here"
    ]


@pytest.mark.parametrize(
    ("source", "batch_dependent", "op_nodes"),
    [("evonorm_b0", True, 6), ("x * sigmoid(v1 * x) / group_std(x)", False, 5)],
)
def test_show_json(capsys, source, batch_dependent, op_nodes):
    code, out, _ = run_cli(capsys, "show", source, "--json", "--num-features", "32")
    assert code == 0
    info = json.loads(out)
    assert info["batch_dependent"] is batch_dependent
    assert info["op_nodes"] == op_nodes
    assert info["parameters"] == 32 * info["parameters_per_channel"]
    assert info["validation"] == "ok"


def test_show_graph_file(capsys, tmp_path):
    from evosearch import save_graph, seed_graph

    path = save_graph(seed_graph("gn_relu"), tmp_path / "gn.yaml")
    code, out, _ = run_cli(capsys, "show", str(path), "--json")
    assert code == 0
    assert json.loads(out)["structural_hash"] == seed_graph("gn_relu").structural_hash()


def test_export_writes_a_module_equal_to_the_compiled_layer(capsys, tmp_path):
    out_file = tmp_path / "layer.py"
    code, out, _ = run_cli(capsys, "export", "evonorm_s0", "--out", str(out_file), "--json")
    assert code == 0
    assert json.loads(out)["class_name"] == "EvonormS0"
    namespace: dict = {}
    exec(compile(out_file.read_text(), str(out_file), "exec"), namespace)
    layer = namespace["EvonormS0"](64)
    from evosearch import build_layer, seed_graph

    ours = build_layer(seed_graph("evonorm_s0"), 64)
    x = torch.randn(4, 64, 5, 5)
    torch.testing.assert_close(layer(x), ours(x))


def test_export_class_name_option(capsys, tmp_path):
    code, _, _ = run_cli(
        capsys, "export", "bn_relu", "--out", str(tmp_path / "bn.py"), "--class-name", "MyNorm"
    )
    assert code == 0
    assert "class MyNorm(nn.Module):" in (tmp_path / "bn.py").read_text()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["show", "no_such_seed"], "is not a seed, a graph file or a formula"),
        (["show", "missing.yaml"], "graph file not found"),
        (["show", "x.__class__"], "unsupported syntax Attribute"),
        (["show", "__import__('os').system('echo hi')"], "only primitive ops can be called"),
        (["show", "x / nosuchop(x)"], "unknown op 'nosuchop'"),
        (["show", "max(x)"], "takes 2 input(s)"),
        (["export", "bn_relu", "--out", "/tmp/evosearch-x.py", "--class-name", "class"], "class name"),
    ],
)
def test_errors_are_one_line_without_traceback(capsys, argv, message):
    code, out, err = run_cli(capsys, *argv)
    assert code == 1
    assert out == ""
    assert err.startswith("evosearch: error:") and message in err
    assert len(err.strip().splitlines()) == 1
    assert "Traceback" not in err


def test_malformed_graph_file_is_one_line(capsys, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("evosearch_graph: 1\nnodes: [a, b\n")
    code, _, err = run_cli(capsys, "show", str(bad))
    assert code == 1 and "malformed YAML" in err and len(err.strip().splitlines()) == 1


def test_console_script_runs_in_a_subprocess():
    result = subprocess.run(
        [sys.executable, "-m", "evosearch.cli", "show", "nonsense_name"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert result.stderr.startswith("evosearch: error:")
