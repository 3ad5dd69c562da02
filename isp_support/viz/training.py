"""Training figures (notebooks 04 and 05): loss curves, every epoch's validation figures, saved renderings and
colour distributions."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch
from PIL import Image


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


def epoch_panels(run: Any, scores: pd.DataFrame | None, min_structure: float):
    """The validation figures of every epoch of ``run`` (a :class:`~isp_support.train.loop.TrainResult`) and, with
    ``scores`` (:func:`~isp_support.evaluate.held_out.epoch_check`'s, by epoch), PSNR and ΔE against ``train/gt``;
    dashed: the kept epoch, dotted: the structure floor ``min_structure``."""
    figures = [k for k in ("pseudo_loss", "paired_loss", "colour_distance", "structure") if k in run.history[0]]
    panels = figures + ([] if scores is None else ["psnr", "delta_e2000"])
    fig, axes = plt.subplots(1, len(panels), figsize=(3.1 * len(panels), 2.9), squeeze=False)
    epochs = [h["epoch"] for h in run.history]
    for ax, key in zip(axes[0], panels):
        values = [h[key] for h in run.history] if key in figures else scores[key].reindex(epochs)
        ax.plot(epochs, values, marker="o", color="tab:gray" if key in figures else "tab:green")
        ax.axvline(run.best_epoch, color="k", ls="--", lw=1)
        if key == "structure":
            ax.axhline(min_structure, color="tab:blue", ls=":", lw=1)
        ax.set_title(key if key in figures else f"{key} vs train/gt (scoring only)", fontsize=9)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(plt.MaxNLocator(integer=True))
    fig.suptitle(f"{run.name}: kept epoch {run.best_epoch} by {run.checkpoint_rule!r}", fontsize=10)
    fig.tight_layout()
    plt.show()


def _sample_strips(strips: dict[str, Path], samples: int):
    """One saved rendering strip per row, titled; ``samples``: the patches per strip (sets the width)."""
    fig, axes = plt.subplots(len(strips), 1, figsize=(2 * samples, 4.3 * len(strips)), squeeze=False)
    for ax, (title, path) in zip(axes[:, 0], strips.items()):
        ax.imshow(Image.open(path))
        ax.set_title(title)
        ax.axis("off")
    fig.tight_layout()
    plt.show()


def epoch_renderings(run: Any, samples: int):
    """Notebook 04: ``run``'s saved validation renderings after epoch 0, the kept epoch and the last one."""
    from ..train.loop import sample_path

    shown = sorted({0, run.best_epoch, run.history[-1]["epoch"]})
    _sample_strips({f"epoch {epoch}" + (" (kept)" if epoch == run.best_epoch else ""): sample_path(run.folder, epoch)
                    for epoch in shown}, samples)


def kept_renderings(runs: dict[str, Any], samples: int):
    """Notebook 05: each run's saved validation renderings at its kept epoch, one row per run, titled by its name."""
    from ..train.loop import sample_path

    _sample_strips({f"{name} (epoch {r.best_epoch})": sample_path(r.folder, r.best_epoch) for name, r in runs.items()},
                   samples)
