"""Notebooks 04 and 05: trained networks on the held-out validation scenes, against ``train/gt`` where it exists.

For scoring only: training chose its kept epochs without ground truth.

* :func:`ground_truth`: the validation patches and their ground truth.
* :func:`psnr_to_truth`: one network's mean PSNR on them.
* :func:`epoch_check`: every saved epoch of a run scored on them, and how far the kept epoch is from the best.
* :func:`colour_sets`: the pooled batches of the colour-distribution figure (inputs, renderings, target domain).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from . import inference
from .scoring import epoch_scores, regret
from .. import metrics
from ..config import Config
from ..io import read_rgb_tensor
from ..train.pairs import PairSource, pair_source, read_source
from ..train.validate import Validator

__all__ = ["colour_sets", "epoch_check", "even_sample", "ground_truth", "psnr_to_truth"]


def ground_truth(cfg: Config, run_dir: str | Path, src: PairSource) -> tuple[torch.Tensor, torch.Tensor]:
    """``(inputs, truth)``: the pre-processed patches of ``src``'s validation scenes and their ``train/gt``."""
    gt_files = pair_source(cfg, run_dir, "paired").gt_files
    inputs = torch.stack([read_source(src.source_files[i]) for i in src.val_ids])
    truth = torch.stack([read_rgb_tensor(gt_files[i]) for i in src.val_ids])
    return inputs, truth


def psnr_to_truth(model: torch.nn.Module, inputs: torch.Tensor, truth: torch.Tensor,
                  device: str | torch.device = "cpu") -> float:
    """Mean PSNR (dB) of ``model``'s renderings of ``inputs`` against ``truth``."""
    return float(metrics.psnr(inference.predict(model, inputs, device), truth).mean())


def epoch_check(run: Any, inputs: torch.Tensor | None, truth: torch.Tensor | None,
                device: str | torch.device = "cpu") -> tuple[pd.DataFrame | None, dict[str, Any] | None]:
    """Every epoch of ``run`` (a :class:`~isp_support.train.loop.TrainResult`) on ``inputs`` against ``truth``
    (``(None, None)`` without ground truth), and the kept one's gap.

    Returns ``(scores, check)``: the :func:`~isp_support.evaluate.scoring.epoch_scores` indexed by epoch, and the
    metrics entry: kept epoch and rule, per-epoch PSNR and CIEDE2000 (4 decimals), the best epoch by PSNR and the
    kept epoch's PSNR gap to it (dB, <= 0).
    """
    if truth is None:
        return None, None
    scores = epoch_scores(run.folder, inputs, truth, device).set_index("epoch")
    best = int(scores["psnr"].idxmax())
    per_epoch = lambda k: {int(e): round(float(v), 4) for e, v in scores[k].items()}  # noqa: E731
    return scores, {"kept_epoch": run.best_epoch, "checkpoint_rule": run.checkpoint_rule,
                    "val_psnr": per_epoch("psnr"), "val_delta_e2000": per_epoch("delta_e2000"),
                    "best_psnr_epoch": best,
                    "kept_psnr_gap_db": round(0.0 - regret(scores.reset_index(), run.best_epoch), 4)}


def colour_sets(src: PairSource, cfg: Config, models: dict[str, torch.nn.Module],
                device: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
    """The batches of :func:`isp_support.viz.colour_distributions`: ``input`` (the validator's patches), each of
    ``models``' renderings of them under its name, and ``target domain``: as many target patches, evenly spaced
    over the sorted target ids, so every target scene is in it (the first ids alone are one scene's patches)."""
    inputs = Validator.for_source(src, cfg, device).inputs.float()
    sets = {"input": inputs}
    for name, model in models.items():
        sets[name] = inference.predict(model, inputs, device)
    sets["target domain"] = torch.stack([read_rgb_tensor(src.target_files[t])
                                         for t in even_sample(src.target_files, len(inputs))])
    return sets


def even_sample(ids, n: int) -> list:
    """``n`` of ``ids`` (sorted), evenly spaced from the first to the last: every scene of a set of patch ids is
    in it, where the first ``n`` ids can all be one scene's."""
    ids = sorted(ids)
    picks = np.linspace(0, len(ids) - 1, min(n, len(ids))).round().astype(int) if ids else []
    return [ids[i] for i in sorted(set(picks))]
