"""The proxy architectures: torchvision's networks with BatchNorm in the slots, the bn_relu seed equal
to plain BatchNorm2d + ReLU, EvoNorm's convention for norms without activation, stems, determinism."""

from __future__ import annotations

import functools

import pytest
import torch
from torch import nn

from evosearch.config import ConfigError, from_dict, to_dict
from evosearch.layers.norm_without_act import ChannelAffine
from evosearch.layers.seeds import seed_graph
from evosearch.tasks.models import (
    ARCHITECTURES,
    ModelConfig,
    SlotNetwork,
    build_model,
    build_network,
)

TINY = {"width_multiplier": 0.25, "depth_multiplier": 0.25}  # one block a stage, 8-16 channels
ARCHS = ("cifar_resnet", "resnet50", "mobilenet_v2", "efficientnet_b0")


def bn_act(activation: type[nn.Module]):
    return lambda c: nn.Sequential(nn.BatchNorm2d(c), activation())


def _entries_by_module(model: nn.Module) -> list[dict[str, torch.Tensor]]:
    """The state dict grouped by module, in module order: ``{leaf name: tensor}`` for each."""
    groups: dict[str, dict[str, torch.Tensor]] = {}
    for key, value in model.state_dict().items():
        prefix, _, leaf = key.rpartition(".")
        if leaf != "num_batches_tracked":  # the generated layers do not count batches
            groups.setdefault(prefix, {})[leaf] = value
    return list(groups.values())


def copy_state(source: nn.Module, target: nn.Module) -> None:
    """Copy ``source``'s state into ``target`` module by module in order, entries matched by name;
    the two must hold the same names and shapes module for module."""
    sources, targets = _entries_by_module(source), _entries_by_module(target)
    shapes = [[{k: v.shape for k, v in sorted(g.items())} for g in groups] for groups in (sources, targets)]
    assert shapes[0] == shapes[1]
    with torch.no_grad():
        for src, dst in zip(sources, targets, strict=True):
            for leaf, value in dst.items():
                value.copy_(src[leaf])


def parameter_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize(
    ("arch", "reference", "activation"),
    [
        ("resnet50", "resnet50", nn.ReLU),
        ("mobilenet_v2", "mobilenet_v2", nn.ReLU6),
        ("efficientnet_b0", "efficientnet_b0", nn.SiLU),
    ],
)
def test_batchnorm_slots_give_torchvision_networks(arch, reference, activation):
    """Multipliers 1, 1000 classes, the ImageNet stem: the same parameters, and with torchvision's
    state copied in, the same outputs (eval mode: torchvision's dropout and stochastic depth off)."""
    torchvision = pytest.importorskip("torchvision")  # installed with timm, the tests' reference
    ours = ARCHITECTURES[arch](bn_act(activation), nn.BatchNorm2d, 1000).eval()
    theirs = getattr(torchvision.models, reference)(weights=None).eval()
    assert parameter_count(ours) == parameter_count(theirs)
    copy_state(theirs, ours)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), theirs(x), rtol=0, atol=0)


@pytest.mark.parametrize("arch", ARCHS)
def test_bn_relu_seed_is_batchnorm_relu(arch):
    """The bn_relu seed in the slots and BatchNorm2d in the no-activation norms is the network written
    with nn.BatchNorm2d + nn.ReLU: same outputs, and the same after a few SGD steps."""
    config = ModelConfig(arch=arch, depth=8, norm_without_act="batchnorm", **TINY)
    ours = build_model(config, seed_graph("bn_relu"), 10, image_size=16)
    reference = build_network(config, bn_act(nn.ReLU), 10, image_size=16)
    copy_state(reference, ours)
    x, y = torch.randn(8, 3, 16, 16), torch.randint(0, 10, (8,))
    torch.testing.assert_close(ours(x), reference(x))
    for model in (ours, reference):
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, nesterov=True)
        for _ in range(3):
            optimizer.zero_grad()
            nn.functional.cross_entropy(model(x), y).backward()
            optimizer.step()
    ours.eval(), reference.eval()  # running statistics were updated alike too
    torch.testing.assert_close(ours(x), reference(x), rtol=1e-4, atol=1e-5)


def _count(model: nn.Module, kind: type[nn.Module]) -> int:
    return sum(isinstance(m, kind) for m in model.modules())


@pytest.mark.parametrize("arch", ["resnet50", "mobilenet_v2", "efficientnet_b0"])
def test_norms_without_activation(arch):
    """EvoNorm's convention by default (an affine), or the layer, or BatchNorm2d there; the slots
    proper always hold the layer."""
    graph = seed_graph("evonorm_s0")
    layer_type = type(build_model(ModelConfig(), graph, 10).final_norm_act)
    models = {
        mode: build_model(ModelConfig(arch=arch, norm_without_act=mode, **TINY), graph, 10)
        for mode in ("affine", "layer", "batchnorm")
    }
    slots = _count(models["affine"], layer_type)
    no_act = _count(models["affine"], ChannelAffine)
    assert slots > 0 and no_act > 0
    assert (
        _count(models["batchnorm"], nn.BatchNorm2d) == no_act
        and _count(models["batchnorm"], layer_type) == slots
    )
    assert _count(models["layer"], layer_type) == slots + no_act
    assert not any(_count(models["layer"], kind) for kind in (ChannelAffine, nn.BatchNorm2d))


def test_old_spelling_candidate_loads_as_layer_and_is_written_as_layer():
    """Task files and run directories from before say ``candidate``; they load, and are written back
    in today's words. A word of neither vocabulary is one config error naming the choices."""
    config = from_dict(ModelConfig, {"arch": "resnet50", "norm_without_act": "candidate"}, "model")
    assert config.norm_without_act == "layer" and to_dict(config)["norm_without_act"] == "layer"
    with pytest.raises(ConfigError, match="norm_without_act must be one of affine, layer, batchnorm"):
        from_dict(ModelConfig, {"norm_without_act": "candidates"}, "model")


def test_cifar_resnet_is_all_slots():
    model = build_model(ModelConfig(depth=14, width_multiplier=0.5), seed_graph("evonorm_s0"), 10)
    assert not any(_count(model, kind) for kind in (ChannelAffine, nn.BatchNorm2d))
    assert model.classifier.in_features == 32  # widths 8, 16, 32


def test_stem_follows_the_input_size():
    config = ModelConfig(arch="resnet50", **TINY)
    small, large = (build_model(config, seed_graph("bn_relu"), 10, image_size=s) for s in (32, 224))
    assert _count(small, nn.MaxPool2d) == 0 and small.stem[0].stride == (1, 1)
    assert _count(large, nn.MaxPool2d) == 1 and large.stem[0].stride == (2, 2)
    assert small(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    imagenet = build_model(
        ModelConfig(arch="mobilenet_v2", stem="imagenet", **TINY), seed_graph("bn_relu"), 10
    )
    assert imagenet.stem[0].stride == (2, 2)


def test_multipliers_scale_widths_and_depths():
    graph = seed_graph("bn_relu")
    full = build_model(ModelConfig(arch="efficientnet_b0"), graph, 10)
    slim = build_model(
        ModelConfig(arch="efficientnet_b0", width_multiplier=0.5, depth_multiplier=0.5), graph, 10
    )
    assert isinstance(full, SlotNetwork) and len(full.blocks) == 16 and len(slim.blocks) == 10
    assert full.classifier.in_features == 1280 and slim.classifier.in_features == 640
    assert len(build_model(ModelConfig(arch="resnet50", depth_multiplier=0.5), graph, 10).blocks) == 9


def test_same_seed_same_network_and_the_global_generator_does_not_matter():
    config = ModelConfig(arch="mobilenet_v2", **TINY)
    graph = seed_graph("evonorm_b0")
    torch.manual_seed(1)
    a = build_model(config, graph, 10, seed=3)
    torch.manual_seed(2)
    b = build_model(config, graph, 10, seed=3)
    c = build_model(config, graph, 10, seed=4)
    for (key, x), y in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        assert torch.equal(x, y), key
    assert not all(
        torch.equal(x, z) for x, z in zip(a.state_dict().values(), c.state_dict().values(), strict=True)
    )


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"depth": 10}, "6n \\+ 2"),
        ({"width_multiplier": 0.0}, "positive"),
        ({"stem": "imagenet"}, "small stem"),
    ],
)
def test_bad_model_configs(changes, message):
    with pytest.raises(ValueError, match=message):
        ModelConfig(**changes)


def test_channel_affine_is_gamma_x_plus_beta():
    layer = ChannelAffine(3)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([1.0, 2.0, 3.0]))
        layer.bias.copy_(torch.tensor([0.0, -1.0, 1.0]))
    x = torch.randn(2, 3, 4, 4)
    expected = x * torch.tensor([1.0, 2.0, 3.0]).view(1, 3, 1, 1) + torch.tensor([0.0, -1.0, 1.0]).view(
        1, 3, 1, 1
    )
    torch.testing.assert_close(layer(x), expected)
    assert layer(x.bfloat16()).dtype == torch.bfloat16  # under autocast it keeps the input's precision


def test_build_network_accepts_any_slot_factory():
    model = build_network(ModelConfig(arch="resnet50", **TINY), functools.partial(nn.GroupNorm, 4), 10)
    assert _count(model, nn.GroupNorm) > 0 and model(torch.randn(2, 3, 32, 32)).shape == (2, 10)
