"""What fills a normalization that no activation follows: the last norm of a residual branch, a
projection shortcut, MobileNet's linear bottleneck output.

The searched layers replace a normalization *together with* its activation, so these positions need a
rule of their own. The proxy networks (:class:`~evosearch.tasks.models.ModelConfig`) and
:func:`~evosearch.layers.swap.swap_norm_act` share one vocabulary:

- ``"affine"``: a per-channel affine, :class:`ChannelAffine` — EvoNorm's convention (its reference
  code applies only γx + β there, leaving the normalization of the branch to the layers before it);
- ``"layer"``: the searched layer itself;
- ``"batchnorm"``: a BatchNorm2d — in a swapped model, the model's own BatchNorm left as it was.

Earlier versions said ``"candidate"`` for ``"layer"`` (proxy networks) and ``"keep"`` for
``"batchnorm"`` (swap). Task files and run directories written then still load; what is written now
uses today's words only.
"""

from __future__ import annotations

import typing
from typing import Literal

import torch
from torch import nn

from evosearch.errors import brief
from evosearch.layers.create import LayerFactory

NormWithoutAct = Literal["affine", "layer", "batchnorm"]
NORMS_WITHOUT_ACT: tuple[NormWithoutAct, ...] = typing.get_args(NormWithoutAct)
OLD_SPELLINGS: dict[str, NormWithoutAct] = {"candidate": "layer", "keep": "batchnorm"}


class ChannelAffine(nn.Module):
    """γ·x + β per channel of an N×C×… tensor (γ = 1, β = 0 at init): a BatchNorm without the
    normalization, EvoNorm's norm with the non-linearity off. The parameters are cast to the input's
    dtype, so that under autocast the output stays in the input's precision."""

    def __init__(self, num_features: int) -> None:
        super().__init__()
        self.num_features = num_features
        self.weight = nn.Parameter(torch.ones(num_features))
        self.bias = nn.Parameter(torch.zeros(num_features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = (1, -1) + (1,) * (x.ndim - 2)
        return x * self.weight.to(x.dtype).view(shape) + self.bias.to(x.dtype).view(shape)

    def extra_repr(self) -> str:
        return str(self.num_features)


def parse_norm_without_act(value: str) -> NormWithoutAct:
    """``value`` in today's vocabulary, an old spelling translated; a ValueError names the choices."""
    value = OLD_SPELLINGS.get(value, value)
    if value not in NORMS_WITHOUT_ACT:
        choices = ", ".join(NORMS_WITHOUT_ACT)
        raise ValueError(f"norm_without_act must be one of {choices}, not {brief(value)}")
    return value


def norm_without_act_factory(kind: NormWithoutAct, layer: LayerFactory) -> LayerFactory:
    """The constructor ``num_features -> module`` for ``kind``; ``layer`` is the searched layer's."""
    factories: dict[NormWithoutAct, LayerFactory] = {
        "affine": ChannelAffine,
        "layer": layer,
        "batchnorm": nn.BatchNorm2d,
    }
    return factories[kind]
