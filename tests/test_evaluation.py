"""Notebook 06's machinery: scoring, the ablation table, the bootstrap comparison, run names, errors."""

from __future__ import annotations

import shutil

import numpy as np
import pandas as pd
import pytest
import torch

from isp_support.evaluate import scoring
from isp_support.config import load_config
from isp_support.train.models import ColourNet


def fake_test_set(scenes=("a", "b"), grid=(2, 3), side=12, seed=0) -> scoring.TestSet:
    """Full images cut into row-major patches; ground truth = input + a fixed colour offset."""
    gen = torch.Generator().manual_seed(seed)
    rows, cols = grid
    images = {s: torch.rand(3, rows * side, cols * side, generator=gen) * 0.8 for s in scenes}
    truth = {s: (im + torch.tensor([0.1, 0.0, -0.05]).view(3, 1, 1)).clamp(0, 1) for s, im in images.items()}
    cut = lambda im: [im[:, r * side:(r + 1) * side, c * side:(c + 1) * side]  # noqa: E731
                      for r in range(rows) for c in range(cols)]
    ids = [f"{s}_{k}" for s in scenes for k in range(rows * cols)]
    return scoring.TestSet("test", None, ids, [s for s in scenes for _ in range(rows * cols)],
                              torch.stack([p for s in scenes for p in cut(images[s])]),
                              torch.stack([p for s in scenes for p in cut(truth[s])]), list(scenes), images, truth,
                              {s: grid for s in scenes})


def test_floor_scores_the_input_against_the_truth():
    test = fake_test_set()
    scores = scoring.score_patches(None, test)
    assert list(scores.columns) == ["patch", "scene", *scoring.METRICS] and len(scores) == 12
    mse = ((torch.round(test.inputs * 255) / 255 - test.truth) ** 2).flatten(1).mean(1)
    np.testing.assert_allclose(scores["psnr"], (10 * torch.log10(1 / mse)).numpy(), rtol=1e-5)
    assert (scores["delta_e2000"] > 0).all() and (scores["ssim"] < 1).all()


def test_identity_network_equals_the_floor_and_full_images_match_patches():
    test = fake_test_set()
    identity = ColourNet().eval()
    pd.testing.assert_frame_equal(scoring.score_patches(identity, test), scoring.score_patches(None, test),
                                  atol=1e-5)
    images = scoring.score_images(identity, test, tile=5)
    assert set(images["mode"]) == {"whole image", "patch-wise"} and len(images) == 4
    one, pw = (images[images["mode"] == m].set_index("scene") for m in ("whole image", "patch-wise"))
    pd.testing.assert_frame_equal(one.drop(columns="mode"), pw.drop(columns="mode"), atol=1e-5)


def test_patchwise_rendering_has_seams_one_pass_does_not():
    test = fake_test_set(scenes=("a",))
    torch.manual_seed(0)
    net = ColourNet().eval()
    with torch.no_grad():
        net.conv2.weight.normal_(0, 0.1)
    one = scoring.render_scene(net, test, "a")
    tiled = scoring.render_scene(net, test, "a", tile=5)
    torch.testing.assert_close(tiled, one, atol=1e-6, rtol=0)
    diff = (scoring.render_patchwise(net, test, "a") - one).abs().amax(0)
    assert diff[:, 11:13].max() > 1e-3  # the border between the first two patch columns
    assert diff[2:10, 2:10].max() < 1e-6  # inside a patch


def _per_scene(deltas: dict[str, np.ndarray], n: int = 12, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    base = rng.normal(20, 2, n)
    rows = []
    for method, delta in deltas.items():
        for i in range(n):
            rows.append({"method": method, "seed": 0, "scene": f"s{i}", "psnr": base[i] + delta[i],
                         "ssim": 0.5 + delta[i] / 100, "delta_e2000": 10 - delta[i]})
    return pd.DataFrame(rows)


def test_bootstrap_comparison_separates_a_real_gain_from_noise():
    rng = np.random.default_rng(1)
    data = _per_scene({"ot": np.zeros(12), "gain": 1 + rng.normal(0, 0.2, 12), "noise": rng.normal(0, 1, 12),
                       "loss": -1 + rng.normal(0, 0.2, 12)})
    cmp = scoring.compare_to(data, "ot", seed=0, n_boot=1000)
    assert cmp.loc["gain", "psnr better"] and cmp.loc["gain", "delta_e2000 better"]  # lower delta E is better
    assert not cmp.loc["gain", "psnr worse"]
    assert cmp.loc["loss", "psnr worse"] and cmp.loc["loss", "delta_e2000 worse"]
    assert not cmp.loc["noise", "psnr better"] and not cmp.loc["noise", "psnr worse"]
    assert cmp.loc["ot", "psnr diff"] == 0 and cmp.loc["gain", "psnr lo"] < cmp.loc["gain", "psnr diff"] \
        < cmp.loc["gain", "psnr hi"]


def test_ablation_table_reports_the_profile_seed_and_the_seed_spread():
    one = _per_scene({"ot": np.zeros(4), "random": -np.ones(4)}, n=4)
    other = one.assign(seed=1, psnr=one["psnr"] + np.where(one["method"] == "ot", 0.5, 0.0))
    info = pd.DataFrame({"label": ["OT", "random"], "parameters": [7055, 7055], "s_per_mp": [0.1, 0.1]},
                        index=["ot", "random"])
    table = scoring.ablation_table(pd.concat([one, other]), info)
    assert table.loc["ot", "psnr"] == pytest.approx(one[one.method == "ot"]["psnr"].mean())  # seed 0's figure
    assert table.loc["ot", "psnr sd"] == pytest.approx(np.std([0, 0.5], ddof=1))
    assert table.loc["random", "psnr sd"] == pytest.approx(0.0) and table.loc["random", "seeds"] == 2
    assert np.isnan(scoring.ablation_table(one, info).loc["ot", "psnr sd"])


def test_a_difference_counts_only_beyond_the_interval_and_twice_the_seed_spread():
    table = pd.DataFrame({"parameters": [0, 7055, 7055, 7055], "psnr sd": [np.nan, 0.3, 2.0, np.nan]},
                         index=["floor", "ot", "random", "knn"])
    assert scoring.seed_spread(table, "psnr").tolist() == [0.0, 0.3, 2.0, 2.0]  # no network: 0; not repeated: max
    versus = pd.DataFrame({"psnr diff": [-2.0, 2.5, 5.0, 0.0], "psnr better": [False, True, True, False],
                           "psnr worse": [True, False, False, False]}, index=["floor", "random", "knn", "ot"])
    out = scoring.verdicts(versus, table, "ot", ("psnr",))
    assert out.loc["floor", "psnr 2x spread"] == pytest.approx(0.6)
    assert out.loc["floor", "psnr verdict"] == "worse"  # |-2| > 2 * 0.3, interval below zero
    assert out.loc["random", "psnr verdict"] == "no clear difference"  # 2.5 < 2 * sqrt(2^2 + 0.3^2)
    assert out.loc["knn", "psnr verdict"] == "better"  # 5 > 4.04, interval above zero
    assert out.loc["ot", "psnr verdict"] == "no clear difference"
    unrepeated = scoring.verdicts(versus, table.assign(**{"psnr sd": np.nan}), "ot", ("psnr",))
    assert unrepeated["psnr verdict"].tolist() == ["worse", "better", "better", "no clear difference"]
    assert unrepeated.loc["random", "psnr 2x spread"] != unrepeated.loc["random", "psnr 2x spread"]  # NaN


def test_every_method_has_its_own_run_and_extra_seeds_their_own_folders():
    cfg = load_config("tiny", environ={})
    names = {k: scoring.run_name(cfg, m) for k, m in scoring.METHODS.items() if m.stage}
    assert len(set(names.values())) == len(names)
    assert names["ot"] == "stage1_ot" and names["ot_stage2"] == "stage2_ot"  # notebooks 04/05's runs, reused
    assert names["ot_lut"] == "stage1_ot_lut" and names["paired_pal"] == "stage1_paired_pal"
    assert scoring.run_name(cfg, scoring.METHODS["ot"], seed=3) == "stage1_ot_seed3"
    assert scoring.run_name(cfg, scoring.METHODS["ot"], seed=cfg.seed) == "stage1_ot"
    assert set(cfg.evaluate.methods) <= set(scoring.METHODS)


def test_timing_is_positive_for_a_network_and_zero_for_the_floor():
    assert scoring.seconds_per_megapixel(None) == 0.0
    assert scoring.seconds_per_megapixel(ColourNet(), side=64, repeats=2) > 0


def test_a_split_without_ground_truth_is_named(tiny_dataset, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(tiny_dataset, data)
    shutil.rmtree(data / "test" / "gt")
    cfg = load_config("tiny", data_dir=data, run_dir=tmp_path / "run", environ={})
    with pytest.raises(scoring.EvaluationError, match="no ground truth"):
        scoring.load_test_set(cfg, tmp_path / "run")
    cfg = load_config("tiny", data_dir=tiny_dataset, run_dir=tmp_path / "run", environ={})
    with pytest.raises(scoring.EvaluationError, match="run 01_preprocess first"):
        scoring.load_test_set(cfg, tmp_path / "run")


def test_regret_is_kept_minus_best_and_never_positive():
    scores = [{"epoch": 0, "psnr": 20.0, "delta_e2000": 9.0}, {"epoch": 1, "psnr": 24.5, "delta_e2000": 6.0},
              {"epoch": 2, "psnr": 23.0, "delta_e2000": 5.0}]
    assert scoring.regret(scores, 1) == 0.0
    assert scoring.regret(scores, 0) == pytest.approx(-4.5)
    assert scoring.regret(pd.DataFrame(scores), 2) == pytest.approx(-1.5)
    assert scoring.regret(scores, 1, "delta_e2000") == pytest.approx(-1.0)  # lower is better: best - kept
    assert scoring.regret(scores, 2, "delta_e2000") == 0.0
    with pytest.raises(scoring.EvaluationError, match="kept epoch 5"):
        scoring.regret(scores, 5)


def test_epoch_scores_render_every_saved_epoch(tmp_path):
    from isp_support.train.checkpoint import weights_bytes
    from isp_support.artifacts import atomic_write_bytes

    test = fake_test_set()
    closer = ColourNet()
    with torch.no_grad():
        closer.head.bias.copy_(torch.tensor([0.1, 0.0, -0.05]))  # the truth's colour offset
    for epoch, net in enumerate((ColourNet(), closer)):
        atomic_write_bytes(tmp_path / "epochs" / f"epoch_{epoch:03d}.pt",
                           weights_bytes(net, {"hidden": 128, "head": "1x1"}, epoch, {}))
    table = scoring.epoch_scores(tmp_path, test.inputs, test.truth)
    assert table["epoch"].tolist() == [0, 1] and table.loc[1, "psnr"] > table.loc[0, "psnr"] + 5
    assert table.loc[0, "psnr"] == pytest.approx(scoring.score_patches(None, test)["psnr"].mean(), rel=1e-5)
    assert scoring.regret(table, 0) == pytest.approx(table.loc[0, "psnr"] - table.loc[1, "psnr"])
