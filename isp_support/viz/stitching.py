"""Notebook 02's figures: seam scores, score maps, layout scores and stitched scenes."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

from .theme import COLUMN_INCHES, column_figsize


def seam_score_matrices(right_of: np.ndarray, below: np.ndarray, cols: int, scores: dict[tuple[int, int], float]):
    """A toy scene's seam errors between every pair of patches, true neighbours ringed, and its layout scores.

    ``right_of[i, j]``: error of patch ``j`` placed right of patch ``i``; ``below[i, j]``: of ``j`` placed below
    ``i``; ``cols``: the true number of columns (patches in row-major order); ``scores``: ``S(R, C)`` per layout.
    """
    n = len(right_of)
    truth = {"right of": [(k, k + 1) for k in range(n - 1) if (k + 1) % cols],
             "below": [(k, k + cols) for k in range(n - cols)]}
    fig = plt.figure(figsize=(COLUMN_INCHES, 6.4))
    grid = fig.add_gridspec(2, 2, height_ratios=(1.3, 1))
    axes = [fig.add_subplot(grid[0, 0]), fig.add_subplot(grid[0, 1]), fig.add_subplot(grid[1, :])]
    for ax, (name, m) in zip(axes, (("right of", right_of), ("below", below))):
        im = ax.imshow(m, cmap="magma")
        ax.grid(False)
        for i, j in truth[name]:
            ax.scatter(j, i, s=120, facecolors="none", edgecolors="tab:cyan", linewidths=2)
        ax.set_xticks(range(n))
        ax.set_yticks(range(n))
        ax.set_xlabel(f"patch j, placed {name} patch i", fontsize=8)
        ax.set_ylabel("patch i", fontsize=8)
        ax.set_title(f"seam error: j {name} i\n(ringed: true neighbours)", fontsize=9)
        fig.colorbar(im, ax=ax, shrink=0.8, label="mean |difference|")
    best = min(scores, key=scores.get)
    axes[2].bar([f"{r}x{c}" for r, c in scores], list(scores.values()),
                color=["tab:green" if layout == best else "tab:gray" for layout in scores])
    axes[2].set_title(f"S(R, C): mean over the layout's seams; lowest {best[0]}x{best[1]}", fontsize=9)
    axes[2].set_xlabel("layout (rows x columns)", fontsize=8)
    axes[2].set_ylabel("S(R, C)", fontsize=8)
    plt.show()


def score_map_strip(maps: Sequence, labels: Sequence, title: str, per_row: int = 12):
    """One scene's score maps in file order, *per_row* to a row (wrapped to the column's width)."""
    cols = min(per_row, len(maps))
    rows = -(-len(maps) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=column_figsize(cols, rows, extra_height=0.25 * rows + 0.3),
                             squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, m, label in zip(axes.flat, maps, labels):
        ax.imshow(m, cmap="gray")
        ax.set_title(label, fontsize=7)
    fig.suptitle(title, fontsize=9)
    plt.show()


def layout_score_bars(results: Sequence[tuple[str, dict]], truth: dict[str, tuple[int, int]]):
    """The score of every candidate layout: one row per scene, one column per setting.

    ``results``: ``[(scene, {setting label: GridResult}), ...]``; bars of the true layout (``truth``) are green.
    """
    n_cols = max(len(by_setting) for _, by_setting in results)
    fig, axes = plt.subplots(len(results), n_cols, figsize=(COLUMN_INCHES, 2.1 * len(results)), squeeze=False)
    for row, (scene, by_setting) in enumerate(results):
        for col, (label, res) in enumerate(by_setting.items()):
            names = [f"{r}x{c}" for r, c in res.scores]
            colours = ["tab:green" if (r, c) == truth.get(scene) else "tab:gray" for r, c in res.scores]
            axes[row, col].bar(names, list(res.scores.values()), color=colours)
            axes[row, col].set_title(f"{scene} · {label} · chose {res.rows}x{res.cols}", fontsize=8)
            axes[row, col].tick_params(labelsize=7)
            axes[row, col].tick_params(axis="x", labelrotation=45)
        axes[row, 0].set_ylabel("S (lower: better)", fontsize=7)
    plt.show()


def stitched_and_runner_up(run_dir: str | Path, picks: Sequence[tuple]):
    """Stitched scenes (chosen grid) beside their patches assembled in the runner-up layout.

    ``picks``: ``[(StitchedSet, scene name), ...]`` from :func:`~isp_support.pipeline.stitch.stitch_dataset`.
    """
    from ..pipeline.stitch import assemble, load_stitched

    fig, axes = plt.subplots(len(picks), 2, figsize=(COLUMN_INCHES, 2.8 * len(picks)), squeeze=False)
    for row, (s, name) in enumerate(picks):
        g = s.grids[name]
        full = load_stitched(run_dir, s.split, s.kind, name)
        axes[row, 0].imshow(full)
        axes[row, 0].set_title(f"{s.kind} {name}: chosen {g.rows}x{g.cols}", fontsize=8)
        ranked = sorted((v, k) for k, v in g.scores.items() if v is not None and k != g.layout)
        if ranked:
            r2, c2 = ranked[0][1]
            tiles = [full[p.y0:p.y0 + p.h, p.x0:p.x0 + p.w] for p in s.placements if p.scene == name]
            axes[row, 1].imshow(assemble(tiles, r2, c2))
            axes[row, 1].set_title(f"runner-up {r2}x{c2}", fontsize=8)
        for ax in axes[row]:
            ax.axis("off")
    plt.show()
