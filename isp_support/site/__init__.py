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

import json
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import nbformat
import nh3

from ..artifacts import atomic_directory, atomic_write_json, require_replaceable
from ..io import DataError, read_json
from ..runs import RunLayout
from ..series import series_notebooks

"""Where ``make site`` writes the site inside the run folder: ``RUN_DIR/site/index.html``."""
TITLE = "Unpaired smartphone ISP with semantic pseudo-pairing"
STEPS = {"01": "fixed RAW pipeline", "02": "grids, full images", "03": "descriptors, FGW + patch OT",
         "04": "7K net on pseudo pairs", "05": "adversarial refinement", "06": "metrics, ablations, export"}
"""What each notebook does, by its number, for the pipeline figure."""
ABLATION_COLUMNS = ("psnr", "psnr sd", "ssim", "delta_e2000", "delta_e2000 sd", "parameters", "seeds")

METHOD = """\
A smartphone ISP is learned from RAW photos of one camera and sRGB photos of
another, with no pixel-aligned pairs between them. Each RAW patch goes through a
fixed pipeline (black level, demosaicking, denoising, gamma), then descriptors of
a frozen backbone pair every source patch with target patches of similar content
by fused Gromov-Wasserstein and patch-level optimal transport. A 7K-parameter
colour network is trained on these pseudo pairs with colour-moment, histogram,
Gram and smoothness losses (stage 1) and refined adversarially (stage 2). The
ablation table scores every choice against ground truth that no unpaired method
has seen.
"""


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
               log=print) -> Path:
    """Build the site of ``run_dir`` into ``out_dir`` (default ``RUN_DIR/site``), atomically; returns ``out_dir``.

    ``notebooks_dir`` is the series' source folder (it names the chapters). The run's
    executed notebooks are rendered as they are (``nb_execution_mode = "off"``).
    """
    run_dir = Path(run_dir)
    out_dir = Path(out_dir) if out_dir is not None else RunLayout(run_dir).site
    if out_dir.exists() or out_dir.is_symlink():
        require_replaceable(out_dir, site_files, "build-site")
    executed = executed_notebooks(run_dir, notebooks_dir)
    with tempfile.TemporaryDirectory(prefix="isp-site-") as tmp:
        book = Path(tmp) / "book"
        _write_book(book, run_dir, executed)
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

def _write_book(book: Path, run_dir: Path, executed: list[Path]) -> None:
    (book / "notebooks").mkdir(parents=True)
    for path in executed:
        nb = nbformat.read(path, as_version=4)
        nbformat.write(inert_notebook(nb), book / "notebooks" / path.name)
    (book / "images").mkdir()
    _pipeline_figure(book / "images" / "pipeline.png", [p.stem for p in executed])
    _favicon(book / "images" / "favicon.png")
    layout = RunLayout(run_dir)
    metrics = _read_json(layout.metrics("06_evaluate"))
    (book / "index.md").write_text(_landing(metrics, [p.stem for p in executed]), encoding="utf-8")
    (book / "run.md").write_text(_run_page(_read_json(layout.record), _read_json(layout.series)),
                                 encoding="utf-8")
    (book / "conf.py").write_text(_CONF, encoding="utf-8")


_CONF = f"""\
project = {TITLE!r}
html_title = project
extensions = ["myst_nb"]
exclude_patterns = ["_build", "**/.ipynb_checkpoints"]
nb_execution_mode = "off"
nb_ipywidgets_js = {{}}
html_theme = "sphinx_book_theme"
html_theme_options = {{"use_download_button": False, "use_fullscreen_button": False,
                      "search_bar_text": "Search the series...", "show_toc_level": 2}}
html_context = {{"default_mode": "light"}}
html_show_sourcelink = False
html_copy_source = False
html_show_search_summary = False  # summaries fetch() each page, which file:// forbids
html_favicon = "images/favicon.png"  # without one, browsers ask a server for /favicon.ico (a 404)
"""


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


# --- untrusted content (see the module docstring) ------------------------------------------------------

HTML_TAGS = {"table", "thead", "tbody", "tfoot", "tr", "th", "td", "caption", "colgroup", "col", "div", "span", "p",
             "br", "b", "i", "em", "strong", "code", "pre", "ul", "ol", "li", "sub", "sup", "img", "small"}
HTML_ATTRIBUTES = {"*": {"class", "title"}, "td": {"colspan", "rowspan"}, "th": {"colspan", "rowspan", "scope"},
                   "img": {"src", "alt", "width", "height"}}
KEPT_OUTPUTS = {"text/plain", "text/html", "text/markdown", "image/png", "image/jpeg"}
_CODE = re.compile(r"(^[ \t]*(?:`{3,}|~{3,}).*?^[ \t]*(?:`{3,}|~{3,})[ \t]*$|`+[^`]*?`+)", re.S | re.M)
_FENCE_INFO = re.compile(r"^([ \t]*(?:`{3,}|~{3,}|:{3,}))[ \t]*\{[^}\n]*\}", re.M)
_ROLE = re.compile(r"\{([A-Za-z][\w:+.-]*)\}(?=`)")
_LINK = re.compile(r"(!?)\[([^\]\n]*)\]\(([^)\n]*)\)")
_LINK_DEF = re.compile(r"^[ \t]*\[[^\]\n]+\]:.*$", re.M)
_SAFE_URL = re.compile(r"^\s*<?(https?://|mailto:|#)", re.I)


def inert_markdown(text: str) -> str:
    """Markdown from a run folder with nothing MyST or a browser would act on (see the module docstring)."""
    text = _FENCE_INFO.sub(r"\1text", _ROLE.sub(r"\\{\1\\}", text))
    parts = _CODE.split(text)
    for i in range(0, len(parts), 2):  # outside code spans and blocks
        part = _LINK.sub(lambda m: m[0] if _SAFE_URL.match(m[3]) else m[2], parts[i])
        part = _LINK_DEF.sub(lambda m: m[0] if _SAFE_URL.match(m[0].split("]:", 1)[1]) else "", part)
        parts[i] = re.sub(r"<(?=[A-Za-z/!?])", "&lt;", part).replace(":::", "\\:::")
    return "".join(parts)


def inert_notebook(nb: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """A copy of an executed notebook fit to publish: :func:`inert_markdown` on markdown, raw cells as text,
    HTML outputs cleaned to :data:`HTML_TAGS`, other rich outputs than :data:`KEPT_OUTPUTS` dropped."""
    nb = nbformat.from_dict(json.loads(json.dumps(nb)))
    for cell in nb.cells:
        if cell.cell_type in ("markdown", "raw"):
            cell.cell_type = "markdown"
            cell.source = inert_markdown(cell.source)
            cell.pop("attachments", None)
        for out in cell.get("outputs", []):
            data = out.get("data")
            if not data:
                continue
            for mime in [m for m in data if m not in KEPT_OUTPUTS]:
                del data[mime]
            if "text/html" in data:
                data["text/html"] = nh3.clean(_text(data["text/html"]), tags=HTML_TAGS, attributes=HTML_ATTRIBUTES,
                                              url_schemes={"https", "http", "data"})
            if "text/markdown" in data:
                data["text/markdown"] = inert_markdown(_text(data["text/markdown"]))
    return nb


def _text(value: Any) -> str:
    return "".join(value) if isinstance(value, list) else str(value)


def plain(value: Any) -> str:
    """A value from a run's records as literal text in a markdown page: one line, every markdown and HTML sign
    escaped (so no directive, role, link, table cell break or tag)."""
    text = " ".join(str(value).split())
    return re.sub(r"([\\`*_{}\[\]()#+!|:<>$&~-])", r"\\\1", text)


def _landing(metrics: dict[str, Any], chapters: list[str]) -> str:
    lines = [f"# {TITLE}", "", METHOD, "```{image} images/pipeline.png", ":alt: the six notebooks of the series",
             ":width: 100%", "```", "", "## The chapters", ""]
    lines += [f"- {{doc}}`notebooks/{stem}`" for stem in chapters] + ["- {doc}`run`", ""]
    lines += ["```{toctree}", ":hidden:", ""] + [f"notebooks/{stem}" for stem in chapters] + ["run", "```", ""]
    table = _mapping(metrics.get("table"))
    checks = metrics.get("checks") if isinstance(metrics.get("checks"), list) else []
    lines += ["## The ablation table", ""]
    if not table and metrics.get("scored") is False:
        lines += [f"Split {plain(metrics.get('split'))} has no ground truth (the challenge's layout), so this run has "
                  f"no ablation table; notebook 06 reports the figures that need no reference and writes the "
                  f"submission ({', '.join(plain(k) for k in metrics.get('submissions') or {}) or 'none'}).", ""]
        return "\n".join(lines)
    if not table:
        lines += ["This run has no ablation table (notebook 06 wrote no `metrics/06_evaluate.json`).", ""]
        return "\n".join(lines)
    lines += [f"Split {plain(metrics.get('split'))}: {plain(metrics.get('scenes'))} scenes, "
              f"{plain(metrics.get('patches'))} patches; seeds {plain(metrics.get('seeds'))}. PSNR and SSIM: higher is "
              f"better; CIEDE2000: lower.", ""]
    cols = [c for c in ABLATION_COLUMNS if any(c in row for row in table.values())]
    lines += ["| row | " + " | ".join(cols) + " |", "|---|" + "---|" * len(cols)]
    lines += [f"| {plain(key)} | " + " | ".join(_cell(row.get(c)) for c in cols) + " |"
              for key, row in table.items() if isinstance(row, dict)]
    lines += ["", "### Verdicts", ""] + [inert_markdown(" ".join(str(c).split())) for c in checks]
    return "\n".join(lines + [""])
    return "\n".join(lines)


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return "-" if value != value else f"{value:.3f}"
    return "-" if value is None else plain(value)


def _run_page(run: dict[str, Any], series: dict[str, Any]) -> str:
    """The run's page; every value from its records is escaped text (:func:`plain`)."""
    config, versions = _mapping(run.get("config")), _mapping(run.get("versions"))
    entry = _mapping(next(iter(_mapping(run.get("notebooks")).values()), {}))
    lines = ["# The run", "", f"- profile: {plain(config.get('profile'))}", f"- seed: {plain(run.get('seed'))}",
             f"- device: {plain(run.get('device'))} ({plain(entry.get('device_description', 'unknown'))})",
             f"- commit: {plain(entry.get('git_commit'))}", f"- platform: {plain(entry.get('platform'))}", "",
             "## Series timings", ""]
    seconds = {k: v for k, v in _mapping(series.get("seconds")).items() if isinstance(v, (int, float))}
    if seconds:
        lines += ["| notebook | seconds |", "|---|---|"] + [f"| {plain(k)} | {v:.1f} |" for k, v in seconds.items()]
        lines += [f"| total | {sum(seconds.values()):.1f} |", ""]
    else:
        lines += ["No `series.json` in this run (it was not run by `run-series`).", ""]
    lines += ["## Versions", "", "| package | version |", "|---|---|"]
    lines += [f"| {plain(k)} | {plain(v)} |" for k, v in versions.items()]
    # JSON escapes a backtick as \u0060 just as well: no line of the block can close its fence
    lines += ["", "## Config", "", "```json", json.dumps(config, indent=2).replace("`", "\\u0060"), "```", ""]
    return "\n".join(lines)


def _mapping(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _pipeline_figure(path: Path, chapters: list[str]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(12, 1.8))
    for i, stem in enumerate(chapters):
        ax.add_patch(plt.Rectangle((i * 2, 0), 1.6, 1, facecolor="#dbe9f6", edgecolor="#2b6cb0"))
        number, name = stem.split("_", 1)
        ax.text(i * 2 + 0.8, 0.62, f"{number} {name}", ha="center", va="center", fontsize=9, weight="bold")
        ax.text(i * 2 + 0.8, 0.3, STEPS.get(number, "").replace(", ", ",\n"), ha="center", va="center", fontsize=8)
        if i:
            ax.annotate("", xy=(i * 2, 0.5), xytext=(i * 2 - 0.4, 0.5), arrowprops={"arrowstyle": "->"})
    ax.set_xlim(-0.2, 2 * len(chapters) - 0.2)
    ax.set_ylim(-0.1, 1.1)
    ax.axis("off")
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)


def _favicon(path: Path) -> None:
    """A 32 x 32 icon: the three sRGB primaries over a grey, the series' subject in one glance."""
    import numpy as np
    from PIL import Image

    icon = np.full((32, 32, 3), 96, np.uint8)
    for i, colour in enumerate(((220, 50, 47), (60, 170, 60), (40, 90, 200))):
        icon[6 + 7 * i:11 + 7 * i, 6:26] = colour
    Image.fromarray(icon).save(path)
