"""Funnel evolution against single-fidelity evolution and random search, at equal training compute.

Each method searches the quickstart's tasks (``configs/quickstart.yaml``) from several search seeds,
each search stopped by the same training budget (``search.max_train_steps``: steps summed over every
run of every rung, task and training seed). Then the best layer each search discovered (not a seed:
the first of its ranking on the evidence it has, the highest rung first) and every seed layer are
trained again with ``--confirm-seeds`` fresh training seeds on the same tasks, the same way for all
methods. Printed, per method, as ratios against single-fidelity evolution measured in the same run:

(a) the share of searches whose best discovered layer is confirmed better than the best seed layer:
    better on some objective and worse on none, by the one-sided Welch test of the claims;
(b) the mean confirmed accuracy of the best discovered layer (the mean over objectives), mean ± sd
    over searches;
(c) the training steps a search spent until it first trained the layer that ends as its best, where
    that layer's confirmed mean reaches the best seed's; the mean over the searches that got there.

Targets (issue 11): (c) funnel <= 0.5x single-fidelity; (a) >= 0.6 for the funnel.

    python benchmarks/search_efficiency.py [--searches 5] [--budget 10] [--seed-layers bn_relu,evonorm_b0]

``--budget`` is in full quickstart evaluations (each task's whole schedule once). The defaults are
sized to finish within an hour on 2 CPU cores: at that budget the quickstart's four seed layers would
take the funnel's whole budget through its rungs (each goes through every rung as a reference), so
the searches start from two of them, BN-ReLU and EvoNorm-B0, the strongest. Runs land in
``--out`` (default: a temporary directory), every number also in ``OUT/results.json``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ray

from evosearch.runner.claims import ranked_layers, run_score, trained_runs
from evosearch.runner.driver import run_search
from evosearch.runner.progress import Progress
from evosearch.runner.ray_cluster import start_ray
from evosearch.runner.run_config import RunConfig, load_run_config, load_tasks
from evosearch.runner.run_directory import RunDirectory
from evosearch.runner.workers import load_packed_datasets, put_datasets, submit_training, training_result
from evosearch.search.significance import Verdict, compare, mean_sd
from evosearch.text import table

SINGLE = ["search.fidelity.rungs=[{steps: 1.0, seeds: 1}]"]
METHODS = {
    "funnel evolution": ["search.algorithm=evolution"],  # the quickstart's funnel
    "single-fidelity evolution": ["search.algorithm=evolution", *SINGLE],
    "random search": ["search.algorithm=random", *SINGLE],
}
REFERENCE = "single-fidelity evolution"
CONFIRM_SEED_OFFSET = 1000  # confirmation seeds no search trained with


@dataclass
class Search:
    method: str
    seed: int
    run_dir: Path
    train_steps: int
    best: dict[str, Any] | None  # the best discovered layer: id, name, graph
    steps_at_discovery: int | None
    confirmed: list[list[float]] | None = None  # per objective, per confirmation seed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--searches", type=int, default=5, help="search seeds per method")
    parser.add_argument("--budget", type=float, default=10.0, help="training budget, in full evaluations")
    parser.add_argument("--seed-layers", default="bn_relu,evonorm_b0", help="the searches' seed layers")
    parser.add_argument("--confirm-seeds", type=int, default=3)
    parser.add_argument("--out", type=Path, help="where the runs go (default: a temporary directory)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    out = args.out or Path(tempfile.mkdtemp(prefix="search_efficiency_"))
    base = load_run_config("quickstart", [f"search.seeds=[{args.seed_layers}]"])
    tasks, objectives = load_tasks(base)
    budget = round(args.budget * sum(task.train.steps for task in tasks))
    started = time.monotonic()
    start_ray(base)  # one local instance for every search and the confirmation
    searches = [
        search_once(method, seed, out, budget, args.seed_layers)
        for seed in range(args.searches)
        for method in METHODS  # interleaved: load on the machine hits every method alike
    ]
    seeds = confirm_all(base, searches, args.confirm_seeds)
    ray.shutdown()
    results = summarize(searches, seeds, objectives)
    results.update(
        budget_steps=budget,
        wall_s=time.monotonic() - started,
        out=str(out),
        searches=[summary_of(s, objectives) for s in searches],
    )
    (out / "results.json").write_text(json.dumps(results, indent=2))
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        print_results(results, args)


def search_once(method: str, seed: int, out: Path, budget: int, seed_layers: str) -> Search:
    """One search of ``method`` from search seed ``seed``, stopped by the training budget."""
    name = f"{method.split()[0]}_{seed}"
    overrides = [
        *METHODS[method],
        f"name={name}",
        f"output_dir={out}",
        f"seed={seed}",
        f"search.seeds=[{seed_layers}]",
        "search.max_evaluations=null",
        "search.max_minutes=null",
        f"search.max_train_steps={budget}",
        "transfer.tasks=[]",
    ]
    config = load_run_config("quickstart", overrides)
    t0 = time.monotonic()
    summary = run_search(config, progress=Progress(enabled=False))
    print(
        f"{name}: {summary.stats.train_steps} steps, {time.monotonic() - t0:.0f} s",
        file=sys.stderr,
        flush=True,
    )
    run = RunDirectory(summary.run_dir)
    records, rungs, objectives = run.read_events(), run.read_rungs(), run.objectives()
    discovered = [layer for layer in ranked_layers(records, rungs, objectives) if not layer.is_reference]
    best = (
        None
        if not discovered
        else {"id": discovered[0].id, "name": discovered[0].name, "graph": discovered[0].graph}
    )
    at = None if best is None else steps_until(records, rungs, best["id"])
    return Search(method, seed, run.path, summary.stats.train_steps, best, at)


def steps_until(records: list, rungs: list, candidate_id: int) -> int:
    """Training steps the run had spent when candidate ``candidate_id``'s first result came in."""
    finished = [(r.finished_at, r.id, r.tasks) for r in records] + [
        (r.finished_at, r.id, r.tasks) for r in rungs
    ]
    spent = 0
    for _, owner, runs in sorted(finished, key=lambda f: f[0]):
        spent += sum(int(run.get("steps") or 0) for run in trained_runs(runs))
        if owner == candidate_id:
            return spent
    raise ValueError(f"candidate {candidate_id} has no result")


def confirm_all(base: RunConfig, searches: list[Search], seeds: int) -> dict[str, list[list[float]]]:
    """Every search's best layer and every seed layer trained ``seeds`` times on every task, with seeds
    no search used; the seed layers' accuracies returned, the searches' stored on them."""
    from evosearch.layers.graph_io import graph_to_dict
    from evosearch.layers.seeds import seed_graph

    tasks, _ = load_tasks(base)
    data_refs = put_datasets(load_packed_datasets(tasks))
    layers = {name: graph_to_dict(seed_graph(name)) for name in base.search.seed_names()}
    layers.update({f"search {i}": s.best["graph"] for i, s in enumerate(searches) if s.best is not None})
    refs = {
        name: [
            [
                submit_training(
                    graph, task.at_fidelity(1.0, CONFIRM_SEED_OFFSET + k), data_ref, base.resources
                )
                for k in range(seeds)
            ]
            for task, data_ref in zip(tasks, data_refs, strict=True)
        ]
        for name, graph in layers.items()
    }
    scores = {
        name: [[run_score(training_result(r)) for r in task_refs] for task_refs in per_task]
        for name, per_task in refs.items()
    }
    for i, search in enumerate(searches):
        search.confirmed = scores.get(f"search {i}")
    return {name: scores[name] for name in base.search.seed_names()}


def overall(per_objective: list[list[float]]) -> float:
    return statistics.fmean(statistics.fmean(scores) for scores in per_objective)


def is_better(layer: list[list[float]], seed: list[list[float]]) -> bool:
    verdicts = [compare(a, b).verdict for a, b in zip(layer, seed, strict=True)]
    return Verdict.BETTER in verdicts and Verdict.WORSE not in verdicts


def summarize(
    searches: list[Search], seeds: dict[str, list[list[float]]], objectives: list[str]
) -> dict[str, Any]:
    best_seed = max(seeds, key=lambda name: overall(seeds[name]))
    target = overall(seeds[best_seed])
    methods = {}
    for method in METHODS:
        mine = [s for s in searches if s.method == method]
        confirmed = [s for s in mine if s.confirmed is not None]
        better = [s for s in confirmed if is_better(s.confirmed, seeds[best_seed])]
        accuracy = [overall(s.confirmed) for s in confirmed]
        reached = [s.steps_at_discovery for s in confirmed if overall(s.confirmed) >= target]
        mean, sd = mean_sd(accuracy) if accuracy else (None, None)
        methods[method] = {
            "searches": len(mine),
            "share_confirmed_better": len(better) / len(mine),
            "confirmed_accuracy_mean": mean,
            "confirmed_accuracy_sd": sd,
            "reached_best_seed": len(reached),
            "steps_to_reach": statistics.fmean(reached) if reached else None,
            "train_steps_used": statistics.fmean(s.train_steps for s in mine),
        }
    reference = methods[REFERENCE]
    for row in methods.values():
        row["ratio_accuracy"] = _ratio(row["confirmed_accuracy_mean"], reference["confirmed_accuracy_mean"])
        row["ratio_steps_to_reach"] = _ratio(row["steps_to_reach"], reference["steps_to_reach"])
    seed_table = {
        name: {"mean": overall(s), "per_objective": [mean_sd(x) for x in s]} for name, s in seeds.items()
    }
    return {
        "objectives": objectives,
        "best_seed": best_seed,
        "best_seed_mean": target,
        "seeds": seed_table,
        "methods": methods,
    }


def _ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or not b else a / b


def summary_of(search: Search, objectives: list[str]) -> dict[str, Any]:
    return {
        "method": search.method,
        "seed": search.seed,
        "run_dir": str(search.run_dir),
        "train_steps": search.train_steps,
        "best": None if search.best is None else {k: v for k, v in search.best.items() if k != "graph"},
        "steps_at_discovery": search.steps_at_discovery,
        "confirmed": search.confirmed,
    }


def print_results(results: dict[str, Any], args: argparse.Namespace) -> None:
    def show(value: float | None, spec: str = ".3f") -> str:
        return "-" if value is None else format(value, spec)

    print(
        f"{args.searches} searches per method, budget {results['budget_steps']} training steps each "
        f"({args.budget:g} full quickstart evaluations); confirmation: {args.confirm_seeds} fresh "
        f"training seeds; {results['wall_s'] / 60:.1f} min"
    )
    print(f"best seed layer: {results['best_seed']} (confirmed mean {results['best_seed_mean']:.3f})")
    rows = []
    for method, m in results["methods"].items():
        rows.append(
            {
                "method": method,
                "(a) confirmed better": f"{m['share_confirmed_better']:.2f}",
                "(b) confirmed accuracy": (
                    f"{show(m['confirmed_accuracy_mean'])} ± {show(m['confirmed_accuracy_sd'])}"
                ),
                "(b) ratio": show(m["ratio_accuracy"], ".2f"),
                "(c) reached": f"{m['reached_best_seed']}/{m['searches']}",
                "(c) steps to reach": show(m["steps_to_reach"], ".0f"),
                "(c) ratio": show(m["ratio_steps_to_reach"], ".2f"),
                "steps used": f"{m['train_steps_used']:.0f}",
            }
        )
    print(table(rows))
    print(f"ratios against {REFERENCE}; targets: (c) funnel <= 0.5, (a) funnel >= 0.6")
    print(f"runs: {results['out']}")


if __name__ == "__main__":
    main()
