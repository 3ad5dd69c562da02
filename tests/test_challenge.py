"""The challenge-layout rehearsal (``build-dataset --layout challenge``), config overrides, the submission zip."""

from __future__ import annotations

import json
import zipfile

import numpy as np
import pytest

from isp_support.cli import main
from isp_support.config_rules import field_values
from isp_support.config import load_config, parse_overrides
from isp_support.config_rules import ConfigError
from isp_support.data import open_dataset
from isp_support.demo_data.build import DatasetBuildError
from isp_support.demo_data.challenge import (CHALLENGE_GRIDS, CHALLENGE_SCENES, RECORD, build_rehearsal,
                                             scene_counts)


@pytest.fixture(scope="module")
def rehearsal(tmp_path_factory):
    root = tmp_path_factory.mktemp("rehearsal")
    return build_rehearsal(root / "data", 6, raw_patch=8, progress=False, log=lambda *_: None)


def test_the_layout_is_the_challenges_without_ground_truth(rehearsal):
    out, truth = rehearsal
    assert sorted(p.relative_to(out).as_posix() for p in out.glob("*/*")) == \
        ["test/raws", "train/jpegs", "train/raws", "val/raws"]
    assert not list(out.rglob("*.png")) and not list(out.rglob("gt"))
    data = open_dataset(out)
    assert {s: bool(p.gt) for s, p in data.splits.items()} == {"test": False, "train": False, "val": False}
    record = json.loads((truth / RECORD).read_text())
    for scene in record["scene_records"]:
        assert (scene["rows"], scene["cols"]) in CHALLENGE_GRIDS
    for split in ("train", "val", "test"):  # every RAW patch has its ground truth outside the layout
        ids = {p.id for p in data[split].raw_patches()}
        assert ids and ids == {p.stem for p in (truth / split / "gt").glob("*.png")}
    assert np.load(next((out / "val" / "raws").glob("*.npy"))).shape == (8, 8, 4)
    assert record["counts"]["layout/train/jpegs"] == len(data["train"].jpeg_patches())


def test_scenes_are_shared_out_like_the_challenges():
    for n in (4, 5, 12, 40, 1092):
        counts = scene_counts(n)
        assert sum(counts.values()) == n and min(counts.values()) >= 1 and list(counts) == list(CHALLENGE_SCENES)
    assert scene_counts(1092) == {k: round(v * 1092 / 1092) for k, v in CHALLENGE_SCENES.items()}
    with pytest.raises(DatasetBuildError, match="at least 4 scenes"):
        scene_counts(3)


def test_an_identical_build_is_reused_and_a_foreign_folder_is_refused(rehearsal, tmp_path):
    out, truth = rehearsal
    said = []
    build_rehearsal(out, 6, raw_patch=8, progress=False, log=said.append)
    assert said and "up to date" in said[0]
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("a user's own file")
    with pytest.raises(DatasetBuildError, match="was not made by a rehearsal build"):
        build_rehearsal(mine, 5, raw_patch=8, progress=False, log=lambda *_: None)
    assert (mine / "notes.txt").read_text() == "a user's own file"
    with pytest.raises(DatasetBuildError, match="outside the layout"):
        build_rehearsal(tmp_path / "x", 5, raw_patch=8, truth=tmp_path / "x" / "truth", progress=False)


def test_the_cli_refuses_a_bad_patch_side(tmp_path, capsys):
    assert main(["build-dataset", "--layout", "challenge", "--raw-patch", "-4", "--out", str(tmp_path / "x")]) == 2
    assert "--raw-patch -4" in capsys.readouterr().err and not (tmp_path / "x").exists()


def test_overrides_from_the_environment_and_papermill(no_isp_env):
    env = {"ISP_OVERRIDES": '{"train.epochs": 1, "evaluate.methods": ["floor", "ot"]}'}
    cfg = load_config("full", environ=env)
    assert cfg.train.epochs == 1 and cfg.evaluate.methods == ("floor", "ot")
    assert load_config("full", environ=env, overrides='{"train.epochs": 3}').train.epochs == 3  # papermill wins
    with pytest.raises(ConfigError, match="ISP_OVERRIDES: not a JSON object"):
        load_config("full", environ={"ISP_OVERRIDES": "{train.epochs: 1}"})
    with pytest.raises(ConfigError, match="expected a JSON object"):
        parse_overrides("[1, 2]")
    with pytest.raises(ConfigError, match="nested too deeply"):
        parse_overrides("[" * 5_000)
    with pytest.raises(ConfigError, match="TrainConfig.epochs"):
        load_config("full", environ={}, overrides='{"train.epochs": 0}')
    assert field_values(["train.workers=4", "embed.style_backbone=vgg16_offline", 'evaluate.methods=["ot"]']) == \
        {"train.workers": 4, "embed.style_backbone": "vgg16_offline", "evaluate.methods": ["ot"]}
    with pytest.raises(ConfigError, match="FIELD=VALUE"):
        field_values(["train.workers"])


def read_zip(path):
    with zipfile.ZipFile(path) as zf:
        return zf.namelist(), zf.read("readme.txt").decode()


@pytest.mark.notebooks
def test_the_challenge_run_ends_with_a_submission(challenge_series):
    run_dir, executed, data_dir = challenge_series
    assert [p.name[:2] for p in executed] == ["01", "02", "03", "04", "05", "06"]
    metrics = json.loads((run_dir / "metrics" / "06_evaluate.json").read_text())
    assert metrics["scored"] is False and "table" not in metrics
    assert "needs train/gt" in metrics["skipped_rows"]["paired_l1"]
    assert {(r["split"], r["method"]) for r in metrics["no_reference"]} == \
        {(s, m) for s in ("val", "test") for m in ("floor", "ot", "ot_stage2")}
    assert all(0 <= r["colour distance"] and 0 < r["structure"] <= 1.0001 for r in metrics["no_reference"])
    data = open_dataset(data_dir)
    for split in ("val", "test"):
        names, readme = read_zip(metrics["submissions"][split]["zip"])
        assert sorted(names) == sorted([f"{p.id}.jpg" for p in data[split].raw_patches()] + ["readme.txt"])
        assert readme.startswith("runtime per image [s] : ") and "CPU[1] / GPU[0] : 1" in readme
        assert "Parameters: 7055" in readme
    record = json.loads((run_dir / "run.json").read_text())
    assert record["config"]["profile"] == "full" and record["config"]["embed"]["style_backbone"] == "vgg16_offline"


def test_the_landing_page_says_why_a_run_without_ground_truth_has_no_table():
    from isp_support.site import _landing

    text = _landing({"split": "test", "scored": False, "submissions": {"val": {}, "test": {}}}, ["06_evaluate"])
    assert "has no ground truth" in text and "(val, test)" in text and "wrote no" not in text


def _rehearse_module():
    import importlib
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    return importlib.import_module("rehearse")


def test_the_rehearsal_benchmark_fits_growth_per_notebook():
    rehearse = _rehearse_module()
    results = [{"patches": p, "notebooks": {"01_preprocess": {"seconds": 10 + 0.5 * p, "peak_rss_mb": 900.0}}}
               for p in (100, 200, 400)]
    fit = rehearse.fit(results)
    assert fit["01_preprocess seconds"]["b_per_patch"] == pytest.approx(0.5)
    assert fit["01_preprocess seconds"]["at_challenge_scale"] == pytest.approx(10 + 0.5 * rehearse.CHALLENGE_PATCHES)
    assert fit["01_preprocess peak_rss_mb"]["b_per_patch"] == pytest.approx(0.0, abs=1e-9)
    assert rehearse.fit(results[:1]) == {}  # one size: nothing to fit


@pytest.mark.notebooks
def test_every_rehearsal_grid_is_recovered_or_flagged(challenge_series):
    run_dir, _, data_dir = challenge_series
    counts = _rehearse_module().grid_check(run_dir, data_dir.with_name(f"{data_dir.name}-truth"))
    assert counts["wrong"] == 0 and sum(counts.values()) == 6


def test_the_gpu_estimate_scales_with_pixels_and_with_the_patch_count():
    import importlib
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    est = importlib.import_module("estimate_gpu")
    assert "ESTIMATE, not a measurement" in est.HEADER
    work = est.count_work(scale=est.Scale(), d_sides=(16, 32))
    # Convolutional networks are linear in pixels: the same FLOP per pixel at two sides (counted on the meta device,
    # the discriminators on the CPU) ...
    per_pixel = work["conv_flop_per_pixel"]
    for net in ("vgg19", "colournet"):
        assert per_pixel[f"{net} 64px"] == pytest.approx(per_pixel[f"{net} 128px"], rel=0.02)
    assert all(d["spread"] < 0.02 for d in work["discriminators"].values())
    # ... but DemosaicNet's 31-32 px reflect margins are not: small patches cost more per pixel, hence the full size.
    assert work["preprocess_per_output_pixel"]["64"] > 1.2 * work["preprocess_per_output_pixel"]["512"]
    one, two = est.estimate(work, est.Scale()), est.estimate(work, est.Scale().scaled(2))

    def seconds(rows, notebook, kind, what=""):
        return sum(r.seconds for r in rows if r.notebook == notebook and r.kind == kind and what in r.work)

    # Twice the patches: twice the GPU time of pre-processing and of training (within the rounding of the held-out
    # scenes) ...
    assert seconds(two, "01_preprocess", "gpu fp32") == pytest.approx(2 * seconds(one, "01_preprocess", "gpu fp32"))
    for nb in ("04_train_stage1", "05_train_stage2", "06_evaluate"):
        assert seconds(two, nb, "gpu bf16") == pytest.approx(2 * seconds(one, nb, "gpu bf16"), rel=0.01)
    # ... while an index rewritten whole after every batch grows quadratically.
    index = [seconds(rows, "01_preprocess", "host", "index.json") for rows in (one, two)]
    assert index[1] > 3.5 * index[0]
    summary = est.summarise(one)
    assert set(summary) == set(est.NOTEBOOKS)
    assert all(0 < s["seconds_with_workers"] <= s["seconds"] for s in summary.values())


def test_challenge_options_are_refused_with_the_demo_layout(tmp_path, capsys):
    assert main(["build-dataset", "--profile", "tiny", "--scenes", "6", "--out", str(tmp_path / "x")]) == 2
    assert "--layout challenge" in capsys.readouterr().err and not (tmp_path / "x").exists()
