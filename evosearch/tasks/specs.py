"""Proxy task definitions: YAML files of a ``dataset``, a ``model`` and a ``train`` section.

A task is named by a file path or by the name of a file shipped in the repository's ``configs/tasks/``
(``generated_resnet`` → ``configs/tasks/generated_resnet.yaml``); ``--set`` overrides such as
``train.steps=50`` or ``model.depth=14`` apply on top, through :mod:`evosearch.config`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path

from evosearch.config import ConfigError, load_config
from evosearch.tasks.train import TaskConfig

TASKS_DIR = Path(__file__).resolve().parents[2] / "configs" / "tasks"
DEFAULT_TASK = "generated_resnet"
TASK_SUFFIXES = (".yaml", ".yml")


def task_names() -> list[str]:
    """The tasks shipped in ``configs/tasks/``."""
    return sorted(p.stem for p in TASKS_DIR.glob("*.yaml"))


def task_path(name_or_path: str | Path) -> Path:
    """The file a task name or path refers to; :class:`ConfigError` lists the known names if none."""
    path = Path(name_or_path)
    if path.suffix in TASK_SUFFIXES or path.is_file():
        if not path.is_file():
            raise ConfigError(f"task file not found: {path}")
        return path
    shipped = TASKS_DIR / f"{name_or_path}.yaml"
    if not shipped.is_file():
        raise ConfigError(
            f"unknown task {str(name_or_path)!r}; tasks: {', '.join(task_names())}, or a .yaml file"
        )
    return shipped


def load_task(name_or_path: str | Path = DEFAULT_TASK, overrides: Sequence[str] = ()) -> TaskConfig:
    """The resolved task: its file, then the overrides; ``name`` defaults to the file's stem."""
    path = task_path(name_or_path)
    task = load_config(TaskConfig, path, overrides)
    return task if task.name else dataclasses.replace(task, name=path.stem)
