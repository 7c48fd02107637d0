"""The GPU check's dry run: every check runs on CPU at toy size and passes, so the script works
before a GPU is at hand. It runs as a user runs it, in a subprocess: its Ray instance is its own."""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# Every seed but gn_relu is also one of layer_speed.py's pairs; the last four take tokens (N, L, C).
SEEDS = ["evonorm_s0", "evonorm_b0", "bn_relu", "gn_relu", "layernorm", "rmsnorm", "dyt", "derf"]
TIMED = [seed for seed in SEEDS if seed != "gn_relu"]
JUDGED = {"seed vs reference", "packed search", "device fault"}  # the rest are speeds: info at toy size


def test_dry_run_passes_every_check():
    # A hang guard, well above the dry run's time (under 90 s on 2 busy cores).
    run = subprocess.run(
        [sys.executable, "benchmarks/gpu_check.py", "--dry-run", "--json"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=400,
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    rows = json.loads(run.stdout)["rows"]
    settings = {(row["check"], row["setting"]) for row in rows}
    for seed, precision in itertools.product(SEEDS, ["float32", "bf16 autocast"]):
        assert ("seed vs reference", f"{seed} {precision}") in settings
    for seed, mode in itertools.product(TIMED, ["eager", "compile aot_eager"]):
        assert ("layer speed", f"{seed} {mode}") in settings
    checks = {row["check"] for row in rows}
    assert checks == JUDGED | {"layer speed", "proxy training", "wall time"}
    for row in rows:
        assert row["verdict"] == ("ok" if row["check"] in JUDGED else "info"), row
    search = next(row for row in rows if row["check"] == "packed search")
    assert "4/4 completed" in search["value"] and "4 at once" in search["value"], search
    fault = next(row for row in rows if row["check"] == "device fault")
    assert fault["value"] == "device_error after attempts in 2 processes", fault
