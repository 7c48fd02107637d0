"""Search throughput with 1 and 2 workers on this machine.

Prints evaluations per minute for each, the scaling efficiency (rate with 2 / twice the rate with 1;
target >= 0.85), the driver's own time per candidate as a fraction of one evaluation (target <= 1%),
and the fraction of worker time left idle. Both runs evaluate the same candidates: seeds, then
mutations of seeds, which the algorithm draws independently of results.

The rates are over whole runs, start and tail included: with 2 workers the last evaluation often runs
alone, so short runs understate the steady state (8 evaluations measured 0.78 where 24 measure 0.94).

    python benchmarks/search_scaling.py [--evaluations 24] [--steps 150]
"""

from __future__ import annotations

import argparse
import tempfile
from statistics import mean

from evosearch.config import from_dict
from evosearch.runner.driver import run_search
from evosearch.runner.progress import Progress
from evosearch.runner.run_config import RunConfig
from evosearch.runner.run_directory import RunDirectory


def run(workers: int, evaluations: int, steps: int, root: str) -> dict:
    config = from_dict(
        RunConfig,
        {
            "name": f"scaling_{workers}",
            "output_dir": root,
            "search": {
                "max_evaluations": evaluations,
                "seed_mutations": 10 * evaluations,
                "random_graphs": 0,
            },
            "tasks": [{"task": "generated_resnet", "set": {"train.steps": steps, "train.hurdle_step": None}}],
            "resources": {"concurrency": workers, "num_cpus": workers, "cpus_per_evaluation": 1},
        },
    )
    summary = run_search(config, progress=Progress(enabled=False))
    stats = summary.stats
    records = RunDirectory(summary.run_dir).read_events()
    train_s = [t["wall_s"] for r in records for t in r.tasks if t.get("wall_s")]
    return {
        "workers": workers,
        "evaluations": stats.evaluations,
        "candidates": stats.candidates,
        "minutes": stats.elapsed_s / 60,
        "rate": stats.evaluations / (stats.elapsed_s / 60),
        "driver_per_candidate_s": stats.driver_s / max(stats.candidates, 1),
        "evaluation_s": mean(train_s) if train_s else float("nan"),
        "idle": 1 - stats.worker_s / (workers * stats.elapsed_s),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--evaluations", type=int, default=24)
    parser.add_argument("--steps", type=int, default=150)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as root:
        one = run(1, args.evaluations, args.steps, root)
        two = run(2, args.evaluations, args.steps, root)
    print(f"{'workers':>7s} {'evals':>5s} {'cands':>5s} {'minutes':>7s} {'evals/min':>9s} {'idle':>5s}")
    for r in (one, two):
        print(
            f"{r['workers']:7d} {r['evaluations']:5d} {r['candidates']:5d} {r['minutes']:7.2f} "
            f"{r['rate']:9.2f} {r['idle']:5.1%}"
        )
    print(f"scaling efficiency (2 workers): {two['rate'] / (2 * one['rate']):.2f}  (target >= 0.85)")
    overhead = max(one["driver_per_candidate_s"], two["driver_per_candidate_s"])
    print(
        f"driver overhead per candidate: {overhead * 1e3:.1f} ms = {overhead / one['evaluation_s']:.2%} "
        f"of one evaluation ({one['evaluation_s']:.1f} s)  (target <= 1%)"
    )


if __name__ == "__main__":
    main()
