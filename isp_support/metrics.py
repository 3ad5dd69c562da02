"""Image-quality figures: unpaired validation statistics of the training notebooks.

* :func:`colour_distance`: how far the pooled colour distribution of a set of
  images is from a reference set's (the target domain): the sliced 1-Wasserstein
  distance between their YUV pixel distributions, in YUV units.
* :func:`structure_fidelity`: SSIM's structure term between the luma of a
  network's input and of its output. It is 1 for any locally affine change of
  brightness and contrast (a tone curve, a colour matrix) and drops when edges
  are invented, removed or displaced (the emboss-like artefacts that distribution
  losses alone let the 3x3 convolutions produce).
* :func:`ssim_luma`: the full SSIM (luminance x contrast x structure) of the
  same pair, for reference.
* :func:`psnr`: per-image PSNR against a reference (used with ground truth only
  to evaluate, never to train the unpaired modes).

All take batches ``(B, 3, H, W)`` of RGB in [0, 1] on any device.
"""

from __future__ import annotations

import torch
from kornia.color import rgb_to_yuv
from kornia.filters import gaussian_blur2d

__all__ = ["SlicedReference", "colour_distance", "psnr", "ssim_luma", "structure_fidelity", "yuv_pixels"]

SSIM_WINDOW = 11
SSIM_SIGMA = 1.5
C1 = 0.01 ** 2
C2 = 0.03 ** 2
C3 = C2 / 2


def _luma(rgb: torch.Tensor) -> torch.Tensor:
    return rgb_to_yuv(rgb.float())[:, :1]


def _local_stats(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Gaussian-windowed means, variances and covariance (SSIM's, reflect borders)."""
    blur = lambda t: gaussian_blur2d(t, (SSIM_WINDOW, SSIM_WINDOW), (SSIM_SIGMA, SSIM_SIGMA),  # noqa: E731
                                     border_type="reflect")
    mx, my = blur(x), blur(y)
    vx = (blur(x * x) - mx * mx).clamp_min(0)
    vy = (blur(y * y) - my * my).clamp_min(0)
    cxy = blur(x * y) - mx * my
    return mx, my, vx, vy, cxy


def structure_fidelity(inputs: torch.Tensor, outputs: torch.Tensor) -> torch.Tensor:
    """Per image: mean over pixels of ``(sigma_xy + C3) / (sigma_x sigma_y + C3)`` on luma, ``(B,)``."""
    _, _, vx, vy, cxy = _local_stats(_luma(inputs), _luma(outputs))
    s = (cxy + C3) / (vx.sqrt() * vy.sqrt() + C3)
    return s.flatten(1).mean(dim=1)


def ssim_luma(inputs: torch.Tensor, outputs: torch.Tensor) -> torch.Tensor:
    """Per image: mean SSIM of the two lumas (Gaussian window 11, sigma 1.5, K1 0.01, K2 0.03), ``(B,)``."""
    mx, my, vx, vy, cxy = _local_stats(_luma(inputs), _luma(outputs))
    ssim = ((2 * mx * my + C1) * (2 * cxy + C2)) / ((mx * mx + my * my + C1) * (vx + vy + C2))
    return ssim.flatten(1).mean(dim=1)


def yuv_pixels(rgb: torch.Tensor, max_pixels: int, seed: int = 0) -> torch.Tensor:
    """``(N, 3)`` YUV values of at most ``max_pixels`` pixels of a batch, drawn without replacement (seeded)."""
    yuv = rgb_to_yuv(rgb.float()).permute(0, 2, 3, 1).reshape(-1, 3)
    if yuv.shape[0] <= max_pixels:
        return yuv
    gen = torch.Generator().manual_seed(seed)
    pick = torch.randperm(yuv.shape[0], generator=gen)[:max_pixels].to(yuv.device)
    return yuv[pick]


class SlicedReference:
    """A reference colour distribution, projected once onto fixed directions for :meth:`distance`.

    ``pixels``: ``(N, 3)`` YUV values (:func:`yuv_pixels`). Directions are the three
    axes plus ``n_directions - 3`` seeded random unit vectors; each projection is
    summarised by ``levels`` quantiles, so sets of different sizes compare.
    """

    def __init__(self, pixels: torch.Tensor, n_directions: int = 64, levels: int = 256, seed: int = 0):
        gen = torch.Generator().manual_seed(seed)
        rand = torch.nn.functional.normalize(torch.randn(max(n_directions - 3, 0), 3, generator=gen), dim=1)
        self.directions = torch.cat([torch.eye(3), rand]).to(pixels.device)
        self.q = ((torch.arange(levels, dtype=torch.float32) + 0.5) / levels).to(pixels.device)
        self.quantiles = self._quantiles(pixels)

    def _quantiles(self, pixels: torch.Tensor) -> torch.Tensor:
        return torch.quantile(pixels.float() @ self.directions.T, self.q, dim=0)  # (levels, D)

    def distance(self, pixels: torch.Tensor) -> float:
        """Sliced W1: mean over directions and quantile levels of ``|Q_pixels - Q_reference|``."""
        return float((self._quantiles(pixels) - self.quantiles).abs().mean())


def colour_distance(images: torch.Tensor, reference: torch.Tensor, max_pixels: int = 200_000, seed: int = 0) -> float:
    """Sliced W1 between the pooled YUV pixels of two batches of RGB images (0: same distribution)."""
    ref = SlicedReference(yuv_pixels(reference, max_pixels, seed), seed=seed)
    return ref.distance(yuv_pixels(images, max_pixels, seed + 1))


def psnr(pred: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """Per image: ``10 log10(1 / MSE)`` over all channels and pixels (data range 1), ``(B,)``."""
    mse = (pred.float() - ref.float()).pow(2).flatten(1).mean(dim=1)
    return 10 * torch.log10(1.0 / mse)
