"""Networks with norm-act slots: every normalization-activation position is filled by one factory.

``norm_act`` is a callable ``num_features -> nn.Module`` (a layer class, e.g. ``layer_factory(graph)``,
or ``lambda c: nn.Sequential(nn.BatchNorm2d(c), nn.ReLU())``), so one network definition serves every
candidate layer, seed or reference; :func:`build_model` takes any SOURCE. Convolutions carry no bias
(the slot may add one; squeeze-excitation aside) and, like every layer here, are initialised by
:func:`kaiming_init` from an explicit generator, so a network built from the same seed is the same to
the bit.

The CIFAR ResNet is pre-activation (He et al. 2016, "Identity Mappings"; timm's ResNetV2): each block
is ``x + conv(norm_act(conv(norm_act(x))))``, so a slot sits in front of every convolution and the
residual stream between blocks is never normalized itself, which is what activation growth measures.

The proxy architectures of the training tasks (EvoNorm's ResNet-50, MobileNetV2 and EfficientNet-B0,
after torchvision's definitions) also take ``norm``, a factory for the norms that no activation follows
(:mod:`evosearch.layers.norm_without_act`); :class:`ModelConfig` and :func:`build_network` pick the
network and fill both kinds of slot. With BatchNorm + ReLU (ReLU6, SiLU) in the slots they are
torchvision's networks, parameter for parameter.

The transformers (``vit``, ``gpt``: :mod:`evosearch.tasks.transformers`) take the candidate in every
norm slot, in the token layout; :func:`build_model` resolves a SOURCE in the layout of the network's
slots, so a layer of the other layout is one clear error.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from evosearch.errors import LayoutError
from evosearch.layers.create import LayerFactory, LayerSource, layer_factory, resolve_layer, source_label
from evosearch.layers.graph import LayerGraph
from evosearch.layers.norm_without_act import norm_without_act_factory, parse_norm_without_act
from evosearch.tasks.transformers import GPT, VisionTransformer, transformer_init
from primitives import TOKEN_MIXING_OPS, Layout


def conv3x3(in_channels: int, out_channels: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)


class PreActBasicBlock(nn.Module):
    """``shortcut + conv2(norm_act2(conv1(norm_act1(x))))``; the shortcut is a strided 1×1 conv of
    ``norm_act1(x)`` where the shape changes, else the identity."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, norm_act: LayerFactory) -> None:
        super().__init__()
        self.norm_act1 = norm_act(in_channels)
        self.conv1 = conv3x3(in_channels, out_channels, stride)
        self.norm_act2 = norm_act(out_channels)
        self.conv2 = conv3x3(out_channels, out_channels)
        self.projection = (
            nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False)
            if stride != 1 or in_channels != out_channels
            else None
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pre = self.norm_act1(x)
        shortcut = x if self.projection is None else self.projection(pre)
        return shortcut + self.conv2(self.norm_act2(self.conv1(pre)))


class CifarResNet(nn.Module):
    """The CIFAR ResNet family (He et al. 2016): a 3×3 stem, three stages of ``blocks_per_stage`` basic
    blocks at widths w, 2w, 4w (strides 1, 2, 2), a final norm-act, global average pooling, a linear
    classifier. ``blocks`` holds the blocks in order; :meth:`features` is the input of the pooling."""

    def __init__(
        self, blocks_per_stage: int, width: int, norm_act: LayerFactory, num_classes: int, in_channels: int
    ):
        super().__init__()
        self.stem = conv3x3(in_channels, width)
        blocks: list[nn.Module] = []
        channels = width
        for stage, stage_width in enumerate((width, 2 * width, 4 * width)):
            for index in range(blocks_per_stage):
                stride = 2 if stage > 0 and index == 0 else 1
                blocks.append(PreActBasicBlock(channels, stage_width, stride, norm_act))
                channels = stage_width
        self.blocks = nn.Sequential(*blocks)
        self.final_norm_act = norm_act(channels)
        self.classifier = nn.Linear(channels, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.final_norm_act(self.blocks(self.stem(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x).mean((2, 3)))


def cifar_resnet(
    depth: int, width: int, norm_act: LayerFactory, num_classes: int = 10, in_channels: int = 3
) -> CifarResNet:
    """ResNet-``depth`` for CIFAR-sized input: depth = 6n + 2 (20, 32, 44, 56, 110…), n blocks a stage."""
    if depth < 8 or (depth - 2) % 6:
        raise ValueError(f"CIFAR ResNet depth must be 6n + 2 with n >= 1 (8, 14, 20, …, 56), got {depth}")
    if width < 1:
        raise ValueError(f"width must be positive, got {width}")
    return CifarResNet((depth - 2) // 6, width, norm_act, num_classes, in_channels)


class PlainCNN(nn.Module):
    """``depth`` 3×3 convolutions at one width and resolution, each followed by a norm-act slot, then
    global average pooling and a linear classifier: no skip connection hides what the slot does to the
    signal (the non-residual networks of Lubana et al. 2021). ``layers`` alternates conv and slot."""

    def __init__(self, depth: int, width: int, norm_act: LayerFactory, num_classes: int, in_channels: int):
        super().__init__()
        layers: list[nn.Module] = []
        channels = in_channels
        for _ in range(depth):
            layers += [conv3x3(channels, width), norm_act(width)]
            channels = width
        self.layers = nn.Sequential(*layers)
        self.classifier = nn.Linear(width, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x).mean((2, 3)))


def plain_cnn(
    depth: int, width: int, norm_act: LayerFactory, num_classes: int = 10, in_channels: int = 3
) -> PlainCNN:
    """A plain CNN of ``depth`` conv + norm-act layers (Lubana et al. probe 10, 20 and 40)."""
    if depth < 1 or width < 1:
        raise ValueError(f"depth and width must be positive, got depth={depth}, width={width}")
    return PlainCNN(depth, width, norm_act, num_classes, in_channels)


def kaiming_init(model: nn.Module, generator: torch.Generator, nonlinearity: str = "relu") -> nn.Module:
    """Kaiming-normal weights (fan-in, the gain of ``nonlinearity``) for every conv and linear layer,
    zero biases; the slots keep their own initialisation. Draws come from ``generator`` in module
    order."""
    for module in model.modules():
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            nn.init.kaiming_normal_(module.weight, nonlinearity=nonlinearity, generator=generator)  # fan_in
            if module.bias is not None:
                nn.init.zeros_(module.bias)
    return model


# ---- proxy architectures: the networks candidates are trained in (EvoNorm's K architectures) -------

Arch = Literal["cifar_resnet", "resnet50", "mobilenet_v2", "efficientnet_b0", "vit", "gpt"]
TRANSFORMER_ARCHS = frozenset({"vit", "gpt"})
DEFAULT_CONTEXT = 64

SMALL_INPUT_MAX = 64  # the "auto" stem is the small one for images of at most this many pixels a side
CIFAR_RESNET_WIDTH = 16
RESNET50_BLOCKS = (3, 4, 6, 3)
RESNET50_WIDTHS = (64, 128, 256, 512)
# MobileNetV2 (Sandler et al. 2018): expand ratio t, channels c, repeats n, first stride s of each stage.
MOBILENET_V2_STAGES = (
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)
# EfficientNet-B0 (Tan & Le 2019): expand ratio, kernel, first stride, channels, repeats of each stage.
EFFICIENTNET_B0_STAGES = (
    (1, 3, 1, 16, 1),
    (6, 3, 2, 24, 2),
    (6, 5, 2, 40, 2),
    (6, 3, 2, 80, 3),
    (6, 5, 1, 112, 3),
    (6, 5, 2, 192, 4),
    (6, 3, 1, 320, 1),
)


@dataclass
class ModelConfig:
    """A proxy network whose every normalization-activation pair is one slot filled by the candidate.

    ``depth`` is the CIFAR ResNet's depth (6n + 2); the other architectures have their published stage
    layouts. ``depth_multiplier`` scales the blocks of every stage (rounded up, at least one) and
    ``width_multiplier`` every width (rounded to a multiple of 8, as torchvision does; the CIFAR ResNet's
    base width 16 is just scaled), for proxy sizes. ``stem``: ``small`` is a 3×3 stride-1 convolution
    and no max-pool, for 32×32 input; ``imagenet`` the published stem; ``auto`` the small one for images
    of at most 64 pixels a side. ``norm_without_act`` fills the norms that no activation follows (the last
    norm of a residual branch, projection shortcuts, MobileNet's linear bottleneck output), one of
    :data:`~evosearch.layers.norm_without_act.NormWithoutAct`: ``affine`` is EvoNorm's convention (its
    reference code applies only γx + β there), ``layer`` the candidate layer too, ``batchnorm`` a
    BatchNorm2d (what makes the bn_relu seed the usual network). The pre-activation CIFAR ResNet has no
    such norm.

    The transformers, ``vit`` (on images) and ``gpt`` (on text), are sized directly: ``depth`` blocks
    of width ``dim`` with ``heads`` attention heads and an MLP of ``mlp_ratio · dim`` hidden features;
    the ViT cuts images into ``patch_size`` squares; ``qk_norm`` adds the candidate as QK-norm to every
    attention. Their slots are all norms (no activation follows), so ``stem``, ``norm_without_act`` and
    the multipliers are for the CNNs only.
    """

    arch: Arch = "cifar_resnet"
    depth: int = 20
    width_multiplier: float = 1.0
    depth_multiplier: float = 1.0
    stem: Literal["auto", "small", "imagenet"] = "auto"
    # A NormWithoutAct; typed str so that old spellings (``candidate``) in task files and run
    # directories still load: they are translated here, and only today's words are written back.
    norm_without_act: str = "affine"
    dim: int = 192
    heads: int = 3
    patch_size: int = 4
    mlp_ratio: float = 4.0
    qk_norm: bool = False

    @property
    def layout(self) -> Layout:
        """The layout of the network's slots: tokens (N, L, C) in the transformers, else images."""
        return Layout.TOKENS if self.arch in TRANSFORMER_ARCHS else Layout.IMAGE

    @property
    def causal(self) -> bool:
        """Whether a token may see only those before it (the GPT): then a slot must not read others."""
        return self.arch == "gpt"

    def __post_init__(self) -> None:
        self.norm_without_act = parse_norm_without_act(self.norm_without_act)
        if not (0 < self.width_multiplier < math.inf and 0 < self.depth_multiplier < math.inf):
            raise ValueError(
                f"width_multiplier and depth_multiplier must be positive and finite, got "
                f"{self.width_multiplier} and {self.depth_multiplier}"
            )
        if self.arch == "cifar_resnet":
            if self.depth < 8 or (self.depth - 2) % 6:
                raise ValueError(f"cifar_resnet depth must be 6n + 2 (8, 14, 20, …), got {self.depth}")
            if self.stem == "imagenet":
                raise ValueError("cifar_resnet has only the small stem; use resnet50 for the ImageNet stem")
        if self.arch in TRANSFORMER_ARCHS:
            self._check_transformer()

    def _check_transformer(self) -> None:
        for key in ("depth", "dim", "heads", "patch_size"):
            if getattr(self, key) < 1:
                raise ValueError(f"{key} must be at least 1, got {getattr(self, key)}")
        if self.dim % self.heads:
            raise ValueError(f"dim must be a multiple of heads, got dim {self.dim} and heads {self.heads}")
        if not 0 < self.mlp_ratio < math.inf:
            raise ValueError(f"mlp_ratio must be positive and finite, got {self.mlp_ratio}")
        if self.width_multiplier != 1 or self.depth_multiplier != 1:
            raise ValueError(
                f"{self.arch} is sized by dim and depth; width_multiplier and depth_multiplier "
                "are for the CNNs"
            )


def conv_slot(
    in_channels: int, out_channels: int, kernel: int, stride: int, slot: LayerFactory, groups: int = 1
) -> nn.Sequential:
    """A bias-free convolution and the slot after it (torchvision's Conv2dNormActivation)."""
    conv = nn.Conv2d(in_channels, out_channels, kernel, stride, (kernel - 1) // 2, groups=groups, bias=False)
    return nn.Sequential(conv, slot(out_channels))


class Bottleneck(nn.Module):
    """torchvision's ResNet-50 block (the stride on the 3×3): ``relu(norm(conv3(h)) + shortcut(x))`` with
    ``h = slot(conv2(slot(conv1(x))))``. The ReLU after the addition follows no norm, so it is no slot and
    stays, as in EvoNorm's reference code; the projection shortcut is a strided 1×1 conv and a norm."""

    expansion = 4

    def __init__(
        self, in_channels: int, width: int, stride: int, norm_act: LayerFactory, norm: LayerFactory
    ) -> None:
        super().__init__()
        out_channels = width * self.expansion
        self.conv1 = nn.Conv2d(in_channels, width, 1, bias=False)
        self.norm_act1 = norm_act(width)
        self.conv2 = conv3x3(width, width, stride)
        self.norm_act2 = norm_act(width)
        self.conv3 = nn.Conv2d(width, out_channels, 1, bias=False)
        self.norm3 = norm(out_channels)
        self.shortcut = (
            nn.Sequential(nn.Conv2d(in_channels, out_channels, 1, stride, bias=False), norm(out_channels))
            if stride != 1 or in_channels != out_channels
            else nn.Identity()
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.norm_act2(self.conv2(self.norm_act1(self.conv1(x))))
        return torch.relu(self.norm3(self.conv3(out)) + self.shortcut(x))


class SqueezeExcite(nn.Module):
    """``x · σ(fc2(SiLU(fc1(mean_HW(x)))))`` (torchvision's SqueezeExcitation). Its SiLU follows no
    norm, so it is no slot and stays."""

    def __init__(self, channels: int, squeeze_channels: int) -> None:
        super().__init__()
        self.fc1 = nn.Conv2d(channels, squeeze_channels, 1)
        self.fc2 = nn.Conv2d(squeeze_channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(self.fc2(F.silu(self.fc1(x.mean((2, 3), keepdim=True)))))


class InvertedResidual(nn.Module):
    """MobileNetV2's block and, with a kernel of 5 and squeeze-excitation, EfficientNet's MBConv: a 1×1
    expansion and slot (unless the ratio is 1), a depthwise conv and slot, optional SE, a 1×1 projection
    and a norm without activation (the linear bottleneck); the input is added where shapes allow."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        stride: int,
        expand_ratio: int,
        norm_act: LayerFactory,
        norm: LayerFactory,
        kernel: int = 3,
        squeeze_channels: int | None = None,
    ) -> None:
        super().__init__()
        hidden = in_channels * expand_ratio
        layers: list[nn.Module] = []
        if expand_ratio != 1:
            layers.append(conv_slot(in_channels, hidden, 1, 1, norm_act))
        layers.append(conv_slot(hidden, hidden, kernel, stride, norm_act, groups=hidden))
        if squeeze_channels is not None:
            layers.append(SqueezeExcite(hidden, squeeze_channels))
        layers += [nn.Conv2d(hidden, out_channels, 1, bias=False), norm(out_channels)]
        self.block = nn.Sequential(*layers)
        self.residual = stride == 1 and in_channels == out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.block(x)
        return x + out if self.residual else out


class SlotNetwork(nn.Module):
    """``classifier(mean_HW(head(blocks(stem(x)))))``: the frame of ResNet-50, MobileNetV2 and
    EfficientNet-B0, in torchvision's module order (so their state dicts line up one to one)."""

    def __init__(
        self, stem: nn.Module, blocks: list[nn.Module], head: nn.Module, channels: int, num_classes: int
    ):
        super().__init__()
        self.stem = stem
        self.blocks = nn.Sequential(*blocks)
        self.head = head
        self.classifier = nn.Linear(channels, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.blocks(self.stem(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x).mean((2, 3)))


def make_divisible(value: float, divisor: int = 8) -> int:
    """torchvision's channel rounding: the nearest multiple of ``divisor``, never more than 10% down."""
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * value else rounded


def scaled_repeats(repeats: int, depth_multiplier: float) -> int:
    return max(1, math.ceil(repeats * depth_multiplier))


def resnet50(
    norm_act: LayerFactory,
    norm: LayerFactory,
    num_classes: int = 1000,
    width_multiplier: float = 1.0,
    depth_multiplier: float = 1.0,
    small_input: bool = False,
) -> SlotNetwork:
    """ResNet-50 (He et al. 2016; torchvision's layout): bottleneck stages of 3, 4, 6, 3 blocks."""
    channels = make_divisible(64 * width_multiplier)
    if small_input:
        stem = conv_slot(3, channels, 3, 1, norm_act)
    else:
        stem = nn.Sequential(*conv_slot(3, channels, 7, 2, norm_act), nn.MaxPool2d(3, 2, 1))
    blocks: list[nn.Module] = []
    for stage, (repeats, width) in enumerate(zip(RESNET50_BLOCKS, RESNET50_WIDTHS, strict=True)):
        width = make_divisible(width * width_multiplier)
        for index in range(scaled_repeats(repeats, depth_multiplier)):
            stride = 2 if stage > 0 and index == 0 else 1
            blocks.append(Bottleneck(channels, width, stride, norm_act, norm))
            channels = width * Bottleneck.expansion
    return SlotNetwork(stem, blocks, nn.Identity(), channels, num_classes)


def mobilenet_v2(
    norm_act: LayerFactory,
    norm: LayerFactory,
    num_classes: int = 1000,
    width_multiplier: float = 1.0,
    depth_multiplier: float = 1.0,
    small_input: bool = False,
) -> SlotNetwork:
    """MobileNetV2 (Sandler et al. 2018; torchvision's layout, without the classifier's dropout)."""
    channels = make_divisible(32 * width_multiplier)
    stem = conv_slot(3, channels, 3, 1 if small_input else 2, norm_act)
    blocks: list[nn.Module] = []
    for expand, width, repeats, first_stride in MOBILENET_V2_STAGES:
        width = make_divisible(width * width_multiplier)
        for index in range(scaled_repeats(repeats, depth_multiplier)):
            stride = first_stride if index == 0 else 1
            blocks.append(InvertedResidual(channels, width, stride, expand, norm_act, norm))
            channels = width
    last = make_divisible(1280 * max(1.0, width_multiplier))
    return SlotNetwork(stem, blocks, conv_slot(channels, last, 1, 1, norm_act), last, num_classes)


def efficientnet_b0(
    norm_act: LayerFactory,
    norm: LayerFactory,
    num_classes: int = 1000,
    width_multiplier: float = 1.0,
    depth_multiplier: float = 1.0,
    small_input: bool = False,
) -> SlotNetwork:
    """EfficientNet-B0 (Tan & Le 2019; torchvision's layout): MBConv stages with squeeze-excitation,
    without stochastic depth and dropout (regularizers a short proxy run does not need)."""
    channels = make_divisible(32 * width_multiplier)
    stem = conv_slot(3, channels, 3, 1 if small_input else 2, norm_act)
    blocks: list[nn.Module] = []
    for expand, kernel, first_stride, width, repeats in EFFICIENTNET_B0_STAGES:
        width = make_divisible(width * width_multiplier)
        for index in range(scaled_repeats(repeats, depth_multiplier)):
            stride = first_stride if index == 0 else 1
            squeeze = max(1, channels // 4)
            blocks.append(InvertedResidual(channels, width, stride, expand, norm_act, norm, kernel, squeeze))
            channels = width
    last = 4 * channels
    return SlotNetwork(stem, blocks, conv_slot(channels, last, 1, 1, norm_act), last, num_classes)


ARCHITECTURES: dict[str, Callable[..., SlotNetwork]] = {
    "resnet50": resnet50,
    "mobilenet_v2": mobilenet_v2,
    "efficientnet_b0": efficientnet_b0,
}


def build_network(
    config: ModelConfig,
    norm_act: LayerFactory,
    num_classes: int,
    image_size: int = 32,
    seed: int = 0,
    context: int = DEFAULT_CONTEXT,
) -> nn.Module:
    """The network ``config`` names with ``norm_act`` in every slot; conv and linear weights from
    :func:`kaiming_init` (:func:`~evosearch.tasks.transformers.transformer_init` for the transformers)
    with a generator seeded by ``seed``. For the GPT ``num_classes`` is the vocabulary (the classes of
    the next token) and ``context`` its sequence length. Module constructors also draw from torch's
    global generator (then overwritten): build in a :func:`torch.random.fork_rng` scope to leave it be."""
    if config.arch in TRANSFORMER_ARCHS:
        model = build_transformer(config, norm_act, num_classes, image_size, context)
        return transformer_init(model, torch.Generator().manual_seed(seed))
    norm = norm_without_act_factory(config.norm_without_act, norm_act)
    small_input = config.stem == "small" or (config.stem == "auto" and image_size <= SMALL_INPUT_MAX)
    if config.arch == "cifar_resnet":
        blocks = scaled_repeats((config.depth - 2) // 6, config.depth_multiplier)
        width = max(1, round(CIFAR_RESNET_WIDTH * config.width_multiplier))
        model: nn.Module = cifar_resnet(6 * blocks + 2, width, norm_act, num_classes)
    else:
        model = ARCHITECTURES[config.arch](
            norm_act, norm, num_classes, config.width_multiplier, config.depth_multiplier, small_input
        )
    return kaiming_init(model, torch.Generator().manual_seed(seed))


def build_transformer(
    config: ModelConfig, norm: LayerFactory, num_classes: int, image_size: int, context: int
) -> nn.Module:
    """The ViT or GPT of ``config``, ``norm`` in every norm slot (and as QK-norm where asked)."""
    qk_norm = norm if config.qk_norm else None
    shape = (config.dim, config.depth, config.heads, config.mlp_ratio)
    if config.arch == "gpt":
        return GPT(num_classes, context, *shape, norm, qk_norm)
    return VisionTransformer(image_size, config.patch_size, *shape, num_classes, norm, qk_norm)


def build_model(
    config: ModelConfig,
    layer: LayerSource,
    num_classes: int,
    image_size: int = 32,
    seed: int = 0,
    context: int = DEFAULT_CONTEXT,
) -> nn.Module:
    """:func:`build_network` with the layer a SOURCE names (a seed name, a formula, a graph file, a
    ``LayerGraph`` or a module class) in every slot, with its default hyperparameters (``eps``,
    ``groups``, … of the graph or class). The SOURCE is read in the layout of the network's slots
    (:attr:`ModelConfig.layout`): a graph of the other layout is a :class:`~evosearch.errors.LayoutError`,
    and so is one that reads other tokens offered to a causal network (see :func:`slot_layer`)."""
    factory = layer_factory(slot_layer(config, layer))
    return build_network(config, factory, num_classes, image_size, seed, context)


def slot_layer(config: ModelConfig, layer: LayerSource) -> LayerGraph | LayerFactory:
    """The layer a SOURCE names, read in the layout of ``config``'s slots; in a causal network (the
    GPT) a graph must not read other tokens (statistics over L or over the batch's tokens would let a
    position see the future), a :class:`~evosearch.errors.LayoutError`. A module class is taken as it
    is."""
    resolved = resolve_layer(layer, config.layout)
    if config.causal and isinstance(resolved, LayerGraph):
        mixing = sorted(resolved.ops & TOKEN_MIXING_OPS)
        if mixing:
            raise LayoutError(
                f"layer {source_label(layer)!r} reads other tokens ({', '.join(mixing)}), which a causal "
                f"network's ({config.arch}) layer must not: each position would see the future"
            )
    return resolved
