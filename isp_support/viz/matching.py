"""Notebook 03's figures: transport problems and plans, ranked matches, target loads.

Every figure fits the course site's column (:func:`~isp_support.viz.theme.column_figsize`); matrices get axis
labels and colour bars.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import torch

from .theme import COLUMN_INCHES, column_figsize

_AXIS_NAMES = {"C": ("target", "source"), "D_X": ("source", "source"), "D_Y": ("target", "target")}


def _matrix_panel(fig, ax, m, title: str, xlabel: str, ylabel: str, **imshow) -> None:
    """One small matrix: integer ticks, axis labels, its own colour bar."""
    m = np.asarray(m)
    fig.colorbar(ax.imshow(m, **imshow), ax=ax, shrink=0.8)
    ax.set_xticks(range(m.shape[1]))
    ax.set_yticks(range(m.shape[0]))
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=9)
    ax.grid(False)


def transport_problem(cost, dx, dy, plans: dict):
    """A toy transport problem: the cross cost ``C`` and the distances ``D_X``, ``D_Y`` (top row), then its plans,
    two per row, rows scaled to sum to 1. Every panel has axis labels and a colour bar.

    ``plans``: ``{title: (Ns, Nt) plan}``.
    """
    panels = {"C (source x target)": (cost, "C"), "D_X (source x source)": (dx, "D_X"),
              "D_Y (target x target)": (dy, "D_Y")}
    plan_rows = -(-len(plans) // 2)
    fig = plt.figure(figsize=(COLUMN_INCHES, 2.4 + 2.6 * plan_rows), layout="constrained")
    top, bottom = fig.subfigures(2, 1, height_ratios=(2.4, 2.6 * plan_rows))
    for ax, (title, (m, key)) in zip(top.subplots(1, 3), panels.items()):
        _matrix_panel(top, ax, m, title, f"{_AXIS_NAMES[key][0]} j", f"{_AXIS_NAMES[key][1]} i", cmap="magma")
    axes = np.atleast_1d(bottom.subplots(plan_rows, 2, squeeze=False)).ravel()
    for ax, (title, plan) in zip(axes, plans.items()):
        p = np.asarray(plan)
        _matrix_panel(bottom, ax, p / p.sum(1, keepdims=True), f"{title} (rows sum to 1)", "target j", "source i",
                      cmap="viridis", vmin=0, vmax=1)
    for ax in axes[len(plans):]:
        ax.axis("off")
    plt.show()


def block_distances(blocks: dict[str, dict[str, torch.Tensor]], names: Sequence[str] = ("semantic", "style", "colour")):
    """Per descriptor block, the distances between source images (rows) and target images (columns).

    ``blocks``: ``{"source": {block: (Ns, D)}, "target": {block: (Nt, D)}}``.
    """
    fig, axes = plt.subplots(len(names), 1, figsize=column_figsize(1, len(names), 0.3, 0.3 * len(names)),
                             layout="constrained", squeeze=False)
    for ax, name in zip(axes[:, 0], names):
        im = ax.imshow(torch.cdist(blocks["source"][name], blocks["target"][name]).numpy(), cmap="magma",
                       aspect="auto", interpolation="nearest")
        fig.colorbar(im, ax=ax, label="distance")
        ax.set_title(f"{name} block")
        ax.grid(False)
        ax.set_xlabel("target image")
        ax.set_ylabel("source image")
    plt.show()


def image_plans(plans: dict[str, np.ndarray]):
    """Image-level plans, one per row, rows scaled to sum to 1, one shared colour bar."""
    fig, axes = plt.subplots(len(plans), 1, figsize=column_figsize(1, len(plans), 0.36, 0.3), layout="constrained",
                             squeeze=False)
    im = None
    for ax, (key, plan) in zip(axes[:, 0], plans.items()):
        im = ax.imshow(plan / plan.sum(1, keepdims=True), cmap="viridis", aspect="auto", vmin=0, vmax=1,
                       interpolation="nearest")
        ax.set_xlabel("target image")
        ax.set_ylabel("source image")
        ax.set_title(f"{key}: image plan (rows sum to 1)")
        ax.grid(False)
    fig.colorbar(im, ax=axes.ravel().tolist(), label="share of the source image")
    plt.show()


def ranked_matches(result, run_dir: str | Path, n_show: int, k_show: int = 5, split: str = "train"):
    """The paper's figure 3a: for the first ``n_show`` source images, their ``k_show`` best target images.

    ``result``: a :class:`~isp_support.pairing.match.MatchResult`; images are read back from notebook 02's
    stitched files under ``run_dir``.
    """
    from ..pipeline.stitch import load_stitched

    k_show = min(k_show, result.top_images.shape[1])
    fig, axes = plt.subplots(n_show, k_show + 1, figsize=column_figsize(k_show + 1, n_show, 0.85, 0.2),
                             layout="constrained", squeeze=False)
    for row, src in enumerate(result.source_image_ids[:n_show]):
        axes[row, 0].imshow(load_stitched(run_dir, split, "raw", src))
        axes[row, 0].set_title(f"source {src}", fontsize=8)
        for col in range(k_show):
            j = result.top_images[row, col]
            axes[row, col + 1].imshow(load_stitched(run_dir, split, "jpeg", result.target_image_ids[j]))
            axes[row, col + 1].set_title(f"#{col + 1} · {result.top_image_scores[row, col]:.3f}", fontsize=8)
    for ax in axes.flat:
        ax.axis("off")
    plt.show()


def patch_matches(sources: Sequence[str], graphs: dict, run_dir: str | Path, target_path: dict[str, Path],
                  split: str = "train", k: int = 3):
    """The paper's figure 7: each source patch (pre-processed) and its ``k`` highest-weight targets per graph.

    ``graphs``: ``{method: PairGraph}``, one row per source and method; ``target_path``: target patch id ->
    file. Equal weights are shown by decreasing target id.
    """
    from ..io import read_rgb
    from ..pipeline.preprocess import output_path
    from ..runs import RunLayout

    rows = len(graphs) * len(sources)
    fig, axes = plt.subplots(rows, k + 1, figsize=(min(COLUMN_INCHES, 1.9 * (k + 1)), 1.9 * rows),
                             layout="constrained", squeeze=False)
    for i, s in enumerate(sources):
        pre = np.load(output_path(RunLayout(run_dir).preprocessed, split, s)).astype(np.float32).transpose(1, 2, 0)
        for r, (m, graph) in enumerate(graphs.items()):
            ax_row = axes[len(graphs) * i + r]
            ax_row[0].imshow(pre)
            ax_row[0].set_title(f"{s} ({m})", fontsize=8)
            for c, (w, t) in enumerate(sorted(((w, t) for t, w in graph.row(s)), reverse=True)[:k]):
                ax_row[c + 1].imshow(read_rgb(target_path[t]))
                ax_row[c + 1].set_title(f"{t} · w={w:.2f}", fontsize=7)
    for ax in axes.flat:
        ax.axis("off")
    plt.show()


def target_loads(graphs: dict):
    """Per graph, the load of every target (expected draws when each source draws once), largest first."""
    fig, ax = plt.subplots(figsize=column_figsize(1, 1, 0.4), layout="constrained")
    for m, g in graphs.items():
        load = np.bincount(g.indices, weights=g.weights, minlength=len(g.target_ids))
        ax.plot(np.sort(load)[::-1], label=m)
    ax.set_xlabel("target patches, by load")
    ax.set_ylabel("load")
    ax.set_yscale("symlog", linthresh=0.1)
    ax.legend()
    plt.show()
