"""``evosearch run CONFIG``: the search itself."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import yaml

from evosearch.cli.options import add_set_option
from evosearch.cli.output import emit
from evosearch.cli.report import print_claims
from evosearch.config import from_dict, merge, parse_overrides, to_dict
from evosearch.errors import EvosearchError
from evosearch.runner.claims import claim_rows, noise_line
from evosearch.runner.rerank import rerank_rows
from evosearch.runner.run_config import (
    RunConfig,
    load_run_config,
    load_tasks,
    load_transfer_tasks,
    run_config_names,
)
from evosearch.runner.run_directory import RunDirectory

INTERRUPTED = 130


def register(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser(
        "run",
        help="run (or resume) an evolutionary search",
        description="Run the search a config describes, on a local Ray instance or a cluster.",
    )
    shipped = ", ".join(run_config_names())
    p.add_argument(
        "config", help=f"a shipped run config ({shipped}), a run config .yaml, or a run directory to resume"
    )
    add_set_option(p, "search.max_evaluations=50")
    p.add_argument("--resume", action="store_true", help="continue the run where it stopped")
    p.add_argument("--force", action="store_true", help="resume even though the config changed")
    p.add_argument(
        "--rebuild-checkpoint",
        action="store_true",
        help="resume without RUN/checkpoint.json (missing, unreadable or older than the records): rebuild "
        "the search state from the records; the random generator starts again",
    )
    p.add_argument("--address", help="Ray cluster address (default: RAY_ADDRESS, else a local instance)")
    p.add_argument("--top", type=int, default=10, help="rows of the final summary table")
    p.add_argument("--quiet", action="store_true", help="no progress on stderr")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.set_defaults(handler=run)

    p = commands.add_parser("config", help="print a run config resolved: every key, defaults filled in")
    p.add_argument(
        "config", nargs="?", help=f"a shipped run config ({shipped}) or a .yaml file; none: the defaults"
    )
    add_set_option(p, "search.max_evaluations=50")
    p.add_argument("--json", action="store_true", help="print JSON instead of YAML")
    p.set_defaults(handler=show_config)


def show_config(args: argparse.Namespace) -> int:
    """The resolved config, checked as ``run`` checks it (its task files too), so what this prints
    is what ``run`` accepts."""
    config = load_run_config(args.config, args.set)
    load_tasks(config)
    load_transfer_tasks(config)
    config = to_dict(config)
    if args.json:
        emit(config, as_json=True)
    else:
        sys.stdout.write(yaml.safe_dump(config, sort_keys=False))
    return 0


def resolve_run_config(source: str, overrides: list[str], resume: bool) -> RunConfig:
    """A shipped run config or a config file; or, to resume, a run directory, whose saved config is used."""
    path = Path(source)
    if not path.is_dir():
        return load_run_config(source, overrides)
    if not resume:
        raise EvosearchError(f"{source} is a directory: add --resume to continue the run in it")
    saved = RunDirectory(path).read_config_data()
    located = {"output_dir": str(path.parent), "name": path.name}  # wherever the directory now is
    return from_dict(RunConfig, merge(merge(saved, located), parse_overrides(overrides)))


def run(args: argparse.Namespace) -> int:
    from evosearch.runner.driver import run_search  # Ray loads only for this command
    from evosearch.runner.progress import Progress

    if args.top < 0:
        raise EvosearchError("--top must be >= 0")
    if args.rebuild_checkpoint and not args.resume:
        raise EvosearchError("--rebuild-checkpoint applies to a resume: add --resume")
    overrides = list(args.set) + ([f"resources.address={args.address}"] if args.address else [])
    config = resolve_run_config(args.config, overrides, args.resume)
    summary = run_search(
        config,
        resume=args.resume,
        force=args.force,
        rebuild_checkpoint=args.rebuild_checkpoint,
        progress=Progress(enabled=not args.quiet),
    )
    claims = summary.claims
    rows = claim_rows(claims)[: args.top]
    if args.json:
        stats = summary.stats
        emit(
            {
                "run_dir": summary.run_dir,
                "interrupted": summary.interrupted,
                "evaluations": stats.evaluations,
                "candidates": stats.candidates,
                "statuses": dict(stats.statuses),
                "rejections": dict(stats.rejections),
                "best": stats.best,
                "rungs": stats.rungs,
                "train_steps": stats.train_steps,
                "claims": claims.to_json(),
                "table": rows,
                "transfer": None if summary.transfer is None else summary.transfer.to_json(),
            },
            as_json=True,
        )
    else:
        print_claims(claims, args.top)
        print(noise_line(claims))
        if summary.transfer is not None:
            tasks = ", ".join(summary.transfer.tasks)
            print(f"\nTransfer to held-out tasks ({tasks}), {summary.transfer.seeds} training seeds each:")
            emit(rerank_rows(summary.transfer), as_json=False)
        print(
            f"funnel: {' / '.join(map(str, summary.stats.rungs))} layers at rungs 0..{claims.rung}, "
            f"{summary.stats.train_steps} training steps"
        )
        print(f"run directory: {summary.run_dir} (confirmed layers in {summary.run_dir}/best/)")
    if summary.interrupted:
        print(f"interrupted; resume with: evosearch run {summary.run_dir} --resume", file=sys.stderr)
        return INTERRUPTED
    return 0
