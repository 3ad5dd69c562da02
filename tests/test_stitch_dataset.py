"""Stitching on built datasets, where the builder knows every scene's true grid."""

import csv
import json

import numpy as np
import pytest

from isp_support.pipeline import grid, stitch
from isp_support.config import PreprocessConfig, StitchConfig, load_config
from isp_support.data import open_dataset
from isp_support.io import read_rgb
from isp_support.demo_data.build import build_dataset
from isp_support.pipeline.preprocess import load_preprocessed, preprocess_split


def true_grids(root):
    return {s["scene"]: (s["rows"], s["cols"]) for s in json.loads((root / "manifest.json").read_text())["scenes"]}


def recovered(root, cfg=StitchConfig()):
    ds = open_dataset(root)
    out = {}
    for split in ds.splits.values():
        out.update(grid.recover_scenes(split.raws.values(), cfg))
        out.update(grid.recover_scenes(split.jpegs.values(), cfg))
    return out


@pytest.fixture(scope="module")
def demo_shaped(tmp_path_factory):
    """The demo profile's grids (the challenge's 2x7, 5x7, 6x7, transposes, ...) and patch size, wheel photos only."""
    cfg = load_config("demo", overrides={"dataset.photo_sources": ("wheels",)}, environ={})
    out = tmp_path_factory.mktemp("demo") / "demo"
    return build_dataset(out, cfg.dataset, progress=False, log=lambda *_: None)


@pytest.mark.parametrize("which", ["tiny", "demo"])
def test_every_scene_gets_its_true_grid(which, tiny_dataset, demo_shaped):
    root = tiny_dataset if which == "tiny" else demo_shaped
    truth, found = true_grids(root), recovered(root)
    assert set(found) == set(truth)
    wrong = {name: (r.layout, truth[name]) for name, r in found.items() if r.layout != truth[name]}
    assert not wrong, wrong


def test_stitch_dataset_rebuilds_every_kind(tiny_dataset, tmp_path):
    run = tmp_path / "run"
    ds = open_dataset(tiny_dataset)
    pp = PreprocessConfig(demosaicker="bilinear", denoiser="none", store_dtype="float32")
    for split in ds.splits:
        preprocess_split(ds, split, run / "preprocessed", pp, progress=False)
    results = stitch.stitch_dataset(ds, run, progress=False)
    assert {(r.split, r.kind) for r in results} == {("train", "raw"), ("train", "gt"), ("train", "jpeg"),
                                                    ("test", "raw"), ("test", "gt")}
    with open(run / "stitched" / "index.csv") as fh:
        index = list(csv.DictReader(fh))
    n_patches = sum(len(s.raw_patches()) * (2 if s.gt else 1) + len(s.jpeg_patches()) for s in ds.splits.values())
    assert len(index) == n_patches
    # every patch sits where the index says, in every kind of full image
    for row in index[:: max(1, len(index) // 25)]:
        full = stitch.load_stitched(run, row["split"], row["kind"], row["scene"])
        y0, x0, h, w = (int(row[k]) for k in ("y0", "x0", "h", "w"))
        if row["kind"] == "raw":
            patch = load_preprocessed(run / "preprocessed", row["split"], row["patch_id"]).transpose(1, 2, 0)
            np.testing.assert_allclose(full[y0:y0 + h, x0:x0 + w], patch, atol=1e-3)  # float16 on disk
        else:
            folder = "jpegs" if row["kind"] == "jpeg" else "gt"
            ext = ".jpg" if row["kind"] == "jpeg" else ".png"
            patch = read_rgb(tiny_dataset / row["split"] / folder / f"{row['patch_id']}{ext}")
            np.testing.assert_allclose(full[y0:y0 + h, x0:x0 + w], patch / 255.0, atol=1e-6)
    grids = json.loads((run / "stitched" / "grids.json").read_text())
    truth = true_grids(tiny_dataset)
    for key, scenes in grids.items():
        for name, g in scenes.items():
            assert (g["rows"], g["cols"]) == truth[name], (key, name)


def test_missing_preprocessed_patch_is_named(tiny_dataset, tmp_path):
    with pytest.raises(FileNotFoundError, match="run preprocess_split .notebook 01_preprocess. first"):
        stitch.stitch_dataset(open_dataset(tiny_dataset), tmp_path / "empty", progress=False)


def test_a_raw_patch_changed_after_preprocessing_is_not_stitched_or_matched(tiny_dataset, tmp_path):
    import shutil

    from isp_support.embed.descriptors import matching_items
    from isp_support.pipeline.preprocess import StalePreprocessedError, require_current

    data = tmp_path / "data"
    shutil.copytree(tiny_dataset, data)
    run = tmp_path / "run"
    dataset = open_dataset(data)
    for split in dataset.splits:
        preprocess_split(dataset, split, run / "preprocessed", PreprocessConfig(denoiser="none"), progress=False)
    patch = dataset["train"].raw_patches()[0]
    require_current(run / "preprocessed", "train", dataset["train"].raw_patches())
    raw = np.load(patch.path)
    np.save(patch.path, (raw // 2).astype(raw.dtype))          # edited after notebook 01
    with pytest.raises(StalePreprocessedError, match=f"{patch.path.name}: changed after notebook 01"):
        stitch.stitch_dataset(open_dataset(data), run, progress=False)
    assert not (run / "stitched").exists()
    (run / "stitched" / "train" / "raw").mkdir(parents=True)      # as if 02 had run before the edit
    (run / "stitched" / "train" / "jpeg").mkdir(parents=True)
    with pytest.raises(StalePreprocessedError, match=f"{patch.path.name}: changed after notebook 01"):
        matching_items(open_dataset(data), run)
