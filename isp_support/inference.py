"""Inference: the colour network over patches, whole images and camera RAW files; the challenge export.

* :func:`predict`: a stack of pre-processed patches through the network, in batches.
* :func:`render`: one whole image in one pass, or tiled with overlap when it is too large
  for memory. The tiles overlap by the network's context (:attr:`ColourNet.context`) and
  keep only their inner part, so a tiled rendering equals the one-pass rendering: no seams.
  ``tile="auto"`` (:func:`network_tile`) takes cache-sized tiles on the CPU, where they are
  several times faster than one pass, and large ones on a GPU.
* :func:`to_uint8` / :func:`save_png`: 8-bit export with rounding (never truncation), written
  atomically.
* :func:`read_camera_raw`: a DNG (or any format LibRaw reads: CR2, NEF, ARW, ...) through rawpy,
  packed into the challenge's R, Gr, Gb, B planes with its own black and white levels.
* :class:`Predictor` and :func:`export_folder`: the ``isp-support predict`` entry point: a
  folder of challenge RAW patches (``<scene>_<idx>.npy``) in, ``<scene>_<idx>.png`` out, and
  camera RAW files in, full renderings out.
"""

from __future__ import annotations

import dataclasses
import io
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .artifacts import atomic_write_bytes, atomic_write_json, sha256_file
from .config import Config, PreprocessConfig, config_from_dict, load_config, resolve_device
from .data import UnreadableFileError, read_raw
from .raw import RawPipeline, pipeline_settings

__all__ = ["CAMERA_RAW_SUFFIXES", "PIPELINE_CONTEXT", "PIPELINE_TILE", "Predictor", "export_folder", "network_tile",
           "predict", "read_camera_raw", "render", "save_png", "tiled", "to_uint8"]

CAMERA_RAW_SUFFIXES = (".dng", ".cr2", ".cr3", ".nef", ".arw", ".raf", ".orf", ".rw2", ".pef", ".srw")
PIPELINE_CONTEXT = 32
"""Packed RAW pixels of overlap between tiles of the pre-processing chain (DemosaicNet + FFDNet see less)."""
PIPELINE_TILE = 1024
"""Default tile side (RGB pixels) of the pre-processing chain over a whole camera RAW file."""
AUTO_TILE = {"cpu": 128, "cuda": 2048}
"""``tile="auto"`` for the colour network. On the CPU its 128-channel hidden layer is fastest in
tiles whose activations fit the cache: 128 px tiles render a megapixel about 4x faster than one
pass on 2 EPYC cores (``benchmarks/bench_all.py`` prints both). On a GPU, large tiles bound memory."""
MANIFEST = "predict.json"


# --- the network ----------------------------------------------------------------------------------------

def predict(model: torch.nn.Module, x: torch.Tensor, device: str | torch.device = "cpu",
            batch_size: int = 32) -> torch.Tensor:
    """``model`` over ``(N, 3, H, W)`` in batches of ``batch_size``; float32 on the CPU, same shape."""
    model = model.eval().to(device)
    with torch.inference_mode():
        return torch.cat([model(x[i:i + batch_size].to(device, torch.float32)).float().cpu()
                          for i in range(0, len(x), batch_size)]) if len(x) else x.float()


def tiled(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, tile: int | None, context: int,
          scale: int = 1) -> torch.Tensor:
    """Apply ``fn`` to ``(B, C, H, W)`` in overlapping tiles and assemble the result.

    ``fn`` maps ``(B, C, h, w)`` to ``(B, C', scale h, scale w)`` and its output pixel depends on
    at most ``context`` input pixels on each side. Each tile is cut with ``context`` extra input
    pixels on every inner side and only its inner part is kept, so the result equals ``fn(x)``
    whenever ``context`` covers ``fn``'s reach (image borders are the image's own borders in
    both). ``tile=None`` or a tile at least the image's size: one pass.
    """
    h, w = x.shape[-2:]
    if tile is None or (tile >= h and tile >= w):
        return fn(x)
    if tile < 1:
        raise ValueError(f"tile must be a positive number of pixels, got {tile}")
    out: torch.Tensor | None = None
    for y0 in range(0, h, tile):
        for x0 in range(0, w, tile):
            y1, x1 = min(y0 + tile, h), min(x0 + tile, w)
            ty0, tx0 = max(y0 - context, 0), max(x0 - context, 0)
            piece = fn(x[..., ty0:min(y1 + context, h), tx0:min(x1 + context, w)])
            if out is None:
                out = piece.new_empty(*piece.shape[:2], h * scale, w * scale)
            oy, ox = (y0 - ty0) * scale, (x0 - tx0) * scale
            out[..., y0 * scale:y1 * scale, x0 * scale:x1 * scale] = \
                piece[..., oy:oy + (y1 - y0) * scale, ox:ox + (x1 - x0) * scale]
    return out


def network_tile(tile: int | str | None, device: str | torch.device) -> int | None:
    """The tile side :func:`render` uses: ``"auto"`` is :data:`AUTO_TILE` of the device type; an
    int or ``None`` (one pass) is kept."""
    if tile == "auto":
        return AUTO_TILE.get(torch.device(device).type, AUTO_TILE["cuda"])
    if tile is not None and not isinstance(tile, int):
        raise ValueError(f"tile must be 'auto', a number of pixels or None, got {tile!r}")
    return tile


def render(model: torch.nn.Module, image: torch.Tensor, device: str | torch.device = "cpu",
           tile: int | str | None = None) -> torch.Tensor:
    """A whole image ``(3, H, W)`` or batch ``(B, 3, H, W)`` through the network: one pass, or tiles of
    ``tile`` pixels overlapping by the network's context (the same result, bounded memory);
    ``"auto"``: see :func:`network_tile`."""
    tile = network_tile(tile, device)
    single = image.ndim == 3
    x = image.unsqueeze(0) if single else image
    model = model.eval().to(device)
    context = int(getattr(model, "context", 0))
    with torch.inference_mode():
        out = tiled(lambda t: model(t.to(device, torch.float32)).float().cpu(), x, tile, context)
    return out[0] if single else out


# --- export ------------------------------------------------------------------------------------------

def to_uint8(rgb: torch.Tensor | np.ndarray) -> np.ndarray:
    """``(3, H, W)`` tensor or ``(H, W, 3)`` float array in [0, 1] to ``uint8 (H, W, 3)``: clipped, then
    *rounded* to the nearest level (the authors' export truncated, a bias of half a level). uint8 passes through."""
    if isinstance(rgb, torch.Tensor):
        rgb = rgb.detach().float().cpu().permute(1, 2, 0).numpy()
    elif rgb.dtype == np.uint8:
        return rgb
    return np.rint(np.clip(rgb, 0.0, 1.0) * 255.0).astype(np.uint8)


def save_png(path: str | Path, rgb: torch.Tensor | np.ndarray) -> Path:
    """Write an RGB image (see :func:`to_uint8`) as an 8-bit PNG, atomically."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(to_uint8(rgb)).save(buf, format="PNG")
    return atomic_write_bytes(path, buf.getvalue())


# --- camera RAW files ----------------------------------------------------------------------------------

def read_camera_raw(path: str | Path) -> tuple[np.ndarray, dict[str, Any]]:
    """A Bayer camera RAW file as packed ``(H/2, W/2, 4)`` float32 R, Gr, Gb, B in [0, 1], and what was read.

    Each pixel is normalised with its own channel's black level and the file's white level;
    ``Gr`` is the green on the red rows. Odd trailing rows or columns are dropped. Files that
    are not 2x2 Bayer mosaics (X-Trans, linear DNGs) are refused with a named error.
    """
    import rawpy

    path = Path(path)
    if not path.is_file():
        raise UnreadableFileError(path, "file does not exist")
    try:
        with rawpy.imread(str(path)) as raw:
            mosaic = raw.raw_image_visible.astype(np.float32)
            pattern = np.asarray(raw.raw_pattern) if raw.raw_pattern is not None else None
            desc = raw.color_desc.decode()
            black = np.asarray(raw.black_level_per_channel, dtype=np.float32)
            white = float(raw.white_level)
            camera_wb = [float(v) for v in raw.camera_whitebalance]
    except (rawpy.LibRawError, OSError, ValueError) as exc:
        raise UnreadableFileError(path, f"not a RAW file LibRaw can read: {type(exc).__name__}: {exc}") from exc
    if pattern is None or pattern.shape != (2, 2) or mosaic.ndim != 2:
        raise UnreadableFileError(path, f"not a 2x2 Bayer mosaic (pattern {pattern}, data shape {mosaic.shape})")
    colours = {(dy, dx): desc[pattern[dy, dx]] for dy in range(2) for dx in range(2)}
    try:
        (ry, rx), = [p for p, c in colours.items() if c == "R"]
        (by, bx), = [p for p, c in colours.items() if c == "B"]
    except ValueError:
        raise UnreadableFileError(path, f"CFA {desc!r} pattern {pattern.tolist()} is not R, G, G, B") from None
    h, w = mosaic.shape[0] // 2 * 2, mosaic.shape[1] // 2 * 2
    mosaic = mosaic[:h, :w]
    levels = black[pattern[np.arange(h)[:, None] % 2, np.arange(w)[None, :] % 2]]
    mosaic = np.clip((mosaic - levels) / (white - levels), 0.0, 1.0)
    planes = [mosaic[ry::2, rx::2], mosaic[ry::2, 1 - rx::2], mosaic[by::2, 1 - bx::2], mosaic[by::2, bx::2]]
    info = {"file": str(path), "cfa": "".join(colours[p] for p in sorted(colours)), "black_level": black.tolist(),
            "white_level": white, "camera_whitebalance": camera_wb, "size": [h, w]}
    return np.stack(planes, axis=-1), info


# --- the entry point -------------------------------------------------------------------------------------

def _run_config(checkpoint: Path, profile: str | None) -> tuple[Config, str]:
    """The config a checkpoint was trained under: ``run.json`` of its run directory, else the profile's."""
    parents = checkpoint.resolve().parents
    record = parents[2] / "run.json" if len(parents) > 2 else None
    if profile is None and record is not None and record.is_file():
        return config_from_dict(json.loads(record.read_text())["config"]), str(record)
    cfg = load_config(profile)
    return cfg, f"profile {cfg.profile!r} defaults"


class Predictor:
    """A trained network with the pre-processing it was trained behind.

    ``checkpoint``: a ``best.pt`` of :func:`isp_support.training.train`. The pre-processing
    settings come from the ``run.json`` of the run directory holding it
    (``RUN_DIR/train/<name>/best.pt``), or from ``profile``'s defaults when given or when
    there is no record. ``tile``: tile side (RGB pixels) for whole images; ``"auto"``: the
    network's :func:`network_tile` and :data:`PIPELINE_TILE` for the pre-processing; ``None``:
    one pass for both.
    """

    def __init__(self, checkpoint: str | Path, device: str = "auto", profile: str | None = None,
                 tile: int | str | None = "auto", batch_size: int = 16):
        from .training import load_model

        self.checkpoint = Path(checkpoint)
        self.device = resolve_device(device)
        self.model = load_model(self.checkpoint, self.device)
        self.cfg, self.config_source = _run_config(self.checkpoint, profile)
        self.preprocess: PreprocessConfig = self.cfg.preprocess
        self.tile = tile
        self.batch_size = batch_size
        self._pipes: dict[tuple[float, float], RawPipeline] = {}

    def _pipe(self, black: float, white: float) -> RawPipeline:
        if (black, white) not in self._pipes:
            cfg = dataclasses.replace(self.preprocess, black_level=black, white_level=white)
            self._pipes[(black, white)] = RawPipeline(cfg, self.device)
        return self._pipes[(black, white)]

    def settings(self) -> dict[str, Any]:
        """What the outputs depend on: the checkpoint's bytes and the pre-processing settings."""
        return {"checkpoint_sha256": sha256_file(self.checkpoint), "preprocess": pipeline_settings(self.preprocess)}

    def patches(self, raws: np.ndarray) -> torch.Tensor:
        """Challenge patches ``(B, H, W, 4)`` (10-bit values) to renderings ``(B, 3, 2H, 2W)`` in [0, 1]."""
        pipe = self._pipe(self.preprocess.black_level, self.preprocess.white_level)
        return predict(self.model, pipe(raws).float(), self.device, self.batch_size)

    def camera_raw(self, path: str | Path, camera_wb: bool = False) -> tuple[torch.Tensor, dict[str, Any]]:
        """A whole camera RAW file to ``(3, H, W)``: pre-processed and rendered in overlapping tiles.

        ``camera_wb``: multiply by the camera's as-shot white balance (green = 1) instead of the
        configured gains (the paper's are 1, 1, 1).
        """
        packed, info = read_camera_raw(path)
        pipe = self._pipe(0.0, 1.0)
        if camera_wb:
            r, g, b = info["camera_whitebalance"][:3]
            pipe = RawPipeline(dataclasses.replace(pipe.cfg, wb_gains=(r / g, 1.0, b / g)), self.device)
        x = torch.from_numpy(packed).permute(2, 0, 1).unsqueeze(0)
        rgb_tile = PIPELINE_TILE if self.tile == "auto" else self.tile
        packed_tile = None if rgb_tile is None else max(rgb_tile // 2, 1)
        rgb = tiled(lambda t: pipe(t).float().cpu(), x, packed_tile, PIPELINE_CONTEXT, scale=2)
        return render(self.model, rgb[0], self.device, self.tile), info


def export_folder(predictor: Predictor, source: str | Path, out_dir: str | Path, camera_wb: bool = False,
                  overwrite: bool = False, progress: bool = True, log: Callable[[str], None] = print) -> list[Path]:
    """The ``predict`` entry point: RAW in, 8-bit PNGs ``<stem>.png`` in ``out_dir`` out.

    ``source`` is a folder (its challenge patches ``*.npy`` and camera RAW files) or one file.
    Patches of equal size are pre-processed and rendered in batches. ``out_dir/predict.json``
    records the checkpoint and settings; a second call with the same ones skips the PNGs that
    exist (a killed export resumes), one with other settings is refused unless ``overwrite``.
    """
    from tqdm.auto import tqdm

    source, out_dir = Path(source), Path(out_dir)
    if not source.exists():
        raise UnreadableFileError(source, "no such file or folder")
    files = sorted(source.iterdir()) if source.is_dir() else [source]
    patches = [f for f in files if f.suffix.lower() == ".npy"]
    cameras = [f for f in files if f.suffix.lower() in CAMERA_RAW_SUFFIXES]
    if not patches and not cameras:
        raise UnreadableFileError(source, f"no RAW input: expected .npy patches or camera RAW files "
                                          f"({', '.join(CAMERA_RAW_SUFFIXES)})")
    settings = predictor.settings() | {"camera_wb": camera_wb}
    manifest = out_dir / MANIFEST
    if manifest.is_file() and not overwrite:
        previous = json.loads(manifest.read_text())
        if previous != settings:
            raise FileExistsError(f"{out_dir} holds predictions of another checkpoint or settings "
                                  f"({manifest}); choose another folder or pass overwrite")
    atomic_write_json(manifest, settings)
    todo = [f for f in patches + cameras if overwrite or not (out_dir / f"{f.stem}.png").is_file()]
    if len(todo) < len(patches) + len(cameras):
        log(f"[predict] {len(patches) + len(cameras) - len(todo)} outputs already in {out_dir}; skipping them")
    written = []
    by_shape: dict[tuple[int, ...], list[tuple[Path, np.ndarray]]] = {}
    for f in tqdm([f for f in todo if f in patches], desc="read patches", disable=not progress):
        arr = read_raw(f)
        by_shape.setdefault(arr.shape, []).append((f, arr))
    for group in by_shape.values():
        for i in tqdm(range(0, len(group), predictor.batch_size), desc="render patches", disable=not progress):
            chunk = group[i:i + predictor.batch_size]
            for (f, _), rgb in zip(chunk, predictor.patches(np.stack([a for _, a in chunk]))):
                written.append(save_png(out_dir / f"{f.stem}.png", rgb))
    for f in tqdm([f for f in todo if f in cameras], desc="render RAW files", disable=not progress):
        rgb, _ = predictor.camera_raw(f, camera_wb)
        written.append(save_png(out_dir / f"{f.stem}.png", rgb))
    return written

