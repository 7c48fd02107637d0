"""The package's layering: which folder may import which, and what stays free of torch.

Dependencies point one way (the README's architecture picture):

    primitives  <-  layers  <-  tasks  <-  probes  <-  runner  <-  cli
                        ^---  search  <-----------------'

The shared helpers at the top of ``evosearch/`` (errors, config, files, text) import none of the folders.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "evosearch"

# Each part of the package and the parts it may import from (itself always).
FOUNDATION = {"errors", "config", "files", "text", "outcomes"}
ALLOWED = {
    "foundation": {"foundation", "primitives"},
    "primitives": set(),
    "layers": {"foundation", "primitives"},
    "tasks": {"foundation", "primitives", "layers"},
    "probes": {"foundation", "primitives", "layers", "tasks"},
    "search": {"foundation", "primitives", "layers"},
    "runner": {"foundation", "primitives", "layers", "tasks", "probes", "search"},
    "cli": {"foundation", "primitives", "layers", "tasks", "probes", "search", "runner"},
}


def part_of(module: str) -> str | None:
    """The layer a dotted module name belongs to; None outside the project."""
    parts = module.split(".")
    if parts[0] == "primitives":
        return "primitives"
    if parts[0] != "evosearch" or len(parts) == 1:
        return "foundation" if parts == ["evosearch"] else None
    return "foundation" if parts[1] in FOUNDATION else parts[1]


def imported_modules(path: Path) -> set[str]:
    """Every project module a file imports, at the top or inside a function."""
    tree = ast.parse(path.read_text())
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.add(node.module)
    return {m for m in out if part_of(m) is not None}


def source_files() -> list[Path]:
    files = sorted([*PACKAGE.rglob("*.py"), *(ROOT / "primitives").rglob("*.py")])
    return [f for f in files if f != PACKAGE / "__init__.py"]  # the public API re-exports every layer


def module_name(path: Path) -> str:
    return ".".join(path.relative_to(ROOT).with_suffix("").parts)


def test_every_folder_is_a_known_layer():
    folders = {p.name for p in PACKAGE.iterdir() if p.is_dir() and not p.name.startswith("__")}
    assert folders <= set(ALLOWED), f"a new folder needs its place in the layering: {folders - set(ALLOWED)}"
    modules = {p.stem for p in PACKAGE.glob("*.py")} - {"__init__"}
    assert modules <= FOUNDATION, f"top-level modules are shared helpers only: {modules - FOUNDATION}"


@pytest.mark.parametrize("path", source_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_imports_point_down_the_layers(path: Path):
    here = part_of(module_name(path))
    wrong = {m for m in imported_modules(path) if part_of(m) not in ALLOWED[here] | {here}}
    assert not wrong, f"{path.relative_to(ROOT)} ({here}) imports {sorted(wrong)}"


def test_graph_and_search_modules_import_without_torch():
    code = (
        "import sys, evosearch, evosearch.layers.graph, evosearch.layers.formula, "
        "evosearch.layers.graph_io, evosearch.layers.seeds, evosearch.search.evolution, "
        "evosearch.search.mutation; "
        "print(sorted(m for m in ('torch', 'ray', 'matplotlib') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr


def test_every_public_name_resolves():
    import evosearch

    for name in evosearch.__all__:
        assert getattr(evosearch, name) is not None, name
    assert set(evosearch.__all__) <= set(dir(evosearch))
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        evosearch.nope  # noqa: B018


def test_reserved_names_cover_every_module_attribute():
    """The static list stands in for dir(nn.Module) so graphs load without torch: it must keep up."""
    from torch import nn

    from evosearch.layers.graph import RESERVED_NAMES

    public = {name for name in dir(nn.Module) if not name.startswith("_")}
    assert public <= RESERVED_NAMES, f"add to MODULE_ATTRIBUTES: {sorted(public - RESERVED_NAMES)}"
