"""Put a scene's patches back together on its recovered grid, and rebuild whole datasets (supplementary section A).

:func:`assemble` joins row-major patches into one image and :func:`patch_index`
says where each patch lies in it. Patches may differ in size (edge patches
cropped at the image border) as long as all patches of each row share a height
and all patches of each column a width (:func:`~isp_support.pipeline.grid.layout_problem`).
:func:`stitch_dataset` recovers every scene's grid (:mod:`isp_support.pipeline.grid`)
and writes its full images under ``<run_dir>/stitched/``.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from tqdm.auto import tqdm

from ..artifacts import atomic_save_npy, atomic_write_bytes, atomic_write_json
from ..config import StitchConfig
from ..data import Patch, Scene
from ..io import read_rgb
from ..runs import RunLayout
from .errors import StitchError
from .grid import GridResult, layout_problem, recover_scenes
from .preprocess import load_preprocessed, require_current
from .seams import ArrayLike, scene_label

_DEFAULTS = StitchConfig()


# --- assembly ------------------------------------------------------------------------

class PatchPlacement(NamedTuple):
    """Where one patch lies in its assembled scene (pixels of the patch's own resolution)."""

    patch_id: str
    scene: str
    row: int
    col: int
    y0: int
    x0: int
    h: int
    w: int


def _require_grid(sizes: Sequence[tuple[int, int]], rows: int, cols: int) -> None:
    """:class:`StitchError` unless patches of these sizes form a ``rows x cols`` grid (see :func:`layout_problem`)."""
    problem = layout_problem(sizes, rows, cols)
    if problem is not None:
        raise StitchError(f"cannot place {len(sizes)} patches as a {rows}x{cols} grid: {problem}")


def assemble(patches: Sequence[ArrayLike], rows: int, cols: int) -> ArrayLike:
    """Join row-major patches ``(H, W, ...)`` into one image; numpy in, numpy out; torch in, torch out.

    Patches may differ in size as long as each row shares a height and each
    column a width (see the module docstring); trailing dimensions must match.
    """
    patches = list(patches)
    is_torch = {isinstance(p, torch.Tensor) for p in patches}
    if len(is_torch) > 1:
        raise StitchError("cannot assemble a mix of numpy arrays and torch tensors")
    if len({tuple(p.shape[2:]) for p in patches}) > 1:
        raise StitchError(f"patches differ beyond height and width: {sorted({tuple(p.shape) for p in patches})}")
    _require_grid([(int(p.shape[0]), int(p.shape[1])) for p in patches], rows, cols)
    if is_torch == {True}:
        return torch.cat([torch.cat(patches[r * cols:(r + 1) * cols], dim=1) for r in range(rows)], dim=0)
    return np.concatenate([np.concatenate(patches[r * cols:(r + 1) * cols], axis=1) for r in range(rows)], axis=0)


def patch_index(scene: str, patch_ids: Sequence[str], rows: int, cols: int,
                sizes: tuple[int, int] | Sequence[tuple[int, int]]) -> list[PatchPlacement]:
    """One :class:`PatchPlacement` per row-major patch: its grid cell and its box in the assembled image.

    ``sizes`` is one ``(h, w)`` shared by all patches or one per patch.
    """
    if len(sizes) == 2 and all(isinstance(v, (int, np.integer)) for v in sizes):
        per_patch = [(int(sizes[0]), int(sizes[1]))] * len(patch_ids)
    else:
        per_patch = [(int(h), int(w)) for h, w in sizes]
    if len(per_patch) != len(patch_ids):
        raise StitchError(f"{scene_label(scene)}: {len(patch_ids)} patch ids but {len(per_patch)} sizes")
    _require_grid(per_patch, rows, cols)
    y0s = np.cumsum([0] + [per_patch[r * cols][0] for r in range(rows - 1)])
    x0s = np.cumsum([0] + [per_patch[c][1] for c in range(cols - 1)])
    return [PatchPlacement(pid, scene, k // cols, k % cols, int(y0s[k // cols]), int(x0s[k % cols]), *per_patch[k])
            for k, pid in enumerate(patch_ids)]


# --- whole datasets ------------------------------------------------------------------

@dataclass(frozen=True)
class StitchedSet:
    """One kind of full image rebuilt for one split."""

    split: str
    kind: str
    """``raw`` (pre-processed RAW, float16 ``.npy``), ``jpeg`` (target domain) or ``gt`` (ground truth), ``.png``."""
    grids: dict[str, GridResult]
    placements: list[PatchPlacement]


def stitch_dataset(dataset: Any, run_dir: str | Path, cfg: StitchConfig = _DEFAULTS,
                   preprocessed_dir: str | Path | None = None, progress: bool = True) -> list[StitchedSet]:
    """Recover every scene's grid and rebuild its full images under ``<run_dir>/stitched/``.

    * RAW scenes: grids from the RAW patches' green proxy; the full image is
      assembled from the pre-processed patches of 01_preprocess
      (``preprocessed_dir``, default ``<run_dir>/preprocessed``) as float16
      ``(H, W, 3)``.
    * Ground truth (``<split>/gt``): assembled with its RAW scene's grid.
    * Target JPEGs: grids from their own channel-mean maps; saved as PNG (lossless).

    ``grids.json`` (every scene's :meth:`GridResult.to_dict`) and ``index.csv``
    (each patch's split, kind, scene, row, column and box in the full image, at
    the RGB resolution) are written atomically at the end. Every file is
    written atomically, so a killed run leaves no half-written image.
    """
    layout = RunLayout(run_dir)
    pre = Path(preprocessed_dir) if preprocessed_dir is not None else layout.preprocessed
    jobs = [job for split in dataset.splits.values() for job in _stitch_jobs(split, cfg, pre)]
    results = [_stitch_set(job, layout.stitched / job.split / job.kind, progress) for job in jobs]
    _write_records(layout, results)
    return results


class _StitchJob(NamedTuple):
    """One kind of full image of one split to rebuild: its scenes, their grids, and how to read and write them."""

    split: str
    kind: str
    scenes: dict[str, Scene]
    grids: dict[str, GridResult]
    load: Callable[[Patch], np.ndarray]
    """One patch as ``(h, w, 3)``."""
    save: Callable[[Path, np.ndarray], Any]
    """Write a full image at a path without suffix (it adds its own)."""


def _save_png(path: Path, image: np.ndarray) -> None:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG")
    atomic_write_bytes(path, buf.getvalue())


def _stitch_jobs(split: Any, cfg: StitchConfig, pre: Path) -> list[_StitchJob]:
    """The kinds of full image of one split: RAW (pre-processed patches), then ground truth, then target JPEGs.

    The grids of all its scenes are recovered here, before any image is written.
    """
    require_current(pre, split.name, split.raw_patches())
    raw_grids = recover_scenes(split.raws.values(), cfg)
    jobs = [_StitchJob(split.name, "raw", split.raws, raw_grids,
                       lambda p, s=split.name: load_preprocessed(pre, s, p.id).transpose(1, 2, 0),
                       lambda path, img: atomic_save_npy(path.with_suffix(".npy"), img.astype(np.float16)))]
    if split.gt:
        jobs.append(_StitchJob(split.name, "gt", split.gt, {k: raw_grids[k] for k in split.gt},
                               lambda p: read_rgb(p.path), lambda path, img: _save_png(path.with_suffix(".png"), img)))
    if split.jpegs:
        jobs.append(_StitchJob(split.name, "jpeg", split.jpegs, recover_scenes(split.jpegs.values(), cfg),
                               lambda p: read_rgb(p.path), lambda path, img: _save_png(path.with_suffix(".png"), img)))
    return jobs


def _stitch_set(job: _StitchJob, folder: Path, progress: bool) -> StitchedSet:
    """Assemble and save every scene of ``job`` in ``folder``, recording where each patch lies."""
    placements: list[PatchPlacement] = []
    for name, scene in tqdm(job.scenes.items(), desc=f"stitch {job.split}/{job.kind}", disable=not progress):
        grid = job.grids[name]
        tiles = [job.load(p) for p in scene.patches]
        job.save(folder / name, assemble(tiles, grid.rows, grid.cols))
        placements += patch_index(name, [p.id for p in scene.patches], grid.rows, grid.cols,
                                  [t.shape[:2] for t in tiles])
    return StitchedSet(job.split, job.kind, job.grids, placements)


def _write_records(layout: RunLayout, results: list[StitchedSet]) -> None:
    """``grids.json`` and ``index.csv`` of :func:`stitch_dataset`, each written atomically."""
    atomic_write_json(layout.grids, {f"{r.split}/{r.kind}": {k: g.to_dict() for k, g in r.grids.items()}
                                           for r in results})
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(["split", "kind", *PatchPlacement._fields])
    for r in results:
        writer.writerows([r.split, r.kind, *p] for p in r.placements)
    atomic_write_bytes(layout.stitch_index, buf.getvalue().encode())


def load_stitched(run_dir: str | Path, split: str, kind: str, scene: str) -> np.ndarray:
    """A full image written by :func:`stitch_dataset`: float ``(H, W, 3)`` in [0, 1] for every kind."""
    from PIL import Image

    base = RunLayout(run_dir).stitched_image(split, kind, scene)
    if kind == "raw":
        return np.load(base.with_suffix(".npy")).astype(np.float32)
    with Image.open(base.with_suffix(".png")) as img:
        return np.asarray(img.convert("RGB"), dtype=np.float32) / 255.0
