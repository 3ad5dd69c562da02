"""Discriminators of stage 2, behind one interface (:class:`Discriminator`): ``d_loss(real, fake)`` and
``g_loss(fake)``, the hinge losses of eqs. 11-12 on their logits.

**UNetDiscriminator**: the Real-ESRGAN U-Net discriminator with spectral
normalisation, giving one realism logit per pixel (B, 1, H, W).

**ExpertCommittee**: a committee of three small discriminators in the spirit
of EGUOT (a committee of expert discriminators guiding an unbalanced-OT ISP
mapping), each seeing a different fixed view of the image:

* ``colour``: local means (``pool`` x ``pool`` average pooling) of kornia's
  YUV, U and V scaled to about [-1, 1] and Y to [-1, 1] as conditioning
  (colour casts depend on brightness: tinted highlights, green shadows), read
  by a per-location MLP (1x1 convolutions only). It sees colour and tone
  statistics, nothing of texture or structure.
* ``structure``: the high-pass residual of the RGB image (image minus a
  Gaussian blur, sigma 1.5) and the Sobel gradient magnitude of the luma,
  read by a small strided PatchGAN. It sees edges, noise, halos, ringing and
  over-sharpening, nothing of the global colour.
* ``frequency``: the log-magnitude spectrum ``log1p(|rfft2|)`` of
  non-overlapping ``patch`` x ``patch`` luma patches (mean removed, Hann
  window against edge leakage, zero frequency shifted to the centre row;
  always computed in float32, whatever the input's dtype or autocast),
  each read by a small CNN with global pooling into one logit per patch. It
  sees the shape of the spectrum: noise floor, sharpness fall-off,
  periodic (demosaicing, upsampling, JPEG-grid) peaks.

Each expert has a weight; :meth:`ExpertCommittee.d_loss` and
:meth:`ExpertCommittee.g_loss` combine the per-expert hinge losses with them and
also return the per-expert values, which training logs (``d_colour``, ...).

*Spectral normalisation* (``torch.nn.utils.parametrizations.spectral_norm``,
one power iteration per training-mode forward) is on every inner
convolution, computed in float32 with autocast off (:class:`_Float32SpectralNorm`:
CUDA autocast would run its ``mv`` and ``vdot`` in bfloat16, a weight's
``sigma`` to bfloat16's three digits). Following Real-ESRGAN, the first and
last layers of each discriminator are left plain by default: an SN network is
1-Lipschitz, and the experts' inputs (high-pass residuals, chroma offsets) are
small, so a free first layer lets the network set its own input gain and a
free last layer its logit scale. ``sn_first_last=True`` normalises them too.

*Determinism.* Construction (including the spectral-norm power-iteration
vectors) only draws from torch's global generator, so it is reproducible
under ``torch.manual_seed``; CPU forward and backward passes are
deterministic. On CUDA, the backward of bilinear upsampling (the U-Net's)
uses atomic adds and is not bit-reproducible unless
``torch.use_deterministic_algorithms(True)`` is set.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch
import torch.nn.functional as F
from kornia.color import rgb_to_yuv
from kornia.filters import gaussian_blur2d, sobel
from torch import nn
from torch.nn.utils import parametrize
from torch.nn.utils.parametrizations import _SpectralNorm

from .losses import hinge_d_loss, hinge_g_loss

__all__ = [
    "Discriminator",
    "UNetDiscriminator",
    "ColourExpert",
    "StructureExpert",
    "FrequencyExpert",
    "ExpertCommittee",
]


class Discriminator(nn.Module):
    """What stage 2 trains against: ``forward`` gives realism logits, :meth:`d_loss` / :meth:`g_loss` the hinge
    losses on them as ``(loss, parts)``, ``parts`` the named unweighted values logged beside it (none here).

    A discriminator with several outputs (:class:`ExpertCommittee`) overrides both methods.
    """

    def d_loss(self, real: torch.Tensor, fake: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Eq. 11 on target-domain patches ``real`` (scored first) and predictions ``fake`` (pass them detached
        when training the discriminator)."""
        return hinge_d_loss(self(real), self(fake)), {}

    def g_loss(self, fake: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Eq. 12, ``-mean(D(fake))``, for the generator."""
        return hinge_g_loss(self(fake)), {}


class _Float32SpectralNorm(_SpectralNorm):
    """torch's spectral-norm parametrization with autocast off: the power iteration and ``sigma`` in the
    weight's own dtype (float32), not bfloat16.

    Under CUDA autocast torch's own runs ``mv`` and ``vdot`` in bfloat16 (CPU autocast leaves them alone), so
    the Lipschitz bound would differ by device and jitter with bfloat16's rounding. The convolution using the
    normalised weight is still autocast. Same buffers (``_u``, ``_v``) and state-dict keys as torch's
    ``spectral_norm``, so checkpoints written with either load into the other.
    """

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        with torch.autocast(weight.device.type, enabled=False):
            return super().forward(weight)


def spectral_norm(module: nn.Module) -> nn.Module:
    """``torch.nn.utils.parametrizations.spectral_norm(module)`` (its defaults) with autocast off
    (:class:`_Float32SpectralNorm`)."""
    parametrize.register_parametrization(module, "weight", _Float32SpectralNorm(module.weight))
    return module


def _sn(module: nn.Module, enabled: bool = True) -> nn.Module:
    return spectral_norm(module) if enabled else module


def _upsample_to(x: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    return F.interpolate(x, size=ref.shape[-2:], mode="bilinear", align_corners=False)


class UNetDiscriminator(Discriminator):
    """Real-ESRGAN-style U-Net discriminator with spectral normalisation: per-pixel realism logits.

    Encoder: 3x3 conv ``in_ch -> f``, then three 4x4 stride-2 convs ``f -> 2f -> 4f -> 8f``. Decoder:
    bilinear upsampling, 3x3 conv back down ``8f -> 4f -> 2f -> f``, each added to the encoder feature of
    the same resolution (skip connection); two extra 3x3 convs ``f -> f`` and a 3x3 conv ``f -> 1``.
    LeakyReLU(0.2) throughout. Output ``(B, 1, H, W)``: one logit per pixel (a dense PatchGAN).

    Any input size of at least 8 per side works: each upsampling goes to the exact size of the matching
    encoder feature, so sizes that are not multiples of 8 need no padding or cropping.
    """

    def __init__(self, in_ch: int = 3, features: int = 64, sn_first_last: bool = False):
        super().__init__()
        f = features
        self.conv0 = _sn(nn.Conv2d(in_ch, f, 3, 1, 1), sn_first_last)
        self.down = nn.ModuleList(
            spectral_norm(nn.Conv2d(a, b, 4, 2, 1, bias=False)) for a, b in ((f, 2 * f), (2 * f, 4 * f), (4 * f, 8 * f))
        )
        self.up = nn.ModuleList(
            spectral_norm(nn.Conv2d(a, b, 3, 1, 1, bias=False)) for a, b in ((8 * f, 4 * f), (4 * f, 2 * f), (2 * f, f))
        )
        self.extra = nn.ModuleList(spectral_norm(nn.Conv2d(f, f, 3, 1, 1, bias=False)) for _ in range(2))
        self.out = _sn(nn.Conv2d(f, 1, 3, 1, 1), sn_first_last)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        act = lambda t: F.leaky_relu(t, 0.2)  # noqa: E731
        skips = [act(self.conv0(x))]
        for conv in self.down:
            skips.append(act(conv(skips[-1])))
        h = skips.pop()
        for conv in self.up:
            skip = skips.pop()
            h = act(conv(_upsample_to(h, skip))) + skip
        for conv in self.extra:
            h = act(conv(h))
        return self.out(h)


def _luma(rgb: torch.Tensor) -> torch.Tensor:
    return rgb_to_yuv(rgb)[:, :1]


class ColourExpert(nn.Module):
    """Colour-fidelity expert: per-location MLP (1x1 convs) on ``pool`` x ``pool`` local means of YUV.

    Input ``(B, 3, H, W)`` RGB -> logits ``(B, 1, H // pool, W // pool)``.
    """

    def __init__(self, hidden: int = 64, pool: int = 4, sn_first_last: bool = False):
        super().__init__()
        self.pool = pool
        self.register_buffer("scale", torch.tensor([2.0, 1 / 0.436, 1 / 0.615]).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("shift", torch.tensor([-1.0, 0.0, 0.0]).view(1, 3, 1, 1), persistent=False)
        self.net = nn.Sequential(
            _sn(nn.Conv2d(3, hidden, 1), sn_first_last), nn.LeakyReLU(0.2),
            spectral_norm(nn.Conv2d(hidden, hidden, 1)), nn.LeakyReLU(0.2),
            spectral_norm(nn.Conv2d(hidden, hidden, 1)), nn.LeakyReLU(0.2),
            _sn(nn.Conv2d(hidden, 1, 1), sn_first_last),
        )

    def view(self, rgb: torch.Tensor) -> torch.Tensor:
        """What the expert sees: local-mean YUV, Y in [-1, 1], U and V scaled to about [-1, 1]."""
        yuv = rgb_to_yuv(rgb) * self.scale + self.shift
        pool = max(1, min(self.pool, *rgb.shape[-2:]))
        return F.avg_pool2d(yuv, pool) if pool > 1 else yuv

    def forward(self, rgb: torch.Tensor) -> torch.Tensor:
        return self.net(self.view(rgb))


class StructureExpert(nn.Module):
    """Structural-artifact expert: PatchGAN on the RGB high-pass residual and the luma Sobel magnitude.

    Input ``(B, 3, H, W)`` RGB -> logits ``(B, 1, ~H / 4, ~W / 4)``.
    """

    def __init__(self, features: int = 32, sigma: float = 1.5, sn_first_last: bool = False):
        super().__init__()
        self.sigma = sigma
        self.kernel = 2 * math.ceil(3 * sigma) + 1
        f = features
        self.net = nn.Sequential(
            _sn(nn.Conv2d(4, f, 3, 1, 1), sn_first_last), nn.LeakyReLU(0.2),
            spectral_norm(nn.Conv2d(f, 2 * f, 4, 2, 1)), nn.LeakyReLU(0.2),
            spectral_norm(nn.Conv2d(2 * f, 2 * f, 4, 2, 1)), nn.LeakyReLU(0.2),
            spectral_norm(nn.Conv2d(2 * f, 2 * f, 3, 1, 1)), nn.LeakyReLU(0.2),
            _sn(nn.Conv2d(2 * f, 1, 3, 1, 1), sn_first_last),
        )

    def view(self, rgb: torch.Tensor) -> torch.Tensor:
        """What the expert sees: ``(B, 4, H, W)`` = RGB minus its Gaussian blur, and the luma Sobel magnitude."""
        k = min(self.kernel, 2 * ((min(rgb.shape[-2:]) - 1) // 2) + 1)  # reflect padding needs k // 2 < size
        highpass = rgb - gaussian_blur2d(rgb, (k, k), (self.sigma, self.sigma), border_type="reflect")
        return torch.cat((highpass, sobel(_luma(rgb))), dim=1)

    def forward(self, rgb: torch.Tensor) -> torch.Tensor:
        return self.net(self.view(rgb))


class FrequencyExpert(nn.Module):
    """Frequency-realism expert: small CNN on the log-magnitude spectrum of each luma patch.

    Input ``(B, 3, H, W)`` RGB -> logits ``(B, 1, H // p, W // p)`` with ``p = min(patch, H, W)``
    (non-overlapping patches; a remainder at the right/bottom is ignored). Needs images of at least 6 per side.
    """

    def __init__(self, patch: int = 32, features: int = 32, sn_first_last: bool = False):
        super().__init__()
        self.patch = patch
        f = features
        self.net = nn.Sequential(
            _sn(nn.Conv2d(1, f, 3, 1, 1), sn_first_last), nn.LeakyReLU(0.2),
            spectral_norm(nn.Conv2d(f, 2 * f, 4, 2, 1)), nn.LeakyReLU(0.2),
            spectral_norm(nn.Conv2d(2 * f, 2 * f, 4, 2, 1)), nn.LeakyReLU(0.2),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(),
            _sn(nn.Linear(2 * f, 1), sn_first_last),
        )

    def view(self, rgb: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        """What the expert sees: ``(B * n, 1, p, p // 2 + 1)`` float32 patch log-spectra, and the patch grid
        ``(nh, nw)``.

        Computed from ``rgb`` in float32 with autocast off: CUDA has no bfloat16 FFT (CPU autocast casts FFTs
        to float32, CUDA's does not), and the mean removal and window before it would round in bfloat16. The
        network reading the spectra runs under whatever autocast the caller set.
        """
        with torch.autocast(rgb.device.type, enabled=False):
            p = min(self.patch, *rgb.shape[-2:])
            y = _luma(rgb.float())
            nh, nw = y.shape[-2] // p, y.shape[-1] // p
            patches = y[..., : nh * p, : nw * p].unfold(2, p, p).unfold(3, p, p)  # (B, 1, nh, nw, p, p)
            patches = patches.reshape(-1, 1, p, p)
            patches = patches - patches.mean(dim=(-2, -1), keepdim=True)
            window = torch.hann_window(p, periodic=False, dtype=y.dtype, device=y.device) if p > 2 else None
            if window is not None:
                patches = patches * torch.outer(window, window)
            spec = torch.fft.rfft2(patches, norm="ortho")
            power = spec.real.square() + spec.imag.square()
            logmag = torch.log1p(torch.sqrt(power + 1e-12))
            return torch.fft.fftshift(logmag, dim=-2), (nh, nw)

    def forward(self, rgb: torch.Tensor) -> torch.Tensor:
        spec, (nh, nw) = self.view(rgb)
        return self.net(spec).view(rgb.shape[0], 1, nh, nw)


class ExpertCommittee(Discriminator):
    """EGUOT-style committee of three spectral-norm expert discriminators with weights.

    ``forward(x)`` returns ``{"colour": logits, "structure": logits, "frequency": logits}`` (each
    ``(B, 1, h, w)`` at its own resolution). :meth:`d_loss` / :meth:`g_loss` return the weighted sum of
    the per-expert hinge losses and the per-expert (unweighted) values for logging.
    """

    NAMES = ("colour", "structure", "frequency")

    def __init__(self, weights: Mapping[str, float] | None = None, colour_pool: int = 4, patch: int = 32,
                 features: int = 32, sn_first_last: bool = False):
        super().__init__()
        weights = dict(weights or {})
        unknown = set(weights) - set(self.NAMES)
        if unknown:
            raise ValueError(f"unknown experts {sorted(unknown)}; expected {self.NAMES}")
        self.weights = {name: float(weights.get(name, 1.0)) for name in self.NAMES}
        self.experts = nn.ModuleDict({
            "colour": ColourExpert(hidden=2 * features, pool=colour_pool, sn_first_last=sn_first_last),
            "structure": StructureExpert(features=features, sn_first_last=sn_first_last),
            "frequency": FrequencyExpert(patch=patch, features=features, sn_first_last=sn_first_last),
        })

    def extra_repr(self) -> str:
        return f"weights={self.weights}"

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return {name: expert(x) for name, expert in self.experts.items()}

    def combine(self, losses: Mapping[str, torch.Tensor], weights: Mapping[str, float] | None = None) -> torch.Tensor:
        """Weighted sum of per-expert scalars (``weights`` defaults to the committee's own)."""
        weights = self.weights if weights is None else weights
        return sum(weights[name] * losses[name] for name in self.NAMES)

    def d_loss(self, real: torch.Tensor | Mapping[str, torch.Tensor], fake: torch.Tensor | Mapping[str, torch.Tensor],
               weights: Mapping[str, float] | None = None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Discriminator hinge loss on images or precomputed logit dicts: ``(weighted total, per-expert)``.

        Pass ``fake`` detached (or its logits computed from a detached image) when training the discriminators.
        """
        real = real if isinstance(real, Mapping) else self(real)
        fake = fake if isinstance(fake, Mapping) else self(fake)
        losses = {name: hinge_d_loss(real[name], fake[name]) for name in self.NAMES}
        return self.combine(losses, weights), losses

    def g_loss(self, fake: torch.Tensor | Mapping[str, torch.Tensor],
               weights: Mapping[str, float] | None = None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Generator hinge loss ``-mean(D(fake))`` per expert: ``(weighted total, per-expert)``."""
        fake = fake if isinstance(fake, Mapping) else self(fake)
        losses = {name: hinge_g_loss(fake[name]) for name in self.NAMES}
        return self.combine(losses, weights), losses
