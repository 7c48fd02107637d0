"""Helpers shared by several test modules: tiny tasks and run configs, reading a run's records, and
watching processes. Fixtures live in ``conftest.py``; test modules import these, never each other."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import torch
import yaml

from evosearch.cli import main
from evosearch.config import to_dict
from evosearch.layers.formula import parse_formula
from evosearch.layers.graph import LayerGraph
from evosearch.layers.graph_io import graph_to_dict
from evosearch.layers.seeds import seed_graph
from evosearch.runner.run_config import RunConfig
from evosearch.search.mutation import SearchSpace, mutate, random_graph
from evosearch.tasks.datasets import DatasetConfig
from evosearch.tasks.models import ModelConfig
from evosearch.tasks.train import TaskConfig, TrainConfig
from primitives import Layout

T = TypeVar("T")

TINY_MODEL = {"depth": 8, "width_multiplier": 0.25, "depth_multiplier": 0.25}

# Overrides of the default task that make a search's trainings take a second or two.
TINY_TASK = {
    "train.steps": 6,
    "train.log_every": 3,
    "train.hurdle_step": None,
    "dataset.train_size": 128,
    "dataset.val_size": 64,
    "model.depth": 8,
}


def layer_input(layout: Layout, channels: int, seed: int, size: int = 5) -> torch.Tensor:
    """A small random input in ``layout``: (4, C, size, size) for images, (4, size, C) for tokens."""
    shape = (4, channels, size, size) if layout is Layout.IMAGE else (4, size, channels)
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed))


def tiny_task(arch: str = "cifar_resnet", **train: Any) -> TaskConfig:
    """16×16 generated images, a few hundred of them, a network of one block a stage, a few steps."""
    settings = {"steps": 6, "batch_size": 16, "log_every": 2, "warmup_steps": 2, "crop_padding": 2, **train}
    return TaskConfig(
        name="tiny",
        dataset=DatasetConfig(image_size=16, train_size=256, val_size=64),
        model=ModelConfig(arch=arch, **TINY_MODEL),
        train=TrainConfig(**settings),
    )


def write_config(
    tmp_path: Path,
    name: str,
    *,
    evaluations: int = 5,
    concurrency: int = 2,
    steps: int = 6,
    **sections: Any,
) -> Path:
    """A tiny search's run config, written to ``tmp_path``; its run directory is ``tmp_path/runs/name``.
    ``sections`` set keys of the config's sections (``search={...}``, ``resources={...}``) or replace
    top-level values (``seed=3``)."""
    config: dict[str, Any] = {
        "name": name,
        "output_dir": str(tmp_path / "runs"),
        "seed": 7,
        "search": {
            "population_size": 6,
            "tournament_size": 3,
            "max_evaluations": evaluations,
            "seeds": ["bn_relu", "evonorm_s0", "gn_relu"],
            "seed_mutations": 2,
            "random_graphs": 2,
            # One rung, one seed: what these searches check is not the funnel (tests/test_funnel.py).
            "fidelity": {"rungs": [{"steps": 1.0, "seeds": 1}]},
        },
        "probes": {"resnet_depth": 20},
        "tasks": [{"task": "generated_resnet", "set": {**TINY_TASK, "train.steps": steps}}],
        "resources": {"concurrency": concurrency, "num_cpus": 2},
    }
    for section, value in sections.items():
        config[section] = {**config.get(section, {}), **value} if isinstance(value, dict) else value
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def records(run_dir: Path) -> list[dict]:
    """A run's candidate records, in the order ``events.jsonl`` holds them."""
    return [json.loads(line) for line in (run_dir / "events.jsonl").read_text().splitlines()]


def wait_for(predicate: Callable[[], T], timeout: float, what: str) -> T:
    """The first true value of ``predicate``, polled every 50 ms; fails after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def processes_titled(prefix: str, session: int) -> list[int]:
    """Processes of ``session`` (the driver's, which its Ray processes share) whose title starts with
    ``prefix``: never those of another search running on the machine."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                mine = os.getsid(int(entry.name)) == session
            except OSError:
                continue
            if mine and cmdline.startswith(prefix):
                pids.append(int(entry.name))
    return pids


@contextmanager
def busy_core(loops: int) -> Iterator[None]:
    """Real CPU contention for the calling thread: it and ``loops`` busy-looping processes are pinned
    to one core, so it gets at most a 1 / (loops + 1) share of that core, whatever the machine's size
    or other work. The processes are killed and the thread's affinity restored on exit."""
    allowed = os.sched_getaffinity(0)  # pid 0: the calling thread
    core = {min(allowed)}
    spinners = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(loops)]
    try:
        for spinner in spinners:
            os.sched_setaffinity(spinner.pid, core)
        os.sched_setaffinity(0, core)
        yield
    finally:
        os.sched_setaffinity(0, allowed)
        for spinner in spinners:
            spinner.kill()
            spinner.wait()


def cli_json(capsys, *argv: str) -> Any:
    """The JSON an ``evosearch`` command prints with ``--json``; the command must succeed."""
    code = main([*argv, "--json"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    return json.loads(captured.out)


def cli_error(capsys, *argv: str) -> str:
    """The error of an ``evosearch`` command that must fail with exactly one line on stderr."""
    assert main(list(argv)) == 1
    err = capsys.readouterr().err
    assert err.startswith("evosearch: error: ") and err.count("\n") == 1, err
    return err


def lineage_fingerprint() -> str:
    """Random graphs, their mutations and a seed's mutation, as one string: equal in every process
    that draws them with the same seeds."""
    space = SearchSpace()
    out = []
    for s in range(20):
        g = random_graph(random.Random(s), space)
        child, m = mutate(g, random.Random(s), space)
        out.append((g.structural_hash(), child.structural_hash(), m.detail))
    child, m = mutate(seed_graph("evonorm_b0"), random.Random(7), space)
    return repr((out, child.structural_hash(), m))


def trained_record(id: Any, objectives: list[str], seed: str = "bn_relu", **fields: Any) -> dict[str, Any]:
    """A trained seed layer's record as ``events.jsonl`` holds it, ``fields`` replacing any of its
    values with whatever a file from elsewhere may hold (any type)."""
    graph = seed_graph(seed)
    record = {
        "id": id,
        "status": "trained",
        "origin": "seed",
        "formula": graph.formula(),
        "structural_hash": graph.structural_hash(),
        "graph": graph_to_dict(graph),
        "tasks": [{"task": o, "exit_reason": "completed", "top1": 0.5} for o in objectives],
        "scores": [0.5] * len(objectives),
    }
    return {**record, **fields}


def write_handmade_run(
    root: Path, records: list[dict[str, Any]], objectives: list[str], name: str = "handmade"
) -> Path:
    """A run directory ``root/name`` as one received from elsewhere may hold it, written without Ray:
    a default config, ``tasks.yaml`` naming ``objectives`` (each the tiny task), ``records`` as the
    lines of ``events.jsonl``, no checkpoint."""
    run = root / name
    run.mkdir(parents=True)
    config = {**to_dict(RunConfig()), "name": name, "output_dir": str(root)}
    (run / "config.yaml").write_text(yaml.safe_dump(config))
    entries = [{"name": o, "task": to_dict(tiny_task())} for o in objectives]
    (run / "tasks.yaml").write_text(yaml.safe_dump({"objectives": entries}))
    (run / "events.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    return run


def reparse(graph: LayerGraph) -> LayerGraph:
    """The graph its own formula parses back to, with its parameters, hyperparameters, affine and layout."""
    return parse_formula(
        graph.formula(),
        name=graph.name,
        vectors=graph.vectors,
        scalars=graph.scalars,
        hyperparameters=graph.hyperparameters,
        final_affine=graph.final_affine,
        layout=graph.layout,
    )
