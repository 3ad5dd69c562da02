"""The paper's settings and reported figures, as the series' config names them.

Source: the NTIRE 2026 paper (``../shared/seeds/000_*.txt``), sections 4-5. Keys of :data:`SETTINGS` are dotted
config fields (``train.lr``); their values are what the paper used. :data:`RESULTS` holds figures the paper reports.
"""

from __future__ import annotations

from typing import Any

SETTINGS: dict[str, Any] = {
    "dataset.raw_patch": 256,
    "match.alpha": 0.5,
    "match.top_images": 10,
    "match.top_patches": 8,
    "train.mom": 1.0,
    "train.luma": 1.0,
    "train.chroma": 1.5,
    "train.gram": 1.0,
    "train.tv": 0.05,
    "train.lr": 1e-4,
    "train.epochs": 10,
    "train.batch_size": 24,
    "train.hidden": 128,
    "stage2.epochs": 5,
    "stage2.adv": 0.001,
    "stage2.d_lr": 2e-5,
    "stage2.tv": 0.01,
    "stage2.mom": 0.2,
}
"""The paper's value of each config field it states (section 5, "Implementation details")."""

RESULTS: dict[str, float] = {"final test PSNR": 22.569, "final test SSIM": 0.675, "final test delta E 2000": 8.067}
"""Figures the paper reports (abstract: the challenge's final hidden test set)."""


def values() -> set[float]:
    """Every number of the paper's settings and results (absolute values), for :mod:`isp_support.prose`."""
    return {abs(float(v)) for v in (*SETTINGS.values(), *RESULTS.values()) if isinstance(v, (int, float))}
