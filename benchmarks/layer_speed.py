"""Forward+backward time of compiled seed layers against their hand-written references.

Prints, for each pair, the median time of both and their ratio (ours / reference), eager and, with
``--compile``, under ``torch.compile``. Issue target on CPU eager: ratio <= 1.2.

    python benchmarks/layer_speed.py [--shape 64 64 32 32] [--repeats 20] [--compile] [--device cuda]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from timm.layers import EvoNorm2dB0, EvoNorm2dS0
from torch import nn

from evosearch import build_layer, seed_graph

PAIRS = {
    "evonorm_s0": lambda c: EvoNorm2dS0(c),
    "evonorm_b0": lambda c: EvoNorm2dB0(c),
    "bn_relu": lambda c: nn.Sequential(nn.BatchNorm2d(c), nn.ReLU()),
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", type=int, nargs=4, default=[64, 64, 32, 32], metavar=("N", "C", "H", "W"))
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--compile", action="store_true", help="also time torch.compile'd layers")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    n, c, h, w = args.shape
    x = torch.randn(n, c, h, w, device=args.device, requires_grad=True)
    modes = ["eager", "compile"] if args.compile else ["eager"]
    threads = torch.get_num_threads()
    print(f"device={args.device} shape={tuple(x.shape)} threads={threads} repeats={args.repeats}")
    print(f"{'layer':12s} {'mode':8s} {'ours ms':>9s} {'ref ms':>9s} {'ratio':>7s}")
    for name, make_reference in PAIRS.items():
        for mode in modes:
            ours = build_layer(seed_graph(name), c).to(args.device)
            reference = make_reference(c).to(args.device)
            if mode == "compile":
                ours, reference = torch.compile(ours), torch.compile(reference)
            t_ours, t_ref = paired_times(ours, reference, x, args.repeats)
            print(f"{name:12s} {mode:8s} {t_ours * 1e3:9.2f} {t_ref * 1e3:9.2f} {t_ours / t_ref:7.2f}")


if __name__ == "__main__":
    main()
