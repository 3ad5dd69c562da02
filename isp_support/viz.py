"""Small plotting helpers shared by the notebooks."""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib.pyplot as plt
import numpy as np
import torch


def to_rgb_images(x: torch.Tensor | np.ndarray) -> np.ndarray:
    """A batch for display: ``(B, H, W, 3)`` float in [0, 1].

    Accepts RGB ``(B, 3, H, W)`` or packed RAW ``(B, 4, H, W)`` (shown as R, mean
    of the greens, B at half resolution), as tensors or arrays.
    """
    arr = x.detach().float().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x, dtype=np.float32)
    if arr.ndim != 4 or arr.shape[1] not in (3, 4):
        raise ValueError(f"expected (B, 3, H, W) or (B, 4, H, W), got {arr.shape}")
    if arr.shape[1] == 4:
        arr = np.stack([arr[:, 0], (arr[:, 1] + arr[:, 2]) / 2, arr[:, 3]], axis=1)
    return np.clip(arr.transpose(0, 2, 3, 1), 0.0, 1.0)


def show_images(rows: dict[str, np.ndarray], col_titles: Sequence[str] | None = None, size: float = 2.4):
    """A grid of images: one row per entry of ``rows`` (each ``(B, H, W, 3)``), one column per item."""
    n_cols = max(len(v) for v in rows.values())
    fig, axes = plt.subplots(len(rows), n_cols, figsize=(size * n_cols, size * len(rows)), squeeze=False)
    for r, (name, images) in enumerate(rows.items()):
        for c in range(n_cols):
            ax = axes[r, c]
            ax.axis("off")
            if c < len(images):
                ax.imshow(images[c])
                title = name if col_titles is None else f"{name} · {col_titles[c]}"
                ax.set_title(title, fontsize=8)
    fig.tight_layout()
    plt.show()


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
