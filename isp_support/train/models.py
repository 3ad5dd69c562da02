"""The colour network: the lightweight colour mapping stages 1 and 2 train.

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

*Determinism.* Construction only draws from torch's global generator, so it is
reproducible under ``torch.manual_seed``; CPU forward and backward passes are
deterministic. On CUDA, the backward of ``grid_sample`` (LUT) uses atomic adds
and is not bit-reproducible unless ``torch.use_deterministic_algorithms(True)`` is set.

The discriminators of stage 2 are in :mod:`isp_support.train.discriminators`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "AUTO_TILE",
    "ColourNet",
    "LUT3D",
    "cache_batch",
    "clamp01",
    "count_parameters",
]

CLAMPS = ("ste", "hard", "none")

AUTO_TILE = {"cpu": 128, "cuda": 2048}
"""``tile="auto"`` for the colour network (:func:`isp_support.evaluate.tiles.network_tile`). On the CPU its
128-channel hidden layer is fastest in tiles whose activations fit the cache (docs/measurements.md,
"Evaluation"); on a GPU, large tiles bound memory."""


def cache_batch(side_h: int, side_w: int, device: str | torch.device) -> int:
    """How many ``side_h x side_w`` patches make about one :data:`AUTO_TILE` of ``device``'s type (at least 1):
    the batch the colour network runs fastest in there."""
    tile = AUTO_TILE.get(torch.device(device).type, AUTO_TILE["cuda"])
    return max(1, tile * tile // max(1, side_h * side_w))


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
