"""Training targets decoded once: every JPEG (or ``train/gt`` PNG) a run trains on, as one uint8 array on disk.

Decoding a 512 px JPEG costs a few milliseconds of CPU; training reads every target again each epoch, and at the
challenge's 13,421 targets that is what a GPU would wait on. :class:`DecodedTargets` decodes them once into
``RUN_DIR/cache/decoded/<key>.npy`` (``(N, H, W, 3)`` uint8, 10.5 GB at challenge scale, memory-mapped: the page
cache shares it between DataLoader workers) and serves each as ``float32 (3, H, W)`` in [0, 1], the very values
:func:`~isp_support.io.read_rgb_tensor` gives (``uint8 / 255`` in float32), so training is unchanged bit for bit.

The key hashes every file's path, size and modification time: a changed or replaced target makes a new array.
The array is written under a temporary name and renamed when complete. Targets of unequal sizes (another
layout) are not cached: :func:`DecodedTargets.build` returns ``None`` and training decodes each as before.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np
import torch

from ..io import read_rgb

__all__ = ["DecodedTargets"]


class DecodedTargets:
    """The decoded array of a set of target files, and each file's row in it."""

    def __init__(self, array_path: Path, rows: dict[Path, int]):
        self.array_path, self.rows = array_path, rows
        self._array: np.ndarray | None = None  # opened lazily, so each DataLoader worker maps it itself

    def __getstate__(self) -> dict:
        return {"array_path": self.array_path, "rows": self.rows, "_array": None}

    def tensor(self, path: Path) -> torch.Tensor:
        """The decoded file as ``float32 (3, H, W)`` in [0, 1]."""
        if self._array is None:
            self._array = np.load(self.array_path, mmap_mode="r")
        row = np.asarray(self._array[self.rows[Path(path)]])
        return torch.from_numpy(row.transpose(2, 0, 1).astype(np.float32) / 255.0)  # as read_rgb_tensor computes it

    @classmethod
    def build(cls, files: Iterable[Path], folder: Path, log: Callable[[str], None] = print) -> "DecodedTargets | None":
        """Decode ``files`` into ``folder`` (or reuse an identical earlier decoding); ``None`` when they differ in
        size, or there are none."""
        files = sorted({Path(f) for f in files})
        if not files:
            return None
        stats = [f.stat() for f in files]
        key = hashlib.sha256(json.dumps([(str(f), s.st_size, s.st_mtime_ns) for f, s in zip(files, stats)])
                             .encode()).hexdigest()[:24]
        path = folder / f"{key}.npy"
        rows = {f: i for i, f in enumerate(files)}
        if path.is_file():
            return cls(path, rows)
        first = read_rgb(files[0])
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / f".{key}.npy.partial-{os.getpid()}"
        try:
            out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=(len(files), *first.shape))
            for i, f in enumerate(files):
                rgb = first if i == 0 else read_rgb(f)
                if rgb.shape != first.shape:
                    log(f"[train] targets differ in size ({files[0].name} {first.shape}, {f.name} {rgb.shape}): "
                        f"each is decoded when read, not cached")
                    del out
                    tmp.unlink(missing_ok=True)
                    return None
                out[i] = rgb
            out.flush()
            del out
            os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        return cls(path, rows)
