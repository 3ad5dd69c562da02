import json

import pytest
import yaml

from isp_support.config import Config, config_from_dict, load_config, profile_config
from isp_support.config_rules import resolve_device
from isp_support.config_rules import ConfigError
from isp_support.profiles import PROFILES
from isp_support.runs import RUN_RECORD, init_run

from .conftest import REPO


def test_profiles_differ_in_scale():
    tiny, demo, full = (profile_config(p) for p in PROFILES)
    assert tiny.dataset.raw_patch < demo.dataset.raw_patch < full.dataset.raw_patch == 256
    assert tiny.dataset.photo_sources == ("wheels",)  # CI needs no network
    assert {(2, 7), (5, 7), (6, 7), (7, 2)} <= set(demo.dataset.grids)  # the challenge's grids


def test_precedence_explicit_then_env_then_default(no_isp_env):
    env = {"ISP_PROFILE": "tiny", "ISP_SEED": "7", "ISP_RUN_DIR": "/tmp/r"}
    cfg = load_config(environ=env)
    assert (cfg.profile, cfg.seed, cfg.run_dir) == ("tiny", 7, "/tmp/r")
    assert cfg.data_dir == str(REPO / "data" / "tiny")
    cfg = load_config(profile="full", seed=3, environ=env)
    assert (cfg.profile, cfg.seed, cfg.run_dir) == ("full", 3, "/tmp/r")
    assert load_config(environ={}).profile == "demo"


def test_relative_paths_resolve_against_the_project_root(monkeypatch):
    monkeypatch.chdir(REPO / "notebooks")
    assert load_config("demo", environ={}).data_dir == str(REPO / "data" / "demo")
    assert load_config("demo", run_dir="runs/x", environ={}).run_dir == str(REPO / "runs" / "x")


def test_overrides_are_type_checked():
    cfg = load_config("tiny", overrides={"dataset.raw_patch": 8, "dataset.grids": [[1, 2], [2, 1]]}, environ={})
    assert cfg.dataset.raw_patch == 8 and cfg.dataset.grids == ((1, 2), (2, 1))
    with pytest.raises(ConfigError, match="raw_patch"):
        load_config("tiny", overrides={"dataset.raw_patch": "big"}, environ={})
    with pytest.raises(ConfigError, match="unknown config field"):
        load_config("tiny", overrides={"dataset.nope": 1}, environ={})
    with pytest.raises(ConfigError, match="unknown profile"):
        load_config("huge", environ={})
    with pytest.raises(ConfigError, match="seed"):
        load_config(environ={"ISP_SEED": "abc"})


def test_config_round_trips_through_json():
    cfg = load_config("demo", overrides={"preprocess.wb_gains": (2.0, 1.0, 1.5)}, environ={})
    assert config_from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg


def test_cuda_refused_without_gpu():
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is visible")
    assert resolve_device("auto") == "cpu"
    with pytest.raises(ConfigError, match="CUDA"):
        resolve_device("cuda")


def test_run_record_has_config_versions_seed_device(tmp_path):
    cfg = load_config("tiny", run_dir=tmp_path / "run", seed=5, device="cpu", environ={})
    run_dir, device = init_run(cfg, notebook="01_preprocess")
    record = json.loads((run_dir / RUN_RECORD).read_text())
    assert record["seed"] == 5 and device == record["device"] == "cpu"
    assert config_from_dict(record["config"]) == cfg
    assert record["versions"]["torch"].startswith("2.14.1") and record["versions"]["python"].startswith("3.11")
    assert "01_preprocess" in record["notebooks"]


def _pins(lines):
    return {line.split("==")[0].strip(' "-'): line.split("==")[1].strip(' ",') for line in lines if "==" in line}


def test_environment_yml_pins_match_pyproject():
    env = yaml.safe_load((REPO / "environment.yml").read_text())
    assert "python=3.11" in env["dependencies"]
    pip_deps = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    pyproject = (REPO / "pyproject.toml").read_text().splitlines()
    project_pins = _pins(pyproject)
    env_pins = _pins(pip_deps)
    assert project_pins["torch"] == env_pins["torch"] == "2.14.1"
    assert project_pins["torchvision"] == env_pins["torchvision"] == "0.29.1"


def test_config_is_frozen():
    with pytest.raises(Exception):
        Config().seed = 3  # type: ignore[misc]


# --- validation: every field's type and allowed values --------------------------------------------------

SEED_RANGE = r"Config\.seed: expected an integer in \[0, 4294967295\]"
DEVICES = "one of auto, cpu, cuda, cuda:N"


def test_every_profile_passes_validation_unchanged():
    from isp_support.config_rules import validate

    for profile in PROFILES:
        cfg = profile_config(profile)
        assert validate(cfg) is cfg
        assert load_config(profile, environ={}).to_dict() == {**cfg.to_dict(), "data_dir": str(REPO / cfg.data_dir),
                                                              "run_dir": str(REPO / cfg.run_dir)}


@pytest.mark.parametrize("seed", [1.5, 2.0, True, -1, 2**32, 2**70, "1.5", "-1", str(2**70)])
def test_seed_must_be_an_integer_numpy_can_take(seed):
    with pytest.raises(ConfigError, match=SEED_RANGE):
        load_config("tiny", seed=seed, environ={})


@pytest.mark.parametrize("text", ["1.5", "True", "-1", str(2**70), "seven"])
def test_seed_from_the_environment_is_checked(text):
    with pytest.raises(ConfigError, match=SEED_RANGE):
        load_config("tiny", environ={"ISP_SEED": text})


@pytest.mark.parametrize("seed", [0, 2**32 - 1, "12"])
def test_seeds_numpy_takes_are_accepted(seed):
    assert load_config("tiny", seed=seed, environ={}).seed == int(seed)


@pytest.mark.parametrize("device", ["nonsense", "CPU", "Cuda", "cuda:", "cuda:x", "gpu", " cpu", ""])
def test_unknown_device_names_the_field_and_the_choices(device):
    with pytest.raises(ConfigError, match=f"Config.device: expected {DEVICES}"):
        load_config("tiny", device=device, environ={})
    if device.strip():
        with pytest.raises(ConfigError, match=f"Config.device: expected {DEVICES}"):
            load_config("tiny", environ={"ISP_DEVICE": device})


@pytest.mark.parametrize("device", ["auto", "cpu", "cuda", "cuda:0", "cuda:12"])
def test_device_names_are_accepted_without_looking_for_a_gpu(device):
    assert load_config("tiny", device=device, environ={}).device == device


@pytest.mark.parametrize("var", ["ISP_PROFILE", "ISP_DATA_DIR", "ISP_RUN_DIR", "ISP_SEED", "ISP_DEVICE"])
@pytest.mark.parametrize("blank", ["", "  "])
def test_set_but_blank_environment_variable_is_refused(var, blank):
    with pytest.raises(ConfigError, match=f"environment variable {var} is set but blank"):
        load_config(environ={var: blank})


@pytest.mark.parametrize("change", [{"run_dir": ""}, {"data_dir": ""}, {"run_dir": "   "}])
def test_empty_folder_never_becomes_the_project_root(change):
    name = next(iter(change))
    with pytest.raises(ConfigError, match=f"Config.{name}: expected a non-empty path"):
        load_config("tiny", environ={}, **change)
    with pytest.raises(ConfigError, match=f"Config.{name}: expected a non-empty path"):
        load_config("tiny", environ={}, overrides=change)


BAD_VALUES = [
    ("preprocess.demosaicker", "nearest", "one of demosaicnet, bilinear, malvar"),
    ("preprocess.denoiser", "bm3d", "one of ffdnet, bilateral, none"),
    ("preprocess.store_dtype", "uint8", "one of float16, float32"),
    ("preprocess.wb_gains", (float("nan"), 1.0, 1.0), "three numbers > 0"),
    ("preprocess.wb_gains", (0.0, 1.0, 1.0), "three numbers > 0"),
    ("preprocess.wb_gains", (float("inf"), 1.0, 1.0), "three numbers > 0"),
    ("preprocess.gamma", 0.0, "a number > 0"),
    ("preprocess.noise_sigma", -0.1, "a number >= 0"),
    ("preprocess.batch_size", 0, "an integer >= 1"),
    ("train.epochs", -3, "an integer >= 1"),
    ("train.epochs", 0, "an integer >= 1"),
    ("train.batch_size", 0, "an integer >= 1"),
    ("train.crop", 0, "None or an integer >= 1"),
    ("train.lr", float("nan"), "a number > 0"),
    ("train.lr", 0.0, "a number > 0"),
    ("train.tv", -1.0, "a number >= 0"),
    ("train.ema", 1.0, r"None or a number in \[0, 1\)"),
    ("train.val_fraction", 1.5, r"a number in \[0, 1\]"),
    ("train.patience", 0, "None or an integer >= 1"),
    ("train.workers", -1, "an integer >= 0"),
    ("train.pairing", "ot-paper", "one of ot, ot_paper, unbalanced, knn, random, paired"),
    ("train.schedule", "linear", "one of none, cosine"),
    ("stage2.epochs", 0, "an integer >= 1"),
    ("stage2.d_lr", float("inf"), "a number > 0"),
    ("stage2.expert_weights", (1.0, -1.0, 1.0), "three numbers >= 0"),
    ("stage2.discriminator", "patchgan", "one of unet, experts"),
    ("dataset.raw_patch", 0, "an integer >= 1"),
    ("dataset.grids", (), "a non-empty sequence of"),
    ("dataset.grids", ((0, 2),), "a non-empty sequence of"),
    ("dataset.split_fractions", (0.0, 0.0, 0.0), "three numbers >= 0 with a positive sum"),
    ("dataset.split_fractions", (0.5, -0.1, 0.6), "three numbers >= 0 with a positive sum"),
    ("dataset.photo_sources", ("flickr",), "names each one of wheels, debian"),
    ("dataset.jpeg_quality", 101, r"an integer in \[0, 100\]"),
    ("dataset.max_photos", 0, "None or an integer >= 1"),
    ("dataset.crops_per_photo", 0, "an integer >= 1"),
    ("stitch.border", 0, "an integer >= 1"),
    ("stitch.score", "Paper", "one of normalised, paper"),
    ("stitch.low_confidence_ratio", 0.5, "a number >= 1"),
    ("embed.batch_size", 0, "an integer >= 1"),
    ("embed.cast", "grey", "one of none, grey_world, channel_norm"),
    ("embed.semantic_backbone", "resnet", "one of dinov2_vits14, vgg19, vgg16_offline"),
    ("embed.weights_dir", "", "a non-empty path"),
    ("embed.vgg19_weights", "", "None or a non-empty path"),
    ("embed.image_side", 0, "an integer >= 1"),
    ("match.method", "sinkhorn", "one of ot, unbalanced, knn, random"),
    ("match.image_level", "flat", "one of paper, tempered, candidates, marginal"),
    ("match.alpha", 1.5, r"a number in \[0, 1\]"),
    ("match.epsilon", float("inf"), "a number > 0"),
    ("match.image_epsilon", 0.0, "None or a number > 0"),
    ("match.top_images", 0, "an integer >= 1"),
    ("match.max_iter", 0, "an integer >= 1"),
    ("match.outer_max_iter", 0, "an integer >= 1"),
    ("match.outer_tol", 0.0, "a number > 0"),
    ("match.overrelax", 2.0, r"a number in \(0, 2\)"),
    ("match.overrelax", 0.0, r"a number in \(0, 2\)"),
    ("match.max_chunk_bytes", 0, "an integer >= 1"),
    ("match.knn_scope", "local", "one of global, top_images"),
    ("match.knn_weighting", "gaussian", "one of uniform, softmax"),
    ("evaluate.tile", "big", "None, 'auto' or an integer >= 1"),
    ("evaluate.tile", 0, "None, 'auto' or an integer >= 1"),
    ("evaluate.seeds", (-1,), r"seeds each an integer in \[0, 4294967295\]"),
    ("evaluate.bootstrap", 0, "an integer >= 1"),
    ("evaluate.split", "", "a non-empty name"),
]


@pytest.mark.parametrize("key, value, allowed", BAD_VALUES, ids=[f"{k}={v!r}" for k, v, _ in BAD_VALUES])
def test_values_outside_their_field_range_are_refused(key, value, allowed):
    section, name = key.split(".")
    where = f"{type(getattr(Config(), section)).__name__}.{name}"
    with pytest.raises(ConfigError, match=f"{where}: expected {allowed}"):
        load_config("tiny", overrides={key: value}, environ={})
    with pytest.raises(ConfigError, match=f"{where}: expected {allowed}"):
        config_from_dict({section: {name: value}})


@pytest.mark.parametrize("key, value", [("evaluate.tile", None), ("evaluate.tile", "auto"), ("evaluate.tile", 32),
                                        ("train.crop", None), ("train.ema", 0.0), ("match.alpha", 0.0),
                                        ("dataset.photo_sources", ()), ("preprocess.denoiser", "none"),
                                        ("train.gram", 0.0), ("train.val_fraction", 0.0)])
def test_edge_values_inside_their_range_are_accepted(key, value):
    section, name = key.split(".")
    assert getattr(getattr(load_config("tiny", overrides={key: value}, environ={}), section), name) == value


def test_type_errors_name_the_allowed_values():
    with pytest.raises(ConfigError, match=r"TrainConfig.epochs: expected an integer >= 1, got 2.5"):
        load_config("tiny", overrides={"train.epochs": 2.5}, environ={})
    with pytest.raises(ConfigError, match=r"TrainConfig.lr: expected a number > 0, got 'fast'"):
        load_config("tiny", overrides={"train.lr": "fast"}, environ={})


def test_replace_type_checks_and_validate_checks_ranges():
    """``Config.replace`` builds variants (the modules check their own settings again); ``validate`` checks
    a finished config, whatever built it."""
    from isp_support.config import TrainConfig
    from isp_support.config_rules import validate

    cfg = profile_config("tiny")
    with pytest.raises(ConfigError, match="TrainConfig.epochs: expected an integer >= 1"):
        validate(cfg.replace(**{"train.epochs": 0}))
    with pytest.raises(ConfigError, match=SEED_RANGE):
        validate(Config(seed=-1))
    with pytest.raises(ConfigError, match="TrainConfig.epochs"):
        validate(Config(train=TrainConfig(epochs=0)))
    with pytest.raises(ConfigError, match="Config.seed: expected"):
        validate(Config(seed="3"))  # type: ignore[arg-type]


def test_resolve_device_refuses_bad_names_and_missing_gpus():
    import torch

    with pytest.raises(ConfigError, match=f"Config.device: expected {DEVICES}"):
        resolve_device("CPU")
    if torch.cuda.is_available():
        with pytest.raises(ConfigError, match="CUDA device"):
            resolve_device(f"cuda:{torch.cuda.device_count()}")
    else:
        with pytest.raises(ConfigError, match="no GPU is available"):
            resolve_device("cuda:0")


def test_every_rule_names_a_real_field():
    import dataclasses

    from isp_support import config, config_rules

    for where in config_rules._RULES:
        cls, name = where.split(".")
        assert name in {f.name for f in dataclasses.fields(getattr(config, cls))}, where


def test_profile_values_reach_their_fields():
    from isp_support.profiles import PROFILE_DEFAULTS

    for profile in PROFILES:
        cfg = profile_config(profile)
        for key, value in PROFILE_DEFAULTS[profile].items():
            changes = value if isinstance(value, dict) else {key: value}
            owner = getattr(cfg, key) if isinstance(value, dict) else cfg
            assert {name: getattr(owner, name) for name in changes} == changes, (profile, key)
