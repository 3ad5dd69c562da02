"""The paper's fixed RAW pre-processing pipeline (section 4.1), batched in torch.

A packed 10-bit RAW patch ``(H, W, 4)`` with channels R, Gr, Gb, B becomes a
display-ready RGB image ``(3, 2H, 2W)`` in [0, 1] through five stages. Every
stage works on a batch ``(B, C, h, w)`` on any device; the names in
:data:`STAGES` are also the keys of :meth:`RawPipeline.stages` and the values
accepted by its ``skip`` argument.

``normalize``
    ``(x - black_level) / (white_level - black_level)``, clipped to [0, 1]
    (defaults 0 and 1023). Output ``(B, 4, H, W)``.
``white_balance``
    Multiplies R by ``gains[0]``, both greens by ``gains[1]`` and B by
    ``gains[2]`` (the paper uses 1, 1, 1), clipped to [0, 1] so that boosted
    highlights saturate like a sensor. Output ``(B, 4, H, W)``.
``demosaic``
    The packed planes are interleaved into the full-resolution RGGB mosaic
    ``(B, 1, 2H, 2W)`` and interpolated to ``(B, 3, 2H, 2W)`` by DemosaicNet,
    bilinear interpolation or Malvar-He-Cutler (:mod:`isp_support.pipeline.demosaic`).
``denoise``
    FFDNet, a bilateral filter or nothing, at the noise level ``noise_sigma``
    (:mod:`isp_support.pipeline.denoise`).
``gamma``
    ``clip(x, 0, 1) ** (1 / gamma)`` with gamma 2.2.

The learned models are loaded once per device and cached. :func:`isp_support.pipeline.preprocess.preprocess_split`
runs the pipeline over a dataset split in batches, with an on-disk cache.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
import torch

from ..config import PreprocessConfig
from ..config_rules import resolve_device
from ..config_rules import DEMOSAICKERS, DENOISERS, STORE_DTYPES
from .demosaic import demosaic, load_demosaicnet, packed_to_bayer
from .denoise import denoise, load_ffdnet
from .errors import RawPipelineError, RawShapeError, check_choice, check_packed

STAGES = ("normalize", "white_balance", "demosaic", "denoise", "gamma")
SKIPPABLE_STAGES = ("white_balance", "denoise", "gamma")


# --- stage functions ---------------------------------------------------------------------

def to_packed_tensor(raw: np.ndarray | torch.Tensor, device: str | torch.device | None = None) -> torch.Tensor:
    """Any packed RAW input as a float32 tensor ``(B, 4, H, W)``.

    NumPy arrays are channels-last as stored on disk, ``(H, W, 4)`` or
    ``(B, H, W, 4)``; tensors are channels-first, ``(4, H, W)`` or ``(B, 4, H, W)``.
    """
    if isinstance(raw, np.ndarray):
        if raw.ndim not in (3, 4) or raw.shape[-1] != 4:
            raise RawShapeError("raw", f"raw array has shape {raw.shape}, expected (H, W, 4) or (B, H, W, 4)")
        tensor = torch.from_numpy(np.ascontiguousarray(raw, dtype=np.float32))
        tensor = tensor.movedim(-1, -3)
    elif isinstance(raw, torch.Tensor):
        if raw.ndim not in (3, 4) or raw.shape[-3] != 4:
            raise RawShapeError("raw", f"raw tensor has shape {tuple(raw.shape)}, expected (4, H, W) or (B, 4, H, W)")
        tensor = raw
    else:
        raise RawShapeError("raw", f"raw must be a numpy array or torch tensor, got {type(raw).__name__}")
    if tensor.ndim == 3:
        tensor = tensor.unsqueeze(0)
    return tensor.to(device=device, dtype=torch.float32)


def normalize_raw(raw: np.ndarray | torch.Tensor, black_level: float = 0.0,
                  white_level: float = 1023.0) -> torch.Tensor:
    """Black/white level normalisation to [0, 1]: ``(B, 4, H, W)`` (see :func:`to_packed_tensor` for inputs)."""
    if white_level <= black_level:
        raise RawPipelineError("white_level", f"white_level {white_level} must exceed black_level {black_level}")
    packed = to_packed_tensor(raw)
    return ((packed - black_level) / (white_level - black_level)).clamp(0.0, 1.0)


def apply_white_balance(packed: torch.Tensor, gains: Sequence[float] = (1.0, 1.0, 1.0)) -> torch.Tensor:
    """Multiply R, Gr, Gb, B planes of ``(B, 4, H, W)`` by ``(r, g, g, b)`` and clip to [0, 1]."""
    check_packed(packed, "packed")
    if len(gains) != 3:
        raise RawPipelineError("wb_gains", f"wb_gains must be 3 numbers (R, G, B), got {tuple(gains)}")
    r, g, b = (float(v) for v in gains)
    scale = torch.tensor([r, g, g, b], dtype=packed.dtype, device=packed.device).view(1, 4, 1, 1)
    return (packed * scale).clamp(0.0, 1.0)


def gamma_encode(rgb: torch.Tensor, gamma: float = 2.2) -> torch.Tensor:
    """``clip(x, 0, 1) ** (1 / gamma)``: linear to display values."""
    if not gamma > 0:
        raise RawPipelineError("gamma", f"gamma must be positive, got {gamma}")
    return rgb.clamp(0.0, 1.0).pow(1.0 / gamma)


# --- the pipeline ------------------------------------------------------------------------

class RawPipeline:
    """The whole section 4.1 chain for one :class:`PreprocessConfig` on one device.

    ``pipe(raw)`` returns the gamma-encoded RGB batch ``(B, 3, 2H, 2W)``;
    ``pipe.stages(raw)`` returns every intermediate stage. ``raw`` is anything
    :func:`to_packed_tensor` accepts (e.g. a stored ``(H, W, 4)`` uint16 array).
    The models the config needs are loaded when the pipeline is built.
    """

    def __init__(self, cfg: PreprocessConfig | None = None, device: str | torch.device = "cpu"):
        cfg = cfg or PreprocessConfig()
        check_choice("demosaicker", cfg.demosaicker, DEMOSAICKERS)
        check_choice("denoiser", cfg.denoiser, DENOISERS)
        check_choice("store_dtype", cfg.store_dtype, STORE_DTYPES)
        if cfg.white_level <= cfg.black_level:
            raise RawPipelineError("white_level", f"white_level {cfg.white_level} must exceed black_level {cfg.black_level}")
        if cfg.denoiser != "none" and not cfg.noise_sigma > 0:
            raise RawPipelineError("noise_sigma", f"noise_sigma must be positive for denoiser {cfg.denoiser!r}, "
                                                  f"got {cfg.noise_sigma}")
        self.cfg = cfg
        self.device = torch.device(resolve_device(str(device)))
        if cfg.demosaicker == "demosaicnet":
            load_demosaicnet(self.device)
        if cfg.denoiser == "ffdnet":
            load_ffdnet(self.device)

    def __call__(self, raw: np.ndarray | torch.Tensor, skip: Iterable[str] = ()) -> torch.Tensor:
        return self.stages(raw, skip)["gamma"]

    def stages(self, raw: np.ndarray | torch.Tensor, skip: Iterable[str] = ()) -> dict[str, torch.Tensor]:
        """Every stage's output, keyed by the names in :data:`STAGES`, in order.

        ``skip`` names stages of :data:`SKIPPABLE_STAGES` to turn off; a skipped
        stage passes its input through, so its entry equals the previous one.
        ``normalize`` and ``white_balance`` are packed ``(B, 4, H, W)``, the
        rest ``(B, 3, 2H, 2W)``.
        """
        skip = set(skip)
        for name in skip:
            check_choice("skippable stage", name, SKIPPABLE_STAGES)
        cfg = self.cfg
        out: dict[str, torch.Tensor] = {}
        with torch.inference_mode():
            x = normalize_raw(to_packed_tensor(raw, self.device), cfg.black_level, cfg.white_level)
            out["normalize"] = x
            if "white_balance" not in skip:
                x = apply_white_balance(x, cfg.wb_gains)
            out["white_balance"] = x
            x = demosaic(packed_to_bayer(x), cfg.demosaicker)
            out["demosaic"] = x
            if "denoise" not in skip:
                x = denoise(x, cfg.denoiser, cfg.noise_sigma)
            out["denoise"] = x
            if "gamma" not in skip:
                x = gamma_encode(x, cfg.gamma)
            out["gamma"] = x
        return out
