"""Training the colour network: stage 1 on sampled pseudo pairs, stage 2 adversarial refinement.

:func:`train` runs either stage for one pairing mode into ``RUN_DIR/train/<name>/``:

* **Pairs.** Source patches are the pre-processed RAW patches of notebook 01
  (``RUN_DIR/preprocessed/train``). Source *scenes* are split into training and
  validation scenes (``TrainConfig.val_fraction``, seeded); validation patches are
  never trained on. Each epoch visits every training patch once, in a seeded
  order, with one target drawn from the pair graph of notebook 03
  (``RUN_DIR/match/<pairing>/patch_graph.npz``) with probability ``w_st``
  (``ot``, ``unbalanced``, ``knn``, ``random``), or, for ``paired``, the patch's
  own ``train/gt`` rendering (the supervised upper bound, never used by the
  unpaired modes). The plan of epoch ``e`` depends only on ``(seed, e)``. With
  ``TrainConfig.crop`` the source and target crops of a pair share their fractional
  offsets, so they cover the same relative window (for pseudo pairs as for true ones).
* **Losses.** Stage 1: the paper's eq. 13 without the adversarial term
  (:func:`isp_support.train.losses.stage1_loss`). ``paired`` trains either plain L1 or
  the colour terms against the true rendering plus PAL. Stage 2 starts from the
  stage-1 checkpoint, adds ``adv * L_adv`` from a spectral-norm U-Net
  discriminator (or the expert committee) trained with the hinge loss on
  target-domain patches, and lowers the moment and TV weights.
* **Validation** after every epoch (and before the first, epoch 0: the starting
  network) on the held-out patches: the colour distance of the predictions to the
  target domain (:func:`isp_support.evaluate.metrics.colour_distance`), the structure
  fidelity of output to input (:func:`isp_support.evaluate.metrics.structure_fidelity`,
  1 = unchanged structure) and a held-out loss (:class:`HeldOutLoss`): for the
  unpaired modes ``pseudo_loss``, the stage-1 loss against pseudo-targets drawn
  once from the pair graph (no ground truth), for ``paired`` ``paired_loss``, its
  objective against ``train/gt``. The kept checkpoint (:func:`kept_epoch`) has the
  lowest figure of ``TrainConfig.checkpoint_rule`` among epoch 0 and the epochs whose
  structure fidelity is at least ``TrainConfig.min_structure``, so a run that only
  destroys structure keeps its starting network, and stage 2 never ends worse than
  its stage-1 start on its own figure. The colour distance alone rewards collapse
  onto the average target colour, so it is a named option, not the default. Early
  stopping counts epochs without a better kept epoch. Every epoch's evaluated
  weights are kept (``epochs/epoch_<e>.pt``, :func:`epoch_models`) so that notebooks
  can score each against ground truth, for scoring only.
* **Robustness.** A step whose loss is not finite is skipped (no update) and
  counted. After every epoch a full checkpoint (weights, optimiser, schedule,
  EMA, discriminator, history) is written atomically; a killed run resumes from
  the last one and ends with the same weights as an uninterrupted run. A
  finished run (``result.json``) with the same settings is loaded instead of
  retrained unless ``retrain=True``.
"""

from __future__ import annotations

import dataclasses
import io
import json
import math
import pickle
import re
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from tqdm.auto import tqdm

from . import losses
from ..artifacts import atomic_write_bytes, atomic_write_json, sha256_file
from ..config import CHECKPOINT_RULES, PAIRINGS, Config, PreprocessConfig
from ..data import DataError, open_dataset, read_rgb, require_regular_file
from ..pairing.match import PairGraph
from ..evaluate.metrics import SlicedReference, structure_fidelity, ssim_luma, yuv_pixels
from .models import ColourNet, ExpertCommittee, UNetDiscriminator, count_parameters
from ..pipeline.raw import output_path

__all__ = ["CHECKPOINT_RULES", "PAIRINGS", "HeldOutLoss", "PairSource", "TrainResult", "TrainingError", "Validator",
           "checkpoint_rule", "epoch_models", "epoch_plan", "kept_epoch", "load_epoch", "load_model", "loss_weights",
           "pair_source", "read_checkpoint", "train"]

FIGURES = ("colour_distance", "structure", "ssim_luma", "pseudo_loss", "paired_loss")
"""Validation figures an epoch's history record may hold (the held-out loss is one of the last two)."""
RESULT = "result.json"
BEST = "best.pt"
EPOCHS = "epochs"
KEEP_CHECKPOINTS = 2


class TrainingError(RuntimeError):
    """Training cannot start or resume; the message names the file or setting and what to do."""


# --- pairs --------------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class PairSource:
    """The patches one pairing mode trains and validates on, keyed by stable patch ids."""

    pairing: str
    train_ids: tuple[str, ...]
    val_ids: tuple[str, ...]
    val_scenes: tuple[str, ...]
    source_files: dict[str, Path]
    """Pre-processed source patch (``.npy``, ``(3, 2H, 2W)``) of every source id."""
    target_files: dict[str, Path]
    """Target-domain JPEG of every target id."""
    gt_files: dict[str, Path]
    """``train/gt`` rendering of every source id (``paired`` only; empty otherwise)."""
    graph: PairGraph | None
    graph_file: Path | None

    def fingerprint(self) -> dict[str, Any]:
        """What the trained weights depend on, for the settings hash."""
        return {"pairing": self.pairing, "train_ids": list(self.train_ids), "val_ids": list(self.val_ids),
                "graph_sha256": sha256_file(self.graph_file) if self.graph_file else None}


def pair_source(cfg: Config, run_dir: str | Path, pairing: str | None = None) -> PairSource:
    """Collect the training pairs of ``pairing`` (default ``cfg.train.pairing``); errors say which step to run."""
    pairing = pairing or cfg.train.pairing
    if pairing not in PAIRINGS:
        raise TrainingError(f"unknown pairing {pairing!r}; expected one of {', '.join(PAIRINGS)}")
    run_dir = Path(run_dir)
    split = open_dataset(cfg.data_dir)["train"]
    patches = split.raw_patches()
    scene_of = {p.id: p.scene for p in patches}
    source_files = {p.id: output_path(run_dir / "preprocessed", "train", p.id) for p in patches}
    missing = [str(f) for f in source_files.values() if not f.is_file()]
    if missing:
        raise TrainingError(f"{len(missing)} pre-processed source patches are missing (first: {missing[0]}); "
                            f"run notebook 01_preprocess for this RUN_DIR first")
    target_files = {p.id: p.path for p in split.jpeg_patches()}
    graph = graph_file = None
    gt_files: dict[str, Path] = {}
    if pairing == "paired":
        gt_files = {p.id: p.path for s in split.gt.values() for p in s.patches}
        lacking = sorted(set(source_files) - set(gt_files))
        if lacking:
            raise TrainingError(f"pairing='paired' needs train/gt for every RAW patch; {cfg.data_dir}/train/gt lacks "
                                f"{len(lacking)} (first: {lacking[0]}.png). The unpaired modes need no ground truth.")
    else:
        graph_file = run_dir / "match" / pairing / "patch_graph.npz"
        if not graph_file.is_file():
            raise TrainingError(f"{graph_file}: no {pairing!r} pair graph; run notebook 03_embed_match first")
        graph = PairGraph.load(graph_file)
        unknown = sorted(set(source_files) - set(graph.source_ids))
        if unknown:
            raise TrainingError(f"{graph_file}: {len(unknown)} source patches have no edges (first: {unknown[0]}); "
                                f"the graph was built for other data: rerun 03_embed_match")
        absent = sorted(set(graph.target_ids) - set(target_files))
        if absent:
            raise TrainingError(f"{graph_file}: targets missing from {cfg.data_dir}/train/jpegs (first: {absent[0]})")
    scenes = sorted(set(scene_of.values()))
    if len(scenes) < 2:
        raise TrainingError(f"{cfg.data_dir}/train/raws has {len(scenes)} scene(s); validation holds out whole "
                            f"scenes, so at least 2 are needed")
    n_val = min(len(scenes) - 1, max(1, round(cfg.train.val_fraction * len(scenes))))
    order = np.random.default_rng([cfg.seed, 17]).permutation(len(scenes))
    val_scenes = tuple(sorted(scenes[i] for i in order[:n_val]))
    ids = sorted(source_files)
    return PairSource(
        pairing=pairing,
        train_ids=tuple(i for i in ids if scene_of[i] not in val_scenes),
        val_ids=tuple(i for i in ids if scene_of[i] in val_scenes),
        val_scenes=val_scenes, source_files=source_files, target_files=target_files, gt_files=gt_files,
        graph=graph, graph_file=graph_file)


def epoch_plan(src: PairSource, epoch: int, seed: int) -> tuple[list[str], list[Path], np.random.Generator]:
    """Epoch ``epoch``'s source ids in visiting order, each one's target file, and the generator for crops."""
    rng = np.random.default_rng([seed, epoch])
    order = [src.train_ids[i] for i in rng.permutation(len(src.train_ids))]
    if src.graph is None:
        targets = [src.gt_files[i] for i in order]
    else:
        sampler = src.graph.sampler(int(rng.integers(2 ** 62)))
        targets = [src.target_files[t] for t in sampler.sample(order)]
    return order, targets, rng


def read_source(path: Path) -> torch.Tensor:
    """A pre-processed patch as float32 ``(3, H, W)``; a wrong shape or non-finite value names the file."""
    try:
        arr = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise TrainingError(f"{path}: unreadable pre-processed patch ({exc}); rerun 01_preprocess") from exc
    if arr.ndim != 3 or arr.shape[0] != 3:
        raise TrainingError(f"{path}: pre-processed patch of shape {arr.shape}, expected (3, H, W)")
    x = torch.from_numpy(arr.astype(np.float32))
    if not torch.isfinite(x).all():
        raise TrainingError(f"{path}: pre-processed patch holds non-finite values; rerun 01_preprocess")
    return x


def read_target(path: Path) -> torch.Tensor:
    """An sRGB patch as float32 ``(3, H, W)`` in [0, 1]."""
    return torch.from_numpy(read_rgb(path).transpose(2, 0, 1).astype(np.float32) / 255.0)


def _cut(t: torch.Tensor, crop: int, fy: float, fx: float, path: Path) -> torch.Tensor:
    """The ``crop`` x ``crop`` window of ``t`` (``(..., H, W)``) at fractional offsets ``(fy, fx)`` in [0, 1).

    The offsets scale with ``t``'s own size, so a source and a target of unequal sizes cut with the
    same offsets cover the same relative position.
    """
    h, w = t.shape[-2:]
    if crop > min(h, w):
        raise TrainingError(f"{path}: patch {h}x{w} is smaller than TrainConfig.crop={crop}")
    y0, x0 = int(fy * (h - crop + 1)), int(fx * (w - crop + 1))
    return t[..., y0:y0 + crop, x0:x0 + crop]


class _PairDataset(torch.utils.data.Dataset):
    """Item ``i``: (source, target) tensors of the plan, both cut at the pair's planned offsets ``offsets[i]``.

    One ``(fy, fx)`` per pair: a pseudo pair shows a similar scene, so its two crops cover the same
    relative window, as a true pair's do.
    """

    def __init__(self, sources: list[Path], targets: list[Path], offsets: np.ndarray | None, crop: int | None):
        self.sources, self.targets, self.offsets, self.crop = sources, targets, offsets, crop

    def __len__(self) -> int:
        return len(self.sources)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        x, y = read_source(self.sources[i]), read_target(self.targets[i])
        if self.crop is None:
            if x.shape != y.shape:
                raise TrainingError(f"{self.sources[i]} is {tuple(x.shape)} but its target {self.targets[i]} is "
                                    f"{tuple(y.shape)}; set TrainConfig.crop to train on patches of unequal size")
            return x, y
        fy, fx = self.offsets[i]
        return _cut(x, self.crop, fy, fx, self.sources[i]), _cut(y, self.crop, fy, fx, self.targets[i])


def _loader(src: PairSource, epoch: int, cfg: Config, device: str) -> torch.utils.data.DataLoader:
    order, targets, rng = epoch_plan(src, epoch, cfg.seed)
    offsets = rng.random((len(order), 2)) if cfg.train.crop else None
    ds = _PairDataset([src.source_files[i] for i in order], targets, offsets, cfg.train.crop)
    return torch.utils.data.DataLoader(ds, batch_size=cfg.train.batch_size, shuffle=False, drop_last=False,
                                       num_workers=cfg.train.workers, pin_memory=device.startswith("cuda"))


# --- validation ---------------------------------------------------------------------------------------------------

class HeldOutLoss:
    """A training objective on fixed held-out pairs, comparable across epochs and runs.

    ``inputs``: ``(N, 3, H, W)`` validation inputs (shared with :class:`Validator`), cut to
    ``window = (crop, fy, fx)`` when set; ``targets``: ``(N, 3, h, w)`` uint8, already cut to the same
    relative window; ``loss(pred, target)``: the objective, a 0-dim tensor. Batches of ``batch_size``
    in a fixed order (a batch-level moment term depends on the batch), each weighted by its size.
    """

    def __init__(self, name: str, inputs: torch.Tensor, targets: torch.Tensor,
                 loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], batch_size: int,
                 window: tuple[int, float, float] | None = None):
        self.name, self.inputs, self.targets, self.loss, self.batch_size, self.window = \
            name, inputs, targets, loss, batch_size, window

    @torch.no_grad()
    def __call__(self, model: torch.nn.Module, device: str) -> float:
        total = 0.0
        for i in range(0, len(self.inputs), self.batch_size):
            x = self.inputs[i:i + self.batch_size].to(device).float()
            if self.window is not None:
                x = _cut(x, *self.window, "validation input")
            y = self.targets[i:i + self.batch_size].to(device).float() / 255.0
            total += float(self.loss(model(x).float(), y)) * len(x)
        return total / len(self.inputs)

    @classmethod
    def for_source(cls, src: PairSource, cfg: Config, val_ids: tuple[str, ...], inputs: torch.Tensor,
                   loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> "HeldOutLoss":
        """``pseudo_loss`` against one target per validation patch, drawn from the graph once (with the plan
        seed of epoch 0, which no training epoch uses), or, for ``paired``, ``paired_loss`` against
        ``train/gt``; whole patches, or centred aligned crops of ``TrainConfig.crop`` (the training size)."""
        if src.graph is None:
            name, files = "paired_loss", [src.gt_files[i] for i in val_ids]
        else:
            sampler = src.graph.sampler(int(np.random.default_rng([cfg.seed, 0]).integers(2 ** 62)))
            name, files = "pseudo_loss", [src.target_files[t] for t in sampler.sample(list(val_ids))]
        crop = cfg.train.crop
        targets = []
        for sid, f in zip(val_ids, files):
            y = torch.from_numpy(np.ascontiguousarray(read_rgb(f).transpose(2, 0, 1)))
            if crop is not None:
                y = _cut(y, crop, 0.5, 0.5, f)
            elif y.shape != inputs.shape[1:]:
                raise TrainingError(f"{src.source_files[sid]} is {tuple(inputs.shape[1:])} but its validation "
                                    f"target {f} is {tuple(y.shape)}; set TrainConfig.crop for patches of unequal size")
            targets.append(y)
        window = None if crop is None else (crop, 0.5, 0.5)
        return cls(name, inputs, torch.stack(targets), loss, cfg.train.batch_size, window)


class Validator:
    """Validation figures of a network on held-out source patches.

    ``inputs``: ``(N, 3, H, W)`` validation inputs (kept in float16);
    ``reference_pixels``: ``(M, 3)`` YUV pixels of target-domain patches, the reference
    colour distribution; ``held_out``: the held-out loss, if any. Figures are accumulated
    batch by batch on the device.
    """

    def __init__(self, inputs: torch.Tensor, reference_pixels: torch.Tensor, batch_size: int, seed: int = 0,
                 samples: int = 6, max_pixels: int = 200_000, held_out: HeldOutLoss | None = None):
        self.inputs = inputs.half()
        self.batch_size = batch_size
        self.seed = seed
        self.max_pixels = max_pixels
        self.held_out = held_out
        self.reference = SlicedReference(reference_pixels, seed=seed)
        self.sample_idx = torch.from_numpy(np.linspace(0, len(inputs) - 1, min(samples, len(inputs))).round()
                                           .astype(np.int64)).unique()

    @torch.no_grad()
    def evaluate(self, model: torch.nn.Module, device: str) -> tuple[dict[str, float], torch.Tensor]:
        """``({"colour_distance", "structure", "ssim_luma"[, held-out loss]}, predictions of the samples)``."""
        model.eval()
        n = len(self.inputs)
        per_batch = math.ceil(self.max_pixels * self.batch_size / n)
        pixels, structure, ssim = [], 0.0, 0.0
        for k, i in enumerate(range(0, n, self.batch_size)):
            x = self.inputs[i:i + self.batch_size].to(device).float()
            pred = model(x).float()
            pixels.append(yuv_pixels(pred, per_batch, self.seed + 1 + k))
            structure += float(structure_fidelity(x, pred).sum())
            ssim += float(ssim_luma(x, pred).sum())
        figures = {"colour_distance": self.reference.distance(torch.cat(pixels)), "structure": structure / n,
                   "ssim_luma": ssim / n}
        if self.held_out is not None:
            figures[self.held_out.name] = self.held_out(model, device)
        return figures, model(self.inputs[self.sample_idx].to(device).float()).float().cpu()

    @classmethod
    def for_source(cls, src: PairSource, cfg: Config, device: str = "cpu", max_pixels: int = 200_000,
                   loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None) -> "Validator":
        """Validation patches (at most ``val_max_patches``, evenly spaced) and the target-domain reference;
        with ``loss``, also its :class:`HeldOutLoss` on those patches."""
        tc = cfg.train
        val_ids = src.val_ids[:: max(1, math.ceil(len(src.val_ids) / tc.val_max_patches))]
        inputs = torch.stack([read_source(src.source_files[i]).half() for i in val_ids])
        tids = sorted(src.target_files)
        tids = tids[:: max(1, math.ceil(len(tids) / tc.target_ref_patches))]
        per_patch = math.ceil(max_pixels / len(tids))
        reference = torch.cat([yuv_pixels(read_target(src.target_files[t])[None], per_patch, cfg.seed + 7919 * k)
                               for k, t in enumerate(tids)]).to(device)
        held_out = None if loss is None else HeldOutLoss.for_source(src, cfg, val_ids, inputs, loss)
        return cls(inputs, reference, max(tc.batch_size, 16), cfg.seed, tc.samples, max_pixels, held_out)


def checkpoint_rule(cfg: Config, pairing: str) -> str:
    """The figure ``TrainConfig.checkpoint_rule`` chooses by for ``pairing`` (``auto`` resolved)."""
    rule = cfg.train.checkpoint_rule
    if rule not in CHECKPOINT_RULES:
        raise TrainingError(f"unknown TrainConfig.checkpoint_rule {rule!r}; use one of {', '.join(CHECKPOINT_RULES)}")
    if rule == "auto":
        return "paired_loss" if pairing == "paired" else "pseudo_loss"
    if rule == "paired_loss" and pairing != "paired":
        raise TrainingError(f"TrainConfig.checkpoint_rule='paired_loss' scores against ground truth, so only "
                            f"pairing='paired' may use it; {pairing!r} chooses by 'pseudo_loss' or 'colour_distance'")
    if rule == "pseudo_loss" and pairing == "paired":
        raise TrainingError("TrainConfig.checkpoint_rule='pseudo_loss' needs a pair graph, which pairing='paired' "
                            "has not; use 'paired_loss' (or 'auto')")
    return rule


def kept_epoch(history: list[dict[str, Any]], rule: str, min_structure: float) -> int:
    """The epoch with the lowest finite ``rule`` figure among epoch 0 (the starting network, always a
    candidate) and the epochs whose structure fidelity is at least ``min_structure``; ties keep the earlier."""
    ok = [h for h in history if (h["epoch"] == 0 or h["structure"] >= min_structure) and math.isfinite(h[rule])]
    return min(ok, key=lambda h: (h[rule], h["epoch"]))["epoch"] if ok else 0


# --- models and checkpoints ---------------------------------------------------------------------------------------

def _to_bytes(obj: Any) -> bytes:
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


def _load(path: Path, remedy: str = "delete it to retrain from the previous one") -> Any:
    """A checkpoint's contents, weights-only (pickled objects are refused, never run); ``remedy`` ends the
    message when the file is damaged. Torch's own advice to load with ``weights_only=False`` is not passed on."""
    try:
        require_regular_file(path)
    except DataError as exc:
        raise TrainingError(f"{path}: checkpoint {exc.problem}") from None
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        found = re.search(r"GLOBAL (\S+) was not an allowed global", str(exc))
        what = f"it holds a pickled {found[1]}" if found else "not a file torch.save wrote"
        raise TrainingError(f"{path}: not a weights-only checkpoint of this package ({what}); pickled objects are "
                            f"refused") from None
    except Exception as exc:  # torch raises RuntimeError, EOFError, zipfile errors ...
        detail = " ".join(str(exc).split()) or "empty or truncated"
        raise TrainingError(f"{path}: unreadable checkpoint ({type(exc).__name__}: {detail}); {remedy}") from None


_MODEL_ARG_LIMITS = {"hidden": 4096, "lut_size": 129}
"""Largest ColourNet sizes a checkpoint may ask for (far above the 7K network's 128 and 33)."""


def read_checkpoint(path: str | Path) -> tuple[ColourNet, dict[str, Any]]:
    """The colour network of ``best.pt`` or ``epochs/epoch_<e>.pt`` (on the CPU, in eval mode) and the
    checkpoint's entries (``model``, ``model_args``, ``epoch``, ``figures``, ``preprocess``: see
    :func:`_weights_bytes`). Anything else, a bare state dict included, is a :class:`TrainingError`."""
    path = Path(path)
    state = _load(path, "it is damaged: train it again or pass another checkpoint")
    if not isinstance(state, dict) or not {"model", "model_args"} <= state.keys():
        found = sorted(map(str, state))[:4] if isinstance(state, dict) else type(state).__name__
        raise TrainingError(f"{path}: not a network checkpoint of this package (a bare state dict? it needs "
                            f"'model' and 'model_args' entries; found {found}); use a best.pt of training.train")
    args = state["model_args"]
    if not isinstance(args, dict) or not isinstance(state["model"], dict):
        raise TrainingError(f"{path}: model_args {args!r} and model must be mappings (keyword arguments of "
                            f"ColourNet and its state dict)")
    too_big = {k: v for k, v in args.items() if k in _MODEL_ARG_LIMITS and not (
        isinstance(v, int) and 1 <= v <= _MODEL_ARG_LIMITS[k])}
    if too_big:
        raise TrainingError(f"{path}: model_args {too_big} out of range (allowed: 1..{_MODEL_ARG_LIMITS}), "
                            f"refused before any allocation")
    try:
        model = ColourNet(**args)
        model.load_state_dict(state["model"])
    except (TypeError, ValueError, RuntimeError) as exc:
        raise TrainingError(f"{path}: model_args {args} and the saved weights do not make a ColourNet: "
                            f"{' '.join(str(exc).split())}") from None
    return model.eval(), state


def load_model(path: str | Path, device: str = "cpu") -> ColourNet:
    """The colour network saved in ``best.pt`` or ``epochs/epoch_<e>.pt`` (weights only, no unpickling)."""
    return read_checkpoint(path)[0].to(device)


def _weights_bytes(model: torch.nn.Module, model_args: dict[str, Any], epoch: int, figures: dict[str, float],
                   preprocess: PreprocessConfig | None = None) -> bytes:
    """The format of ``best.pt`` and ``epochs/epoch_<e>.pt``; ``preprocess``: the pre-processing the network
    was trained behind, as a plain dict (``None``: not known)."""
    return _to_bytes({"model": model.state_dict(), "model_args": model_args, "epoch": epoch, "figures": figures,
                      "preprocess": None if preprocess is None else dataclasses.asdict(preprocess)})


def load_epoch(folder: str | Path, epoch: int, device: str = "cpu") -> ColourNet:
    """The evaluated weights (the EMA's when on) of one epoch of the run in ``folder``; 0 = the start."""
    path = Path(folder) / EPOCHS / f"epoch_{epoch:03d}.pt"
    if not path.is_file():
        raise TrainingError(f"{path}: no weights of epoch {epoch}; the run has not reached it, or predates "
                            f"per-epoch weights (train it again with retrain=True)")
    return load_model(path, device)


def epoch_models(folder: str | Path, device: str = "cpu") -> dict[int, ColourNet]:
    """Every saved epoch's evaluated weights, epoch 0 included, in epoch order.

    For *scoring* each epoch against ground truth (notebooks 04 and 06): the kept epoch is chosen
    during training by ``TrainConfig.checkpoint_rule``, never from these scores.
    """
    files = sorted((Path(folder) / EPOCHS).glob("epoch_*.pt"))
    if not files:
        raise TrainingError(f"{Path(folder) / EPOCHS}: no per-epoch weights; the run predates them or never "
                            f"started (train it again with retrain=True)")
    return {int(f.stem.split("_")[1]): load_model(f, device) for f in files}


@dataclass
class TrainResult:
    """What :func:`train` returns; ``model`` holds the chosen checkpoint's weights, in eval mode."""

    name: str
    folder: Path
    stage: int
    pairing: str
    model: ColourNet
    history: list[dict[str, Any]]
    best_epoch: int
    settings: dict[str, Any]
    skipped_steps: int
    loaded: bool
    """True when a finished run was loaded instead of trained."""
    val_ids: tuple[str, ...] = ()
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)
    checkpoint_rule: str = "pseudo_loss"
    """The figure that chose ``best_epoch`` (``TrainConfig.checkpoint_rule`` resolved)."""

    @property
    def best(self) -> dict[str, Any]:
        return next(h for h in self.history if h["epoch"] == self.best_epoch)

    @property
    def untrained(self) -> dict[str, Any]:
        return self.history[0]

    def summary(self) -> dict[str, Any]:
        keys = [k for k in FIGURES if k in self.history[0]]
        return {"name": self.name, "stage": self.stage, "pairing": self.pairing, "best_epoch": self.best_epoch,
                "checkpoint_rule": self.checkpoint_rule,
                "epochs_run": self.history[-1]["epoch"], "skipped_steps": self.skipped_steps,
                "parameters": count_parameters(self.model), "seconds": round(self.seconds, 2),
                "untrained": {k: self.untrained[k] for k in keys}, "best": {k: self.best[k] for k in keys},
                "notes": self.notes}


def _settings(cfg: Config, stage: int, src: PairSource, init: Path | None) -> dict[str, Any]:
    return {"stage": stage, "seed": cfg.seed, "train": dataclasses.asdict(cfg.train),
            "stage2": dataclasses.asdict(cfg.stage2) if stage == 2 else None,
            "style_backbone": cfg.embed.style_backbone, "data": src.fingerprint(),
            "init_sha256": sha256_file(init) if init else None}


def _save_samples(folder: Path, epoch: int, inputs: torch.Tensor, preds: torch.Tensor) -> None:
    """Inputs (top row) and this epoch's predictions (bottom row) as one PNG."""
    from PIL import Image

    top = torch.cat(list(inputs.float()), dim=2)
    bottom = torch.cat(list(preds.float()), dim=2)
    grid = (torch.cat([top, bottom], dim=1).clamp(0, 1) * 255).round().byte().permute(1, 2, 0).numpy()
    buf = io.BytesIO()
    Image.fromarray(grid).save(buf, format="PNG")
    atomic_write_bytes(folder / "samples" / f"epoch_{epoch:03d}.png", buf.getvalue())


# --- the loop -----------------------------------------------------------------------------------------------------

def default_name(stage: int, pairing: str, cfg: Config) -> str:
    name = f"stage{stage}_{pairing}"
    if pairing == "paired":
        name += f"_{cfg.train.paired_loss}"
    if cfg.train.moment == "pair":
        name += "_pairmoment"
    if cfg.train.head != "1x1":
        name += f"_{cfg.train.head}"
    if stage == 2 and cfg.stage2.discriminator != "unet":
        name += f"_{cfg.stage2.discriminator}"
    return name


def train(cfg: Config, run_dir: str | Path, device: str = "cpu", stage: int = 1, pairing: str | None = None,
          name: str | None = None, init: str | Path | None = None, retrain: bool = False, progress: bool = True,
          on_epoch_end: Callable[[int, dict[str, Any]], None] | None = None,
          log: Callable[[str], None] = print) -> TrainResult:
    """Train (or resume, or load) one stage for one pairing mode; see the module docstring.

    ``init`` (stage 2): the stage-1 ``best.pt`` to start from; default
    ``RUN_DIR/train/stage1_<pairing>[...]/best.pt``. ``on_epoch_end(epoch, record)`` is
    called after each epoch's checkpoint is on disk.
    """
    if stage not in (1, 2):
        raise TrainingError(f"stage must be 1 or 2, got {stage!r}")
    tc, s2 = cfg.train, cfg.stage2
    run_dir = Path(run_dir)
    src = pair_source(cfg, run_dir, pairing)
    rule = checkpoint_rule(cfg, src.pairing)
    name = name or default_name(stage, src.pairing, cfg)
    folder = run_dir / "train" / name
    if stage == 2:
        init = Path(init) if init else run_dir / "train" / default_name(1, src.pairing, cfg) / BEST
        if not init.is_file():
            raise TrainingError(f"{init}: no stage-1 checkpoint to refine; train stage 1 first (04_train_stage1)")
    else:
        init = Path(init) if init else None
    settings = _settings(cfg, stage, src, init)
    settings_json = json.dumps(settings, sort_keys=True)
    if retrain and folder.exists():
        shutil.rmtree(folder)
    if (folder / RESULT).is_file():
        done = json.loads((folder / RESULT).read_text())
        if done.get("settings") == json.loads(settings_json):
            log(f"[train] {name}: finished run found in {folder}; loading it (retrain=True to train again)")
            return TrainResult(name, folder, stage, src.pairing, load_model(folder / BEST, device), done["history"],
                               done["best_epoch"], settings, done["skipped_steps"], True, src.val_ids,
                               done["seconds"], done["notes"], done["checkpoint_rule"])
        raise TrainingError(f"{folder} holds a finished run with other settings; pass retrain=True or another name")

    torch.manual_seed(cfg.seed)
    model = ColourNet(hidden=tc.hidden, head=tc.head)
    model_args = {"hidden": tc.hidden, "head": tc.head}
    if init is not None:
        base = _load(init)
        if base["model_args"] != model_args:
            raise TrainingError(f"{init}: network {base['model_args']} differs from TrainConfig {model_args}")
        model.load_state_dict(base["model"])
    model.to(device)
    disc: torch.nn.Module | None = None
    if stage == 2:
        if s2.discriminator == "unet":
            disc = UNetDiscriminator(features=s2.d_features)
        elif s2.discriminator == "experts":
            disc = ExpertCommittee(dict(zip(ExpertCommittee.NAMES, s2.expert_weights)))
        else:
            raise TrainingError(f"unknown Stage2Config.discriminator {s2.discriminator!r}; use 'unet' or 'experts'")
        disc.to(device)
    epochs = s2.epochs if stage == 2 else tc.epochs
    opt = torch.optim.AdamW(model.parameters(), lr=s2.lr if stage == 2 else tc.lr, weight_decay=tc.weight_decay)
    d_opt = torch.optim.Adam(disc.parameters(), lr=s2.d_lr, betas=(0.9, 0.99)) if disc is not None else None
    steps_per_epoch = math.ceil(len(src.train_ids) / tc.batch_size)
    if tc.schedule == "cosine":
        sched = torch.optim.lr_scheduler.LambdaLR(
            opt, lambda step: 0.5 * (1 + math.cos(math.pi * min(step, epochs * steps_per_epoch)
                                                  / (epochs * steps_per_epoch))))
    elif tc.schedule == "none":
        sched = None
    else:
        raise TrainingError(f"unknown TrainConfig.schedule {tc.schedule!r}; use 'none' or 'cosine'")
    ema = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(tc.ema)) if tc.ema else None
    weights = loss_weights(cfg, stage, src.pairing)
    gram = None
    if weights.gram:
        gram = losses.gram_loss_for(cfg, device, log=log, scale=tc.gram_scale, reduction=tc.gram_reduction)
    amp = tc.amp and device.startswith("cuda")
    # The held-out loss takes the stage-1 weights (stage 2 only lowers mom and TV: same Gram), no adversarial term.
    held_weights = loss_weights(cfg, 1, src.pairing)
    validator = Validator.for_source(src, cfg, device, loss=lambda p, y: _generator_loss(
        p, y, held_weights, gram, src.pairing, tc.paired_loss)[0])
    eval_model = lambda: ema.module if ema is not None else model  # noqa: E731

    history: list[dict[str, Any]] = []
    skipped = 0
    start = 1
    seconds = 0.0
    checkpoints = sorted((folder / "checkpoints").glob("epoch_*.pt"))
    if checkpoints:
        state = _load(checkpoints[-1])
        if state["settings"] != settings_json:
            raise TrainingError(f"{checkpoints[-1]} was written with other settings; pass retrain=True or another "
                                f"name")
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["opt"])
        if sched is not None:
            sched.load_state_dict(state["sched"])
        if ema is not None:
            ema.load_state_dict(state["ema"])
        if disc is not None:
            disc.load_state_dict(state["disc"])
            d_opt.load_state_dict(state["d_opt"])
        history, skipped, seconds, start = state["history"], state["skipped"], state["seconds"], state["epoch"] + 1
        log(f"[train] {name}: resuming after epoch {state['epoch']} from {checkpoints[-1]}")
    else:
        figures, preds = validator.evaluate(eval_model(), device)
        history.append({"epoch": 0, **figures, "loss": None, "terms": {}, "skipped": 0, "seconds": 0.0})
        _save_samples(folder, 0, validator.inputs[validator.sample_idx], preds)
        blob = _weights_bytes(eval_model(), model_args, 0, figures, cfg.preprocess)
        atomic_write_bytes(folder / EPOCHS / "epoch_000.pt", blob)
        atomic_write_bytes(folder / BEST, blob)
    best_epoch = kept_epoch(history, rule, tc.min_structure)

    for epoch in range(start, epochs + 1):
        if tc.patience is not None and history[-1]["epoch"] - best_epoch >= tc.patience:
            break
        t0 = time.perf_counter()
        model.train()
        sums: dict[str, torch.Tensor] = {}
        steps = epoch_skipped = 0
        loader = _loader(src, epoch, cfg, device)
        for x, y in tqdm(loader, desc=f"{name} epoch {epoch}/{epochs}", disable=not progress, file=sys.stdout,
                         leave=False):
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=amp):
                y_hat = model(x)
            if disc is not None:
                d_terms = _discriminator_step(disc, d_opt, y, y_hat.detach(), amp)
                if d_terms is None:
                    epoch_skipped += 1
                    continue
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=amp):
                total, terms = _generator_loss(y_hat, y, weights, gram, src.pairing, tc.paired_loss)
                if disc is not None:
                    adv = _adversarial(disc, y_hat)
                    total = total + s2.adv * adv
                    terms.update(adv=adv.detach(), total=total.detach(), **d_terms)
            if not torch.isfinite(total):
                epoch_skipped += 1
                continue
            opt.zero_grad(set_to_none=True)
            total.backward()
            opt.step()
            if sched is not None:
                sched.step()
            if ema is not None:
                ema.update_parameters(model)
            for k, v in terms.items():
                sums[k] = sums.get(k, 0.0) + v.float()
            steps += 1
        figures, preds = validator.evaluate(eval_model(), device)
        elapsed = time.perf_counter() - t0
        seconds += elapsed
        skipped += epoch_skipped
        mean_terms = {k: float(v) / steps for k, v in sums.items()} if steps else {}
        record = {"epoch": epoch, **figures, "loss": mean_terms.get("total"), "terms": mean_terms,
                  "skipped": epoch_skipped, "seconds": round(elapsed, 3),
                  "patches_per_second": round(steps * tc.batch_size / elapsed, 2)}
        if epoch_skipped:
            log(f"[train] {name} epoch {epoch}: skipped {epoch_skipped} step(s) with a non-finite loss")
        history.append(record)
        _save_samples(folder, epoch, validator.inputs[validator.sample_idx], preds)
        blob = _weights_bytes(eval_model(), model_args, epoch, figures, cfg.preprocess)
        atomic_write_bytes(folder / EPOCHS / f"epoch_{epoch:03d}.pt", blob)
        best_epoch = kept_epoch(history, rule, tc.min_structure)
        if best_epoch == epoch:
            atomic_write_bytes(folder / BEST, blob)
        state = {"epoch": epoch, "settings": settings_json, "model": model.state_dict(), "opt": opt.state_dict(),
                 "sched": sched.state_dict() if sched is not None else None,
                 "ema": ema.state_dict() if ema is not None else None,
                 "disc": disc.state_dict() if disc is not None else None,
                 "d_opt": d_opt.state_dict() if d_opt is not None else None,
                 "history": history, "skipped": skipped, "seconds": seconds}
        atomic_write_bytes(folder / "checkpoints" / f"epoch_{epoch:03d}.pt", _to_bytes(state))
        for old in sorted((folder / "checkpoints").glob("epoch_*.pt"))[:-KEEP_CHECKPOINTS]:
            old.unlink()
        if on_epoch_end is not None:
            on_epoch_end(epoch, record)

    notes = _choice_notes(history, best_epoch, rule, tc.min_structure,
                          "the untrained identity network" if init is None else f"the weights of {init}")
    if history[-1]["epoch"] < epochs:
        notes.append(f"early stop after epoch {history[-1]['epoch']} (patience {tc.patience})")
    if skipped:
        notes.append(f"{skipped} step(s) skipped for a non-finite loss")
    atomic_write_json(folder / RESULT, {"settings": json.loads(settings_json), "history": history,
                                        "best_epoch": best_epoch, "checkpoint_rule": rule, "skipped_steps": skipped,
                                        "seconds": seconds, "notes": notes})
    for note in notes:
        log(f"[train] {name}: {note}")
    return TrainResult(name, folder, stage, src.pairing, load_model(folder / BEST, device), history, best_epoch,
                       settings, skipped, False, src.val_ids, seconds, notes, rule)


def _choice_notes(history: list[dict[str, Any]], best: int, rule: str, min_structure: float,
                  start: str) -> list[str]:
    """Which rule kept which epoch, what the floor excluded, and when the starting network is kept."""
    kept = next(h for h in history if h["epoch"] == best)
    notes = [f"checkpoint rule {rule!r}: epoch {best} of {history[-1]['epoch']} kept ({rule} {kept[rule]:.4g}, "
             f"structure fidelity {kept['structure']:.3f}; candidates: epoch 0 and the epochs with structure "
             f"fidelity >= {min_structure})"]
    floored = [h["epoch"] for h in history if h["epoch"] and h["structure"] < min_structure and h[rule] < kept[rule]]
    if floored:
        notes.append(f"epoch(s) {', '.join(map(str, floored))} had a lower {rule} but structure fidelity below "
                     f"{min_structure}, so were not admissible")
    if best == 0:
        notes.append(f"no admissible epoch beat the starting network on {rule}; epoch 0 ({start}) is kept")
    return notes


def loss_weights(cfg: Config, stage: int, pairing: str) -> losses.LossWeights:
    """The generator's loss weights for ``stage`` and ``pairing`` (stage 2: the paper's lower moment and TV;
    ``TrainConfig.moment="pair"``: per-pair moment statistics)."""
    tc = cfg.train
    if tc.moment not in ("batch", "pair"):
        raise TrainingError(f"unknown TrainConfig.moment {tc.moment!r}; use 'batch' or 'pair'")
    w = losses.LossWeights(mom=tc.mom, luma=tc.luma, chroma=tc.chroma, gram=tc.gram, tv=tc.tv,
                           moment_per_sample=tc.moment == "pair")
    if stage == 2:
        w = dataclasses.replace(w, mom=cfg.stage2.mom, tv=cfg.stage2.tv)
    if pairing == "paired":
        if tc.paired_loss == "l1":
            return losses.LossWeights(mom=0, luma=0, chroma=0, gram=0, tv=0)
        if tc.paired_loss != "pal":
            raise TrainingError(f"unknown TrainConfig.paired_loss {tc.paired_loss!r}; use 'pal' or 'l1'")
        w = dataclasses.replace(w, pal=1.0)
    return w


def _generator_loss(y_hat: torch.Tensor, y: torch.Tensor, weights: losses.LossWeights, gram: Any, pairing: str,
                    paired_loss: str) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    if pairing == "paired" and paired_loss == "l1":
        l1 = F.l1_loss(y_hat.float(), y)
        return l1, {"l1": l1.detach(), "total": l1.detach()}
    return losses.stage1_loss(y_hat, y, weights, gram)


def _adversarial(disc: torch.nn.Module, y_hat: torch.Tensor) -> torch.Tensor:
    disc.requires_grad_(False)
    try:
        if isinstance(disc, ExpertCommittee):
            return disc.g_loss(y_hat)[0].float()
        return losses.hinge_g_loss(disc(y_hat)).float()
    finally:
        disc.requires_grad_(True)


def _discriminator_step(disc: torch.nn.Module, d_opt: torch.optim.Optimizer, real: torch.Tensor, fake: torch.Tensor,
                        amp: bool) -> dict[str, torch.Tensor] | None:
    """One hinge update of the discriminator on target-domain patches vs predictions; ``None`` if non-finite."""
    disc.train()
    with torch.autocast("cuda", dtype=torch.bfloat16, enabled=amp):
        if isinstance(disc, ExpertCommittee):
            d_loss, parts = disc.d_loss(real, fake)
        else:
            d_loss, parts = losses.hinge_d_loss(disc(real), disc(fake)), {}
    d_loss = d_loss.float()
    if not torch.isfinite(d_loss):
        return None
    d_opt.zero_grad(set_to_none=True)
    d_loss.backward()
    d_opt.step()
    return {"d_loss": d_loss.detach(), **{f"d_{k}": v.detach() for k, v in parts.items()}}
