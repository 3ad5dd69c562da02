import json

import pytest
import yaml

from isp_support.config import (PROFILES, Config, ConfigError, config_from_dict, load_config, profile_config,
                                resolve_device)
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
