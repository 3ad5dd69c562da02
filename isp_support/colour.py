"""Differentiable colour statistics: YUV soft histograms (paper eqs. 7-8).

The soft histograms spread each value linearly over its two nearest bin
centres (a triangular kernel one bin wide), so they are differentiable almost
everywhere with respect to the pixel values, cost O(pixels) memory whatever
the number of bins, and sum to one. The 2-D (U, V) histogram spreads each
pixel bilinearly over four bins. YUV is kornia's (BT.601): Y in [0, 1],
U in [-0.436, 0.436], V in [-0.615, 0.615].
"""

from __future__ import annotations

import torch
from kornia.color import rgb_to_yuv

Y_RANGE = (0.0, 1.0)
U_RANGE = (-0.436, 0.436)
V_RANGE = (-0.615, 0.615)


def _linear_weights(values: torch.Tensor, bins: int, lo: float, hi: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Lower bin index and the weight of the upper bin for values mapped onto ``bins`` centres."""
    pos = (values.clamp(lo, hi) - lo) / (hi - lo) * (bins - 1)
    low = pos.detach().floor().clamp(max=bins - 2)
    return low.long(), pos - low


def soft_histogram_1d(values: torch.Tensor, bins: int, value_range: tuple[float, float]) -> torch.Tensor:
    """``(B, N)`` values -> ``(B, bins)`` soft histogram summing to 1 per row; bin centres span ``value_range``."""
    idx, frac = _linear_weights(values, bins, *value_range)
    hist = values.new_zeros(values.shape[0], bins)
    hist = hist.scatter_add(1, idx, 1 - frac).scatter_add(1, idx + 1, frac)
    return hist / values.shape[1]


def soft_histogram_2d(u: torch.Tensor, v: torch.Tensor, bins: int, u_range: tuple[float, float],
                      v_range: tuple[float, float]) -> torch.Tensor:
    """Joint soft histogram of ``(B, N)`` pairs -> ``(B, bins, bins)`` (rows: u, columns: v), summing to 1."""
    iu, fu = _linear_weights(u, bins, *u_range)
    iv, fv = _linear_weights(v, bins, *v_range)
    hist = u.new_zeros(u.shape[0], bins * bins)
    for du, wu in ((0, 1 - fu), (1, fu)):
        for dv, wv in ((0, 1 - fv), (1, fv)):
            hist = hist.scatter_add(1, (iu + du) * bins + iv + dv, wu * wv)
    return (hist / u.shape[1]).view(-1, bins, bins)


def y_histogram(rgb: torch.Tensor, bins: int = 64) -> torch.Tensor:
    """Luma histogram of ``(B, 3, H, W)`` RGB in [0, 1]: ``(B, bins)``."""
    y = rgb_to_yuv(rgb)[:, 0].flatten(1)
    return soft_histogram_1d(y, bins, Y_RANGE)


def uv_histogram(rgb: torch.Tensor, bins: int = 32) -> torch.Tensor:
    """Joint chroma histogram of ``(B, 3, H, W)`` RGB in [0, 1]: ``(B, bins, bins)``."""
    yuv = rgb_to_yuv(rgb)
    return soft_histogram_2d(yuv[:, 1].flatten(1), yuv[:, 2].flatten(1), bins, U_RANGE, V_RANGE)
