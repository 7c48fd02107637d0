"""``evosearch probe``: the table, the JSON records, --config and --set, and one-line config errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from evosearch.cli import main
from evosearch.probes.screen import PROBES

METRICS = {m for names in PROBES.values() for m in names}
WIDE_LIMIT = "probes.time_limit=60"  # a busy machine must not turn a pass into a timeout


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # see conftest.py


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_table_has_a_row_per_source_with_the_verdict(capsys):
    code, out, err = run_cli(capsys, "probe", "ln_relu", "max(x, 0)", "--set", WIDE_LIMIT)
    assert code == 0 and err == ""
    header, rule, *rows = out.splitlines()
    assert header.split()[:4] == ["source", "passed", "activation_growth", "cosine_similarity"]
    assert header.split()[-2:] == ["seconds", "reasons"]
    assert set(rule) == {"-", " "}
    assert rows[0].split()[:2] == ["ln_relu", "yes"]
    assert rows[1].startswith("max(x, 0)") and " no " in rows[1]
    assert "activation_growth: " in rows[1] and "> max_activation_growth 1000" in rows[1]


def test_an_inconclusive_probe_is_neither_yes_nor_no(capsys):
    code, out, _ = run_cli(capsys, "probe", "bn_relu", "--set", "probes.cpu_limit_s=0.000001")
    row = out.splitlines()[2]
    assert code == 0 and row.split()[:2] == ["bn_relu", "inconclusive"] and "cpu_limit: " in row


def test_json_is_a_list_of_records(capsys):
    code, out, _ = run_cli(capsys, "probe", "evonorm_s0", "x", "--json", "--set", WIDE_LIMIT)
    assert code == 0
    records = json.loads(out)
    assert [r["source"] for r in records] == ["evonorm_s0", "x"]
    for record in records:
        assert set(record) == {
            "source", "passed", "reasons", "metrics", "seconds", "cpu_seconds", "inconclusive",
        }  # fmt: skip
        assert set(record["metrics"]) == METRICS
        assert record["passed"] == (record["reasons"] == [])
    assert records[0]["passed"] and not records[1]["passed"]


def test_config_file_and_set_overrides(capsys, tmp_path):
    config = tmp_path / "probes.yaml"
    config.write_text("probes:\n  time_limit: 60\n  thresholds:\n    max_stability: 0.5\n")
    code, out, _ = run_cli(capsys, "probe", "bn_relu", "--json", "--config", str(config))
    assert code == 0
    (record,) = json.loads(out)
    assert record["reasons"] == [f"stability: {record['metrics']['stability']:.3g} > max_stability 0.5"]

    argv = [
        "probe",
        "bn_relu",
        "--json",
        "--config",
        str(config),
        "--set",
        "probes.thresholds.max_stability=5",
    ]
    code, out, _ = run_cli(capsys, *argv, "--set", "probes.enabled=[stability, fingerprint]")
    (record,) = json.loads(out)
    assert record["passed"] and set(record["metrics"]) == {"stability", "fingerprint"}


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("probes.foo=1", "unknown key probes.foo; valid keys of probes: enabled, batch_size,"),
        (
            "probes.thresholds.max_foo=1",
            "unknown key probes.thresholds.max_foo; valid keys of probes.thresholds:",
        ),
        ("probes.enabled=[foo]", "unknown probe 'foo'; valid probes: activation_growth,"),
        ("probes.batch_size=big", "probes.batch_size must be an integer, got 'big'"),
        ("search.population=10", "unknown key search; valid keys: probes"),
    ],
)
def test_config_errors_are_one_line(capsys, override, message):
    code, out, err = run_cli(capsys, "probe", "bn_relu", "--set", override)
    assert code == 1 and out == ""
    assert err.startswith("evosearch: error: ") and message in err and err.count("\n") == 1


def test_unknown_source_fails_before_probing(capsys):
    code, out, err = run_cli(capsys, "probe", "bn_relu", "no_such_seed")
    assert code == 1 and out == "" and "not a seed, a graph file or a formula" in err


def test_module_entry_point():
    argv = [sys.executable, "-m", "evosearch.cli", "probe", "gn_relu", "--json", "--set", WIDE_LIMIT]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False, env=env)
    assert done.returncode == 0, done.stderr
    (record,) = json.loads(done.stdout)
    assert record["source"] == "gn_relu" and record["passed"]
