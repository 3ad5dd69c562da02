"""Prose that cannot go stale: what a notebook's markdown may say with a number.

A notebook's markdown cells are written once and read after every run, so a result stated there goes stale the
moment a setting, the data or the code changes. The series' rule:

* **a sentence that states a result is generated** from the run's figures, by a code cell that displays it
  (:func:`show`), so it is rewritten on every run;
* **a figure in a markdown cell is a setting**: a value of the run's config or of the paper
  (:data:`isp_support.paper.SETTINGS` and :data:`~isp_support.paper.RESULTS`); anything else is a stale result
  waiting to happen, and :func:`stale_figures` names it.

A *figure* here is a number with a decimal point (``0.0898``, ``16.6``) or a number followed by ``%`` or ``dB``
(``52%``, ``3 dB``). Counts and sizes written as whole numbers (``48 px``, ``10 epochs``, ``7K``) are not figures,
nor are section numbers (``§4.1``, ``Section 4.2``, ``table 2``) and numbers inside a word or a name
(``ViT-S/14``, ``relu1_2``, ``v1.0``). A figure matches a value when it is the value at the figure's printed
precision; a percentage matches a fraction (``52%`` is 0.52) or the number itself.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

import nbformat

from . import paper
from .io import read_json

FIGURE = re.compile(
    r"(?<![\w.§/\\-])(?<!§ )(?<!Section )(?<!section )(?<!Table )(?<!table )(?<!Eq\. )"
    r"[-+−]?(\d+\.\d+|\d+(?=\s*(?:%|dB\b)))(?![\w.]*\d)(\s*%)?")
"""A figure in prose: a decimal, or an integer followed by % or dB (see the module docstring)."""


@dataclass(frozen=True)
class Stale:
    """A figure in a markdown cell that is no setting of the run: a result written by hand."""

    notebook: str
    cell: int
    figure: str
    context: str

    def __str__(self) -> str:
        return f"{self.notebook}, markdown cell {self.cell}: {self.figure!r} is no setting of this run ({self.context})"


def figures(text: str) -> list[tuple[str, float, int, bool, int]]:
    """Every figure in *text*: (as printed, value, decimals printed, is a percentage, position)."""
    found = []
    for m in FIGURE.finditer(text):
        number = m.group(1)
        decimals = len(number.split(".")[1]) if "." in number else 0
        found.append((m.group(0).strip(), abs(float(number)), decimals, bool(m.group(2)), m.start()))
    return found


def numbers_in(value: Any) -> set[float]:
    """Every number in a JSON-like value, including numbers written inside its strings (absolute values)."""
    out: set[float] = set()
    stack = [value]
    while stack:
        v = stack.pop()
        if isinstance(v, bool) or v is None:
            continue
        if isinstance(v, (int, float)):
            if math.isfinite(v):
                out.add(abs(float(v)))
        elif isinstance(v, str):
            out.update(abs(float(x)) for x in re.findall(r"\d+\.\d+|\d+", v))
        elif isinstance(v, dict):
            stack.extend(v.values())
        elif isinstance(v, (list, tuple, set)):
            stack.extend(v)
    return out


def matches(value: float, decimals: int, percent: bool, allowed: Iterable[float]) -> bool:
    """Whether a figure printed with *decimals* decimals is one of *allowed* at that precision."""
    half = 0.5 * 10.0 ** -decimals + 1e-9
    return any(abs(a - value) <= half or (percent and abs(100 * a - value) <= half) for a in allowed)


def stale_figures(nb: nbformat.NotebookNode, allowed: Iterable[float], name: str = "notebook") -> list[Stale]:
    """The figures of *nb*'s markdown cells that are not among *allowed* (the run's settings and the paper's)."""
    allowed = sorted(set(allowed))
    stale = []
    for i, cell in enumerate(nb.cells):
        if cell.cell_type != "markdown":
            continue
        for printed, value, decimals, percent, at in figures(cell.source):
            if not matches(value, decimals, percent, allowed):
                context = " ".join(cell.source[max(0, at - 40):at + len(printed) + 20].split())
                stale.append(Stale(name, i, printed, f"...{context}..."))
    return stale


def settings_of(run_dir: str | Path) -> set[float]:
    """The numbers a run's markdown may state: its config (``run.json``) and the paper's settings and results."""
    run = read_json(Path(run_dir) / "run.json")
    config = run.get("config", {}) if isinstance(run, dict) else {}
    return numbers_in(config) | paper.values()


def check_run(run_dir: str | Path, notebooks: Iterable[str | Path]) -> list[Stale]:
    """Stale figures in the markdown of *notebooks* (paths), judged against the run in *run_dir*."""
    allowed = settings_of(run_dir)
    stale = []
    for path in notebooks:
        path = Path(path)
        stale += stale_figures(nbformat.read(path, as_version=4), allowed, path.name)
    return stale


def show(*lines: str) -> None:
    """Display generated prose (markdown) in a notebook: the way a result is stated in words."""
    from IPython.display import Markdown, display

    display(Markdown("\n".join(lines)))
