"""The challenge-format data layer: every bad input gets its named error, naming the file."""

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from isp_support import data as D
from isp_support.io import DataError, DtypeError, NonFiniteError, RangeError, ShapeError, UnreadableFileError


def make_dataset(root: Path, n=4, hw=(8, 8)) -> Path:
    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        (root / split / "raws").mkdir(parents=True)
        for i in range(n):
            np.save(root / split / "raws" / f"scene_a_{i}.npy", rng.integers(0, 1024, (*hw, 4), dtype=np.uint16))
    (root / "train" / "jpegs").mkdir()
    for i in range(3):
        Image.fromarray(rng.integers(0, 255, (2 * hw[0], 2 * hw[1], 3), dtype=np.uint8)).save(
            root / "train" / "jpegs" / f"t_{i}.jpg", quality=95)
    (root / "test" / "gt").mkdir()
    Image.fromarray(np.zeros((2 * hw[0], 2 * hw[1], 3), np.uint8)).save(root / "test" / "gt" / "scene_a_0.png")
    return root


def snapshot(root: Path) -> dict:
    return {p: p.stat().st_mtime_ns for p in sorted(root.rglob("*"))}


@pytest.fixture()
def ds(tmp_path):
    return make_dataset(tmp_path / "ds")


def test_valid_dataset_opens_in_integer_order(ds):
    for i in range(4, 12):  # scene_a_10 and _11 must come after _9, never after _1
        np.save(ds / "train" / "raws" / f"scene_a_{i}.npy", np.zeros((8, 8, 4), np.uint16))
    assert D.validate_dataset(ds) == []
    dataset = D.open_dataset(ds, check_values=True)
    assert [p.idx for p in dataset["train"].raws["scene_a"].patches] == list(range(12))
    assert dataset["train"].raws["scene_a"].patches[10].id == "scene_a_10"
    assert len(dataset["train"].jpeg_patches()) == 3 and "scene_a" in dataset["test"].gt
    with pytest.raises(D.MissingFolderError, match="no split 'val'"):
        dataset["val"]


def _assert_single(root, error, *fragments):
    before = snapshot(root)
    problems = D.validate_dataset(root)
    assert [type(p) for p in problems] == [error], D.format_report(root, problems)
    for fragment in fragments:
        assert fragment in str(problems[0])
    with pytest.raises(error) as info:
        D.open_dataset(root, check_values=True)
    assert str(info.value.path) in str(info.value)
    assert snapshot(root) == before, "validation must not write anything"


RAW = "train/raws/scene_a_1.npy"


@pytest.mark.parametrize("array, error, fragment", [
    (np.zeros((8, 8, 3), np.uint16), ShapeError, "expected (H, W, 4)"),
    (np.zeros((8, 8), np.uint16), ShapeError, "shape (8, 8)"),
    (np.zeros((8, 8, 4), np.uint8), DtypeError, "uint8"),
    (np.zeros((8, 8, 4), np.complex64), DtypeError, "complex64"),
    (np.full((8, 8, 4), 1024, np.uint16), RangeError, "[1024, 1024]"),
    (np.full((8, 8, 4), -1.0, np.float32), RangeError, "[0, 1023]"),
    (np.full((8, 8, 4), np.nan, np.float32), NonFiniteError, "256 NaN"),
])
def test_bad_raw_arrays(ds, array, error, fragment):
    np.save(ds / RAW, array)
    _assert_single(ds, error, RAW.split("/")[-1], fragment)


def test_object_array_is_a_dtype_error(ds):
    np.save(ds / RAW, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    _assert_single(ds, DtypeError, "object")


def test_truncated_and_garbage_npy(ds):
    data = (ds / RAW).read_bytes()
    (ds / RAW).write_bytes(data[: len(data) // 2])
    _assert_single(ds, UnreadableFileError, "scene_a_1.npy", "truncated")
    (ds / RAW).write_bytes(b"not numpy at all")
    _assert_single(ds, UnreadableFileError, "scene_a_1.npy")


def test_truncated_jpeg(ds):
    jpg = ds / "train" / "jpegs" / "t_1.jpg"
    jpg.write_bytes(jpg.read_bytes()[:200])
    _assert_single(ds, UnreadableFileError, "t_1.jpg")


def test_jpeg_wrong_size_and_gray(ds):
    jpg = ds / "train" / "jpegs" / "t_1.jpg"
    Image.fromarray(np.zeros((10, 16, 3), np.uint8)).save(jpg)
    _assert_single(ds, ShapeError, "t_1.jpg", "(16, 16, 3)")
    Image.fromarray(np.zeros((16, 16), np.uint8)).save(jpg)
    _assert_single(ds, ShapeError, "mode L")


def test_gt_must_be_twice_its_raw(ds):
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(ds / "test" / "gt" / "scene_a_0.png")
    _assert_single(ds, ShapeError, "scene_a_0.png", "twice its RAW")


def test_gt_without_raw(ds):
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(ds / "test" / "gt" / "scene_b_0.png")
    _assert_single(ds, D.SceneIndexError, "scene_b_0.png", "without a RAW")


def test_duplicate_indices(ds):
    np.save(ds / "train" / "raws" / "scene_a_01.npy", np.zeros((8, 8, 4), np.uint16))
    _assert_single(ds, D.SceneIndexError, "duplicate indices [1]", "scene_a_01.npy", "scene_a_1.npy")


def test_missing_indices(ds):
    (ds / RAW).unlink()
    _assert_single(ds, D.SceneIndexError, "missing indices [1]")


def test_bad_file_name(ds):
    np.save(ds / "train" / "raws" / "noindex.npy", np.zeros((8, 8, 4), np.uint16))
    _assert_single(ds, D.SceneIndexError, "noindex.npy", "<scene>_<idx>")


def test_missing_folders(tmp_path, ds):
    _assert_single_missing = lambda root, frag: (  # noqa: E731
        [type(p) for p in D.validate_dataset(root)] == [D.MissingFolderError]
        and frag in str(D.validate_dataset(root)[0]))
    assert _assert_single_missing(tmp_path / "nowhere", "does not exist")
    empty = tmp_path / "empty"
    (empty / "train").mkdir(parents=True)
    assert _assert_single_missing(empty, "raws")
    with pytest.raises(D.MissingFolderError, match="raws"):
        D.open_dataset(empty)


def test_raw_without_target_domain(ds):
    for jpg in (ds / "train" / "jpegs").iterdir():
        jpg.unlink()
    _assert_single(ds, D.NoTargetDomainError, "no target-domain JPEGs", "empty folder")
    (ds / "train" / "jpegs").rmdir()
    _assert_single(ds, D.NoTargetDomainError, "missing folder")


def test_validate_reports_every_problem_at_once(ds):
    np.save(ds / RAW, np.full((8, 8, 4), 5000, np.uint16))
    np.save(ds / "test" / "raws" / "scene_a_2.npy", np.zeros((8, 8, 3), np.uint16))
    jpg = ds / "train" / "jpegs" / "t_0.jpg"
    jpg.write_bytes(jpg.read_bytes()[:100])
    problems = D.validate_dataset(ds)
    assert sorted(type(p).__name__ for p in problems) == ["RangeError", "ShapeError", "UnreadableFileError"]
    report = D.format_report(ds, problems)
    assert "3 problem(s)" in report and "scene_a_2.npy" in report and "t_0.jpg" in report
    with pytest.raises(DataError, match="and 2 more problem"):
        D.open_dataset(ds, check_values=True)


def test_cli_validate_exit_code(ds, capsys):
    from isp_support.cli import main

    assert main(["validate", str(ds)]) == 0
    np.save(ds / RAW, np.full((8, 8, 4), np.inf, np.float32))
    assert main(["validate", str(ds)]) == 1
    assert "NonFiniteError" in capsys.readouterr().out
