"""Atomic, checksummed artifacts: a killed run never leaves a half-written file or folder."""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from .io import DataError


_PROC_STATUS = "/proc/self/status"


def current_umask() -> int:
    """The process's umask, read from ``/proc/self/status`` on Linux.

    Elsewhere it is set and put back (``os.umask`` has no read-only form): a thread
    creating files in between gets them with umask ``0o077``, private rather than open.
    """
    try:
        with open(_PROC_STATUS, encoding="ascii") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o077)
    os.umask(mask)
    return mask


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a regular file, read in chunks; anything else (a FIFO, a link to ``/dev/zero``, which
    would block or never end) is an :class:`~isp_support.io.UnreadableFileError`."""
    from .io import require_regular_file

    require_regular_file(path)
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to a temporary file beside ``path``, fsync it, then rename it into place.

    The file gets the mode a plain ``open(path, "w")`` gives a new file (``0o666`` less the umask),
    not the temporary file's ``0o600``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            os.chmod(tmp, 0o666 & ~current_umask())
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return path


def atomic_write_json(path: str | os.PathLike, obj: Any) -> Path:
    text = json.dumps(obj, indent=2, sort_keys=True, default=_json_default) + "\n"
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_save_npy(path: str | os.PathLike, array: np.ndarray) -> Path:
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(array), allow_pickle=False)
    return atomic_write_bytes(path, buf.getvalue())


class ForeignFolderError(DataError):
    """An output path holds something the command did not make: it is never replaced."""


@contextlib.contextmanager
def atomic_directory(final: str | os.PathLike, overwrite: bool = False,
                     owned: Callable[[Path], set[str] | None] | None = None,
                     made_by: str = "this command") -> Iterator[Path]:
    """Build a folder under a temporary name and rename it to ``final`` only on success.

    A crash inside the ``with`` block leaves ``final`` untouched (and the temporary
    folder removed). With ``overwrite`` an existing ``final`` is replaced only after
    the new one is complete, and only if it is an empty folder or one that ``made_by`` made and that holds
    nothing else: ``owned(final)`` gives the files (relative paths) its record says it made, ``None`` if it has
    no such record. A file, a folder of someone else's (a run, photos) or one with a user's files added is a
    :class:`ForeignFolderError` before anything is deleted. The folder gets the mode a plain ``os.mkdir`` gives
    (``0o777`` less the umask), not the temporary folder's ``0o700``.
    """
    final = Path(final)
    if final.exists() or final.is_symlink():
        if not overwrite:
            raise FileExistsError(f"{final} already exists")
        require_replaceable(final, owned, made_by)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.partial-", dir=final.parent))
    try:
        os.chmod(tmp, 0o777 & ~current_umask())
        yield tmp
        if final.exists():
            old = final.with_name(f".{final.name}.old-{os.getpid()}")
            os.replace(final, old)
            os.replace(tmp, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def require_replaceable(final: Path, owned: Callable[[Path], set[str] | None] | None, made_by: str) -> None:
    """Whether :func:`atomic_directory` may replace ``final`` (see there); else a :class:`ForeignFolderError`.
    Commands call it before their work too, so that a refused output costs nothing."""
    if final.is_symlink() or not final.is_dir():
        raise ForeignFolderError(final, "exists and is not a folder; it is left as it is: choose another output "
                                        "path or remove it yourself")
    try:
        present = {str(p.relative_to(final)) for p in final.rglob("*") if not p.is_dir()}
    except OSError as exc:
        raise ForeignFolderError(final, f"cannot be listed ({exc.strerror or exc}); it is left as it is") from None
    if not present or owned is None:
        return
    made = owned(final)
    if made is None:
        raise ForeignFolderError(final, f"exists and was not made by {made_by}, so it is not replaced (nothing "
                                        f"in it is deleted): choose another output folder or remove it yourself")
    extra = sorted(present - made)
    if extra:
        raise ForeignFolderError(final, f"holds {len(extra)} file(s) {made_by} did not make (first: {extra[0]}), "
                                        f"so it is not replaced: move them out or choose another output folder")


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"cannot serialise {type(obj).__name__} to JSON")
