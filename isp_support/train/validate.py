"""Validation of every epoch on held-out scenes, and the rule that chooses the kept epoch.

After every epoch (and before the first, epoch 0: the starting network) :class:`Validator`
scores the network on the held-out patches: the colour distance of the predictions to the
target domain (:func:`isp_support.evaluate.metrics.colour_distance`), the structure
fidelity of output to input (:func:`isp_support.evaluate.metrics.structure_fidelity`,
1 = unchanged structure) and a held-out loss (:class:`HeldOutLoss`): for the unpaired
modes ``pseudo_loss``, the stage-1 loss against pseudo-targets drawn once from the pair
graph (no ground truth), for ``paired`` ``paired_loss``, its objective against
``train/gt``. The kept checkpoint (:func:`kept_epoch`) has the lowest figure of
``TrainConfig.checkpoint_rule`` (:func:`checkpoint_rule`) among epoch 0 and the epochs
whose structure fidelity is at least ``TrainConfig.min_structure``, so a run that only
destroys structure keeps its starting network, and stage 2 never ends worse than its
stage-1 start on its own figure. The colour distance alone rewards collapse onto the
average target colour, so it is a named option, not the default.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from . import TrainingError
from .models import cache_batch
from .pairs import PairSource, cut, read_source, seed_of
from ..config import Config
from ..config_rules import CHECKPOINT_RULES
from ..io import read_rgb, read_rgb_tensor
from ..metrics import SlicedReference, structure_fidelity, ssim_luma, yuv_pixels

__all__ = ["FIGURES", "HELD_OUT_GRAM_CACHE_BYTES", "HeldOutLoss", "Validator", "checkpoint_rule", "choice_notes",
           "kept_epoch", "target_pixels"]

FIGURES = ("colour_distance", "structure", "ssim_luma", "pseudo_loss", "paired_loss")
"""Validation figures an epoch's history record may hold (the held-out loss is one of the last two)."""
HELD_OUT_GRAM_CACHE_BYTES = 1 << 30
"""The held-out loss scores the same targets after every epoch, so training gives it a Gram loss that keeps
their side of the loss (:meth:`~isp_support.train.gram.GramLoss.with_target_cache`), up to this many bytes:
with the offline VGG16 on 48 px crops about 0.53 MB per patch (three Gram matrices, the two deepest layers'
features in the trace form), 31 MB for the demo's 59 validation patches."""


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
                x = cut(x, *self.window, "validation input")
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
            sampler = src.graph.sampler(int(np.random.default_rng([seed_of(cfg, "validation"), 0]).integers(2 ** 62)))
            name, files = "pseudo_loss", [src.target_files[t] for t in sampler.sample(list(val_ids))]
        crop = cfg.train.crop
        targets = []
        for sid, f in zip(val_ids, files):
            y = torch.from_numpy(np.ascontiguousarray(read_rgb(f).transpose(2, 0, 1)))
            if crop is not None:
                y = cut(y, crop, 0.5, 0.5, f)
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
    batch by batch on the device; within a batch the network runs in cache-sized sub-batches
    (:func:`~isp_support.train.models.cache_batch`: on the CPU one 96 px patch at a time, 3-5x faster than
    16 at once). Each patch's output does not depend on its batch's other patches; only float rounding can
    (docs/measurements.md, "Validation's rendering").
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
        chunk = cache_batch(*self.inputs.shape[-2:], device)
        pixels, structure, ssim = [], 0.0, 0.0
        for k, i in enumerate(range(0, n, self.batch_size)):
            x = self.inputs[i:i + self.batch_size].to(device).float()
            pred = _chunked(model, x, chunk)
            pixels.append(yuv_pixels(pred, per_batch, self.seed + 1 + k))
            structure += float(structure_fidelity(x, pred).sum())
            ssim += float(ssim_luma(x, pred).sum())
        figures = {"colour_distance": self.reference.distance(torch.cat(pixels)), "structure": structure / n,
                   "ssim_luma": ssim / n}
        if self.held_out is not None:
            figures[self.held_out.name] = self.held_out(model, device)
        return figures, _chunked(model, self.inputs[self.sample_idx].to(device).float(), chunk).cpu()

    @classmethod
    def for_source(cls, src: PairSource, cfg: Config, device: str = "cpu", max_pixels: int = 200_000,
                   loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None) -> "Validator":
        """Validation patches (at most ``val_max_patches``, evenly spaced) and the target-domain reference;
        with ``loss``, also its :class:`HeldOutLoss` on those patches."""
        tc = cfg.train
        val_ids = src.val_ids[:: max(1, math.ceil(len(src.val_ids) / tc.val_max_patches))]
        inputs = torch.stack([read_source(src.source_files[i]).half() for i in val_ids])
        targets = [src.target_files[t] for t in sorted(src.target_files)]
        seed = seed_of(cfg, "validation")
        reference = target_pixels(targets, tc.target_ref_patches, seed, max_pixels).to(device)
        held_out = None if loss is None else HeldOutLoss.for_source(src, cfg, val_ids, inputs, loss)
        return cls(inputs, reference, max(tc.batch_size, 16), seed, tc.samples, max_pixels, held_out)


def target_pixels(files: list[Path], patches: int, seed: int, max_pixels: int = 200_000) -> torch.Tensor:
    """YUV pixels of the target domain, ``(N, 3)``: an equal share of at most ``max_pixels`` from each of
    ``patches`` evenly spaced ``files`` (in the given order, by patch id), seeded per file."""
    files = files[:: max(1, math.ceil(len(files) / patches))]
    per_patch = math.ceil(max_pixels / len(files))
    return torch.cat([yuv_pixels(read_rgb_tensor(f)[None], per_patch, seed + 7919 * k) for k, f in enumerate(files)])


def _chunked(model: torch.nn.Module, x: torch.Tensor, chunk: int) -> torch.Tensor:
    """``model(x)`` in float32, run on sub-batches of ``chunk`` patches."""
    return torch.cat([model(x[j:j + chunk]).float() for j in range(0, len(x), chunk)])


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


def choice_notes(history: list[dict[str, Any]], best: int, rule: str, min_structure: float,
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
