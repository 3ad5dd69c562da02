"""Notebook 06: every method scored against ground truth, per patch and per full image, in one table.

* :data:`METHODS`: the rows of the ablation: the fixed pre-processing alone (the floor), stage 1
  on random, kNN, OT (the paper) and unbalanced-OT pairs, OT + stage 2 with the U-Net or the
  expert committee, the 3D-LUT head, and the paired upper bounds (PAL, L1).
* :func:`train_method`: trains (or loads, or resumes) a row's network with
  :func:`isp_support.train.loop.train`; extra seeds get their own run folders.
* :class:`TestSet`: the scored split's pre-processed patches and full images with their ground truth.
* :func:`score_patches` / :func:`score_images`: PSNR, SSIM and CIEDE2000 per patch and per full
  image (rendered in one pass, or tiled with overlap), as tidy tables.
* :func:`seconds_per_megapixel`: the network's inference time on a fixed-size image.
* :func:`epoch_scores` / :func:`score_epochs` and :func:`regret`: every saved epoch of a run scored
  against ground truth (for scoring only: the kept epoch was chosen without it), and how much the
  kept epoch gives away against the best one.
* :func:`ablation_table`, :func:`compare_to` and :func:`verdicts`: the summary table; for each
  row the paired bootstrap interval (over test scenes) of its difference to a reference row; and
  whether that difference is larger than the run-to-run spread over training seeds.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd
import torch

from .. import metrics, runs
from ..config import Config
from ..data import open_dataset
from ..io import read_rgb_batch
from ..pipeline.preprocess import load_preprocessed
from ..pipeline.stitch import load_stitched
from ..train import loop
from ..train.checkpoint import epoch_models
from ..train.models import count_parameters
from . import inference, tiles

__all__ = ["METHODS", "METRICS", "EvaluationError", "Method", "TestSet", "ablation_table", "compare_to", "mean_scores",
           "load_test_set", "median_seconds", "method_config", "model_info", "render_patchwise", "render_scene",
           "run_name", "epoch_scores", "regret", "score_epochs", "score_images", "score_patches",
           "seconds_per_megapixel", "seed_spread", "train_method", "twice_spread", "verdicts"]

METRICS = ("psnr", "ssim", "delta_e2000")
HIGHER_IS_BETTER = {"psnr": True, "ssim": True, "delta_e2000": False}


class EvaluationError(RuntimeError):
    """Evaluation cannot run; the message names the missing file or setting."""


@dataclass(frozen=True)
class Method:
    """One row of the ablation table."""

    key: str
    label: str
    stage: int | None
    """``None``: no network (the pre-processing alone)."""
    pairing: str | None = None
    overrides: dict[str, Any] = field(default_factory=dict)
    """Config changes against the profile (dotted names), e.g. ``{"train.head": "lut"}``."""
    unpaired: bool = True
    """False for the supervised upper bounds (they train on ground truth)."""


METHODS: dict[str, Method] = {m.key: m for m in (
    Method("floor", "pre-processing alone (no network)", None),
    Method("random", "stage 1 · random pairs", 1, "random"),
    Method("knn", "stage 1 · kNN pairs", 1, "knn"),
    Method("ot", "stage 1 · OT pseudo pairs (the default)", 1, "ot"),
    Method("ot_paper", "stage 1 · OT pairs, the paper's literal image level", 1, "ot_paper"),
    Method("ot_stage2", "OT + stage 2 · U-Net D (the paper)", 2, "ot"),
    Method("unbalanced", "stage 1 · unbalanced OT pairs", 1, "unbalanced"),
    Method("ot_experts", "OT + stage 2 · expert committee", 2, "ot", {"stage2.discriminator": "experts"}),
    Method("ot_lut", "stage 1 · OT pairs, 3D LUT head", 1, "ot", {"train.head": "lut"}),
    Method("paired_pal", "paired · PAL (upper bound)", 1, "paired", {"train.paired_loss": "pal"}, False),
    Method("paired_l1", "paired · L1 (upper bound)", 1, "paired", {"train.paired_loss": "l1"}, False),
    Method("ot_pair_moment", "stage 1 · OT pairs, per-pair moment loss", 1, "ot", {"train.moment": "pair"}),
)}


def method_config(cfg: Config, method: Method, seed: int | None = None) -> Config:
    """The config a row trains under: the profile's, with the row's overrides and seed."""
    changes = dict(method.overrides)
    if seed is not None:
        changes["seed"] = seed
    return cfg.replace(**changes) if changes else cfg


def run_name(cfg: Config, method: Method, seed: int | None = None) -> str:
    """The run folder of a row: notebook 04/05's for the profile's seed, ``..._seed<k>`` for other seeds."""
    mcfg = method_config(cfg, method, seed)
    return runs.run_name(method.stage, method.pairing, mcfg, None if seed is None or seed == cfg.seed else seed)


def train_method(cfg: Config, run_dir: str | Path, method: Method, device: str = "cpu", seed: int | None = None,
                 progress: bool = True, log: Callable[[str], None] = print) -> loop.TrainResult | None:
    """Train, resume or load the network of one row (``None`` for the floor).

    With the profile's seed this is the very run notebooks 04 and 05 made (loaded, not retrained).
    Stage-2 rows start from the stage-1 OT run of the same seed, trained first if missing.
    """
    if method.stage is None:
        return None
    mcfg = method_config(cfg, method, seed)
    init = None
    if method.stage == 2:
        base = train_method(cfg, run_dir, METHODS["ot"], device, seed, progress, log)
        init = base.folder / loop.BEST
    return loop.train(mcfg, run_dir, device, stage=method.stage, pairing=method.pairing,
                           name=run_name(cfg, method, seed), init=init, progress=progress, log=log)


# --- the scored split --------------------------------------------------------------------------------------

@dataclass
class TestSet:
    """Pre-processed inputs and ground truth of the scored split, patches and full images."""

    split: str
    raw_dir: Path
    """The split's RAW patches (``<data>/<split>/raws``), for the export entry point."""
    patch_ids: list[str]
    patch_scenes: list[str]
    inputs: torch.Tensor
    """``(N, 3, H, W)`` float32 pre-processed patches (notebook 01)."""
    truth: torch.Tensor
    """``(N, 3, H, W)`` float32 ground truth in [0, 1]."""
    scenes: list[str]
    images: dict[str, torch.Tensor]
    """Full pre-processed image ``(3, H, W)`` per scene (notebook 02)."""
    image_truth: dict[str, torch.Tensor]
    grids: dict[str, tuple[int, int]]
    """``(rows, cols)`` of each scene, as notebook 02 recovered it."""


def load_test_set(cfg: Config, run_dir: str | Path, split: str | None = None) -> TestSet:
    """Collect the scored split; errors name the missing notebook output or the missing ground truth."""
    import json

    run_dir = Path(run_dir)
    split = split or cfg.evaluate.split
    data = open_dataset(cfg.data_dir)
    if split not in data.splits:
        raise EvaluationError(f"{cfg.data_dir}: no {split!r} split to evaluate")
    part = data[split]
    if not part.gt:
        raise EvaluationError(f"{Path(cfg.data_dir) / split / 'gt'}: no ground truth, so nothing to score "
                              f"(the challenge keeps its test ground truth hidden)")
    scenes = sorted(part.gt)
    ids = [p.id for s in scenes for p in part.raws[s].patches]
    pre = runs.RunLayout(run_dir).preprocessed
    try:
        inputs = torch.from_numpy(np.stack([load_preprocessed(pre, split, i) for i in ids]).astype(np.float32))
    except FileNotFoundError as exc:
        raise EvaluationError(f"{exc.filename}: missing pre-processed patch; run 01_preprocess first") from exc
    truth = read_rgb_batch([p.path for s in scenes for p in part.gt[s].patches])
    grids_file = runs.RunLayout(run_dir).grids
    if not grids_file.is_file():
        raise EvaluationError(f"{grids_file}: missing; run 02_stitch first")
    grids = json.loads(grids_file.read_text())[f"{split}/raw"]
    as_tensor = lambda a: torch.from_numpy(np.ascontiguousarray(a.transpose(2, 0, 1)))  # noqa: E731
    return TestSet(split, Path(cfg.data_dir) / split / "raws", ids, [s for s in scenes for _ in part.raws[s].patches], inputs, truth, scenes,
                   {s: as_tensor(load_stitched(run_dir, split, "raw", s)) for s in scenes},
                   {s: as_tensor(load_stitched(run_dir, split, "gt", s)) for s in scenes},
                   {s: (grids[s]["rows"], grids[s]["cols"]) for s in scenes})


# --- scoring -------------------------------------------------------------------------------------------------

def _scores(pred: torch.Tensor, truth: torch.Tensor, device: str, chunk: int = 64) -> dict[str, np.ndarray]:
    """The three metrics per image, on 8-bit-quantised predictions (what a submission holds)."""
    out: dict[str, list[torch.Tensor]] = {k: [] for k in METRICS}
    for i in range(0, len(pred), chunk):
        p = (pred[i:i + chunk].clamp(0, 1) * 255).round() / 255
        for k, v in metrics.image_metrics(p.to(device), truth[i:i + chunk].to(device)).items():
            out[k].append(v.cpu())
    return {k: torch.cat(v).double().numpy() for k, v in out.items()}


def score_patches(model: torch.nn.Module | None, test: TestSet, device: str = "cpu") -> pd.DataFrame:
    """One row per test patch: ``patch``, ``scene`` and the metrics of ``model`` (``None``: the floor)."""
    pred = test.inputs.float() if model is None else inference.predict(model, test.inputs, device)
    return pd.DataFrame({"patch": test.patch_ids, "scene": test.patch_scenes} | _scores(pred, test.truth, device))


def render_scene(model: torch.nn.Module | None, test: TestSet, scene: str, device: str = "cpu",
                 tile: int | str | None = None) -> torch.Tensor:
    """A full test image ``(3, H, W)`` rendered by ``model`` in one pass (or overlapping tiles)."""
    image = test.images[scene].float()
    return image if model is None else tiles.render(model, image, device, tile)


def render_patchwise(model: torch.nn.Module | None, test: TestSet, scene: str, device: str = "cpu") -> torch.Tensor:
    """The same image assembled from the network's per-patch outputs (what a patch-wise submission shows)."""
    from ..pipeline.stitch import assemble

    idx = [i for i, s in enumerate(test.patch_scenes) if s == scene]
    x = test.inputs[idx].float()
    pred = x if model is None else inference.predict(model, x, device)
    rows, cols = test.grids[scene]
    return assemble(list(pred.permute(0, 2, 3, 1)), rows, cols).permute(2, 0, 1)


def score_images(model: torch.nn.Module | None, test: TestSet, device: str = "cpu", tile: int | str | None = None,
                 patchwise: bool = True) -> pd.DataFrame:
    """One row per full test image and rendering mode: ``whole image`` (the network over the stitched
    scene, in one pass or overlapping tiles: the same result) and, when asked, ``patch-wise``."""
    rows = []
    for scene in test.scenes:
        modes = {"whole image": render_scene(model, test, scene, device, tile)}
        if patchwise:
            modes["patch-wise"] = render_patchwise(model, test, scene, device)
        truth = test.image_truth[scene][None]
        for mode, image in modes.items():
            rows.append({"scene": scene, "mode": mode} | {k: float(v[0]) for k, v in
                                                           _scores(image[None], truth, device).items()})
    return pd.DataFrame(rows)


def seconds_per_megapixel(model: torch.nn.Module | None, device: str = "cpu", side: int = 1024, repeats: int = 3,
                          tile: int | str | None = None, fast: bool = True) -> float:
    """Median wall time of :func:`tiles.render` on a ``side`` x ``side`` image, per megapixel (0 without a network);
    ``fast=False`` times the reference path."""
    if model is None:
        return 0.0
    x = torch.rand(3, side, side, generator=torch.Generator().manual_seed(0))
    return median_seconds(lambda: tiles.render(model, x, device, tile, fast), device, repeats) / (side * side / 1e6)


def median_seconds(run: Callable[[], Any], device: str = "cpu", repeats: int = 3) -> float:
    """Median wall time of ``run()`` over ``repeats`` calls after one untimed warm-up, the device synchronised
    around each call on CUDA."""
    sync = torch.cuda.synchronize if str(device).startswith("cuda") else (lambda: None)
    run()
    times = []
    for _ in range(repeats):
        sync()
        start = time.perf_counter()
        run()
        sync()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


# --- every epoch ------------------------------------------------------------------------------------------------

def epoch_scores(folder: str | Path, inputs: torch.Tensor, truth: torch.Tensor, device: str = "cpu") -> pd.DataFrame:
    """One row per saved epoch of the run in ``folder`` (:func:`epoch_models`): ``epoch`` and the
    mean of each metric over ``inputs`` rendered by that epoch's weights against ``truth``.

    For scoring only: training chose its kept epoch without ground truth; this shows how well it chose.
    """
    return pd.DataFrame([{"epoch": epoch} | mean_scores(model, inputs, truth, device)
                         for epoch, model in epoch_models(folder).items()])


def mean_scores(model: torch.nn.Module, inputs: torch.Tensor, truth: torch.Tensor, device: str = "cpu") -> dict[str, float]:
    """The mean of each metric over ``inputs`` rendered by ``model`` against ``truth``."""
    scores = _scores(inference.predict(model, inputs, device), truth, device)
    return {k: float(v.mean()) for k, v in scores.items()}


def score_epochs(result: loop.TrainResult, test: TestSet, device: str = "cpu") -> pd.DataFrame:
    """:func:`epoch_scores` of a trained run on the scored split's patches, with ``kept`` marking its kept epoch."""
    table = epoch_scores(result.folder, test.inputs, test.truth, device)
    return table.assign(kept=table["epoch"] == result.best_epoch)


def regret(scores: pd.DataFrame | list[dict[str, Any]], kept_epoch: int, metric: str = "psnr") -> float:
    """``metric`` of the kept epoch minus the best over all epochs (higher-is-better metrics; <= 0, 0: the rule
    chose the best epoch). For a lower-is-better metric such as ``delta_e2000`` it is best minus kept (also <= 0)."""
    table = pd.DataFrame(scores)
    if kept_epoch not in set(table["epoch"]):
        raise EvaluationError(f"kept epoch {kept_epoch} is not among the scored epochs {sorted(table['epoch'])}")
    kept = float(table.loc[table["epoch"] == kept_epoch, metric].iloc[0])
    return kept - float(table[metric].max()) if HIGHER_IS_BETTER[metric] else float(table[metric].min()) - kept


# --- the table -------------------------------------------------------------------------------------------------

def ablation_table(per_image: pd.DataFrame, info: pd.DataFrame) -> pd.DataFrame:
    """Mean metrics per method (and seed spread) from per-image scores, beside parameters and timing.

    ``per_image``: columns ``method``, ``seed``, ``scene`` and :data:`METRICS`; ``info``: one row per
    method with ``label``, ``parameters``, ``s_per_mp``. The profile's seed is reported; with extra
    seeds, ``<metric> sd`` is the standard deviation of the per-seed means.
    """
    means = per_image.groupby(["method", "seed"])[list(METRICS)].mean()
    first = per_image.groupby("method")["seed"].min()
    table = pd.DataFrame({k: [means.loc[(m, first[m]), k] for m in info.index] for k in METRICS}, index=info.index)
    spread = means.groupby("method").agg(["std", "count"])
    for k in METRICS:
        table[f"{k} sd"] = [spread.loc[m, (k, "std")] if spread.loc[m, (k, "count")] > 1 else np.nan
                            for m in info.index]
    table["seeds"] = [int(spread.loc[m, (METRICS[0], "count")]) for m in info.index]
    return info.join(table)


def compare_to(per_image: pd.DataFrame, reference: str, seed: int, n_boot: int = 2000,
               rng_seed: int = 0) -> pd.DataFrame:
    """Per method: mean difference to ``reference`` over the same images, with a 95% paired bootstrap interval.

    Images are resampled with replacement (the same resample for both methods), so the interval
    reflects which test images happened to be chosen, not training randomness (see the seed spread).
    ``better`` says whether the whole interval lies on the better side for that metric.
    """
    one = per_image[per_image["seed"] == seed].pivot(index="scene", columns="method", values=list(METRICS))
    rng = np.random.default_rng(rng_seed)
    n = len(one)
    picks = rng.integers(0, n, size=(n_boot, n))
    rows = {}
    for method in one.columns.get_level_values(1).unique():
        row = {}
        for k in METRICS:
            diff = (one[(k, method)] - one[(k, reference)]).to_numpy()
            boots = diff[picks].mean(axis=1)
            lo, hi = np.percentile(boots, [2.5, 97.5])
            up, down = bool(lo > 0), bool(hi < 0)  # the whole interval above / below zero
            better, worse = (up, down) if HIGHER_IS_BETTER[k] else (down, up)
            row |= {f"{k} diff": diff.mean(), f"{k} lo": lo, f"{k} hi": hi, f"{k} better": better, f"{k} worse": worse}
        rows[method] = row
    return pd.DataFrame(rows).T


def seed_spread(table: pd.DataFrame, metric: str) -> pd.Series:
    """Each row's run-to-run spread (standard deviation over training seeds) of ``metric``.

    Measured where the row was repeated; 0 for a row without a network (nothing is trained); for a
    trained row that was not repeated, the largest spread measured on any row (a conservative
    guess); NaN when no row was repeated at all.
    """
    sd = table[f"{metric} sd"].astype(float)
    guess = np.where(table["parameters"] == 0, 0.0, sd.max())
    return sd.where(sd.notna(), pd.Series(guess, index=table.index))


def twice_spread(table: pd.DataFrame, metric: str, rows, reference: str) -> pd.Series:
    """Twice the run-to-run spread of the difference ``row - reference``: ``2 sqrt(sd_row^2 + sd_reference^2)``."""
    spread = seed_spread(table, metric)
    return 2 * np.sqrt(spread.reindex(rows) ** 2 + spread[reference] ** 2)


def verdicts(versus: pd.DataFrame, table: pd.DataFrame, reference: str,
             metrics_: tuple[str, ...] = METRICS) -> pd.DataFrame:
    """Per row of ``versus`` (from :func:`compare_to`): is it better or worse than ``reference``?

    A difference counts only when its bootstrap interval over test scenes excludes zero **and** it is
    larger than twice the run-to-run spread of the difference, ``sqrt(sd_row^2 + sd_reference^2)``
    (:func:`seed_spread`). Where no row was repeated over seeds, the interval alone decides and
    ``<metric> 2x spread`` is NaN.
    """
    out = {}
    for k in metrics_:
        two_sd = twice_spread(table, k, versus.index, reference)
        large = two_sd.isna() | (versus[f"{k} diff"].astype(float).abs() > two_sd)
        out[f"{k} 2x spread"] = two_sd
        out[f"{k} verdict"] = np.select([versus[f"{k} better"].astype(bool) & large,
                                         versus[f"{k} worse"].astype(bool) & large],
                                        ["better", "worse"], "no clear difference")
    return pd.DataFrame(out, index=versus.index)


def model_info(method: Method, result: loop.TrainResult | None, device: str, side: int, repeats: int,
               tile: int | str | None) -> dict[str, Any]:
    """Label, parameter count, inference time per MP and kept epoch of one row."""
    model = None if result is None else result.model
    return {"label": method.label, "unpaired": method.unpaired,
            "parameters": 0 if model is None else count_parameters(model),
            "s_per_mp": seconds_per_megapixel(model, device, side, repeats, tile),
            "run": None if result is None else result.name,
            "kept_epoch": None if result is None else result.best_epoch}
