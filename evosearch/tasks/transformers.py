"""Transformers with norm slots: a ViT and a GPT whose every normalization is filled by one factory.

``norm`` is a callable ``num_features -> nn.Module`` (``layer_factory(graph, layout=Layout.TOKENS)``,
``nn.LayerNorm``, ``functools.partial(nn.RMSNorm, eps=1e-6)``) whose input is a token tensor
(N, L, C). The blocks are pre-norm (``x + attn(norm1(x))``, ``x + mlp(norm2(x))``, a final norm), as
in timm's ``VisionTransformer`` and GPT-2, so the residual stream itself is never normalized and a
slot only shapes what enters each branch. QK-norm (``qk_norm``) adds two more slots per block,
applied per head to the queries and keys as timm's ``Attention`` does, the fix of Wortsman et al.
(2023) for attention-logit growth.

Weights come from :func:`transformer_init` and an explicit generator (truncated normal, sd 0.02, as
timm and GPT-2 do, LeCun's fan-in scale for the patch embedding; zero biases), so a network built
from the same seed is the same to the bit; the slots keep their own initialisation.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from evosearch.layers.create import LayerFactory

INIT_STD = 0.02


class Attention(nn.Module):
    """Multi-head self-attention: ``proj(softmax(q kᵀ / √d) v)``, causal or not. ``qk_norm`` (a factory)
    normalizes queries and keys per head on (N·heads, L, head_dim) views, so a token-layout slot sees
    one head's features as its C; without it the slots are identities."""

    def __init__(self, dim: int, heads: int, causal: bool, qk_norm: LayerFactory | None = None) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"dim {dim} is not divisible by heads {heads}")
        self.heads = heads
        self.head_dim = dim // heads
        self.causal = causal
        self.qkv = nn.Linear(dim, 3 * dim)
        self.q_norm = qk_norm(self.head_dim) if qk_norm is not None else nn.Identity()
        self.k_norm = qk_norm(self.head_dim) if qk_norm is not None else nn.Identity()
        self.proj = nn.Linear(dim, dim)

    def _heads(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """q, k, v of shape (N, heads, L, head_dim), q and k through their norm slots."""
        n, length, _ = x.shape
        q, k, v = self.qkv(x).reshape(n, length, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q = self.q_norm(q.reshape(n * self.heads, length, self.head_dim))
        k = self.k_norm(k.reshape(n * self.heads, length, self.head_dim))
        shape = (n, self.heads, length, self.head_dim)
        return q.reshape(shape), k.reshape(shape), v

    def attention_probs(self, x: torch.Tensor) -> torch.Tensor:
        """The softmax probabilities (N, heads, L, L), computed explicitly (what a probe inspects;
        :meth:`forward` uses the fused kernel, which does not expose them)."""
        q, k, _ = self._heads(x)
        logits = (q @ k.transpose(-2, -1)) * self.head_dim**-0.5
        if self.causal:
            length = x.shape[1]
            future = torch.ones(length, length, dtype=torch.bool, device=x.device).triu(1)
            logits = logits.masked_fill(future, float("-inf"))
        return logits.softmax(dim=-1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = self._heads(x)
        out = F.scaled_dot_product_attention(q, k, v, is_causal=self.causal)
        return self.proj(out.transpose(1, 2).flatten(2))


class TransformerBlock(nn.Module):
    """Pre-norm block: ``x = x + attn(norm1(x)); x = x + mlp(norm2(x))``, the MLP Linear → GELU → Linear
    with ``mlp_ratio · dim`` hidden features."""

    def __init__(
        self,
        dim: int,
        heads: int,
        mlp_ratio: float,
        norm: LayerFactory,
        causal: bool,
        qk_norm: LayerFactory | None = None,
    ) -> None:
        super().__init__()
        hidden = round(dim * mlp_ratio)
        self.norm1 = norm(dim)
        self.attn = Attention(dim, heads, causal, qk_norm)
        self.norm2 = norm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


def transformer_blocks(
    dim: int,
    depth: int,
    heads: int,
    mlp_ratio: float,
    norm: LayerFactory,
    causal: bool,
    qk_norm: LayerFactory | None,
) -> nn.ModuleList:
    return nn.ModuleList(TransformerBlock(dim, heads, mlp_ratio, norm, causal, qk_norm) for _ in range(depth))


class VisionTransformer(nn.Module):
    """ViT (Dosovitskiy et al. 2021) without a class token: a strided-conv patch embedding, a learned
    position embedding, ``depth`` non-causal blocks, a final norm, mean pooling over the tokens and a
    linear head (timm's ``global_pool="avg"``, which needs no extra token for a small proxy)."""

    def __init__(
        self,
        image_size: int,
        patch_size: int,
        dim: int,
        depth: int,
        heads: int,
        mlp_ratio: float,
        num_classes: int,
        norm: LayerFactory,
        qk_norm: LayerFactory | None = None,
        in_channels: int = 3,
    ) -> None:
        super().__init__()
        if image_size % patch_size:
            raise ValueError(f"image size {image_size} is not divisible by patch size {patch_size}")
        num_patches = (image_size // patch_size) ** 2
        self.patch_embed = nn.Conv2d(in_channels, dim, patch_size, stride=patch_size)
        self.pos_embed = nn.Parameter(torch.zeros(1, num_patches, dim))
        self.blocks = transformer_blocks(dim, depth, heads, mlp_ratio, norm, False, qk_norm)
        self.norm = norm(dim)
        self.head = nn.Linear(dim, num_classes)

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """Patch tokens plus position embedding: (N, L, C), the input of the first block."""
        return self.patch_embed(images).flatten(2).transpose(1, 2) + self.pos_embed

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """The tokens (N, L, C) after the final norm."""
        x = self.embed(images)
        for block in self.blocks:
            x = block(x)
        return self.norm(x)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(images).mean(dim=1))


class GPT(nn.Module):
    """A GPT-2-style decoder (Radford et al. 2019): token and learned position embeddings, ``depth``
    causal blocks, a final norm and an untied linear head to next-token logits. The head is not tied
    to the token embedding: with a byte vocabulary it is a small share of the parameters, and untied
    it keeps the embedding's scale free of the output's."""

    def __init__(
        self,
        vocab_size: int,
        context: int,
        dim: int,
        depth: int,
        heads: int,
        mlp_ratio: float,
        norm: LayerFactory,
        qk_norm: LayerFactory | None = None,
    ) -> None:
        super().__init__()
        self.context = context
        self.token_embed = nn.Embedding(vocab_size, dim)
        self.pos_embed = nn.Parameter(torch.zeros(1, context, dim))
        self.blocks = transformer_blocks(dim, depth, heads, mlp_ratio, norm, True, qk_norm)
        self.norm = norm(dim)
        self.head = nn.Linear(dim, vocab_size, bias=False)

    def embed(self, tokens: torch.Tensor) -> torch.Tensor:
        """Token plus position embedding (N, L, C) of int64 tokens (N, L), L at most ``context``."""
        length = tokens.shape[1]
        if length > self.context:
            raise ValueError(f"sequence length {length} exceeds the context {self.context}")
        return self.token_embed(tokens) + self.pos_embed[:, :length]

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        x = self.embed(tokens)
        for block in self.blocks:
            x = block(x)
        return self.head(self.norm(x))


def transformer_init(model: nn.Module, generator: torch.Generator) -> nn.Module:
    """Truncated-normal weights (cut at ±2 sd), zero biases; the slots keep their own initialisation.
    Linear and embedding weights and position embeddings get sd 0.02 (timm, GPT-2); the patch
    embedding sd 1/√fan_in (LeCun, as the ViT paper): at 0.02 its tokens would start a hundred times
    smaller than its pixels, and a small ViT then sits at chance for hundreds of steps. Draws come
    from ``generator`` in module order, so the same seed gives the same network on every device."""
    for name, parameter in model.named_parameters():
        if name.endswith("pos_embed"):
            _trunc_normal(parameter, INIT_STD, generator)
    for module in model.modules():
        if isinstance(module, (nn.Linear, nn.Embedding)):
            _trunc_normal(module.weight, INIT_STD, generator)
        elif isinstance(module, nn.Conv2d):
            _trunc_normal(module.weight, module.weight[0].numel() ** -0.5, generator)
        else:
            continue
        if getattr(module, "bias", None) is not None:
            nn.init.zeros_(module.bias)
    return model


def _trunc_normal(tensor: torch.Tensor, std: float, generator: torch.Generator) -> None:
    nn.init.trunc_normal_(tensor, std=std, a=-2 * std, b=2 * std, generator=generator)
