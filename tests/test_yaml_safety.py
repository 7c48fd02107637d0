"""Hostile files and values: an alias bomb, 100,000-deep nesting and huge values give one short error
line, fast and in bounded memory, wherever evosearch reads YAML or JSON; no message quotes a whole value.
"""

from __future__ import annotations

import json
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from evosearch.config import MAX_YAML_CHARS, MAX_YAML_DEPTH, ConfigError, load_config
from evosearch.errors import EvosearchError, GraphError, brief
from evosearch.layers.graph_io import load_graph
from evosearch.runner.run_config import RunConfig, load_run_config, load_tasks
from evosearch.runner.run_directory import RunDirectory
from evosearch.tasks.specs import load_task
from evosearch.tasks.train import TaskConfig
from tests.helpers import cli_error, trained_record, write_handmade_run

LONGEST_MESSAGE = 600  # characters: a path, a key, a line number and a short quote fit


def alias_bomb(levels: int = 9) -> str:
    """The "billion laughs" as one flow-style YAML value: each level names the previous one nine
    times, so the last expands to 9**levels strings from a few hundred bytes."""
    parts = [f"&a0 [{','.join(['lol'] * 9)}]"]
    parts += [f"&a{i} [{','.join([f'*a{i - 1}'] * 9)}]" for i in range(1, levels)]
    return f"[{','.join(parts)}]"


DEEP = 100_000
DEEP_YAML = "[" * DEEP + "]" * DEEP


def assert_refused_quickly(call: Callable[[], object], error: type[Exception] = EvosearchError) -> str:
    """``call`` raises ``error`` with one short line, within a second, allocating little."""
    tracemalloc.start()
    start = time.perf_counter()
    try:
        with pytest.raises(error) as caught:
            call()
        elapsed = time.perf_counter() - start
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    message = str(caught.value)
    assert "\n" not in message and len(message) < LONGEST_MESSAGE, message[:LONGEST_MESSAGE]
    assert elapsed < 1.0, f"{elapsed:.1f} s"
    assert peak < 64 * 2**20, f"{peak / 2**20:.0f} MiB"
    return message


def test_the_bomb_is_small():
    assert len(alias_bomb()) < 400


# ---- graph files --------------------------------------------------------------------------------


@pytest.mark.parametrize("key", ["vectors", "hyperparameters", "name", "nodes", "formula", "output"])
def test_alias_bomb_in_a_graph_file(tmp_path, key):
    path = tmp_path / "bomb.yaml"
    path.write_text(f"evosearch_graph: 1\n{key}: {alias_bomb()}\n")
    message = assert_refused_quickly(lambda: load_graph(path), GraphError)
    assert message.startswith(f"{path}, line 2: ") and "aliases" in message


def test_deep_nesting_in_a_graph_file(tmp_path):
    path = tmp_path / "deep.yaml"
    path.write_text(f"evosearch_graph: 1\nvectors: {DEEP_YAML}\n")
    message = assert_refused_quickly(lambda: load_graph(path), GraphError)
    assert message.startswith(f"{path}") and "nesting depth" in message


def test_a_huge_graph_file_is_refused_unread(tmp_path):
    path = tmp_path / "huge.yaml"
    path.write_text("evosearch_graph: 1\nname: " + "n" * (MAX_YAML_CHARS + 1) + "\n")
    assert "larger than" in assert_refused_quickly(lambda: load_graph(path), GraphError)


def test_alias_bomb_through_the_cli_is_one_line(capsys, tmp_path):
    path = tmp_path / "bomb.yaml"
    path.write_text(f"evosearch_graph: 1\nvectors: {alias_bomb()}\n")
    assert "aliases" in cli_error(capsys, "show", str(path))


# ---- run configs, task files and --set ----------------------------------------------------------

BOMBED_RUN_CONFIGS = {
    "name": "name: {bomb}",
    "search.seeds": "search: {{seeds: {bomb}}}",
    "tasks[].set": "tasks: [{{task: generated_resnet, set: {{train.steps: {bomb}}}}}]",
    "resources": "resources: {bomb}",
}


@pytest.mark.parametrize("field", sorted(BOMBED_RUN_CONFIGS))
def test_alias_bomb_in_a_run_config(tmp_path, field):
    path = tmp_path / "run.yaml"
    path.write_text(BOMBED_RUN_CONFIGS[field].format(bomb=alias_bomb()) + "\n")
    message = assert_refused_quickly(lambda: load_tasks(load_run_config(path)), ConfigError)
    assert message.startswith(f"{path}: ") and "aliases" in message  # one line: no line number


@pytest.mark.parametrize("text", [f"train: {{steps: {alias_bomb()}}}", f"name: {alias_bomb()}", DEEP_YAML])
def test_hostile_task_file(tmp_path, text):
    path = tmp_path / "task.yaml"
    path.write_text(text + "\n")
    assert_refused_quickly(lambda: load_task(path), ConfigError)


@pytest.mark.parametrize("key", ["search.seeds", "name", "tasks", "resources.num_cpus"])
def test_alias_bomb_in_a_set_value(key):
    message = assert_refused_quickly(lambda: load_run_config(None, [f"{key}={alias_bomb()}"]), ConfigError)
    assert message.startswith(f"--set {key}: ") and "aliases" in message


@pytest.mark.parametrize("key", ["search.seeds", "tasks", "resources.num_cpus"])
def test_deep_nesting_in_a_set_value(key):
    """100,000 brackets are not YAML, so taken as the string they are, which the key then refuses,
    quoting a few characters of it."""
    message = assert_refused_quickly(lambda: load_run_config(None, [f"{key}={DEEP_YAML}"]), ConfigError)
    assert message.startswith(key) and "[[[[" in message


def test_hostile_set_value_through_the_cli(capsys):
    assert "aliases" in cli_error(capsys, "config", "--set", f"search.seeds={alias_bomb()}")


def test_deep_nesting_in_a_run_config(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text(f"search:\n  seeds: {DEEP_YAML}\n")
    message = assert_refused_quickly(lambda: load_config(RunConfig, path), ConfigError)
    assert message.startswith(f"{path}") and "nesting depth" in message


@pytest.mark.parametrize("depth", [51, 900])
def test_nesting_is_bounded_below_what_the_parser_allows(tmp_path, depth):
    path = tmp_path / "run.yaml"
    path.write_text(f"name: x\nsearch: {{seeds: {'[' * depth}{']' * depth}}}\n")
    message = assert_refused_quickly(lambda: load_config(RunConfig, path), ConfigError)
    assert message.startswith(f"{path}, line 2: nested deeper than {MAX_YAML_DEPTH} levels")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (f"name: [{', '.join(['lol'] * 5_000)}]", "name must be a string, got [" + "'lol', " * 4 + "...]"),
        (
            f"search: {{seeds: {'x' * 500_000}}}",
            "search.seeds must be 'all' or a list of seed names, got 'xxx",
        ),
        (f"search: {{seeds: [{'x' * 500_000}]}}", "search.seeds: unknown seeds xxx"),
        (f"search: {{{'k' * 1000}: 1}}", "unknown key search.kkk"),
        (
            f"search: {{mutation_weights: {{insert: 1{'0' * 400}}}}}",
            "search.mutation_weights.insert is too large",
        ),
    ],
    ids=["long_list", "long_string", "long_name", "long_key", "huge_number"],
)
def test_huge_values_are_quoted_briefly(tmp_path, text, message):
    """Without aliases a value is as large as its file: in the wrong place it is named and quoted
    in part, not printed whole."""
    path = tmp_path / "run.yaml"
    path.write_text(text + "\n")
    assert assert_refused_quickly(lambda: load_config(RunConfig, path), ConfigError).startswith(message)


@pytest.mark.parametrize(
    "text",
    [
        f"vectors: {{v: 1{'0' * 400}}}\nformula: x * v",
        f"formula: x * 1{'0' * 400}",
        f"hyperparameters: {{eps: 1{'0' * 400}}}\nformula: x / batch_std(x)",
        f"formula: {'x' * 300} * x",
        f"nodes: [{{name: n, op: {'a' * 500_000}, inputs: [x]}}]\noutput: n",
    ],
    ids=["vector_init", "constant", "hyperparameter", "long_name", "long_op"],
)
def test_huge_numbers_and_names_in_a_graph_file(tmp_path, text):
    """Integers too large for a float, and names too long to quote, are one short line."""
    path = tmp_path / "g.yaml"
    path.write_text(f"evosearch_graph: 1\n{text}\n")
    assert_refused_quickly(lambda: load_graph(path))


def test_yaml_the_project_writes_still_loads():
    """Plain YAML, as every shipped config and written run file is, loads as before."""
    config = load_run_config("quickstart", ["search.seeds=[bn_relu, evonorm_b0]", "probes.seed=3"])
    assert config.search.seeds == ["bn_relu", "evonorm_b0"] and config.probes.seed == 3
    task = load_config(TaskConfig, None, ["train.steps=7", "name=with, comma: [not a list"])
    assert task.train.steps == 7 and task.name == "with, comma: [not a list"


# ---- run directories ----------------------------------------------------------------------------


def _run(tmp_path: Path) -> RunDirectory:
    return RunDirectory(write_handmade_run(tmp_path / "run", [trained_record(0, ["resnet"])], ["resnet"]))


@pytest.mark.parametrize("text", [f"name: {alias_bomb()}", DEEP_YAML])
def test_hostile_run_directory_config(tmp_path, text):
    run = _run(tmp_path)
    run.config_path.write_text(text + "\n")
    assert_refused_quickly(run.read_config_data)


@pytest.mark.parametrize("text", [f"objectives: {alias_bomb()}", DEEP_YAML])
def test_hostile_run_directory_tasks(tmp_path, text):
    run = _run(tmp_path)
    run.tasks_path.write_text(text + "\n")
    assert_refused_quickly(run.objectives)


def test_deeply_nested_checkpoint(tmp_path):
    run = _run(tmp_path)
    run.checkpoint_path.write_text("[" * DEEP + "]" * DEEP)
    assert "unreadable" in assert_refused_quickly(run.load_checkpoint)


def test_deeply_nested_event_line_is_bad_data_not_a_crash(tmp_path):
    run = _run(tmp_path)
    good = run.events_path.read_text()
    with open(run.events_path, "a") as f:
        f.write("[" * DEEP + "]" * DEEP + "\n")
    assert [r.id for r in run.read_events()] == [json.loads(good)["id"]]


# ---- bounded quotes -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        ("short", "'short'"),
        (3, "3"),
        ("x" * 10_000, "'xxxxxxxx"),
        (10**5000, "<an integer of 5001 digits>"),
        ([list(range(1000))] * 1000, "[[0, 1, 2,"),
        ("\x1b[31mred", r"'\x1b[31mred'"),
    ],
    ids=["short", "int", "long_str", "huge_int", "big_list", "ansi"],
)
def test_brief_is_bounded(value, shown):
    text = brief(value)
    assert text.startswith(shown) and len(text) <= 80


def test_brief_does_not_walk_a_shared_structure():
    """What an alias bomb builds, were it loaded: a few objects, a billion leaves."""
    value = yaml.safe_load(alias_bomb())
    start = time.perf_counter()
    assert len(brief(value)) <= 80
    assert time.perf_counter() - start < 0.1
