"""Proxy task definitions: YAML files of a ``dataset``, a ``model`` and a ``train`` section.

A task is named by a file path or by the name of a task shipped with the package, edited in the
repository's ``configs/tasks/`` (``generated_resnet`` → ``configs/tasks/generated_resnet.yaml``);
``--set`` overrides such as ``train.steps=50`` or ``model.depth=14`` apply on top, through
:mod:`evosearch.config`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path

from evosearch.config import config_names, config_path, load_config, shipped_configs
from evosearch.tasks.train import TaskConfig

TASKS_DIR = shipped_configs() / "tasks"
DEFAULT_TASK = "generated_resnet"


def task_names() -> list[str]:
    """The tasks shipped with the package."""
    return config_names(TASKS_DIR)


def load_task(name_or_path: str | Path = DEFAULT_TASK, overrides: Sequence[str] = ()) -> TaskConfig:
    """The resolved task: its file, then the overrides; ``name`` defaults to the file's stem."""
    path = config_path(name_or_path, TASKS_DIR, "task")
    task = load_config(TaskConfig, path, overrides)
    return task if task.name else dataclasses.replace(task, name=path.stem)
