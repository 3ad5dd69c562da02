"""The file readers: one reader per kind of file, each error naming the file."""

import os

import numpy as np
import pytest
import torch
from PIL import Image

from isp_support import io
from isp_support.io import UnreadableFileError, read_preprocessed, read_raw, read_rgb, read_rgb_batch, read_rgb_tensor


def _png(path, seed=0, hw=(6, 10)):
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (*hw, 3), dtype=np.uint8)).save(path)
    return path


def test_missing_file_message(tmp_path):
    with pytest.raises(UnreadableFileError, match="does not exist"):
        read_raw(tmp_path / "nope.npy")
    (tmp_path / "dir.npy").mkdir()
    with pytest.raises(UnreadableFileError, match="not a regular file"):
        read_raw(tmp_path / "dir.npy")


def test_rgb_tensor_is_the_uint8_image_over_255_bit_for_bit(tmp_path):
    path = _png(tmp_path / "a.png")
    levels = np.arange(256, dtype=np.uint8).reshape(16, 16, 1).repeat(3, axis=2)
    Image.fromarray(levels).save(tmp_path / "levels.png")
    for p in (path, tmp_path / "levels.png"):
        x = read_rgb_tensor(p)
        expected = read_rgb(p).transpose(2, 0, 1).astype(np.float32) / 255.0
        assert x.dtype == torch.float32 and x.shape == expected.shape
        assert np.array_equal(x.numpy().view(np.uint32), expected.view(np.uint32))
    assert read_rgb_tensor(tmp_path / "levels.png").unique().numel() == 256


def test_rgb_batch_stacks_the_tensors_bit_for_bit(tmp_path):
    paths = [_png(tmp_path / f"{i}.png", seed=i) for i in range(3)]
    batch = read_rgb_batch(paths)
    assert batch.shape == (3, 3, 6, 10) and batch.dtype == torch.float32
    assert torch.equal(batch, torch.stack([read_rgb_tensor(p) for p in paths]))


def test_corrupt_rgb_file_is_a_named_error(tmp_path):
    path = _png(tmp_path / "bad.png")
    path.write_bytes(path.read_bytes()[:40])
    with pytest.raises(UnreadableFileError, match="bad.png.*truncated or corrupt"):
        read_rgb_tensor(path)
    with pytest.raises(UnreadableFileError, match="bad.png"):
        read_rgb_batch([_png(tmp_path / "good.png"), path])


@pytest.mark.parametrize("dtype", [np.float16, np.float32])
def test_preprocessed_array_reads_back_as_stored(tmp_path, dtype):
    arr = np.random.default_rng(0).random((3, 4, 6)).astype(dtype)
    np.save(tmp_path / "p.npy", arr)
    back = read_preprocessed(tmp_path / "p.npy")
    assert back.dtype == dtype and np.array_equal(back, arr)


@pytest.mark.parametrize("content, problem", [
    (b'{"seconds": {"01": 1.5}', "not JSON"),           # truncated by a killed writer
    (b"[" * 200_000 + b"]" * 200_000, "nested too deeply"),  # RecursionError inside json.loads
    (b"\xff\xfe{}", "not JSON \\(not UTF-8"),
    (b"{" + b" " * 5000 + b"}", "more than the 4,096"),
])
def test_a_json_record_that_cannot_be_read_is_a_named_error(tmp_path, content, problem):
    path = tmp_path / "record.json"
    path.write_bytes(content)
    with pytest.raises(io.UnreadableFileError, match=problem) as info:
        io.read_json(path, max_bytes=4096 if b" " * 5000 in content else io.MAX_JSON_BYTES)
    assert str(path) in str(info.value)


def test_a_json_record_that_is_a_fifo_is_refused_without_blocking(tmp_path):
    path = tmp_path / "series.json"
    os.mkfifo(path)
    with pytest.raises(io.UnreadableFileError, match="a FIFO"):
        io.read_json(path)
    assert io.read_json(_written(tmp_path / "ok.json", '{"a": [1, 2]}')) == {"a": [1, 2]}


def _written(path, text):
    path.write_text(text)
    return path
