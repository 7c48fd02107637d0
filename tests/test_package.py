"""evosearch as a user installs it: a wheel built from the checkout, installed into a folder of its own
(no editable install), trains the default task and runs a tiny search from a shipped run config named
``quickstart``, in a folder outside the repository."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
SOURCES = ("pyproject.toml", "README.md", "evosearch", "primitives", "configs")  # what the build reads
TINY_TASK = {"train.steps": 2, "train.hurdle_step": None, "dataset.train_size": 128, "dataset.val_size": 64}


def package_files() -> set[str]:
    """The paths in the wheel that the checkout's modules and configs should have."""
    modules = {
        p.relative_to(REPO).as_posix()
        for folder in ("evosearch", "primitives")
        for p in (REPO / folder).rglob("*.py")
    }
    configs = {
        f"evosearch/configs/{p.relative_to(REPO / 'configs').as_posix()}"
        for p in (REPO / "configs").rglob("*")
        if p.is_file() and "__pycache__" not in p.parts
    }
    return modules | configs


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Built from a copy of the sources: setuptools' build/ folder in the checkout keeps the modules of
    earlier builds (a moved module would ship twice) and is shared by concurrent test sessions."""
    source = tmp_path_factory.mktemp("source")
    for name in SOURCES:
        if (REPO / name).is_dir():
            shutil.copytree(REPO / name, source / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(REPO / name, source / name)
    out = tmp_path_factory.mktemp("wheel")
    pip_wheel = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-w", str(out)]
    build = subprocess.run([*pip_wheel, str(source)], capture_output=True, text=True, timeout=120)
    log = build.stdout + build.stderr
    assert build.returncode == 0, log
    assert "BuildBackendWarning" not in log, log  # e.g. a deprecated key, a package missing from the list
    (path,) = out.glob("evosearch-*.whl")
    return path


@pytest.fixture(scope="module")
def installed(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    target = tmp_path_factory.mktemp("site")
    pip_install = [sys.executable, "-m", "pip", "install", "--no-deps", "--target", str(target), str(wheel)]
    install = subprocess.run(pip_install, capture_output=True, text=True, timeout=120)
    assert install.returncode == 0, install.stdout + install.stderr
    return target


def run_installed(target: Path, cwd: Path, *argv: str) -> subprocess.CompletedProcess:
    """``python ARGV`` in ``cwd`` importing the installed copy: ``target`` comes first on the path, ahead
    of the checkout's editable install."""
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(target), os.environ.get("PYTHONPATH")])),
    }
    return subprocess.run(
        [sys.executable, *argv], cwd=cwd, env=env, capture_output=True, text=True, timeout=180
    )


def test_the_wheel_holds_every_module_and_config(wheel):
    with zipfile.ZipFile(wheel) as archive:
        missing = sorted(package_files() - set(archive.namelist()))
    assert not missing, f"not in the wheel (add the package to pyproject.toml's list): {missing}"


def test_the_installed_copy_is_the_one_imported(installed, tmp_path):
    code = "import evosearch.config as c; print(c.__file__); print(c.shipped_configs())"
    result = run_installed(installed, tmp_path, "-c", code)
    assert result.returncode == 0, result.stderr
    module, configs = map(Path, result.stdout.split())
    assert module.is_relative_to(installed) and configs == installed / "evosearch" / "configs"


def test_the_default_task_trains_outside_the_repository(installed, tmp_path):
    overrides = [arg for key, value in TINY_TASK.items() for arg in ("--set", f"{key}={json.dumps(value)}")]
    result = run_installed(
        installed, tmp_path, "-m", "evosearch.cli", "train", "bn_relu", *overrides, "--json"
    )
    assert result.returncode == 0, result.stderr
    record = json.loads(result.stdout)
    assert (record["task"], record["layer"], record["exit_reason"]) == (
        "generated_resnet",
        "bn_relu",
        "completed",
    )


def test_a_shipped_run_config_is_listed_and_runs_by_name(installed, tmp_path):
    listed = run_installed(installed, tmp_path, "-m", "evosearch.cli", "run", "--help")
    assert "quickstart" in listed.stdout and "cifar10_proxy" in listed.stdout
    tiny = {
        "search.max_evaluations": 1,
        "search.population_size": 2,
        "search.tournament_size": 1,
        "search.seeds": ["bn_relu"],
        "search.seed_mutations": 1,
        "search.random_graphs": 0,
        "tasks": [{"task": "generated_resnet", "set": TINY_TASK}],
        "resources.num_cpus": 1,
        "resources.concurrency": 1,
    }
    overrides = [arg for key, value in tiny.items() for arg in ("--set", f"{key}={json.dumps(value)}")]
    result = run_installed(
        installed, tmp_path, "-m", "evosearch.cli", "run", "quickstart", *overrides, "--quiet", "--json"
    )
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["run_dir"] == "runs/quickstart" and summary["evaluations"] == 1
    saved = yaml.safe_load((tmp_path / "runs" / "quickstart" / "config.yaml").read_text())
    assert saved["name"] == "quickstart" and saved["search"]["max_evaluations"] == 1
