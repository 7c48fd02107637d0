"""Check, on a machine with one CUDA GPU, what can only be checked there; one table, exit 1 on a failure.

Rows, one a check:

- **seed vs reference**: bn_relu, gn_relu, evonorm_b0 and evonorm_s0 on images, layernorm, rmsnorm, dyt
  and derf on tokens (N, L, C), compiled from their graphs, give the outputs and input gradients of
  torch's and timm's layers (and ``layer_speed.py``'s DyT and Derf) from the same (perturbed)
  parameters, in training mode: in float32 to 1e-4, and under bf16 autocast on bf16 input (what a
  layer sees behind a bf16 convolution or linear layer) to 5e-2, about ten bf16 roundings of values of
  order one.
- **layer speed**: forward+backward time of the seed layers against their references
  (``layer_speed.py``: the image seeds on (64, 64, 32, 32), the token seeds on (64, 197, 384), a
  ViT-S/16's activations), eager and under ``torch.compile`` (inductor); target: ours / reference <= 1.2.
- **proxy training**: images/s of the training loop on 32×32 generated images (ResNet-20, batch 128,
  bf16 autocast, channels_last, ``torch.compile``), the compiled evonorm_s0 seed against timm's
  ``EvoNorm2dS0`` (``proxy_throughput.py``); target: time ratio ours / reference <= 1.0.
- **packed search**: a short search (8 evaluations, one rung: no promotions) with
  ``gpus_per_evaluation: 0.25`` and ``concurrency: 4``, so four trainings share the one GPU; from the
  run's records: every evaluation completed on the same device, each in a worker process of its own,
  and how many trainings ran at once, timed by their workers (target: 4).
- **device fault**: a training whose every attempt raises a device fault
  (``train.inject_device_fault_at_step``: the ``torch.AcceleratorError`` a CUDA error raises, at step 1,
  after the network is on the GPU) submitted as the driver submits trainings, with ``retries: 1``: it
  must come back as ``device_error`` after two attempts, each seen running in a worker process of its
  own (the GPU path starts one per call, ``max_calls=1``, because a CUDA error leaves a process's device
  unusable).
- **wall time**: the whole check, target 8 minutes on one GPU (most of it is inductor compiling).

Ray is a local instance on 127.0.0.1 with no dashboard, started once for the last two checks. Stdout
holds the table alone; progress, and what Ray prints, go to stderr.

    python benchmarks/gpu_check.py [--json]          # on a machine with a CUDA GPU
    python benchmarks/gpu_check.py --dry-run [--json]

``--dry-run`` runs the same checks on CPU at toy sizes, so that the script is known to work before a GPU
is at hand (a test runs it, well under 90 s on 2 cores): bf16 autocast is CPU autocast; ``torch.compile``
of single layers uses the ``aot_eager`` backend (Dynamo capture and AOTAutograd, no C++ compiler: inductor
would take minutes); the proxy training runs eager in float32 (bf16, channels_last and compile are the
training loop's CUDA settings); Ray gets one logical GPU, so the search packs four evaluations (four in
all, one round) on it and the GPU path's one-process-per-call handling runs, while the trainings
themselves run on CPU. Speeds and times measured at toy sizes on a busy CPU mean nothing: the dry run
shows them as info, judged against no target.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import itertools
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import ray
import timm
import torch
from layer_speed import PAIRS as LAYER_PAIRS  # sibling benchmarks: this script's folder is on sys.path
from layer_speed import paired_times
from proxy_throughput import PAIRS as PROXY_PAIRS
from proxy_throughput import median_rates
from torch import nn

from evosearch import build_layer, seed_graph
from evosearch.config import from_dict
from evosearch.errors import one_line
from evosearch.layers.graph_io import graph_to_dict
from evosearch.runner.driver import run_search
from evosearch.runner.progress import Progress
from evosearch.runner.ray_cluster import start_ray
from evosearch.runner.run_config import RunConfig, load_tasks
from evosearch.runner.run_directory import CandidateRecord, RunDirectory
from evosearch.runner.workers import pack_data, submit_training, training_result
from evosearch.tasks.datasets import load_dataset
from evosearch.tasks.specs import load_task
from evosearch.tasks.train import DeviceData
from evosearch.text import table
from primitives import Layout

# Seeds and their torch / timm references: layer_speed's pairs and GroupNorm + ReLU.
SEED_REFERENCES: dict[str, Callable[[int], nn.Module]] = {
    **LAYER_PAIRS,
    "gn_relu": lambda c: nn.Sequential(nn.GroupNorm(32, c), nn.ReLU()),
}
TOLERANCES = {torch.float32: 1e-4, torch.bfloat16: 5e-2}  # rtol and atol
LAYER_SPEED_TARGET = 1.2  # ours / reference, forward+backward (layer_speed.py)
PROXY_TARGET = 1.0  # time ratio ours / reference, compiled on GPU (proxy_throughput.py)
PROXY_PAIR = "evonorm_s0"
FAULT_RETRIES = 1
TRAINING_TITLE = b"ray::train_on_task"  # Ray's process title while a worker runs a training


@dataclass(frozen=True)
class Plan:
    """Sizes and settings of one way of running the check: on the GPU, or the dry run on CPU."""

    name: str
    device: str
    layer_shape: tuple[int, int, int, int]  # N, C, H, W of the image seeds' and layer-speed input
    token_shape: tuple[int, int, int]  # N, L, C of the token seeds'
    repeats: int
    compile_backend: str
    proxy_task: list[str]  # overrides of the generated_resnet task
    search_task: dict[str, Any]
    resources: dict[str, Any]
    evaluations: int
    time_target_s: float
    judge_speed: bool  # speeds and times at toy size on a busy CPU are shown, not judged

    def input_shape(self, layout: Layout) -> tuple[int, ...]:
        """The shape of a seed's input in its layout."""
        return self.token_shape if layout is Layout.TOKENS else self.layer_shape


GPU = Plan(
    name="gpu",
    device="cuda",
    layer_shape=(64, 64, 32, 32),
    token_shape=(64, 197, 384),  # a ViT-S/16's activations at 224×224
    repeats=20,
    compile_backend="inductor",
    proxy_task=[
        "dataset.image_size=32",
        "model.depth=20",
        "train.batch_size=128",
        "train.steps=200",
        "train.compile=true",
        "train.bf16=true",
        "train.channels_last=true",
    ],
    # Trainings of seconds, long beside the spread of their worker processes' start-up, so that four
    # are seen training at once.
    search_task={"dataset.image_size": 32, "train.steps": 1000, "train.batch_size": 128},
    resources={"num_gpus": 1, "gpus_per_evaluation": 0.25, "cpus_per_evaluation": 1, "concurrency": 4},
    evaluations=8,
    time_target_s=480.0,
    judge_speed=True,
)
DRY_RUN = Plan(
    name="dry run",
    device="cpu",
    layer_shape=(8, 64, 8, 8),
    token_shape=(8, 16, 64),
    repeats=3,
    compile_backend="aot_eager",
    proxy_task=[
        "dataset.image_size=32",
        "dataset.train_size=64",
        "dataset.val_size=32",
        "train.batch_size=16",
        "train.steps=4",
        "train.log_every=2",
        "train.device=cpu",
    ],
    search_task={
        "dataset.train_size": 128,
        "dataset.val_size": 64,
        "train.steps": 30,
        "train.log_every": 10,
        "train.device": "cpu",
    },
    resources={
        "num_cpus": 2,
        "num_gpus": 1,  # logical: Ray schedules by it, the trainings run on CPU
        "gpus_per_evaluation": 0.25,
        "cpus_per_evaluation": 0.5,
        "cpus_per_probe": 0.5,
        "concurrency": 4,
    },
    evaluations=4,  # one round of four at once: each is a new process, seconds on a busy CPU
    time_target_s=90.0,
    judge_speed=False,
)
EVERY_STEP = ["train.hurdle_step=null", "train.time_limit_s=null"]  # no early stop, as proxy_throughput.py


@dataclass
class Row:
    check: str
    setting: str
    value: str
    target: str
    verdict: str  # ok, FAIL, or info (measured, judged against nothing)


@dataclass
class Report:
    header: dict[str, str]
    rows: list[Row] = field(default_factory=list)

    @property
    def failed(self) -> bool:
        return any(row.verdict == "FAIL" for row in self.rows)


def log(message: str) -> None:
    """Progress on stderr: stdout holds the table alone."""
    print(f"gpu_check: {message}", file=sys.stderr, flush=True)


def verdict(passed: bool) -> str:
    return "ok" if passed else "FAIL"


def speed_verdict(plan: Plan, measured: float, limit: float) -> str:
    return verdict(measured <= limit) if plan.judge_speed else "info"


# ---- seeds against their references ---------------------------------------------------------------


@torch.no_grad()
def perturb(module: nn.Module, generator: torch.Generator) -> None:
    """Move the parameters off their initial values, so that a swapped or ignored one shows."""
    for p in module.parameters():
        p.add_(0.3 * torch.randn(p.shape, generator=generator).to(p.device))


def load_matching_state(ours: nn.Module, reference: nn.Module) -> None:
    """Load the reference's state into ours, each of our names from the one reference name that is it
    or ends with it (``weight`` from ``0.weight`` of an ``nn.Sequential(norm, act)``)."""
    state = reference.state_dict()
    matches = {}
    for name in ours.state_dict():
        found = [k for k in state if k == name or k.endswith("." + name)]
        if len(found) != 1:
            raise ValueError(f"{name}: the reference has {found or 'no such state'}")
        matches[name] = state[found[0]]
    ours.load_state_dict(matches)


def outputs_and_input_grad(
    layer: nn.Module, x: torch.Tensor, grad: torch.Tensor, dtype: torch.dtype
) -> tuple[torch.Tensor, torch.Tensor]:
    x = x.detach().to(dtype).requires_grad_()
    with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=dtype == torch.bfloat16):
        out = layer(x)
    out.backward(grad.to(out.dtype))
    return out.detach().float(), x.grad.float()


def compare_seed(seed: str, plan: Plan, dtype: torch.dtype) -> Row:
    graph = seed_graph(seed)
    shape = plan.input_shape(graph.layout)
    c = shape[graph.layout.channel_dim]
    generator = torch.Generator().manual_seed(0)
    reference = SEED_REFERENCES[seed](c)
    perturb(reference, generator)
    ours = build_layer(graph, c)
    load_matching_state(ours, reference)
    x = torch.randn(shape, generator=generator).to(plan.device)
    grad = torch.randn(x.shape, generator=generator).to(plan.device)
    mine, theirs = (
        outputs_and_input_grad(layer.to(plan.device).train(), x, grad, dtype) for layer in (ours, reference)
    )
    tolerance = TOLERANCES[dtype]
    errors = [(a - b).abs().max().item() for a, b in zip(mine, theirs, strict=True)]
    passed = all(
        torch.allclose(a, b, rtol=tolerance, atol=tolerance) for a, b in zip(mine, theirs, strict=True)
    )
    precision = "float32" if dtype == torch.float32 else "bf16 autocast"
    return Row(
        "seed vs reference",
        f"{seed} {precision}",
        f"max |diff| out {errors[0]:.1e}, input grad {errors[1]:.1e}",
        f"rtol = atol = {tolerance:g}",
        verdict(passed),
    )


def check_seeds(plan: Plan) -> Iterator[Row]:
    for seed in SEED_REFERENCES:
        for dtype in TOLERANCES:
            yield compare_seed(seed, plan, dtype)


# ---- speed -----------------------------------------------------------------------------------------


def check_layer_speed(plan: Plan) -> Iterator[Row]:
    inputs = {
        layout: torch.randn(plan.input_shape(layout), device=plan.device, requires_grad=True)
        for layout in Layout
    }
    for name, make_reference in LAYER_PAIRS.items():
        graph = seed_graph(name)
        x = inputs[graph.layout]
        c = x.shape[graph.layout.channel_dim]
        for mode in ("eager", f"compile {plan.compile_backend}"):
            ours = build_layer(graph, c).to(plan.device)
            reference = make_reference(c).to(plan.device)
            if mode != "eager":
                torch.compiler.reset()  # each pair compiles from scratch, as a search's worker does
                ours, reference = (torch.compile(m, backend=plan.compile_backend) for m in (ours, reference))
            t_ours, t_ref = paired_times(ours, reference, x, plan.repeats)
            ratio = t_ours / t_ref
            yield Row(
                "layer speed",
                f"{name} {mode}",
                f"{t_ours * 1e3:.3f} / {t_ref * 1e3:.3f} ms = {ratio:.2f}",
                f"ours / ref <= {LAYER_SPEED_TARGET}",
                speed_verdict(plan, ratio, LAYER_SPEED_TARGET),
            )


def check_proxy_throughput(plan: Plan) -> Iterator[Row]:
    task = load_task("generated_resnet", [*plan.proxy_task, *EVERY_STEP])
    ours, reference, norm_without_act = PROXY_PAIRS[PROXY_PAIR]
    model = dataclasses.replace(task.model, norm_without_act=norm_without_act)
    task = dataclasses.replace(task, model=model)
    data = DeviceData.from_images(load_dataset(task.dataset), plan.device)
    ours_rate, ref_rate = median_rates([(ours, task), (reference, task)], data, repeats=1)
    train = task.train
    cuda_settings = (
        f"bf16={train.bf16} channels_last={train.channels_last} compile={train.compile}"
        if plan.device == "cuda"
        else "float32 eager"
    )
    yield Row(
        "proxy training",
        f"{PROXY_PAIR} {data.image_size}x{data.image_size} batch {train.batch_size} {cuda_settings}",
        f"{ours_rate:.0f} vs {ref_rate:.0f} img/s, time ratio {ref_rate / ours_rate:.2f}",
        f"time ratio <= {PROXY_TARGET}",
        speed_verdict(plan, ref_rate / ours_rate, PROXY_TARGET),
    )


# ---- Ray: a packed search, a device fault ----------------------------------------------------------


def search_config(plan: Plan, output_dir: str) -> RunConfig:
    return from_dict(
        RunConfig,
        {
            "name": "packed",
            "output_dir": output_dir,
            # One rung (single fidelity): every evaluation trains the task's steps once, and none is
            # promoted, so the search's length is known; packing is the same at every rung.
            "search": {
                "max_evaluations": plan.evaluations,
                "fidelity": {"rungs": [{"steps": 1.0, "seeds": 1}]},
            },
            "tasks": [{"task": "generated_resnet", "set": {**plan.search_task, "train.hurdle_step": None}}],
            "resources": plan.resources,
        },
    )


def most_at_once(intervals: list[tuple[float, float]]) -> tuple[int, float]:
    """The largest number of the (start, end) intervals that overlap at one time, and for how long in
    all that many did."""
    events = sorted([(start, 1) for start, _ in intervals] + [(end, -1) for _, end in intervals])
    running, durations = 0, {0: 0.0}
    for (time_now, change), (time_next, _) in itertools.pairwise(events):
        running += change  # at a tie an end sorts first: touching intervals do not overlap
        durations[running] = durations.get(running, 0.0) + time_next - time_now
    most = max(durations)
    return most, durations[most]


def training_interval(record: CandidateRecord) -> tuple[float, float]:
    """When the candidate's (one) training ran, on the wall clock: its worker's own duration, ending
    when the driver recorded it. Not the time from submission: that counts waiting in Ray's queue, so
    four submitted would look packed even if the GPU ran them one at a time."""
    return record.finished_at - record.tasks[0]["wall_s"], record.finished_at


def check_packed_search(config: RunConfig) -> Iterator[Row]:
    summary = run_search(config, progress=Progress(enabled=False))
    trained = [r for r in RunDirectory(summary.run_dir).read_events() if r.tasks]
    results = [t for r in trained for t in r.tasks]
    completed = sum(t.get("exit_reason") == "completed" for t in results)
    processes = {t["worker"]["pid"] for t in results if "worker" in t}
    devices = {t.get("device") for t in results}
    at_once, for_s = most_at_once([training_interval(r) for r in trained])
    resources, evaluations = config.resources, config.search.max_evaluations
    passed = (
        len(results) >= evaluations
        and completed == len(results)
        and len(processes) == len(results)
        and len(devices) == 1
        and at_once >= resources.concurrency
    )
    yield Row(
        "packed search",
        f"{resources.concurrency} x {resources.gpus_per_evaluation:g} GPU, {evaluations} evals",
        f"{completed}/{len(results)} completed on {', '.join(map(str, sorted(devices, key=str)))} in "
        f"{len(processes)} processes, {at_once} at once (for {for_s:.1f} s), "
        f"{summary.stats.elapsed_s:.0f} s",
        f"all completed, own processes, {resources.concurrency} at once",
        verdict(passed),
    )


def descendants(root: int) -> list[int]:
    """Every process below ``root``: Ray's workers are children of the raylet this process started."""
    parents = {}
    for entry in Path("/proc").iterdir():
        try:
            stat = (entry / "stat").read_text() if entry.name.isdigit() else ""
        except OSError:  # exited meanwhile
            continue
        if stat:
            parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])  # comm may hold spaces
    found, frontier = [], [root]
    while frontier:
        children = [pid for pid, parent in parents.items() if parent in frontier]
        found += children
        frontier = children
    return found


def training_processes() -> set[int]:
    pids = set()
    for pid in descendants(os.getpid()):
        try:
            if Path(f"/proc/{pid}/cmdline").read_bytes().startswith(TRAINING_TITLE):
                pids.add(pid)
        except OSError:
            continue
    return pids


def check_device_fault(config: RunConfig) -> Iterator[Row]:
    task = load_tasks(config)[0][0]  # the search's task, two steps, faulting at the first
    task = dataclasses.replace(
        task, train=dataclasses.replace(task.train, steps=2, inject_device_fault_at_step=1)
    )
    resources = dataclasses.replace(config.resources, retries=FAULT_RETRIES)
    data_ref = ray.put(pack_data(load_dataset(task.dataset)))
    earlier = training_processes()  # the search's last workers may still be exiting
    ref = submit_training(graph_to_dict(seed_graph("bn_relu")), task, data_ref, resources)
    log("device fault: Ray prints each attempt's injected fault on stderr; expected")
    attempts: set[int] = set()  # each attempt's process lives seconds (start-up, CUDA) before it faults
    while not ray.wait([ref], timeout=0.05)[0]:
        attempts |= training_processes() - earlier
    exit_reason = training_result(ref)["exit_reason"].split(":")[0]
    expected = 1 + FAULT_RETRIES
    yield Row(
        "device fault",
        f"fault at step 1, retries={FAULT_RETRIES}, {resources.gpus_per_evaluation:g} GPU",
        f"{exit_reason} after attempts in {len(attempts)} processes",
        f"device_error, {expected} processes",
        verdict(exit_reason == "device_error" and len(attempts) == expected),
    )


def check_ray(plan: Plan) -> Iterator[Row]:
    with tempfile.TemporaryDirectory() as output_dir:
        config = search_config(plan, output_dir)
        start_ray(config)  # once for both checks: the search joins it
        try:
            yield from guarded("packed search", check_packed_search, config)
            yield from guarded("device fault", check_device_fault, config)
        finally:
            ray.shutdown()


# ---- the table -------------------------------------------------------------------------------------


def guarded(name: str, check: Callable[[Any], Iterator[Row]], argument: Any) -> Iterator[Row]:
    """The check's rows, then, if it raised, a FAIL row saying how: one check's failure ends no other."""
    try:
        yield from check(argument)
    except (Exception, SystemExit) as e:  # SystemExit: proxy_throughput's way to say a run failed
        yield Row(name, "raised", f"{type(e).__name__}: {one_line(e)}"[:200], "no error", "FAIL")


def header(plan: Plan) -> dict[str, str]:
    device = torch.cuda.get_device_name() if plan.device == "cuda" else "CPU (dry run: toy sizes)"
    return {
        "device": device,
        "torch": torch.__version__,
        "cuda": str(torch.version.cuda),
        "timm": timm.__version__,
        "ray": ray.__version__,
        "threads": str(torch.get_num_threads()),
        "ray instance": "local, 127.0.0.1, no dashboard",
    }


def run_checks(plan: Plan) -> Report:
    start = time.perf_counter()
    report = Report(header(plan))
    checks: list[tuple[str, Callable[[Plan], Iterator[Row]]]] = [
        ("seed vs reference", check_seeds),
        ("layer speed", check_layer_speed),
        ("proxy training", check_proxy_throughput),
        ("ray", check_ray),
    ]
    for name, check in checks:
        began = time.perf_counter()
        report.rows += guarded(name, check, plan)
        log(f"{name}: {time.perf_counter() - began:.1f} s")
    elapsed = time.perf_counter() - start
    report.rows.append(
        Row(
            "wall time",
            plan.name,
            f"{elapsed:.0f} s",
            f"<= {plan.time_target_s:.0f} s",
            speed_verdict(plan, elapsed, plan.time_target_s),
        )
    )
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dry-run", action="store_true", help="the same checks on CPU at toy sizes")
    parser.add_argument("--json", action="store_true", help="print the header and rows as JSON")
    args = parser.parse_args()
    if not args.dry_run and not torch.cuda.is_available():
        raise SystemExit("gpu_check: no CUDA device here; --dry-run runs the same checks on CPU at toy sizes")
    # Ray's driver prints its raylet's messages (a retried task's error) on sys.stdout: while the checks
    # run, stdout is stderr, so that stdout holds the table (or JSON) alone.
    with contextlib.redirect_stdout(sys.stderr):
        report = run_checks(DRY_RUN if args.dry_run else GPU)
    if args.json:
        print(json.dumps({"header": report.header, "rows": [vars(row) for row in report.rows]}, indent=2))
    else:
        print("  ".join(f"{key}: {value}" for key, value in report.header.items()))
        print(table([vars(row) for row in report.rows]))
    sys.exit(1 if report.failed else 0)


if __name__ == "__main__":
    main()
