"""Training figures (notebooks 04 and 05): loss curves and colour distributions."""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib.pyplot as plt
import numpy as np
import torch


def training_curves(history: Sequence[dict], min_structure: float, best_epoch: int, title: str = ""):
    """Loss terms per epoch (left) and the two validation figures (right), best epoch marked."""
    epochs = [h["epoch"] for h in history]
    trained = [h for h in history if h["terms"]]
    fig, (ax_l, ax_v) = plt.subplots(1, 2, figsize=(11, 3.4))
    for term in trained[0]["terms"] if trained else ():
        ax_l.plot([h["epoch"] for h in trained], [h["terms"][term] for h in trained], marker=".", label=term)
    ax_l.set_yscale("symlog", linthresh=1e-2)
    ax_l.set_xlabel("epoch")
    ax_l.set_title(f"{title} training loss terms (epoch means)")
    ax_l.legend(fontsize=7, ncol=2)
    ax_v.plot(epochs, [h["colour_distance"] for h in history], marker="o", color="tab:red")
    ax_v.set_ylabel("colour distance to target domain", color="tab:red")
    ax_v.set_xlabel("epoch (0 = starting network)")
    twin = ax_v.twinx()
    twin.plot(epochs, [h["structure"] for h in history], marker="s", color="tab:blue")
    twin.axhline(min_structure, color="tab:blue", ls=":", lw=1)
    twin.set_ylabel("structure fidelity", color="tab:blue")
    ax_v.axvline(best_epoch, color="k", ls="--", lw=1)
    ax_v.set_title("validation (dashed: kept checkpoint)")
    fig.tight_layout()
    plt.show()


def colour_distributions(sets: dict[str, torch.Tensor], bins: int = 64):
    """The paper's figure 5: pooled UV histograms (one panel per set) and Y histograms (last panel) of RGB batches."""
    from kornia.color import rgb_to_yuv

    fig, axes = plt.subplots(1, len(sets) + 1, figsize=(3.2 * (len(sets) + 1), 3.1))
    for ax, (name, rgb) in zip(axes, sets.items()):
        yuv = rgb_to_yuv(rgb.float().cpu()).permute(1, 0, 2, 3).reshape(3, -1).numpy()
        hist, _, _ = np.histogram2d(yuv[2], yuv[1], bins=bins, range=[[-0.3, 0.3], [-0.3, 0.3]])
        ax.imshow(np.log1p(hist), origin="lower", extent=(-0.3, 0.3, -0.3, 0.3), cmap="magma")
        ax.set_title(f"{name}: UV", fontsize=9)
        ax.set_xlabel("U")
        ax.set_ylabel("V")
        axes[-1].hist(yuv[0], bins=bins, range=(0, 1), density=True, histtype="step", label=name)
    axes[-1].set_title("Y", fontsize=9)
    axes[-1].legend(fontsize=7)
    fig.tight_layout()
    plt.show()
