"""Training the colour network: stage 1 on sampled pseudo pairs, stage 2 adversarial refinement.

:func:`train` runs either stage for one pairing mode into ``RUN_DIR/train/<name>/``:

* **Pairs** (:mod:`isp_support.train.pairs`): every training patch once per epoch, in a seeded order, each
  with one target drawn from the pair graph of notebook 03 (or its ``train/gt`` rendering for ``paired``);
  validation scenes are never trained on.
* **Objective** (:mod:`isp_support.train.objectives`): stage 1 the paper's eq. 13 without the adversarial
  term; stage 2 starts from the stage-1 checkpoint, adds ``adv * L_adv`` from a discriminator trained with
  the hinge loss and lowers the moment and TV weights. :func:`train_step` is one optimiser step of either.
* **Validation and the kept epoch** (:mod:`isp_support.train.validate`) after every epoch and before the
  first (epoch 0: the starting network). Early stopping counts epochs without a better kept epoch. Every
  epoch's evaluated weights are kept (``epochs/epoch_<e>.pt``, :func:`isp_support.train.checkpoint.epoch_models`)
  so that notebooks can score each against ground truth, for scoring only.
* **Arithmetic** (:mod:`isp_support.train.precision`): bfloat16 autocast of the steps on CUDA
  (``TrainConfig.amp``) and on request on a CPU that computes it natively (``cpu_amp``); validation is float32.
  Backend flags (:func:`~isp_support.runs.configure_backends`) and the Gram backbone that ran go to ``result.json``.
* **Robustness.** A step whose loss is not finite is skipped (no update) and counted. After every epoch
  a full checkpoint (weights, optimiser, schedule, EMA, discriminator, history) is written atomically; a
  killed run resumes from the last one and ends with the same weights as an uninterrupted run. A finished
  run (``result.json``) with the same settings is loaded instead of retrained unless ``retrain=True``.
"""

from __future__ import annotations

import json
import math
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import torch
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from tqdm.auto import tqdm

from . import TrainingError
from .checkpoint import (BEST, EPOCHS, GRAM_BACKBONE_RAN, RESULT, comparable, load_model, load_state, run_settings,
                         same_settings, sample_path, save_samples, to_bytes, weights_bytes)
from .gram import training_gram_loss
from .models import ColourNet, count_parameters
from .objectives import AdversarialObjective, Loss, Objective, discriminator, generator_loss, loss_weights
from .pairs import PairSource, epoch_loader, pair_source, seed_of
from .precision import autocast, uses_bf16
from .validate import FIGURES, HELD_OUT_GRAM_CACHE_BYTES, Validator, checkpoint_rule, choice_notes, kept_epoch
from ..artifacts import atomic_write_bytes, atomic_write_json
from ..config import Config, TrainConfig
from ..io import DataError, read_json
from ..runs import RunLayout, configure_backends, run_name

__all__ = ["TrainResult", "sample_path", "train", "train_step"]

KEEP_CHECKPOINTS = 2


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


def train_step(model: torch.nn.Module, opt: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor,
               objective: Objective, amp: bool = False, sched: torch.optim.lr_scheduler.LRScheduler | None = None,
               ema: AveragedModel | None = None) -> dict[str, torch.Tensor] | None:
    """One training step on the batch ``(x, y)``: predict, ``objective.critic_step`` (stage 2: one discriminator
    update), the objective, and when it is finite, backward, ``opt.step()``, then the schedule's and the EMA's steps.
    ``amp``: the forward passes and losses under bfloat16 autocast (:mod:`~isp_support.train.precision`).

    Returns the objective's detached terms, or ``None`` for a skipped step (a non-finite loss: no update).
    """
    with autocast(x, amp):
        y_hat = model(x)
    critic_terms = objective.critic_step(y, y_hat.detach(), amp)
    if critic_terms is None:
        return None
    with autocast(x, amp):
        total, terms = objective(y_hat, y, critic_terms)
    if not torch.isfinite(total):
        return None
    opt.zero_grad(set_to_none=True)
    total.backward()
    opt.step()
    if sched is not None:
        sched.step()
    if ema is not None:
        ema.update_parameters(model)
    return terms


@dataclass
class _Run:
    """One run being trained: where it writes, its networks and optimisers, and its progress so far."""

    cfg: Config
    stage: int
    src: PairSource
    name: str
    folder: Path
    init: Path | None
    settings: dict[str, Any]
    rule: str
    device: str
    model: ColourNet
    model_args: dict[str, Any]
    epochs: int
    opt: torch.optim.Optimizer
    sched: torch.optim.lr_scheduler.LambdaLR | None
    ema: AveragedModel | None
    objective: Objective
    validator: Validator
    amp: bool
    backends: dict[str, Any]
    gram_backbone: str | None  # None: no Gram term
    history: list[dict[str, Any]] = field(default_factory=list)
    skipped: int = 0
    seconds: float = 0.0
    start: int = 1

    @property
    def settings_json(self) -> str:
        return json.dumps(self.settings, sort_keys=True)

    def eval_model(self) -> torch.nn.Module:
        """The network validated and saved: the EMA's when on."""
        return self.ema.module if self.ema is not None else self.model


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
    backends = configure_backends()
    run_dir = Path(run_dir)
    src = pair_source(cfg, run_dir, pairing)
    rule = checkpoint_rule(cfg, src.pairing)
    name = name or run_name(stage, src.pairing, cfg)
    folder = RunLayout(run_dir).training(name)
    init = _start_weights(cfg, run_dir, stage, src.pairing, init)
    settings = run_settings(cfg, stage, src, init, device)
    if retrain and folder.exists():
        shutil.rmtree(folder)
    if (folder / RESULT).is_file():
        return _finished(folder, name, stage, src, settings, device, log)
    (folder / BEST).unlink(missing_ok=True)  # an unfinished run's (written by an older version): never used
    run = _set_up(cfg, stage, src, name, folder, init, settings, rule, device, backends, log)
    _resume(run, log)
    best_epoch = kept_epoch(run.history, rule, cfg.train.min_structure)
    for epoch in range(run.start, run.epochs + 1):
        if cfg.train.patience is not None and run.history[-1]["epoch"] - best_epoch >= cfg.train.patience:
            break
        record = _epoch(run, epoch, progress, log)
        best_epoch = _keep(run, epoch)
        if on_epoch_end is not None:
            on_epoch_end(epoch, record)
    return _finish(run, best_epoch, log)


def _start_weights(cfg: Config, run_dir: Path, stage: int, pairing: str, init: str | Path | None) -> Path | None:
    """The checkpoint a run starts from: ``init``, or for stage 2 by default its stage-1 run's ``best.pt``."""
    if stage == 2:
        init = Path(init) if init else RunLayout(run_dir).training(run_name(1, pairing, cfg)) / BEST
        if not init.is_file():
            raise TrainingError(f"{init}: no stage-1 checkpoint to refine; train stage 1 first (04_train_stage1)")
        return init
    return Path(init) if init else None


def _finished(folder: Path, name: str, stage: int, src: PairSource, settings: dict[str, Any], device: str,
              log: Callable[[str], None]) -> TrainResult:
    """The finished run in ``folder``, when it was trained with ``settings`` (:func:`same_settings`); else a
    :class:`TrainingError`."""
    try:
        done = read_json(folder / RESULT)
    except DataError as exc:
        raise TrainingError(f"{exc}; delete {folder} to train the run again") from None
    if not isinstance(done, dict):
        raise TrainingError(f"{folder / RESULT}: not a training record (a JSON object); delete {folder} to train "
                            f"the run again")
    same, ran = same_settings(done.get("settings"), settings)
    if same:
        log(f"[train] {name}: finished run found in {folder}; loading it (retrain=True to train again)")
        if ran is not None:
            log(f"WARNING [train] {name}: its Gram loss ran on {ran}, not the configured {settings['style_backbone']}")
            settings = {**settings, GRAM_BACKBONE_RAN: ran}
        return TrainResult(name, folder, stage, src.pairing, load_model(folder / BEST, device), done["history"],
                           done["best_epoch"], settings, done["skipped_steps"], True, src.val_ids,
                           done["seconds"], done["notes"], done["checkpoint_rule"])
    raise TrainingError(f"{folder} holds a finished run with other settings; pass retrain=True or another name")


def _stage(cfg: Config, stage: int, device: str) -> tuple[int, float, Callable[[Loss], Objective]]:
    """The stage's epochs, learning rate and objective (given its generator loss); stage 2 builds its
    discriminator and optimiser here, drawing the discriminator's weights from torch's generator."""
    if stage == 1:
        return cfg.train.epochs, cfg.train.lr, Objective
    s2 = cfg.stage2
    disc = discriminator(s2)
    disc.to(device)
    d_opt = torch.optim.Adam(disc.parameters(), lr=s2.d_lr, betas=(0.9, 0.99))
    return s2.epochs, s2.lr, lambda loss: AdversarialObjective(loss, disc, d_opt, s2.adv)


def _schedule(opt: torch.optim.Optimizer, tc: TrainConfig, steps: int) -> torch.optim.lr_scheduler.LambdaLR | None:
    """``TrainConfig.schedule`` over ``steps`` optimiser steps: ``None`` (constant) or per-step cosine to 0."""
    if tc.schedule == "cosine":
        return torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 0.5 * (1 + math.cos(math.pi * min(step, steps)
                                                                                        / steps)))
    if tc.schedule == "none":
        return None
    raise TrainingError(f"unknown TrainConfig.schedule {tc.schedule!r}; use 'none' or 'cosine'")


def _set_up(cfg: Config, stage: int, src: PairSource, name: str, folder: Path, init: Path | None,
            settings: dict[str, Any], rule: str, device: str, backends: dict[str, Any],
            log: Callable[[str], None]) -> _Run:
    """A run's networks, optimisers, schedule, EMA, objective and validator, built in a fixed order (torch's
    generator, seeded here, draws the colour network's weights, then the discriminator's). A Gram stand-in adds
    :data:`~isp_support.train.checkpoint.GRAM_BACKBONE_RAN` to ``settings``: it never resumes the other's."""
    tc = cfg.train
    torch.manual_seed(seed_of(cfg, "init"))
    model = ColourNet(hidden=tc.hidden, head=tc.head)
    model_args = {"hidden": tc.hidden, "head": tc.head}
    if init is not None:
        base = load_state(init)
        if base["model_args"] != model_args:
            raise TrainingError(f"{init}: network {base['model_args']} differs from TrainConfig {model_args}")
        model.load_state_dict(base["model"])
    model.to(device)
    epochs, lr, objective = _stage(cfg, stage, device)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=tc.weight_decay)
    sched = _schedule(opt, tc, epochs * math.ceil(len(src.train_ids) / tc.batch_size))
    ema = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(tc.ema)) if tc.ema else None
    weights = loss_weights(cfg, stage, src.pairing)
    gram = None
    if weights.gram:
        gram = training_gram_loss(cfg, device, log=log)
        if gram.backbone_name != cfg.embed.style_backbone:
            settings = {**settings, GRAM_BACKBONE_RAN: gram.backbone_name}
    # The held-out loss takes the stage-1 weights (stage 2 only lowers mom and TV: same Gram), no adversarial term.
    held_weights = loss_weights(cfg, 1, src.pairing)
    held_gram = None if gram is None else gram.with_target_cache(HELD_OUT_GRAM_CACHE_BYTES)
    validator = Validator.for_source(src, cfg, device, loss=lambda p, y: generator_loss(
        p, y, held_weights, held_gram, src.pairing, tc.paired_loss)[0])
    loss = partial(generator_loss, weights=weights, gram=gram, pairing=src.pairing, paired_loss=tc.paired_loss)
    gram_backbone = None if gram is None else gram.backbone_name
    log(f"[train] {name}: training steps in {settings['precision']} (amp={tc.amp}, cpu_amp={tc.cpu_amp}); validation "
        f"float32; Gram backbone {gram_backbone or 'none (no Gram term)'}; backends {backends}")
    return _Run(cfg, stage, src, name, folder, init, settings, rule, device, model, model_args, epochs, opt, sched,
                ema, objective(loss), validator, uses_bf16(device, tc.amp, tc.cpu_amp), backends, gram_backbone)


def _resume(run: _Run, log: Callable[[str], None]) -> None:
    """Continue from the run's last full checkpoint, if any; else validate and save the starting network (epoch 0)."""
    checkpoints = sorted((run.folder / "checkpoints").glob("epoch_*.pt"))
    if checkpoints:
        state = load_state(checkpoints[-1])
        if comparable(json.loads(state["settings"])) != comparable(json.loads(run.settings_json)):
            raise TrainingError(f"{checkpoints[-1]} was written with other settings; pass retrain=True or another "
                                f"name")
        run.model.load_state_dict(state["model"])
        run.opt.load_state_dict(state["opt"])
        if run.sched is not None:
            run.sched.load_state_dict(state["sched"])
        if run.ema is not None:
            run.ema.load_state_dict(state["ema"])
        run.objective.load_state_dict(state)
        run.history, run.skipped, run.seconds = state["history"], state["skipped"], state["seconds"]
        run.start = state["epoch"] + 1
        log(f"[train] {run.name}: resuming after epoch {state['epoch']} from {checkpoints[-1]}")
        return
    figures, preds = run.validator.evaluate(run.eval_model(), run.device)
    run.history.append({"epoch": 0, **figures, "loss": None, "terms": {}, "skipped": 0, "seconds": 0.0})
    save_samples(run.folder, 0, run.validator.inputs[run.validator.sample_idx], preds)
    blob = weights_bytes(run.eval_model(), run.model_args, 0, figures, run.cfg.preprocess)
    atomic_write_bytes(run.folder / EPOCHS / "epoch_000.pt", blob)


def _steps(run: _Run, epoch: int, progress: bool) -> tuple[dict[str, torch.Tensor], int, int]:
    """Epoch ``epoch``'s training steps: ``(sums of the terms, steps taken, steps skipped)``."""
    sums: dict[str, torch.Tensor] = {}
    steps = skipped = 0
    loader = epoch_loader(run.src, epoch, run.cfg, run.device)
    for x, y in tqdm(loader, desc=f"{run.name} epoch {epoch}/{run.epochs}", disable=not progress, file=sys.stdout,
                     leave=False):
        x, y = x.to(run.device, non_blocking=True), y.to(run.device, non_blocking=True)
        terms = train_step(run.model, run.opt, x, y, run.objective, run.amp, run.sched, run.ema)
        if terms is None:
            skipped += 1
            continue
        for k, v in terms.items():
            sums[k] = sums.get(k, 0.0) + v.float()
        steps += 1
    return sums, steps, skipped


def _epoch(run: _Run, epoch: int, progress: bool, log: Callable[[str], None]) -> dict[str, Any]:
    """Train and validate one epoch; record it in the history and save its samples and evaluated weights
    (``epochs/epoch_<e>.pt``, :func:`~isp_support.train.checkpoint.weights_bytes`). Returns the epoch's record."""
    t0 = time.perf_counter()
    run.model.train()
    sums, steps, epoch_skipped = _steps(run, epoch, progress)
    figures, preds = run.validator.evaluate(run.eval_model(), run.device)
    elapsed = time.perf_counter() - t0
    run.seconds += elapsed
    run.skipped += epoch_skipped
    mean_terms = {k: float(v) / steps for k, v in sums.items()} if steps else {}
    record = {"epoch": epoch, **figures, "loss": mean_terms.get("total"), "terms": mean_terms,
              "skipped": epoch_skipped, "seconds": round(elapsed, 3),
              "patches_per_second": round(steps * run.cfg.train.batch_size / elapsed, 2)}
    if epoch_skipped:
        log(f"[train] {run.name} epoch {epoch}: skipped {epoch_skipped} step(s) with a non-finite loss")
    run.history.append(record)
    save_samples(run.folder, epoch, run.validator.inputs[run.validator.sample_idx], preds)
    blob = weights_bytes(run.eval_model(), run.model_args, epoch, figures, run.cfg.preprocess)
    atomic_write_bytes(run.folder / EPOCHS / f"epoch_{epoch:03d}.pt", blob)
    return record


def _keep(run: _Run, epoch: int) -> int:
    """The kept epoch after ``epoch``, and the full checkpoint of ``epoch`` written (the last
    :data:`KEEP_CHECKPOINTS` are kept). ``best.pt`` is written only when the run finishes (:func:`_finish`)."""
    best_epoch = kept_epoch(run.history, run.rule, run.cfg.train.min_structure)
    state = {"epoch": epoch, "settings": run.settings_json, "model": run.model.state_dict(),
             "opt": run.opt.state_dict(), "sched": run.sched.state_dict() if run.sched is not None else None,
             "ema": run.ema.state_dict() if run.ema is not None else None, **run.objective.state_dict(),
             "history": run.history, "skipped": run.skipped, "seconds": run.seconds}
    atomic_write_bytes(run.folder / "checkpoints" / f"epoch_{epoch:03d}.pt", to_bytes(state))
    for old in sorted((run.folder / "checkpoints").glob("epoch_*.pt"))[:-KEEP_CHECKPOINTS]:
        old.unlink()
    return best_epoch


def _finish(run: _Run, best_epoch: int, log: Callable[[str], None]) -> TrainResult:
    """Write ``best.pt`` (the kept epoch's weights), then ``result.json`` (settings, history, the kept epoch and why,
    backends, Gram backbone), the record last; return the run. A killed run has neither."""
    tc = run.cfg.train
    notes = choice_notes(run.history, best_epoch, run.rule, tc.min_structure,
                         "the untrained identity network" if run.init is None else f"the weights of {run.init}")
    if run.history[-1]["epoch"] < run.epochs:
        notes.append(f"early stop after epoch {run.history[-1]['epoch']} (patience {tc.patience})")
    if run.skipped:
        notes.append(f"{run.skipped} step(s) skipped for a non-finite loss")
    atomic_write_bytes(run.folder / BEST, (run.folder / EPOCHS / f"epoch_{best_epoch:03d}.pt").read_bytes())
    atomic_write_json(run.folder / RESULT, {"settings": json.loads(run.settings_json), "history": run.history,
                                            "best_epoch": best_epoch, "checkpoint_rule": run.rule,
                                            "skipped_steps": run.skipped, "seconds": run.seconds, "notes": notes,
                                            "backends": run.backends, "gram_backbone": run.gram_backbone})
    for note in notes:
        log(f"[train] {run.name}: {note}")
    return TrainResult(run.name, run.folder, run.stage, run.src.pairing, load_model(run.folder / BEST, run.device),
                       run.history, best_epoch, run.settings, run.skipped, False, run.src.val_ids, run.seconds, notes,
                       run.rule)
