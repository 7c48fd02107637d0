"""The built-in ``generated`` dataset: a procedural 10-class image task that needs no download.

Each class is a shape or a texture (disc, ring, square, triangle, cross, three stripe orientations,
checkerboard, dot grid) at a random position, size, rotation, frequency and phase. Every image then
gets its own foreground and background colours, contrast, brightness, colour shift and pixel noise, so
that per-image and per-channel statistics vary a lot between samples: normalization matters, as it
does on natural images. Generation is vectorised torch code driven by one ``torch.Generator``: the same
arguments give the same bytes on every machine, and a few thousand 32×32 images take about a second.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class _Frame:
    """Pixel coordinates of a set of images: ``x``, ``y`` centred on each image's pattern; ``u``, ``v``
    the same rotated by its angle and in units of its radius; plus the texture parameters."""

    x: torch.Tensor
    y: torch.Tensor
    u: torch.Tensor
    v: torch.Tensor
    pixels: torch.Tensor  # pixels per unit of u and v
    freq: torch.Tensor  # texture periods per image width
    phase: torch.Tensor

    def inside(self, distance: torch.Tensor) -> torch.Tensor:
        """Coverage of a shape from its signed distance (in u, v units; negative inside),
        anti-aliased over about one pixel."""
        return torch.sigmoid(-1.5 * distance * self.pixels)

    def wave(self, t: torch.Tensor) -> torch.Tensor:
        """A soft square wave along t (image coordinates, width 2)."""
        return torch.sigmoid(4.0 * torch.sin(math.pi * t * self.freq + self.phase))

    def lattice(self, t: torch.Tensor) -> torch.Tensor:
        """Offset of t from the nearest texture period's centre, in periods (-0.5 to 0.5)."""
        s = t * self.freq / 2 + self.phase / (2 * math.pi)
        return s - torch.floor(s) - 0.5


def _triangle(f: _Frame) -> torch.Tensor:
    return f.inside(torch.maximum(f.v - 0.9, -f.v - 0.6 + 1.5 * f.u.abs()))


def _cross(f: _Frame) -> torch.Tensor:
    a, b = f.u.abs(), f.v.abs()
    return f.inside(torch.minimum(torch.maximum(a - 1, b - 0.3), torch.maximum(a - 0.3, b - 1)))


def _checkerboard(f: _Frame) -> torch.Tensor:
    a, b = f.wave(f.x), f.wave(f.y)
    return a * b + (1 - a) * (1 - b)


def _dots(f: _Frame) -> torch.Tensor:
    distance = torch.sqrt(f.lattice(f.x) ** 2 + f.lattice(f.y) ** 2) - 0.25  # in periods
    return torch.sigmoid(-16.0 * distance)


# One entry per class, in label order: the pattern's coverage in [0, 1] for a frame of images.
# Shapes are rotated; textures are axis-aligned (or diagonal), so that their orientation is the class.
PATTERNS: dict[str, Callable[[_Frame], torch.Tensor]] = {
    "disc": lambda f: f.inside(torch.sqrt(f.u**2 + f.v**2) - 1),
    "ring": lambda f: f.inside((torch.sqrt(f.u**2 + f.v**2) - 0.75).abs() - 0.22),
    "square": lambda f: f.inside(torch.maximum(f.u.abs(), f.v.abs()) - 0.8),
    "triangle": _triangle,
    "cross": _cross,
    "horizontal_stripes": lambda f: f.wave(f.y),
    "vertical_stripes": lambda f: f.wave(f.x),
    "diagonal_stripes": lambda f: f.wave((f.x + f.y) * math.sqrt(0.5)),
    "checkerboard": _checkerboard,
    "dots": _dots,
}


def generate_images(
    count: int, seed: int, size: int = 32, num_classes: int = 10
) -> tuple[torch.Tensor, torch.Tensor]:
    """``count`` images (uint8, N×3×size×size) and their labels (int64), balanced over the classes."""
    if not 1 <= num_classes <= len(PATTERNS):
        raise ValueError(f"num_classes must be in 1..{len(PATTERNS)}, got {num_classes}")
    if count < 0 or size < 4:
        raise ValueError(f"need count >= 0 and size >= 4, got count={count}, size={size}")
    gen = torch.Generator().manual_seed(seed)
    labels = (torch.arange(count) % num_classes)[torch.randperm(count, generator=gen)]
    frame = _random_frame(count, size, gen)
    masks = torch.empty(count, size, size)
    for label, pattern in enumerate(list(PATTERNS.values())[:num_classes]):
        chosen = (labels == label).nonzero().squeeze(1)
        masks[chosen] = pattern(_select(frame, chosen)).float()
    return _render(masks, gen), labels


def _uniform(gen: torch.Generator, count: int, low: float, high: float) -> torch.Tensor:
    """Per-image values, shaped (N, 1, 1) to broadcast over pixels."""
    return (low + (high - low) * torch.rand(count, generator=gen)).view(-1, 1, 1)


def _random_frame(count: int, size: int, gen: torch.Generator) -> _Frame:
    """Random placement and texture parameters for ``count`` images (drawn in a fixed order)."""
    coords = (torch.arange(size, dtype=torch.float32) + 0.5) / size * 2 - 1  # pixel centres in [-1, 1]
    cy, cx = _uniform(gen, count, -0.3, 0.3), _uniform(gen, count, -0.3, 0.3)
    radius = _uniform(gen, count, 0.4, 0.7)
    angle = _uniform(gen, count, 0.0, 2 * math.pi)
    freq = _uniform(gen, count, 2.0, 4.5)
    phase = _uniform(gen, count, 0.0, 2 * math.pi)
    y, x = coords.view(1, -1, 1) - cy, coords.view(1, 1, -1) - cx
    cos, sin = torch.cos(angle), torch.sin(angle)
    u = (x * cos + y * sin) / radius
    v = (y * cos - x * sin) / radius
    return _Frame(x.expand_as(u), y.expand_as(u), u, v, radius * size / 2, freq, phase)


def _select(frame: _Frame, index: torch.Tensor) -> _Frame:
    return _Frame(*(getattr(frame, f.name)[index] for f in dataclasses.fields(frame)))


def _render(masks: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Colour, contrast, brightness, colour shift and noise: the nuisances normalization must remove."""
    n, h, w = masks.shape
    foreground = torch.rand(n, 3, 1, 1, generator=gen)
    background = torch.rand(n, 3, 1, 1, generator=gen)
    image = background + (foreground - background) * masks.unsqueeze(1)
    contrast = torch.exp(torch.randn(n, 1, 1, 1, generator=gen) * 0.5)
    brightness = torch.randn(n, 1, 1, 1, generator=gen) * 0.15
    colour_shift = torch.randn(n, 3, 1, 1, generator=gen) * 0.1
    noise_level = torch.rand(n, 1, 1, 1, generator=gen) * 0.12
    image = (image - 0.5) * contrast + 0.5 + brightness + colour_shift
    image = image + torch.randn(n, 3, h, w, generator=gen) * noise_level
    return (image.clamp(0, 1) * 255).round().to(torch.uint8)
