"""Notebook 01's figures: packed RAW channels and the value histograms of the pipeline's stages."""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib.pyplot as plt
import numpy as np
import torch

from .images import to_rgb_images


def raw_channels(raws: np.ndarray, ids: Sequence[str], channels: Sequence[str]):
    """The four planes of packed RAW patches ``(B, H, W, 4)`` in grey (0 to 1023), one row per patch."""
    fig, axes = plt.subplots(len(ids), 4, figsize=(10, 2.6 * len(ids)), squeeze=False)
    for row, (patch_id, raw) in enumerate(zip(ids, raws)):
        for c, name in enumerate(channels):
            axes[row, c].imshow(raw[..., c], cmap="gray", vmin=0, vmax=1023)
            axes[row, c].set_title(f"{patch_id} · {name} (mean {raw[..., c].mean():.0f})", fontsize=8)
            axes[row, c].axis("off")
    plt.tight_layout()
    plt.show()


def stage_histograms(stages: dict[str, torch.Tensor]):
    """Per stage (``RawPipeline.stages``), the histograms of the displayed R, G and B values."""
    fig, axes = plt.subplots(1, len(stages), figsize=(3.2 * len(stages), 2.6), sharey=True)
    for ax, (name, t) in zip(axes, stages.items()):
        planes = to_rgb_images(t)
        for c, colour in enumerate("rgb"):
            ax.hist(planes[..., c].ravel(), bins=64, range=(0, 1), histtype="step", color=colour)
        ax.set_title(name)
        ax.set_xlabel("value")
    plt.tight_layout()
    plt.show()


def stored_histograms(stored: dict[str, np.ndarray]):
    """Density histograms of stored pre-processed values, one line per split."""
    fig, ax = plt.subplots(figsize=(6, 3))
    for name, arr in stored.items():
        ax.hist(arr.astype(np.float32).ravel(), bins=100, range=(0, 1), histtype="step", density=True, label=name)
    ax.set_xlabel("pre-processed value")
    ax.legend()
    plt.show()
