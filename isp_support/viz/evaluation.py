"""Notebook 06's figures: checkpoint-rule regret, whole against patch-wise rendering, renderings per method."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import torch


def regret_scatter(regret_table):
    """Each run's PSNR regret (chosen epoch minus best epoch on test), one row of points per checkpoint rule."""
    fig, ax = plt.subplots(figsize=(7, 3))
    for k, (rule, group) in enumerate(regret_table.groupby("rule")):
        ax.scatter(group["regret psnr"], np.full(len(group), k) + np.linspace(-0.2, 0.2, len(group)), label=rule)
    ax.set_yticks(range(regret_table["rule"].nunique()), sorted(regret_table["rule"].unique()))
    ax.axvline(0, color="k", lw=0.8)
    ax.set_xlabel("regret: test PSNR of the chosen epoch minus the best epoch's (dB)")
    fig.tight_layout()
    plt.show()


def whole_and_patchwise(whole: torch.Tensor, patchwise: torch.Tensor, diff: torch.Tensor, key: str):
    """One scene rendered whole and patch by patch (``(3, H, W)`` each), and their ``(H, W)`` difference."""
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    for ax, (title, img) in zip(axes, [("whole image", whole), ("patch by patch", patchwise)]):
        ax.imshow(img.permute(1, 2, 0).clamp(0, 1).numpy())
        ax.set_title(f"{key}: {title}")
    axes[2].imshow(diff.numpy(), cmap="magma")
    axes[2].set_title("|difference| (bright: seams)")
    for ax in axes:
        ax.axis("off")
    fig.tight_layout()
    plt.show()


def rendering_grid(rows: dict[str, list[torch.Tensor]], truth: dict[str, torch.Tensor]):
    """Renderings ``(3, H, W)``, one row per title of ``rows``, one column per scene, the ground truth below.

    ``truth``: ``{column title: (3, H, W)}``, in the columns' order.
    """
    n_cols = len(truth)
    fig, axes = plt.subplots(len(rows) + 1, n_cols, figsize=(4.2 * n_cols, 2.9 * (len(rows) + 1)), squeeze=False)
    for r, (title, images) in enumerate(rows.items()):
        for c, img in enumerate(images):
            axes[r, c].imshow(img.permute(1, 2, 0).clamp(0, 1).numpy())
            axes[r, c].set_title(title, fontsize=8)
    for c, (title, img) in enumerate(truth.items()):
        axes[-1, c].imshow(img.permute(1, 2, 0).numpy())
        axes[-1, c].set_title(title, fontsize=8)
    for ax in axes.ravel():
        ax.axis("off")
    fig.tight_layout()
    plt.show()
