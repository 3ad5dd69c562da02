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

from .theme import COLUMN_INCHES, column_figsize

MAX_EPOCH_ROWS = 12
"""The most epochs :func:`epoch_renderings` draws; a longer run shows evenly spaced ones with the kept and the last."""


def training_curves(history: Sequence[dict], min_structure: float, best_epoch: int, title: str = ""):
    """Loss terms per epoch (left) and the two validation figures (right), best epoch marked."""
    epochs = [h["epoch"] for h in history]
    trained = [h for h in history if h["terms"]]
    fig, (ax_l, ax_v) = plt.subplots(1, 2, figsize=column_figsize(2, 1, 0.8), layout="constrained")
    for term in trained[0]["terms"] if trained else ():
        ax_l.plot([h["epoch"] for h in trained], [h["terms"][term] for h in trained], marker=".", label=term)
    ax_l.set_yscale("symlog", linthresh=1e-2)
    ax_l.set_xlabel("epoch")
    ax_l.set_title(f"{title}: loss terms (epoch means)", fontsize=9)
    ax_l.legend(fontsize=7, ncol=2)
    ax_v.plot(epochs, [h["colour_distance"] for h in history], marker="o", color="tab:red")
    ax_v.set_ylabel("colour distance to target domain", color="tab:red")
    ax_v.set_xlabel("epoch (0 = starting network)")
    twin = ax_v.twinx()
    twin.plot(epochs, [h["structure"] for h in history], marker="s", color="tab:blue")
    twin.axhline(min_structure, color="tab:blue", ls=":", lw=1)
    twin.set_ylabel("structure fidelity", color="tab:blue")
    ax_v.axvline(best_epoch, color="k", ls="--", lw=1)
    ax_v.set_title("validation (dashed: kept epoch)", fontsize=9)
    plt.show()


def colour_distributions(sets: dict[str, torch.Tensor], bins: int = 64):
    """The paper's figure 5: pooled UV histograms (one panel per set) and Y histograms (last panel) of RGB batches."""
    from kornia.color import rgb_to_yuv

    n_rows = -(-(len(sets) + 1) // 2)
    fig, grid = plt.subplots(n_rows, 2, figsize=column_figsize(2, n_rows, 0.8), layout="constrained", squeeze=False)
    axes = grid.ravel()
    y_ax = axes[len(sets)]
    for ax in axes[len(sets) + 1:]:
        ax.axis("off")
    for ax, (name, rgb) in zip(axes, sets.items()):
        yuv = rgb_to_yuv(rgb.float().cpu()).permute(1, 0, 2, 3).reshape(3, -1).numpy()
        hist, _, _ = np.histogram2d(yuv[2], yuv[1], bins=bins, range=[[-0.3, 0.3], [-0.3, 0.3]])
        ax.imshow(np.log1p(hist), origin="lower", extent=(-0.3, 0.3, -0.3, 0.3), cmap="magma")
        ax.set_title(f"{name}: UV", fontsize=9)
        ax.set_xlabel("U")
        ax.set_ylabel("V")
        ax.grid(False)
        y_ax.hist(yuv[0], bins=bins, range=(0, 1), density=True, histtype="step", label=name)
    y_ax.set_title("Y", fontsize=9)
    y_ax.set_xlabel("Y")
    y_ax.set_ylabel("density")
    y_ax.legend(fontsize=7)
    plt.show()


def epoch_panels(run: Any, scores: pd.DataFrame | None, min_structure: float):
    """The validation figures of every epoch of ``run`` (a :class:`~isp_support.train.loop.TrainResult`) and, with
    ``scores`` (:func:`~isp_support.evaluate.held_out.epoch_check`'s, by epoch), PSNR and ΔE against ``train/gt``;
    dashed: the kept epoch, dotted: the structure floor ``min_structure``."""
    figures = [k for k in ("pseudo_loss", "paired_loss", "colour_distance", "structure") if k in run.history[0]]
    panels = figures + ([] if scores is None else ["psnr", "delta_e2000"])
    n_rows = -(-len(panels) // 2)
    fig, grid = plt.subplots(n_rows, 2, figsize=column_figsize(2, n_rows, 0.55, 0.5), layout="constrained",
                             sharex=True, squeeze=False)
    for ax in grid.ravel()[len(panels):]:
        fig.delaxes(ax)
    epochs = [h["epoch"] for h in run.history]
    for ax, key in zip(grid.ravel(), panels):
        values = [h[key] for h in run.history] if key in figures else scores[key].reindex(epochs)
        ax.plot(epochs, values, marker="o", color="tab:gray" if key in figures else "tab:green")
        ax.axvline(run.best_epoch, color="k", ls="--", lw=1)
        if key == "structure":
            ax.axhline(min_structure, color="tab:blue", ls=":", lw=1)
        ax.set_title(key if key in figures else f"{key} vs train/gt (scoring only)", fontsize=9)
        ax.set_xlabel("epoch")
        ax.tick_params(labelbottom=True)
        ax.xaxis.set_major_locator(plt.MaxNLocator(integer=True))
    fig.suptitle(f"{run.name}: kept epoch {run.best_epoch} by {run.checkpoint_rule!r}", fontsize=10)
    plt.show()


def _sample_strips(strips: dict[str, Path], samples: int):
    """One saved rendering strip per row, titled; ``samples``: the patches per strip (sets the height)."""
    fig, axes = plt.subplots(len(strips), 1, figsize=column_figsize(1, len(strips), 2.0 / samples, 0.3),
                             layout="constrained", squeeze=False)
    for ax, (title, path) in zip(axes[:, 0], strips.items()):
        ax.imshow(Image.open(path))
        ax.set_title(title, fontsize=9)
        ax.axis("off")
    plt.show()


def shown_epochs(epochs: Sequence[int], best_epoch: int, max_rows: int = MAX_EPOCH_ROWS) -> list[int]:
    """Every epoch when there are at most ``max_rows``; else evenly spaced ones, always with 0, kept and last."""
    epochs = sorted(epochs)
    if len(epochs) <= max_rows:
        return epochs
    picks = {epochs[round(i * (len(epochs) - 1) / (max_rows - 2))] for i in range(max_rows - 1)}
    return sorted(picks | {epochs[0], best_epoch, epochs[-1]})


def epoch_renderings(run: Any, samples: int, max_rows: int = MAX_EPOCH_ROWS):
    """Notebook 04: the validation inputs once (top row), then ``run``'s saved output after each epoch, one row
    each, labelled on the left (:func:`shown_epochs`: every epoch up to ``max_rows``). Returns the epochs shown."""
    from ..train.loop import sample_path

    shown = shown_epochs([h["epoch"] for h in run.history], run.best_epoch, max_rows)
    strips = [np.asarray(Image.open(sample_path(run.folder, e)).convert("RGB")) for e in shown]
    half = strips[0].shape[0] // 2
    rows = [strips[0][:half]] + [s[half:] for s in strips]
    labels = ["input"] + [f"epoch {e}" + (" (kept)" if e == run.best_epoch else "") for e in shown]
    patch = min(1.3, (COLUMN_INCHES - 1.4) / samples)  # inches per patch; 1 inch for the labels
    row_height = patch * samples * half / strips[0].shape[1]
    fig, ax = plt.subplots(figsize=(patch * samples + 1.0, row_height * len(rows) + 0.2), layout="constrained")
    ax.imshow(np.concatenate(rows, axis=0))
    ax.set_yticks([half * (i + 0.5) for i in range(len(rows))], labels, fontsize=8)
    ax.set_xticks([])
    ax.grid(False)
    for i in range(1, len(rows)):
        ax.axhline(half * i - 0.5, color="white", lw=1)
    plt.show()
    return shown


def kept_renderings(runs: dict[str, Any], samples: int):
    """Notebook 05: each run's saved validation renderings at its kept epoch, one row per run, titled by its name."""
    from ..train.loop import sample_path

    _sample_strips({f"{name} (epoch {r.best_epoch})": sample_path(r.folder, r.best_epoch) for name, r in runs.items()},
                   samples)


def one_step_picture(terms: dict[str, float], grads: dict[str, float], updates: dict[str, float]):
    """Notebook 04's step by hand, drawn: the weighted loss terms of the toy batch (left) and, per weight tensor,
    the size of its gradient and of the AdamW update it received (right; a zero is written out, not drawn).

    ``terms``: ``{term: weight x value}``; ``grads`` and ``updates``: ``{parameter name: L2 norm}``.
    """
    fig, (ax_t, ax_g) = plt.subplots(1, 2, figsize=column_figsize(2, 1, 0.75), layout="constrained")
    ax_t.bar(list(terms), list(terms.values()), color="tab:gray")
    ax_t.set_ylabel("weight x term")
    ax_t.set_title(f"2. the loss: total {sum(terms.values()):.4f}", fontsize=9)
    ax_t.tick_params(axis="x", labelrotation=30)
    names = list(grads)
    pos = np.arange(len(names))
    for k, (label, values, colour) in enumerate((("3. gradient", grads, "tab:blue"),
                                                 ("4. AdamW update", updates, "tab:orange"))):
        heights = [values[n] for n in names]
        ax_g.barh(pos + (k - 0.5) * 0.4, heights, height=0.4, color=colour, label=label)
        for p, h in zip(pos, heights):
            if h == 0:
                ax_g.text(0, p + (k - 0.5) * 0.4, " 0", va="center", fontsize=7, color=colour)
    ax_g.set_xscale("symlog", linthresh=1e-6)
    ax_g.set_yticks(pos, names, fontsize=7)
    ax_g.invert_yaxis()
    ax_g.set_xlabel("L2 norm")
    ax_g.set_title("per weight tensor", fontsize=9)
    ax_g.legend(fontsize=7)
    plt.show()
