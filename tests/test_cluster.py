"""The cluster path: `evosearch run --address` joins a Ray head started apart (`ray start --head`),
here on loopback with the dashboard off, as a SLURM or cluster-launcher job would."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from helpers import write_config

RAY = str(Path(sys.executable).with_name("ray"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_run_joins_an_existing_ray_head(tmp_path):
    # Loopback only; token auth off on both sides (a separately started head has its own token).
    env = {**os.environ, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_AUTH_MODE": "disabled"}
    port = free_port()
    head = subprocess.Popen(
        [
            RAY,
            "start",
            "--head",
            "--block",
            "--node-ip-address=127.0.0.1",
            f"--port={port}",
            "--include-dashboard=false",
            "--num-cpus=2",
            "--disable-usage-stats",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
        start_new_session=True,
    )
    try:
        time.sleep(1)
        config = write_config(tmp_path, "cluster", evaluations=2)
        result = None
        for _ in range(30):  # the head takes a few seconds to accept drivers
            result = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "evosearch.cli",
                    "run",
                    str(config),
                    "--quiet",
                    "--json",
                    "--address",
                    f"127.0.0.1:{port}",
                ],
                capture_output=True,
                text=True,
                timeout=300,
                env=env,
            )
            if "cannot join the Ray cluster" not in result.stderr:
                break
            time.sleep(2)
        assert result is not None and result.returncode == 0, result.stderr
        summary = json.loads(result.stdout)
        assert summary["evaluations"] == 2
        assert head.poll() is None  # the cluster outlives the job
    finally:
        os.killpg(head.pid, signal.SIGTERM)
        try:
            head.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(head.pid, signal.SIGKILL)
