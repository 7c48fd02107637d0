"""Proxy training: every architecture trains, determinism on CPU, the early exits (non-finite loss,
quality hurdle, time limit, errors), the schedule, augmentation, task files and the ``train`` command."""

from __future__ import annotations

import itertools
import json
import math
import re

import pytest
import torch
from helpers import tiny_task
from torch import nn

from evosearch.cli import main
from evosearch.config import ConfigError
from evosearch.layers.create import resolve_source
from evosearch.layers.seeds import seed_graph
from evosearch.tasks.datasets import ImageData, load_dataset
from evosearch.tasks.specs import DEFAULT_TASK, TASKS_DIR, load_task, task_names
from evosearch.tasks.train import (
    DEVICE_FAULTS,
    DeviceData,
    TrainConfig,
    crop_flip,
    learning_rate,
    parameter_groups,
    train_candidate,
    train_network,
)


@pytest.fixture(scope="module")
def data() -> DeviceData:
    return DeviceData.from_images(load_dataset(tiny_task().dataset), "cpu")


@pytest.mark.parametrize("arch", ["cifar_resnet", "resnet50", "mobilenet_v2", "efficientnet_b0"])
@pytest.mark.parametrize("seed", ["bn_relu", "evonorm_b0", "evonorm_s0"])
def test_every_architecture_trains_with_the_seeds(arch, seed, data):
    result = train_candidate(seed_graph(seed), tiny_task(arch, steps=3, log_every=1), data)
    assert result.exit_reason == "completed", result.error
    assert result.steps == 3 and [s for s, _ in result.loss_curve] == [1, 2, 3]
    assert all(math.isfinite(loss) for _, loss in result.loss_curve)
    assert 0.0 <= result.top1 <= 1.0 and result.top5 is None  # 10 classes: no top-5
    assert result.parameters > 0 and result.images_per_s > 0 and result.device == "cpu"


def test_same_seed_same_loss_curve_to_the_bit(data):
    task = tiny_task(steps=8)
    graph = seed_graph("evonorm_b0")
    first, second = (train_candidate(graph, task, data) for _ in range(2))
    assert first.loss_curve == second.loss_curve and first.top1 == second.top1
    other = train_candidate(graph, tiny_task(steps=8, seed=1), data)
    assert other.loss_curve != first.loss_curve


def test_the_global_generator_is_left_alone(data):
    torch.manual_seed(123)
    before = torch.get_rng_state()
    train_candidate(seed_graph("bn_relu"), tiny_task(steps=2), data)
    assert torch.equal(torch.get_rng_state(), before)


def test_generated_dataset_is_deterministic():
    config = tiny_task().dataset
    a, b = load_dataset(config), load_dataset(config)
    assert torch.equal(a.train_images, b.train_images) and torch.equal(a.val_labels, b.val_labels)


def test_non_finite_loss_stops_at_once(data):
    result = train_candidate(resolve_source("x / (x - x)"), tiny_task(steps=20, log_every=10), data)
    assert result.exit_reason == "non_finite_loss"
    assert result.steps == 1 and result.top1 is None and result.final_loss is None


def test_quality_hurdle_rejects_a_layer_that_erases_its_input(data):
    """``x - x`` leaves only the classifier's bias: chance accuracy, below the hurdle."""
    task = tiny_task(steps=20, hurdle_step=4, hurdle_accuracy=0.3)
    result = train_candidate(resolve_source("x - x"), task, data)
    assert result.exit_reason == "quality_hurdle" and result.steps == 4
    assert result.hurdle_top1 < 0.3 and result.top1 is None
    passed = train_candidate(
        seed_graph("bn_relu"), tiny_task(steps=5, hurdle_step=4, hurdle_accuracy=0.0), data
    )
    assert passed.exit_reason == "completed" and passed.hurdle_top1 is not None and passed.steps == 5


def test_time_limit_stops_and_still_evaluates(data):
    result = train_candidate(seed_graph("bn_relu"), tiny_task(steps=1000, time_limit_s=0.0), data)
    assert result.exit_reason == "time_limit" and result.steps == 1
    assert result.top1 is not None and len(result.loss_curve) == 1


class _Exploding(nn.Module):
    def __init__(self, num_features: int) -> None:
        super().__init__()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        raise RuntimeError("this layer always fails")


def test_a_crashing_layer_is_a_record_not_an_exception(data):
    result = train_network(_Exploding, tiny_task(), data, label="exploding")
    assert result.exit_reason == "error" and "this layer always fails" in result.error
    assert result.steps == 0 and result.layer == "exploding" and result.images_per_s is None
    json.dumps(result.to_json(), allow_nan=False)


class _DeviceFault(nn.Module):
    """Fails as a GPU does after an illegal memory access or when it has no memory left."""

    fault: type[Exception] = torch.AcceleratorError

    def __init__(self, num_features: int) -> None:
        super().__init__()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        raise self.fault("CUDA error: an illegal memory access was encountered")


@pytest.mark.parametrize("fault", DEVICE_FAULTS)
def test_a_device_fault_is_raised_for_a_retry_not_recorded_against_the_candidate(data, fault):
    layer = type("Faulty", (_DeviceFault,), {"fault": fault})
    with pytest.raises(fault):
        train_network(layer, tiny_task(), data)


def test_an_injected_device_fault_is_raised_at_its_step_and_must_be_a_step_of_the_run(data):
    with pytest.raises(torch.AcceleratorError, match="injected device fault at step 3"):
        train_candidate(seed_graph("bn_relu"), tiny_task(inject_device_fault_at_step=3), data)
    steps = load_task(DEFAULT_TASK).train.steps
    message = f"inject_device_fault_at_step must be a step from 1 to {steps}"
    for step in (0, steps + 1):  # a fault outside the run would never fire
        with pytest.raises(ConfigError, match=message):
            load_task(DEFAULT_TASK, [f"train.inject_device_fault_at_step={step}"])


def test_a_task_error_is_raised(data):
    with pytest.raises(ConfigError, match="batch_size"):
        train_candidate(seed_graph("bn_relu"), tiny_task(batch_size=1024), data)


@pytest.mark.parametrize("batch_size", [8, 128])
def test_small_and_large_batches(batch_size, data):
    result = train_candidate(seed_graph("evonorm_b0"), tiny_task(steps=2, batch_size=batch_size), data)
    assert result.exit_reason == "completed"


def test_top5_where_there_are_more_than_ten_classes():
    generator = torch.Generator().manual_seed(0)

    def images(n: int) -> torch.Tensor:
        return torch.randint(0, 256, (n, 3, 16, 16), dtype=torch.uint8, generator=generator)

    labels = torch.arange(64) % 12
    data = ImageData("noise", images(64), labels, images(64), labels, tuple(str(i) for i in range(12)))
    result = train_candidate(seed_graph("bn_relu"), tiny_task(steps=2), data)
    assert result.top5 is not None and result.top5 >= result.top1


def test_record_is_plain_json(data):
    record = train_candidate(seed_graph("bn_relu"), tiny_task(hurdle_step=2), data).to_json()
    assert json.loads(json.dumps(record, allow_nan=False)) == record
    assert set(record) >= {"top1", "top5", "final_loss", "loss_curve", "steps", "images_per_s", "wall_s"}
    assert {"device", "exit_reason"} <= set(record)


def test_learning_rate_warms_up_then_decays_to_zero():
    config = TrainConfig(steps=100, warmup_steps=10, lr=0.1, lr_batch_size=128, batch_size=64)
    rates = [learning_rate(step, config) for step in range(100)]
    assert rates[0] == pytest.approx(0.005) and rates[9] == pytest.approx(0.05)  # peak 0.1 · 64 / 128
    assert max(rates) == pytest.approx(0.05) and rates[-1] < 1e-4
    assert all(a >= b for a, b in itertools.pairwise(rates[9:]))


def test_no_weight_decay_on_vectors():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Linear(4, 2))
    decay, no_decay = parameter_groups(model, 5e-4)
    assert decay["weight_decay"] == 5e-4 and no_decay["weight_decay"] == 0.0
    assert {p.ndim for p in decay["params"]} == {2, 4} and len(no_decay["params"]) == 4


def test_crop_flip_matches_a_per_image_reference():
    generator = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (5, 3, 6, 7), dtype=torch.uint8, generator=generator)
    offsets = torch.randint(0, 5, (5, 2), generator=generator)
    flips = torch.tensor([True, False, True, False, False])
    out = crop_flip(images, offsets, flips, padding=2)
    padded = nn.functional.pad(images, (2, 2, 2, 2))
    for n in range(5):
        (r, c) = offsets[n].tolist()
        expected = padded[n, :, r : r + 6, c : c + 7]
        assert torch.equal(out[n], expected.flip(-1) if flips[n] else expected)
    assert out.is_contiguous(memory_format=torch.channels_last)


def test_shipped_tasks_load():
    names = task_names()
    assert {"generated_resnet", "generated_mobilenet", "cifar10_resnet20", "cifar10_mobilenet_v2"} <= set(
        names
    )
    assert {f"imagenet32_{arch}" for arch in ("resnet50", "mobilenet_v2", "efficientnet_b0")} <= set(names)
    for name in names:
        task = load_task(name)
        assert task.name == name and task.train.hurdle_step is not None


def test_task_overrides_and_files(tmp_path):
    task = load_task(DEFAULT_TASK, ["train.steps=50", "model.depth=14", "dataset.train_size=1000"])
    assert (task.train.steps, task.model.depth, task.dataset.train_size) == (50, 14, 1000)
    path = tmp_path / "mine.yaml"
    path.write_text((TASKS_DIR / f"{DEFAULT_TASK}.yaml").read_text())
    assert load_task(str(path)).name == "mine"
    with pytest.raises(ConfigError, match="unknown task"):
        load_task("no_such_task")
    with pytest.raises(ConfigError, match="valid keys of train"):
        load_task(DEFAULT_TASK, ["train.stepz=5"])
    with pytest.raises(ConfigError, match="hurdle_step"):
        load_task(DEFAULT_TASK, ["train.hurdle_step=0"])


def test_default_task_learns_bn_relu():
    """The CLI's default task is above chance (10%) by a wide margin with BN-ReLU."""
    result = train_candidate(seed_graph("bn_relu"), load_task(DEFAULT_TASK))
    assert result.exit_reason == "completed" and result.top1 > 0.4


def test_train_command(capsys):
    overrides = ["train.steps=4", "train.hurdle_step=2", "train.hurdle_accuracy=0", "dataset.train_size=200"]
    args = ["train", "evonorm_s0", "--json", *(x for o in overrides for x in ("--set", o))]
    assert main(args) == 0
    record = json.loads(capsys.readouterr().out)
    assert record["layer"] == "evonorm_s0" and record["task"] == DEFAULT_TASK and record["steps"] == 4
    assert main(["train", "bn_relu", *(x for o in overrides for x in ("--set", o))]) == 0
    text = capsys.readouterr().out
    assert re.search(r"^exit_reason: +completed$", text, re.M) and re.search(r"^loss_curve: +1:", text, re.M)
    assert main(["train", "bn_relu", "--task", "no_such_task"]) == 1


def test_train_command_reports_a_device_fault_in_one_line(capsys):
    overrides = ["train.steps=2", "dataset.train_size=128", "train.inject_device_fault_at_step=1"]
    assert main(["train", "bn_relu", *(x for o in overrides for x in ("--set", o))]) == 1
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("evosearch: error: device fault while training on cpu: injected device fault")
