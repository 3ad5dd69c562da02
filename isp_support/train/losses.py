"""Training losses of the colour network (paper section 4.3, eqs. 6-12) and the PAL add-on.

Every loss takes batches ``(B, 3, H, W)`` of RGB (nominally in [0, 1]), returns a
0-dim tensor, is differentiable with respect to the prediction ``y_hat`` and
runs on whatever device and floating dtype its inputs are on. Statistics that
are sensitive to half precision (standard deviations, Gram matrices, the PAL
solve) are computed in at least float32 with autocast disabled, so the losses
can be called inside ``torch.autocast`` regions.

Notation: ``y_hat`` is the network's prediction, ``y`` (``y*`` in the paper) its
pseudo-paired target.

* :func:`moment_loss` (eq. 6): channel means and standard deviations.
* :func:`luma_histogram_loss` (eq. 7), :func:`chroma_histogram_loss` (eq. 8):
  squared L2 between soft YUV histograms (:mod:`isp_support.colour`).
* :class:`~isp_support.train.gram.GramLoss` (eq. 9), in :mod:`isp_support.train.gram`: squared Frobenius
  distance between Gram matrices of a frozen backbone's features.
* :func:`tv_loss` (eq. 10): anisotropic L1 total variation.
* :func:`hinge_d_loss` (eq. 11), :func:`hinge_g_loss` (eq. 12): hinge GAN losses.
* :func:`pal_loss`: the photometric alignment loss (PAL), not part of the paper:
  a closed-form ridge-regularised affine colour fit of the prediction to the
  target before a pixel loss.
* :class:`LossWeights`, :func:`stage1_loss`: the weighted sum of eq. 13 without the adversarial term
  (stage 2 adds it in :mod:`isp_support.train.objectives`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from ..colour import uv_histogram, y_histogram
from ..config import TrainConfig

__all__ = [
    "LossWeights",
    "chroma_histogram_loss",
    "hinge_d_loss",
    "hinge_g_loss",
    "luma_histogram_loss",
    "moment_loss",
    "pal_loss",
    "stage1_loss",
    "tv_loss",
]

STD_EPS = 1e-8
"""Added to variances before the square root in :func:`moment_loss`, so the gradient of a
standard deviation stays finite on flat images (it changes sigma by at most 1e-4)."""


# --- helpers ------------------------------------------------------------------------------

def _check_images(*xs: torch.Tensor) -> None:
    for x in xs:
        if x.ndim != 4:
            raise ValueError(f"expected images (B, C, H, W), got shape {tuple(x.shape)}")
    if len(xs) == 2 and xs[0].shape != xs[1].shape:
        raise ValueError(f"prediction and target differ in shape: {tuple(xs[0].shape)} vs {tuple(xs[1].shape)}")


def _at_least_float32(x: torch.Tensor) -> torch.Tensor:
    """``x`` in float32 when it is half / bfloat16, unchanged when float32 or float64."""
    return x.to(torch.promote_types(x.dtype, torch.float32))


def _no_autocast(x: torch.Tensor) -> contextlib.AbstractContextManager:
    """A context in which autocast is off on ``x``'s device type (a no-op where it is unsupported)."""
    try:
        return torch.autocast(device_type=x.device.type, enabled=False)
    except RuntimeError:  # device types without autocast support
        return contextlib.nullcontext()


# --- eq. 6: moments -----------------------------------------------------------------------

def moment_loss(y_hat: torch.Tensor, y: torch.Tensor, per_sample: bool = False) -> torch.Tensor:
    """Eq. 6: ``||mu(y_hat) - mu(y*)||_1 + ||sigma(y_hat) - sigma(y*)||_1`` over the RGB channels.

    ``mu`` and ``sigma`` are per-channel means and (population, ``1/N``) standard
    deviations, ``sigma = sqrt(var + 1e-8)`` so that flat images have a finite
    gradient. The L1 norms sum over the channels.

    ``per_sample=False`` (default, as the authors' code): the statistics are taken
    over the whole batch (all of ``B x H x W`` per channel), so the loss matches the
    colour distribution of the batch as a whole and individual pairs may trade
    colour against each other. ``per_sample=True``: the statistics are taken per
    image over ``H x W``, the loss computed per pair and averaged over the batch,
    which ties each prediction to its own pseudo-paired target.
    """
    _check_images(y_hat, y)
    dims = (2, 3) if per_sample else (0, 2, 3)
    with _no_autocast(y_hat):
        a, b = _at_least_float32(y_hat), _at_least_float32(y)
        mu_a, mu_b = a.mean(dim=dims), b.mean(dim=dims)
        sd_a = (a.var(dim=dims, unbiased=False) + STD_EPS).sqrt()
        sd_b = (b.var(dim=dims, unbiased=False) + STD_EPS).sqrt()
        per = (mu_a - mu_b).abs().sum(-1) + (sd_a - sd_b).abs().sum(-1)  # (B,) or ()
        return per.mean()


# --- eqs. 7-8: histograms -----------------------------------------------------------------

def luma_histogram_loss(y_hat: torch.Tensor, y: torch.Tensor, bins: int = 64) -> torch.Tensor:
    """Eq. 7: ``(1/B) sum_b ||h_Y(y_hat_b) - h_Y(y*_b)||_2^2`` with ``bins``-bin soft luma histograms.

    Each histogram sums to one (:func:`isp_support.colour.y_histogram`), so the loss
    lies in [0, 2]; two constant images whose luma falls on different bin centres give 2.
    """
    _check_images(y_hat, y)
    with _no_autocast(y_hat):
        diff = y_histogram(_at_least_float32(y_hat), bins) - y_histogram(_at_least_float32(y), bins)
        return diff.pow(2).sum(dim=1).mean()


def chroma_histogram_loss(y_hat: torch.Tensor, y: torch.Tensor, bins: int = 32) -> torch.Tensor:
    """Eq. 8: ``(1/B) sum_b ||h_UV(y_hat_b) - h_UV(y*_b)||_2^2`` with ``bins x bins`` joint (U, V) histograms.

    The squared L2 norm runs over all ``bins^2`` cells
    (:func:`isp_support.colour.uv_histogram`); the loss lies in [0, 2].
    """
    _check_images(y_hat, y)
    with _no_autocast(y_hat):
        diff = uv_histogram(_at_least_float32(y_hat), bins) - uv_histogram(_at_least_float32(y), bins)
        return diff.pow(2).sum(dim=(1, 2)).mean()


# --- eq. 10: total variation ---------------------------------------------------------------

def tv_loss(y_hat: torch.Tensor) -> torch.Tensor:
    """Eq. 10: ``(1/(C H W)) sum (|x[i, j+1] - x[i, j]| + |x[i+1, j] - x[i, j]|)``, averaged over the batch.

    The sums run over the valid differences only (``H (W-1)`` horizontal and
    ``(H-1) W`` vertical ones per channel: no padding, no wrap-around), while the
    normaliser is ``C H W`` as in the equation, not the number of differences.
    A 0/1 vertical step edge in every channel thus gives ``H / (H W) = 1 / W``.
    """
    _check_images(y_hat)
    b, c, h, w = y_hat.shape
    dx = (y_hat[..., :, 1:] - y_hat[..., :, :-1]).abs().sum(dim=(1, 2, 3))
    dy = (y_hat[..., 1:, :] - y_hat[..., :-1, :]).abs().sum(dim=(1, 2, 3))
    return ((dx + dy) / (c * h * w)).mean()


# --- eqs. 11-12: hinge GAN -----------------------------------------------------------------

def hinge_d_loss(d_real: torch.Tensor, d_fake: torch.Tensor) -> torch.Tensor:
    """Eq. 11: ``E[max(0, 1 - D(y_real))] + E[max(0, 1 + D(y_hat))]``.

    ``d_real`` / ``d_fake`` are discriminator logits of any shape (per-image or
    per-pixel / PatchGAN maps); each expectation is the mean over all of its logits,
    so the two may differ in shape. Detach ``y_hat`` before the discriminator when
    training it.
    """
    return F.relu(1 - d_real).mean() + F.relu(1 + d_fake).mean()


def hinge_g_loss(d_fake: torch.Tensor) -> torch.Tensor:
    """Eq. 12: ``-E[D(y_hat)]``, the mean over all logits of the discriminator's map."""
    return -d_fake.mean()


# --- PAL ---------------------------------------------------------------------------------

def _affine_fit(x: torch.Tensor, t: torch.Tensor, ridge: float, bias: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample ``(A (B, 3, 3), b (B, 3))`` of the ridge-regularised fit ``A x + b ~ t`` (see :func:`pal_loss`).

    ``x``, ``t``: ``(B, C, N)`` pixel columns.
    """
    n = x.shape[-1]
    eye = torch.eye(x.shape[1], dtype=x.dtype, device=x.device)
    if bias:
        mx, mt = x.mean(dim=-1, keepdim=True), t.mean(dim=-1, keepdim=True)
        xc, tc = x - mx, t - mt
    else:
        xc, tc = x, t
    sxx = xc @ xc.transpose(1, 2) / n      # (B, C, C): covariance (bias) or second moment of x
    sxt = xc @ tc.transpose(1, 2) / n      # (B, C, C): cross term, sxt[i, k] = E[x_i t_k]
    # Normal equations A (Sxx + r I) = Stx + r I; transposed: (Sxx + r I) A^T = Sxt + r I.
    a_t = torch.linalg.solve(sxx + ridge * eye, sxt + ridge * eye)
    a = a_t.transpose(1, 2)
    b = (mt - a @ mx).squeeze(-1) if bias else x.new_zeros(x.shape[:2])
    return a, b


def pal_loss(y_hat: torch.Tensor, y: torch.Tensor, ridge: float = 1e-3, bias: bool = True, base: str = "l1",
             detach_transform: bool = False, return_transform: bool = False) -> Any:
    """Photometric alignment loss: a pixel loss after the best affine colour map of ``y_hat`` onto ``y``.

    Per sample, with ``x_n`` / ``t_n`` the RGB vectors of pixel ``n`` of ``y_hat`` /
    ``y`` (``N = H W`` pixels), ``A`` (3 x 3) and ``b`` (3) minimise

        ``(1/N) sum_n ||A x_n + b - t_n||^2 + ridge * ||A - I||_F^2``

    (the data term is a per-pixel mean, so ``ridge`` does not depend on the image
    size; ``b`` is not regularised). Setting the gradient to zero gives
    ``b = mu_t - A mu_x`` and ``A (S_xx + ridge I) = S_tx + ridge I`` with ``S_xx`` the
    3 x 3 covariance of ``x`` and ``S_tx`` the cross-covariance ``E[(t - mu_t)(x - mu_x)^T]``
    (population, ``1/N``), i.e. one batched 3 x 3 ``torch.linalg.solve``; this is the
    4 x 4 augmented solve with ``b`` eliminated. ``bias=False`` fixes ``b = 0`` and
    uses uncentred second moments. The ridge pulls ``A`` towards the identity, so a
    flat prediction (``S_xx = 0``) is aligned by its mean only, and
    ``ridge -> inf`` leaves ``A = I`` (mean shift only, or nothing when ``bias=False``).

    The loss is then ``base`` (``"l1"``: mean absolute error, ``"l2"``: mean squared
    error, over all elements) between ``A y_hat + b`` and ``y``. An affine colour
    discrepancy is discounted (the loss is ~0 when ``y_hat`` is an exact affine
    colour transform of ``y`` and ``ridge`` is small); structure is not.

    Gradients flow through the closed form (``A`` and ``b`` are functions of
    ``y_hat``) by default, so the loss is (nearly) invariant to colour maps of
    ``y_hat`` and leaves colour to the other losses. ``detach_transform=True``
    treats ``A`` and ``b`` as constants instead. Gradients also reach ``y`` if it
    requires them. ``return_transform=True`` returns ``(loss, A, b)``.

    Statistics and the solve are computed in at least float32 with autocast off.
    """
    _check_images(y_hat, y)
    if base not in ("l1", "l2"):
        raise ValueError(f"base must be 'l1' or 'l2', got {base!r}")
    if ridge < 0:
        raise ValueError(f"ridge must be >= 0, got {ridge}")
    with _no_autocast(y_hat):
        x = _at_least_float32(y_hat).flatten(2)
        t = _at_least_float32(y).flatten(2)
        a, b = _affine_fit(x, t, ridge, bias)
        if detach_transform:
            a, b = a.detach(), b.detach()
        aligned = a @ x + b.unsqueeze(-1)
        loss = F.l1_loss(aligned, t) if base == "l1" else F.mse_loss(aligned, t)
    return (loss, a, b) if return_transform else loss


# --- weighted sums -------------------------------------------------------------------------

@dataclass(frozen=True)
class LossWeights:
    """Weights of the training terms; the defaults are the paper's stage 1, defined once, in
    :class:`~isp_support.config.TrainConfig` (stage 2's lower moment and TV weights in
    :class:`~isp_support.config.Stage2Config`; :func:`isp_support.train.objectives.loss_weights` builds the
    weights of a run from its config).

    ``pal`` weights the optional :func:`pal_loss` (not in the paper; 0 = off).
    A term whose weight is 0 is not computed.
    """

    mom: float = TrainConfig.mom
    luma: float = TrainConfig.luma
    chroma: float = TrainConfig.chroma
    gram: float = TrainConfig.gram
    tv: float = TrainConfig.tv
    pal: float = 0.0
    luma_bins: int = 64
    chroma_bins: int = 32
    moment_per_sample: bool = False
    """:func:`moment_loss`'s ``per_sample`` (default: batch-level statistics, as the authors)."""
    pal_ridge: float = 1e-3
    pal_base: str = "l1"


def stage1_loss(y_hat: torch.Tensor, y_star: torch.Tensor, weights: LossWeights | None = None,
                gram: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
                ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Stage 1: ``mom L_mom + luma L_Y + chroma L_UV + gram L_Gram + tv L_TV (+ pal L_PAL)``.

    ``gram`` is a :class:`~isp_support.train.gram.GramLoss` (needed unless ``weights.gram == 0``). Returns
    ``(total, terms)``: ``total`` is differentiable; ``terms`` maps ``mom``, ``luma``,
    ``chroma``, ``gram``, ``tv`` (and ``pal`` when weighted) to the detached,
    unweighted 0-dim values, plus ``total`` (detached). Values stay tensors on the
    device, so logging them does not synchronise; call ``float()`` when needed.
    """
    w = LossWeights() if weights is None else weights
    if w.gram and gram is None:
        raise ValueError("weights.gram > 0 needs a GramLoss (see gram_loss_for)")
    parts: dict[str, tuple[float, Callable[[], torch.Tensor]]] = {
        "mom": (w.mom, lambda: moment_loss(y_hat, y_star, per_sample=w.moment_per_sample)),
        "luma": (w.luma, lambda: luma_histogram_loss(y_hat, y_star, w.luma_bins)),
        "chroma": (w.chroma, lambda: chroma_histogram_loss(y_hat, y_star, w.chroma_bins)),
        "gram": (w.gram, lambda: gram(y_hat, y_star)),
        "tv": (w.tv, lambda: tv_loss(y_hat)),
        "pal": (w.pal, lambda: pal_loss(y_hat, y_star, ridge=w.pal_ridge, base=w.pal_base)),
    }
    return _weighted(parts, y_hat)


def _weighted(parts: dict[str, tuple[float, Callable[[], torch.Tensor]]],
              like: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    total = like.new_zeros((), dtype=torch.promote_types(like.dtype, torch.float32))
    terms: dict[str, torch.Tensor] = {}
    for name, (weight, fn) in parts.items():
        if not weight:
            continue
        value = fn()
        total = total + weight * value
        terms[name] = value.detach()
    terms["total"] = total.detach()
    return total, terms
