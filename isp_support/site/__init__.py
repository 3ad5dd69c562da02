"""The course site: the executed notebooks of a run as a static, offline book.

:func:`build_site` renders what papermill produced under ``RUN_DIR/notebooks/``; it
executes nothing. It is built with what Jupyter Book 1.x is made of, Sphinx with
myst-nb and the sphinx-book-theme, driven by a ``conf.py`` of its own instead of
the ``jupyter-book`` command (which always adds sphinx-thebe: a script pointing at
unpkg.com, loaded twice, a console error on every page). Sphinx was chosen over
mkdocs-jupyter because its search index is a plain script, so the search box works
from ``file://`` as well as over HTTP, and the theme ships its own fonts and icons.
Nothing is fetched from the network: no MathJax (the series has no math), no
widget scripts from a CDN (each widget has a static fallback figure), no launch or
repository buttons.

Pages: a landing page (the method, the pipeline figure, the ablation table with its
verdicts, links to every chapter), one page per notebook, and a page for the run
(``run.json``: config, versions, seed, device, commit; ``series.json``: timings).

*A run folder is untrusted content* (the site is meant to be published, and a run may come from someone else).
Nothing from it may read the builder's files or run script in a reader's browser:

* markdown cells and markdown outputs lose what MyST would act on: directives (`` ```{include} ``) and roles
  (``{download}`...` ``) are shown as text, links and images to anything but ``http(s)``, ``mailto`` and ``#``
  anchors become their text (Sphinx would copy a linked local file into the site), raw HTML is shown as text
  (code spans and code blocks are left as they are: they are text already);
* HTML outputs (pandas tables) keep an allow-list of tags and attributes (:data:`HTML_TAGS`, via ``nh3``): no
  script, style, event handler or link to a local file; outputs of any other rich type than text, PNG and JPEG
  (JavaScript, SVG, widget views) are dropped;
* values from ``run.json``, ``series.json`` and the metrics are escaped text on the landing and run pages;
* an executed notebook that did not finish (papermill left cells running or pending: a killed run) is refused.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import nbformat

from ..artifacts import atomic_directory, atomic_write_json, require_replaceable
from ..io import DataError, read_json
from ..runs import RunLayout
from ..series import series_notebooks
from .course import COURSE_FILE, SITE_CSS, Course, CourseError, conf_py, load_course
from .inert import HTML_ATTRIBUTES, HTML_TAGS, KEPT_OUTPUTS, inert_markdown, inert_notebook, plain
from .pages import TITLE, favicon, landing, pipeline_figure, run_page

__all__ = ["COURSE_FILE", "HTML_ATTRIBUTES", "HTML_TAGS", "KEPT_OUTPUTS", "SITE_RECORD", "Course", "SiteError",
           "build_site", "executed_notebooks", "inert_markdown", "inert_notebook", "load_course", "plain",
           "site_files"]
_landing = landing  # the name tests and older callers use


class SiteError(Exception):
    """A run the site cannot be built from: notebooks missing or ended in an error."""


def executed_notebooks(run_dir: str | Path, notebooks_dir: str | Path) -> list[Path]:
    """The run's executed copy of every series notebook; a missing one or one with an error is a :class:`SiteError`."""
    run_dir = Path(run_dir)
    names = [p.name for p in series_notebooks(notebooks_dir)]
    if not names:
        raise SiteError(f"{notebooks_dir}: no series notebooks (NN_name.ipynb) to name the chapters; pass the "
                        f"project's notebooks folder")
    executed = [RunLayout(run_dir).notebooks / name for name in names]
    missing = [p.name for p in executed if not p.is_file()]
    if missing:
        raise SiteError(f"{RunLayout(run_dir).notebooks}: no executed {', '.join(missing)}; run the series first "
                        f"(make demo, or isp-support run-series --run-dir {run_dir})")
    for path in executed:
        error = _first_error(path)
        if error:
            raise SiteError(f"{path}: the notebook ended in an error ({error}); fix it and run the series again")
    return executed


def _first_error(path: Path) -> str | None:
    try:
        nb = nbformat.read(path, as_version=4)
    except Exception as exc:  # nbformat raises JSON, validation and OS errors
        return f"unreadable: {exc}"
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            if out.get("output_type") == "error":
                return f"{out.get('ename')}: {out.get('evalue')}"
    if nb.metadata.get("papermill", {}).get("exception"):
        return "papermill recorded an exception"
    unfinished = [i for i, cell in enumerate(nb.cells)
                  if cell.get("metadata", {}).get("papermill", {}).get("status") in ("running", "pending")]
    if unfinished:
        return f"it did not finish: papermill left cell {unfinished[0]} and {len(unfinished) - 1} more unrun (killed?)"
    return None


def build_site(run_dir: str | Path, notebooks_dir: str | Path, out_dir: str | Path | None = None,
               log=print, course: str | Path | Course | None = None) -> Path:
    """Build the site of ``run_dir`` into ``out_dir`` (default ``RUN_DIR/site``), atomically; returns ``out_dir``.

    ``notebooks_dir`` is the series' source folder (it names the chapters). The run's
    executed notebooks are rendered as they are (``nb_execution_mode = "off"``). ``course``: a
    :class:`Course` or its TOML file (default: ``course.toml`` beside ``notebooks_dir``, when there is one).
    """
    run_dir = Path(run_dir)
    course = _course(course, Path(notebooks_dir).resolve().parent / COURSE_FILE)
    out_dir = Path(out_dir) if out_dir is not None else RunLayout(run_dir).site
    if out_dir.exists() or out_dir.is_symlink():
        require_replaceable(out_dir, site_files, "build-site")
    executed = executed_notebooks(run_dir, notebooks_dir)
    with tempfile.TemporaryDirectory(prefix="isp-site-") as tmp:
        book = Path(tmp) / "book"
        _write_book(book, run_dir, executed, course)
        html = Path(tmp) / "html"
        cmd = [sys.executable, "-m", "sphinx", "-b", "html", "-q", "-d", str(Path(tmp) / "doctrees"), str(book),
               str(html)]
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode != 0:
            raise SiteError(f"sphinx-build failed ({done.returncode}):\n{done.stdout[-4000:]}{done.stderr[-4000:]}")
        with atomic_directory(out_dir, overwrite=True, owned=site_files, made_by="build-site") as target:
            shutil.copytree(html, target, dirs_exist_ok=True)
            files = sorted(str(p.relative_to(target)) for p in target.rglob("*") if not p.is_dir())
            atomic_write_json(target / SITE_RECORD, {"made_by": "build-site", "files": [*files, SITE_RECORD]})
    log(f"[site] {out_dir / 'index.html'} ({len(executed)} chapters)")
    return out_dir


# --- the book's sources -------------------------------------------------------------------------------

def _course(course: str | Path | Course | None, default: Path) -> Course:
    if isinstance(course, Course):
        return course
    try:
        return load_course(course if course is not None else default if default.is_file() else None)
    except CourseError as exc:
        raise SiteError(str(exc)) from exc


def _write_book(book: Path, run_dir: Path, executed: list[Path], course: Course) -> None:
    (book / "notebooks").mkdir(parents=True)
    for path in executed:
        nb = nbformat.read(path, as_version=4)
        nbformat.write(inert_notebook(nb), book / "notebooks" / path.name)
    (book / "images").mkdir()
    pipeline_figure(book / "images" / "pipeline.png", [p.stem for p in executed])
    favicon(book / "images" / "favicon.png")
    (book / "_static").mkdir()
    (book / "_static" / "course.css").write_text(SITE_CSS, encoding="utf-8")
    layout = RunLayout(run_dir)
    record = _read_json(layout.record)
    methods = _read_mapping(record, "config", "evaluate").get("methods")
    methods = [str(m) for m in methods] if isinstance(methods, list) else []
    page = landing(_read_json(layout.metrics("06_evaluate")), [p.stem for p in executed], methods, course)
    (book / "index.md").write_text(page, encoding="utf-8")
    (book / "run.md").write_text(run_page(record, _read_json(layout.series)), encoding="utf-8")
    (book / "conf.py").write_text(conf_py(TITLE, course), encoding="utf-8")


def _read_mapping(record: Any, *keys: str) -> dict[str, Any]:
    for key in keys:
        record = record.get(key) if isinstance(record, dict) else None
    return record if isinstance(record, dict) else {}



SITE_RECORD = ".isp-support-site.json"
"""The list of files ``build-site`` wrote into a site folder: it replaces a folder only when it holds nothing else."""


def site_files(folder: Path) -> set[str] | None:
    """The files ``build-site`` made in ``folder`` by its record (``None``: no record, not a site of ours)."""
    try:
        record = read_json(folder / SITE_RECORD)
    except DataError:
        return None
    files = record.get("files") if isinstance(record, dict) else None
    return set(map(str, files)) if isinstance(files, list) else None


def _read_json(path: Path) -> dict[str, Any]:
    try:
        record = read_json(path)
    except DataError:
        return {}
    return record if isinstance(record, dict) else {}
