"""``probe``: at-initialization probes of layers, with a pass / reject verdict and its reasons."""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from evosearch.cli.options import SOURCE_HELP, add_layout_option, add_set_option
from evosearch.cli.output import emit
from evosearch.config import load_config
from evosearch.layers.create import resolve_source, source_label
from evosearch.probes.screen import PROBES, ProbeConfig, probe_layer
from evosearch.probes.tokens import TOKEN_PROBES

# The table shows the scalar metrics; --json has them all (the gradient profile too).
TABLE_METRICS = (
    "activation_growth",
    "cosine_similarity",
    "stable_rank",
    "gradient_ratio",
    "stability",
    "output_scale",
    "dead_fraction",
    "residual_growth",
    "token_similarity",
    "attention_entropy",
    "fingerprint",
)


@dataclass
class ProbeCommandConfig:
    """What ``probe`` reads from ``--config`` and ``--set``: the ``probes`` section (``probes.seed=1``)."""

    probes: ProbeConfig = field(default_factory=ProbeConfig)


def register(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser("probe", help="probe layers at initialization: pass or reject, with the reasons")
    p.add_argument("sources", nargs="+", metavar="SOURCE", help=SOURCE_HELP)
    p.add_argument("--config", type=Path, help="a YAML file with a 'probes:' section")
    add_layout_option(p)
    add_set_option(p, "probes.batch_size=8")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(handler=probe)


def probe(args: argparse.Namespace) -> int:
    config = load_config(ProbeCommandConfig, args.config, args.set).probes
    # Bad input fails first; a formula is read in --layout, and every layer must be of it where given.
    graphs = [(source, resolve_source(source, args.layout)) for source in args.sources]
    records = [{"source": source, **probe_layer(graph, config).to_json()} for source, graph in graphs]
    if args.json:
        emit(records, as_json=True)
    else:
        emit([_row(r) for r in records], as_json=False, columns=_columns(config))
    return 0


def _columns(config: ProbeConfig) -> list[str]:
    """The table's columns: the enabled probes' scalar metrics (of either layout; a layer of the other
    leaves a cell blank) between the verdict and the reasons."""
    layouts = (PROBES, TOKEN_PROBES)
    enabled = {m for probes in layouts for p in config.enabled if p in probes for m in probes[p]}
    return ["source", "passed", *(m for m in TABLE_METRICS if m in enabled), "seconds", "reasons"]


def _row(record: dict[str, Any]) -> dict[str, Any]:
    return {
        **record["metrics"],
        "source": source_label(record["source"]),
        "passed": "inconclusive" if record["inconclusive"] else record["passed"],  # not a "no"
        "seconds": record["seconds"],
        "reasons": "; ".join(record["reasons"]),
    }
