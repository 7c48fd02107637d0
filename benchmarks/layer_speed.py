"""Forward+backward time of compiled seed layers against their hand-written references.

Prints one table: for each seed, in its layout (image NCHW or tokens NLC), the median time of ours and
of the reference and their ratio (ours / reference), eager and, with ``--compile``, both sides under
``torch.compile`` (``--compile-backend``, inductor by default). Issue target on CPU eager: ratio <= 1.2.
The references: timm's EvoNorms and torch's BatchNorm2d + ReLU for the image seeds; torch's LayerNorm
and RMSNorm, and DyT and Derf written here from their papers, for the token seeds.

    python benchmarks/layer_speed.py [--shape 64 64 32 32] [--tokens 64 197 384] [--repeats 20]
        [--compile] [--compile-backend inductor] [--layers dyt derf ...] [--device cuda]
"""

from __future__ import annotations

import argparse
import functools
import statistics
import time
from collections.abc import Callable

import torch
from timm.layers import EvoNorm2dB0, EvoNorm2dS0
from torch import nn

from evosearch import build_layer, seed_graph
from primitives import Layout


class DynamicTanh(nn.Module):
    """DyT (Zhu et al., "Transformers without Normalization", 2025): ``weight * tanh(alpha * x) + bias``
    over the last dim, ``alpha`` one learnable scalar (init 0.5)."""

    def __init__(self, num_features: int, alpha: float = 0.5) -> None:
        super().__init__()
        self.alpha = nn.Parameter(torch.full((1,), alpha))
        self.weight = nn.Parameter(torch.ones(num_features))
        self.bias = nn.Parameter(torch.zeros(num_features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.weight * torch.tanh(self.alpha * x) + self.bias


class DynamicErf(nn.Module):
    """Derf (Chen et al., "Stronger Normalization-Free Transformers", 2025): ``weight * erf(alpha * x +
    shift) + bias`` over the last dim, ``alpha`` and ``shift`` learnable scalars (init 0.5 and 0)."""

    def __init__(self, num_features: int, alpha: float = 0.5, shift: float = 0.0) -> None:
        super().__init__()
        self.alpha = nn.Parameter(torch.full((1,), alpha))
        self.shift = nn.Parameter(torch.full((1,), shift))
        self.weight = nn.Parameter(torch.ones(num_features))
        self.bias = nn.Parameter(torch.zeros(num_features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.weight * torch.erf(self.alpha * x + self.shift) + self.bias


# seed -> its reference, built from the number of features; each seed's layout is its graph's.
PAIRS: dict[str, Callable[[int], nn.Module]] = {
    "evonorm_s0": lambda c: EvoNorm2dS0(c),
    "evonorm_b0": lambda c: EvoNorm2dB0(c),
    "bn_relu": lambda c: nn.Sequential(nn.BatchNorm2d(c), nn.ReLU()),
    "layernorm": nn.LayerNorm,
    "rmsnorm": functools.partial(nn.RMSNorm, eps=1e-6),
    "dyt": DynamicTanh,
    "derf": DynamicErf,
}


def paired_times(ours: nn.Module, reference: nn.Module, x: torch.Tensor, repeats: int) -> tuple[float, float]:
    """Median seconds of one forward+backward of each, run alternately so that load on the
    machine hits both alike (after warm-up; synchronised on GPU)."""
    grad = torch.randn_like(x)
    times: dict[int, list[float]] = {0: [], 1: []}
    for i in range(repeats + 3):
        for k, layer in enumerate((ours, reference)):
            x.grad = None
            if x.is_cuda:
                torch.cuda.synchronize()
            start = time.perf_counter()
            layer(x).backward(grad)
            if x.is_cuda:
                torch.cuda.synchronize()
            if i >= 3:
                times[k].append(time.perf_counter() - start)
    return statistics.median(times[0]), statistics.median(times[1])


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", type=int, nargs=4, default=[64, 64, 32, 32], metavar=("N", "C", "H", "W"))
    parser.add_argument("--tokens", type=int, nargs=3, default=[64, 197, 384], metavar=("N", "L", "C"))
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--compile", action="store_true", help="also time torch.compile'd layers")
    parser.add_argument("--compile-backend", default="inductor", help="torch.compile backend")
    parser.add_argument("--layers", nargs="+", choices=list(PAIRS), default=list(PAIRS), metavar="SEED")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    inputs = {
        layout: torch.randn(*shape, device=args.device, requires_grad=True)
        for layout, shape in ((Layout.IMAGE, args.shape), (Layout.TOKENS, args.tokens))
    }
    modes = ["eager", f"compile {args.compile_backend}"] if args.compile else ["eager"]
    print(
        f"device={args.device} image={tuple(args.shape)} tokens={tuple(args.tokens)} "
        f"threads={torch.get_num_threads()} repeats={args.repeats}"
    )
    print(f"{'layer':12s} {'layout':7s} {'mode':17s} {'ours ms':>9s} {'ref ms':>9s} {'ratio':>7s}")
    for name in args.layers:
        graph = seed_graph(name)
        x = inputs[graph.layout]
        c = x.shape[graph.layout.channel_dim]
        for mode in modes:
            ours = build_layer(graph, c).to(args.device)
            reference = PAIRS[name](c).to(args.device)
            if mode != "eager":
                ours, reference = (torch.compile(m, backend=args.compile_backend) for m in (ours, reference))
            t_ours, t_ref = paired_times(ours, reference, x, args.repeats)
            print(
                f"{name:12s} {graph.layout.value:7s} {mode:17s} {t_ours * 1e3:9.2f} {t_ref * 1e3:9.2f} "
                f"{t_ours / t_ref:7.2f}"
            )


if __name__ == "__main__":
    main()
