"""What one training step minimises: the loss weights of a run, the generator loss, and each stage's objective.

* Stage 1 (:class:`Objective`): the paper's eq. 13 without the adversarial term
  (:func:`isp_support.train.losses.stage1_loss`). ``paired`` trains either plain L1 or
  the colour terms against the true rendering plus PAL (:func:`generator_loss`).
* Stage 2 (:class:`AdversarialObjective`): the same generator loss with the paper's
  lower moment and TV weights (:func:`loss_weights`), plus ``adv * L_adv`` from a
  discriminator (:mod:`isp_support.train.discriminators`: the spectral-norm U-Net or
  the expert committee) trained with the hinge loss on target-domain patches, one
  update before each generator step.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from . import TrainingError, losses
from .discriminators import Discriminator, ExpertCommittee, UNetDiscriminator
from .precision import autocast
from ..config import Config, Stage2Config

__all__ = ["AdversarialObjective", "Objective", "discriminator", "generator_loss", "loss_weights"]

Loss = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, dict[str, torch.Tensor]]]
"""``loss(y_hat, y) -> (total, terms)``: a differentiable total and its detached named terms."""


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


def generator_loss(y_hat: torch.Tensor, y: torch.Tensor, weights: losses.LossWeights, gram: Any, pairing: str,
                   paired_loss: str) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Plain L1 for ``pairing="paired"`` with ``paired_loss="l1"``, else the weighted stage-1 loss."""
    if pairing == "paired" and paired_loss == "l1":
        l1 = F.l1_loss(y_hat.float(), y)
        return l1, {"l1": l1.detach(), "total": l1.detach()}
    return losses.stage1_loss(y_hat, y, weights, gram)


def discriminator(s2: Stage2Config) -> Discriminator:
    """The discriminator ``Stage2Config.discriminator`` names (drawing its initial weights from torch's generator)."""
    if s2.discriminator == "unet":
        return UNetDiscriminator(features=s2.d_features)
    if s2.discriminator == "experts":
        return ExpertCommittee(dict(zip(ExpertCommittee.NAMES, s2.expert_weights)))
    raise TrainingError(f"unknown Stage2Config.discriminator {s2.discriminator!r}; use 'unet' or 'experts'")


@dataclass
class Objective:
    """Stage 1: the generator loss ``loss`` alone; nothing else trains."""

    loss: Loss

    def critic_step(self, real: torch.Tensor, fake: torch.Tensor, amp: bool) -> dict[str, torch.Tensor] | None:
        """Train whatever judges the predictions before the generator step: nothing here (no terms)."""
        return {}

    def __call__(self, y_hat: torch.Tensor, y: torch.Tensor,
                 critic_terms: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The generator's ``(total, terms)`` for predictions ``y_hat`` of targets ``y``."""
        return self.loss(y_hat, y)

    def state_dict(self) -> dict[str, Any]:
        """What a full checkpoint keeps of the objective (stage 1: no discriminator)."""
        return {"disc": None, "d_opt": None}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict` from a full checkpoint (nothing in stage 1)."""


@dataclass
class AdversarialObjective(Objective):
    """Stage 2: a hinge update of ``disc`` first, then ``loss`` plus ``adv`` times the generator's hinge loss
    (the discriminator frozen for it)."""

    disc: Discriminator
    d_opt: torch.optim.Optimizer
    adv: float

    def critic_step(self, real: torch.Tensor, fake: torch.Tensor, amp: bool) -> dict[str, torch.Tensor] | None:
        """One hinge update of the discriminator on target-domain patches vs predictions; ``None`` if non-finite."""
        self.disc.train()
        with autocast(real, amp):
            d_loss, parts = self.disc.d_loss(real, fake)
        d_loss = d_loss.float()
        if not torch.isfinite(d_loss):
            return None
        self.d_opt.zero_grad(set_to_none=True)
        d_loss.backward()
        self.d_opt.step()
        return {"d_loss": d_loss.detach(), **{f"d_{k}": v.detach() for k, v in parts.items()}}

    def __call__(self, y_hat: torch.Tensor, y: torch.Tensor,
                 critic_terms: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The generator loss plus ``adv * L_adv``; the terms also hold ``adv`` and the discriminator's."""
        total, terms = self.loss(y_hat, y)
        self.disc.requires_grad_(False)
        try:
            adv = self.disc.g_loss(y_hat)[0].float()
        finally:
            self.disc.requires_grad_(True)
        total = total + self.adv * adv
        terms.update(adv=adv.detach(), total=total.detach(), **critic_terms)
        return total, terms

    def state_dict(self) -> dict[str, Any]:
        """The discriminator's weights and its optimiser's state."""
        return {"disc": self.disc.state_dict(), "d_opt": self.d_opt.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict` from a full checkpoint."""
        self.disc.load_state_dict(state["disc"])
        self.d_opt.load_state_dict(state["d_opt"])
