"""Reading one input file: each kind of file has one reader.

* :func:`read_raw`: a packed RAW patch ``(H, W, 4)`` (``.npy``), checked;
* :func:`read_rgb` (:func:`decode_rgb` with the file's format and bit depth): an sRGB JPEG/PNG as ``uint8``;
  :func:`read_rgb_tensor` / :func:`read_rgb_batch`: the same as float32 in [0, 1], channels first;
* :func:`read_preprocessed`: one stored result of the RAW pre-processing (``isp_support.pipeline.preprocess``);
* :func:`read_json`: a record or settings file, bounded in size and nesting.

Only regular files are read (a FIFO or a link to a device is refused before it
is opened for reading), and nothing is allocated from what a header claims
before the claim is checked against the file's size and :data:`MAX_RAW_PIXELS` /
:data:`MAX_RGB_PIXELS`. Every problem is a :class:`DataError` that names the file.
"""

from __future__ import annotations

import json
import os
import stat
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

if TYPE_CHECKING:
    import torch

RAW_MAX = 1023
_ACCEPTED_RAW_KINDS = "uif"  # unsigned, signed integer, float
MAX_RGB_PIXELS = Image.MAX_IMAGE_PIXELS
"""Most pixels of an sRGB patch, stitched image or ground truth (PIL's decompression-bomb limit, ~89 MP)."""
MAX_RAW_PIXELS = MAX_RGB_PIXELS // 4
"""Most pixels ``H * W`` of a packed RAW patch, whose rendering has ``2H x 2W``."""


# --- errors ------------------------------------------------------------------

class DataError(Exception):
    """Bad input. ``path`` is the offending file or folder, ``problem`` says what is wrong."""

    def __init__(self, path: str | Path, problem: str):
        self.path = Path(path)
        self.problem = problem
        super().__init__(printable(f"{self.path}: {problem}"))


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


def printable(text: str) -> str:
    """``text`` with control characters escaped, so a file name cannot forge lines of a report."""
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text)


# --- readers -------------------------------------------------------------------

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


MAX_JSON_BYTES = 64 << 20
"""Largest JSON record read (a run's records are kilobytes; the demo's largest, a patch index, a few MB)."""


def read_json(path: str | Path, max_bytes: int = MAX_JSON_BYTES) -> object:
    """The JSON value in ``path``. Not a regular file (a FIFO would block), larger than ``max_bytes``, unreadable,
    not UTF-8, not JSON or nested too deeply (Python's parser raises RecursionError) is an
    :class:`UnreadableFileError` naming the file."""
    size = require_regular_file(path).st_size
    if size > max_bytes:
        raise UnreadableFileError(path, f"{size:,} bytes, more than the {max_bytes:,} a JSON record may have")
    try:
        return json.loads(Path(path).read_bytes().decode("utf-8"))
    except OSError as exc:
        raise UnreadableFileError(path, f"cannot be read: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise UnreadableFileError(path, "not JSON (not UTF-8 text)") from None
    except json.JSONDecodeError as exc:
        raise UnreadableFileError(path, f"not JSON ({exc.msg} at line {exc.lineno}); truncated or damaged") from None
    except RecursionError:
        raise UnreadableFileError(path, "JSON nested too deeply to read") from None


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


def raw_shape(path: str | Path) -> tuple[int, ...]:
    """The shape of a packed RAW patch from its header alone, checked as :func:`read_raw` checks it (no data read)."""
    path = Path(path)
    return _npy_header(path, require_regular_file(path).st_size)[0]


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
    """:func:`read_rgb` with the file's real format and bit depth, for the warnings of
    :func:`isp_support.data.validate_dataset`."""
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


def read_rgb_tensor(path: str | Path) -> torch.Tensor:
    """:func:`read_rgb` as ``float32 (3, H, W)`` in [0, 1] (``uint8 / 255``)."""
    import torch

    return torch.from_numpy(read_rgb(path).transpose(2, 0, 1).astype(np.float32) / 255.0)


def read_rgb_batch(paths: Sequence[str | Path]) -> torch.Tensor:
    """:func:`read_rgb` of same-sized images as one ``float32 (N, 3, H, W)`` batch in [0, 1] (``uint8 / 255``)."""
    import torch

    return torch.from_numpy(np.stack([read_rgb(p) for p in paths])).permute(0, 3, 1, 2).float() / 255


def read_preprocessed(path: str | Path) -> np.ndarray:
    """One stored pre-processing result ``(3, 2H, 2W)``, in the stored dtype (float16 or float32)."""
    return np.load(path, allow_pickle=False)
