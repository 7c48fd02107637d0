"""How the at-initialization probes screen candidates: the seeds must pass, random graphs mostly fail.

Probes every seed (each in its layout) and ``--count`` random valid graphs
(``evosearch.search.mutation.random_graph`` over the default search space of ``--layout``) with the
default probe configuration (or ``--config`` / ``--set``), then prints the seeds passed N/N, the
fraction of random graphs rejected (overall and per reason, a graph counting once under each reason it
has) and the median and p95 probe time. Issue target: median <= 1 s on two
CPU cores. The probe networks are small, so torch's intra-op threads buy little, and on a machine
shared with other work they cost a lot (threads wait for each other): ``--threads 1`` measures the
setting a worker with one CPU would use.

    python benchmarks/probe_screening.py [--count 500] [--seed 0] [--layout image|tokens] [--threads N]
        [--config F] [--set k=v ...]

With ``--layout tokens`` the random graphs are token layers (the token vocabulary, DyT's ``alpha``) and
the reference evaluation is ``generated_vit``'s.
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
from collections import Counter
from dataclasses import dataclass, field

import torch

from evosearch.config import load_config
from evosearch.layers.formula import FORMULA_SCALARS
from evosearch.layers.seeds import SEEDS, seed_graph
from evosearch.probes.screen import ProbeConfig, ProbeResult, probe_layer
from evosearch.search.mutation import SearchSpace, random_graph
from evosearch.tasks.datasets import load_dataset
from evosearch.tasks.specs import load_task
from evosearch.tasks.train import train_candidate
from primitives import Layout, search_ops


@dataclass
class _Config:
    probes: ProbeConfig = field(default_factory=ProbeConfig)


def reason_key(reason: str) -> str:
    """``"activation_growth: 3e+04 > ..."`` → ``"activation_growth"``."""
    return reason.partition(":")[0]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def report(label: str, results: list[ProbeResult]) -> None:
    seconds = [r.seconds for r in results]
    print(
        f"{label}: probe time median {statistics.median(seconds):.3f} s, "
        f"p95 {percentile(seconds, 0.95):.3f} s, max {max(seconds):.3f} s"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=500, help="random graphs to probe")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random graphs")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--config", help="a YAML file with a 'probes:' section")
    parser.add_argument("--layout", type=Layout, choices=list(Layout), default=Layout.IMAGE)
    parser.add_argument("--task", help="proxy task of the reference evaluation (default: by --layout)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="e.g. probes.seed=1")
    args = parser.parse_args()
    config = load_config(_Config, args.config, args.set).probes
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch threads={torch.get_num_threads()}; {config}")

    start = time.perf_counter()
    seeds = {name: probe_layer(seed_graph(name), config) for name in SEEDS}
    passed = [name for name, r in seeds.items() if r.passed]
    print(f"\nseeds passed {len(passed)}/{len(seeds)}")
    for name, r in seeds.items():
        if not r.passed:
            print(f"  {name}: {'; '.join(r.reasons)}")
    report("seeds", list(seeds.values()))

    rng = random.Random(args.seed)
    layout = args.layout
    space = SearchSpace(ops=search_ops(layout), layout=layout, scalars=FORMULA_SCALARS[layout])
    results = [probe_layer(random_graph(rng, space), config) for _ in range(args.count)]
    rejected = [r for r in results if not r.passed]
    print(f"\nrandom graphs rejected {len(rejected)}/{len(results)} ({len(rejected) / len(results):.1%})")
    counts = Counter(key for r in rejected for key in {reason_key(reason) for reason in r.reasons})
    for key, n in counts.most_common():
        print(f"  {key:22s} {n / len(results):6.1%}")
    fingerprints = Counter(r.metrics.get("fingerprint") for r in results)
    print(f"distinct fingerprints {len(fingerprints)}/{len(results)}")
    report("random graphs", results)

    # The figure that matters for the search: probing must cost little next to one proxy evaluation.
    reference = {Layout.IMAGE: ("generated_resnet", "bn_relu"), Layout.TOKENS: ("generated_vit", "layernorm")}
    task_name, seed = reference[layout]
    task = load_task(args.task or task_name)
    evaluation = train_candidate(seed_graph(seed), task, load_dataset(task.dataset))
    probe_median = statistics.median(r.seconds for r in results)
    print(
        f"\none proxy evaluation ({task.name}, {seed}): {evaluation.wall_s:.1f} s; "
        f"median probe / evaluation = {probe_median / evaluation.wall_s:.4f} (target <= 0.02)"
    )
    print(f"\ntotal {time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    main()
