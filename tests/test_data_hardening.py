"""Hostile input to the data layer: each test reproduces one defect found by a probe of bad inputs."""

import os
import struct
import threading
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from isp_support import data as D
from isp_support.io import DataError, ShapeError, UnreadableFileError, read_raw, read_rgb
from tests.test_data import RAW, _assert_single, make_dataset


@pytest.fixture()
def ds(tmp_path):
    return make_dataset(tmp_path / "ds")


def _validate_within(root, seconds=20.0):
    """``validate_dataset(root)`` in a thread; fails the test instead of hanging the suite."""
    result: dict = {}
    thread = threading.Thread(target=lambda: result.setdefault("problems", D.validate_dataset(root)), daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), f"validate_dataset({root}) still running after {seconds} s"
    return result["problems"]


# --- crashes, hangs and allocations --------------------------------------------------------------------------

def test_huge_index_is_a_gap_not_an_allocation(ds):
    np.save(ds / "train" / "raws" / "s_1000000000000.npy", np.zeros((8, 8, 4), np.uint16))
    problems = _validate_within(ds)
    assert [type(p) for p in problems] == [D.SceneIndexError]
    assert "999999999999 missing indices" in problems[0].problem and "[1, 2, 3" in problems[0].problem


def test_index_of_more_digits_than_python_parses(ds):
    np.save(ds / "train" / "raws" / f"s_{'9' * 30}.npy", np.zeros((8, 8, 4), np.uint16))
    problems = _validate_within(ds)
    assert [type(p) for p in problems] == [D.SceneIndexError] and "digits" in problems[0].problem


def _npy_header_only(path: Path, shape, dtype="<f8", data=b"\0" * 64):
    header = f"{{'descr': '{dtype}', 'fortran_order': False, 'shape': {shape!r}, }}".encode()
    header += b" " * (-(10 + len(header) + 1) % 64) + b"\n"
    path.write_bytes(b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header + data)


def test_npy_header_bomb_is_refused_before_reading(ds):
    _npy_header_only(ds / RAW, (100000, 100000, 4))
    _assert_single(ds, ShapeError, "scene_a_1.npy", "(100000, 100000, 4)", "at most")


def test_npy_header_claiming_more_than_the_file_holds(ds):
    _npy_header_only(ds / RAW, (64, 64, 4))
    _assert_single(ds, UnreadableFileError, "scene_a_1.npy", "header claims 131072 bytes", "holds 64")


def test_npy_with_trailing_bytes(ds):
    with open(ds / RAW, "ab") as fh:
        fh.write(b"appended")
    _assert_single(ds, UnreadableFileError, "scene_a_1.npy", "8 bytes after")


def _png_header_only(path: Path, width: int, height: int):
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
                     + chunk(b"IEND", b""))


def test_png_decompression_bomb_is_a_named_error(ds):
    gt = ds / "test" / "gt" / "scene_a_0.png"
    _png_header_only(gt, 20000, 20000)
    _assert_single(ds, ShapeError, "scene_a_0.png", "400000000 pixels", "at most")
    with pytest.raises(ShapeError, match="at most"):
        read_rgb(gt)


@pytest.mark.parametrize("kind", ["fifo", "dev_zero"])
def test_special_files_never_block(ds, kind):
    target = ds / "train" / "raws" / "scene_a_9.npy"
    (ds / "train" / "raws" / "scene_a_1.npy").unlink()
    if kind == "fifo":
        os.mkfifo(target.with_name("scene_a_1.npy"))
    else:
        target.with_name("scene_a_1.npy").symlink_to("/dev/zero")
    problems = _validate_within(ds)
    assert [type(p) for p in problems] == [UnreadableFileError], D.format_report(ds, problems)
    assert "not a regular file" in problems[0].problem
    assert "does not exist" not in problems[0].problem
    with pytest.raises(UnreadableFileError, match="not a regular file"):
        read_raw(ds / RAW)


def test_preprocess_refuses_a_fifo_instead_of_hashing_it(ds, tmp_path):
    from isp_support.pipeline import preprocess
    from isp_support.config import PreprocessConfig

    os.mkfifo(ds / "train" / "raws" / "scene_a_4.npy")
    patch = D.Patch("scene_a", 4, ds / "train" / "raws" / "scene_a_4.npy")
    cfg = PreprocessConfig(demosaicker="bilinear", denoiser="none")
    result: dict = {}

    def run():
        try:
            preprocess.preprocess_split([patch], "train", tmp_path / "out", cfg, progress=False)
        except DataError as exc:
            result["error"] = exc
    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(20)
    assert not thread.is_alive(), "preprocess_split blocked on a FIFO"
    assert isinstance(result.get("error"), UnreadableFileError) and "not a regular file" in str(result["error"])


# --- silently ignored or misread input ---------------------------------------------------------------------------

@pytest.mark.parametrize("make", ["missing", "file"])
def test_split_without_a_raws_folder_is_reported(ds, make):
    (ds / "val" / "gt").mkdir(parents=True)
    if make == "file":
        (ds / "val" / "raws").write_text("not a folder")
    problems = _validate_within(ds)
    assert [type(p) for p in problems] == [D.MissingFolderError]
    assert "val" in str(problems[0].path) and "raws" in problems[0].problem


def test_float_raw_with_fractions_is_a_warning(ds):
    np.save(ds / RAW, np.full((8, 8, 4), 0.5, np.float32))
    problems = _validate_within(ds)
    assert [type(p) for p in problems] == [D.DataWarning] and "fraction" in problems[0].problem
    assert D.errors(problems) == []
    D.open_dataset(ds, check_values=True)  # a warning does not stop the series
    assert "warning" in D.format_report(ds, problems).lower()


def test_png_named_jpg_is_a_warning(ds):
    jpg = ds / "train" / "jpegs" / "t_1.jpg"
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(jpg, format="PNG")
    problems = _validate_within(ds)
    assert [type(p) for p in problems] == [D.DataWarning] and "PNG" in problems[0].problem


def test_16_bit_ground_truth_is_a_warning(ds):
    gt = ds / "test" / "gt" / "scene_a_0.png"
    _png_16bit(gt, np.full((16, 16, 3), 40000, np.uint16))
    problems = _validate_within(ds)
    assert [type(p) for p in problems] == [D.DataWarning] and "16-bit" in problems[0].problem


def _png_16bit(path: Path, rgb: np.ndarray):
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
    h, w, _ = rgb.shape
    rows = b"".join(b"\0" + rgb[y].astype(">u2").tobytes() for y in range(h))
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 16, 2, 0, 0, 0))
                     + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))


def test_unicode_digit_index_is_a_bad_name(ds):
    np.save(ds / "train" / "raws" / "scene_b_\u0663.npy", np.zeros((8, 8, 4), np.uint16))
    _assert_single(ds, D.SceneIndexError, "<scene>_<idx>")


# --- messages ----------------------------------------------------------------------------------------------------

def test_duplicate_index_adds_no_false_ground_truth_errors(ds):
    for i in range(4):
        Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(ds / "test" / "gt" / f"scene_a_{i}.png")
    np.save(ds / "test" / "raws" / "scene_a_01.npy", np.zeros((8, 8, 4), np.uint16))
    problems = _validate_within(ds)
    assert [type(p) for p in problems] == [D.SceneIndexError] and "duplicate" in problems[0].problem


def test_a_newline_in_a_name_cannot_forge_report_lines(ds):
    name = "scene_x\n  [RangeError] forged: values_0.npy"
    np.save(ds / "train" / "raws" / name, np.zeros((8, 8, 3), np.uint16))
    problems = _validate_within(ds)
    assert [type(p) for p in problems] == [ShapeError]
    report = D.format_report(ds, problems)
    assert len(report.splitlines()) == 1 + len(problems)
    assert "\\n" in report


def test_preprocessed_outputs_of_deleted_inputs_are_removed(ds, tmp_path):
    import json

    from isp_support.pipeline import preprocess
    from isp_support.config import PreprocessConfig

    cfg = PreprocessConfig(demosaicker="bilinear", denoiser="none")
    out = tmp_path / "out"
    preprocess.preprocess_split(ds, "train", out, cfg, progress=False)
    (ds / "train" / "raws" / "scene_a_3.npy").unlink()
    summary = preprocess.preprocess_split(ds, "train", out, cfg, progress=False)
    assert (summary.processed, summary.reused) == (0, 3)
    entries = json.loads((out / "train" / preprocess.INDEX_NAME).read_text())["entries"]
    assert sorted(entries) == ["scene_a_0", "scene_a_1", "scene_a_2"]
    assert sorted(p.stem for p in (out / "train").glob("*.npy")) == sorted(entries)


def test_cli_validate_passes_with_warnings_only(ds, capsys):
    from isp_support.cli import main

    np.save(ds / RAW, np.full((8, 8, 4), 0.5, np.float32))
    assert main(["validate", str(ds)]) == 0
    assert "OK, 1 warning(s)" in capsys.readouterr().out


def test_a_scene_named_by_a_superscript_digit_sorts_without_crashing(ds):
    np.save(ds / "train" / "raws" / "\u00b2_0.npy", np.zeros((8, 8, 4), np.uint16))
    assert _validate_within(ds) == []
    assert "\u00b2" in D.open_dataset(ds)["train"].raws


def test_a_folder_that_cannot_be_listed_is_a_named_problem(ds, monkeypatch):
    original = Path.iterdir

    def denied(self):
        if self.name == "jpegs":
            raise PermissionError(13, "Permission denied")
        return original(self)
    monkeypatch.setattr(Path, "iterdir", denied)
    problems = _validate_within(ds)
    assert [type(p) for p in problems] == [D.MissingFolderError]
    assert "cannot be listed: Permission denied" in problems[0].problem
