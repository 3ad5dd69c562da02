"""Stage-1 / stage-2 training: pairs, resume, loading, non-finite steps, and that training learns."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from isp_support import losses, training
from isp_support.config import PreprocessConfig, load_config
from isp_support.data import open_dataset
from isp_support.matching import random_graph
from isp_support.models import ColourNet
from isp_support.raw import preprocess_split


@pytest.fixture(scope="module")
def run(tiny_dataset, tmp_path_factory):
    """A RUN_DIR with the tiny set's pre-processed source patches and a random pair graph (notebooks 01 and 03)."""
    run_dir = tmp_path_factory.mktemp("train") / "run"
    preprocess_split(tiny_dataset, "train", run_dir / "preprocessed",
                     PreprocessConfig(demosaicker="bilinear", denoiser="none"), progress=False)
    split = open_dataset(tiny_dataset)["train"]
    graph = random_graph(sorted(p.id for p in split.raw_patches()), sorted(p.id for p in split.jpeg_patches()), 3)
    graph.save(run_dir / "match" / "random" / "patch_graph.npz")
    return run_dir


def cfg_for(dataset, run_dir, **overrides):
    base = {"train.pairing": "random", "train.gram": 0.0, "train.epochs": 3, "train.batch_size": 4,
            "train.lr": 1e-3}
    return load_config("tiny", data_dir=dataset, run_dir=run_dir, device="cpu", environ={},
                       overrides={**base, **overrides})


def quiet(*_):
    pass


def test_pair_source_holds_out_whole_scenes(tiny_dataset, run):
    cfg = cfg_for(tiny_dataset, run)
    src = training.pair_source(cfg, run)
    scene = lambda pid: pid.rsplit("_", 1)[0]  # noqa: E731
    assert src.train_ids and src.val_ids
    assert {scene(i) for i in src.val_ids} == set(src.val_scenes)
    assert not {scene(i) for i in src.train_ids} & set(src.val_scenes)
    assert training.pair_source(cfg, run) == src                      # seeded


def test_pair_source_names_what_is_missing(tiny_dataset, run, tmp_path):
    cfg = cfg_for(tiny_dataset, run)
    with pytest.raises(training.TrainingError, match=r"match/ot/patch_graph.npz.*03_embed_match"):
        training.pair_source(cfg, run, "ot")
    with pytest.raises(training.TrainingError, match="01_preprocess"):
        training.pair_source(cfg, tmp_path, "random")
    with pytest.raises(training.TrainingError, match="unknown pairing"):
        training.pair_source(cfg, run, "nearest")


def test_epoch_plan_is_seeded_and_draws_from_the_graph(tiny_dataset, run):
    src = training.pair_source(cfg_for(tiny_dataset, run), run)
    order, targets, _ = training.epoch_plan(src, 1, seed=0)
    assert sorted(order) == sorted(src.train_ids)
    assert training.epoch_plan(src, 1, seed=0)[:2] == (order, targets)
    assert training.epoch_plan(src, 2, seed=0)[:2] != (order, targets)
    for sid, path in zip(order, targets):
        assert path.stem in {t for t, _ in src.graph.row(sid)}


def test_paired_pairs_each_patch_with_its_own_ground_truth(tiny_dataset, run):
    src = training.pair_source(cfg_for(tiny_dataset, run), run, "paired")
    order, targets, _ = training.epoch_plan(src, 1, seed=0)
    assert [p.stem for p in targets] == order and all(p.parent.name == "gt" for p in targets)


def _weights(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def test_resume_after_a_kill_equals_an_uninterrupted_run(tiny_dataset, run):
    cfg = cfg_for(tiny_dataset, run, **{"train.ema": 0.9, "train.schedule": "cosine"})
    whole = training.train(cfg, run, name="whole", progress=False, log=quiet)

    def kill(epoch, record):
        if epoch == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        training.train(cfg, run, name="killed", progress=False, on_epoch_end=kill, log=quiet)
    assert not (run / "train" / "killed" / training.RESULT).exists()
    lines = []
    resumed = training.train(cfg, run, name="killed", progress=False, log=lines.append)
    assert any("resuming after epoch 2" in line for line in lines)
    a, b = _weights(whole.model), _weights(resumed.model)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    strip = lambda h: [{k: v for k, v in r.items() if k not in ("seconds", "patches_per_second")} for r in h]  # noqa
    assert strip(whole.history) == strip(resumed.history)
    assert whole.best_epoch == resumed.best_epoch


def test_a_finished_run_is_loaded_unless_asked(tiny_dataset, run):
    cfg = cfg_for(tiny_dataset, run, **{"train.epochs": 1})
    first = training.train(cfg, run, name="once", progress=False, log=quiet)
    lines = []
    again = training.train(cfg, run, name="once", progress=False, log=lines.append)
    assert again.loaded and not first.loaded and "finished run found" in lines[0]
    assert all(torch.equal(x, y) for x, y in zip(_weights(first.model).values(), _weights(again.model).values()))
    other = cfg.replace(**{"train.lr": 5e-4})
    with pytest.raises(training.TrainingError, match="other settings"):
        training.train(other, run, name="once", progress=False, log=quiet)
    assert not training.train(other, run, name="once", retrain=True, progress=False, log=quiet).loaded


def test_non_finite_losses_skip_the_step_and_are_reported(tiny_dataset, run, monkeypatch):
    real = losses.stage1_loss
    calls = {"n": 0}

    def sometimes_nan(*args, **kwargs):
        total, terms = real(*args, **kwargs)
        calls["n"] += 1
        return (total * float("nan"), terms) if calls["n"] % 2 else (total, terms)

    monkeypatch.setattr(losses, "stage1_loss", sometimes_nan)
    cfg = cfg_for(tiny_dataset, run, **{"train.epochs": 2})
    lines = []
    result = training.train(cfg, run, name="nan", progress=False, log=lines.append)
    steps = sum(-(-len(training.pair_source(cfg, run).train_ids) // 4) for _ in range(2))
    assert result.skipped_steps == (steps + 1) // 2
    assert all(np.isfinite(v) for h in result.history[1:] for v in h["terms"].values())
    assert any("non-finite" in line for line in lines) and any("non-finite" in n for n in result.notes)
    assert all(torch.isfinite(p).all() for p in result.model.parameters())


def test_stage1_on_tiny_data_lowers_the_training_loss(tiny_dataset, run):
    """The paper's stage-1 loss (Gram on the offline VGG16 included) on fixed pseudo pairs, before and after."""
    cfg = cfg_for(tiny_dataset, run, **{"train.gram": 1.0, "train.epochs": 6})
    result = training.train(cfg, run, name="learns", progress=False, log=quiet)
    src = training.pair_source(cfg, run)
    order, targets, _ = training.epoch_plan(src, 1, cfg.seed)
    x = torch.stack([training.read_source(src.source_files[i]) for i in order])
    y = torch.stack([training.read_target(t) for t in targets])
    gram = losses.gram_loss_for(cfg, log=quiet, scale=None, reduction="mean")
    weights = training.loss_weights(cfg, 1, "random")
    torch.manual_seed(0)
    with torch.no_grad():
        before = float(losses.stage1_loss(ColourNet()(x), y, weights, gram)[0])
        trained = ColourNet()
        last = torch.load(sorted((result.folder / "checkpoints").glob("*.pt"))[-1], weights_only=True)
        trained.load_state_dict(last["model"])
        after = float(losses.stage1_loss(trained(x), y, weights, gram)[0])
    print(f"stage-1 loss on fixed pairs: {before:.4f} -> {after:.4f}")
    assert after < 0.9 * before


def test_stage2_refines_from_stage1_with_either_discriminator(tiny_dataset, run):
    cfg = cfg_for(tiny_dataset, run, **{"train.epochs": 1, "stage2.epochs": 1})
    with pytest.raises(training.TrainingError, match="stage-1 checkpoint"):
        training.train(cfg, run, stage=2, progress=False, log=quiet)
    stage1 = training.train(cfg, run, progress=False, log=quiet)
    for disc in ("unet", "experts"):
        c = cfg.replace(**{"stage2.discriminator": disc})
        result = training.train(c, run, stage=2, progress=False, log=quiet)
        assert result.name == "stage2_random" + ("" if disc == "unet" else "_experts")
        terms = result.history[1]["terms"]
        assert {"adv", "d_loss", "mom", "total"} <= set(terms)
        if disc == "experts":
            assert {"d_colour", "d_structure", "d_frequency"} <= set(terms)
        state = torch.load(sorted((result.folder / "checkpoints").glob("*.pt"))[-1], weights_only=True)
        assert state["disc"] is not None
        # epoch 0 of stage 2 is the stage-1 network
        assert result.history[0]["colour_distance"] == pytest.approx(stage1.best["colour_distance"], rel=1e-6)


def test_paired_upper_bound_modes(tiny_dataset, run):
    for loss in ("l1", "pal"):
        cfg = cfg_for(tiny_dataset, run, **{"train.pairing": "paired", "train.paired_loss": loss,
                                            "train.epochs": 1})
        result = training.train(cfg, run, progress=False, log=quiet)
        assert result.name == f"stage1_paired_{loss}"
        assert ("l1" if loss == "l1" else "pal") in result.history[1]["terms"]


def test_lut_head_trains_and_reloads(tiny_dataset, run):
    cfg = cfg_for(tiny_dataset, run, **{"train.head": "lut", "train.epochs": 1})
    result = training.train(cfg, run, progress=False, log=quiet)
    assert result.name == "stage1_random_lut" and result.model.head_type == "lut"
    reloaded = training.load_model(result.folder / training.BEST)
    x = torch.rand(1, 3, 8, 8)
    assert torch.equal(reloaded(x), result.model(x))


def test_corrupt_checkpoint_names_the_file(tiny_dataset, run):
    cfg = cfg_for(tiny_dataset, run, **{"train.epochs": 2})

    def kill(epoch, record):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        training.train(cfg, run, name="corrupt", progress=False, on_epoch_end=kill, log=quiet)
    ckpt = sorted((run / "train" / "corrupt" / "checkpoints").glob("*.pt"))[-1]
    ckpt.write_bytes(ckpt.read_bytes()[:100])
    with pytest.raises(training.TrainingError, match=ckpt.name):
        training.train(cfg, run, name="corrupt", progress=False, log=quiet)
    shutil.rmtree(run / "train" / "corrupt")


def test_result_json_records_settings_and_history(tiny_dataset, run):
    cfg = cfg_for(tiny_dataset, run, **{"train.epochs": 1})
    result = training.train(cfg, run, name="record", progress=False, log=quiet)
    saved = json.loads((result.folder / training.RESULT).read_text())
    assert saved["settings"]["train"]["lr"] == cfg.train.lr and saved["settings"]["seed"] == cfg.seed
    assert [h["epoch"] for h in saved["history"]] == [0, 1]
    assert (result.folder / "samples" / "epoch_001.png").is_file()
    assert result.summary()["parameters"] == 7055
