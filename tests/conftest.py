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


SERIES_RUN_ENV = "ISP_TEST_SERIES_RUN_DIR"
"""Where the notebook tests run the tiny series (``make notebooks`` sets it so that ``make nbval`` reuses
the run); a fresh temp folder when unset."""
SERIES_DATA_ENV = "ISP_TEST_SERIES_DATA_DIR"
"""The tiny dataset that series reads (``make notebooks``: ``data/tiny``); the session's own build when unset."""


@pytest.fixture(scope="session")
def series_data_dir(request) -> Path:
    """The dataset :func:`tiny_series` runs on."""
    if os.environ.get(SERIES_DATA_ENV):
        return Path(os.environ[SERIES_DATA_ENV])
    return request.getfixturevalue("tiny_dataset")


@pytest.fixture(scope="session")
def tiny_series(series_data_dir, tmp_path_factory):
    """Every notebook of the series, run once per session in order on the tiny dataset: ``(run_dir, executed)``.

    The run folder must be fresh: :data:`SERIES_RUN_ENV`'s is refused when it already holds a run."""
    from isp_support.series import run_series

    if os.environ.get(SERIES_RUN_ENV):
        run_dir = Path(os.environ[SERIES_RUN_ENV])
        if run_dir.exists() and any(run_dir.iterdir()):
            pytest.fail(f"{SERIES_RUN_ENV}={run_dir} is not empty; the notebook tests need a fresh run folder")
    else:
        run_dir = tmp_path_factory.mktemp("runs") / "tiny"
    cfg = load_config("tiny", data_dir=series_data_dir, run_dir=run_dir, device="cpu", environ={})
    return run_dir, run_series(cfg, REPO / "notebooks")


@pytest.fixture()
def no_isp_env(monkeypatch):
    for name in ("ISP_PROFILE", "ISP_DATA_DIR", "ISP_RUN_DIR", "ISP_SEED", "ISP_DEVICE", "ISP_OVERRIDES"):
        monkeypatch.delenv(name, raising=False)
    return os.environ


@pytest.fixture(scope="session")
def challenge_series(tmp_path_factory):
    """The six notebooks under ``full`` on a challenge-layout rehearsal without ground truth (6 scenes, 16 px RAW
    patches): ``(run_dir, executed, data_dir)``."""
    from isp_support.demo_data.challenge import SMALL_FULL_OVERRIDES, build_rehearsal
    from isp_support.series import run_series

    root = tmp_path_factory.mktemp("challenge")
    data_dir, _ = build_rehearsal(root / "data", 6, raw_patch=16, progress=False, log=lambda *_: None)
    cfg = load_config("full", data_dir=data_dir, run_dir=root / "run", device="cpu", environ={},
                      overrides=SMALL_FULL_OVERRIDES)
    return root / "run", run_series(cfg, REPO / "notebooks", overrides=SMALL_FULL_OVERRIDES), data_dir
