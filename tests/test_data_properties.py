"""Property-based test of the data layer: random layouts with planted defects.

For every generated dataset, ``validate_dataset`` must return (never raise
anything, never hang, never allocate more than a bound) and report each planted
defect with its named error at its file; a dataset without defects is valid.
Each scene carries at most one defect, so no defect can hide another (a scene
with an index problem is left out before its files are decoded).
"""

import os
import struct
import tempfile
import threading
import tracemalloc
from pathlib import Path

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from isp_support import data as D
from isp_support.io import DataError, DtypeError, NonFiniteError, RangeError, ShapeError, UnreadableFileError

HW = (4, 6)  # every RAW patch; JPEGs and ground truth are (8, 12, 3)
ALLOC_BOUND = 64 << 20  # bytes of Python/NumPy allocations one validation may peak at
TIME_LIMIT = 30.0

# defect -> (where it goes, the error expected); "scene" defects name the scene's glob, others one file
RAW_DEFECTS = {
    "truncated": UnreadableFileError, "garbage": UnreadableFileError, "trailing": UnreadableFileError,
    "header_bomb": ShapeError, "shape": ShapeError, "dtype": DtypeError, "range": RangeError,
    "nan": NonFiniteError, "fifo": UnreadableFileError, "fraction": D.DataWarning,
    "bad_name": D.SceneIndexError, "extension": D.SceneIndexError,
}
SCENE_DEFECTS = {"gap": D.SceneIndexError, "duplicate": D.SceneIndexError, "huge_index": D.SceneIndexError}
EXTRA_FILES = ("bad_name", "extension")  # planted as one more file beside the scene's good ones
IMAGE_DEFECTS = {"truncated": UnreadableFileError, "garbage": UnreadableFileError, "gray": ShapeError,
                 "size": ShapeError, "other_format": D.DataWarning}

scene_names = st.text(st.sampled_from("abcxyz_-.0123456789 \u00e9\u4e2d\u00b2\u0663\n"), min_size=1, max_size=8).filter(
    lambda s: not s.startswith(".") and "/" not in s)


@st.composite
def layouts(draw):
    raw_scenes = draw(st.dictionaries(scene_names, st.tuples(
        st.integers(1, 5), st.sampled_from([None, *RAW_DEFECTS, *SCENE_DEFECTS]), st.sampled_from([0, 1])),
        min_size=1, max_size=5))
    jpegs = draw(st.lists(st.sampled_from([None, *IMAGE_DEFECTS]), min_size=1, max_size=4))
    gt = draw(st.sampled_from([None, *IMAGE_DEFECTS]))
    return raw_scenes, jpegs, gt


def _raw_bytes(defect, rng) -> np.ndarray:
    arrays = {"shape": np.zeros((*HW, 3), np.uint16), "dtype": np.zeros((*HW, 4), np.uint8),
              "range": np.full((*HW, 4), 1024, np.uint16), "nan": np.full((*HW, 4), np.nan, np.float32),
              "fraction": np.full((*HW, 4), 0.5, np.float32)}
    return arrays.get(defect, rng.integers(0, 1024, (*HW, 4), dtype=np.uint16))


def _write_raw(path: Path, defect, rng) -> Path:
    if defect == "fifo":
        os.mkfifo(path)
        return path
    if defect == "header_bomb":
        header = b"{'descr': '<f8', 'fortran_order': False, 'shape': (100000, 100000, 4), }"
        header += b" " * (-(10 + len(header) + 1) % 64) + b"\n"
        path.write_bytes(b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header + b"\0" * 64)
        return path
    np.save(path, _raw_bytes(defect, rng))
    data = path.read_bytes()
    corrupt = {"truncated": data[: len(data) // 2], "garbage": bytes(rng.integers(0, 256, 40, dtype=np.uint8)),
               "trailing": data + b"\0\1\2"}
    if defect in corrupt:
        path.write_bytes(corrupt[defect])
    return path


def _write_image(path: Path, defect, rng) -> Path:
    shape = {"gray": (8, 12), "size": (6, 12, 3)}.get(defect, (8, 12, 3))
    Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8)).save(
        path, format="PNG" if (defect == "other_format") != (path.suffix == ".png") else "JPEG")
    data = path.read_bytes()
    if defect == "truncated":
        path.write_bytes(data[: len(data) // 3])
    elif defect == "garbage":
        path.write_bytes(bytes(rng.integers(0, 256, 50, dtype=np.uint8)))
    return path


def build(root: Path, layout) -> set[tuple[str, type]]:
    """Write the layout under ``root``; the planted defects as ``(path, error class)``."""
    raw_scenes, jpegs, gt = layout
    rng = np.random.default_rng(0)
    planted: set[tuple[str, type]] = set()
    raws = root / "train" / "raws"
    raws.mkdir(parents=True)
    for i in range(2):  # a clean scene, so the JPEGs' size is always checked against readable RAWs
        np.save(raws / f"CLEAN_{i}.npy", np.zeros((*HW, 4), np.uint16))
    for scene, (n, defect, start) in raw_scenes.items():
        idxs = list(range(start, start + n))
        if defect == "gap":
            idxs = [start] + [i + 1 for i in idxs[1:]] + [start + n + 1]
        elif defect == "huge_index":
            idxs.append(10 ** 12)
        for k, i in enumerate(idxs):
            on_file = defect if k == 0 and defect in RAW_DEFECTS and defect not in EXTRA_FILES else None
            _write_raw(raws / f"{scene}_{i}.npy", on_file, rng)
        extra = {"duplicate": f"{scene}_0{start}.npy", "bad_name": f"{scene}_noindex.npy",
                 "extension": f"{scene}_{start}.raw"}.get(defect)
        if extra:
            np.save(raws / "extra.npy", np.zeros((*HW, 4), np.uint16))
            (raws / "extra.npy").rename(raws / extra)
        if defect in SCENE_DEFECTS:
            planted.add((str(raws / f"{scene}_*.npy"), SCENE_DEFECTS[defect]))
        elif defect:
            planted.add((str(raws / (extra or f"{scene}_{start}.npy")), RAW_DEFECTS[defect]))
    jpeg_dir = root / "train" / "jpegs"
    jpeg_dir.mkdir()
    for i, defect in enumerate(jpegs):
        path = _write_image(jpeg_dir / f"t_{i}.jpg", defect, rng)
        if defect:
            planted.add((str(path), IMAGE_DEFECTS[defect]))
    if gt is not None:
        (root / "test" / "raws").mkdir(parents=True)
        np.save(root / "test" / "raws" / "g_0.npy", np.zeros((*HW, 4), np.uint16))
        (root / "test" / "gt").mkdir()
        path = _write_image(root / "test" / "gt" / "g_0.png", gt, rng)
        planted.add((str(path), IMAGE_DEFECTS[gt]))
    return planted


def validate_bounded(root: Path) -> list[DataError]:
    outcome: dict = {}

    def run():
        tracemalloc.start()
        try:
            outcome["problems"] = D.validate_dataset(root)
        except BaseException as exc:  # the property: nothing but a list of named errors comes back
            outcome["raised"] = exc
        finally:
            outcome["peak"] = tracemalloc.get_traced_memory()[1]
            tracemalloc.stop()
    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(TIME_LIMIT)
    assert not thread.is_alive(), f"validate_dataset hung for more than {TIME_LIMIT} s on {root}"
    assert "raised" not in outcome, f"validate_dataset raised {outcome.get('raised')!r}"
    assert outcome["peak"] < ALLOC_BOUND, f"validate_dataset allocated {outcome['peak']} bytes"
    return outcome["problems"]


@settings(max_examples=100, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(layouts())
def test_validate_reports_every_planted_defect_and_nothing_else(layout):
    with tempfile.TemporaryDirectory() as tmp:
        planted = build(Path(tmp) / "ds", layout)
        problems = validate_bounded(Path(tmp) / "ds")
        assert all(isinstance(p, DataError) for p in problems)
        reported = {(str(p.path), type(p)) for p in problems}
        assert reported == planted, D.format_report(tmp, problems)
        report = D.format_report(tmp, problems)
        assert len(report.splitlines()) == 1 + len(problems), "a name forged a report line"
