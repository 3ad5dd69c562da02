"""Notebook 06's figures: the claims and the seeds, checkpoint-rule regret, whole against patch-wise rendering,
renderings per method. Every figure fits the site's column (:mod:`.theme`)."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
import torch

from .theme import COLUMN_INCHES, column_figsize

VERDICT_COLOURS = {"confirmed": "#0173b2", "refuted": "#d55e00", "undecided": "#949494"}


def claims_figure(judgements: pd.DataFrame):
    """Each claim's gap (claimed side positive) with its 95% interval over test scenes, and twice the seed spread
    around zero as a band: a gap is decided when its interval excludes zero and the gap itself lies outside the
    band (:func:`isp_support.evaluate.scoring.verdicts`)."""
    fig, ax = plt.subplots(figsize=(COLUMN_INCHES, 0.55 * len(judgements) + 1.2))
    y = np.arange(len(judgements))
    for i, j in enumerate(judgements.itertuples()):
        spread = judgements["2x spread"].iloc[i]
        if np.isfinite(spread):
            ax.plot([-spread, spread], [i, i], color="0.85", lw=9, solid_capstyle="butt", zorder=1)
        colour = VERDICT_COLOURS[j.verdict]
        ax.plot([j.lo, j.hi], [i, i], color=colour, lw=2, zorder=2)
        ax.plot(j.gap, i, "o", color=colour, zorder=3, label=j.verdict)
    ax.axvline(0, color="k", lw=0.8)
    ax.set_yticks(y, [f"{j.better} vs {j.worse}" for j in judgements.itertuples()])
    ax.invert_yaxis()
    unit = "dB" if judgements["metric"].iloc[0] == "psnr" else ""
    ax.set_xlabel(f"gap in favour of the claim ({judgements['metric'].iloc[0]} {unit}); grey: twice the seed spread")
    handles, labels = ax.get_legend_handles_labels()
    unique = dict(zip(labels, handles))
    ax.legend(unique.values(), unique.keys(), loc="lower right", fontsize="small")
    plt.show()


def seed_points(patch_scores: pd.DataFrame, order: list[str], metric: str = "psnr"):
    """Each row's test score for each training seed (points) and their mean with a standard-deviation bar."""
    per_seed = patch_scores.groupby(["method", "seed"], as_index=False)[metric].mean()
    per_seed = per_seed[per_seed["method"].isin(order)]
    fig, ax = plt.subplots(figsize=(COLUMN_INCHES, 0.32 * len(order) + 1.2))
    sns.pointplot(per_seed, x=metric, y="method", order=order, errorbar="sd", linestyle="none", color="0.3",
                  markers="|", markersize=12, ax=ax)
    sns.stripplot(per_seed, x=metric, y="method", order=order, hue="seed", palette="colorblind", size=6, ax=ax,
                  jitter=False)
    ax.set_xlabel(f"test {metric} per training seed (points); mean and sd (black)")
    ax.set_ylabel("")
    ax.legend(title="seed", fontsize="small", loc="upper left", bbox_to_anchor=(1.0, 1.0))
    plt.show()


def regret_scatter(regret_table: pd.DataFrame):
    """Each run's PSNR regret (chosen epoch minus best epoch on test), one row of points per checkpoint rule."""
    fig, ax = plt.subplots(figsize=(COLUMN_INCHES, 0.6 * regret_table["rule"].nunique() + 1.2))
    sns.stripplot(regret_table, x="regret psnr", y="rule", hue="method", size=6, jitter=0.15, ax=ax)
    sns.pointplot(regret_table, x="regret psnr", y="rule", errorbar=None, linestyle="none", color="k",
                  markers="D", markersize=5, ax=ax)
    ax.axvline(0, color="k", lw=0.8)
    ax.set_xlabel("regret: test PSNR of the chosen epoch minus the best epoch's (dB); diamond: mean")
    ax.set_ylabel("")
    ax.legend(fontsize="x-small", loc="lower left", ncols=2)
    plt.show()


def whole_and_patchwise(whole: torch.Tensor, patchwise: torch.Tensor, diff: torch.Tensor, key: str):
    """One scene rendered whole and patch by patch (``(3, H, W)`` each), and their ``(H, W)`` difference."""
    aspect = whole.shape[-2] / whole.shape[-1]
    fig, axes = plt.subplots(1, 3, figsize=column_figsize(3, 1, aspect))
    for ax, (title, img) in zip(axes, [("whole image", whole), ("patch by patch", patchwise)]):
        ax.imshow(img.permute(1, 2, 0).clamp(0, 1).numpy())
        ax.set_title(f"{key}: {title}", fontsize="small")
    axes[2].imshow(diff.numpy(), cmap="magma")
    axes[2].set_title("|difference| (bright: seams)", fontsize="small")
    for ax in axes:
        ax.axis("off")
    plt.show()


def rendering_grid(rows: dict[str, list[torch.Tensor]], truth: dict[str, torch.Tensor]):
    """Renderings ``(3, H, W)``, one row per title of ``rows``, one column per scene, the ground truth below.

    ``truth``: ``{column title: (3, H, W)}``, in the columns' order.
    """
    n_cols = len(truth)
    first = next(iter(truth.values()))
    aspect = first.shape[-2] / first.shape[-1]
    fig, axes = plt.subplots(len(rows) + 1, n_cols, figsize=column_figsize(n_cols, len(rows) + 1, aspect * 1.12),
                             squeeze=False)
    for r, (title, images) in enumerate(rows.items()):
        for c, img in enumerate(images):
            axes[r, c].imshow(img.permute(1, 2, 0).clamp(0, 1).numpy())
            axes[r, c].set_title(title, fontsize="x-small")
    for c, (title, img) in enumerate(truth.items()):
        axes[-1, c].imshow(img.permute(1, 2, 0).numpy())
        axes[-1, c].set_title(title, fontsize="x-small")
    for ax in axes.ravel():
        ax.axis("off")
    plt.show()
