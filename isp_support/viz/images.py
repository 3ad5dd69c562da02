"""Images for display: batches as RGB arrays, and grids of them."""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib.pyplot as plt
import numpy as np
import torch

from .theme import COLUMN_INCHES


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
    """A grid of images: one row per entry of ``rows`` (each ``(B, H, W, 3)``), one column per item; panels of
    ``size`` inches, smaller when the row would be wider than the site's column."""
    n_cols = max(len(v) for v in rows.values())
    size = min(size, COLUMN_INCHES / n_cols)
    fig, axes = plt.subplots(len(rows), n_cols, figsize=(size * n_cols, (size + 0.3) * len(rows)),
                             layout="constrained", squeeze=False)
    for r, (name, images) in enumerate(rows.items()):
        for c in range(n_cols):
            ax = axes[r, c]
            ax.axis("off")
            if c < len(images):
                ax.imshow(images[c])
                title = name if col_titles is None else f"{name}\n{col_titles[c]}"
                ax.set_title(title, fontsize=7 if size < 1.8 else 8)
    plt.show()
