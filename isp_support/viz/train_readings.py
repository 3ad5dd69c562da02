"""Notebook 04's generated readings: what its probe, its training and its colour clouds show, in words.

Each function returns Markdown whose numbers and wording come from the figures it is given (the prose rule,
:mod:`isp_support.prose`); the notebook displays it with :func:`isp_support.prose.show` beside the figure.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch


def mean_yuv(rgb: torch.Tensor) -> np.ndarray:
    """``(B, 3)``: each image's mean Y, U and V (BT.601 as in the losses, via kornia)."""
    from kornia.color import rgb_to_yuv

    return rgb_to_yuv(rgb.float().cpu()).mean((2, 3)).numpy()


def chroma_distance(a: torch.Tensor, b: torch.Tensor) -> np.ndarray:
    """Per image, the distance in the (U, V) plane between the mean colours of ``a`` and ``b`` (``(B, 3, H, W)``)."""
    return np.linalg.norm(mean_yuv(a)[:, 1:] - mean_yuv(b)[:, 1:], axis=1)


def probe_colour_shift(probe, index: int = 0) -> dict[str, float]:
    """A loss-weight probe's (:class:`~isp_support.viz.loss_weights.FewSteps`) move in colour: the chroma distance
    of a patch's mean colour to its pseudo target's, before (the input) and after (the rendering), as the mean over
    the batch and for patch ``index`` (the one the figure shows)."""
    before, after = chroma_distance(probe.source, probe.target), chroma_distance(probe.rendering, probe.target)
    return {"before": float(before.mean()), "after": float(after.mean()), "shown before": float(before[index]),
            "shown after": float(after[index])}


def _way(before: float, after: float) -> str:
    return ("towards its target's colour" if after < 0.9 * before else "away from its target's colour"
            if after > 1.1 * before else "hardly, relative to its target's colour")


def probe_reading(probes: Mapping[str, object], index: int = 0) -> str:
    """Per preset: does the probe move the rendering's mean colour towards its pseudo target's, or away? For the
    batch (mean over its patches) and for the patch the figure shows."""
    lines = []
    for name, probe in probes.items():
        s = probe_colour_shift(probe, index)
        lines.append(f"* **{name}**, after {probe.steps} steps: batch {s['before']:.4f} -> {s['after']:.4f} (moves "
                     f"{_way(s['before'], s['after'])}); the patch shown {s['shown before']:.4f} -> "
                     f"{s['shown after']:.4f} (moves {_way(s['shown before'], s['shown after'])}).")
    text = ("Chroma distance between a patch's mean colour and its pseudo target's (in the UV plane), input -> "
            "output:\n" + "\n".join(lines))
    if any("away from" in line for line in lines):
        text += ("\nThe stage-1 terms match the *batch's* colour statistics and histograms, not each patch's own "
                 "pseudo target, so a step can lower the loss while moving a patch away from its target's colour.")
    return text


def training_effect_reading(untrained: Mapping[str, float], best: Mapping[str, float], best_epoch: int,
                            min_structure: float) -> str:
    """Did training help: colour distance and structure fidelity of the kept epoch against the identity's."""
    c0, c1 = untrained["colour_distance"], best["colour_distance"]
    way = "closer to" if c1 < c0 else "farther from" if c1 > c0 else "as far from"
    s1 = best["structure"]
    floor = "above" if s1 >= min_structure else "below"
    return (f"The kept network (epoch {best_epoch}) is {way} the target domain's colours than the identity: colour "
            f"distance {c0:.4f} -> {c1:.4f} ({100 * (c1 - c0) / c0:+.0f}%), with structure fidelity {s1:.3f}, "
            f"{floor} the floor `min_structure`.")


def rule_choices(history: Sequence[Mapping], min_structure: float,
                 rules: Sequence[str] = ("pseudo_loss", "colour_distance")) -> dict[str, int]:
    """The epoch each checkpoint rule would keep from ``history`` (:func:`isp_support.train.validate.kept_epoch`)."""
    from ..train.validate import kept_epoch

    return {rule: kept_epoch(list(history), rule, min_structure) for rule in rules if rule in history[0]}


def checkpoint_rules_reading(history: Sequence[Mapping], min_structure: float, kept_rule: str,
                             scores=None) -> str:
    """What this run's numbers say of the checkpoint rules: the epoch each keeps and, with ``scores``
    (:func:`~isp_support.evaluate.held_out.epoch_check`'s, by epoch), its PSNR against the validation scenes'
    ground truth, beside the best epoch's."""
    choices = rule_choices(history, min_structure)
    if scores is None or not len(scores):
        picks = "; ".join(f"`{r}` keeps epoch {e}" for r, e in choices.items())
        return f"On this run: {picks}. Without ground truth, which choice renders better is not measured here."
    psnr = scores["psnr"]
    best = int(psnr.idxmax())
    mine = " (this run's rule)"
    picks = "; ".join(f"`{r}`{mine if r == kept_rule else ''} keeps epoch {e} ({psnr.loc[e]:.2f} dB)"
                      for r, e in choices.items())
    text = f"On this run's validation scenes: {picks}; the best epoch by PSNR is {best} ({psnr.max():.2f} dB)."
    if len(set(choices.values())) == 1:
        text += " Both rules keep the same epoch here, so this run cannot tell them apart."
    elif {"pseudo_loss", "colour_distance"} <= set(choices):
        gap = psnr.loc[choices["pseudo_loss"]] - psnr.loc[choices["colour_distance"]]
        word = "higher" if gap > 0 else "lower" if gap < 0 else "the same"
        text += f" The pseudo-loss choice scores {abs(gap):.2f} dB {word} than the colour-distance choice here."
    return text + " One run's validation scenes are few: notebook 06's regret table measures the rules on test data."


def upper_bound_reading(table, psnr: str = "PSNR to ground truth (dB)") -> str:
    """The paired upper bound's reading: how much of the identity-to-paired PSNR gap unpaired stage 1 closes.

    ``table``: rows ``untrained (identity)``, the stage-1 run, the paired run (in that order), column ``psnr``."""
    if table is None or not len(table):
        return "No ground truth in this data set: the paired upper bound is not measured."
    ident, stage1, paired = (float(v) for v in table[psnr].iloc[:3])
    gap = paired - ident
    if gap <= 0:
        return (f"The paired network ({paired:.2f} dB) does not beat the identity ({ident:.2f} dB) here, so it "
                f"bounds nothing; stage 1 reaches {stage1:.2f} dB.")
    share = (stage1 - ident) / gap
    return (f"Against the validation scenes' ground truth: identity {ident:.2f} dB, stage 1 {stage1:.2f} dB, paired "
            f"{paired:.2f} dB. Unpaired stage 1 closes {100 * share:.0f}% of the identity-to-paired gap"
            f"{' and passes the paired network' if share > 1 else ''}.")
