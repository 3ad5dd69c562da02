"""Notebook 03's figures: transport problems and plans, ranked matches, target loads, pairing quality."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import torch


def transport_problem(cost, dx, dy, plans: dict):
    """A toy transport problem: the cross cost ``C`` and the distances ``D_X``, ``D_Y`` (top), its plans (below).

    ``plans``: ``{title: (Ns, Nt) plan}``, drawn with rows scaled to sum to 1.
    """
    panels = {"C (source x target)": cost, "D_X (source x source)": dx, "D_Y (target x target)": dy}
    n_cols = max(len(panels), len(plans))
    fig, axes = plt.subplots(2, n_cols, figsize=(3.1 * n_cols, 6.0), squeeze=False)
    for ax, (title, m) in zip(axes[0], panels.items()):
        fig.colorbar(ax.imshow(np.asarray(m), cmap="magma"), ax=ax, shrink=0.7)
        ax.set_title(title, fontsize=9)
    for ax, (title, plan) in zip(axes[1], plans.items()):
        p = np.asarray(plan)
        ax.imshow(p / p.sum(1, keepdims=True), cmap="viridis", vmin=0, vmax=1)
        ax.set_title(f"{title}\n(rows sum to 1)", fontsize=9)
    for ax in axes.flat:
        if not ax.images:
            ax.axis("off")
            continue
        rows, cols = ax.images[0].get_array().shape
        ax.set_xticks(range(cols))
        ax.set_yticks(range(rows))
    fig.tight_layout()
    plt.show()


def block_distances(blocks: dict[str, dict[str, torch.Tensor]], names: Sequence[str] = ("semantic", "style", "colour")):
    """Per descriptor block, the distances between source images (rows) and target images (columns).

    ``blocks``: ``{"source": {block: (Ns, D)}, "target": {block: (Nt, D)}}``.
    """
    fig, axes = plt.subplots(1, len(names), figsize=(12, 3.2))
    for ax, name in zip(axes, names):
        ax.imshow(torch.cdist(blocks["source"][name], blocks["target"][name]).numpy(), cmap="magma")
        ax.set_title(f"{name} distance")
        ax.set_xlabel("target image")
        ax.set_ylabel("source image")
    fig.tight_layout()
    plt.show()


def image_plans(plans: dict[str, np.ndarray]):
    """Image-level plans side by side, rows scaled to sum to 1, one shared colour bar."""
    fig, axes = plt.subplots(1, len(plans), figsize=(12, 4))
    im = None
    for ax, (key, plan) in zip(np.atleast_1d(axes), plans.items()):
        im = ax.imshow(plan / plan.sum(1, keepdims=True), cmap="viridis", aspect="auto", vmin=0, vmax=1)
        ax.set_xlabel("target image")
        ax.set_ylabel("source image")
        ax.set_title(f"{key}: image plan (rows sum to 1)")
    fig.colorbar(im, ax=axes)
    plt.show()


def ranked_matches(result, run_dir: str | Path, n_show: int, k_show: int = 5, split: str = "train"):
    """The paper's figure 3a: for the first ``n_show`` source images, their ``k_show`` best target images.

    ``result``: a :class:`~isp_support.pairing.match.MatchResult`; images are read back from notebook 02's
    stitched files under ``run_dir``.
    """
    from ..pipeline.stitch import load_stitched

    k_show = min(k_show, result.top_images.shape[1])
    fig, axes = plt.subplots(n_show, k_show + 1, figsize=(2.2 * (k_show + 1), 1.9 * n_show), squeeze=False)
    for row, src in enumerate(result.source_image_ids[:n_show]):
        axes[row, 0].imshow(load_stitched(run_dir, split, "raw", src))
        axes[row, 0].set_title(f"source {src}", fontsize=8)
        for col in range(k_show):
            j = result.top_images[row, col]
            axes[row, col + 1].imshow(load_stitched(run_dir, split, "jpeg", result.target_image_ids[j]))
            axes[row, col + 1].set_title(f"#{col + 1} · {result.top_image_scores[row, col]:.3f}", fontsize=8)
    for ax in axes.flat:
        ax.axis("off")
    fig.tight_layout()
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

    fig, axes = plt.subplots(len(graphs) * len(sources), k + 1, figsize=(8, 2.1 * len(graphs) * len(sources)),
                             squeeze=False)
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
    fig.tight_layout()
    plt.show()


def target_loads(graphs: dict):
    """Per graph, the load of every target (expected draws when each source draws once), largest first."""
    fig, ax = plt.subplots(figsize=(6, 3))
    for m, g in graphs.items():
        load = np.bincount(g.indices, weights=g.weights, minlength=len(g.target_ids))
        ax.plot(np.sort(load)[::-1], label=m)
    ax.set_xlabel("target patches, by load")
    ax.set_ylabel("load")
    ax.set_yscale("symlog", linthresh=0.1)
    ax.legend()
    plt.show()


def _quality_colour(name: str) -> str:
    return ("tab:gray" if name in ("random", "knn") else "tab:red" if name == "paper" else
            "tab:green" if name == "default (ot)" else "tab:blue")


def pairing_quality_bars(table, figures: Sequence[str] = ("Y mean", "U mean", "V mean", "top target share")):
    """Notebook 03's pairing-quality table as bars with their bootstrap intervals, random's value dashed.

    ``table``: :func:`~isp_support.pairing.quality.summary_table`'s frame (one row per graph, ``random`` among them).
    """
    names = list(table.index)
    fig, axes = plt.subplots(1, len(figures), figsize=(16, 0.32 * len(names) + 1.5), sharey=True)
    for ax, figure in zip(axes, figures):
        mean = table[figure].to_numpy(float)
        err = np.abs(table[[f"{figure} lo", f"{figure} hi"]].to_numpy(float).T - mean)
        ax.barh(names, mean, xerr=err, color=[_quality_colour(n) for n in names])
        ax.axvline(table.loc["random", figure], color="k", lw=0.8, ls="--")
        ax.set_title(figure + (" error" if figure != "top target share" else ""))
    axes[0].invert_yaxis()
    fig.tight_layout()
    plt.show()
