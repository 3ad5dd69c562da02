"""Inference: the colour network over patches, whole images and camera RAW files; the challenge export.

* :func:`predict`: a stack of pre-processed patches through the network, in batches.
* :func:`~isp_support.evaluate.tiles.render`: one whole image in one pass, or in overlapping
  tiles that give the same result with bounded memory.
* :func:`to_uint8` / :func:`save_png`: 8-bit export with rounding (never truncation), written
  atomically.
* :func:`read_camera_raw`: a DNG (or any format LibRaw reads: CR2, NEF, ARW, ...) through rawpy,
  packed into the challenge's R, Gr, Gb, B planes with its own black and white levels.
* :class:`Predictor` and :func:`export_folder`: the ``isp-support predict`` entry point: a
  folder of challenge RAW patches (``<scene>_<idx>.npy``) in, ``<scene>_<idx>.png`` out, and
  camera RAW files in, full renderings out. The pre-processing settings come from the checkpoint
  or an explicit profile or ``run.json``; ``predict.json`` records each output with the checksums
  of its input, its checkpoint and itself, so only verified outputs are ever kept.
"""

from __future__ import annotations

import dataclasses
import io
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..artifacts import atomic_write_bytes, atomic_write_json, sha256_bytes, sha256_file
from ..config import PreprocessConfig, config_from_dict, load_config
from ..config_rules import resolve_device
from ..config_rules import ConfigError
from ..io import DataError, RangeError, UnreadableFileError, raw_shape, read_json, read_raw, require_regular_file
from ..pipeline.errors import FFDNetUnavailableError, RawPipelineError
from ..pipeline.preprocess import pipeline_settings
from ..pipeline.raw import RawPipeline
from .fused import fused
from .tiles import render, tiled
from ..train.models import cache_batch

__all__ = ["CAMERA_RAW_SUFFIXES", "PIPELINE_CONTEXT", "PIPELINE_TILE", "PredictError", "Predictor", "export_folder",
           "predict", "read_camera_raw", "save_png", "to_uint8"]

CAMERA_RAW_SUFFIXES = (".dng", ".cr2", ".cr3", ".nef", ".arw", ".raf", ".orf", ".rw2", ".pef", ".srw")
PIPELINE_CONTEXT = 32
"""Packed RAW pixels of overlap between tiles of the pre-processing chain (DemosaicNet + FFDNet see less)."""
PIPELINE_TILE = 1024
"""Default tile side (RGB pixels) of the pre-processing chain over a whole camera RAW file."""
MANIFEST = "predict.json"
"""The output folder's record: ``{"complete": bool, "files": {png name: entry}}``, see :func:`export_folder`."""
RECORD_KEYS = frozenset({"input", "input_sha256", "png_sha256", "checkpoint_sha256", "preprocess", "camera_wb"})
"""What each entry of :data:`MANIFEST` holds."""


# --- the network ----------------------------------------------------------------------------------------

def predict(model: torch.nn.Module, x: torch.Tensor, device: str | torch.device = "cpu",
            batch_size: int = 32, fast: bool = True) -> torch.Tensor:
    """``model`` over ``(N, 3, H, W)`` in batches; float32 on the CPU, same shape.

    ``fast`` (default): a ``ColourNet`` runs as :class:`~isp_support.evaluate.fused.FusedColourNet`
    in batches of at most ``batch_size`` patches and about one ``"auto"`` tile of pixels
    (:func:`~isp_support.train.models.cache_batch`, as whole images are tiled); ``fast=False``: the module
    itself in batches of ``batch_size`` (the reference path).
    """
    model = model.eval().to(device)
    if fast:
        model = fused(model)
        batch_size = max(1, min(batch_size, cache_batch(x.shape[-2], x.shape[-1], device)))
    with torch.inference_mode():
        return torch.cat([model(x[i:i + batch_size].to(device, torch.float32)).float().cpu()
                          for i in range(0, len(x), batch_size)]) if len(x) else x.float()


# --- export ------------------------------------------------------------------------------------------

def to_uint8(rgb: torch.Tensor | np.ndarray) -> np.ndarray:
    """``(3, H, W)`` tensor or ``(H, W, 3)`` float array in [0, 1] to ``uint8 (H, W, 3)``: clipped, then
    *rounded* to the nearest level (the authors' export truncated, a bias of half a level). uint8 passes through."""
    if isinstance(rgb, torch.Tensor):
        rgb = rgb.detach().float().cpu().permute(1, 2, 0).numpy()
    elif rgb.dtype == np.uint8:
        return rgb
    return np.rint(np.clip(rgb, 0.0, 1.0) * 255.0).astype(np.uint8)


def _png_bytes(rgb: torch.Tensor | np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(to_uint8(rgb)).save(buf, format="PNG")
    return buf.getvalue()


def save_png(path: str | Path, rgb: torch.Tensor | np.ndarray) -> Path:
    """Write an RGB image (see :func:`to_uint8`) as an 8-bit PNG, atomically."""
    return atomic_write_bytes(path, _png_bytes(rgb))


# --- camera RAW files ----------------------------------------------------------------------------------

def read_camera_raw(path: str | Path) -> tuple[np.ndarray, dict[str, Any]]:
    """A Bayer camera RAW file as packed ``(H/2, W/2, 4)`` float32 R, Gr, Gb, B in [0, 1], and what was read.

    Each pixel is normalised with its own channel's black level and the file's white level;
    ``Gr`` is the green on the red rows. Odd trailing rows or columns are dropped. Files that
    are not 2x2 Bayer mosaics (X-Trans, linear DNGs) are refused with a named error.
    """
    import rawpy

    path = Path(path)
    require_regular_file(path)
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
    if not np.all(np.isfinite(black)) or not np.isfinite(white) or not np.all(black < white):
        raise RangeError(path, f"white level {white:g} is not above the black levels {black.tolist()}: the image "
                               f"would render black or inverted")
    h, w = mosaic.shape[0] // 2 * 2, mosaic.shape[1] // 2 * 2
    mosaic = mosaic[:h, :w]
    levels = black[pattern[np.arange(h)[:, None] % 2, np.arange(w)[None, :] % 2]]
    mosaic = np.clip((mosaic - levels) / (white - levels), 0.0, 1.0)
    planes = [mosaic[ry::2, rx::2], mosaic[ry::2, 1 - rx::2], mosaic[by::2, 1 - bx::2], mosaic[by::2, bx::2]]
    info = {"file": str(path), "cfa": "".join(colours[p] for p in sorted(colours)), "black_level": black.tolist(),
            "white_level": white, "camera_whitebalance": camera_wb, "size": [h, w]}
    return np.stack(planes, axis=-1), info


# --- the entry point -------------------------------------------------------------------------------------

class PredictError(DataError):
    """``predict`` cannot use a file or folder: pre-processing settings it cannot take, inputs whose outputs
    would share a name, or an output record it cannot check."""


def _run_record_preprocess(path: Path) -> Any:
    """The ``config.preprocess`` entry of a run's ``run.json``."""
    record = read_json(path)
    config = record.get("config") if isinstance(record, dict) else None
    if not isinstance(config, dict) or "preprocess" not in config:
        raise PredictError(path, "not a run record with pre-processing settings (no config.preprocess entry)")
    return config["preprocess"]


def _preprocess_config(data: Any, path: Path) -> PreprocessConfig:
    """``data`` (read from ``path``) as a :class:`PreprocessConfig`: every field present, each type-checked by
    :func:`isp_support.config.config_from_dict`."""
    if not isinstance(data, dict):
        raise PredictError(path, f"pre-processing settings {data!r} are not a mapping of PreprocessConfig fields")
    missing = [f.name for f in dataclasses.fields(PreprocessConfig) if f.name not in data]
    if missing:
        raise PredictError(path, f"pre-processing settings lack {', '.join(missing)}")
    try:
        return config_from_dict({"preprocess": data}).preprocess
    except ConfigError as exc:
        raise PredictError(path, f"bad pre-processing settings: {exc}") from None


def _preprocess(checkpoint: Path, recorded: Any, profile: str | None,
                preprocess_from: str | Path | None) -> tuple[PreprocessConfig, str]:
    """The pre-processing settings and where they came from: the run record ``preprocess_from`` or
    ``profile``'s defaults when one is given, else the checkpoint's ``recorded`` ones."""
    if profile is not None and preprocess_from is not None:
        raise ConfigError("take the pre-processing settings from either a profile or a run.json, not both")
    if preprocess_from is not None:
        path = Path(preprocess_from)
        return _preprocess_config(_run_record_preprocess(path), path), f"run record {path}"
    if profile is not None:
        return load_config(profile).preprocess, f"profile {profile!r} defaults"
    if recorded is None:
        raise PredictError(checkpoint, "records no pre-processing settings (it was written before checkpoints held "
                                       "them); give the ones it was trained behind: --profile NAME or "
                                       "--preprocess-from RUN_DIR/run.json (Predictor's profile= or preprocess_from=)")
    return _preprocess_config(recorded, checkpoint), f"the checkpoint {checkpoint}"


class Predictor:
    """A trained network with the pre-processing it was trained behind.

    ``checkpoint``: a ``best.pt`` of :func:`isp_support.train.loop.train`, which records the pre-processing
    settings the network was trained behind. ``preprocess_from`` (a run's ``run.json``) or ``profile``
    (its defaults) replaces them; one of the two is needed for checkpoints written before they recorded
    them. No other file is read; :attr:`config_source` says where the settings came from. Bad settings, a
    ``batch_size`` below 1 and a ``device`` other than auto, cpu, cuda or cuda:N are named errors here.
    ``tile``: tile side (RGB pixels) for whole images; ``"auto"``: the network's
    :func:`~isp_support.evaluate.tiles.network_tile` and :data:`PIPELINE_TILE` for the pre-processing;
    ``None``: one pass for both.
    """

    def __init__(self, checkpoint: str | Path, device: str = "auto", profile: str | None = None,
                 tile: int | str | None = "auto", batch_size: int = 16, preprocess_from: str | Path | None = None):
        from ..train.checkpoint import read_checkpoint

        if not isinstance(batch_size, int) or batch_size < 1:
            raise ConfigError(f"batch size (--batch) must be a positive number of patches, got {batch_size!r}")
        self.device = resolve_device(device)
        self.checkpoint = Path(checkpoint)
        model, state = read_checkpoint(self.checkpoint)
        self.model = model.to(self.device)
        self.preprocess, self.config_source = _preprocess(self.checkpoint, state.get("preprocess"), profile,
                                                          preprocess_from)
        self.tile = tile
        self.batch_size = batch_size
        self._pipes: dict[tuple[float, float], RawPipeline] = {}
        self._pipe(self.preprocess.black_level, self.preprocess.white_level)  # bad settings fail now, not mid-export

    def _pipe(self, black: float, white: float) -> RawPipeline:
        if (black, white) not in self._pipes:
            cfg = dataclasses.replace(self.preprocess, black_level=black, white_level=white)
            try:
                self._pipes[(black, white)] = RawPipeline(cfg, self.device)
            except (RawPipelineError, FFDNetUnavailableError) as exc:
                raise PredictError(self.checkpoint, f"cannot pre-process with the settings from "
                                                    f"{self.config_source}: {exc}") from None
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
            if not all(np.isfinite(v) and v > 0 for v in (r, g, b)):
                raise RangeError(Path(path), f"as-shot white balance {[r, g, b]} has a zero, negative or non-finite "
                                             f"gain; leave out --camera-wb to use the configured gains")
            pipe = RawPipeline(dataclasses.replace(pipe.cfg, wb_gains=(r / g, 1.0, b / g)), self.device)
        x = torch.from_numpy(packed).permute(2, 0, 1).unsqueeze(0)
        rgb_tile = PIPELINE_TILE if self.tile == "auto" else self.tile
        packed_tile = None if rgb_tile is None else max(rgb_tile // 2, 1)
        rgb = tiled(lambda t: pipe(t).float().cpu(), x, packed_tile, PIPELINE_CONTEXT, scale=2)
        return render(self.model, rgb[0], self.device, self.tile), info


def _inputs(source: Path) -> dict[str, Path]:
    """The RAW inputs of ``source`` (a folder or one file) by output name ``<stem>.png``; inputs whose outputs
    would share a name are refused."""
    if not source.exists():
        raise UnreadableFileError(source, "no such file or folder")
    files = sorted(source.iterdir()) if source.is_dir() else [source]
    raws = [f for f in files if f.suffix.lower() in (".npy", *CAMERA_RAW_SUFFIXES)]
    for f in raws:
        require_regular_file(f)  # hashing a FIFO or a link to /dev/zero would never end
    if not raws:
        raise UnreadableFileError(source, f"no RAW input: expected .npy patches or camera RAW files "
                                          f"({', '.join(CAMERA_RAW_SUFFIXES)})")
    by_name: dict[str, list[Path]] = {}
    for f in raws:
        by_name.setdefault(f"{f.stem}.png", []).append(f)
    clashes = [f"{' and '.join(f.name for f in fs)} -> {name}" for name, fs in by_name.items() if len(fs) > 1]
    if clashes:
        raise PredictError(source, f"inputs would share an output name ({'; '.join(clashes)}); rename or move "
                                   f"all but one of each")
    return {name: fs[0] for name, fs in by_name.items()}


def _read_record(path: Path, overwrite: bool) -> dict[str, dict[str, Any]]:
    """The file entries of an output folder's record; none without one. A record this version cannot check
    is refused, or with ``overwrite`` ignored."""
    if not path.is_file():
        return {}
    try:
        files = read_json(path)["files"]
        if all(Path(name).name == name and name.endswith(".png") and isinstance(entry, dict)
               and RECORD_KEYS <= entry.keys() for name, entry in files.items()):
            return files
    except (DataError, KeyError, TypeError, AttributeError):
        pass
    if overwrite:
        return {}
    raise PredictError(path, "not an output record of this version of isp-support predict (unreadable, or without "
                             "per-file checksums), so the PNGs beside it cannot be checked; choose another folder "
                             "or pass overwrite")


def _intact(out_dir: Path, entries: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The entries whose PNG is in ``out_dir`` with the recorded sha256."""
    return {name: entry for name, entry in entries.items()
            if (out_dir / name).is_file() and sha256_file(out_dir / name) == entry["png_sha256"]}


def _write_record(out_dir: Path, entries: dict[str, dict[str, Any]], complete: bool) -> None:
    atomic_write_json(out_dir / MANIFEST, {"complete": complete, "files": entries})


def _renderings(predictor: Predictor, todo: dict[str, Path], camera_wb: bool,
                progress: bool) -> Iterator[list[tuple[str, torch.Tensor]]]:
    """``(output name, rendering)`` of ``todo`` (output name -> input): a list per batch of patches of one
    size, then one per camera RAW file. Every patch's header is checked before the first is rendered (a
    mis-shaped or truncated file fails at once); values are read and checked batch by batch, so memory
    holds one batch, not the split (a bad value fails at its batch; the record keeps what was written)."""
    from tqdm.auto import tqdm

    by_shape: dict[tuple[int, ...], list[tuple[str, Path]]] = {}
    for name, f in tqdm([(n, f) for n, f in todo.items() if f.suffix.lower() == ".npy"], desc="check patches",
                        disable=not progress):
        by_shape.setdefault(raw_shape(f), []).append((name, f))
    for group in by_shape.values():
        for i in tqdm(range(0, len(group), predictor.batch_size), desc="render patches", disable=not progress):
            chunk = group[i:i + predictor.batch_size]
            yield list(zip([n for n, _ in chunk], predictor.patches(np.stack([read_raw(f) for _, f in chunk]))))
    for name, f in tqdm([(n, f) for n, f in todo.items() if f.suffix.lower() != ".npy"], desc="render RAW files",
                        disable=not progress):
        yield [(name, predictor.camera_raw(f, camera_wb)[0])]


def export_folder(predictor: Predictor, source: str | Path, out_dir: str | Path, camera_wb: bool = False,
                  overwrite: bool = False, progress: bool = True, log: Callable[[str], None] = print) -> list[Path]:
    """The ``predict`` entry point: RAW in, 8-bit PNGs ``<stem>.png`` in ``out_dir`` out; returns the PNGs written.

    ``source`` is a folder (its challenge patches ``*.npy`` and camera RAW files) or one file. Inputs
    whose outputs would share a name (``x.npy`` and ``x.dng``) are refused with a :class:`PredictError`
    listing them. Patches of equal size are pre-processed and rendered in batches.

    ``out_dir/predict.json`` names every PNG of the folder with the checkpoint's sha256, the settings, the
    sha256 of its input and its own sha256. It is rewritten atomically after each batch of PNGs is on disk
    (``"complete": false``) and once more at the end (``true``), so a failed run leaves no entry for what
    it did not write. A PNG is kept only while its entry matches its input, the settings and its bytes (a
    killed export resumes); any other PNG of an input's name is rendered again, and PNGs the record does
    not name are never trusted. A folder holding outputs of another checkpoint or settings, or a record
    this version cannot check, is refused unless ``overwrite``: that renders every input again and then
    deletes the outputs of other checkpoints or settings it did not replace, so the folder holds this
    checkpoint's outputs alone (outputs of the same checkpoint and settings from other inputs stay).
    """
    source, out_dir = Path(source), Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise PredictError(out_dir, "the output folder is an existing file")
    inputs = _inputs(source)
    settings = predictor.settings() | {"camera_wb": camera_wb}
    entries = _intact(out_dir, _read_record(out_dir / MANIFEST, overwrite))
    stale = {name for name, entry in entries.items() if {k: entry[k] for k in settings} != settings}
    if stale and not overwrite:
        raise FileExistsError(f"{out_dir} holds predictions of another checkpoint or settings "
                              f"({out_dir / MANIFEST}); choose another folder or pass overwrite")
    sums = {name: sha256_file(f) for name, f in inputs.items()}
    todo = {name: f for name, f in inputs.items()
            if overwrite or entries.get(name, {}).get("input_sha256") != sums[name]}
    if len(todo) < len(inputs):
        log(f"[predict] {len(inputs) - len(todo)} outputs already in {out_dir}; skipping them")
    written = []
    for batch in _renderings(predictor, todo, camera_wb, progress):
        for name, rgb in batch:
            png = _png_bytes(rgb)
            written.append(atomic_write_bytes(out_dir / name, png))
            entries[name] = settings | {"input": str(inputs[name].resolve()), "input_sha256": sums[name],
                                        "png_sha256": sha256_bytes(png)}
        _write_record(out_dir, entries, complete=False)
    replaced = stale - set(todo)  # overwrite: outputs of other checkpoints or settings not rendered again
    for name in replaced:
        (out_dir / name).unlink(missing_ok=True)
        del entries[name]
    if replaced:
        log(f"[predict] removed {len(replaced)} outputs of another checkpoint or settings from {out_dir}")
    _write_record(out_dir, entries, complete=True)
    return written
