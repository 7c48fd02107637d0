"""The transformer proxies: ViT and GPT networks (shapes, determinism, slots, causality, attention),
byte-level text (generated and from files), and training them through the same loop as the CNNs."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from evosearch.config import ConfigError
from evosearch.errors import DatasetError, LayoutError
from evosearch.layers.seeds import seed_graph
from evosearch.tasks.datasets import DatasetConfig, load_dataset
from evosearch.tasks.models import ModelConfig, build_model, build_network
from evosearch.tasks.specs import load_task
from evosearch.tasks.text import (
    bigram_accuracy,
    generate_text,
    generated_text_data,
    read_text,
    unigram_accuracy,
)
from evosearch.tasks.train import TrainConfig, make_optimizer, train_candidate, train_network
from evosearch.tasks.transformers import Attention

VIT = ModelConfig(arch="vit", depth=2, dim=32, heads=4, patch_size=4, mlp_ratio=2.0)
GPT = ModelConfig(arch="gpt", depth=2, dim=32, heads=4, mlp_ratio=2.0)


class Slot(nn.LayerNorm):
    """LayerNorm that records the shape of every input, to find and inspect the slots."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen = tuple(x.shape)
        return super().forward(x)


def images(n: int = 2, size: int = 16) -> torch.Tensor:
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(0))


def tokens(n: int = 2, length: int = 12) -> torch.Tensor:
    return torch.randint(0, 256, (n, length), generator=torch.Generator().manual_seed(0))


def vit(config: ModelConfig = VIT, norm=nn.LayerNorm, seed: int = 0) -> nn.Module:
    return build_network(config, norm, num_classes=10, image_size=16, seed=seed)


def gpt(config: ModelConfig = GPT, norm=nn.LayerNorm, seed: int = 0) -> nn.Module:
    return build_network(config, norm, num_classes=256, seed=seed, context=16)


# ---- networks -------------------------------------------------------------------------------------


def test_shapes_of_both_networks():
    model = vit()
    assert model(images()).shape == (2, 10)
    assert model.embed(images()).shape == model.features(images()).shape == (2, 16, 32)
    assert len(model.blocks) == 2
    assert gpt()(tokens()).shape == (2, 12, 256)
    with pytest.raises(ValueError, match="exceeds the context 16"):
        gpt()(tokens(length=17))


@pytest.mark.parametrize("build", [vit, gpt])
def test_same_seed_same_network_to_the_bit(build):
    torch.manual_seed(1)
    a = build(seed=3)
    torch.manual_seed(2)
    b, c = build(seed=3), build(seed=4)
    for (key, x), y in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        assert torch.equal(x, y), key
    assert not torch.equal(a.head.weight, c.head.weight)


@pytest.mark.parametrize("build", [vit, gpt])
@pytest.mark.parametrize("qk_norm", [False, True])
def test_every_norm_is_a_slot_fed_tokens(build, qk_norm):
    """Two slots a block and the final norm; with QK-norm two more a block, fed one head's features."""
    config = ModelConfig(**{**vars(VIT if build is vit else GPT), "qk_norm": qk_norm})
    model = build(config, norm=Slot)
    model(images() if build is vit else tokens())
    slots = [m for m in model.modules() if isinstance(m, Slot)]
    assert len(slots) == (4 if qk_norm else 2) * config.depth + 1
    assert not any(isinstance(m, nn.LayerNorm) and not isinstance(m, Slot) for m in model.modules())
    length = 16 if build is vit else 12
    head_dim = config.dim // config.heads
    for slot in slots:
        per_head = slot.normalized_shape[0] == head_dim
        assert slot.seen == ((2 * config.heads, length, head_dim) if per_head else (2, length, config.dim))


def test_the_gpt_is_causal():
    model = gpt().eval()
    x = tokens(length=12)
    changed = x.clone()
    changed[:, 7] = (changed[:, 7] + 1) % 256
    with torch.no_grad():
        before, after = model(x), model(changed)
    torch.testing.assert_close(before[:, :7], after[:, :7], rtol=0, atol=1e-6)
    assert not torch.allclose(before[:, 7:], after[:, 7:])


@pytest.mark.parametrize("causal", [False, True])
def test_attention_probs_are_what_forward_attends_with(causal):
    torch.manual_seed(0)
    attention = Attention(32, 4, causal, qk_norm=nn.LayerNorm)
    x = torch.randn(2, 6, 32)
    probs = attention.attention_probs(x)
    assert probs.shape == (2, 4, 6, 6)
    torch.testing.assert_close(probs.sum(-1), torch.ones(2, 4, 6))
    assert (probs.triu(1) == 0).all() == causal
    _, _, v = attention._heads(x)
    torch.testing.assert_close(attention.proj((probs @ v).transpose(1, 2).flatten(2)), attention(x))


def test_a_layer_of_the_other_layout_is_one_clear_error():
    with pytest.raises(LayoutError, match="image"):
        build_model(VIT, seed_graph("bn_relu"), 10, image_size=16)
    with pytest.raises(LayoutError, match="tokens"):
        build_model(ModelConfig(depth=8), "layernorm", 10)
    with pytest.raises(LayoutError):
        train_candidate(seed_graph("evonorm_b0"), load_task("generated_gpt"))
    assert isinstance(build_model(VIT, "layernorm", 10, image_size=16), nn.Module)


def test_a_causal_network_refuses_a_layer_that_reads_other_tokens():
    """Statistics over L (or over the batch's tokens) would let a GPT position see the future."""
    gpt = load_task("generated_gpt")
    for formula in ("x - instance_mean(x)", "x / batch_std(x)"):
        with pytest.raises(LayoutError, match=r"reads other tokens .* network's \(gpt\) layer must not"):
            train_candidate(formula, gpt)
        with pytest.raises(LayoutError, match="reads other tokens"):
            build_model(gpt.model, formula, 256, context=16)
    assert isinstance(build_model(VIT, "x - instance_mean(x)", 10, image_size=16), nn.Module)  # not causal
    assert isinstance(build_model(gpt.model, "x / layer_rms(x)", 256, context=16), nn.Module)


def test_model_config_checks_the_transformer_fields():
    for bad, match in [
        ({"dim": 30, "heads": 4}, "multiple of heads"),
        ({"patch_size": 0}, "patch_size"),
        ({"mlp_ratio": 0.0}, "mlp_ratio"),
        ({"width_multiplier": 0.5}, "sized by dim"),
    ]:
        with pytest.raises(ValueError, match=match):
            ModelConfig(**{**vars(VIT), **bad})
    with pytest.raises(ConfigError, match="cannot train on dataset generated"):
        load_task("generated_gpt", ["dataset.name=generated"])
    with pytest.raises(ConfigError, match="cannot train on dataset generated_text"):
        load_task("generated_vit", ["dataset.name=generated_text"])
    with pytest.raises(ConfigError, match="betas"):
        load_task("generated_gpt", ["train.betas=[0.9]"])


# ---- text -----------------------------------------------------------------------------------------


def test_generated_text_is_deterministic_and_bigrams_predict_it_in_part():
    text = generate_text(5000, seed=0)
    assert text == generate_text(5000, seed=0) != generate_text(5000, seed=1)
    assert len(text) == 5000 and text.decode("ascii").count("|") > 50
    data = generated_text_data(50_000, 5000, seed=0, context=64)
    bigram = bigram_accuracy(data.train_tokens, data.val_tokens)
    assert unigram_accuracy(data.train_tokens, data.val_tokens) < bigram < 0.5


def test_a_small_gpt_learns_the_generated_text_beyond_bigrams():
    task = load_task("generated_gpt", ["train.steps=120", "train.hurdle_step=null", "dataset.val_size=3000"])
    data = load_dataset(task.dataset)
    result = train_candidate(nn.LayerNorm, task, data)
    assert result.exit_reason == "completed", result.error
    assert result.top1 > bigram_accuracy(data.train_tokens, data.val_tokens) + 0.05


def test_a_text_file_is_split_by_position(tmp_path):
    path = tmp_path / "corpus.txt"
    path.write_text("héllo wörld " * 100, encoding="utf-8")
    raw = path.read_bytes()
    data = read_text(path, context=16, val_fraction=0.25)
    assert bytes(data.train_tokens.tolist()) + bytes(data.val_tokens.tolist()) == raw
    assert len(data.val_tokens) == round(len(raw) * 0.25) and data.vocab_size == 256
    capped = load_dataset(DatasetConfig(name="text", path=str(path), context=16, train_size=100, val_size=50))
    assert (len(capped.train_tokens), len(capped.val_tokens)) == (100, 50)


@pytest.mark.parametrize(
    "content, match",
    [
        (None, "text file not found"),
        (b"caf\xe9 " * 100, "not UTF-8 text: byte 3 is 0xe9"),
        (b"short text", "too short"),
    ],
)
def test_text_file_errors_are_one_clear_line(tmp_path, content, match):
    path = tmp_path / "corpus.txt"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(DatasetError, match=match) as error:
        load_dataset(DatasetConfig(name="text", path=str(path), context=16))
    assert "\n" not in str(error.value)


# ---- training -------------------------------------------------------------------------------------


@pytest.mark.parametrize("name, layer", [("generated_vit", "layernorm"), ("generated_gpt", "rmsnorm")])
def test_a_short_run_of_each_task_gives_a_finite_accuracy(name, layer):
    overrides = ["train.steps=4", "train.log_every=2", "train.hurdle_step=null", "dataset.val_size=500"]
    if name == "generated_vit":
        overrides += ["dataset.train_size=256"]
    result = train_candidate(layer, load_task(name, overrides))
    assert result.exit_reason == "completed", result.error
    assert math.isfinite(result.top1) and 0 <= result.top1 <= 1 and result.steps == 4
    assert all(math.isfinite(loss) for _, loss in result.loss_curve)


def test_same_seed_same_gpt_loss_curve_to_the_bit():
    task = load_task("generated_gpt", ["train.steps=6", "train.log_every=2", "train.hurdle_step=null"])
    first, second = (train_network(nn.LayerNorm, task) for _ in range(2))
    assert first.loss_curve == second.loss_curve and first.top1 == second.top1


def test_adamw_decays_matrices_only():
    config = TrainConfig(optimizer="adamw", betas=(0.9, 0.95), weight_decay=0.1)
    optimizer = make_optimizer(gpt(), config)
    assert isinstance(optimizer, torch.optim.AdamW) and optimizer.defaults["betas"] == (0.9, 0.95)
    decayed, plain = optimizer.param_groups
    assert decayed["weight_decay"] == 0.1 and all(p.ndim > 1 for p in decayed["params"])
    assert plain["weight_decay"] == 0.0 and all(p.ndim <= 1 for p in plain["params"])
    assert isinstance(make_optimizer(gpt(), TrainConfig()), torch.optim.SGD)
