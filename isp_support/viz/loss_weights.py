"""Notebook 04's loss-weight widget: a few gradient steps on one batch under chosen stage-1 loss weights."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from matplotlib.figure import Figure

from .images import to_rgb_images
from .theme import column_figsize

LOSS_WEIGHT_KNOBS = ("mom", "luma", "chroma", "gram", "tv")
"""The stage-1 loss weights the notebook-04 widget turns (fields of :class:`~isp_support.train.losses.LossWeights`)."""
_KNOB_STYLE = {"untrained (= input)": "tab:gray", "after the steps": "tab:orange"}


def weighted_loss_terms(y_hat: torch.Tensor, y: torch.Tensor, weights, gram=None) -> dict[str, float]:
    """:func:`~isp_support.train.losses.stage1_loss`'s terms of ``y_hat`` against ``y``, each times its weight.

    One entry per :data:`LOSS_WEIGHT_KNOBS` (0.0 for a term whose weight is 0: ``stage1_loss`` does not compute
    it), ``pal`` when weighted, and ``total`` (``stage1_loss``'s, the sum of the others). No gradients.
    ``gram``: the :class:`~isp_support.train.gram.GramLoss` (needed unless ``weights.gram == 0``).
    """
    from ..train.losses import stage1_loss

    with torch.no_grad():
        _, terms = stage1_loss(y_hat, y, weights, gram)
    names = LOSS_WEIGHT_KNOBS + (("pal",) if weights.pal else ())
    out = {k: float(getattr(weights, k)) * float(terms[k]) if k in terms else 0.0 for k in names}
    out["total"] = float(terms["total"])
    return out


@dataclass(frozen=True)
class FewSteps:
    """What a few gradient steps on one fixed batch do (:func:`few_step_rendering`); tensors on the CPU."""

    weights: Any
    """The :class:`~isp_support.train.losses.LossWeights` used."""
    steps: int
    """Optimiser steps taken (0 when every weight is 0: nothing to descend)."""
    lr: float
    source: torch.Tensor
    """``(B, 3, h, w)``: the (centre-cropped) inputs, which the untrained identity network returns unchanged."""
    patch_size: tuple[int, int]
    """``(H, W)`` of the patches before the crop."""
    target: torch.Tensor
    """``(B, 3, h, w)``: their pseudo targets, cropped alike."""
    rendering: torch.Tensor
    """``(B, 3, h, w)``: the network's output after the steps."""
    before: dict[str, float]
    """:func:`weighted_loss_terms` of the untrained network (the input) against the target."""
    after: dict[str, float]
    """:func:`weighted_loss_terms` of the rendering against the target."""
    seconds: float


def _centre_crop(t: torch.Tensor, crop: int | None) -> torch.Tensor:
    if crop is None:
        return t
    h, w = t.shape[-2:]
    ch, cw = min(crop, h), min(crop, w)
    y0, x0 = (h - ch) // 2, (w - cw) // 2
    return t[..., y0:y0 + ch, x0:x0 + cw]


def few_step_rendering(x: torch.Tensor, y: torch.Tensor, weights, gram, cfg, steps: int = 20, seed: int = 0,
                       crop: int | None = 48, device: str | torch.device = "cpu") -> FewSteps:
    """``steps`` AdamW steps of a fresh, identity-initialised network on ONE fixed batch: a probe, not training.

    The network is ``ColourNet(hidden=cfg.train.hidden, head=cfg.train.head)`` built under ``torch.manual_seed(seed)``
    (the global random state is restored afterwards), the optimiser AdamW at ``cfg.train.lr`` and
    ``cfg.train.weight_decay``, the loss :func:`~isp_support.train.losses.stage1_loss` with ``weights`` against ``y``
    (``gram``: the :class:`~isp_support.train.gram.GramLoss`, on ``device``; may be ``None`` when
    ``weights.gram == 0``).
    Every step sees the same batch: ``x`` and ``y`` (``(B, 3, H, W)``) centre-cropped to ``crop`` pixels (``None``:
    whole patches), which keeps one call to a few seconds on two CPU cores. A step whose loss is not finite is
    skipped, as in training. Deterministic for a seed on a given device.
    """
    import time

    from ..train.losses import stage1_loss
    from ..train.models import ColourNet

    t0 = time.perf_counter()
    xs, ys = _centre_crop(x, crop).float().to(device), _centre_crop(y, crop).float().to(device)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = ColourNet(hidden=cfg.train.hidden, head=cfg.train.head).to(device)
    before = weighted_loss_terms(xs, ys, weights, gram)
    opt = torch.optim.AdamW(net.parameters(), lr=cfg.train.lr, weight_decay=cfg.train.weight_decay)
    taken = 0
    for _ in range(steps):
        total, _ = stage1_loss(net(xs), ys, weights, gram)
        if not total.requires_grad:  # every weight 0: no term, nothing to descend
            break
        if not torch.isfinite(total):
            continue
        opt.zero_grad(set_to_none=True)
        total.backward()
        opt.step()
        taken += 1
    net.eval()
    with torch.no_grad():
        out = net(xs)
    after = weighted_loss_terms(out, ys, weights, gram)
    return FewSteps(weights, taken, float(cfg.train.lr), xs.cpu(), tuple(x.shape[-2:]), ys.cpu(), out.cpu(), before,
                    after, time.perf_counter() - t0)


def _weights_label(weights) -> str:
    return ", ".join(f"{k} {getattr(weights, k):g}" for k in LOSS_WEIGHT_KNOBS)


def _terms_panel(ax, result: FewSteps, title: str, legend: bool = True) -> None:
    names = list(result.before)
    pos = np.arange(len(names))
    for i, (label, values) in enumerate((("untrained (= input)", result.before), ("after the steps", result.after))):
        ax.bar(pos + (i - 0.5) * 0.4, [values[k] for k in names], width=0.4, color=_KNOB_STYLE[label],
               label=label if label == "untrained (= input)" else f"after {result.steps} steps")
    for p, k in zip(pos, names):
        if k != "total" and not getattr(result.weights, k):
            ax.text(p, 0, "off", ha="center", va="bottom", fontsize=8, color="tab:red")
    ax.set_xticks(pos, [f"{k}\n{result.before[k]:.2g}\n-> {result.after[k]:.2g}" for k in names], fontsize=6)
    ax.set_ylabel("weight x term")
    ax.set_title(f"{title}\n{_weights_label(result.weights)}", fontsize=8)
    if legend:
        ax.legend(fontsize=6)


def _image_panels(axes, result: FewSteps, index: int) -> None:
    change = float((result.rendering[index] - result.source[index]).abs().mean())
    images = (("source input", result.source), (f"after {result.steps} steps\nmean |change| {change:.3f}",
                                                result.rendering), ("pseudo target", result.target))
    for ax, (label, batch) in zip(axes, images):
        ax.imshow(to_rgb_images(batch[index:index + 1])[0])
        ax.set_title(label, fontsize=8)
        ax.axis("off")


def _few_steps_note(result: FewSteps) -> str:
    b, _, h, w = result.source.shape
    window = "whole" if (h, w) == result.patch_size else "centre crops"
    return (f"{result.steps} AdamW steps at lr {result.lr:g} on ONE fixed batch ({b} patches, {window} {h}x{w}) "
            f"\nfrom the identity network: a probe of the loss, not training")


def loss_terms_and_rendering(x: torch.Tensor, y: torch.Tensor, weights, gram, cfg, steps: int = 20, seed: int = 0,
                             crop: int | None = 48, device: str | torch.device = "cpu", index: int = 0) -> Figure:
    """The notebook-04 widget's view of one weighting: :func:`few_step_rendering`, drawn.

    Left: each weighted term and the total (:func:`weighted_loss_terms`) of the untrained network and after the
    steps ("off": weight 0). Right: image ``index`` of the batch as input, after the steps, and its pseudo
    target. Returns a figure outside pyplot (shown once when it is a cell's or an ``interact`` callback's value).
    """
    result = few_step_rendering(x, y, weights, gram, cfg, steps=steps, seed=seed, crop=crop, device=device)
    fig = Figure(figsize=column_figsize(4, 1, 1.5), layout="constrained")
    axes = fig.subplots(1, 4, width_ratios=(2.2, 1, 1, 1))
    _terms_panel(axes[0], result, "weighted loss terms")
    _image_panels(axes[1:], result, index)
    fig.suptitle(_few_steps_note(result), fontsize=9)
    return fig


def loss_weight_presets(weights) -> dict[str, Any]:
    """A few weightings to compare with ``weights`` (the training default): its name -> :class:`LossWeights`."""
    import dataclasses

    off = dict.fromkeys(LOSS_WEIGHT_KNOBS, 0.0)
    return {
        "default (cfg.train)": weights,
        "luma + chroma only": dataclasses.replace(weights, **{**off, "luma": weights.luma or 1.0,
                                                              "chroma": weights.chroma or 1.5}),
        "Gram only": dataclasses.replace(weights, **{**off, "gram": weights.gram or 1.0}),
        "no TV": dataclasses.replace(weights, tv=0.0),
    }


def loss_weight_probes(x: torch.Tensor, y: torch.Tensor, weights, gram, cfg, presets: dict | None = None,
                       steps: int = 20, seed: int = 0, crop: int | None = 48,
                       device: str | torch.device = "cpu") -> dict[str, FewSteps]:
    """:func:`few_step_rendering` for each preset (default :func:`loss_weight_presets` of ``weights``), same start."""
    presets = loss_weight_presets(weights) if presets is None else presets
    return {name: few_step_rendering(x, y, w, gram, cfg, steps=steps, seed=seed, crop=crop, device=device)
            for name, w in presets.items()}


def loss_weight_grid(x: torch.Tensor, y: torch.Tensor, weights, gram, cfg, presets: dict | None = None,
                     steps: int = 20, seed: int = 0, crop: int | None = 48, device: str | torch.device = "cpu",
                     index: int = 0, probes: dict[str, FewSteps] | None = None) -> Figure:
    """The static view of the loss-weight widget: one row of :func:`loss_terms_and_rendering`'s panels per preset.

    ``presets``: ``{name: LossWeights}``, default :func:`loss_weight_presets` of ``weights``. Every row starts from
    the same seeded network on the same batch; the bar panels share their y range. ``probes``: the
    :func:`loss_weight_probes` already run (then nothing is re-run). Deterministic; returns a figure outside pyplot.
    """
    if probes is None:
        probes = loss_weight_probes(x, y, weights, gram, cfg, presets, steps, seed, crop, device)
    fig = Figure(figsize=column_figsize(4, len(probes), 0.95, 0.3), layout="constrained")
    axes = fig.subplots(len(probes), 4, width_ratios=(2.2, 1, 1, 1), squeeze=False)
    result = None
    for r, (name, result) in enumerate(probes.items()):
        _terms_panel(axes[r, 0], result, name, legend=r == 0)
        _image_panels(axes[r, 1:], result, index)
    top = max(ax.get_ylim()[1] for ax in axes[:, 0])
    for ax in axes[:, 0]:
        ax.set_ylim(0, top)
    if result is not None:
        fig.suptitle(_few_steps_note(result), fontsize=8)
    return fig


def loss_weight_sliders(weights) -> dict:
    """One ``ipywidgets.FloatSlider`` per :data:`LOSS_WEIGHT_KNOBS`, starting at ``weights`` (``continuous_update``
    off: a callback runs when a slider is released). Ranges: 0 to 3 (TV: 0 to 0.5), or 3x a larger start value."""
    import ipywidgets

    sliders = {}
    for k in LOSS_WEIGHT_KNOBS:
        value = float(getattr(weights, k))
        top = max(0.5 if k == "tv" else 3.0, 3 * value)
        sliders[k] = ipywidgets.FloatSlider(value=value, min=0.0, max=top, step=top / 100, description=k,
                                            continuous_update=False, readout_format=".2f")
    return sliders
