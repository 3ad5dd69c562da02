"""Reading and validating the NTIRE 2026 unpaired-ISP data layout.

Layout (``<split>`` is ``train``, ``val``, ``test``, ...)::

    <root>/<split>/raws/<scene>_<idx>.npy   (H, W, 4) values in [0, 1023]; channels R, Gr, Gb, B
    <root>/train/jpegs/<scene>_<idx>.jpg    (2H, 2W, 3) sRGB: the unpaired target domain
    <root>/<split>/gt/<scene>_<idx>.png     optional ground truth for the RAW patch of the same name

Patches of a scene are in row-major order of the integer ``idx`` (``scene_10``
comes after ``scene_9``, never after ``scene_1``). ``<scene>`` may itself
contain underscores: the index is what follows the last one.

Every problem is a :class:`~isp_support.io.DataError` subclass that names the file (or folder)
and what is wrong. :func:`validate_dataset` collects all of them at once;
:func:`open_dataset` raises the first error. A :class:`DataWarning` marks input
that is readable but probably not what was meant (a PNG named ``.jpg``, a 16-bit
ground truth read at 8 bits, float RAWs with fractions); it is reported, not fatal.

Each file is read by :mod:`isp_support.io`, whose errors (:class:`~isp_support.io.DataError` and the
file-level subclasses) this module's layout errors extend.
"""

from __future__ import annotations

import os
import re
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .io import (RAW_MAX, DataError, DecodedImage, ShapeError, decode_rgb, printable, read_raw,
                 require_regular_file)

RAW_CHANNELS = ("R", "Gr", "Gb", "B")
RAW_EXT, JPEG_EXT, GT_EXT = ".npy", ".jpg", ".png"
_NAME = re.compile(r"(?P<scene>.+)_(?P<idx>[0-9]+)", re.DOTALL)  # [0-9]: int() also reads Arabic-Indic digits
MAX_INDEX_DIGITS = 18
_EXPECTED_FORMAT = {JPEG_EXT: "JPEG", GT_EXT: "PNG"}


# --- errors ------------------------------------------------------------------

class DataWarning(DataError):
    """Readable input that is probably not what was meant; reported by ``validate``, never fatal."""


class MissingFolderError(DataError):
    """A required folder does not exist or is empty."""


class SceneIndexError(DataError):
    """A bad file name, or a scene with duplicate or missing patch indices."""


class NoTargetDomainError(DataError):
    """Training RAWs exist but no target-domain JPEGs to learn from."""


def errors(problems: list[DataError]) -> list[DataError]:
    """The problems of :func:`validate_dataset` that are errors (everything but :class:`DataWarning`)."""
    return [p for p in problems if not isinstance(p, DataWarning)]


# --- records -------------------------------------------------------------------

@dataclass(frozen=True)
class Patch:
    scene: str
    idx: int
    path: Path

    @property
    def id(self) -> str:
        """Stable identifier ``<scene>_<idx>`` (independent of list positions)."""
        return f"{self.scene}_{self.idx}"


@dataclass(frozen=True)
class Scene:
    name: str
    patches: tuple[Patch, ...]
    """Sorted by integer index: row-major order."""

    def __len__(self) -> int:
        return len(self.patches)


@dataclass(frozen=True)
class Split:
    name: str
    raws: dict[str, Scene]
    jpegs: dict[str, Scene] = field(default_factory=dict)
    gt: dict[str, Scene] = field(default_factory=dict)

    def raw_patches(self) -> list[Patch]:
        return [p for s in self.raws.values() for p in s.patches]

    def jpeg_patches(self) -> list[Patch]:
        return [p for s in self.jpegs.values() for p in s.patches]


@dataclass(frozen=True)
class ChallengeDataset:
    root: Path
    splits: dict[str, Split]

    def __getitem__(self, split: str) -> Split:
        if split not in self.splits:
            raise MissingFolderError(self.root / split / "raws", f"no split {split!r} in this dataset")
        return self.splits[split]


# --- names -----------------------------------------------------------------------

def natural_key(name: str) -> tuple:
    """Sort key that orders embedded numbers numerically (``s2`` before ``s10``)."""
    return tuple(int(t) if t.isascii() and t.isdigit() else t for t in re.split(r"([0-9]+)", name))


def parse_patch_name(path: str | Path) -> tuple[str, int]:
    """``.../<scene>_<idx>.<ext>`` -> ``(scene, idx)``; raises :class:`SceneIndexError`."""
    path = Path(path)
    match = _NAME.fullmatch(path.stem)
    if not match:
        raise SceneIndexError(path, "file name does not follow <scene>_<idx> with an integer idx")
    if len(match["idx"]) > MAX_INDEX_DIGITS:
        raise SceneIndexError(path, f"index has {len(match['idx'])} digits, at most {MAX_INDEX_DIGITS} allowed")
    return match["scene"], int(match["idx"])


# --- folders and scenes --------------------------------------------------------

def scan_patches(folder: Path, ext: str, problems: list[DataError], ids: set[str] | None = None) -> dict[str, Scene]:
    """Group ``<scene>_<idx><ext>`` files by scene, sorted by integer index.

    Bad names, files that are not regular files, duplicate indices (``s_1`` and
    ``s_01``) and gaps are appended to ``problems``; a scene with such a problem
    is left out of the result. ``ids`` collects the id of every well-named file,
    including those of scenes left out.
    """
    by_scene: dict[str, list[Patch]] = defaultdict(list)
    unreadable: set[str] = set()  # scenes with a file that is not a regular file: reported once, left out
    try:
        listing = sorted(folder.iterdir())
    except OSError as exc:
        problems.append(MissingFolderError(folder, f"cannot be listed: {exc.strerror or exc}"))
        return {}
    for path in listing:
        if path.name.startswith(".") or path.is_dir():
            continue
        try:
            if path.suffix.lower() != ext:
                raise SceneIndexError(path, f"unexpected file type {path.suffix!r} in {folder.name}/, expected {ext}")
            scene, idx = parse_patch_name(path)
        except DataError as exc:
            problems.append(exc)
            continue
        if ids is not None:
            ids.add(f"{scene}_{idx}")
        try:
            require_regular_file(path)
        except DataError as exc:
            problems.append(exc)
            unreadable.add(scene)
            continue
        by_scene[scene].append(Patch(scene, idx, path))
    scenes: dict[str, Scene] = {}
    for name in sorted(set(by_scene) - unreadable, key=natural_key):
        patches = tuple(sorted(by_scene[name], key=lambda p: p.idx))
        problem = _index_problem(name, [p.idx for p in patches], patches)
        if problem:
            problems.append(SceneIndexError(folder / f"{name}_*{ext}", problem))
        else:
            scenes[name] = Scene(name, patches)
    return scenes


def _index_problem(name: str, idxs: list[int], patches: tuple[Patch, ...], shown: int = 20) -> str | None:
    """What is wrong with a scene's sorted indices (duplicates, gaps), or ``None``; never builds the full range."""
    dup = sorted(i for i, n in Counter(idxs).items() if n > 1)
    if dup:
        files = ", ".join(p.path.name for p in patches if p.idx in dup)
        return f"scene {name!r} has duplicate indices {dup} ({files})"
    start = 0 if idxs[0] == 0 else 1
    n_missing = idxs[-1] - start + 1 - len(idxs)
    if not n_missing:
        return None
    first: list[int] = []
    for lo, hi in zip([start - 1] + idxs, idxs):
        first.extend(range(lo + 1, min(hi, lo + 1 + shown - len(first))))
        if len(first) >= shown:
            break
    more = " ..." if n_missing > len(first) else ""
    return (f"scene {name!r} is missing indices {first}{more} ({n_missing} missing indices; "
            f"has {len(idxs)} patches, {idxs[0]}..{idxs[-1]})")


def _sub_folder(base: Path, name: str, problems: list[DataError], required: bool) -> Path | None:
    """``base/name`` when it is a folder; a missing required one or a non-folder is a problem."""
    folder = base / name
    if folder.is_dir():
        return folder
    if os.path.lexists(folder):
        problems.append(MissingFolderError(folder, f"{name}/ is not a folder"))
    elif required:
        problems.append(MissingFolderError(folder, "missing folder: every split needs raws/"))
    return None


def _scan_split(root: Path, split: str, problems: list[DataError]) -> Split | None:
    base = root / split
    raws_dir = _sub_folder(base, "raws", problems, required=True)
    if raws_dir is None:
        return None
    n_before, raw_ids = len(problems), set()
    raws = scan_patches(raws_dir, RAW_EXT, problems, raw_ids)
    if not raws and len(problems) == n_before:
        problems.append(MissingFolderError(raws_dir, "holds no <scene>_<idx>.npy RAW patches"))
    jpeg_dir = _sub_folder(base, "jpegs", problems, required=False)
    jpegs = scan_patches(jpeg_dir, JPEG_EXT, problems) if jpeg_dir else {}
    gt_dir = _sub_folder(base, "gt", problems, required=False)
    gt = scan_patches(gt_dir, GT_EXT, problems) if gt_dir else {}
    for scene in gt.values():
        for p in scene.patches:
            if p.id not in raw_ids:
                problems.append(SceneIndexError(p.path, f"ground truth without a RAW patch {p.id}{RAW_EXT} in raws/"))
    return Split(split, raws, jpegs, gt)


def _raw_warnings(path: Path, arr: np.ndarray) -> list[DataWarning]:
    if arr.dtype.kind == "f" and not np.array_equal(arr, np.round(arr)):
        return [DataWarning(path, f"float RAW with fractional values (dtype {arr.dtype}, values up to "
                                  f"{float(arr.max()):g}); challenge RAWs hold integers in [0, {RAW_MAX}]")]
    return []


def _image_warnings(path: Path, image: DecodedImage) -> list[DataWarning]:
    found = []
    expected = _EXPECTED_FORMAT.get(path.suffix.lower())
    if expected and image.format != expected:
        found.append(DataWarning(path, f"holds a {image.format} image under a {path.suffix} name "
                                       f"(expected {expected})"))
    if image.bit_depth > 8:
        found.append(DataWarning(path, f"{image.bit_depth}-bit PNG: it is read at 8 bits per channel"))
    return found


def _check_images(patches: list[Patch], problems: list[DataError], expected_hw) -> None:
    """Decode every image; ``expected_hw(patch)`` is ``((H, W), why)`` or ``None`` when any size will do."""
    for patch in patches:
        try:
            image = decode_rgb(patch.path)
        except DataError as exc:
            problems.append(exc)
            continue
        problems.extend(_image_warnings(patch.path, image))
        expected = expected_hw(patch)
        if expected and image.rgb.shape[:2] != expected[0]:
            (h, w), why = expected
            problems.append(ShapeError(patch.path, f"shape {image.rgb.shape}, expected ({h}, {w}, 3): {why}"))


def _check_contents(split: Split, problems: list[DataError], check_values: bool) -> None:
    raw_shapes: dict[str, tuple[int, int]] = {}
    for patch in split.raw_patches():
        try:
            arr = read_raw(patch.path, check_values=check_values)
        except DataError as exc:
            problems.append(exc)
            continue
        raw_shapes[patch.id] = arr.shape[:2]
        problems.extend(_raw_warnings(patch.path, arr))
    sizes = set(raw_shapes.values())
    if len(sizes) == 1:
        (h, w), = sizes
        _check_images(split.jpeg_patches(), problems, lambda p: ((2 * h, 2 * w), "(2H, 2W) to match the RAW patches"))
    else:
        _check_images(split.jpeg_patches(), problems, lambda p: None)

    def twice_its_raw(patch: Patch):
        hw = raw_shapes.get(patch.id)
        return ((2 * hw[0], 2 * hw[1]), f"twice its RAW patch {patch.id}{RAW_EXT}") if hw else None
    _check_images([p for scene in split.gt.values() for p in scene.patches], problems, twice_its_raw)


def _looks_like_split(folder: Path) -> bool:
    """``train/``, or a folder holding any of ``raws``, ``jpegs``, ``gt`` (so a split without raws/ is reported)."""
    if folder.name.startswith(".") or not folder.is_dir():
        return False
    return folder.name == "train" or any(os.path.lexists(folder / sub) for sub in ("raws", "jpegs", "gt"))


def validate_dataset(root: str | Path, check_values: bool = True) -> list[DataError]:
    """Every problem in a challenge-format folder, as a list (empty when the folder is valid).

    The list holds errors and :class:`DataWarning` s (see :func:`errors`). Structure (folders, names, indices, the target domain) is always checked;
    ``check_values`` also decodes every file and checks shapes, dtypes and ranges.
    Nothing is written.
    """
    root = Path(root)
    problems: list[DataError] = []
    if not root.is_dir():
        return [MissingFolderError(root, "dataset folder does not exist")]
    train = root / "train"
    if not train.is_dir():
        problems.append(MissingFolderError(train, "missing folder: a dataset needs train/ with raws/ and jpegs/"))
    try:
        split_names = sorted(p.name for p in root.iterdir() if _looks_like_split(p))
    except OSError as exc:
        return [MissingFolderError(root, f"dataset folder cannot be listed: {exc.strerror or exc}")]
    splits = [s for name in split_names if (s := _scan_split(root, name, problems)) is not None]
    jpeg_dir = root / "train" / "jpegs"
    for split in splits:
        if split.name == "train" and split.raws and not split.jpegs and all(p.path != jpeg_dir for p in problems):
            problems.append(NoTargetDomainError(
                jpeg_dir, f"{len(split.raw_patches())} training RAW patches but no target-domain JPEGs "
                          f"({'empty folder' if jpeg_dir.is_dir() else 'missing folder'})"))
        if check_values:
            _check_contents(split, problems, check_values)
    return problems


def open_dataset(root: str | Path, check_values: bool = False) -> ChallengeDataset:
    """Index a challenge-format folder; raises the first error found (see :func:`validate_dataset`).

    Warnings do not stop it; ``isp-support validate`` lists them.
    """
    root = Path(root)
    problems = errors(validate_dataset(root, check_values=check_values))
    if problems:
        first = problems[0]
        if len(problems) > 1:
            first.args = (f"{first.args[0]} (and {len(problems) - 1} more problem(s); "
                          f"run `isp-support validate {root}` for the full list)",)
        raise first
    splits = {}
    for name in sorted(p.name for p in root.iterdir() if p.is_dir() and (p / "raws").is_dir()):
        split = _scan_split(root, name, [])
        assert split is not None
        splits[name] = split
    return ChallengeDataset(root, splits)


def format_report(root: str | Path, problems: list[DataError]) -> str:
    """Human-readable report of :func:`validate_dataset`'s result, one line per problem.

    Control characters in names and messages are escaped (:func:`printable`), so
    every line of the report is one the report wrote.
    """
    n_errors = len(errors(problems))
    n_warnings = len(problems) - n_errors
    head = f"{n_errors} problem(s)" if n_errors else "OK"
    if n_warnings:
        head += f", {n_warnings} warning(s)"
    lines = [printable(f"{root}: {head}")]
    for p in problems:
        tag = "warning" if isinstance(p, DataWarning) else type(p).__name__
        lines.append("  " + printable(f"[{tag}] {p.path}: {p.problem}"))
    return "\n".join(lines)
