"""The site's own pages: the landing page (method, pipeline, ablation table, the run's verdict) and the run's page.

Every value from a run folder is escaped text here (:func:`~.inert.plain`): a run is untrusted content.
"""

from __future__ import annotations

import json
import math
import textwrap
from pathlib import Path
from typing import Any

from .course import Course
from .inert import plain

TITLE = "Unpaired smartphone ISP with semantic pseudo-pairing"
STEPS = {"01": ("Pre-processing", "fixed RAW pipeline"), "02": ("Stitching", "grids, full images"),
         "03": ("Pseudo-pairing", "descriptors, FGW + patch OT"), "04": ("Stage 1", "7K net on pseudo pairs"),
         "05": ("Stage 2", "adversarial refinement"), "06": ("Evaluation", "metrics, ablations, export")}
"""What each notebook does, by its number, for the pipeline figure: a name and a line."""

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

COLUMNS = (("PSNR (dB) ↑", "psnr", 2), ("SSIM ↑", "ssim", 3), ("CIEDE2000 ↓", "delta_e2000", 2))
"""The ablation table's score columns: heading, metric key (its spread is ``KEY sd``), decimals."""

VERDICT_HEADING = "What this run shows"


def landing(metrics: dict[str, Any], chapters: list[str], methods: list[str] | None = None,
            course: Course | None = None) -> str:
    """The landing page's MyST source: ``metrics`` is notebook 06's record, ``methods`` the run's
    ``evaluate.methods`` (the table's row order), ``course`` the course it is handed out for."""
    lines = [f"# {TITLE}", ""]
    if course is not None and course.byline():
        lines += [plain(course.byline()), ""]
    lines += [METHOD, "```{image} images/pipeline.png", ":alt: the six notebooks of the series", ":width: 100%",
              "```", "", "## The chapters", ""]
    lines += [f"- {{doc}}`notebooks/{stem}`" for stem in chapters] + ["- {doc}`run`", ""]
    lines += ["```{toctree}", ":hidden:", ""] + [f"notebooks/{stem}" for stem in chapters] + ["run", "```", ""]
    lines += ["## The ablation table", ""]
    table = _mapping(metrics.get("table"))
    if not table and metrics.get("scored") is False:
        lines += [f"Split {plain(metrics.get('split'))} has no ground truth (the challenge's layout), so this run has "
                  f"no ablation table; chapter 06 reports the figures that need no reference and writes the "
                  f"submission ({', '.join(plain(k) for k in metrics.get('submissions') or {}) or 'none'}).", ""]
        return "\n".join(lines)
    if not table:
        return "\n".join(lines + ["This run has no ablation table yet: chapter 06 has not recorded one.", ""])
    lines += _table_lines(metrics, table, methods or []) + [""] + _verdict_lines(metrics.get("verdict"))
    return "\n".join(lines)


def _table_lines(metrics: dict[str, Any], table: dict[str, Any], methods: list[str]) -> list[str]:
    from ..evaluate.scoring import METHODS

    seeds = metrics.get("seeds") if isinstance(metrics.get("seeds"), list) else []
    lines = [f"Scores on the {plain(metrics.get('split'))} split: the mean over {plain(metrics.get('scenes'))} "
             f"scenes ({plain(metrics.get('patches'))} patches). PSNR and SSIM: higher is better; CIEDE2000, the "
             f"colour difference: lower is better."
             + (f" Where a method was trained with {len(seeds)} seeds ({', '.join(plain(s) for s in seeds)}), "
                f"± gives the standard deviation over the seeds." if len(seeds) > 1 else ""), ""]
    keys = [k for k in methods if k in table] + [k for k in table if k not in methods]
    keys = [k for k in keys if isinstance(table[k], dict)]
    cols = [c for c in COLUMNS if any(c[1] in table[k] for k in keys)]
    extra = [(h, k) for h, k in (("parameters", "parameters"), ("seeds", "seeds")) if any(k in table[r] for r in keys)]
    heads = [h for h, _, _ in cols] + [h for h, _ in extra]
    lines += ["```{table}", ":class: ablation", "", "| method | " + " | ".join(heads) + " |",
              "|:---|" + "---:|" * (len(cols) + len(extra))]
    for key in keys:
        row = table[key]
        label = METHODS[key].label if key in METHODS else key
        cells = [_score(row.get(m), row.get(f"{m} sd"), digits) for _, m, digits in cols]
        cells += [_count(row.get(k)) for _, k in extra]
        lines.append(f"| {plain(label)} | " + " | ".join(cells) + " |")
    return lines + ["```"]


def _verdict_lines(verdict: Any) -> list[str]:
    """Notebook 06's ``verdict`` (plain-text sentences) as a list under its heading; nothing when absent."""
    sentences = [verdict] if isinstance(verdict, str) else verdict if isinstance(verdict, list) else []
    sentences = [" ".join(str(s).split()) for s in sentences if str(s).strip()]
    if not sentences:
        return []
    return [f"## {VERDICT_HEADING}", ""] + [f"- {plain(s)}" for s in sentences] + [""]


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return float(value)


def _score(mean: Any, spread: Any, digits: int) -> str:
    """``18.29 ± 1.43`` (a spread only where several seeds gave one); ``-`` where there is no number."""
    if _number(mean) is None:
        return plain(mean) if isinstance(mean, str) else "-"
    text = f"{_number(mean):.{digits}f}"
    return text + (f" ± {_number(spread):.{digits}f}" if _number(spread) is not None else "")


def _count(value: Any) -> str:
    number = _number(value)
    if number is None:
        return plain(value) if isinstance(value, str) else "-"
    return f"{number:,.0f}" if number == int(number) else f"{number:,.2f}"


def run_page(run: dict[str, Any], series: dict[str, Any]) -> str:
    """The run's page; every value from its records is escaped text (:func:`plain`)."""
    config, versions = _mapping(run.get("config")), _mapping(run.get("versions"))
    entry = _mapping(next(iter(_mapping(run.get("notebooks")).values()), {}))
    lines = ["# The run", "", f"- profile: {plain(config.get('profile'))}", f"- seed: {plain(run.get('seed'))}",
             f"- device: {plain(run.get('device'))} ({plain(entry.get('device_description', 'unknown'))})",
             f"- commit: {plain(entry.get('git_commit'))}", f"- platform: {plain(entry.get('platform'))}", "",
             "## How long each chapter took", ""]
    seconds = {k: v for k, v in _mapping(series.get("seconds")).items() if isinstance(v, (int, float))}
    if seconds:
        lines += ["| chapter | seconds |", "|---|---:|"] + [f"| {plain(k)} | {v:.1f} |" for k, v in seconds.items()]
        lines += [f"| total | {sum(seconds.values()):.1f} |", ""]
    else:
        lines += ["This run has no timings (its chapters were not run as one series).", ""]
    lines += ["## Versions", "", "| package | version |", "|---|---|"]
    lines += [f"| {plain(k)} | {plain(v)} |" for k, v in versions.items()]
    # JSON escapes a backtick as \u0060 just as well: no line of the block can close its fence
    lines += ["", "## Config", "", "```json", json.dumps(config, indent=2).replace("`", "\\u0060"), "```", ""]
    return "\n".join(lines)


def _mapping(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def pipeline_figure(path: Path, chapters: list[str]) -> None:
    """The six chapters as boxes with arrows, sized for the site's column."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.8, 1.3))
    for i, stem in enumerate(chapters):
        ax.add_patch(plt.Rectangle((i * 2, 0), 1.8, 1, facecolor="#dbe9f6", edgecolor="#2b6cb0"))
        number, name = stem.split("_", 1)
        title, line = STEPS.get(number, (name.replace("_", " ").capitalize(), ""))
        ax.text(i * 2 + 0.9, 0.7, f"{number}\n{title}", ha="center", va="center", fontsize=7.5, weight="bold")
        ax.text(i * 2 + 0.9, 0.24, textwrap.fill(line, 13), ha="center", va="center", fontsize=6.5)
        if i:
            ax.annotate("", xy=(i * 2, 0.5), xytext=(i * 2 - 0.2, 0.5), arrowprops={"arrowstyle": "->"})
    ax.set_xlim(-0.1, 2 * len(chapters) - 0.2)
    ax.set_ylim(-0.05, 1.05)
    ax.axis("off")
    fig.savefig(path, dpi=150, bbox_inches="tight")
    plt.close(fig)


def favicon(path: Path) -> None:
    """A 32 x 32 icon: the three sRGB primaries over a grey, the series' subject in one glance."""
    import numpy as np
    from PIL import Image

    icon = np.full((32, 32, 3), 96, np.uint8)
    for i, colour in enumerate(((220, 50, 47), (60, 170, 60), (40, 90, 200))):
        icon[6 + 7 * i:11 + 7 * i, 6:26] = colour
    Image.fromarray(icon).save(path)
