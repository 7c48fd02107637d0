"""Proxy training: one candidate layer, one task, a short run, one :class:`TrainResult`.

Built to run thousands of times in worker processes. The whole dataset sits on the device as uint8;
batches are drawn, padded-and-cropped, flipped and normalized there, so the host does no per-image
work. SGD with Nesterov momentum (or AdamW, the transformers' setting), linear warmup then cosine
decay, no weight decay on normalization parameters (every vector: the slots' parameters and the
biases), label smoothing. A GPT trains on byte-level text (:class:`DeviceText`) by the same loop:
batches are random sequences of the train split, the loss is next-token cross-entropy at every
position, and the score next-token accuracy on the validation split. On CUDA the forward
runs under bf16 autocast in channels_last, optionally ``torch.compile``'d; on CPU the same code runs in
float32.

A run stops early, with the reason recorded, on a non-finite loss, on EvoNorm's quality hurdle (below
``hurdle_accuracy`` on a validation slice after ``hurdle_step`` steps) or at the wall-clock limit (then
it still evaluates). :func:`train_candidate` never raises for a bad candidate: a layer that fails to
compile or crashes in forward or backward gives a record with ``exit_reason`` ``"error"``. A device
fault (:data:`DEVICE_FAULTS`: a CUDA error, the GPU out of memory) does raise: it is not the
candidate's doing, a CUDA error leaves the process's device unusable, and with fractional GPUs the
memory may have gone to a neighbour, so the search retries the evaluation in a new worker process.

Determinism: the run happens inside a :func:`torch.random.fork_rng` scope after
``torch.manual_seed(seed)``, so the caller's global generator state is left as it was; the weights
come from :func:`~evosearch.tasks.models.kaiming_init` and data order and augmentation from CPU
:class:`torch.Generator` objects of the same seed, so a seed gives the same network and batches on
every device and, on CPU, the same loss curve to the bit.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from evosearch.config import ConfigError, to_dict
from evosearch.errors import EvosearchError, brief, one_line
from evosearch.layers.create import LayerFactory, LayerSource, create_layer, source_label
from evosearch.outcomes import ExitReason
from evosearch.tasks.datasets import TEXT_DATASETS, DatasetConfig, ImageData, load_dataset
from evosearch.tasks.models import ModelConfig, build_network, slot_layer
from evosearch.tasks.text import VOCAB_SIZE, TextData

DEVICE_FAULTS: tuple[type[Exception], ...] = (torch.AcceleratorError, torch.OutOfMemoryError)
TOP5_MIN_CLASSES = 11  # top-5 accuracy is reported where there are more than 10 classes


@dataclass
class TrainConfig:
    """How a candidate is trained.

    ``lr`` is the peak learning rate for a batch of ``lr_batch_size`` images; the run's peak is
    ``lr · batch_size / lr_batch_size`` (the linear scaling rule), so a task keeps its meaning when only
    ``batch_size`` changes, e.g. to 8 where batch-dependent layers fail. ``warmup_steps`` ramp it up
    linearly from zero; a cosine takes it to zero at ``steps``. ``hurdle_step``: after this step the
    run is evaluated on the first ``hurdle_val_size`` validation images and stops below
    ``hurdle_accuracy`` (EvoNorm: 20% on CIFAR-10 after 100 steps); a shorter run has no hurdle.
    ``device``: ``auto`` is CUDA where available, else CPU. ``bf16`` (autocast) and ``channels_last``
    apply on CUDA only. ``log_every``: the loss curve holds the mean loss of every such window of
    steps; the loss is checked for non-finite values (one device sync) at the end of each window and
    after the first step. ``inject_device_fault_at_step``: raise a device fault
    (``torch.AcceleratorError``, what a CUDA error raises) at that step instead of training it, on
    every attempt: to check on any machine that a search retries a faulted evaluation in new worker
    processes and then records it as ``device_error`` (the tests, a GPU check); off by default.
    ``optimizer``: ``sgd`` (with ``momentum`` and ``nesterov``) or ``adamw`` (with ``betas``, the
    transformer tasks' setting); weight decay is decoupled in AdamW, on the same parameters.
    """

    steps: int = 1000
    batch_size: int = 128
    lr: float = 0.1
    lr_batch_size: int = 128
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 5e-4
    warmup_steps: int = 0
    label_smoothing: float = 0.1
    crop_padding: int = 4
    flip: bool = True
    hurdle_step: int | None = None
    hurdle_accuracy: float = 0.0
    hurdle_val_size: int | None = 1000
    time_limit_s: float | None = None
    seed: int = 0
    device: str = "auto"
    bf16: bool = True
    channels_last: bool = True
    compile: bool = False
    eval_batch_size: int = 500
    log_every: int = 10
    inject_device_fault_at_step: int | None = None
    optimizer: Literal["sgd", "adamw"] = "sgd"
    betas: tuple[float, ...] = (0.9, 0.999)

    def __post_init__(self) -> None:
        for key in ("steps", "batch_size", "lr_batch_size", "eval_batch_size", "log_every"):
            if getattr(self, key) < 1:
                raise ValueError(f"{key} must be at least 1, got {getattr(self, key)}")
        if self.warmup_steps < 0 or self.crop_padding < 0:
            raise ValueError("warmup_steps and crop_padding must not be negative")
        if self.hurdle_step is not None and self.hurdle_step < 1:
            raise ValueError(f"hurdle_step must be at least 1, got {self.hurdle_step}")
        fault = self.inject_device_fault_at_step
        if fault is not None and not 1 <= fault <= self.steps:
            raise ValueError(
                f"inject_device_fault_at_step must be a step from 1 to {self.steps}, got {fault}"
            )
        self._check_ranges()
        if self.device != "auto":
            try:
                torch.device(self.device)  # a malformed name fails here, as a config error
            except RuntimeError:
                raise ValueError(
                    f"device must be auto, cpu, cuda or cuda:N, got {brief(self.device)}"
                ) from None

    def _check_ranges(self) -> None:
        """The float settings: finite (a NaN would train nothing and still exit 0) and in range."""
        ranges = {
            "lr": (0.0, math.inf),
            "weight_decay": (0.0, math.inf),
            "momentum": (0.0, 1.0),
            "label_smoothing": (0.0, 1.0),
            "hurdle_accuracy": (0.0, 1.0),
        }
        for key, (low, high) in ranges.items():
            value = getattr(self, key)
            if not low <= value <= high or math.isinf(value):
                raise ValueError(f"{key} must be finite and in [{low:g}, {high:g}], got {value}")
        if len(self.betas) != 2 or not all(0 <= beta < 1 for beta in self.betas):
            raise ValueError(f"betas must be two numbers in [0, 1), got {list(self.betas)}")
        if self.time_limit_s is not None and not 0 <= self.time_limit_s < math.inf:
            raise ValueError(f"time_limit_s must be >= 0 and finite (null: none), got {self.time_limit_s}")


@dataclass
class TaskConfig:
    """A proxy task: a dataset, a network around the candidate, and how to train it."""

    name: str = ""
    dataset: DatasetConfig = field(default_factory=DatasetConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def __post_init__(self) -> None:
        text = self.dataset.name in TEXT_DATASETS
        if text != (self.model.arch == "gpt"):
            raise ValueError(
                f"model.arch {self.model.arch} cannot train on dataset {self.dataset.name}: the gpt "
                f"trains on text ({', '.join(sorted(TEXT_DATASETS))}), every other network on images"
            )

    def at_fidelity(self, steps: float, seed_offset: int = 0) -> TaskConfig:
        """This task trained for the fraction ``steps`` of its steps, with the seed ``train.seed +
        seed_offset``: a rung of the search's funnel. The schedule keeps its shape (the warm-up scales
        with the steps); the quality hurdle stays at its step, where a layer that learns is known to
        be above it, so a run that ends before it has none (a layer slow to start is judged by the
        accuracy it ends with, not failed by a hurdle moved earlier)."""
        train = self.train
        total = max(1, round(steps * train.steps))
        hurdle = train.hurdle_step
        fault = train.inject_device_fault_at_step
        scaled = dataclasses.replace(
            train,
            steps=total,
            warmup_steps=round(steps * train.warmup_steps),
            hurdle_step=hurdle if hurdle is not None and hurdle < total else None,
            seed=train.seed + seed_offset,
            inject_device_fault_at_step=None if fault is None else min(fault, total),
        )
        return dataclasses.replace(self, train=scaled)


@dataclass
class TrainResult:
    """One training run, as plain data. Accuracies are fractions in [0, 1]; ``top1``/``top5`` are on
    the whole validation split (``top5`` only where there are more than 10 classes), measured when the
    run completed or hit the time limit; ``hurdle_top1`` on the hurdle's slice. ``loss_curve`` holds
    ``[step, mean training loss of the window ending there]`` pairs; ``final_loss`` is the last window's.
    ``images_per_s`` counts training steps after the first (which pays for compilation), evaluations
    excluded; ``wall_s`` is the whole call."""

    task: str
    layer: str
    exit_reason: ExitReason
    steps: int
    top1: float | None
    top5: float | None
    hurdle_top1: float | None
    final_loss: float | None
    loss_curve: list[list[float]]
    images_per_s: float | None
    wall_s: float
    device: str
    seed: int
    parameters: int
    error: str | None = None

    def to_json(self) -> dict[str, Any]:
        return to_dict(self)


@dataclass(frozen=True)
class DeviceData:
    """A dataset resident on one device: uint8 images, labels, and the normalization constants. Made
    once per worker and passed to every run, it saves moving the dataset for each candidate."""

    train_images: torch.Tensor
    train_labels: torch.Tensor
    val_images: torch.Tensor
    val_labels: torch.Tensor
    mean: torch.Tensor  # 1×3×1×1, float32, on the 0..255 scale
    std: torch.Tensor
    num_classes: int

    @classmethod
    def from_images(cls, data: ImageData, device: torch.device | str) -> DeviceData:
        def move(t: torch.Tensor) -> torch.Tensor:
            return t.to(device)

        def constant(values: tuple[float, ...]) -> torch.Tensor:
            return torch.tensor(values, dtype=torch.float32, device=device).view(1, -1, 1, 1) * 255

        return cls(
            move(data.train_images),
            move(data.train_labels),
            move(data.val_images),
            move(data.val_labels),
            constant(data.mean),
            constant(data.std),
            data.num_classes,
        )

    @property
    def device(self) -> torch.device:
        return self.train_images.device

    @property
    def image_size(self) -> int:
        return self.train_images.shape[-1]


@dataclass(frozen=True)
class DeviceText:
    """Byte-level text resident on one device: the train bytes (uint8), from which each batch cuts
    random sequences, and the validation split cut once into consecutive sequences of ``context + 1``
    tokens (int64), the first ``context`` the input, each one's next token the target."""

    train_tokens: torch.Tensor
    val_sequences: torch.Tensor
    context: int

    @classmethod
    def from_text(cls, data: TextData, device: torch.device | str) -> DeviceText:
        count = (len(data.val_tokens) - 1) // data.context
        index = torch.arange(count)[:, None] * data.context + torch.arange(data.context + 1)
        return cls(data.train_tokens.to(device), data.val_tokens.long()[index].to(device), data.context)

    @property
    def device(self) -> torch.device:
        return self.train_tokens.device

    @property
    def num_classes(self) -> int:
        """The classes of a next-token prediction: the byte vocabulary."""
        return VOCAB_SIZE


# What the training functions take: a dataset as loaded, or already resident on a device.
TaskData = ImageData | DeviceData | TextData | DeviceText


def resolve_device(name: str) -> torch.device:
    """``auto``: CUDA where available, else CPU; a CUDA device always with its index."""
    device = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if name == "auto" else name)
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if device.index is None and count:
            return torch.device("cuda", torch.cuda.current_device())
        if not count or (device.index or 0) >= count:
            raise EvosearchError(f"train.device is {device}, but this machine has {count} CUDA device(s)")
    return device


def train_candidate(layer: LayerSource, task: TaskConfig, data: TaskData | None = None) -> TrainResult:
    """Train ``task``'s network with ``layer`` in every slot; ``layer`` is a SOURCE (a seed name, a
    formula, a graph file, a ``LayerGraph`` or a module class), read in the layout of the network's
    slots. Never raises for a bad candidate (see the module docstring); a SOURCE that names nothing
    or names a layer of the other layout, a bad task, a missing dataset or a device fault raises."""
    # Resolved here, where a bad SOURCE raises; built per slot inside the run, where a failure is a record.
    resolved = slot_layer(task.model, layer)
    return train_network(functools.partial(create_layer, resolved), task, data, label=source_label(layer))


def train_network(
    norm_act: LayerFactory, task: TaskConfig, data: TaskData | None = None, label: str = ""
) -> TrainResult:
    """:func:`train_candidate` for any slot factory, e.g. a hand-written reference layer."""
    start = time.perf_counter()
    config = task.train
    device = resolve_device(config.device)
    data = _on_device(data if data is not None else load_dataset(task.dataset), device)
    run = _TextRun(config, data, start) if isinstance(data, DeviceText) else _Run(config, data, start)
    run.check_model(task.model)
    parameters = 0
    try:
        with torch.random.fork_rng(devices=[device.index] if device.type == "cuda" else []):
            torch.manual_seed(config.seed)
            model = run.build_model(task.model, norm_act)
            parameters = sum(p.numel() for p in model.parameters())
            run.fit(model.to(device, memory_format=_memory_format(config, device)))
    except DEVICE_FAULTS:
        raise
    except Exception as e:  # a candidate may fail in any way; the record says how
        run.exit_reason = ExitReason.ERROR
        run.error = f"{type(e).__name__}: {one_line(e)}"[:2000]
    return run.result(task.name, label, parameters, _device_label(device))


def learning_rate(step: int, config: TrainConfig) -> float:
    """The learning rate of (0-based) ``step``: linear warmup to the scaled peak, then cosine to zero."""
    peak = config.lr * config.batch_size / config.lr_batch_size
    if step < config.warmup_steps:
        return peak * (step + 1) / config.warmup_steps
    progress = (step - config.warmup_steps) / max(1, config.steps - config.warmup_steps)
    return peak * 0.5 * (1 + math.cos(math.pi * progress))


def make_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    """The optimizer ``config`` names over :func:`parameter_groups`, at the first step's rate."""
    groups = parameter_groups(model, config.weight_decay)
    lr = learning_rate(0, config)
    if config.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=lr, betas=tuple(config.betas))
    return torch.optim.SGD(groups, lr=lr, momentum=config.momentum, nesterov=config.nesterov)


def parameter_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Weight decay on the conv and linear weights only: every vector (the slots' per-channel
    parameters, biases) goes without, as normalization parameters usually do."""
    params = [p for p in model.parameters() if p.requires_grad]
    return [
        {"params": [p for p in params if p.ndim > 1], "weight_decay": weight_decay},
        {"params": [p for p in params if p.ndim <= 1], "weight_decay": 0.0},
    ]


def crop_flip(images: torch.Tensor, offsets: torch.Tensor, flips: torch.Tensor, padding: int) -> torch.Tensor:
    """Random-crop with zero padding and horizontal flip of a uint8 N×C×H×W batch in one gather:
    image n is the window at ``offsets[n]`` (row, column) of the padded image, mirrored where
    ``flips[n]``. The result is N×C×H×W in channels_last memory order."""
    n, _, h, w = images.shape
    padded = F.pad(images, (padding,) * 4).permute(0, 2, 3, 1)  # N×(H+2p)×(W+2p)×C
    rows = offsets[:, :1] + torch.arange(h, device=images.device)
    columns = torch.arange(w, device=images.device)
    columns = torch.where(flips[:, None], w - 1 - columns, columns) + offsets[:, 1:]
    batch = torch.arange(n, device=images.device)[:, None, None]
    return padded[batch, rows[:, :, None], columns[:, None, :]].permute(0, 3, 1, 2)


# ---- the run ------------------------------------------------------------------------------------


class _Run:
    """One training run's state: filled in as the loop goes, so that an error still leaves a record.
    This one trains on images; :class:`_TextRun` changes what a batch is and how the network is built."""

    data: DeviceData | DeviceText

    def __init__(self, config: TrainConfig, data: DeviceData | DeviceText, start: float) -> None:
        self.config = config
        self.data = data
        self.start = start
        self.deadline = math.inf if config.time_limit_s is None else start + config.time_limit_s
        self.autocast = config.bf16 and data.device.type == "cuda"
        self.memory_format = _memory_format(config, data.device)
        self.generator = torch.Generator().manual_seed(config.seed)
        self.steps = 0
        self.window: list[torch.Tensor] = []
        self.curve: list[list[float]] = []
        self.exit_reason = ExitReason.COMPLETED
        self.error: str | None = None
        self.top1: float | None = None
        self.top5: float | None = None
        self.hurdle_top1: float | None = None
        self.timed_from: float | None = None  # after step 1, once synchronized
        self.timed_seconds = 0.0
        self.eval_seconds = 0.0

    def check_model(self, model: ModelConfig) -> None:
        """A :class:`ConfigError` where the task cannot run on this data, before any candidate fails."""
        train_images = len(self.data.train_labels)
        if self.config.batch_size > train_images:
            raise ConfigError(
                f"train.batch_size {self.config.batch_size} exceeds the {train_images} train images"
            )
        if model.arch == "vit" and self.data.image_size % model.patch_size:
            raise ConfigError(
                f"model.patch_size {model.patch_size} does not divide the image size {self.data.image_size}"
            )

    def build_model(self, model: ModelConfig, norm_act: LayerFactory) -> nn.Module:
        data = self.data
        return build_network(model, norm_act, data.num_classes, data.image_size, self.config.seed)

    @property
    def val_count(self) -> int:
        return len(self.data.val_labels)

    def fit(self, model: nn.Module) -> None:
        config = self.config
        optimizer = make_optimizer(model, config)
        if config.compile:
            # Every candidate recompiles the network's shared forward code; past dynamo's recompile
            # limit (8) it would silently run eager, so a worker starts each compiled run afresh.
            torch.compiler.reset()
        forward = torch.compile(model) if config.compile else model
        model.train()
        batches = self._batches()
        for step in range(1, config.steps + 1):
            for group in optimizer.param_groups:
                group["lr"] = learning_rate(step - 1, config)
            if step == config.inject_device_fault_at_step:
                raise torch.AcceleratorError(
                    f"injected device fault at step {step} (train.inject_device_fault_at_step)"
                )
            images, labels = self._train_batch(next(batches))
            self.window.append(self._step(forward, optimizer, images, labels))
            self.steps = step
            out_of_time = time.perf_counter() > self.deadline
            checkpoint = step in (1, config.steps, config.hurdle_step) or step % config.log_every == 0
            if (checkpoint or out_of_time) and not self._check_window():
                return
            if step == config.hurdle_step and not self._pass_hurdle(model):
                return
            if out_of_time:
                self.exit_reason = ExitReason.TIME_LIMIT
                break
        self.top1, self.top5 = self._evaluate(model, self.val_count)

    def _step(
        self, forward: nn.Module, optimizer: torch.optim.Optimizer, images: torch.Tensor, labels: torch.Tensor
    ) -> torch.Tensor:
        with torch.autocast(self.data.device.type, dtype=torch.bfloat16, enabled=self.autocast):
            logits = forward(images)
        # Flattened, a sequence's positions are examples too: (N, L, V) logits of (N, L) targets.
        loss = F.cross_entropy(
            logits.float().flatten(0, -2), labels.flatten(), label_smoothing=self.config.label_smoothing
        )
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return loss.detach()

    def _batches(self) -> Iterator[torch.Tensor]:
        """Batches of train indices: a fresh permutation each epoch, the incomplete last batch dropped."""
        count, size = len(self.data.train_labels), self.config.batch_size
        while True:
            order = torch.randperm(count, generator=self.generator)
            for begin in range(0, count - size + 1, size):
                yield order[begin : begin + size]

    def _train_batch(self, index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        config, data = self.config, self.data
        index = index.to(data.device)
        images = data.train_images[index]
        if config.crop_padding or config.flip:
            offsets = torch.randint(0, 2 * config.crop_padding + 1, (len(index), 2), generator=self.generator)
            flips = (
                torch.rand(len(index), generator=self.generator) < 0.5
                if config.flip
                else torch.zeros(len(index), dtype=torch.bool)
            )
            images = crop_flip(images, offsets.to(data.device), flips.to(data.device), config.crop_padding)
        return self._normalize(images), data.train_labels[index]

    def _normalize(self, images: torch.Tensor) -> torch.Tensor:
        x = (images.float() - self.data.mean) / self.data.std
        return x.contiguous(memory_format=self.memory_format)

    def _check_window(self) -> bool:
        """Record the window's mean loss; False (and the exit reason) if a loss in it is not finite."""
        losses = torch.stack(self.window).float().cpu()
        self.window.clear()
        now = time.perf_counter()
        if self.timed_from is None:
            self.timed_from = now
        self.timed_seconds = now - self.timed_from - self.eval_seconds
        finite = torch.isfinite(losses)
        if not finite.all():
            self.steps += 1 - len(losses) + int(finite.int().argmin())  # the first step with a bad loss
            self.exit_reason = ExitReason.NON_FINITE_LOSS
            return False
        self.curve.append([self.steps, losses.mean().item()])
        return True

    def _pass_hurdle(self, model: nn.Module) -> bool:
        size = self.config.hurdle_val_size or self.val_count
        self.hurdle_top1, _ = self._evaluate(model, min(size, self.val_count))
        if self.hurdle_top1 < self.config.hurdle_accuracy:
            self.exit_reason = ExitReason.QUALITY_HURDLE
            return False
        return True

    def _val_batch(self, begin: int, end: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self._normalize(self.data.val_images[begin:end]), self.data.val_labels[begin:end]

    @torch.no_grad()
    def _evaluate(self, model: nn.Module, count: int) -> tuple[float, float | None]:
        """Top-1 and top-5 accuracy on the first ``count`` validation examples (every position of a
        sequence is one), in eval mode (running statistics), with the eager module (a compiled one
        would recompile for the last batch)."""
        began = time.perf_counter()
        model.eval()
        k = min(5, self.data.num_classes)
        correct = torch.zeros(2, dtype=torch.int64, device=self.data.device)
        targets = 0
        for begin in range(0, count, self.config.eval_batch_size):
            inputs, labels = self._val_batch(begin, min(count, begin + self.config.eval_batch_size))
            with torch.autocast(self.data.device.type, dtype=torch.bfloat16, enabled=self.autocast):
                logits = model(inputs)
            hits = logits.float().flatten(0, -2).topk(k).indices == labels.reshape(-1, 1)
            correct += torch.stack([hits[:, 0].sum(), hits.any(1).sum()])
            targets += labels.numel()
        model.train()
        top1, top5 = (n / targets for n in correct.tolist())
        self.eval_seconds += time.perf_counter() - began
        return top1, top5 if self.data.num_classes >= TOP5_MIN_CLASSES else None

    def result(self, task: str, layer: str, parameters: int, device: str) -> TrainResult:
        timed_steps = self.steps - 1 if self.exit_reason is not ExitReason.ERROR else 0
        throughput = (
            timed_steps * self.config.batch_size / self.timed_seconds
            if timed_steps > 0 and self.timed_seconds > 0
            else None
        )
        return TrainResult(
            task=task,
            layer=layer,
            exit_reason=self.exit_reason,
            steps=self.steps,
            top1=self.top1,
            top5=self.top5,
            hurdle_top1=self.hurdle_top1,
            final_loss=self.curve[-1][1] if self.curve else None,
            loss_curve=self.curve,
            images_per_s=throughput,
            wall_s=time.perf_counter() - self.start,
            device=device,
            seed=self.config.seed,
            parameters=parameters,
            error=self.error,
        )


class _TextRun(_Run):
    """A GPT's run on text: a batch is ``batch_size`` sequences of ``context + 1`` bytes cut at random
    offsets of the train split (input and its next tokens), the score next-token accuracy over every
    position of the validation sequences; no augmentation."""

    data: DeviceText

    def check_model(self, model: ModelConfig) -> None:
        """Nothing to check: the text was checked to hold a sequence when it was read."""

    def build_model(self, model: ModelConfig, norm_act: LayerFactory) -> nn.Module:
        data = self.data
        return build_network(model, norm_act, data.num_classes, seed=self.config.seed, context=data.context)

    @property
    def val_count(self) -> int:
        return len(self.data.val_sequences)

    def _batches(self) -> Iterator[torch.Tensor]:
        """Start offsets of the train sequences, uniform over the split."""
        last_start = len(self.data.train_tokens) - self.data.context - 1
        while True:
            yield torch.randint(0, last_start + 1, (self.config.batch_size,), generator=self.generator)

    def _train_batch(self, starts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        data = self.data
        index = starts[:, None] + torch.arange(data.context + 1)
        sequences = data.train_tokens[index.to(data.device)].long()
        return sequences[:, :-1], sequences[:, 1:]

    def _val_batch(self, begin: int, end: int) -> tuple[torch.Tensor, torch.Tensor]:
        sequences = self.data.val_sequences[begin:end]
        return sequences[:, :-1], sequences[:, 1:]


def _on_device(data: TaskData, device: torch.device) -> DeviceData | DeviceText:
    if isinstance(data, ImageData):
        return DeviceData.from_images(data, device)
    if isinstance(data, TextData):
        return DeviceText.from_text(data, device)
    if data.device == device:
        return data
    tensors = {f.name: getattr(data, f.name) for f in dataclasses.fields(data)}
    return dataclasses.replace(
        data, **{name: value.to(device) for name, value in tensors.items() if isinstance(value, torch.Tensor)}
    )


def _memory_format(config: TrainConfig, device: torch.device) -> torch.memory_format:
    return torch.channels_last if config.channels_last and device.type == "cuda" else torch.contiguous_format


def _device_label(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{device} {torch.cuda.get_device_name(device)}"
    return device.type
