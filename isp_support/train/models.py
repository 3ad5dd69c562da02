"""Networks: the lightweight colour mapping and the discriminators that train it.

**ColourNet** (the paper's ~7K-parameter ISP transfer network)::

    y = head(x + conv3x3(relu(conv3x3(x))))      then clamp to [0, 1]

Both 3x3 convolutions use reflect padding (no dark border). The second
convolution is initialised to zero and the 1x1 colour-mixing head to the
identity (weight I, bias 0), so the **untrained (identity-head) network is
exactly the identity** on inputs in [0, 1]: that network is the reference the
training notebook compares against ("what does training add over doing
nothing"). With ``hidden=128`` and the 1x1 head it has exactly 7,055
parameters (3*128*9+128 + 128*3*9+3 + 9+3). Zero-initialising the last layer
means the first convolution receives no gradient on the very first step (its
output is multiplied by zero weights); from the second step on everything
trains, as with any zero-initialised residual branch.

``head="lut"`` replaces the 1x1 head by a learnable 3D LUT (:class:`LUT3D`,
paper table 2 ablation): 3*33^3 = 107,811 parameters plus the 7,043 of the
convolutions, also identity at initialisation.

*Output clamp.* ``clamp="ste"`` (default) clamps in the forward pass but lets
the gradient through unchanged (straight-through), so pixels pushed past 0 or
1 during training (saturated skies, crushed shadows) keep receiving gradient
and can come back. ``clamp="hard"`` is the authors' plain ``torch.clamp``:
its gradient is zero wherever the pre-clamp value is outside [0, 1] and, in
torch 2.14, also where it is exactly 0 or 1; since the untrained network is
the identity, every clipped input pixel (blown highlights, black) then gets
no gradient from the first step on. The forward values of the two are bit-identical, so evaluation does
not depend on the choice, only the training dynamics. ``clamp="none"``
returns the raw output.

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
  window against edge leakage, zero frequency shifted to the centre row),
  each read by a small CNN with global pooling into one logit per patch. It
  sees the shape of the spectrum: noise floor, sharpness fall-off,
  periodic (demosaicing, upsampling, JPEG-grid) peaks.

Each expert has a weight; :meth:`ExpertCommittee.d_loss` and
:meth:`ExpertCommittee.g_loss` combine the per-expert hinge losses with them.

*Spectral normalisation* (``torch.nn.utils.parametrizations.spectral_norm``,
one power iteration per training-mode forward) is on every inner
convolution. Following Real-ESRGAN, the first and last layers of each
discriminator are left plain by default: an SN network is 1-Lipschitz, and
the experts' inputs (high-pass residuals, chroma offsets) are small, so a
free first layer lets the network set its own input gain and a free last
layer its logit scale. ``sn_first_last=True`` normalises them too.

*Determinism.* Construction (including the spectral-norm power-iteration
vectors) only draws from torch's global generator, so it is reproducible
under ``torch.manual_seed``; CPU forward and backward passes are
deterministic. On CUDA, the backward of ``grid_sample`` (LUT) and bilinear
upsampling use atomic adds and are not bit-reproducible unless
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
from torch.nn.utils.parametrizations import spectral_norm

from .losses import hinge_d_loss, hinge_g_loss

__all__ = [
    "ColourNet",
    "LUT3D",
    "UNetDiscriminator",
    "ColourExpert",
    "StructureExpert",
    "FrequencyExpert",
    "ExpertCommittee",
    "clamp01",
    "count_parameters",
]

CLAMPS = ("ste", "hard", "none")


def count_parameters(module: nn.Module, trainable_only: bool = False) -> int:
    """Number of (distinct) parameters of ``module``; ``trainable_only`` counts those with ``requires_grad``.

    Spectral-norm parametrisations count their original weight once; their power-iteration vectors are
    buffers and are not counted.
    """
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)


def clamp01(x: torch.Tensor, mode: str = "ste") -> torch.Tensor:
    """Clamp to [0, 1]: ``"hard"`` (plain clamp; zero gradient outside (0, 1), boundaries included in torch
    2.14), ``"ste"`` (same values bit for bit, identity gradient everywhere), ``"none"`` (no clamp)."""
    if mode == "hard":
        return x.clamp(0.0, 1.0)
    if mode == "ste":
        # x - x.detach() is exactly 0 in the forward pass (finite x), so the values equal the hard clamp
        # bit for bit, while the gradient is that of x.
        return x.detach().clamp(0.0, 1.0) + (x - x.detach())
    if mode == "none":
        return x
    raise ValueError(f"clamp must be one of {CLAMPS}, got {mode!r}")


# --------------------------------------------------------------------------------------------------
# 3D LUT
# --------------------------------------------------------------------------------------------------


def identity_lut(size: int, dtype: torch.dtype | None = None) -> torch.Tensor:
    """Identity LUT ``(3, size, size, size)`` indexed ``[channel, b, g, r]`` (red varies fastest, as in .cube)."""
    ramp = torch.linspace(0.0, 1.0, size, dtype=dtype)
    b, g, r = torch.meshgrid(ramp, ramp, ramp, indexing="ij")
    return torch.stack((r, g, b))


class LUT3D(nn.Module):
    """Learnable 3D colour lookup table with trilinear interpolation.

    ``lut[c, b, g, r]`` is output channel ``c`` at input colour ``(r, g, b) = (i_r, i_g, i_b) / (size - 1)``
    (grid points on 0 and 1 inclusive, i.e. ``align_corners=True``). Initialised to the identity.

    Forward: ``(B, 3, H, W)`` RGB -> ``(B, 3, H, W)``. Interpolation is ``grid_sample`` on the LUT as a
    5-D volume (kornia has no 3D LUT), one call for the whole batch; coordinates outside [0, 1] are
    clamped to the border (``padding_mode="border"``), where the gradient with respect to the input is
    zero. Gradients flow to the LUT entries and to the input.
    """

    def __init__(self, size: int = 33):
        super().__init__()
        if size < 2:
            raise ValueError("LUT size must be at least 2")
        self.size = size
        self.lut = nn.Parameter(identity_lut(size))

    def extra_repr(self) -> str:
        return f"size={self.size}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f"expected (B, 3, H, W), got {tuple(x.shape)}")
        b, _, h, w = x.shape
        # grid (1, B, H, W, 3): last dim (x, y, z) indexes (W, H, D) = (r, g, b) of the (1, 3, D, H, W) volume.
        grid = (x.permute(0, 2, 3, 1) * 2.0 - 1.0).unsqueeze(0)
        out = F.grid_sample(self.lut.unsqueeze(0).to(x.dtype), grid, mode="bilinear", padding_mode="border",
                            align_corners=True)  # (1, 3, B, H, W)
        return out[0].transpose(0, 1)

    def smoothness(self) -> torch.Tensor:
        """Mean squared second difference along r, g and b: zero for the identity (any affine) LUT."""
        lut = self.lut
        terms = [torch.diff(lut, n=2, dim=d).square().mean() for d in (1, 2, 3)]
        return sum(terms) / 3

    def monotonicity(self) -> torch.Tensor:
        """Mean of ``relu(-d out_c / d in_c)``: penalises each channel decreasing along its own input axis."""
        # channel 0 (r) along dim 3, channel 1 (g) along dim 2, channel 2 (b) along dim 1
        terms = [F.relu(-torch.diff(self.lut[c], dim=2 - c)).mean() for c in range(3)]
        return sum(terms) / 3


# --------------------------------------------------------------------------------------------------
# Colour network
# --------------------------------------------------------------------------------------------------


class ColourNet(nn.Module):
    """Residual colour network: ``clamp(head(x + conv(relu(conv(x)))))``, identity at initialisation.

    Args:
        hidden: channels of the hidden 3x3 layer (128 in the paper: 7,055 parameters with the 1x1 head).
        head: ``"1x1"`` (3->3 colour mixing, identity init) or ``"lut"`` (:class:`LUT3D`, identity init).
        lut_size: LUT grid points per axis for ``head="lut"``.
        clamp: ``"ste"`` (default), ``"hard"`` (authors' plain clamp) or ``"none"``; see module docstring.
    """

    context = 2
    """Pixels of input each output pixel depends on beyond itself, per side (two 3x3 convolutions)."""

    def __init__(self, hidden: int = 128, head: str = "1x1", lut_size: int = 33, clamp: str = "ste"):
        super().__init__()
        if head not in ("1x1", "lut"):
            raise ValueError(f"head must be '1x1' or 'lut', got {head!r}")
        if clamp not in CLAMPS:
            raise ValueError(f"clamp must be one of {CLAMPS}, got {clamp!r}")
        self.head_type = head
        self.clamp = clamp
        self.conv1 = nn.Conv2d(3, hidden, 3, padding=1, padding_mode="reflect")
        self.conv2 = nn.Conv2d(hidden, 3, 3, padding=1, padding_mode="reflect")
        nn.init.zeros_(self.conv2.weight)
        nn.init.zeros_(self.conv2.bias)
        if head == "1x1":
            self.head = nn.Conv2d(3, 3, 1)
            with torch.no_grad():
                self.head.weight.copy_(torch.eye(3).view(3, 3, 1, 1))
                self.head.bias.zero_()
        else:
            self.head = LUT3D(lut_size)

    def extra_repr(self) -> str:
        return f"head={self.head_type!r}, clamp={self.clamp!r}"

    def residual(self, x: torch.Tensor) -> torch.Tensor:
        """The residual branch ``conv(relu(conv(x)))`` alone."""
        return self.conv2(F.relu(self.conv1(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return clamp01(self.head(x + self.residual(x)), self.clamp)


# --------------------------------------------------------------------------------------------------
# Discriminators
# --------------------------------------------------------------------------------------------------


def _sn(module: nn.Module, enabled: bool = True) -> nn.Module:
    return spectral_norm(module) if enabled else module


def _upsample_to(x: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    return F.interpolate(x, size=ref.shape[-2:], mode="bilinear", align_corners=False)


class UNetDiscriminator(nn.Module):
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
        """What the expert sees: ``(B * n, 1, p, p // 2 + 1)`` patch log-spectra, and the patch grid ``(nh, nw)``."""
        p = min(self.patch, *rgb.shape[-2:])
        y = _luma(rgb)
        nh, nw = y.shape[-2] // p, y.shape[-1] // p
        patches = y[..., : nh * p, : nw * p].unfold(2, p, p).unfold(3, p, p)  # (B, 1, nh, nw, p, p)
        patches = patches.reshape(-1, 1, p, p)
        patches = patches - patches.mean(dim=(-2, -1), keepdim=True)
        window = torch.hann_window(p, periodic=False, dtype=rgb.dtype, device=rgb.device) if p > 2 else None
        if window is not None:
            patches = patches * torch.outer(window, window)
        spec = torch.fft.rfft2(patches, norm="ortho")
        power = spec.real.square() + spec.imag.square()
        logmag = torch.log1p(torch.sqrt(power + 1e-12))
        return torch.fft.fftshift(logmag, dim=-2), (nh, nw)

    def forward(self, rgb: torch.Tensor) -> torch.Tensor:
        spec, (nh, nw) = self.view(rgb)
        return self.net(spec).view(rgb.shape[0], 1, nh, nw)


class ExpertCommittee(nn.Module):
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
