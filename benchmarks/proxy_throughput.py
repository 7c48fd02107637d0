"""Training images/s of a proxy model with compiled seed layers against hand-written references.

Trains the task's network (default ``generated_resnet``) through the real training loop
(:func:`evosearch.tasks.train.train_network`: augmentation, SGD, bf16 and channels_last on CUDA) once with
the compiled ``evonorm_s0`` seed in every slot and once with timm's ``EvoNorm2dS0``; once with the
``bn_relu`` seed and once with ``nn.BatchNorm2d`` + ``nn.ReLU`` (norms without activation: EvoNorm's
affine for the first pair, BatchNorm2d for the second). The runs alternate, ``--repeats`` times, so that
load on the machine hits both alike; the table has the median images/s of each and the time ratio
ours / reference, all measured in this one run. Issue targets: ratio <= 1.25 eager; with
``--compile`` (``torch.compile``) on GPU, <= 1.0.

    python benchmarks/proxy_throughput.py [--task NAME] [--steps 40] [--repeats 3] [--compile]
        [--set key=value ...]
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import statistics

import torch
from timm.layers import EvoNorm2dS0
from torch import nn

from evosearch import build_layer, seed_graph
from evosearch.layers.create import LayerFactory
from evosearch.tasks.datasets import load_dataset
from evosearch.tasks.specs import DEFAULT_TASK, load_task
from evosearch.tasks.train import DeviceData, TaskConfig, resolve_device, train_network
from primitives.functional import resolve_groups


def timm_evonorm_s0(num_features: int) -> nn.Module:
    """timm's layer with the group count our layer resolves to (timm asserts that it divides C)."""
    return EvoNorm2dS0(num_features, groups=resolve_groups(num_features, 32))


def bn_relu(num_features: int) -> nn.Module:
    return nn.Sequential(nn.BatchNorm2d(num_features), nn.ReLU())


# name -> (our slot, the reference slot, the norm without activation both use)
PAIRS: dict[str, tuple[LayerFactory, LayerFactory, str]] = {
    "evonorm_s0": (functools.partial(build_layer, seed_graph("evonorm_s0")), timm_evonorm_s0, "affine"),
    "bn_relu": (functools.partial(build_layer, seed_graph("bn_relu")), bn_relu, "batchnorm"),
}


def paired_throughput(
    ours: LayerFactory, reference: LayerFactory, task: TaskConfig, data: DeviceData, repeats: int
) -> tuple[float, float]:
    """Median training images/s of each, the runs alternating."""
    rates: dict[int, list[float]] = {0: [], 1: []}
    for _ in range(repeats):
        for k, slot in enumerate((ours, reference)):
            result = train_network(slot, task, data)
            if result.exit_reason != "completed":
                raise SystemExit(f"a run failed: {result.exit_reason} {result.error}")
            rates[k].append(result.images_per_s)
    return statistics.median(rates[0]), statistics.median(rates[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default=DEFAULT_TASK, help="task name or .yaml file")
    parser.add_argument("--steps", type=int, default=40, help="training steps a run (the first is not timed)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--compile", action="store_true", help="torch.compile the network")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args()
    fixed = [f"train.steps={args.steps}", "train.hurdle_step=null", "train.time_limit_s=null"]
    task = load_task(args.task, [*args.overrides, *fixed, f"train.compile={str(args.compile).lower()}"])
    device = resolve_device(task.train.device)
    data = DeviceData.from_images(load_dataset(task.dataset), device)
    print(
        f"task={task.name} arch={task.model.arch} image_size={data.image_size} batch={task.train.batch_size} "
        f"steps={args.steps} repeats={args.repeats} device={device} threads={torch.get_num_threads()} "
        f"compile={args.compile}"
    )
    print(f"{'layer':12s} {'ours img/s':>11s} {'ref img/s':>10s} {'time ratio':>11s}")
    for name, (ours, reference, norm_without_act) in PAIRS.items():
        model = dataclasses.replace(task.model, norm_without_act=norm_without_act)
        pair_task = dataclasses.replace(task, model=model)
        ours_rate, ref_rate = paired_throughput(ours, reference, pair_task, data, args.repeats)
        print(f"{name:12s} {ours_rate:11.0f} {ref_rate:10.0f} {ref_rate / ours_rate:11.2f}")


if __name__ == "__main__":
    main()
