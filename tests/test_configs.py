"""The run configs shipped in configs/ load, validate and resolve their tasks (no data needed), by path
and by name."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from evosearch.config import ConfigError
from evosearch.runner.run_config import load_run_config, load_tasks, run_config_names

CONFIG_DIR = Path(__file__).parent.parent / "configs"
CONFIGS = sorted(CONFIG_DIR.glob("*.yaml"))


def test_the_shipped_configs_are_found():
    assert {p.stem for p in CONFIGS} >= {"quickstart", "cifar10_proxy", "imagenet_proxy"}
    assert run_config_names() == [p.stem for p in CONFIGS]  # the package ships the repository's configs/


@pytest.mark.parametrize("path", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_a_shipped_config_loads_with_its_tasks(path):
    config = load_run_config(path)
    tasks, objectives = load_tasks(config)
    assert len(tasks) == len(objectives) == len(config.tasks) >= 1
    assert load_run_config(path.stem) == config


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("no_such_config", "unknown run config 'no_such_config'; run configs: {names}, or a .yaml file"),
        ("quickstart.yaml", "run config file not found: quickstart.yaml"),  # a path: in the current folder
        ("elsewhere/quickstart", "run config file not found: elsewhere/quickstart"),
    ],
)
def test_a_name_or_path_naming_no_config_fails(tmp_path, monkeypatch, source, message):
    monkeypatch.chdir(tmp_path)
    expected = message.format(names=", ".join(run_config_names()))
    with pytest.raises(ConfigError, match=re.escape(expected)):
        load_run_config(source)


def test_an_uninstalled_checkout_finds_its_configs_beside_the_package(tmp_path: Path):
    """A checkout imported without being installed (a Ray job's --working-dir copy shadows the installed
    package) has no package ``evosearch.configs``: the configs next to ``evosearch/`` are found."""
    root = Path(__file__).resolve().parents[1]
    for folder in ("evosearch", "primitives", "configs"):
        shutil.copytree(root / folder, tmp_path / folder, ignore=shutil.ignore_patterns("__pycache__"))
    # -S: no site-packages processing, so no editable-install finder; yaml from site-packages itself.
    site_packages = str(Path(yaml.__file__).parents[1])
    code = "from evosearch.config import shipped_configs; print(shipped_configs())"
    out = subprocess.run(
        [sys.executable, "-S", "-c", code],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), site_packages])},
        capture_output=True,
        text=True,
        check=True,
    )
    assert Path(out.stdout.strip()) == tmp_path / "configs"
