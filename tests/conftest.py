"""Shared fixtures: a tiny demo dataset built once per test session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from isp_support.config import load_config
from isp_support.demo_data.build import build_dataset

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def tiny_cfg():
    return load_config("tiny", environ={})


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory, tiny_cfg) -> Path:
    """The tiny profile's dataset (wheel photos only, no network), built in a temp folder."""
    out = tmp_path_factory.mktemp("data") / "tiny"
    return build_dataset(out, tiny_cfg.dataset, seed=tiny_cfg.seed, cache_dir=out.parent / "photos",
                         progress=False, log=lambda *_: None)


@pytest.fixture(scope="session")
def tiny_series(tiny_dataset, tmp_path_factory):
    """Every notebook of the series, run once per session in order on the tiny dataset: ``(run_dir, executed)``."""
    from isp_support.series import run_series

    run_dir = tmp_path_factory.mktemp("runs") / "tiny"
    cfg = load_config("tiny", data_dir=tiny_dataset, run_dir=run_dir, device="cpu", environ={})
    return run_dir, run_series(cfg, REPO / "notebooks")


@pytest.fixture()
def no_isp_env(monkeypatch):
    for name in ("ISP_PROFILE", "ISP_DATA_DIR", "ISP_RUN_DIR", "ISP_SEED", "ISP_DEVICE"):
        monkeypatch.delenv(name, raising=False)
    return os.environ
