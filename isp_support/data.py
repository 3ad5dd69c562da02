"""Reading and validating the NTIRE 2026 unpaired-ISP data layout.

Layout (``<split>`` is ``train``, ``val``, ``test``, ...)::

    <root>/<split>/raws/<scene>_<idx>.npy   (H, W, 4) values in [0, 1023]; channels R, Gr, Gb, B
    <root>/train/jpegs/<scene>_<idx>.jpg    (2H, 2W, 3) sRGB: the unpaired target domain
    <root>/<split>/gt/<scene>_<idx>.png     optional ground truth for the RAW patch of the same name

Patches of a scene are in row-major order of the integer ``idx`` (``scene_10``
comes after ``scene_9``, never after ``scene_1``). ``<scene>`` may itself
contain underscores: the index is what follows the last one.

Every problem is a :class:`DataError` subclass that names the file (or folder)
and what is wrong. :func:`validate_dataset` collects all of them at once;
:func:`open_dataset` raises the first.
"""

from __future__ import annotations

import re
import warnings
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

RAW_MAX = 1023
RAW_CHANNELS = ("R", "Gr", "Gb", "B")
RAW_EXT, JPEG_EXT, GT_EXT = ".npy", ".jpg", ".png"
_ACCEPTED_RAW_KINDS = "uif"  # unsigned, signed integer, float
_NAME = re.compile(r"^(?P<scene>.+)_(?P<idx>\d+)$")


# --- errors ------------------------------------------------------------------

class DataError(Exception):
    """Bad input. ``path`` is the offending file or folder, ``problem`` says what is wrong."""

    def __init__(self, path: str | Path, problem: str):
        self.path = Path(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")


class MissingFolderError(DataError):
    """A required folder does not exist or is empty."""


class UnreadableFileError(DataError):
    """A file cannot be decoded: corrupt, truncated or not the format its extension says."""


class ShapeError(DataError):
    """An array or image has the wrong shape or number of channels."""


class DtypeError(DataError):
    """An array has a dtype that cannot hold 10-bit RAW values."""


class RangeError(DataError):
    """RAW values outside [0, 1023]."""


class NonFiniteError(DataError):
    """NaN or infinity in a RAW array."""


class SceneIndexError(DataError):
    """A bad file name, or a scene with duplicate or missing patch indices."""


class NoTargetDomainError(DataError):
    """Training RAWs exist but no target-domain JPEGs to learn from."""


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


# --- single files ----------------------------------------------------------------

def natural_key(name: str) -> tuple:
    """Sort key that orders embedded numbers numerically (``s2`` before ``s10``)."""
    return tuple(int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name))


def parse_patch_name(path: str | Path) -> tuple[str, int]:
    """``.../<scene>_<idx>.<ext>`` -> ``(scene, idx)``; raises :class:`SceneIndexError`."""
    path = Path(path)
    match = _NAME.match(path.stem)
    if not match:
        raise SceneIndexError(path, "file name does not follow <scene>_<idx> with an integer idx")
    return match["scene"], int(match["idx"])


def read_raw(path: str | Path, check_values: bool = True) -> np.ndarray:
    """Load one packed RAW patch ``(H, W, 4)`` as stored, after checking it.

    Raises :class:`UnreadableFileError`, :class:`DtypeError`, :class:`ShapeError`,
    :class:`NonFiniteError` or :class:`RangeError`, each naming ``path``.
    """
    path = Path(path)
    if not path.is_file():
        raise UnreadableFileError(path, "file does not exist")
    try:
        with open(path, "rb") as fh:
            major, _ = np.lib.format.read_magic(fh)
            read_header = np.lib.format.read_array_header_1_0 if major == 1 else np.lib.format.read_array_header_2_0
            shape, _, dtype = read_header(fh)
    except (ValueError, OSError, EOFError) as exc:
        raise UnreadableFileError(path, f"not a .npy file (bad or missing NumPy header): {exc}") from exc
    if dtype.hasobject:
        raise DtypeError(path, "holds Python objects (object dtype), expected a numeric array")
    if dtype.kind not in _ACCEPTED_RAW_KINDS or dtype.itemsize < 2:
        raise DtypeError(path, f"dtype {dtype} cannot hold 10-bit RAW values; expected uint16, int32 or float")
    if len(shape) != 3 or shape[2] != 4 or shape[0] < 1 or shape[1] < 1:
        raise ShapeError(path, f"shape {shape}, expected (H, W, 4) packed R, Gr, Gb, B")
    try:
        arr = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise UnreadableFileError(path, f"data shorter than its header says (truncated or corrupt): {exc}") from exc
    if check_values:
        if arr.dtype.kind == "f" and not np.isfinite(arr).all():
            raise NonFiniteError(path, f"{int((~np.isfinite(arr)).sum())} NaN or infinite values")
        lo, hi = arr.min(), arr.max()
        if lo < 0 or hi > RAW_MAX:
            raise RangeError(path, f"values span [{lo}, {hi}], expected 10-bit values in [0, {RAW_MAX}]")
    return arr


def read_rgb(path: str | Path) -> np.ndarray:
    """Load an sRGB JPEG/PNG patch as ``uint8 (H, W, 3)``; decodes the whole file so truncation is caught."""
    path = Path(path)
    if not path.is_file():
        raise UnreadableFileError(path, "file does not exist")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                img.load()
                mode, arr = img.mode, np.asarray(img)
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombWarning) as exc:
        raise UnreadableFileError(path, f"cannot decode image (truncated or corrupt): {exc}") from exc
    if mode != "RGB":
        raise ShapeError(path, f"image mode {mode} with shape {arr.shape}, expected 3-channel RGB")
    return arr


def image_size(path: Path) -> tuple[int, int]:
    """``(H, W)`` of an image from its header only."""
    with Image.open(path) as img:
        return img.height, img.width


# --- folders and scenes --------------------------------------------------------

def scan_patches(folder: Path, ext: str, problems: list[DataError]) -> dict[str, Scene]:
    """Group ``<scene>_<idx><ext>`` files by scene, sorted by integer index.

    Bad names, duplicate indices (``s_1`` and ``s_01``) and gaps are appended to
    ``problems``; a scene with such a problem is left out of the result.
    """
    by_scene: dict[str, list[Patch]] = defaultdict(list)
    for path in sorted(folder.iterdir()):
        if path.name.startswith(".") or path.is_dir():
            continue
        if path.suffix.lower() != ext:
            problems.append(SceneIndexError(path, f"unexpected file type {path.suffix!r} in {folder.name}/, expected {ext}"))
            continue
        try:
            scene, idx = parse_patch_name(path)
        except SceneIndexError as exc:
            problems.append(exc)
            continue
        by_scene[scene].append(Patch(scene, idx, path))
    scenes: dict[str, Scene] = {}
    for name in sorted(by_scene, key=natural_key):
        patches = sorted(by_scene[name], key=lambda p: p.idx)
        idxs = [p.idx for p in patches]
        dup = sorted({i for i in idxs if idxs.count(i) > 1})
        if dup:
            files = ", ".join(p.path.name for p in patches if p.idx in dup)
            problems.append(SceneIndexError(folder / f"{name}_*{ext}", f"scene {name!r} has duplicate indices {dup} ({files})"))
            continue
        start = 0 if idxs[0] == 0 else 1
        missing = sorted(set(range(start, idxs[-1] + 1)) - set(idxs))
        if missing:
            problems.append(SceneIndexError(
                folder / f"{name}_*{ext}",
                f"scene {name!r} is missing indices {missing[:20]}{' ...' if len(missing) > 20 else ''} "
                f"(has {len(idxs)} patches, {idxs[0]}..{idxs[-1]})"))
            continue
        scenes[name] = Scene(name, tuple(patches))
    return scenes


def _scan_split(root: Path, split: str, problems: list[DataError]) -> Split | None:
    base = root / split
    raws_dir = base / "raws"
    if not raws_dir.is_dir():
        problems.append(MissingFolderError(raws_dir, "missing folder: every split needs raws/"))
        return None
    n_before = len(problems)
    raws = scan_patches(raws_dir, RAW_EXT, problems)
    if not raws and len(problems) == n_before:
        problems.append(MissingFolderError(raws_dir, "holds no <scene>_<idx>.npy RAW patches"))
    jpegs: dict[str, Scene] = {}
    if (base / "jpegs").is_dir():
        jpegs = scan_patches(base / "jpegs", JPEG_EXT, problems)
    gt: dict[str, Scene] = {}
    if (base / "gt").is_dir():
        gt = scan_patches(base / "gt", GT_EXT, problems)
        raw_ids = {p.id for s in raws.values() for p in s.patches}
        for scene in gt.values():
            for p in scene.patches:
                if p.id not in raw_ids:
                    problems.append(SceneIndexError(p.path, f"ground truth without a RAW patch {p.id}{RAW_EXT} in raws/"))
    return Split(split, raws, jpegs, gt)


def _check_contents(split: Split, problems: list[DataError], check_values: bool) -> None:
    raw_shapes: dict[str, tuple[int, int]] = {}
    for patch in split.raw_patches():
        try:
            arr = read_raw(patch.path, check_values=check_values)
            raw_shapes[patch.id] = arr.shape[:2]
        except DataError as exc:
            problems.append(exc)
    sizes = set(raw_shapes.values())
    uniform = next(iter(sizes)) if len(sizes) == 1 else None
    for patch in split.jpeg_patches():
        try:
            arr = read_rgb(patch.path)
        except DataError as exc:
            problems.append(exc)
            continue
        if uniform and arr.shape[:2] != (2 * uniform[0], 2 * uniform[1]):
            problems.append(ShapeError(patch.path, f"shape {arr.shape}, expected (2H, 2W, 3) = "
                                                   f"({2 * uniform[0]}, {2 * uniform[1]}, 3) to match the RAW patches"))
    for scene in split.gt.values():
        for patch in scene.patches:
            try:
                arr = read_rgb(patch.path)
            except DataError as exc:
                problems.append(exc)
                continue
            hw = raw_shapes.get(patch.id)
            if hw and arr.shape[:2] != (2 * hw[0], 2 * hw[1]):
                problems.append(ShapeError(patch.path, f"shape {arr.shape}, expected ({2 * hw[0]}, {2 * hw[1]}, 3): "
                                                       f"twice its RAW patch {patch.id}{RAW_EXT}"))


def validate_dataset(root: str | Path, check_values: bool = True) -> list[DataError]:
    """Every problem in a challenge-format folder, as a list (empty when the folder is valid).

    Structure (folders, names, indices, the target domain) is always checked;
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
    split_names = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")
                         and (p.name == "train" or (p / "raws").is_dir()))
    splits = [s for name in split_names if (s := _scan_split(root, name, problems)) is not None]
    for split in splits:
        if split.name == "train" and split.raws and not split.jpegs:
            jpeg_dir = root / "train" / "jpegs"
            problems.append(NoTargetDomainError(
                jpeg_dir, f"{len(split.raw_patches())} training RAW patches but no target-domain JPEGs "
                          f"({'empty folder' if jpeg_dir.is_dir() else 'missing folder'})"))
        if check_values:
            _check_contents(split, problems, check_values)
    return problems


def open_dataset(root: str | Path, check_values: bool = False) -> ChallengeDataset:
    """Index a challenge-format folder; raises the first problem found (see :func:`validate_dataset`)."""
    root = Path(root)
    problems = validate_dataset(root, check_values=check_values)
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
    """Human-readable report of :func:`validate_dataset`'s result."""
    if not problems:
        return f"{root}: OK"
    lines = [f"{root}: {len(problems)} problem(s)"]
    lines += [f"  [{type(p).__name__}] {p.path}: {p.problem}" for p in problems]
    return "\n".join(lines)
