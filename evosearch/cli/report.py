"""Run analysis commands: ``report`` (plots and an HTML page of a run) and ``rerank`` (train the best
layers again, longer or on held-out tasks, with several seeds)."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

from evosearch.cli.options import add_set_option
from evosearch.cli.output import emit
from evosearch.errors import EvosearchError

if TYPE_CHECKING:
    from evosearch.cli.report_html import TransferTable, WrittenReport
    from evosearch.runner.claims import Claims
    from evosearch.runner.rerank import TaskScores


def register(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser(
        "report",
        help="write report.html and plots of a run (finished, running or interrupted)",
        description="Write RUN/report.html (self-contained) and RUN/plots/*.png: the noise over training "
        "seeds, the funnel, the confirmed layers labelled against each seed layer, the transfer tables "
        "(RUN/rerank/), and from rung 0: best accuracy per objective, the Pareto front of the last "
        "population, rejections by reason, probe values against accuracy, and the top layers.",
    )
    p.add_argument("run", help="a run directory")
    p.add_argument("--top", type=int, default=10, help="rows of the top-layers table (default 10)")
    p.add_argument("--json", action="store_true", help="print the report's numbers as JSON")
    p.set_defaults(handler=report)

    p = commands.add_parser(
        "rerank",
        help="train a run's top layers and reference seeds with several seeds; mean ± std",
        description="Train the run's top K layers and the reference seeds once per task and seed on Ray "
        "workers; write RUN/rerank/<task>.json and print mean ± std of top-1 accuracy.",
    )
    p.add_argument("run", help="a run directory")
    p.add_argument("--top", type=int, default=5, help="how many of the run's layers, best first (default 5)")
    p.add_argument(
        "--task",
        action="append",
        default=[],
        metavar="NAME_OR_FILE",
        help="a task name or .yaml file, repeatable (default: the run's own tasks)",
    )
    add_set_option(p, "train.steps=2000")
    p.add_argument("--seeds", type=int, default=3, help="training seeds per layer and task (default 3)")
    p.add_argument(
        "--reference-seeds",
        default="bn_relu,gn_relu,evonorm_b0,evonorm_s0",
        metavar="NAMES",
        help="seed layers trained as a reference, comma-separated ('' for none)",
    )
    p.add_argument("--address", help="Ray cluster address (default: the run's, RAY_ADDRESS, else local)")
    p.add_argument("--quiet", action="store_true", help="no progress line on stderr")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(handler=rerank)


def report(args: argparse.Namespace) -> int:
    from evosearch.cli.report_html import write_report  # matplotlib loads only for this command

    written = write_report(args.run, top=args.top)
    if args.json:
        paths = {"html": str(written.html), "plots": {k: str(v) for k, v in written.plots.items()}}
        emit({**written.report.to_json(), "files": paths}, as_json=True)
        return 0
    _print_summary(written)
    print_claims(written.report.claims, args.top)
    for table in written.report.transfer:
        _print_transfer(table)
    return 0


def _print_summary(written: WrittenReport) -> None:
    from evosearch.cli.report_html import budget_words

    r = written.report
    emit(
        {
            "report": str(written.html),
            "plots": ", ".join(str(p) for p in written.plots.values()),
            "candidates": r.candidates,
            "evaluations": r.evaluations,
            "statuses": r.statuses,
            "rejections": r.rejections or "none",
            "best rung-0 accuracy": {
                name: curve[-1] for name, curve in r.best.items() if curve and curve[-1] is not None
            },
            "probe correlations": {c.metric: c.spearman for c in r.probes if c.spearman is not None},
            "funnel": "; ".join(f"rung {c.rung}: {c.layers} layers ({budget_words(c)})" for c in r.rungs),
            "training steps": r.train_steps,
            "noise over training seeds": _noise_words(r.claims),
        },
        as_json=False,
    )


def _noise_words(claims: Claims) -> str:
    """Each objective's pooled seed-to-seed sd with its degrees of freedom and layers."""
    return ", ".join(
        f"{name} "
        + ("not estimated yet" if e.sd is None else f"sd {e.sd:.4f} (dof {e.dof}, {e.layers} layers)")
        for name, e in claims.noise.items()
    )


def print_claims(claims: Claims, top: int) -> None:
    """The table ``evosearch run`` and ``report`` end with: the top rung's front, labelled against
    each seed layer; where no layer reached the top rung, the best below it, said to be unconfirmed."""
    from evosearch.runner.claims import claim_rows, layer_rows

    rows = claim_rows(claims)[:top]
    if rows:
        print(
            f"\nConfirmed at rung {claims.rung}, mean ± sd over training seeds; labels per objective "
            f"({' / '.join(claims.objectives)}) against each seed layer:"
        )
        emit(rows, as_json=False)
        print(f"labels: {claims.test}")
    else:
        print(f"\nNo layer reached the top rung (rung {claims.rung}): nothing is confirmed.")
        if claims.unconfirmed:
            print("Best so far, unconfirmed:")
            emit(layer_rows(claims.unconfirmed[:top], claims.objectives), as_json=False)


def _print_transfer(table: TransferTable) -> None:
    from evosearch.cli.report_html import transfer_score

    seeds = ", ".join(map(str, table.seeds)) or "not recorded"
    print(f"\nTransfer to {table.task} ({table.file}), training seeds {seeds}:")
    emit(
        [
            {"layer": row.layer, "kind": row.kind, "mean ± sd": transfer_score(row), "n": row.n}
            for row in table.rows
        ],
        as_json=False,
    )


def rerank(args: argparse.Namespace) -> int:
    from evosearch.runner.rerank import rerank as run_rerank  # Ray loads only for this command

    if args.top < 1:
        raise EvosearchError(f"--top must be at least 1, got {args.top}")
    references = [name.strip() for name in args.reference_seeds.split(",") if name.strip()]
    result = run_rerank(
        args.run,
        top=args.top,
        seeds=args.seeds,
        tasks=args.task,
        overrides=args.set,
        references=references,
        address=args.address,
        log=None if args.quiet else _log,
    )
    if args.json:
        emit(result.to_json(), as_json=True)
        return 0
    rows = [
        {"layer": row.label, "kind": row.kind, **{name: _mean_std(row.tasks[name]) for name in result.tasks}}
        for row in result.rows
    ]
    emit(rows, as_json=False)
    print(f"\nresults: {', '.join(result.files)}")
    return 0


def _log(line: str) -> None:
    print(f"rerank: {line}", file=sys.stderr, flush=True)


def _mean_std(scores: TaskScores) -> str:
    if scores.mean is None:
        return f"failed ({', '.join(sorted(set(scores.exits)))})"
    std = "–" if scores.std is None else f"{scores.std:.4f}"
    return f"{scores.mean:.4f} ± {std} (n={scores.n})"
