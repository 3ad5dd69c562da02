"""benchmarks/choose_stage1.py: stage-1 settings compared on the validation split."""

import importlib.util
import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from isp_support import metrics
from isp_support.config import PreprocessConfig, load_config, profile_config
from isp_support.data import open_dataset
from isp_support.io import read_rgb_batch
from isp_support.pairing.baselines import random_graph
from isp_support.pipeline.preprocess import load_preprocessed, preprocess_split
from isp_support.train import loop

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "choose_stage1.py"
spec = importlib.util.spec_from_file_location("choose_stage1", SCRIPT)
choose = importlib.util.module_from_spec(spec)
spec.loader.exec_module(choose)


def test_the_jobs_are_notebook_06s_stage1_runs():
    cfg = profile_config("demo")
    jobs = [(m.key, s) for m, s in choose.stage1_jobs(cfg)]
    assert ("ot", 0) in jobs and ("ot", 2) in jobs and ("paired_l1", 0) in jobs
    assert ("knn", 1) not in jobs                                  # extra seeds: seed_methods only
    assert not any(k in ("floor", "ot_stage2", "ot_experts") for k, _ in jobs)
    assert len(jobs) == 9 + 2 * len(cfg.evaluate.seed_methods)


def test_a_run_folder_without_notebook_03s_outputs_is_refused(tmp_path):
    (tmp_path / "src").mkdir()
    with pytest.raises(SystemExit, match="no preprocessed"):
        choose.linked_run_dir(tmp_path / "src", tmp_path / "out")


def test_variants_parse_numbers_lists_and_none_and_refuse_malformed_ones():
    assert choose.parse_variant(["v", "train.epochs=4", "train.lr=1e-3", "train.gram_layers=relu1_2,relu2_2",
                                 "train.ema=none", "train.schedule=cosine"]) == (
        "v", {"train.epochs": 4, "train.lr": 1e-3, "train.gram_layers": ["relu1_2", "relu2_2"], "train.ema": None,
              "train.schedule": "cosine"})
    for words in (["v"], ["train.epochs=4"], ["v", "train.epochs"]):
        with pytest.raises(SystemExit, match="KEY=VALUE"):
            choose.parse_variant(words)


def _fake_runs(tmp_path, monkeypatch):
    src = tmp_path / "run"
    for name in choose.SHARED:
        (src / name).mkdir(parents=True) if "." not in name else (src / name).write_text("{}")
    (src / "train").mkdir()
    monkeypatch.setattr(choose, "load_config", lambda *a, **k: profile_config("demo"))
    seen = []

    def fake_train(cfg, where, method, seed=None, progress=True, log=print):
        seen.append((cfg.train.epochs, cfg.train.gram_layers, Path(where), method.key, seed))
        worse = cfg.train.epochs == 3 or cfg.train.gram_layers == ("relu1_2",)
        loss = {"ot": 1.0, "random": 2.0}.get(method.key, 3.0) * (1 + 0.01 * seed) * (0.5 if worse else 1.0)
        rule = "paired_loss" if method.pairing == "paired" else "pseudo_loss"
        truth = {"psnr": 20.0 - worse, "ssim": 0.5, "delta_e2000": 10.0 + 2 * worse}
        return SimpleNamespace(checkpoint_rule=rule, best_epoch=cfg.train.epochs, best={rule: loss},
                               seconds=cfg.train.epochs * 10.0, loaded=where == src, truth=truth)

    monkeypatch.setattr(choose.scoring, "train_method", fake_train)
    monkeypatch.setattr(choose, "ValidationTruth", lambda cfg, run_dir: SimpleNamespace(scores=lambda r: r.truth))
    return src, seen


def test_variants_are_compared_run_by_run_and_held_out_losses_only_for_the_same_objective(tmp_path, monkeypatch,
                                                                                          capsys):
    src, seen = _fake_runs(tmp_path, monkeypatch)
    out = tmp_path / "out"
    assert choose.main(["--run-dir", str(src), "--out", str(out), "--variant", "e3", "train.epochs=3",
                        "--variant", "short", "train.gram_layers=relu1_2,"]) == 0
    base = profile_config("demo").train
    base_epochs = base.epochs
    assert {w for e, g, w, _, _ in seen if e == base_epochs and g == base.gram_layers} == {src}  # the profile's: in place
    assert {w for e, _, w, _, _ in seen if e == 3} == {out / "e3"}
    assert {w for _, g, w, _, _ in seen if g == ("relu1_2",)} == {out / "short"}
    assert (out / "e3" / "match").is_symlink()
    summary = json.loads((out / "choose_stage1.json").read_text())["summary"]
    # 3 epochs: the same objective, so its (here lower) held-out loss is compared: better in all 15 runs
    assert summary["e3"]["figures"]["held_out"]["worse"] == 0
    assert summary["e3"]["figures"]["held_out"]["median"] == pytest.approx(-0.5)
    # fewer Gram layers: another objective, so a lower loss is not counted as better; ground truth says worse
    assert "held_out" not in summary["short"]["figures"]
    for figure, change in (("psnr", -1.0), ("delta_e2000", -2.0), ("ssim", 0.0)):
        assert summary["short"]["figures"][figure]["median"] == pytest.approx(change)
    assert summary["short"]["figures"]["psnr"]["worse"] == 15 and summary["short"]["figures"]["ssim"]["worse"] == 0
    printed = capsys.readouterr().out
    assert "held-out loss not compared (another objective)" in printed and "worse in 15 of 15 runs" in printed
    seen.clear()
    assert choose.main(["--run-dir", str(src), "--out", str(out), "--variant", "e3", "train.epochs=3",
                        "--rows", "ot", "knn", "--seeds", "0"]) == 0
    assert sorted((e, k, s) for e, _, _, k, s in seen) == [(3, "knn", 0), (3, "ot", 0), (base_epochs, "knn", 0),
                                                           (base_epochs, "ot", 0)]


def test_a_variant_with_a_bad_setting_is_refused_before_any_training(tmp_path, monkeypatch):
    src, seen = _fake_runs(tmp_path, monkeypatch)
    for bad, named in (("train.epochs=many", "TrainConfig.epochs"), ("train.epochs=0", "TrainConfig.epochs"),
                       ("train.gram_layers=,", "TrainConfig.gram_layers: expected None or one or more"), ("train.nothing=1", "nothing")):
        with pytest.raises(SystemExit, match=named):
            choose.main(["--run-dir", str(src), "--out", str(tmp_path / "out"), "--variant", "bad", bad])
    assert seen == []


def test_validation_truth_scores_the_kept_network_on_its_held_out_patches(tiny_dataset, tmp_path):
    run_dir = tmp_path / "run"
    preprocess_split(tiny_dataset, "train", run_dir / "preprocessed",
                     PreprocessConfig(demosaicker="bilinear", denoiser="none"), progress=False)
    split = open_dataset(tiny_dataset)["train"]
    random_graph(sorted(p.id for p in split.raw_patches()), sorted(p.id for p in split.jpeg_patches()), 3).save(
        run_dir / "match" / "random" / "patch_graph.npz")
    cfg = load_config("tiny", data_dir=tiny_dataset, run_dir=run_dir, device="cpu", environ={},
                      overrides={"train.pairing": "random", "train.gram": 0.0, "train.epochs": 1})
    result = loop.train(cfg, run_dir, progress=False, log=lambda *_: None)
    scores = choose.ValidationTruth(cfg, run_dir).scores(result)
    gt = {p.id: p.path for s in split.gt.values() for p in s.patches}
    x = torch.from_numpy(np.stack([load_preprocessed(run_dir / "preprocessed", "train", i) for i in result.val_ids]))
    with torch.no_grad():
        pred = (result.model(x.float()).clamp(0, 1) * 255).round() / 255
    expected = metrics.image_metrics(pred, read_rgb_batch([gt[i] for i in result.val_ids]))
    assert result.val_ids and set(scores) == set(choose.TRUTH)
    for k, v in expected.items():
        assert scores[k] == pytest.approx(float(v.mean()), rel=1e-5)
