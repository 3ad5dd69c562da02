"""Build a small challenge-format dataset from real photographs.

The NTIRE 2026 data cannot be downloaded here, and a course needs something
that runs anywhere, so this module makes a set in the same layout (see
:mod:`isp_support.data`) from real photos available offline
(:mod:`isp_support.demo_data.photos`):

* **Source domain** (``train/raws``): photos unprocessed into 10-bit RGGB RAW
  by :mod:`isp_support.demo_data.unprocess` (one simulated sensor per dataset, one
  illuminant and noise level per scene).
* **Target domain** (``train/jpegs``): *other* photos rendered with the
  target phone look (:mod:`isp_support.demo_data.look`), JPEG quality 95.
* **Test split** (``test/raws`` + ``test/gt``): held-out photos as RAW, with
  their target-look renderings as ground truth.
* ``train/gt``: target-look renderings of the *source* photos, only for paired
  upper-bound experiments; the unpaired pipeline never reads it.

Photos are split by content group (two views of one scene stay together).
A photo gives up to ``crops_per_photo`` scenes (``target_crops_per_photo`` for
target photos): non-overlapping crops, none smaller than its scene's RGB size,
all in the photo's split (:func:`~isp_support.demo_data.crops.photo_crops`; one
crop, the largest centred one, when it is too small for two). A photo's first scene is named
``<role><k>`` (``src003``), its further crops ``<role><k>c<j>`` (``src003c1``).
Each scene is cut into a grid picked from the profile's list (the one whose
aspect ratio fits the crop best, among the three closest, by seed), patches
numbered row-major from 0. Everything is deterministic in the seed. The
dataset is built in a temporary folder and renamed into place, with
``manifest.json`` (parameters, photo sources and licences, sha256 of every
file) written last, so a killed build never leaves a folder that looks
complete.
"""

from __future__ import annotations

import hashlib
import json
import math
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from tqdm.auto import tqdm

from .. import __version__
from ..artifacts import (atomic_directory, atomic_save_npy, atomic_write_bytes, atomic_write_json, require_replaceable,
                         sha256_file)
from ..config import DatasetConfig
from ..io import DataError, read_json
from .crops import photo_crops, photo_rng
from .look import PhoneLook, render_look, to_uint8
from .photos import Photo, PhotoSourceUnavailable, debian_photos, folder_photos, load_photo, wheel_photos
from .unprocess import Sensor, sample_capture, sample_sensor, synthesize_raw

BUILDER_VERSION = 1
ROLES = ("source", "target", "test")
MANIFEST = "manifest.json"
CONTACT_SHEET = "contact_sheet.png"


class DatasetBuildError(RuntimeError):
    """The dataset cannot be built as asked (too few photos, ...)."""


@dataclass(frozen=True)
class ScenePlan:
    scene: str
    role: str
    photo: Photo
    rows: int
    cols: int
    crop: tuple[int, int, int, int]
    """(top, left, height, width) of the photo region used."""
    index: int = 0
    """Which crop of its photo this scene is (0: the first, or the only one)."""


def collect_photos(sources: tuple[str, ...], cache_dir: Path, extra_folders: tuple[Path, ...] = (),
                   log=print) -> list[Photo]:
    """Photos from every named source and folder, deduplicated by content, sorted by id."""
    photos: list[Photo] = []
    for source in sources:
        if source == "wheels":
            photos += wheel_photos()
        elif source == "debian":
            try:
                photos += debian_photos(cache_dir / "debian")
            except PhotoSourceUnavailable as exc:
                log("!" * 78 + f"\nWARNING: Debian photo packages unavailable, building without them:\n  {exc}\n"
                    + "!" * 78)
        else:
            raise DatasetBuildError(f"unknown photo source {source!r}; expected 'wheels' or 'debian'")
    for folder in extra_folders:
        photos += folder_photos(folder)
    seen: dict[str, Photo] = {}
    for photo in sorted(photos, key=lambda p: p.id):
        digest = sha256_file(photo.path)
        if digest not in seen:
            seen[digest] = photo
    return sorted(seen.values(), key=lambda p: p.id)


def photo_groups(photos: list[Photo]) -> tuple[dict[str, list[Photo]], list[str]]:
    """Photos by content group (two views of one scene stay together) and the group names, sorted; at least 3
    groups, one for each role."""
    groups: dict[str, list[Photo]] = {}
    for photo in photos:
        groups.setdefault(photo.group, []).append(photo)
    if len(groups) < 3:
        raise DatasetBuildError(f"need photos of at least 3 distinct scenes, found {len(groups)}")
    return groups, sorted(groups)


def assign_roles(photos: list[Photo], fractions: tuple[float, float, float], seed: int) -> dict[str, list[Photo]]:
    """Split photo *groups* into source / target / test by the given fractions, deterministically."""
    groups, names = photo_groups(photos)
    rng = np.random.default_rng([seed, 1])
    order = [names[i] for i in rng.permutation(len(names))]
    total = sum(fractions)
    n_test = max(1, round(len(order) * fractions[2] / total))
    n_target = max(1, round(len(order) * fractions[1] / total))
    n_source = len(order) - n_test - n_target
    if n_source < 1:
        raise DatasetBuildError(f"{len(order)} photo groups are too few for split fractions {fractions}")
    cut = {"source": order[:n_source], "target": order[n_source:n_source + n_target],
           "test": order[n_source + n_target:]}
    return {role: sorted((p for g in cut[role] for p in groups[g]), key=lambda p: p.id) for role in ROLES}


def crops_for_role(cfg: DatasetConfig, role: str) -> int:
    """Most scenes per photo of one role (``target_crops_per_photo`` for target photos when set)."""
    n = cfg.target_crops_per_photo if role == "target" and cfg.target_crops_per_photo is not None \
        else cfg.crops_per_photo
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise DatasetBuildError(f"crops per photo must be a positive integer, got {n!r} for {role} photos")
    return n


def scene_image(photo_rgb: np.ndarray, plan: ScenePlan, raw_patch: int) -> np.ndarray:
    """Crop the photo to the grid's aspect and resize (antialiased) to the scene's RGB size."""
    top, left, h, w = plan.crop
    size = (plan.cols * 2 * raw_patch, plan.rows * 2 * raw_patch)  # PIL: (width, height)
    region = Image.fromarray(to_uint8(photo_rgb[top:top + h, left:left + w]))
    return np.asarray(region.resize(size, Image.Resampling.LANCZOS), dtype=np.float64) / 255.0


def cut_grid(image: np.ndarray, rows: int, cols: int) -> list[np.ndarray]:
    """Row-major list of ``rows * cols`` equal tiles."""
    ph, pw = image.shape[0] // rows, image.shape[1] // cols
    return [image[r * ph:(r + 1) * ph, c * pw:(c + 1) * pw] for r in range(rows) for c in range(cols)]


def _scene_rng(seed: int, plan: ScenePlan, stream: int) -> np.random.Generator:
    """A scene's own stream: its photo's for the first crop (as before crops existed), one per further crop."""
    return photo_rng(seed, plan.photo, stream) if plan.index == 0 else photo_rng(seed, plan.photo, stream, plan.index)


# DatasetConfig fields added after builder version 1, left out of the build key at these defaults
# (which build exactly what version 1 built), so existing datasets stay up to date.
_KEY_DEFAULTS = {"crops_per_photo": 1, "target_crops_per_photo": None}


def build_key(cfg: DatasetConfig, seed: int, photos: list[Photo], look: PhoneLook) -> str:
    """Hash of everything that determines the dataset's content."""
    config = {k: v for k, v in asdict(cfg).items() if k not in _KEY_DEFAULTS or v != _KEY_DEFAULTS[k]}
    blob = json.dumps({"builder": BUILDER_VERSION, "config": config, "seed": seed, "look": look.to_dict(),
                       "photos": [(p.id, sha256_file(p.path)) for p in photos]}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


def made_files(folder: Path) -> set[str] | None:
    """The files this builder wrote into ``folder`` by its manifest (``None``: no manifest of this builder), for
    :func:`~isp_support.artifacts.atomic_directory`: ``build-dataset`` replaces nothing else."""
    try:
        manifest = read_json(folder / MANIFEST)
    except DataError:
        return None
    if not isinstance(manifest, dict) or "builder_version" not in manifest or not isinstance(manifest.get("files"),
                                                                                             dict):
        return None
    return set(manifest["files"]) | {MANIFEST, str(manifest.get("contact_sheet", "contact_sheet.png"))}


def build_dataset(out: str | Path, cfg: DatasetConfig, seed: int = 0, cache_dir: str | Path = "data/photos",
                  photo_folders: tuple[str | Path, ...] = (), look: PhoneLook = PhoneLook(),
                  force: bool = False, progress: bool = True, log=print) -> Path:
    """Build the dataset at ``out`` (reused when an identical build is already there).

    Returns the dataset folder. Raises :class:`DatasetBuildError` or a
    :class:`~isp_support.io.DataError` (naming the photo) without writing
    anything at ``out``.
    """
    out = Path(out)
    for role in ROLES:
        crops_for_role(cfg, role)  # a bad count fails before any work
    photos = collect_photos(cfg.photo_sources, Path(cache_dir), tuple(Path(f) for f in photo_folders), log=log)
    if cfg.max_photos is not None:
        photos = photos[: cfg.max_photos]
    key = build_key(cfg, seed, photos, look)
    manifest_path = out / MANIFEST
    if out.exists() or out.is_symlink():
        require_replaceable(out, made_files, "build-dataset")
    if manifest_path.is_file() and not force:
        existing = read_json(manifest_path)
        if isinstance(existing, dict) and existing.get("build_key") == key:
            log(f"dataset up to date: {out} ({existing['counts']})")
            return out
    images = {p.id: load_photo(p) for p in photos}  # decode all first: a bad photo fails before any writing
    roles = assign_roles(photos, cfg.split_fractions, seed)
    sensor = sample_sensor(np.random.default_rng([seed, 2]))
    plans = _plan_scenes(roles, images, cfg, seed)

    with atomic_directory(out, overwrite=True, owned=made_files, made_by="build-dataset") as tmp:
        records, files = [], {}
        for plan in tqdm(plans, desc="building scenes", disable=not progress, file=sys.stdout):
            record, written = _write_scene(tmp, plan, images[plan.photo.id], cfg, sensor, look, seed)
            records.append(record)
            files.update(written)
        counts = {f"{split}/{kind}": sum(1 for f in files if f.startswith(f"{split}/{kind}/"))
                  for split, kind in (("train", "raws"), ("train", "jpegs"), ("train", "gt"),
                                      ("test", "raws"), ("test", "gt"))}
        contact = write_contact_sheet(tmp, records, cfg.raw_patch)
        manifest = {
            "format": "NTIRE 2026 unpaired ISP layout (isp_support demo dataset)",
            "builder_version": BUILDER_VERSION, "isp_support_version": __version__,
            "build_key": key, "seed": seed, "config": asdict(cfg),
            "sensor": asdict(sensor), "look": look.to_dict(),
            "unprocessing": "Brooks et al. 2019 (CVPR), see isp_support.demo_data.unprocess",
            "counts": counts, "scenes": records,
            "files": dict(sorted(files.items())), "contact_sheet": contact,
        }
        atomic_write_json(tmp / MANIFEST, manifest)
    log(f"dataset written: {out} ({counts})")
    return out


def _plan_scenes(roles: dict[str, list[Photo]], images: dict[str, np.ndarray], cfg: DatasetConfig,
                 seed: int) -> list[ScenePlan]:
    plans = []
    prefix = {"source": "src", "target": "tgt", "test": "test"}
    for role in ROLES:
        n = crops_for_role(cfg, role)
        for k, photo in enumerate(roles[role]):
            h, w = images[photo.id].shape[:2]
            for j, (rows, cols, crop) in enumerate(photo_crops(h, w, n, cfg.grids, cfg.raw_patch, seed, photo)):
                name = f"{prefix[role]}{k:03d}" + (f"c{j}" if j else "")
                plans.append(ScenePlan(name, role, photo, rows, cols, crop, j))
    return plans


def _write_scene(root: Path, plan: ScenePlan, photo_rgb: np.ndarray, cfg: DatasetConfig, sensor: Sensor,
                 look: PhoneLook, seed: int) -> tuple[dict[str, Any], dict[str, str]]:
    image = scene_image(photo_rgb, plan, cfg.raw_patch)
    files: dict[str, str] = {}

    def save(rel: str, write) -> None:
        path = root / rel
        write(path)
        files[rel] = sha256_file(path)

    record: dict[str, Any] = {
        "scene": plan.scene, "role": plan.role, "photo_id": plan.photo.id, "group": plan.photo.group,
        "source": plan.photo.source, "licence": plan.photo.licence, "attribution": plan.photo.attribution,
        "photo_sha256": sha256_file(plan.photo.path), "rows": plan.rows, "cols": plan.cols,
        "crop": list(plan.crop), "crop_index": plan.index, "photo_size": list(photo_rgb.shape[:2]),
        "rgb_size": list(image.shape[:2]),
    }
    rendered = to_uint8(render_look(image, look))
    if plan.role == "target":
        for idx, tile in enumerate(cut_grid(rendered, plan.rows, plan.cols)):
            save(f"train/jpegs/{plan.scene}_{idx}.jpg", lambda p, t=tile: _save_image(p, t, "JPEG", cfg.jpeg_quality))
        return record, files
    split = "train" if plan.role == "source" else "test"
    capture = sample_capture(_scene_rng(seed, plan, 1))
    raw, _ = synthesize_raw(image, sensor, capture, _scene_rng(seed, plan, 2))
    record["capture"] = capture.to_dict()
    for idx, (raw_tile, gt_tile) in enumerate(zip(cut_grid(raw, plan.rows, plan.cols),
                                                  cut_grid(rendered, plan.rows, plan.cols))):
        save(f"{split}/raws/{plan.scene}_{idx}.npy", lambda p, t=raw_tile: atomic_save_npy(p, t))
        save(f"{split}/gt/{plan.scene}_{idx}.png", lambda p, t=gt_tile: _save_image(p, t, "PNG"))
    return record, files


def _save_image(path: Path, array: np.ndarray, fmt: str, quality: int | None = None) -> None:
    import io

    buf = io.BytesIO()
    kwargs = {"quality": quality, "subsampling": 0} if quality else {}
    Image.fromarray(array).save(buf, format=fmt, **kwargs)
    atomic_write_bytes(path, buf.getvalue())


def raw_preview(raw: np.ndarray) -> np.ndarray:
    """A simple look at packed RAW: R, mean G, B at half resolution, exposure-normalised, gamma 2.2."""
    rgb = np.stack([raw[..., 0], (raw[..., 1].astype(np.float64) + raw[..., 2]) / 2, raw[..., 3]], -1)
    rgb = rgb / max(np.percentile(rgb, 99), 1.0)
    return to_uint8(np.clip(rgb, 0, 1) ** (1 / 2.2))


def write_contact_sheet(root: Path, records: list[dict[str, Any]], raw_patch: int, thumb: int = 160,
                        per_row: int = 6) -> str:
    """One PNG showing every scene: source RAW (simple preview), target JPEGs, test RAW and ground truth."""
    from PIL import ImageDraw

    def stitched(folder: str, scene: str, rows: int, cols: int, ext: str) -> np.ndarray:
        paths = [root / folder / f"{scene}_{idx}{ext}" for idx in range(rows * cols)]
        tiles = [np.load(p) if ext == ".npy" else np.asarray(Image.open(p).convert("RGB")) for p in paths]
        full = np.concatenate([np.concatenate(tiles[r * cols:(r + 1) * cols], axis=1) for r in range(rows)], axis=0)
        return raw_preview(full) if ext == ".npy" else full

    sections: list[tuple[str, list[tuple[str, np.ndarray]]]] = [
        ("source domain: train/raws (simple preview: R, mean G, B, gamma 2.2)", []),
        ("target domain: train/jpegs (target phone look)", []),
        ("test: test/raws (preview) | test/gt (ground truth)", []),
    ]
    for rec in records:
        r, c, s = rec["rows"], rec["cols"], rec["scene"]
        if rec["role"] == "source":
            sections[0][1].append((s, stitched("train/raws", s, r, c, ".npy")))
        elif rec["role"] == "target":
            sections[1][1].append((s, stitched("train/jpegs", s, r, c, ".jpg")))
        else:
            sections[2][1].append((s + " raw", stitched("test/raws", s, r, c, ".npy")))
            sections[2][1].append((s + " gt", stitched("test/gt", s, r, c, ".png")))
    cell, label_h = thumb + 8, 14
    height = sum(label_h + math.ceil(len(items) / per_row) * (cell + label_h) for _, items in sections if items)
    sheet = Image.new("RGB", (per_row * cell, height + 8), (32, 32, 32))
    draw = ImageDraw.Draw(sheet)
    y = 4
    for title, items in sections:
        if not items:
            continue
        draw.text((4, y), title, fill=(255, 255, 160))
        y += label_h
        for k, (name, img) in enumerate(items):
            tile = Image.fromarray(img)
            tile.thumbnail((thumb, thumb), Image.Resampling.LANCZOS)
            x0, y0 = (k % per_row) * cell + 4, y + (k // per_row) * (cell + label_h)
            sheet.paste(tile, (x0, y0))
            draw.text((x0, y0 + tile.height + 1), name, fill=(220, 220, 220))
        y += math.ceil(len(items) / per_row) * (cell + label_h)
    _save_image(root / CONTACT_SHEET, np.asarray(sheet), "PNG")
    return CONTACT_SHEET


def verify_manifest(root: str | Path) -> list[str]:
    """Files whose sha256 differs from the manifest, or that are missing (empty list: all good)."""
    root = Path(root)
    manifest = json.loads((root / MANIFEST).read_text())
    bad = []
    for rel, digest in manifest["files"].items():
        path = root / rel
        if not path.is_file():
            bad.append(f"{rel}: missing")
        elif sha256_file(path) != digest:
            bad.append(f"{rel}: checksum mismatch")
    return bad
