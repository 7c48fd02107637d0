"""A tiny transformer search end to end on a real local Ray instance (loopback, no dashboard): token
layers from the token seeds, probed in a ViT, trained in a causal GPT and a ViT, the best written as
standalone modules that run on (N, L, C)."""

from __future__ import annotations

import importlib.util
import json
import os

import torch
import yaml
from helpers import records, write_config

from evosearch.cli import main
from evosearch.layers.graph_io import graph_from_dict, load_graph
from evosearch.runner.ray_cluster import LOOPBACK_ENV
from primitives import TOKEN_MIXING_OPS

os.environ[LOOPBACK_ENV] = "0"

# A GPT and a ViT of one block and width 16 that train in well under a second.
TINY_TRANSFORMER = {
    "model.depth": 1,
    "model.dim": 16,
    "model.heads": 2,
    "train.steps": 6,
    "train.log_every": 3,
    "train.hurdle_step": None,
    "train.warmup_steps": 2,
}
TINY_TEXT = {**TINY_TRANSFORMER, "dataset.train_size": 4000, "dataset.val_size": 600, "dataset.context": 16}
TINY_IMAGES = {**TINY_TRANSFORMER, "dataset.train_size": 128, "dataset.val_size": 64}


def test_tiny_transformer_search_end_to_end(tmp_path, capsys):
    config = write_config(
        tmp_path,
        "tokens",
        evaluations=4,
        search={"layout": "tokens", "ops": "per_token", "seeds": ["layernorm", "dyt"]},
        tasks=[
            {"task": "generated_gpt", "name": "gpt", "set": TINY_TEXT},
            {"task": "generated_vit", "name": "vit", "set": TINY_IMAGES},
        ],
    )
    code = main(["run", str(config), "--quiet", "--json"])
    assert code == 0
    summary = json.loads(capsys.readouterr().out)
    run_dir = tmp_path / "runs" / "tokens"
    events = records(run_dir)
    assert summary["evaluations"] == 4
    seeds = {e["formula"] for e in events if e["origin"] == "seed"}
    assert seeds == {"weight * ((x - layer_mean(x)) / layer_std(x)) + bias", "tanh(alpha * x)"}
    for e in events:
        graph = graph_from_dict(e["graph"])  # every candidate a token layer that reads no other token
        assert graph.layout.value == "tokens" and not graph.ops & TOKEN_MIXING_OPS, e["formula"]
        if e["probe"] is not None and e["probe"]["passed"] is not None:
            assert "residual_growth" in e["probe"]["metrics"]  # probed as a token layer
        if e["status"] == "trained":
            assert [t["task"] for t in e["tasks"]] == ["gpt", "vit"]
            assert all(0 <= s <= 1 for s in e["scores"])
    best = sorted((run_dir / "best").glob("*.yaml"))
    assert best
    for path in best:
        graph = load_graph(path)
        assert graph.layout.value == "tokens" and not graph.ops & TOKEN_MIXING_OPS
        module_path = path.with_suffix(".py")
        spec = importlib.util.spec_from_file_location(module_path.stem, module_path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        (cls,) = [v for v in vars(module).values() if isinstance(v, type) and v.__module__ == module.__name__]
        x = torch.randn(2, 5, 16)
        assert cls(16)(x).shape == x.shape
    saved = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert saved["search"]["layout"] == "tokens"
