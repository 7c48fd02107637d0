"""``report.html`` shows what a run holds as text: a record, a task name or the run's own name that
holds HTML or script never runs in the browser of whoever opens the report.

A run written by hand carries hostile strings in every field a record has and in its name, objective
names and directory; the page must parse to the report's own elements and attributes only, with every
payload in its text. Where Debian's ``chromium`` is installed, a real headless browser opens the page
and must run none of the payloads, which it runs on a page that does not escape them.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest
from helpers import cli_json, trained_record, write_handmade_run

from evosearch.cli import main
from evosearch.layers.graph_io import graph_to_dict
from evosearch.layers.seeds import seed_graph


def script(k: int) -> str:
    """JavaScript that, if it runs, marks the page with ``PWNED<11k>``: text no payload holds."""
    return f"document.documentElement.setAttribute('data-x{k}',String.fromCharCode(80,87,78,69,68)+{k}*11)"


# Element content, a double- and a single-quoted attribute; the first holds no "/", so that it may
# also name the run, a directory. The last is mathtext that does not parse, for the plots.
PAYLOADS = [
    f'<img src=x onerror="{script(1)}">',
    f"<script>{script(2)}</script>",
    f'"><svg onload="{script(3)}">',
    f'\'><svg onload="{script(4)}">',
    "$x^$ &amp;",
]
HOSTILE = "".join(PAYLOADS)
RUN_NAME = PAYLOADS[0] + PAYLOADS[-1]
MARKS = {f"PWNED{k * 11}" for k in range(1, 5)}

# What the report itself is made of: anything else in the page came out of the data.
TAGS = {
    "html",
    "head",
    "meta",
    "title",
    "style",
    "body",
    "h1",
    "h2",
    "p",
    "table",
    "tr",
    "th",
    "td",
    "code",
    "img",
}
ATTRIBUTES = {"lang", "charset", "alt", "src"}


def hostile_run(root: Path) -> Path:
    """A run whose name, objectives and records hold :data:`HOSTILE` wherever a string goes: a trained
    candidate, a trained seed (its name goes into a plot's legend), a rejection (its reason too), and
    the best candidate of all, whose id is not a number."""
    objectives = [f"{HOSTILE}1", f"{HOSTILE}2"]
    graph = {**graph_to_dict(seed_graph("bn_relu")), "name": HOSTILE}
    everywhere = {
        "origin": HOSTILE,
        "formula": HOSTILE,
        "structural_hash": HOSTILE,
        "graph": graph,
        "mutation": {"kind": HOSTILE, HOSTILE: HOSTILE},
        "fingerprint": HOSTILE,
        "reasons": [f"{HOSTILE}: {HOSTILE}"],
        "probe": {"metrics": {HOSTILE: 1.5, "gradient_ratio": 2.0}, HOSTILE: HOSTILE},
        "tasks": [{"task": o, "exit_reason": "completed", "top1": 0.5, HOSTILE: HOSTILE} for o in objectives],
        "seconds": {HOSTILE: 1.0},
    }
    records = [
        trained_record(0, objectives, **everywhere, scores=[0.5, 0.7]),
        trained_record(1, objectives, **{**everywhere, "origin": "seed"}, scores=[0.6, 0.4]),
        trained_record(2, objectives, **{**everywhere, "status": "rejected", "scores": None, "tasks": []}),
        trained_record(HOSTILE, objectives, **everywhere, scores=[0.9, 0.9]),  # refused on load
    ]
    return write_handmade_run(root, records, objectives, name=RUN_NAME)


class Page(HTMLParser):
    """A page's elements with their attributes, and its text, as a browser's parser splits them."""

    def __init__(self, text: str):
        super().__init__(convert_charrefs=True)
        self.elements: list[tuple[str, list[tuple[str, str | None]]]] = []
        self.text = ""
        self.feed(text)
        self.close()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.elements.append((tag, attrs))

    def handle_data(self, data: str) -> None:
        self.text += data


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> Path:
    """The hostile run's report, written once for the module."""
    run = hostile_run(tmp_path_factory.mktemp("hostile"))
    assert main(["report", str(run)]) == 0
    return run / "report.html"


def test_every_hostile_string_is_text_in_the_page(report):
    page = Page(report.read_text())
    assert {tag for tag, _ in page.elements} <= TAGS
    assert {name for _, attrs in page.elements for name, _ in attrs} <= ATTRIBUTES
    images = [dict(attrs) for tag, attrs in page.elements if tag == "img"]
    assert len(images) == 4 and all(i["src"].startswith("data:image/png;base64,") for i in images)
    assert page.text.count(HOSTILE) >= 5  # objectives, layer names, origin, formula, probe metric
    assert page.text.count(RUN_NAME) >= 2  # the title and the heading
    assert "<script" not in report.read_text().lower()


def test_a_record_odd_where_its_type_allows_still_reports(tmp_path, capsys):
    """What load checks is a record's field types; inside ``graph`` and ``probe`` anything goes."""
    odd = [{"graph": {}}, {"graph": {"name": 5}}, {"probe": {"metrics": [1.0, 2.0]}}]
    records = [trained_record(i, ["tiny"], origin="seed", **fields) for i, fields in enumerate(odd)]
    data = cli_json(capsys, "report", str(write_handmade_run(tmp_path, records, ["tiny"])))
    assert [row["name"] for row in data["top"]] == ["layer", "layer", "bn_relu"]
    assert data["probes"] == []


def dump_dom(page: Path, profile: Path) -> str:
    """The page's DOM after a headless Chromium loaded it (scripts, and image errors, included)."""
    command = [
        "chromium",
        "--headless",
        "--disable-gpu",
        "--no-first-run",
        "--disable-extensions",
        "--disable-background-networking",
        f"--user-data-dir={profile}",
        "--dump-dom",
        page.as_uri(),
    ]
    if os.geteuid() == 0:
        command.insert(1, "--no-sandbox")  # Chromium's sandbox refuses to start as root
    return subprocess.run(command, capture_output=True, text=True, timeout=30, check=True).stdout


@pytest.mark.skipif(
    shutil.which("chromium") is None,
    reason="no chromium to open the report in (Debian: apt-get install chromium)",
)
def test_a_browser_runs_none_of_it(report, tmp_path):
    unescaped = tmp_path / "unescaped.html"
    unescaped.write_text(f"<!DOCTYPE html><html><body>{HOSTILE}</body></html>")
    assert set(re.findall(r"PWNED\d+", dump_dom(unescaped, tmp_path / "profile"))) == MARKS  # they work
    assert not re.findall(r"PWNED\d+", dump_dom(report, tmp_path / "profile"))
