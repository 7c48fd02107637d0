"""swap_norm_act on real models built without downloaded weights: torchvision's ResNet-50,
ResNet-18, MobileNetV2 and EfficientNet-B0, timm's ResNet-18; for token layers timm's ViT,
``nn.TransformerEncoder`` and the GPT proxy.

The strong check: the bn_relu seed is BatchNorm + ReLU, so with the BatchNorm's state copied the
swapped model must compute what the original did; likewise the layernorm and rmsnorm seeds in a
transformer. The blocks are also checked by hand against their known structure, since torchvision's
ResNet blocks share one ReLU between the BatchNorms and the residual add.
"""

from __future__ import annotations

import functools

import pytest
import timm
import torch
import torchvision
from torch import nn

from evosearch import compile_layer, seed_graph, swap_norm_act
from evosearch.errors import EvosearchError, LayoutError, SourceError
from evosearch.layers.norm_without_act import ChannelAffine
from evosearch.tasks.transformers import GPT
from primitives import Layout


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Small tensors: one thread is fastest, and far faster where other work shares the cores."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def randomize_batchnorms(model: nn.Module) -> None:
    """Non-trivial affine and running statistics, so that an equivalence check means something."""
    generator = torch.Generator().manual_seed(0)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            c = m.num_features
            m.weight.data = torch.rand(c, generator=generator) + 0.5
            m.bias.data = torch.rand(c, generator=generator) - 0.5
            m.running_mean.copy_(torch.rand(c, generator=generator) - 0.5)
            m.running_var.copy_(torch.rand(c, generator=generator) + 0.5)


def modules_by_id(model: nn.Module, kind: type[nn.Module]) -> set[int]:
    return {id(m) for m in model.modules() if isinstance(m, kind)}


def image(seed: int = 0) -> torch.Tensor:
    return torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("mode", ["eval", "train"])
def test_bn_relu_seed_leaves_resnet50_computing_the_same_function(mode):
    torch.manual_seed(0)
    model = torchvision.models.resnet50(weights=None)
    randomize_batchnorms(model)
    model.train(mode == "train")
    other = {name for name, _ in model.named_parameters() if "bn" not in name and "downsample.1" not in name}
    expected = model(image())
    report = swap_norm_act(model, seed_graph("bn_relu"))
    assert report.counts == {"norm_act": 33, "norm_only": 0, "kept": 20}
    assert {e.module for e in report.entries if e.kind == "kept"} == {
        name for name, m in model.named_modules() if isinstance(m, nn.BatchNorm2d)
    }  # bn3 of every bottleneck and the downsample BatchNorms
    assert all(
        set(e.copied) >= {"weight", "bias", "running_mean", "running_var"} for e in report.entries if e.copied
    )
    assert len(report.untied) == 16  # every Bottleneck: its ReLU is shared with the residual add
    torch.testing.assert_close(model(image()), expected, rtol=1e-5, atol=1e-5)
    assert other <= {name for name, _ in model.named_parameters()}  # the same paths as before


def test_bottleneck_by_hand_keeps_the_relu_after_the_residual_add():
    model = torchvision.models.resnet50(weights=None).eval()
    randomize_batchnorms(model)
    block = model.layer1[0]
    convs = modules_by_id(model, nn.Conv2d)
    swap_norm_act(model, seed_graph("evonorm_s0"))
    block_now = model.layer1[0]
    assert type(block_now).__name__ == "Bottleneck" and block_now.bn3 is block.bn3  # the kept BatchNorm
    assert isinstance(block_now.relu, nn.ReLU)  # still used after the add
    x = torch.randn(2, 64, 8, 8)
    out = block_now.bn2(block_now.conv2(block_now.bn1(block_now.conv1(x))))
    expected = torch.relu(block_now.bn3(block_now.conv3(out)) + block_now.downsample(x))
    torch.testing.assert_close(block_now(x), expected)
    assert type(block_now.bn1).__name__ == "EvonormS0"
    assert modules_by_id(model, nn.Conv2d) == convs  # other modules: the very same objects


def test_basic_blocks_by_hand_in_torchvision_and_timm():
    for model in (torchvision.models.resnet18(weights=None), timm.create_model("resnet18", pretrained=False)):
        model.eval()
        report = swap_norm_act(model, seed_graph("evonorm_s0"))
        assert report.counts == {"norm_act": 9, "norm_only": 0, "kept": 11}  # stem + 8 × bn1
        block = model.layer2[0]
        act = block.relu if hasattr(block, "relu") else block.act2
        assert isinstance(act, nn.ReLU)
        x = torch.randn(2, 64, 8, 8)
        expected = torch.relu(block.bn2(block.conv2(block.bn1(block.conv1(x)))) + block.downsample(x))
        torch.testing.assert_close(block(x), expected)
        assert model(image()).shape == (2, 1000)
    assert isinstance(model.layer1[0].act1, nn.Identity) and not report.untied  # timm: one act per use


@pytest.mark.parametrize(
    ("build", "act", "pairs", "kept"),
    [
        (lambda: torchvision.models.mobilenet_v2(weights=None), nn.ReLU6, 35, 17),  # 17 linear bottlenecks
        (lambda: torchvision.models.efficientnet_b0(weights=None), nn.SiLU, 33, 16),  # 16 projections
    ],
)
def test_mobile_networks(build, act, pairs, kept):
    model = build()
    convs = modules_by_id(model, nn.Conv2d)
    before = sum(isinstance(m, act) for m in model.modules())
    report = swap_norm_act(model, seed_graph("evonorm_b0"))
    assert report.counts == {"norm_act": pairs, "norm_only": 0, "kept": kept}
    assert sum(isinstance(m, act) for m in model.modules()) == before - pairs
    assert sum(isinstance(m, nn.BatchNorm2d) for m in model.modules()) == kept
    assert sum(type(m).__name__ == "EvonormB0" for m in model.modules()) == pairs
    assert modules_by_id(model, nn.Conv2d) == convs
    model.train()
    loss = model(image()).square().mean()
    loss.backward()
    model.eval()
    assert torch.isfinite(model(image())).all()


def test_norms_without_activation_affine_or_layer():
    model = torchvision.models.resnet50(weights=None)
    randomize_batchnorms(model)
    bn3 = model.layer1[0].bn3
    report = swap_norm_act(model, seed_graph("evonorm_s0"), norm_without_act="affine")
    assert report.counts == {"norm_act": 33, "norm_only": 20, "kept": 0}
    affine = model.layer1[0].bn3
    assert isinstance(affine, ChannelAffine)
    torch.testing.assert_close(affine.weight.data, bn3.weight.data)  # copied from the BatchNorm
    assert not any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    x = torch.randn(2, bn3.num_features, 3, 3)
    torch.testing.assert_close(affine(x), x * bn3.weight.view(1, -1, 1, 1) + bn3.bias.view(1, -1, 1, 1))

    model = torchvision.models.resnet50(weights=None)
    report = swap_norm_act(model, seed_graph("evonorm_s0"), norm_without_act="layer", copy_state=False)
    assert report.counts == {"norm_act": 33, "norm_only": 20, "kept": 0}
    assert all(not e.copied for e in report.entries)
    assert type(model.layer1[0].downsample[1]).__name__ == "EvonormS0"


def test_layer_given_as_graph_class_or_factory():
    graph = seed_graph("gn_relu")
    for layer in (graph, compile_layer(graph), lambda c: nn.Sequential(nn.GroupNorm(1, c), nn.ReLU())):
        model = torchvision.models.resnet18(weights=None)
        assert swap_norm_act(model, layer).counts["norm_act"] == 9
        assert model(image()).shape == (2, 1000)
    with pytest.raises(SourceError, match="not a module instance"):
        swap_norm_act(torchvision.models.resnet18(weights=None), nn.ReLU())
    with pytest.raises(ValueError, match="norm_without_act must be one of affine, layer, batchnorm"):
        swap_norm_act(torchvision.models.resnet18(weights=None), graph, norm_without_act="drop")


def test_old_spelling_keep_is_batchnorm():
    """``keep`` was swap's word for ``batchnorm``: the model's BatchNorm stays, the very same object."""
    model = torchvision.models.resnet18(weights=None)
    downsample = model.layer2[0].downsample[1]
    report = swap_norm_act(model, "evonorm_s0", norm_without_act="keep")
    assert report.counts == {"norm_act": 9, "norm_only": 0, "kept": 11}
    assert model.layer2[0].downsample[1] is downsample


class SharedInRoot(nn.Module):
    """One ReLU after a BatchNorm and after an add, owned by the root: it cannot be untied in place."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.bn_b = nn.BatchNorm2d(8)
        self.act = nn.SiLU()
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.relu(self.bn(self.conv(x)))
        return self.relu(y + self.act(self.bn_b(y)))


def test_a_shared_activation_in_the_root_is_kept_and_reported():
    model = SharedInRoot()
    report = swap_norm_act(model, seed_graph("evonorm_b0"))
    entries = {e.module: e for e in report.entries}
    assert entries["bn"].became == "kept" and "shared" in entries["bn"].note
    assert entries["bn_b"].kind == "norm_act" and isinstance(model.act, nn.Identity)
    assert isinstance(model.relu, nn.ReLU) and isinstance(model.bn, nn.BatchNorm2d)
    assert "norm_act 1, norm_only 0, kept 1" in str(report)


class DataDependent(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.bn = nn.BatchNorm2d(3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(x) if x.sum() > 0 else x


def test_an_untraceable_model_is_a_clear_error():
    with pytest.raises(EvosearchError, match=r"cannot trace DataDependent with torch\.fx"):
        swap_norm_act(DataDependent(), seed_graph("bn_relu"))


# ---- transformers: token norms ------------------------------------------------------------------


def tiny_vit(**kwargs) -> nn.Module:
    return timm.create_model(
        "vit_tiny_patch16_224", pretrained=False, img_size=32, patch_size=8, depth=2, **kwargs
    )


def tiny_encoder(norm_first: bool) -> nn.TransformerEncoder:
    """Dropout 0, so that a forward in training mode computes what one in eval mode does."""
    layer = nn.TransformerEncoderLayer(16, 2, 32, dropout=0.0, batch_first=True, norm_first=norm_first)
    return nn.TransformerEncoder(layer, 2, norm=nn.LayerNorm(16), enable_nested_tensor=not norm_first)


def tiny_gpt(norm=nn.LayerNorm) -> GPT:
    return GPT(vocab_size=32, context=8, dim=16, depth=2, heads=2, mlp_ratio=2.0, norm=norm, qk_norm=norm)


def tokens(seed: int = 0) -> torch.Tensor:
    return torch.randn(2, 5, 16, generator=torch.Generator().manual_seed(seed))


def randomize_token_norms(model: nn.Module) -> None:
    """Non-trivial affine, so that copying it means something."""
    generator = torch.Generator().manual_seed(0)
    for m in model.modules():
        if isinstance(m, (nn.LayerNorm, nn.RMSNorm)):
            for p in m.parameters():
                p.data = torch.rand(p.shape, generator=generator) + 0.5


def snapshot(model: nn.Module) -> dict[str, object]:
    return {k: v.clone() for k, v in model.state_dict().items()} | {
        name: type(m) for name, m in model.named_modules()
    }


@pytest.mark.parametrize(("qk_norm", "slots"), [(False, 5), (True, 9)])  # 2 per block + final; +2 per block
def test_every_norm_of_timm_vit_becomes_the_layer(qk_norm, slots):
    model = tiny_vit(qk_norm=qk_norm)
    report = swap_norm_act(model, "dyt")
    assert report.layout is Layout.TOKENS
    assert report.counts == {"norm_act": 0, "norm_only": slots, "kept": 0}
    assert sum(type(m).__name__ == "Dyt" for m in model.modules()) == slots
    assert not any(isinstance(m, nn.LayerNorm) for m in model.modules())
    assert isinstance(model.norm_pre, nn.Identity) and isinstance(model.fc_norm, nn.Identity)  # not slots
    assert all(e.copied == ["weight", "bias"] for e in report.entries)
    assert ("blocks.1.attn.q_norm" in {e.module for e in report.entries}) == qk_norm
    model(torch.randn(2, 3, 32, 32)).square().mean().backward()
    assert model.blocks[0].norm1.alpha.grad is not None


def test_state_dict_keys_keep_their_paths():
    """A checkpoint of the original model loads, strictly, into the swapped one."""
    model = tiny_vit(qk_norm=True)
    state = model.state_dict()
    swap_norm_act(model, "layernorm")
    assert model.state_dict().keys() == state.keys()
    model.load_state_dict(state)


@pytest.mark.parametrize("norm_first", [True, False], ids=["pre_norm", "post_norm"])
def test_transformer_encoder_runs_the_new_norms_in_train_and_eval(norm_first):
    """In eval mode without gradients torch's fused path would read norm1/norm2 as LayerNorms (and
    Dyt has no ``eps``); with it off, eval computes what training does (no dropout, no batch stats)."""
    model = tiny_encoder(norm_first)
    report = swap_norm_act(model, "dyt")
    assert report.counts == {"norm_act": 0, "norm_only": 5, "kept": 0}  # norm1, norm2 per layer + final
    assert report.fast_path_off == ([] if norm_first else [""]) + ["layers.0", "layers.1"]
    trained = model.train()(tokens())
    assert torch.isfinite(trained).all()
    padding = torch.zeros(2, 5, dtype=torch.bool)  # the mask that would send post-norm to nested tensors
    with torch.no_grad():
        evaluated = model.eval()(tokens(), src_key_padding_mask=padding)
    torch.testing.assert_close(evaluated, trained.detach(), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize(
    ("build", "seed"),
    [
        (lambda: tiny_encoder(norm_first=True), "layernorm"),
        (lambda: tiny_encoder(norm_first=False), "layernorm"),
        (tiny_gpt, "layernorm"),
        (lambda: tiny_gpt(functools.partial(nn.RMSNorm, eps=1e-6)), "rmsnorm"),
    ],
    ids=["encoder_pre_norm", "encoder_post_norm", "gpt_layernorm", "gpt_rmsnorm"],
)
def test_the_same_norm_seed_with_copied_state_is_the_same_model(build, seed):
    torch.manual_seed(0)
    model = build().eval()
    randomize_token_norms(model)
    x = tokens() if isinstance(model, nn.TransformerEncoder) else torch.randint(0, 32, (2, 8))
    with torch.no_grad():
        expected = model(x)
        report = swap_norm_act(model, seed)
        assert report.counts["norm_only"] == (9 if isinstance(model, GPT) else 5)  # GPT: + q/k norms
        assert not any(isinstance(m, (nn.LayerNorm, nn.RMSNorm)) for m in model.modules())
        torch.testing.assert_close(model(x), expected, rtol=1e-6, atol=1e-6)


def test_an_image_layer_for_a_transformer_is_one_clear_error_and_changes_nothing():
    for model, name in ((tiny_vit(), "VisionTransformer"), (tiny_gpt(), "GPT")):
        before = snapshot(model)
        with pytest.raises(LayoutError, match=rf"^{name} has token norm slots \(LayerNorm\): .*image layout"):
            swap_norm_act(model, "bn_relu")
        with pytest.raises(LayoutError, match="and none for the image layout"):
            swap_norm_act(model, nn.BatchNorm2d, layout="image")
        assert snapshot(model).keys() == before.keys()
        assert all(
            torch.equal(v, before[k]) if isinstance(v, torch.Tensor) else v is before[k]
            for k, v in snapshot(model).items()
        )


def test_a_token_layer_for_a_resnet_is_one_clear_error_and_changes_nothing():
    model = torchvision.models.resnet18(weights=None)
    modules = {name: id(m) for name, m in model.named_modules()}
    with pytest.raises(LayoutError, match=r"^ResNet has image slots \(BatchNorm2d\): layer 'dyt' .*tokens"):
        swap_norm_act(model, "dyt")
    assert {name: id(m) for name, m in model.named_modules()} == modules


def test_a_formula_is_read_in_the_layout_of_the_slots():
    model = tiny_vit()
    report = swap_norm_act(model, "x / layer_rms(x)")
    assert report.counts["norm_only"] == 5
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 1000)


class Hybrid(nn.Module):
    """A conv stem with a BatchNorm, then tokens through norms of which only one is a token slot."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.act = nn.ReLU()
        self.norm2d = timm.layers.LayerNorm2d(8)  # normalizes the channels of NCHW
        self.norm = nn.LayerNorm(8)
        self.norm_hw = nn.LayerNorm((4, 8))  # over the last two dimensions

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.norm2d(self.act(self.bn(self.conv(x))))[:, :, :4, :4]
        return self.norm_hw(self.norm(x.flatten(2).transpose(1, 2)).reshape(-1, 4, 4, 8))


def test_a_model_with_both_kinds_takes_a_class_with_its_layout():
    model = Hybrid()
    with pytest.raises(LayoutError, match=r"has image slots \(BatchNorm2d\) and token norm slots .* layout="):
        swap_norm_act(model, nn.RMSNorm)
    with pytest.raises(LayoutError, match="layout must be one of image, tokens, got 'token'"):
        swap_norm_act(model, nn.RMSNorm, layout="token")
    report = swap_norm_act(model, nn.RMSNorm, layout="tokens")
    notes = {e.module: e.note for e in report.entries if e.kind == "kept"}
    assert notes == {
        "norm2d": "a subclass of LayerNorm may normalize another dimension",
        "norm_hw": "normalizes the last 2 dimensions",
    }
    assert isinstance(model.norm, nn.RMSNorm) and isinstance(model.bn, nn.BatchNorm2d)
    assert swap_norm_act(model, "bn_relu").counts["norm_act"] == 1  # the graph's layout picks the slots
    assert model(image()).shape == (2, 4, 4, 8)
