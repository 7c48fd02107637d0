"""SOURCE everywhere in the Python API: ``create_layer`` builds a layer from a seed name, a formula, a
graph file (str or path), a ``LayerGraph`` or a module class, and ``swap_norm_act``, ``probe_layer``,
``build_model`` and ``train_candidate`` take the same; anything else is one ``SourceError``."""

from __future__ import annotations

import functools
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torchvision
from torch import nn

from evosearch import create_layer, seed_graph, swap_norm_act
from evosearch.errors import SourceError
from evosearch.layers.codegen import build_layer, compile_layer
from evosearch.layers.create import resolve_source, source_label
from evosearch.layers.graph_io import save_graph
from evosearch.probes.screen import ProbeConfig, probe_layer
from evosearch.tasks.datasets import DatasetConfig, load_dataset
from evosearch.tasks.models import ModelConfig, build_model
from evosearch.tasks.train import DeviceData, TaskConfig, TrainConfig, train_candidate

pytestmark = pytest.mark.usefixtures("one_torch_thread")

FORMULA = "x * sigmoid(v0 * x) / group_std(x)"


class ScaledSiLU(nn.Module):
    """A hand-written layer with the layer contract: ``(num_features, **hyperparameters)``."""

    def __init__(self, num_features: int, scale: float = 1.0) -> None:
        super().__init__()
        self.num_features, self.scale = num_features, scale
        self.weight = nn.Parameter(torch.ones(num_features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.scale * nn.functional.silu(x * self.weight.view(1, -1, 1, 1))


def features(channels: int = 32) -> torch.Tensor:
    return torch.randn(4, channels, 5, 5, generator=torch.Generator().manual_seed(0))


def test_seed_name_graph_and_graph_file_give_the_same_layer(tmp_path):
    graph = seed_graph("evonorm_s0")
    path = save_graph(graph, tmp_path / "layer.yaml")
    expected = build_layer(graph, 32)(features())
    for source in ("evonorm_s0", graph, str(path), Path(path)):
        layer = create_layer(source, 32)
        assert type(layer).__name__ == "EvonormS0", source
        torch.testing.assert_close(layer(features()), expected)


def test_formula_class_and_callable_sources():
    layer = create_layer(FORMULA, 32)
    assert {"v0", "weight", "bias"} <= {name for name, _ in layer.named_parameters()}  # a final affine
    assert layer(features()).shape == (4, 32, 5, 5)
    assert create_layer(ScaledSiLU, 32).scale == 1.0
    assert isinstance(create_layer(compile_layer(seed_graph("gn_relu")), 32), nn.Module)
    norm = create_layer(functools.partial(nn.GroupNorm, 4), 32)  # any callable num_features -> module
    assert isinstance(norm, nn.GroupNorm) and norm.num_channels == 32


def test_hyperparameters_reach_the_constructor():
    assert create_layer("gn_relu", 32, groups=4, eps=1e-3).groups == 4
    assert create_layer(ScaledSiLU, 32, scale=2.0).scale == 2.0


@pytest.mark.parametrize(
    ("source", "message"),
    [
        (
            42,
            r"a layer SOURCE is a seed name, a formula, a graph file \(\.yaml\), a LayerGraph "
            r"or an nn\.Module class .*, not int$",
        ),
        ("evonorm_s9", "'evonorm_s9' is not a seed, a graph file or a formula"),
        (Path("missing.yaml"), "graph file not found: missing.yaml"),
        (nn.ReLU(), r"not a module instance \(ReLU\): pass its class"),
        (dict, "not the class dict"),
    ],
)
def test_a_bad_source_is_one_source_error(source, message):
    with pytest.raises(SourceError, match=message):
        create_layer(source, 8)


def test_a_class_where_a_graph_is_needed_is_a_source_error():
    with pytest.raises(SourceError, match=r"a layer graph is needed here: .*, not a module class"):
        resolve_source(ScaledSiLU)


def test_labels():
    assert source_label("evonorm_s0") == "evonorm_s0"
    assert source_label(seed_graph("gn_relu")) == "gn_relu"
    assert source_label(ScaledSiLU) == "ScaledSiLU"
    assert source_label("x * " * 20 + "x").endswith("...")


def test_resolving_a_graph_source_does_not_import_torch():
    code = (
        "import sys; from evosearch.layers.create import resolve_source; "
        f"resolve_source('evonorm_s0'); resolve_source({FORMULA!r}); print('torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False", out.stdout + out.stderr


@pytest.mark.parametrize("source", ["evonorm_s0", FORMULA, ScaledSiLU])
def test_swap_norm_act_takes_a_source(source):
    model = torchvision.models.resnet18(weights=None).eval()
    report = swap_norm_act(model, source)
    assert report.counts == {"norm_act": 9, "norm_only": 0, "kept": 11}
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 1000)


def test_swap_norm_act_with_a_bad_source_changes_nothing():
    model = torchvision.models.resnet18(weights=None)
    bn1 = model.bn1
    with pytest.raises(SourceError):
        swap_norm_act(model, "evonorm_s9")
    assert model.bn1 is bn1


def test_probe_layer_takes_a_source():
    config = ProbeConfig(batch_size=8)
    by_name = probe_layer("gn_relu", config)
    assert by_name.passed, by_name.reasons
    assert by_name.metrics == probe_layer(seed_graph("gn_relu"), config).metrics
    by_class = probe_layer(ScaledSiLU, config)
    assert by_class.metrics["fingerprint"] and "nonfinite_outputs" in by_class.metrics
    # A factory that is not a class: the probes still find its layers in their networks.
    by_factory = probe_layer(functools.partial(ScaledSiLU, scale=1.0), config)
    assert by_factory.metrics == by_class.metrics
    with pytest.raises(SourceError):  # a SOURCE naming nothing is the caller's error, not a reject
        probe_layer("evonorm_s9", config)


def test_build_model_takes_a_source():
    config = ModelConfig(arch="resnet50", width_multiplier=0.25, depth_multiplier=0.25)
    by_name, by_class = build_model(config, "evonorm_s0", 10), build_model(config, ScaledSiLU, 10)
    assert any(type(m).__name__ == "EvonormS0" for m in by_name.modules())
    assert any(isinstance(m, ScaledSiLU) for m in by_class.modules())


def test_train_candidate_takes_a_source():
    task = TaskConfig(
        name="tiny",
        dataset=DatasetConfig(image_size=16, train_size=64, val_size=32),
        model=ModelConfig(depth=8, width_multiplier=0.25),
        train=TrainConfig(steps=2, batch_size=16, log_every=1, warmup_steps=1, crop_padding=2),
    )
    data = DeviceData.from_images(load_dataset(task.dataset), "cpu")
    result = train_candidate("bn_relu", task, data)
    assert result.exit_reason == "completed" and result.layer == "bn_relu"
    assert train_candidate(seed_graph("bn_relu"), task, data).loss_curve == result.loss_curve
    with pytest.raises(SourceError):
        train_candidate("evonorm_s9", task, data)
