"""Stage 3 of the RAW pipeline: packed planes to the RGGB mosaic, and the mosaic to linear RGB.

The packed planes are interleaved into the full-resolution RGGB mosaic
``(B, 1, 2H, 2W)`` (R at even row / even column, Gr at even / odd, Gb at
odd / even, B at odd / odd) and interpolated to ``(B, 3, 2H, 2W)`` by

* ``demosaicnet``: the pretrained Bayer network of Gharbi et al. (2016)
  shipped with the ``demosaicnet`` package. It expects a 3-channel mosaic
  with zeros at unsampled positions in the GRBG phase (G R / B G) and,
  having no padding, returns an image 31 pixels smaller on each side. The
  RGGB mosaic is therefore reflect-padded by 32 rows above and below and
  31 columns left and right: reflection keeps the Bayer parity, and the
  odd left margin moves a G/R row to column 0, i.e. the GRBG phase. The
  network's ``(2H + 2, 2W)`` output is cropped by one row at the top and
  bottom, leaving exactly ``(2H, 2W)`` aligned with the input.
* ``bilinear``: :func:`kornia.color.raw_to_rgb` (OpenCV naming: an RGGB
  sensor is ``CFA.BG``).
* ``malvar``: the Malvar-He-Cutler (2004) gradient-corrected linear
  filters, implemented here because kornia 0.9 has no Malvar demosaicker.

The DemosaicNet model is loaded once per device and cached.
"""

from __future__ import annotations

import functools
import importlib.resources
import warnings

import torch
import torch.nn.functional as F

from ..config_rules import DEMOSAICKERS
from .errors import RawShapeError, check_choice, check_packed

# DemosaicNet has no padding: its output is 31 pixels smaller on every side.
_DEMOSAICNET_CROP = 31


def packed_to_bayer(packed: torch.Tensor) -> torch.Tensor:
    """Interleave packed R, Gr, Gb, B ``(B, 4, H, W)`` into the RGGB mosaic ``(B, 1, 2H, 2W)``.

    Channel ``2 * dy + dx`` lands at offset ``(dy, dx)`` of each 2x2 cell, which is
    exactly :func:`torch.nn.functional.pixel_shuffle`'s order.
    """
    check_packed(packed, "packed")
    return F.pixel_shuffle(packed, 2)


def demosaic(bayer: torch.Tensor, method: str = "demosaicnet") -> torch.Tensor:
    """Demosaick an RGGB mosaic ``(B, 1, 2H, 2W)`` into linear RGB ``(B, 3, 2H, 2W)``."""
    check_choice("demosaicker", method, DEMOSAICKERS)
    if bayer.ndim != 4 or bayer.shape[1] != 1 or bayer.shape[-2] % 2 or bayer.shape[-1] % 2:
        raise RawShapeError("bayer", f"bayer has shape {tuple(bayer.shape)}, expected (B, 1, 2H, 2W) with even sides")
    with torch.inference_mode():
        if method == "demosaicnet":
            return _demosaicnet(load_demosaicnet(bayer.device), bayer)
        if method == "bilinear":
            import kornia.color

            return kornia.color.raw_to_rgb(bayer, kornia.color.CFA.BG)
        return _malvar(bayer)


def _reflect_pad(x: torch.Tensor, top: int, bottom: int, left: int, right: int) -> torch.Tensor:
    """Mirror padding (edge not repeated) of the last two dims, for any margin size.

    Unlike :func:`torch.nn.functional.pad` it allows margins larger than the image
    (the mirror repeats). On even-sized Bayer mosaics it keeps every pixel's
    colour: a padded pixel copies one of the same row and column parity.
    """
    def indices(n: int, before: int, after: int) -> torch.Tensor:
        idx = torch.arange(-before, n + after, device=x.device)
        if n == 1:
            return torch.zeros_like(idx)
        period = 2 * (n - 1)
        idx = idx.remainder(period)
        return torch.where(idx >= n, period - idx, idx)

    h, w = x.shape[-2:]
    return x.index_select(-2, indices(h, top, bottom)).index_select(-1, indices(w, left, right))


# --- DemosaicNet -------------------------------------------------------------------------

@functools.lru_cache(maxsize=None)
def _demosaicnet_on(device: str) -> torch.nn.Module:
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="pkg_resources is deprecated", category=UserWarning)
        import demosaicnet
    net = demosaicnet.BayerDemosaick(pretrained=False)
    weights = importlib.resources.files("demosaicnet") / "data" / "bayer.pth"
    with importlib.resources.as_file(weights) as path:
        net.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    return net.eval().requires_grad_(False).to(device, memory_format=torch.channels_last)


def load_demosaicnet(device: str | torch.device = "cpu") -> torch.nn.Module:
    """The pretrained DemosaicNet Bayer model on ``device`` (loaded once, then cached).

    Like FFDNet it is kept in channels-last memory format, which the pipeline
    feeds it: batched convolutions are faster that way on the CPU (docs/measurements.md).
    """
    return _demosaicnet_on(str(torch.device(device)))


def _grbg_mask(h: int, w: int, like: torch.Tensor) -> torch.Tensor:
    """``(3, h, w)`` 0/1 mask of DemosaicNet's pattern: G R on even rows, B G on odd rows."""
    even_r = (torch.arange(h, device=like.device) % 2 == 0).view(h, 1)
    even_c = (torch.arange(w, device=like.device) % 2 == 0).view(1, w)
    red = even_r & ~even_c
    green = even_r == even_c
    blue = ~even_r & even_c
    return torch.stack([red, green, blue]).to(like.dtype)


def _demosaicnet(net: torch.nn.Module, bayer: torch.Tensor) -> torch.Tensor:
    h, w = bayer.shape[-2:]
    c = _DEMOSAICNET_CROP
    # An odd left margin puts an RGGB G/R column pair at column 0: the GRBG phase.
    # The top margin must stay even (rows keep their phase), so one extra row is
    # padded on each side and cropped from the output.
    padded = _reflect_pad(bayer, c + 1, c + 1, c, c)
    mosaic = padded * _grbg_mask(padded.shape[-2], padded.shape[-1], padded)
    out = net(mosaic.contiguous(memory_format=torch.channels_last))
    # out is (B, 3, 2H + 2, 2W) and out[y, x] belongs to padded[y + c, x + c].
    return out[..., 1:h + 1, :].contiguous()


# --- Malvar-He-Cutler --------------------------------------------------------------------

def _malvar_kernels(like: torch.Tensor) -> torch.Tensor:
    """The four 5x5 filters of Malvar, He & Cutler (2004), ``(4, 1, 5, 5)``.

    0: G at an R or B site; 1: the colour of the horizontal neighbours at a G
    site; 2: the colour of the vertical neighbours at a G site; 3: B at an R site
    or R at a B site (the diagonal neighbours' colour).
    """
    g_at_rb = [[0, 0, -1, 0, 0], [0, 0, 2, 0, 0], [-1, 2, 4, 2, -1], [0, 0, 2, 0, 0], [0, 0, -1, 0, 0]]
    horizontal = [[0, 0, 0.5, 0, 0], [0, -1, 0, -1, 0], [-1, 4, 5, 4, -1], [0, -1, 0, -1, 0], [0, 0, 0.5, 0, 0]]
    diagonal = [[0, 0, -1.5, 0, 0], [0, 2, 0, 2, 0], [-1.5, 0, 6, 0, -1.5], [0, 2, 0, 2, 0], [0, 0, -1.5, 0, 0]]
    k = torch.tensor([g_at_rb, horizontal, horizontal, diagonal], dtype=like.dtype, device=like.device)
    k[2] = k[2].T.clone()
    return (k / 8.0).unsqueeze(1)


def _malvar(bayer: torch.Tensor) -> torch.Tensor:
    filtered = F.conv2d(_reflect_pad(bayer, 2, 2, 2, 2), _malvar_kernels(bayer))
    # Split every map into its four 2x2 phases: R, Gr (R row), Gb (B row), B sites.
    raw = F.pixel_unshuffle(bayer, 2)                                   # (B, 4, H, W)
    g_rb, hor, ver, diag = F.pixel_unshuffle(filtered, 2).unflatten(1, (4, 4)).unbind(1)
    r_site, gr_site, gb_site, b_site = range(4)
    red = torch.stack([raw[:, r_site], hor[:, gr_site], ver[:, gb_site], diag[:, b_site]], 1)
    green = torch.stack([g_rb[:, r_site], raw[:, gr_site], raw[:, gb_site], g_rb[:, b_site]], 1)
    blue = torch.stack([diag[:, r_site], ver[:, gr_site], hor[:, gb_site], raw[:, b_site]], 1)
    return torch.cat([F.pixel_shuffle(p, 2) for p in (red, green, blue)], 1)
