"""Notebook 05's figures and readings: the hinge GAN on a 1-D toy, and what stage 2's adversarial epochs did in a
run, in words chosen by the numbers (the UV clouds' spread: :mod:`.colour_spread`).

* :func:`hinge_toy`: the toy's distributions before and after, the discriminator's output curve with the hinge
  margins, and both hinge losses per step (05, "A hinge GAN on a toy"); :func:`toy_reading` says what it shows.
* :func:`stage2_reading` / :func:`discriminator_reading`: colour distance per adversarial epoch, the kept
  checkpoint, and the discriminator's hinge loss per epoch (05, the U-Net run and the expert committee).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
import torch

from .theme import column_figsize

CHANCE = 2.0
"""The discriminator's hinge loss (eq. 11) when its logits are 0 everywhere: it cannot tell real from fake."""


def _flat(x: torch.Tensor) -> np.ndarray:
    return x.detach().float().reshape(-1).cpu().numpy()


def hinge_toy(real: torch.Tensor, before: torch.Tensor, after: torch.Tensor,
              critics: Mapping[str, Callable[[torch.Tensor], torch.Tensor]], history: Sequence[Mapping[str, float]]):
    """The 1-D hinge GAN: samples of the target (``real``) and of the generator ``before`` and ``after`` training
    (top left), the logit over x of each discriminator in ``critics`` (label: discriminator, e.g. snapshots at two
    steps) with the hinge margins at +-1 (top right), and the hinge losses of every step in ``history``
    (``d_loss``, ``g_loss``; bottom)."""
    real, before, after = _flat(real), _flat(before), _flat(after)
    fig, axes = plt.subplot_mosaic([["dist", "critic"], ["loss", "loss"]], figsize=column_figsize(2, 2, 0.62))
    palette = sns.color_palette()
    for values, label, colour, ls in ((real, "target (real)", palette[0], "-"),
                                      (before, "generator, step 0", palette[1], ":"),
                                      (after, f"generator, step {len(history)}", palette[1], "-")):
        sns.kdeplot(x=values, ax=axes["dist"], label=label, color=colour, linestyle=ls, fill=ls == "-",
                    alpha=0.25 if ls == "-" else 1.0)
    axes["dist"].set(xlabel="x", ylabel="density", title="samples")
    axes["dist"].legend(fontsize=7)
    lo, hi = np.percentile(np.concatenate([real, before, after]), [0.5, 99.5])
    grid = torch.linspace(float(lo), float(hi), 200)[:, None]
    for k, (label, critic) in enumerate(critics.items()):
        with torch.no_grad():
            axes["critic"].plot(grid[:, 0].numpy(), _flat(critic(grid)), color=palette[2], label=label,
                                ls="-" if k == len(critics) - 1 else "--")
    for margin in (1, -1):
        axes["critic"].axhline(margin, color="grey", ls=":", lw=1)
    axes["critic"].set(xlabel="x", ylabel="realism logit D(x)", title="discriminator (dotted: margins +-1)")
    axes["critic"].legend(fontsize=7)
    steps = np.arange(1, len(history) + 1)
    for key, colour in (("d_loss", palette[3]), ("g_loss", palette[4])):
        axes["loss"].plot(steps, [h[key] for h in history], color=colour, lw=0.8, label=key)
    axes["loss"].axhline(CHANCE, color=palette[3], ls="--", lw=1, label="d_loss at chance (2)")
    axes["loss"].set(xlabel="step", ylabel="hinge loss", title="losses per step (eqs. 11-12)")
    axes["loss"].legend(fontsize=7, ncol=3, loc="upper right")
    plt.show()


def _moments(x: torch.Tensor) -> tuple[float, float]:
    v = _flat(x).astype(np.float64)
    return float(v.mean()), float(v.std())


def toy_reading(real: torch.Tensor, before: torch.Tensor, after: torch.Tensor,
                history: Sequence[Mapping[str, float]], tail: int = 50) -> str:
    """Where the toy's generator went against the target, and whether the discriminator ended at chance
    (``d_loss`` averaged over the last ``tail`` steps)."""
    (m_r, s_r), (m_0, s_0), (m_1, s_1) = _moments(real), _moments(before), _moments(after)
    gap_0, gap_1 = abs(m_0 - m_r), abs(m_1 - m_r)
    if gap_1 <= 0.25 * s_r:
        moved = "reaches the target's mean"
    elif gap_1 < gap_0:
        moved = "moves toward the target's mean without reaching it"
    else:
        moved = "does not move toward the target's mean"
    d_end = float(np.mean([h["d_loss"] for h in history[-tail:]]))
    if d_end >= 0.9 * CHANCE:
        d_text = (f"ends at {d_end:.2f}, close to chance ({CHANCE:.0f}): the discriminator can no longer tell "
                  f"target from generated samples, which is how an adversarial game ends when the generator wins, "
                  f"not at a loss of 0")
    else:
        d_text = (f"ends at {d_end:.2f}, below chance ({CHANCE:.0f}): the discriminator still separates target from "
                  f"generated samples")
    return (f"**Reading.** The generator starts at mean {m_0:.2f}, spread {s_0:.2f} and after {len(history)} steps "
            f"has mean {m_1:.2f}, spread {s_1:.2f}, against the target's {m_r:.2f} and {s_r:.2f}: it {moved}, "
            f"and its spread is {_ratio_words(s_1 / s_r)} the target's. The discriminator's hinge loss (mean of the "
            f"last {min(tail, len(history))} steps) {d_text}.")


def _ratio_words(ratio: float, tolerance: float = 0.15) -> str:
    """'about as wide as' / '1.8 times as wide as' / 'narrower than (0.60 times)' (``ratio``: this spread over
    the other's)."""
    if abs(ratio - 1) <= tolerance:
        return "about as wide as"
    return f"{ratio:.1f} times as wide as" if ratio > 1 else f"narrower than ({ratio:.2f} times)"


def comparison_reading(table: pd.DataFrame, start: str = "stage 1",
                       psnr: str = "PSNR to ground truth (dB)") -> str:
    """Each stage-2 row of notebook 05's comparison table against ``start`` (the stage-1 network): colour
    distance, structure fidelity and, where the table has it, PSNR against ground truth, with the direction of
    each difference in words."""
    base = table.loc[start]
    lines = []
    for name, row in table.drop(index=start).iterrows():
        cd, cd0 = row["colour_distance"], base["colour_distance"]
        way = "further from" if cd > cd0 else "closer to" if cd < cd0 else "as far from"
        parts = [f"colour distance {cd:.4f} ({_compare(cd, cd0)} {start}'s {cd0:.4f}: {way} the target domain)",
                 f"structure fidelity {row['structure']:.4f} ({_compare(row['structure'], base['structure'])} "
                 f"{base['structure']:.4f})"]
        if psnr in table and np.isfinite(row[psnr]):
            diff = row[psnr] - base[psnr]
            parts.append(f"PSNR to ground truth {row[psnr]:.2f} dB, {abs(diff):.2f} dB "
                         f"{'above' if diff > 0 else 'below' if diff < 0 else 'level with'} {start}'s")
        lines.append(f"* **{name}** (kept epoch {int(row['kept epoch'])}): " + "; ".join(parts) + ".")
    return ("**Reading.** " + f"Against {start}, on the same held-out patches:\n\n" + "\n".join(lines)
            + "\n\nOne seed's difference; whether stage 2 improves on stage 1 beyond the spread between seeds is "
              "judged in notebook 06.")


def _trend(values: Sequence[float], noun: str = "epoch") -> str:
    """'rises in every epoch' / 'falls in every epoch' / 'rises in 2 of 3 epochs and falls in 1' (steps of
    ``values``)."""
    steps = np.diff(np.asarray(values, dtype=float))
    up, down, n = int((steps > 0).sum()), int((steps < 0).sum()), len(steps)
    if n == 1:
        return ("rises" if up else "falls" if down else "stays the same") + f" in the one adversarial {noun}"
    if up == n or down == n:
        return f"{'rises' if up else 'falls'} in every {noun}"
    return f"rises in {up} of {n} {noun}s and falls in {down}"


def _compare(a: float, b: float) -> str:
    return "higher than" if a > b else "lower than" if a < b else "equal to"


def stage2_reading(name: str, history: Sequence[Mapping[str, Any]], best_epoch: int, rule: str,
                   min_structure: float, chance: float = CHANCE) -> str:
    """What stage 2's adversarial epochs did in run ``name``: colour distance to the target domain per epoch (epoch
    0: the stage-1 network), the discriminator's hinge loss per epoch (``chance``: its value at chance), and which
    checkpoint ``rule`` kept, with its colour distance against the stage-1 network's."""
    cd = [float(h["colour_distance"]) for h in history]
    last = len(cd) - 1
    colour = (f"Colour distance to the target domain: {cd[0]:.4f} for the stage-1 network (epoch 0), then "
              f"{', '.join(f'{v:.4f}' for v in cd[1:])} after adversarial epoch{'s' if last > 1 else ''} 1"
              f"{f'-{last}' if last > 1 else ''}: it {_trend(cd)}, and the last epoch ends "
              + {1: "further from the target domain than", -1: "closer to the target domain than",
                 0: "as far from the target domain as"}[int(np.sign(cd[-1] - cd[0]))] + " stage 1 by this measure.")
    kept = next(h for h in history if h["epoch"] == best_epoch)
    if best_epoch == 0:
        choice = (f"The rule (lowest `{rule}` among epoch 0 and the epochs with structure fidelity at least "
                  f"{min_structure}) kept epoch 0, **the stage-1 network**: no admissible adversarial epoch had a "
                  f"lower `{rule}`, so this stage-2 row is stage 1 again.")
    else:
        words = _compare(cd[best_epoch], cd[0])
        choice = (f"The rule (lowest `{rule}` among epoch 0 and the epochs with structure fidelity at least "
                  f"{min_structure}) kept **adversarial epoch {best_epoch}** ({rule} {kept[rule]:.4f} against the "
                  f"stage-1 network's {history[0][rule]:.4f}); its colour distance, {cd[best_epoch]:.4f}, is {words} "
                  f"the stage-1 network's {cd[0]:.4f}"
                  + ("." if rule == "colour_distance" or words != "higher than" else
                     f": the rule chooses by `{rule}`, not by colour distance, so it can keep a network further "
                     f"from the target's colours."))
    return f"**{name}.** {colour} {choice}{_discriminator_words(history, chance)}"


def _discriminator_words(history: Sequence[Mapping[str, Any]], chance: float) -> str:
    """The discriminator's hinge loss per epoch against ``chance``, and each expert's last one (``d_<name>``
    terms; chance 2 each) where the run has a committee."""
    trained = [h["terms"] for h in history[1:] if h.get("terms")]
    if not trained:
        return ""
    d = [float(t["d_loss"]) for t in trained]
    where = ("below chance: it separates target patches from the network's outputs to some degree"
             if d[-1] < 0.9 * chance else "near chance: it barely separates target patches from the network's outputs")
    text = f" The discriminator's hinge loss per epoch, {', '.join(f'{v:.4f}' for v in d)} (chance: {chance:g}), " \
           f"ends {where}."
    experts = {k[2:]: float(v) for k, v in trained[-1].items() if k.startswith("d_") and k != "d_loss"}
    if experts:
        apart = [k for k, v in experts.items() if v < 0.9 * CHANCE]
        text += (" After the last epoch, per expert: " + ", ".join(f"{k} {v:.4f}" for k, v in experts.items())
                 + f" (chance {CHANCE:g} each): "
                 + (f"only {', '.join(apart)} {'separates' if len(apart) == 1 else 'separate'} them, "
                    f"the others stay near chance." if apart and len(apart) < len(experts) else
                    "every expert separates them to some degree." if apart else "every expert stays near chance."))
    return text
