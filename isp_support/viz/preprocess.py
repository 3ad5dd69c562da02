"""Notebook 01's figures: packed RAW channels, the value histograms of the pipeline's stages, the stored values of
each split, and the bilinear-demosaicking toy."""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib.pyplot as plt
import numpy as np
import torch

from .images import to_rgb_images
from .theme import column_figsize

BINS = 64
"""Bins of the value histograms over [0, 1]."""


def raw_channels(raws: np.ndarray, ids: Sequence[str], channels: Sequence[str]) -> np.ndarray:
    """The four planes of packed RAW patches ``(B, H, W, 4)`` in grey (0 to 1023), one row per patch.

    Returns the mean of each plane over the patches shown (in *channels*' order), for the figure's reading.
    """
    fig, axes = plt.subplots(len(ids), 4, figsize=column_figsize(4, len(ids), extra_height=0.3 * len(ids)),
                             squeeze=False)
    for row, (patch_id, raw) in enumerate(zip(ids, raws)):
        for c, name in enumerate(channels):
            axes[row, c].imshow(raw[..., c], cmap="gray", vmin=0, vmax=1023)
            axes[row, c].set_title(f"{patch_id} · {name} (mean {raw[..., c].mean():.0f})", fontsize=8)
            axes[row, c].axis("off")
    plt.show()
    return np.asarray(raws, dtype=np.float64).reshape(-1, len(channels)).mean(axis=0)


def stage_histograms(stages: dict[str, torch.Tensor], per_row: int = 3) -> dict[str, float]:
    """Per stage (``RawPipeline.stages``), the histograms of the displayed R, G and B values, *per_row* to a row.

    Returns each stage's median displayed value (all channels), for the figure's reading.
    """
    n = len(stages)
    cols = min(per_row, n)
    rows = -(-n // cols)
    fig, axes = plt.subplots(rows, cols, figsize=column_figsize(cols, rows, aspect=0.75, extra_height=0.3 * rows),
                             sharex=True, sharey=True, squeeze=False)
    medians = {}
    for ax, (name, t) in zip(axes.flat, stages.items()):
        planes = to_rgb_images(t)
        medians[name] = float(np.median(planes))
        for c, colour in enumerate(("tab:red", "tab:green", "tab:blue")):
            ax.hist(planes[..., c].ravel(), bins=BINS, range=(0, 1), histtype="step", color=colour)
        ax.axvline(medians[name], color="black", linestyle=":", linewidth=1)
        ax.set_title(name)
        ax.set_xlabel("value")
    for ax in list(axes.flat)[n:]:
        fig.delaxes(ax)
    axes[0, 0].set_ylabel("pixels")
    plt.show()
    return medians


def stored_histograms(stored: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Density histograms of stored pre-processed values, one line per split.

    Returns each split's histogram as shares of its values per bin (:data:`BINS` bins over [0, 1], summing to 1).
    """
    fig, ax = plt.subplots(figsize=(6, 3))
    shares = {}
    for name, arr in stored.items():
        values = arr.astype(np.float32).ravel()
        counts, edges = np.histogram(values, bins=BINS, range=(0, 1))
        shares[name] = counts / max(counts.sum(), 1)
        ax.stairs(shares[name] / np.diff(edges), edges, label=name)
    ax.set_xlabel("pre-processed value")
    ax.set_ylabel("density")
    ax.legend()
    plt.show()
    return shares


def total_variation(p: np.ndarray, q: np.ndarray) -> float:
    """Half the L1 distance between two histograms of shares: 0 when identical, 1 when they share no bin."""
    return float(0.5 * np.abs(np.asarray(p, np.float64) - np.asarray(q, np.float64)).sum())


def demosaic_toy(bayer: torch.Tensor, mine: torch.Tensor, theirs: torch.Tensor, border: int = 2) -> float:
    """The bilinear toy: the RGGB mosaic, the plain-torch and the package's demosaicked images, and their difference.

    ``bayer``: ``(1, 1, H, W)``; ``mine``, ``theirs``: ``(1, 3, H, W)``. The difference panel outlines the interior
    (``border`` pixels in) where the two must agree. Returns the largest interior difference.
    """
    h, w = bayer.shape[-2:]
    mosaic = np.zeros((h, w, 3))
    b = bayer[0, 0].numpy()
    mosaic[0::2, 0::2, 0], mosaic[1::2, 1::2, 2] = b[0::2, 0::2], b[1::2, 1::2]
    mosaic[0::2, 1::2, 1], mosaic[1::2, 0::2, 1] = b[0::2, 1::2], b[1::2, 0::2]
    diff = (mine - theirs).abs().amax(dim=1)[0].numpy()
    fig, axes = plt.subplots(1, 4, figsize=column_figsize(4, 1, extra_height=0.9))
    panels = (("RGGB mosaic", mosaic), ("plain torch", to_rgb_images(mine)[0]),
              ("isp_support", to_rgb_images(theirs)[0]))
    for ax, (title, img) in zip(axes, panels):
        ax.imshow(img, interpolation="nearest")
        ax.set_title(title, fontsize=9)
        ax.grid(False)
    im = axes[3].imshow(diff, cmap="magma", interpolation="nearest")
    axes[3].add_patch(plt.Rectangle((border - 0.5, border - 0.5), w - 2 * border, h - 2 * border,
                                    fill=False, edgecolor="tab:cyan", linewidth=1.5))
    axes[3].set_title("|difference|", fontsize=9)
    axes[3].grid(False)
    fig.colorbar(im, ax=axes[3], shrink=0.7).set_label("max over R, G, B (box: interior)", fontsize=8)
    for ax in axes:
        ax.set_xlabel("x (px)", fontsize=8)
        ax.tick_params(labelsize=7)
    axes[0].set_ylabel("y (px)", fontsize=8)
    plt.show()
    return float(diff[border:-border, border:-border].max())
