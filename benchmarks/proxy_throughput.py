"""Training throughput of proxy networks with compiled seed layers against hand-written references.

Trains each task's network through the real training loop (:func:`evosearch.tasks.train.train_network`:
augmentation, the optimizer, bf16 and channels_last on CUDA) once with each seed in every slot and once
with its reference. Image tasks (default ``generated_resnet``): the compiled ``evonorm_s0`` seed against
timm's ``EvoNorm2dS0`` and ``bn_relu`` against ``nn.BatchNorm2d`` + ``nn.ReLU`` (norms without
activation: EvoNorm's affine for the first pair, BatchNorm2d for the second). Token tasks
(``generated_vit``, ``generated_gpt``): ``layernorm``, ``rmsnorm``, ``dyt`` and ``derf`` against torch's
LayerNorm and RMSNorm and the DyT and Derf of ``layer_speed.py``, and every layer also against torch's
LayerNorm, the transformers' usual norm. A task's runs take turns, ``--repeats`` times, so that load on
the machine hits all alike; its table has the median images/s (tokens/s for the GPT) and time ratios,
all measured in this one run. Issue targets: ours / reference <= 1.25 eager; with ``--compile``
(``torch.compile``) on GPU, <= 1.0.

    python benchmarks/proxy_throughput.py [--task NAME ...] [--steps 40] [--repeats 3] [--compile]
        [--set key=value ...] [--threads N]

On a CPU that other work shares, ``--threads 1`` keeps the figures steady: torch's threads wait on each
other when a core is taken, and a run can take many times as long.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import statistics
from collections.abc import Sequence

import torch
from layer_speed import DynamicErf, DynamicTanh  # a sibling benchmark: this script's folder is on sys.path
from timm.layers import EvoNorm2dS0
from torch import nn

from evosearch.errors import EvosearchError, one_line
from evosearch.layers.create import LayerFactory, layer_factory
from evosearch.tasks.datasets import load_dataset
from evosearch.tasks.specs import load_task
from evosearch.tasks.text import TextData
from evosearch.tasks.train import DeviceData, DeviceText, TaskConfig, resolve_device, train_network
from evosearch.text import table
from primitives import Layout
from primitives.functional import resolve_groups

TASKS = ["generated_resnet", "generated_vit", "generated_gpt"]
TOKEN_BASELINE = "layernorm"  # the token pair whose reference, torch's LayerNorm, every layer is set against


def timm_evonorm_s0(num_features: int) -> nn.Module:
    """timm's layer with the group count our layer resolves to (timm asserts that it divides C)."""
    return EvoNorm2dS0(num_features, groups=resolve_groups(num_features, 32))


def bn_relu(num_features: int) -> nn.Module:
    return nn.Sequential(nn.BatchNorm2d(num_features), nn.ReLU())


# Image tasks: seed -> (our slot, the reference slot, the norm without activation both use).
PAIRS: dict[str, tuple[LayerFactory, LayerFactory, str]] = {
    "evonorm_s0": (layer_factory("evonorm_s0", Layout.IMAGE), timm_evonorm_s0, "affine"),
    "bn_relu": (layer_factory("bn_relu", Layout.IMAGE), bn_relu, "batchnorm"),
}
# Token tasks: seed -> (our slot, the reference slot); the transformers' slots are all norms.
TOKEN_PAIRS: dict[str, tuple[LayerFactory, LayerFactory]] = {
    "layernorm": (layer_factory("layernorm", Layout.TOKENS), nn.LayerNorm),
    "rmsnorm": (layer_factory("rmsnorm", Layout.TOKENS), functools.partial(nn.RMSNorm, eps=1e-6)),
    "dyt": (layer_factory("dyt", Layout.TOKENS), DynamicTanh),
    "derf": (layer_factory("derf", Layout.TOKENS), DynamicErf),
}

Run = tuple[LayerFactory, TaskConfig]  # a slot and the task it trains in


def median_rates(runs: Sequence[Run], data: DeviceData | DeviceText, repeats: int) -> list[float]:
    """Median training samples/s (images, or sequences for the GPT) of each run, the runs taking turns
    ``repeats`` times, so that load on the machine hits all alike."""
    rates: list[list[float]] = [[] for _ in runs]
    for _ in range(repeats):
        for slot_rates, (slot, task) in zip(rates, runs, strict=True):
            result = train_network(slot, task, data)
            if result.exit_reason != "completed":
                raise SystemExit(f"a run failed: {result.exit_reason} {result.error}")
            slot_rates.append(result.images_per_s)
    return [statistics.median(r) for r in rates]


def pair_runs(task: TaskConfig) -> dict[str, tuple[Run, Run]]:
    """The task's pairs, by seed: (ours, reference), each in the task it trains in."""
    if task.model.layout is Layout.TOKENS:
        return {name: ((ours, task), (ref, task)) for name, (ours, ref) in TOKEN_PAIRS.items()}
    pairs = {}
    for name, (ours, ref, norm_without_act) in PAIRS.items():
        model = dataclasses.replace(task.model, norm_without_act=norm_without_act)
        pair_task = dataclasses.replace(task, model=model)
        pairs[name] = ((ours, pair_task), (ref, pair_task))
    return pairs


def device_data(task: TaskConfig) -> DeviceData | DeviceText:
    """The task's dataset, once, on the device its runs train on."""
    data = load_dataset(task.dataset)
    device = resolve_device(task.train.device)
    if isinstance(data, TextData):
        return DeviceText.from_text(data, device)
    return DeviceData.from_images(data, device)


def describe(task: TaskConfig, data: DeviceData | DeviceText, repeats: int) -> str:
    size = f"context={data.context}" if isinstance(data, DeviceText) else f"image_size={data.image_size}"
    return (
        f"task={task.name} arch={task.model.arch} {size} batch={task.train.batch_size} "
        f"steps={task.train.steps} repeats={repeats} device={data.device} threads={torch.get_num_threads()} "
        f"compile={task.train.compile}"
    )


def task_table(task: TaskConfig, repeats: int) -> tuple[str, str]:
    """The task's header line and table: per seed the median rate of ours and of the reference, the
    time ratio ours / reference and, in a token task, ours / torch's LayerNorm."""
    data = device_data(task)
    pairs = pair_runs(task)
    rates = median_rates([run for pair in pairs.values() for run in pair], data, repeats)
    ours_rates = dict(zip(pairs, rates[::2], strict=True))
    ref_rates = dict(zip(pairs, rates[1::2], strict=True))
    baseline = ref_rates.get(TOKEN_BASELINE)  # none in an image task
    unit, per_sample = ("tok/s", data.context) if isinstance(data, DeviceText) else ("img/s", 1)
    rows = []
    for name, ours in ours_rates.items():
        ref = ref_rates[name]
        row = {
            "layer": name,
            f"ours {unit}": round(ours * per_sample),
            f"ref {unit}": round(ref * per_sample),
            "time ours/ref": round(ref / ours, 2),
        }
        if baseline is not None:
            row["time ours/LayerNorm"] = round(baseline / ours, 2)
        rows.append(row)
    return describe(task, data, repeats), table(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", nargs="+", default=TASKS, help="task names or .yaml files")
    parser.add_argument("--steps", type=int, default=40, help="training steps a run (the first is not timed)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--compile", action="store_true", help="torch.compile the network")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    fixed = [f"train.steps={args.steps}", "train.hurdle_step=null", "train.time_limit_s=null"]
    for name in args.task:
        try:
            task = load_task(name, [*args.overrides, *fixed, f"train.compile={str(args.compile).lower()}"])
            header, rows = task_table(task, args.repeats)
        except EvosearchError as e:  # a bad task name, override or dataset: one line, no traceback
            raise SystemExit(f"proxy_throughput: {one_line(e)}") from None
        print(header, rows, "", sep="\n", flush=True)


if __name__ == "__main__":
    main()
