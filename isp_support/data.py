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
:func:`open_dataset` raises the first error. A :class:`DataWarning` marks input
that is readable but probably not what was meant (a PNG named ``.jpg``, a 16-bit
ground truth read at 8 bits, float RAWs with fractions); it is reported, not fatal.

Only regular files are read (a FIFO or a link to a device is refused before it
is opened for reading), and nothing is allocated from what a header claims
before the claim is checked against the file's size and :data:`MAX_RAW_PIXELS` /
:data:`MAX_RGB_PIXELS`.
"""

from __future__ import annotations

import os
import re
import stat
import warnings
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

RAW_MAX = 1023
RAW_CHANNELS = ("R", "Gr", "Gb", "B")
RAW_EXT, JPEG_EXT, GT_EXT = ".npy", ".jpg", ".png"
_ACCEPTED_RAW_KINDS = "uif"  # unsigned, signed integer, float
_NAME = re.compile(r"(?P<scene>.+)_(?P<idx>[0-9]+)", re.DOTALL)  # [0-9]: int() also reads Arabic-Indic digits
MAX_INDEX_DIGITS = 18
MAX_RGB_PIXELS = Image.MAX_IMAGE_PIXELS
"""Most pixels of an sRGB patch, stitched image or ground truth (PIL's decompression-bomb limit, ~89 MP)."""
MAX_RAW_PIXELS = MAX_RGB_PIXELS // 4
"""Most pixels ``H * W`` of a packed RAW patch, whose rendering has ``2H x 2W``."""
_EXPECTED_FORMAT = {JPEG_EXT: "JPEG", GT_EXT: "PNG"}


# --- errors ------------------------------------------------------------------

class DataError(Exception):
    """Bad input. ``path`` is the offending file or folder, ``problem`` says what is wrong."""

    def __init__(self, path: str | Path, problem: str):
        self.path = Path(path)
        self.problem = problem
        super().__init__(printable(f"{self.path}: {problem}"))


class DataWarning(DataError):
    """Readable input that is probably not what was meant; reported by ``validate``, never fatal."""


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


def errors(problems: list[DataError]) -> list[DataError]:
    """The problems of :func:`validate_dataset` that are errors (everything but :class:`DataWarning`)."""
    return [p for p in problems if not isinstance(p, DataWarning)]


def printable(text: str) -> str:
    """``text`` with control characters escaped, so a file name cannot forge lines of a report."""
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text)


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


def _file_kind(mode: int) -> str:
    kinds = ((stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"),
             (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"))
    return next((name for test, name in kinds if test(mode)), "a special file")


def require_regular_file(path: str | Path) -> os.stat_result:
    """``os.stat(path)`` of a regular file (links followed); anything else is an :class:`UnreadableFileError`.

    Call it before hashing or opening a file: opening a FIFO blocks, and a link to
    ``/dev/zero`` never ends.
    """
    path = Path(path)
    try:
        info = os.stat(path)
    except FileNotFoundError:
        problem = "broken symbolic link" if path.is_symlink() else "file does not exist"
        raise UnreadableFileError(path, problem) from None
    except OSError as exc:
        raise UnreadableFileError(path, f"cannot be read: {exc.strerror or exc}") from None
    if not stat.S_ISREG(info.st_mode):
        raise UnreadableFileError(path, f"not a regular file ({_file_kind(info.st_mode)}); only regular files are read")
    return info


def _npy_header(path: Path, file_size: int) -> tuple[tuple[int, ...], np.dtype]:
    """Shape and dtype from a ``.npy`` header, after checking the data it claims is exactly what the file holds."""
    try:
        with open(path, "rb") as fh:
            major, _ = np.lib.format.read_magic(fh)
            read_header = np.lib.format.read_array_header_1_0 if major == 1 else np.lib.format.read_array_header_2_0
            shape, _, dtype = read_header(fh)
            offset = fh.tell()
    except (ValueError, OSError, EOFError) as exc:
        raise UnreadableFileError(path, f"not a .npy file (bad or missing NumPy header): {exc}") from exc
    if dtype.hasobject:
        raise DtypeError(path, "holds Python objects (object dtype), expected a numeric array")
    if dtype.kind not in _ACCEPTED_RAW_KINDS or dtype.itemsize < 2:
        raise DtypeError(path, f"dtype {dtype} cannot hold 10-bit RAW values; expected uint16, int32 or float")
    if len(shape) != 3 or shape[2] != 4 or shape[0] < 1 or shape[1] < 1:
        raise ShapeError(path, f"shape {shape}, expected (H, W, 4) packed R, Gr, Gb, B")
    if shape[0] * shape[1] > MAX_RAW_PIXELS:
        raise ShapeError(path, f"shape {shape}: RAW patches have at most {MAX_RAW_PIXELS} pixels (H x W)")
    claimed, held = int(np.prod(shape)) * dtype.itemsize, file_size - offset
    if held < claimed:
        raise UnreadableFileError(path, f"data shorter than its header says (truncated or corrupt): the header "
                                        f"claims {claimed} bytes of {dtype} {shape}, the file holds {held}")
    if held > claimed:
        raise UnreadableFileError(path, f"{held - claimed} bytes after the array its header describes "
                                        f"(two files joined, or corrupt)")
    return shape, dtype


def read_raw(path: str | Path, check_values: bool = True) -> np.ndarray:
    """Load one packed RAW patch ``(H, W, 4)`` as stored, after checking it.

    Raises :class:`UnreadableFileError`, :class:`DtypeError`, :class:`ShapeError`,
    :class:`NonFiniteError` or :class:`RangeError`, each naming ``path``. The
    header is checked against the file's size before any data is read.
    """
    path = Path(path)
    _npy_header(path, require_regular_file(path).st_size)
    try:
        arr = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise UnreadableFileError(path, f"cannot be read as a .npy array: {exc}") from exc
    if check_values:
        if arr.dtype.kind == "f" and not np.isfinite(arr).all():
            raise NonFiniteError(path, f"{int((~np.isfinite(arr)).sum())} NaN or infinite values")
        lo, hi = arr.min(), arr.max()
        if lo < 0 or hi > RAW_MAX:
            raise RangeError(path, f"values span [{lo}, {hi}], expected 10-bit values in [0, {RAW_MAX}]")
    return arr


@dataclass(frozen=True)
class DecodedImage:
    rgb: np.ndarray
    """``uint8 (H, W, 3)``."""
    format: str
    """What the bytes are (PIL's name: ``JPEG``, ``PNG``, ...), whatever the extension says."""
    bit_depth: int
    """Bits per channel in the file (16 for a 48-bit PNG, which is read at 8 bits)."""


def decode_rgb(path: str | Path) -> DecodedImage:
    """:func:`read_rgb` with the file's real format and bit depth, for :func:`validate_dataset`'s warnings."""
    path = Path(path)
    require_regular_file(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                img.load()
                mode, arr, fmt = img.mode, np.asarray(img), img.format or "unknown"
    except (Image.DecompressionBombWarning, Image.DecompressionBombError) as exc:
        raise ShapeError(path, f"refused before decoding: {exc} (images have at most {MAX_RGB_PIXELS} pixels)") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise UnreadableFileError(path, f"cannot decode image (truncated or corrupt): {exc}") from exc
    if mode != "RGB":
        raise ShapeError(path, f"image mode {mode} with shape {arr.shape}, expected 3-channel RGB")
    return DecodedImage(arr, fmt, _png_bit_depth(path) if fmt == "PNG" else 8)


def _png_bit_depth(path: Path) -> int:
    with open(path, "rb") as fh:
        fh.seek(24)  # 8-byte signature, IHDR length and type, width, height, then the bit depth
        return fh.read(1)[0]


def read_rgb(path: str | Path) -> np.ndarray:
    """Load an sRGB JPEG/PNG patch as ``uint8 (H, W, 3)``; decodes the whole file so truncation is caught."""
    return decode_rgb(path).rgb


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
    """Human-readable report of :func:`validate_dataset`'s result."""
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
