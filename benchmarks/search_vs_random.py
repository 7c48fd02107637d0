"""Evolution against random search at the same evaluation budget, over several seeds.

Both run in the same driver on the same tasks, chosen by ``search.algorithm``: ``evolution`` (the
default) and ``random`` (the seeds, then independent random graphs). For each, per seed: the best mean
accuracy over the tasks, the best seed layer's accuracy in that run, and how many evaluations it took
to first match it.

    python benchmarks/search_vs_random.py [--seeds 3] [--evaluations 30] [--steps 150]
"""

from __future__ import annotations

import argparse
import tempfile
from statistics import mean

from evosearch.config import from_dict
from evosearch.outcomes import Status
from evosearch.runner.driver import run_search
from evosearch.runner.progress import Progress
from evosearch.runner.run_config import RunConfig
from evosearch.runner.run_directory import RunDirectory

SEED_LAYERS = ["bn_relu", "gn_relu", "evonorm_b0", "evonorm_s0"]


def search(kind: str, seed: int, evaluations: int, steps: int, root: str) -> dict:
    # The same evaluation budget for both. About 1 random graph in 25 passes the probes, so random
    # search's candidate limit (proposals of any fate) is sized far beyond it: the budget binds first.
    own = (
        {"max_candidates": 300 * evaluations}
        if kind == "random"
        else {"population_size": 16, "tournament_size": 4, "seed_mutations": 8, "random_graphs": 8}
    )
    config = from_dict(
        RunConfig,
        {
            "name": f"{kind}_{seed}",
            "output_dir": root,
            "seed": seed,
            "search": {
                "algorithm": kind,
                "max_evaluations": evaluations,
                "seeds": SEED_LAYERS,
                **own,
            },
            "tasks": [{"task": "generated_resnet", "set": {"train.steps": steps, "train.hurdle_step": None}}],
        },
    )
    summary = run_search(config, progress=Progress(enabled=False))
    trained = [r for r in RunDirectory(summary.run_dir).read_events() if r.status is Status.TRAINED]
    trained.sort(key=lambda r: r.finished_at)
    best_seed = max((mean(r.scores) for r in trained if r.origin == "seed"), default=0.0)
    reached = next(
        (k for k, r in enumerate(trained, 1) if r.origin != "seed" and mean(r.scores) >= best_seed), None
    )
    return {
        "evaluations": summary.stats.evaluations,
        "best": max((mean(r.scores) for r in trained), default=0.0),
        "best_non_seed": max((mean(r.scores) for r in trained if r.origin != "seed"), default=0.0),
        "best_seed": best_seed,
        "evaluations_to_best_seed": reached,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--evaluations", type=int, default=30)
    parser.add_argument("--steps", type=int, default=150)
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as root:
        for seed in range(args.seeds):
            for kind in ("evolution", "random"):
                rows.append(
                    {"kind": kind, "seed": seed, **search(kind, seed, args.evaluations, args.steps, root)}
                )
    print(
        f"{'search':10s} {'seed':>4s} {'evals':>5s} {'best':>6s} {'non-seed':>8s} {'best seed':>9s} "
        f"{'evals to seed':>13s}"
    )
    for r in rows:
        reached = "-" if r["evaluations_to_best_seed"] is None else str(r["evaluations_to_best_seed"])
        print(
            f"{r['kind']:10s} {r['seed']:4d} {r['evaluations']:5d} {r['best']:6.3f} "
            f"{r['best_non_seed']:8.3f} {r['best_seed']:9.3f} {reached:>13s}"
        )
    for kind in ("evolution", "random"):
        mine = [r for r in rows if r["kind"] == kind]
        print(f"{kind}: mean best non-seed accuracy {mean(r['best_non_seed'] for r in mine):.3f}")
    evo = mean(r["best_non_seed"] for r in rows if r["kind"] == "evolution")
    rnd = mean(r["best_non_seed"] for r in rows if r["kind"] == "random")
    print(f"ratio evolution / random (best non-seed accuracy): {evo / max(rnd, 1e-9):.2f}")


if __name__ == "__main__":
    main()
