"""Stage-1 / stage-2 training: pairs, crops, checkpoint rules, resume, loading, non-finite steps, and that
training learns."""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from isp_support.train import TrainingError, checkpoint, losses, objectives, pairs, precision, validate
from isp_support.train.gram import gram_loss_for
from isp_support.train import loop
from isp_support.config import ConfigError, PreprocessConfig, load_config
from isp_support.embed import weights_files
from isp_support.data import open_dataset
from isp_support.io import read_rgb_tensor
from isp_support.pairing.baselines import random_graph
from isp_support.train import models
from isp_support.train.models import ColourNet
from isp_support.pipeline.preprocess import preprocess_split
from isp_support.runs import run_name


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
    src = pairs.pair_source(cfg, run)
    scene = lambda pid: pid.rsplit("_", 1)[0]  # noqa: E731
    assert src.train_ids and src.val_ids
    assert {scene(i) for i in src.val_ids} == set(src.val_scenes)
    assert not {scene(i) for i in src.train_ids} & set(src.val_scenes)
    assert pairs.pair_source(cfg, run) == src                      # seeded


def test_pair_source_names_what_is_missing(tiny_dataset, run, tmp_path):
    cfg = cfg_for(tiny_dataset, run)
    with pytest.raises(TrainingError, match=r"match/ot/patch_graph.npz.*03_embed_match"):
        pairs.pair_source(cfg, run, "ot")
    with pytest.raises(TrainingError, match="01_preprocess"):
        pairs.pair_source(cfg, tmp_path, "random")
    with pytest.raises(TrainingError, match="unknown pairing"):
        pairs.pair_source(cfg, run, "nearest")


def test_epoch_plan_is_seeded_and_draws_from_the_graph(tiny_dataset, run):
    cfg = cfg_for(tiny_dataset, run)
    src = pairs.pair_source(cfg, run)
    order, targets, _ = pairs.epoch_plan(src, 1, cfg)
    assert sorted(order) == sorted(src.train_ids)
    assert pairs.epoch_plan(src, 1, cfg)[:2] == (order, targets)
    assert pairs.epoch_plan(src, 2, cfg)[:2] != (order, targets)
    for sid, path in zip(order, targets):
        assert path.stem in {t for t, _ in src.graph.row(sid)}


def test_fixed_randomness_holds_one_source_and_lets_the_others_follow_the_seed(tiny_dataset, run):
    """The seed spread's study (benchmarks/seed_spread.py) holds every source of randomness but one at seed 0."""
    def plan(seed, fixed=()):
        cfg = cfg_for(tiny_dataset, run, **{"seed": seed, "train.crop": 8, "train.fixed_randomness": fixed})
        src = pairs.pair_source(cfg, run)
        order, targets, crops = pairs.epoch_plan(src, 1, cfg)
        return src.val_scenes, order, targets, crops

    seeds = [plan(s) for s in range(8)]
    assert len({s[0] for s in seeds}) > 1 and len({tuple(s[1]) for s in seeds}) > 1
    others = ("split", "order", "targets", "validation", "init")
    only_crops = [plan(s, others) for s in range(3)]
    assert all(p[:3] == only_crops[0][:3] for p in only_crops)
    assert not np.array_equal(only_crops[0][3], only_crops[1][3])
    held = plan(5, ("split", "order", "targets", "crops"))
    assert held[:3] == plan(0)[:3] and np.array_equal(held[3], plan(0)[3])
    with pytest.raises(ConfigError, match="fixed_randomness"):
        cfg_for(tiny_dataset, run, **{"train.fixed_randomness": ("weights",)})


def test_paired_pairs_each_patch_with_its_own_ground_truth(tiny_dataset, run):
    cfg = cfg_for(tiny_dataset, run)
    src = pairs.pair_source(cfg, run, "paired")
    order, targets, _ = pairs.epoch_plan(src, 1, cfg)
    assert [p.stem for p in targets] == order and all(p.parent.name == "gt" for p in targets)


def test_crops_of_a_pair_cover_the_same_relative_window(tmp_path):
    """Pixels encode their own coordinates, so a crop shows where it was cut."""
    def coords(h, w):
        yy, xx = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
        return np.stack([yy, xx, np.zeros_like(yy)])

    np.save(tmp_path / "s.npy", (coords(40, 40) / 255).astype(np.float32))
    Image.fromarray(coords(40, 40).transpose(1, 2, 0).astype(np.uint8)).save(tmp_path / "same.png")
    Image.fromarray(coords(80, 60).transpose(1, 2, 0).astype(np.uint8)).save(tmp_path / "large.png")
    offsets = np.array([[0.3, 0.8], [0.3, 0.8]])
    ds = pairs._PairDataset([tmp_path / "s.npy"] * 2, [tmp_path / "same.png", tmp_path / "large.png"], offsets, 8)
    x, y = ds[0]
    assert x.shape == y.shape == (3, 8, 8)
    assert torch.allclose(x, y, atol=1e-6)                                  # same window, pixel for pixel
    x, y = ds[1]                                                            # a 80 x 60 target
    x0 = (round(float(x[0, 0, 0]) * 255), round(float(x[1, 0, 0]) * 255))
    y0 = (round(float(y[0, 0, 0]) * 255), round(float(y[1, 0, 0]) * 255))
    assert x0 == (int(0.3 * 33), int(0.8 * 33)) and y0 == (int(0.3 * 73), int(0.8 * 53))  # same fractional offsets


def test_pseudo_pairs_are_cut_with_one_offset_per_pair(tiny_dataset, run):
    cfg = cfg_for(tiny_dataset, run, **{"train.crop": 16})
    ds = pairs.epoch_loader(pairs.pair_source(cfg, run), 1, cfg, "cpu").dataset
    assert ds.offsets.shape == (len(ds), 2) and ds.crop == 16
    x, y = ds[0]
    assert x.shape == y.shape == (3, 16, 16)


def test_targets_decoded_once_give_the_same_batches(tiny_dataset, run):
    cfg = cfg_for(tiny_dataset, run, **{"train.crop": 16})
    src = pairs.pair_source(cfg, run)
    cached = list(pairs.epoch_loader(src, 1, cfg, "cpu"))
    assert list(src.cache_dir.glob("*.npy"))                                 # decoded into the run folder, once
    plain = list(pairs.epoch_loader(src, 1, cfg, "cpu", decode_once=False))
    assert all(torch.equal(a, b) for (xa, ya), (xb, yb) in zip(cached, plain) for a, b in ((xa, xb), (ya, yb)))


def test_decoded_targets_are_rebuilt_when_a_file_changes_and_skip_unequal_sizes(tmp_path):
    from isp_support.io import read_rgb_tensor
    from isp_support.train.decoded import DecodedTargets

    rng = np.random.default_rng(0)
    files = [tmp_path / f"t_{i}.jpg" for i in range(3)]
    for f in files:
        Image.fromarray(rng.integers(0, 256, (12, 10, 3), dtype=np.uint8)).save(f, quality=90)
    first = DecodedTargets.build(files, tmp_path / "cache")
    assert all(torch.equal(first.tensor(f), read_rgb_tensor(f)) for f in files)   # the same values, bit for bit
    assert DecodedTargets.build(files, tmp_path / "cache").array_path == first.array_path
    Image.fromarray(rng.integers(0, 256, (12, 10, 3), dtype=np.uint8)).save(files[1], quality=90)
    os.utime(files[1], ns=(1, 1))
    again = DecodedTargets.build(files, tmp_path / "cache")
    assert again.array_path != first.array_path and torch.equal(again.tensor(files[1]), read_rgb_tensor(files[1]))
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(files[2])
    said = []
    assert DecodedTargets.build(files, tmp_path / "cache", log=said.append) is None and "differ in size" in said[0]
    assert not list((tmp_path / "cache").glob(".*partial*"))


def test_kept_epoch_respects_the_structure_floor_and_keeps_epoch_0_as_a_candidate():
    history = [{"epoch": 0, "structure": 1.0, "pseudo_loss": 0.50, "colour_distance": 0.30},
               {"epoch": 1, "structure": 0.95, "pseudo_loss": 0.40, "colour_distance": 0.20},
               {"epoch": 2, "structure": 0.70, "pseudo_loss": 0.10, "colour_distance": 0.05},   # below the floor
               {"epoch": 3, "structure": 0.92, "pseudo_loss": float("nan"), "colour_distance": 0.25},
               {"epoch": 4, "structure": 0.91, "pseudo_loss": 0.40, "colour_distance": 0.01}]
    assert validate.kept_epoch(history, "pseudo_loss", 0.9) == 1            # ties keep the earlier epoch
    assert validate.kept_epoch(history, "colour_distance", 0.9) == 4
    assert validate.kept_epoch(history, "pseudo_loss", 0.96) == 0           # only the starting network is left
    history[0]["structure"] = 0.5                                           # epoch 0 stays a candidate
    assert validate.kept_epoch(history, "pseudo_loss", 0.99) == 0
    for floor in (0.0, 0.8, 0.9, 0.93):
        kept = validate.kept_epoch(history, "pseudo_loss", floor)
        assert kept == 0 or next(h for h in history if h["epoch"] == kept)["structure"] >= floor


def test_checkpoint_rules_resolve_and_unknown_ones_are_named(tiny_dataset, run):
    cfg = cfg_for(tiny_dataset, run)
    assert validate.checkpoint_rule(cfg, "ot") == "pseudo_loss"
    assert validate.checkpoint_rule(cfg, "paired") == "paired_loss"
    assert validate.checkpoint_rule(cfg.replace(**{"train.checkpoint_rule": "colour_distance"}), "paired") \
        == "colour_distance"
    with pytest.raises(TrainingError, match="auto, pseudo_loss, paired_loss, colour_distance"):
        loop.train(cfg.replace(**{"train.checkpoint_rule": "best"}), run, progress=False, log=quiet)
    with pytest.raises(TrainingError, match="only pairing='paired'"):
        validate.checkpoint_rule(cfg.replace(**{"train.checkpoint_rule": "paired_loss"}), "random")
    with pytest.raises(TrainingError, match="needs a pair graph"):
        validate.checkpoint_rule(cfg.replace(**{"train.checkpoint_rule": "pseudo_loss"}), "paired")


def test_per_pair_moment_is_wired_into_the_loss_and_the_run_name(tiny_dataset, run):
    cfg = cfg_for(tiny_dataset, run)
    assert not objectives.loss_weights(cfg, 1, "ot").moment_per_sample
    pair = cfg.replace(**{"train.moment": "pair"})
    assert objectives.loss_weights(pair, 1, "ot").moment_per_sample
    assert objectives.loss_weights(pair, 2, "ot").moment_per_sample
    assert run_name(1, "ot", pair) == "stage1_ot_pairmoment"
    with pytest.raises(TrainingError, match="TrainConfig.moment"):
        objectives.loss_weights(cfg.replace(**{"train.moment": "image"}), 1, "ot")


def _weights(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def test_resume_after_a_kill_equals_an_uninterrupted_run(tiny_dataset, run):
    cfg = cfg_for(tiny_dataset, run, **{"train.ema": 0.9, "train.schedule": "cosine"})
    whole = loop.train(cfg, run, name="whole", progress=False, log=quiet)

    def kill(epoch, record):
        if epoch == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        loop.train(cfg, run, name="killed", progress=False, on_epoch_end=kill, log=quiet)
    assert not (run / "train" / "killed" / loop.RESULT).exists()
    assert not (run / "train" / "killed" / loop.BEST).exists()  # nothing a user could take for a trained network
    lines = []
    resumed = loop.train(cfg, run, name="killed", progress=False, log=lines.append)
    assert any("resuming after epoch 2" in line for line in lines)
    a, b = _weights(whole.model), _weights(resumed.model)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    strip = lambda h: [{k: v for k, v in r.items() if k not in ("seconds", "patches_per_second")} for r in h]  # noqa
    assert strip(whole.history) == strip(resumed.history)
    assert whole.best_epoch == resumed.best_epoch
    for epoch in range(4):
        a, b = (_weights(checkpoint.load_epoch(r.folder, epoch)) for r in (whole, resumed))
        assert all(torch.equal(a[k], b[k]) for k in a)


def test_a_finished_run_is_loaded_unless_asked(tiny_dataset, run):
    cfg = cfg_for(tiny_dataset, run, **{"train.epochs": 1})
    first = loop.train(cfg, run, name="once", progress=False, log=quiet)
    lines = []
    again = loop.train(cfg, run, name="once", progress=False, log=lines.append)
    assert again.loaded and not first.loaded and "finished run found" in lines[0]
    assert all(torch.equal(x, y) for x, y in zip(_weights(first.model).values(), _weights(again.model).values()))
    assert loop.train(cfg.replace(**{"train.workers": 2}), run, name="once", progress=False, log=quiet).loaded
    other = cfg.replace(**{"train.lr": 5e-4})
    with pytest.raises(TrainingError, match="other settings"):
        loop.train(other, run, name="once", progress=False, log=quiet)
    assert not loop.train(other, run, name="once", retrain=True, progress=False, log=quiet).loaded


def test_non_finite_losses_skip_the_step_and_are_reported(tiny_dataset, run, monkeypatch):
    real = losses.stage1_loss
    calls = {"n": 0}

    def sometimes_nan(*args, **kwargs):
        total, terms = real(*args, **kwargs)
        if not torch.is_grad_enabled():  # the held-out validation loss
            return total, terms
        calls["n"] += 1
        return (total * float("nan"), terms) if calls["n"] % 2 else (total, terms)

    monkeypatch.setattr(losses, "stage1_loss", sometimes_nan)
    cfg = cfg_for(tiny_dataset, run, **{"train.epochs": 2})
    lines = []
    result = loop.train(cfg, run, name="nan", progress=False, log=lines.append)
    steps = sum(-(-len(pairs.pair_source(cfg, run).train_ids) // 4) for _ in range(2))
    assert result.skipped_steps == (steps + 1) // 2
    assert all(np.isfinite(v) for h in result.history[1:] for v in h["terms"].values())
    assert any("non-finite" in line for line in lines) and any("non-finite" in n for n in result.notes)
    assert all(torch.isfinite(p).all() for p in result.model.parameters())


def test_stage1_on_tiny_data_lowers_the_training_loss(tiny_dataset, run):
    """The paper's stage-1 loss (Gram on the offline VGG16 included) on fixed pseudo pairs, before and after."""
    cfg = cfg_for(tiny_dataset, run, **{"train.gram": 1.0, "train.epochs": 6})
    result = loop.train(cfg, run, name="learns", progress=False, log=quiet)
    src = pairs.pair_source(cfg, run)
    order, targets, _ = pairs.epoch_plan(src, 1, cfg)
    x = torch.stack([pairs.read_source(src.source_files[i]) for i in order])
    y = torch.stack([read_rgb_tensor(t) for t in targets])
    gram = gram_loss_for(cfg, log=quiet, scale=None, reduction="mean")
    weights = objectives.loss_weights(cfg, 1, "random")
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
    with pytest.raises(TrainingError, match="stage-1 checkpoint"):
        loop.train(cfg, run, stage=2, progress=False, log=quiet)
    stage1 = loop.train(cfg, run, progress=False, log=quiet)
    for disc in ("unet", "experts"):
        c = cfg.replace(**{"stage2.discriminator": disc})
        result = loop.train(c, run, stage=2, progress=False, log=quiet)
        assert result.name == "stage2_random" + ("" if disc == "unet" else "_experts")
        terms = result.history[1]["terms"]
        assert {"adv", "d_loss", "mom", "total"} <= set(terms)
        if disc == "experts":
            assert {"d_colour", "d_structure", "d_frequency"} <= set(terms)
        state = torch.load(sorted((result.folder / "checkpoints").glob("*.pt"))[-1], weights_only=True)
        assert state["disc"] is not None
        # epoch 0 of stage 2 is the stage-1 network, scored by the same (stage-1) held-out loss
        assert result.history[0]["colour_distance"] == pytest.approx(stage1.best["colour_distance"], rel=1e-6)
        assert result.history[0]["pseudo_loss"] == pytest.approx(stage1.best["pseudo_loss"], rel=1e-6)
        assert result.best["pseudo_loss"] <= stage1.best["pseudo_loss"] * (1 + 1e-6)


def test_paired_upper_bound_modes(tiny_dataset, run):
    for loss in ("l1", "pal"):
        cfg = cfg_for(tiny_dataset, run, **{"train.pairing": "paired", "train.paired_loss": loss,
                                            "train.epochs": 1})
        result = loop.train(cfg, run, progress=False, log=quiet)
        assert result.name == f"stage1_paired_{loss}"
        assert ("l1" if loss == "l1" else "pal") in result.history[1]["terms"]
        assert result.checkpoint_rule == "paired_loss"
        assert all("paired_loss" in h and "pseudo_loss" not in h for h in result.history)


def test_paired_l1_keeps_the_epoch_of_lowest_held_out_loss_not_the_untrained_network(tiny_dataset, run):
    cfg = cfg_for(tiny_dataset, run, **{"train.pairing": "paired", "train.paired_loss": "l1", "train.epochs": 4})
    result = loop.train(cfg, run, name="paired_rule", progress=False, log=quiet)
    held = {h["epoch"]: h["paired_loss"] for h in result.history if h["structure"] >= cfg.train.min_structure}
    print("held-out L1 per epoch:", {k: round(v, 4) for k, v in held.items()})
    assert min(held.values()) < held[0]                      # the held-out loss falls ...
    assert result.best_epoch == min(held, key=held.get) != 0  # ... so the untrained network is not kept
    # the held-out L1 is the mean absolute error of the validation patches against their train/gt
    src = pairs.pair_source(cfg, run, "paired")
    x = torch.stack([pairs.read_source(src.source_files[i]) for i in src.val_ids])
    y = torch.stack([read_rgb_tensor(src.gt_files[i]) for i in src.val_ids])
    with torch.no_grad():
        assert float((result.model(x) - y).abs().mean()) == pytest.approx(result.best["paired_loss"], rel=1e-5)
    assert any("checkpoint rule 'paired_loss': epoch" in n for n in result.notes)


def test_every_epoch_keeps_its_evaluated_weights(tiny_dataset, run):
    cfg = cfg_for(tiny_dataset, run, **{"train.epochs": 2, "train.ema": 0.5})
    result = loop.train(cfg, run, name="epochs", progress=False, log=quiet)
    models = checkpoint.epoch_models(result.folder)
    assert sorted(models) == [0, 1, 2]
    x = torch.rand(1, 3, 8, 8)
    assert torch.equal(models[0](x), x)                      # epoch 0: the untrained identity
    assert torch.equal(models[result.best_epoch](x), result.model(x))
    last = torch.load(sorted((result.folder / "checkpoints").glob("*.pt"))[-1], weights_only=True)
    ema = {k.removeprefix("module."): v for k, v in last["ema"].items() if k.startswith("module.")}
    assert all(torch.equal(ema[k], v) for k, v in _weights(models[2]).items())  # the EMA, not the raw weights
    with pytest.raises(TrainingError, match="epoch_007.pt"):
        checkpoint.load_epoch(result.folder, 7)
    assert all(h["pseudo_loss"] >= 0 for h in result.history) and result.checkpoint_rule == "pseudo_loss"


def test_lut_head_trains_and_reloads(tiny_dataset, run):
    cfg = cfg_for(tiny_dataset, run, **{"train.head": "lut", "train.epochs": 1})
    result = loop.train(cfg, run, progress=False, log=quiet)
    assert result.name == "stage1_random_lut" and result.model.head_type == "lut"
    reloaded = checkpoint.load_model(result.folder / loop.BEST)
    x = torch.rand(1, 3, 8, 8)
    assert torch.equal(reloaded(x), result.model(x))


def test_corrupt_checkpoint_names_the_file(tiny_dataset, run):
    cfg = cfg_for(tiny_dataset, run, **{"train.epochs": 2})

    def kill(epoch, record):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        loop.train(cfg, run, name="corrupt", progress=False, on_epoch_end=kill, log=quiet)
    ckpt = sorted((run / "train" / "corrupt" / "checkpoints").glob("*.pt"))[-1]
    ckpt.write_bytes(ckpt.read_bytes()[:100])
    with pytest.raises(TrainingError, match=ckpt.name):
        loop.train(cfg, run, name="corrupt", progress=False, log=quiet)
    shutil.rmtree(run / "train" / "corrupt")


def test_result_json_records_settings_and_history(tiny_dataset, run):
    cfg = cfg_for(tiny_dataset, run, **{"train.epochs": 1})
    lines = []
    result = loop.train(cfg, run, name="record", progress=False, log=lines.append)
    saved = json.loads((result.folder / loop.RESULT).read_text())
    assert saved["settings"]["train"]["lr"] == cfg.train.lr and saved["settings"]["seed"] == cfg.seed
    backends = {"cuda_matmul_allow_tf32": False, "cudnn_allow_tf32": False, "float32_matmul_precision": "highest",
                "cudnn_benchmark": False, "cudnn_deterministic": True}
    assert saved["backends"] == backends and saved["gram_backbone"] is None   # as set; no Gram term here
    assert "backends" not in saved["settings"]                                  # not a setting: runs still load
    assert any(f"backends {backends}" in line and "Gram backbone none" in line for line in lines)
    assert [h["epoch"] for h in saved["history"]] == [0, 1]
    assert saved["checkpoint_rule"] == "pseudo_loss" and result.summary()["checkpoint_rule"] == "pseudo_loss"
    assert {"colour_distance", "structure", "pseudo_loss"} <= set(result.summary()["best"])
    truncated = (result.folder / loop.RESULT).read_bytes()[:40]
    (result.folder / loop.RESULT).write_bytes(truncated)   # a damaged record: a named error, not JSONDecodeError
    with pytest.raises(TrainingError, match=r"result.json: not JSON .*truncated or damaged; delete"):
        loop.train(cfg, run, name="record", progress=False, log=quiet)
    assert (result.folder / "samples" / "epoch_001.png").is_file()
    assert result.summary()["parameters"] == 7055


def test_gram_layers_are_a_setting_of_the_run_recorded_only_when_set(tiny_dataset, run):
    cfg = cfg_for(tiny_dataset, run, **{"train.epochs": 1, "train.gram": 1.0})
    default = loop.train(cfg, run, name="layers", progress=False, log=quiet)
    assert "gram_layers" not in default.settings["train"]     # runs trained before the setting existed still load
    short = cfg.replace(**{"train.gram_layers": ["relu1_2", "relu2_2"]})
    with pytest.raises(TrainingError, match="other settings"):
        loop.train(short, run, name="layers", progress=False, log=quiet)
    trained = loop.train(short, run, name="layers-short", progress=False, log=quiet)
    assert list(trained.settings["train"]["gram_layers"]) == ["relu1_2", "relu2_2"]
    assert trained.history[1]["pseudo_loss"] != default.history[1]["pseudo_loss"]


def test_a_stand_in_for_vgg19_is_recorded_as_the_gram_backbone_that_ran(tiny_dataset, run, monkeypatch, tmp_path):
    """Outside the full profile VGG19's offline stand-in is used when its weights are missing, and recorded."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    monkeypatch.setattr(weights_files, "_download_vgg19", lambda *a, **k: pytest.fail("tried to download VGG19"))
    cfg = cfg_for(tiny_dataset, run, **{"train.epochs": 1, "train.gram": 1.0, "embed.style_backbone": "vgg19",
                                        "embed.allow_download": False})
    lines = []
    first = loop.train(cfg, run, name="stand-in", progress=False, log=lines.append)
    assert any(line.startswith("WARNING [gram loss]") and "INSTEAD OF" in line for line in lines)
    assert any("Gram backbone vgg16_offline" in line for line in lines)
    saved = json.loads((first.folder / loop.RESULT).read_text())
    assert saved["gram_backbone"] == "vgg16_offline" and saved["settings"]["style_backbone"] == "vgg19"
    assert saved["settings"][loop.GRAM_BACKBONE_RAN] == first.settings[loop.GRAM_BACKBONE_RAN] == "vgg16_offline"
    lines.clear()
    again = loop.train(cfg, run, name="stand-in", progress=False, log=lines.append)  # the finished run still loads
    assert again.loaded and again.settings[loop.GRAM_BACKBONE_RAN] == "vgg16_offline"
    assert any(line.startswith("WARNING") and "ran on vgg16_offline" in line for line in lines)


def test_train_step_is_forward_loss_backward_and_one_optimiser_step():
    """The step :func:`train` takes for every batch, against the same step written out; non-finite: no update."""
    torch.manual_seed(0)
    x, y = torch.rand(2, 3, 12, 12), torch.rand(2, 3, 12, 12)
    by_hand, package = ColourNet(hidden=8), ColourNet(hidden=8)
    package.load_state_dict(by_hand.state_dict())
    weights = losses.LossWeights(gram=0.0)
    opt = torch.optim.AdamW(by_hand.parameters(), lr=1e-3)
    total, _ = losses.stage1_loss(by_hand(x), y, weights)
    opt.zero_grad()
    total.backward()
    opt.step()
    objective = objectives.Objective(lambda y_hat, t: losses.stage1_loss(y_hat, t, weights))
    terms = loop.train_step(package, torch.optim.AdamW(package.parameters(), lr=1e-3), x, y, objective)
    assert torch.equal(terms["total"], total.detach())
    assert all(torch.equal(a, b) for a, b in zip(by_hand.parameters(), package.parameters()))
    before = [p.clone() for p in package.parameters()]
    nan = objectives.Objective(lambda y_hat, t: (y_hat.sum() * float("nan"), {}))
    assert loop.train_step(package, torch.optim.AdamW(package.parameters(), lr=1e-3), x, y, nan) is None
    assert all(torch.equal(a, b) for a, b in zip(before, package.parameters()))


def test_the_steps_precision_is_logged_and_a_run_of_the_other_precision_is_not_loaded(tiny_dataset, run, monkeypatch):
    cfg = cfg_for(tiny_dataset, run, **{"train.epochs": 1, "train.cpu_amp": True})
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: True)
    lines = []
    first = loop.train(cfg, run, name="precision", progress=False, log=lines.append)
    assert first.settings["precision"] == "bfloat16 autocast"
    assert any("training steps in bfloat16 autocast" in line for line in lines)
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: False)  # the same settings on another CPU
    with pytest.raises(TrainingError, match="other settings"):
        loop.train(cfg, run, name="precision", progress=False, log=quiet)
    default = cfg_for(tiny_dataset, run, **{"train.epochs": 1})
    assert loop.train(default, run, name="fp32", progress=False, log=quiet).settings["precision"] == "float32"


def test_cache_batch_is_about_one_auto_tile_of_patches():
    assert models.cache_batch(96, 96, "cpu") == 1 and models.cache_batch(48, 48, "cpu") == 7
    assert models.cache_batch(300, 300, "cpu") == 1 and models.cache_batch(96, 96, "cuda:0") == 2048 ** 2 // 96 ** 2


def test_validation_in_cache_sized_sub_batches_gives_the_one_batch_figures(tiny_dataset, run, monkeypatch):
    cfg = cfg_for(tiny_dataset, run)
    validator = validate.Validator.for_source(pairs.pair_source(cfg, run), cfg)
    torch.manual_seed(3)
    model = ColourNet(hidden=8)
    with torch.no_grad():
        model.conv2.weight.normal_(0, 0.1)
    monkeypatch.setitem(models.AUTO_TILE, "cpu", 10 ** 5)            # the whole batch at once
    one, one_samples = validator.evaluate(model, "cpu")
    monkeypatch.setitem(models.AUTO_TILE, "cpu", 8)                  # one patch at a time
    assert models.cache_batch(*validator.inputs.shape[-2:], "cpu") == 1
    many, many_samples = validator.evaluate(model, "cpu")
    assert one.keys() == many.keys() and all(many[k] == pytest.approx(one[k], rel=1e-6) for k in one)
    assert torch.allclose(many_samples, one_samples, atol=1e-6)
