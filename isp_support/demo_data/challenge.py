"""A rehearsal set in the NTIRE 2026 challenge's own layout: the run the series exists for, without the data.

The released challenge data (``REFERENCE_NOTES.md``) has ``train/raws`` (RAW patches of 256 x 256 x 4 in scenes of
14, 35 or 42 patches), ``train/jpegs`` (the target domain, 512 x 512), ``val/raws`` and ``test/raws``, and **no
ground truth anywhere**. :func:`build_rehearsal` makes a set of that shape from the same offline photos as the demo
(:mod:`isp_support.demo_data.build`), so the series can be run end to end as a challenge user runs it:

* grids only from the challenge's: 2 x 7, 5 x 7, 6 x 7 and their transposes (the one whose aspect fits the photo
  best, among the three closest, by seed);
* scenes shared out like the challenge's (383 train RAW scenes, about as many target scenes, val 3,795 and test
  7,617 patches, i.e. about 108 and 218 scenes), at least one of each, ``scenes`` in all;
* photos of the source, target and held-out (val + test) roles come from disjoint photo groups; within a role a
  photo is used again with another crop window (position, size and mirror by seed) when there are more scenes
  than photos, and every scene is resized to its grid's size, upscaled when the photo is smaller (a rehearsal of
  sizes and code paths, not of image quality);
* the ground truth of the source, val and test scenes (the target look rendered from the same photo) goes to a
  separate ``truth`` folder (``<truth>/<split>/gt/``), never into the layout, so the series cannot read it; a
  rehearsal is scored afterwards by a script (``benchmarks/score_rehearsal.py``).

The layout holds the challenge's files only. ``<truth>/rehearsal.json`` (parameters, per-scene grids, photos and
licences, the sha256 of every file of both folders) is written last: a killed build leaves nothing that looks
complete, and an identical build is reused.
"""

from __future__ import annotations

import hashlib
import json
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from tqdm.auto import tqdm

from .. import __version__
from ..artifacts import atomic_directory, atomic_save_npy, atomic_write_json, sha256_file
from .build import DatasetBuildError, _save_image, collect_photos, cut_grid, photo_groups
from .crops import centre_crop_box, choose_grid
from .look import PhoneLook, render_look, to_uint8
from .photos import Photo, load_photo
from .unprocess import sample_capture, sample_sensor, synthesize_raw

REHEARSAL_VERSION = 1
CHALLENGE_GRIDS = ((2, 7), (7, 2), (5, 7), (7, 5), (6, 7), (7, 6))
"""The grids (rows, cols) of the challenge's scenes: 14, 35 or 42 patches."""
CHALLENGE_SCENES = {"train/raws": 383, "train/jpegs": 383, "val/raws": 108, "test/raws": 218}
"""Scenes per part of the released data (val and test from their patch counts at about 35 patches a scene)."""
SMALL_FULL_OVERRIDES = {
    # The offline stand-ins, chosen explicitly (the full profile's DINOv2 and VGG19 cannot be had offline).
    "embed.semantic_backbone": "vgg16_offline", "embed.style_backbone": "vgg16_offline",
    "embed.image_side": 112, "embed.patch_side": 56, "embed.style_dim": 256,
    "train.epochs": 1, "train.batch_size": 4, "train.workers": 0, "train.lr": 1e-3, "train.val_max_patches": 16,
    "train.target_ref_patches": 16, "train.samples": 2, "train.gram_layers": ["relu1_2", "relu2_2"],
    "stage2.epochs": 1, "stage2.d_features": 16,
    "evaluate.methods": ["floor", "ot", "ot_stage2", "paired_l1"], "evaluate.timing_side": 128,
    "evaluate.timing_repeats": 1, "evaluate.submission_format": "jpeg",
}
"""The ``full`` profile made small enough for CI and ``make smoke`` on a tiny rehearsal: one epoch, small
descriptors, the offline stand-ins chosen explicitly, three rows and one that must be skipped (``paired_l1``
needs ``train/gt``), a JPEG submission."""
RECORD = "rehearsal.json"
ROLE_OF = {"train/raws": "source", "train/jpegs": "target", "val/raws": "held_out", "test/raws": "held_out"}
PREFIX = {"train/raws": "r", "train/jpegs": "j", "val/raws": "v", "test/raws": "t"}


def scene_counts(scenes: int) -> dict[str, int]:
    """``scenes`` shared out over the four parts like the challenge's (largest remainder), at least one each."""
    if isinstance(scenes, bool) or not isinstance(scenes, int) or scenes < len(CHALLENGE_SCENES):
        raise DatasetBuildError(f"a rehearsal needs at least {len(CHALLENGE_SCENES)} scenes (one per part: "
                                f"{', '.join(CHALLENGE_SCENES)}), got {scenes!r}")
    total = sum(CHALLENGE_SCENES.values())
    shares = {k: scenes * v / total for k, v in CHALLENGE_SCENES.items()}
    counts = {k: int(v) for k, v in shares.items()}
    for k in sorted(counts, key=lambda k: -(shares[k] % 1))[:scenes - sum(counts.values())]:
        counts[k] += 1
    for k in [k for k, v in counts.items() if v == 0]:  # at least one of each, taken from the largest part
        counts[max(counts, key=counts.get)] -= 1
        counts[k] = 1
    return counts


def _role_photos(photos: list[Photo], seed: int) -> dict[str, list[Photo]]:
    """Photo groups split over source, target and held-out (val + test) roles, deterministically."""
    groups, names = photo_groups(photos)
    order = [names[i] for i in np.random.default_rng([seed, 11]).permutation(len(names))]
    cut = {"source": order[0::3], "target": order[1::3], "held_out": order[2::3]}
    return {role: [p for g in sorted(gs) for p in groups[g]] for role, gs in cut.items()}


def _crop_box(shape: tuple[int, int], grid: tuple[int, int], rng: np.random.Generator) -> tuple[int, int, int, int]:
    """A window of the grid's aspect: 60-100 % of the largest one, placed by ``rng`` (the first use: the largest)."""
    height, width = shape
    top, left, h, w = centre_crop_box(height, width, grid[1] / grid[0])
    scale = float(rng.uniform(0.6, 1.0))
    h2, w2 = max(1, round(h * scale)), max(1, round(w * scale))
    return int(rng.integers(height - h2 + 1)), int(rng.integers(width - w2 + 1)), h2, w2


def _plan(roles: dict[str, list[Photo]], images: dict[str, np.ndarray], counts: dict[str, int],
          seed: int) -> list[dict[str, Any]]:
    plans = []
    for part, n in counts.items():
        pool = roles[ROLE_OF[part]]
        offset = 0 if part != "test/raws" else counts["val/raws"]  # val and test share the held-out photos
        for k in range(n):
            photo = pool[(offset + k) % len(pool)]
            use = (offset + k) // len(pool)
            rng = np.random.default_rng([seed, 12, int(hashlib.sha256(f"{part}/{k}".encode()).hexdigest()[:8], 16)])
            h, w = images[photo.id].shape[:2]
            grid = choose_grid(h, w, CHALLENGE_GRIDS, rng)
            box = centre_crop_box(h, w, grid[1] / grid[0]) if use == 0 else _crop_box((h, w), grid, rng)
            plans.append({"part": part, "scene": f"{PREFIX[part]}{k:04d}", "photo": photo, "rows": grid[0],
                          "cols": grid[1], "crop": list(box), "mirror": bool(use and rng.integers(2)),
                          "stream": [k, 0 if part == "train/raws" else 1 if part == "val/raws" else 2]})
    return plans


def _scene_rgb(photo_rgb: np.ndarray, plan: dict[str, Any], raw_patch: int) -> np.ndarray:
    top, left, h, w = plan["crop"]
    region = Image.fromarray(to_uint8(photo_rgb[top:top + h, left:left + w]))
    if plan["mirror"]:
        region = region.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    size = (plan["cols"] * 2 * raw_patch, plan["rows"] * 2 * raw_patch)
    return np.asarray(region.resize(size, Image.Resampling.LANCZOS), dtype=np.float64) / 255.0


def rehearsal_key(scenes: int, raw_patch: int, seed: int, photos: list[Photo], look: PhoneLook,
                  jpeg_quality: int) -> str:
    """Hash of everything that determines a rehearsal's content."""
    blob = json.dumps({"version": REHEARSAL_VERSION, "scenes": scenes, "raw_patch": raw_patch, "seed": seed,
                       "jpeg_quality": jpeg_quality, "look": look.to_dict(),
                       "photos": [(p.id, sha256_file(p.path)) for p in photos]}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


def default_truth_dir(out: str | Path) -> Path:
    """``<out>-truth`` beside the layout."""
    out = Path(out)
    return out.with_name(f"{out.name}-truth")


def build_rehearsal(out: str | Path, scenes: int, raw_patch: int = 256, seed: int = 0,
                    truth: str | Path | None = None, photo_sources: tuple[str, ...] = ("wheels",),
                    photo_folders: tuple[str | Path, ...] = (), cache_dir: str | Path = "data/photos",
                    look: PhoneLook = PhoneLook(), jpeg_quality: int = 95, force: bool = False,
                    progress: bool = True, log=print) -> tuple[Path, Path]:
    """Build a challenge-layout rehearsal at ``out`` and its ground truth at ``truth`` (default ``<out>-truth``).

    Returns ``(out, truth)``. An identical build already there is reused. A folder at ``out`` or ``truth`` that a
    rehearsal build did not make (no ``rehearsal.json`` naming it) is refused unless ``force``; nothing is
    written until every photo has been decoded.
    """
    out = Path(out).resolve()
    truth = (Path(truth) if truth is not None else default_truth_dir(out)).resolve()
    if out == truth or out in truth.parents or truth in out.parents:
        raise DatasetBuildError(f"{truth}: the ground truth must go outside the layout {out}, and not hold it")
    if isinstance(raw_patch, bool) or not isinstance(raw_patch, int) or not 8 <= raw_patch <= 4096:
        raise DatasetBuildError(f"RAW patch side must be an integer from 8 to 4096, got {raw_patch!r}")
    counts = scene_counts(scenes)
    photos = collect_photos(photo_sources, Path(cache_dir), tuple(Path(f) for f in photo_folders), log=log)
    key = rehearsal_key(scenes, raw_patch, seed, photos, look, jpeg_quality)
    record_path = truth / RECORD
    previous = _read_record(record_path)
    if previous.get("build_key") == key and previous.get("layout") == str(out) and not force \
            and _complete(out, truth, previous):
        log(f"rehearsal up to date: {out} ({previous['counts']})")
        return out, truth
    for folder in (out, truth):
        if folder.exists() and any(folder.iterdir()) and previous.get("layout") != str(out) and not force:
            raise DatasetBuildError(f"{folder}: exists and was not made by a rehearsal build into {out}; "
                                    "choose another folder or pass --force to replace it")
    images = {p.id: load_photo(p) for p in photos}
    plans = _plan(_role_photos(photos, seed), images, counts, seed)
    sensor = sample_sensor(np.random.default_rng([seed, 2]))
    files: dict[str, str] = {}
    records = []
    with atomic_directory(out, overwrite=True) as tmp_out, atomic_directory(truth, overwrite=True) as tmp_truth:
        for plan in tqdm(plans, desc="building rehearsal scenes", disable=not progress, file=sys.stdout):
            records.append(_write_scene(tmp_out, tmp_truth, plan, images[plan["photo"].id], raw_patch, sensor, look,
                                        jpeg_quality, seed, files))
        atomic_write_json(tmp_truth / RECORD, {
            "format": "NTIRE 2026 unpaired ISP layout, rehearsal (isp_support); ground truth kept out of the layout",
            "version": REHEARSAL_VERSION, "isp_support_version": __version__, "build_key": key, "layout": str(out),
            "seed": seed, "scenes": scenes, "raw_patch": raw_patch, "counts": _counts(files), "grids":
            [list(g) for g in CHALLENGE_GRIDS], "look": look.to_dict(), "sensor": asdict(sensor),
            "scene_records": records, "files": dict(sorted(files.items()))})
    log(f"rehearsal written: {out} ({_counts(files)}); ground truth outside it: {truth}")
    return out, truth


def _write_scene(out: Path, truth: Path, plan: dict[str, Any], photo_rgb: np.ndarray, raw_patch: int, sensor,
                 look: PhoneLook, jpeg_quality: int, seed: int, files: dict[str, str]) -> dict[str, Any]:
    image = _scene_rgb(photo_rgb, plan, raw_patch)
    rendered = to_uint8(render_look(image, look))
    rows, cols, scene, part = plan["rows"], plan["cols"], plan["scene"], plan["part"]
    photo: Photo = plan["photo"]
    record = {"part": part, "scene": scene, "rows": rows, "cols": cols, "photo_id": photo.id,
              "licence": photo.licence, "attribution": photo.attribution, "crop": plan["crop"],
              "mirror": plan["mirror"], "upscaled": bool(plan["crop"][2] < rows * 2 * raw_patch)}
    if part == "train/jpegs":
        for idx, tile in enumerate(cut_grid(rendered, rows, cols)):
            rel = f"{part}/{scene}_{idx}.jpg"
            _save_image(out / rel, tile, "JPEG", jpeg_quality)
            files[f"layout/{rel}"] = sha256_file(out / rel)
        return record
    capture_rng = np.random.default_rng([seed, 13, *plan["stream"]])
    noise_rng = np.random.default_rng([seed, 14, *plan["stream"]])
    raw, _ = synthesize_raw(image, sensor, sample_capture(capture_rng), noise_rng)
    split = part.split("/")[0]
    for idx, (raw_tile, gt_tile) in enumerate(zip(cut_grid(raw, rows, cols), cut_grid(rendered, rows, cols))):
        rel, gt_rel = f"{part}/{scene}_{idx}.npy", f"{split}/gt/{scene}_{idx}.png"
        atomic_save_npy(out / rel, raw_tile)
        _save_image(truth / gt_rel, gt_tile, "PNG")
        files[f"layout/{rel}"] = sha256_file(out / rel)
        files[f"truth/{gt_rel}"] = sha256_file(truth / gt_rel)
    return record


def _counts(files: dict[str, str]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for rel in files:
        part = "/".join(rel.split("/")[:3])
        counts[part] = counts.get(part, 0) + 1
    return dict(sorted(counts.items()))


def _read_record(path: Path) -> dict[str, Any]:
    try:
        record = json.loads(path.read_text()) if path.is_file() else {}
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        return {}
    return record if isinstance(record, dict) else {}


def _complete(out: Path, truth: Path, record: dict[str, Any]) -> bool:
    """Every file the record lists is there (sizes and names; checksums are for ``verify``)."""
    listed = record.get("files", {})
    return bool(listed) and all((out if rel.startswith("layout/") else truth).joinpath(rel.split("/", 1)[1]).is_file()
                                for rel in listed)
