"""Small plotting helpers shared by the notebooks."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence

import matplotlib.pyplot as plt
import numpy as np
import torch

from .series import HEADLESS_ENV


def knob_widget(fn: Callable, **controls):
    """``ipywidgets.interact(fn, **controls)`` in a live kernel (``make lab``). In a headless run
    (:data:`HEADLESS_ENV` set) a one-line note instead: nothing could show the widget, and executing widget
    cells headlessly can stall nbclient; each widget's static fallback figure follows it in the notebook."""
    if os.environ.get(HEADLESS_ENV):
        print("headless run: this widget needs a live kernel (make lab); the figure below shows the same panels")
        return None
    import ipywidgets

    return ipywidgets.interact(fn, **controls)


def to_rgb_images(x: torch.Tensor | np.ndarray) -> np.ndarray:
    """A batch for display: ``(B, H, W, 3)`` float in [0, 1].

    Accepts RGB ``(B, 3, H, W)`` or packed RAW ``(B, 4, H, W)`` (shown as R, mean
    of the greens, B at half resolution), as tensors or arrays.
    """
    arr = x.detach().float().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x, dtype=np.float32)
    if arr.ndim != 4 or arr.shape[1] not in (3, 4):
        raise ValueError(f"expected (B, 3, H, W) or (B, 4, H, W), got {arr.shape}")
    if arr.shape[1] == 4:
        arr = np.stack([arr[:, 0], (arr[:, 1] + arr[:, 2]) / 2, arr[:, 3]], axis=1)
    return np.clip(arr.transpose(0, 2, 3, 1), 0.0, 1.0)


def show_images(rows: dict[str, np.ndarray], col_titles: Sequence[str] | None = None, size: float = 2.4):
    """A grid of images: one row per entry of ``rows`` (each ``(B, H, W, 3)``), one column per item."""
    n_cols = max(len(v) for v in rows.values())
    fig, axes = plt.subplots(len(rows), n_cols, figsize=(size * n_cols, size * len(rows)), squeeze=False)
    for r, (name, images) in enumerate(rows.items()):
        for c in range(n_cols):
            ax = axes[r, c]
            ax.axis("off")
            if c < len(images):
                ax.imshow(images[c])
                title = name if col_titles is None else f"{name} · {col_titles[c]}"
                ax.set_title(title, fontsize=8)
    fig.tight_layout()
    plt.show()


def training_curves(history: Sequence[dict], min_structure: float, best_epoch: int, title: str = ""):
    """Loss terms per epoch (left) and the two validation figures (right), best epoch marked."""
    epochs = [h["epoch"] for h in history]
    trained = [h for h in history if h["terms"]]
    fig, (ax_l, ax_v) = plt.subplots(1, 2, figsize=(11, 3.4))
    for term in trained[0]["terms"] if trained else ():
        ax_l.plot([h["epoch"] for h in trained], [h["terms"][term] for h in trained], marker=".", label=term)
    ax_l.set_yscale("symlog", linthresh=1e-2)
    ax_l.set_xlabel("epoch")
    ax_l.set_title(f"{title} training loss terms (epoch means)")
    ax_l.legend(fontsize=7, ncol=2)
    ax_v.plot(epochs, [h["colour_distance"] for h in history], marker="o", color="tab:red")
    ax_v.set_ylabel("colour distance to target domain", color="tab:red")
    ax_v.set_xlabel("epoch (0 = starting network)")
    twin = ax_v.twinx()
    twin.plot(epochs, [h["structure"] for h in history], marker="s", color="tab:blue")
    twin.axhline(min_structure, color="tab:blue", ls=":", lw=1)
    twin.set_ylabel("structure fidelity", color="tab:blue")
    ax_v.axvline(best_epoch, color="k", ls="--", lw=1)
    ax_v.set_title("validation (dashed: kept checkpoint)")
    fig.tight_layout()
    plt.show()


def colour_distributions(sets: dict[str, torch.Tensor], bins: int = 64):
    """The paper's figure 5: pooled UV histograms (one panel per set) and Y histograms (last panel) of RGB batches."""
    from kornia.color import rgb_to_yuv

    fig, axes = plt.subplots(1, len(sets) + 1, figsize=(3.2 * (len(sets) + 1), 3.1))
    for ax, (name, rgb) in zip(axes, sets.items()):
        yuv = rgb_to_yuv(rgb.float().cpu()).permute(1, 0, 2, 3).reshape(3, -1).numpy()
        hist, _, _ = np.histogram2d(yuv[2], yuv[1], bins=bins, range=[[-0.3, 0.3], [-0.3, 0.3]])
        ax.imshow(np.log1p(hist), origin="lower", extent=(-0.3, 0.3, -0.3, 0.3), cmap="magma")
        ax.set_title(f"{name}: UV", fontsize=9)
        ax.set_xlabel("U")
        ax.set_ylabel("V")
        axes[-1].hist(yuv[0], bins=bins, range=(0, 1), density=True, histtype="step", label=name)
    axes[-1].set_title("Y", fontsize=9)
    axes[-1].legend(fontsize=7)
    fig.tight_layout()
    plt.show()


# --- notebook 03: the image-level knobs (entropic eps and the FGW alpha) ------------------------------------------

KNOB_FIGURES = ("Y mean", "U mean", "V mean")
"""The pairing-quality figures the knob panels show (label error of the expected Y, U, V means)."""
_REFERENCE_COLOURS = {"default (ot)": "tab:green", "random": "tab:gray", "paper": "tab:red", "knn": "tab:olive"}


def knob_match(sets: Sequence, match_cfg, epsilon: float, alpha: float, *, seed: int = 0, device=None):
    """:func:`~isp_support.pairing.match.match_dataset` with the image-level eps and the FGW alpha replaced.

    ``sets``: the four :class:`~isp_support.pairing.match.DescriptorSet` of
    :func:`~isp_support.pairing.match.descriptor_sets`; ``match_cfg``: the :class:`~isp_support.config.MatchConfig` to
    start from (method ``ot`` or ``unbalanced``). ``epsilon`` becomes ``image_epsilon`` (the image-level relative
    eps; the patch level keeps ``match_cfg.epsilon``), ``alpha`` the FGW trade-off. The whole graph is re-solved
    (image plan, then the patch level), convergence warnings off: the result's reports say it.
    """
    import dataclasses

    from .pairing.match import match_dataset

    if match_cfg.method not in ("ot", "unbalanced"):
        raise ValueError(f"the knobs act on the FGW image plan: method must be 'ot' or 'unbalanced', "
                         f"got {match_cfg.method!r}")
    cfg = dataclasses.replace(match_cfg, image_epsilon=float(epsilon), alpha=float(alpha))
    return match_dataset(*sets, cfg, seed=seed, device=device, warn=False)


def plan_row_entropy(plan: np.ndarray) -> float:
    """Mean over source images (rows) of the entropy, in nats, of the row-normalised plan (0: one target each)."""
    p = np.asarray(plan, dtype=np.float64)
    p = p / p.sum(1, keepdims=True)
    return float(-(np.where(p > 0, p * np.log(np.where(p > 0, p, 1.0)), 0.0)).sum(1).mean())


def _plan_panel(ax, result, label: str):
    from matplotlib.colors import PowerNorm
    from matplotlib.ticker import MaxNLocator

    plan = result.image_plan
    im = ax.imshow(plan / plan.sum(1, keepdims=True), cmap="viridis", aspect="auto", interpolation="nearest",
                   norm=PowerNorm(0.5, vmin=0.0, vmax=1.0))
    for axis in (ax.xaxis, ax.yaxis):
        axis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("target image")
    ax.set_ylabel("source image")
    note = " · NOT converged" if result.image_report is not None and not result.image_report.converged else ""
    ax.set_title(f"{label}: image plan\nrow entropy {plan_row_entropy(plan):.2f} nats{note}", fontsize=9)
    return im


def _quality_panel(ax, quality, references: dict, legend: bool = True) -> None:
    entries = {"this setting": quality, **references}
    x = np.arange(len(KNOB_FIGURES))
    width = 0.8 / len(entries)
    for k, (name, q) in enumerate(entries.items()):
        means = q.per_scene("patch")[list(KNOB_FIGURES)].mean().to_numpy(float)
        ax.bar(x + (k - (len(entries) - 1) / 2) * width, means, width, label=name,
               color="tab:purple" if k == 0 else _REFERENCE_COLOURS.get(name, f"C{k}"))
    ax.set_xticks(x, [f.split()[0] for f in KNOB_FIGURES])
    ax.set_ylabel("mean label error")
    ax.set_title(f"pairing quality (lower is better)\ntop target share {float(quality.top_target_share.mean()):.2f}",
                 fontsize=9)
    if legend:
        ax.legend(fontsize=7)


def _no_quality_panel(ax) -> None:
    ax.axis("off")
    ax.text(0.5, 0.5, "no ground truth in this dataset:\npairing quality not measured", ha="center", va="center",
            transform=ax.transAxes)


def _knob_panels(ax_plan, ax_quality, sets, match_cfg, epsilon, alpha, scoring, references, seed, device,
                 legend=True):
    from .pairing.quality import pairing_quality

    result = knob_match(sets, match_cfg, epsilon, alpha, seed=seed, device=device)
    label = f"eps {epsilon:.3g}, alpha {alpha:.2f}"
    im = _plan_panel(ax_plan, result, label)
    if scoring is None:
        _no_quality_panel(ax_quality)
    else:
        quality = pairing_quality(result.patch_graph, name=label, **scoring)
        _quality_panel(ax_quality, quality, dict(references or {}), legend)
    return im


def plan_and_quality_figure(sets: Sequence, match_cfg, epsilon: float, alpha: float, *, scoring: dict | None = None,
                            references: dict | None = None, seed: int = 0, device=None):
    """Re-solve the matching for one image-level ``epsilon`` and ``alpha`` (:func:`knob_match`) and draw it.

    Left: the image-level plan, rows scaled to sum to 1, with its mean row entropy. Right: the label error of
    the Y, U and V means of the resulting patch graph (:func:`isp_support.pairing.quality.pairing_quality`, the
    per-scene patch means averaged over scenes, as in notebook 03's table) beside those of ``references``
    (``{name: PairingQuality}``, e.g. the default graph and random pairing); its title gives the graph's mean
    top-target share. ``scoring``: the keyword arguments of ``pairing_quality`` besides the graph
    (``targets``, ``truth``, ``source_scene``, ``target_image``); ``None`` (no ground truth) leaves the right
    panel empty with a note. Returns a figure outside pyplot (shown once when it is a cell's or an
    ``interact`` callback's value).
    """
    from matplotlib.figure import Figure

    fig = Figure(figsize=(12, 4), layout="constrained")
    ax_plan, ax_quality = fig.subplots(1, 2)
    im = _knob_panels(ax_plan, ax_quality, sets, match_cfg, epsilon, alpha, scoring, references, seed, device)
    fig.colorbar(im, ax=ax_plan, label="share of the source image (sqrt scale)")
    return fig


def plan_and_quality_grid(sets: Sequence, match_cfg, eps_values: Sequence[float], alpha_values: Sequence[float], *,
                          scoring: dict | None = None, references: dict | None = None, seed: int = 0, device=None):
    """The panels of :func:`plan_and_quality_figure` for every ``eps_values x alpha_values`` pair: the static view.

    One row per eps; per alpha a plan panel and a quality panel side by side. The quality panels share their
    y axis. Deterministic (the solvers are); returns a figure outside pyplot.
    """
    from matplotlib.figure import Figure

    n_eps, n_alpha = len(eps_values), len(alpha_values)
    fig = Figure(figsize=(3.3 * 2 * n_alpha, 3.3 * n_eps), layout="constrained")
    axes = fig.subplots(n_eps, 2 * n_alpha, squeeze=False)
    im = None
    for r, eps in enumerate(eps_values):
        for c, alpha in enumerate(alpha_values):
            im = _knob_panels(axes[r, 2 * c], axes[r, 2 * c + 1], sets, match_cfg, eps, alpha, scoring, references,
                              seed, device, legend=(r, c) == (0, 0))
    if scoring is not None:
        top = max(ax.get_ylim()[1] for ax in axes[:, 1::2].flat)
        for ax in axes[:, 1::2].flat:
            ax.set_ylim(0, top)
    fig.colorbar(im, ax=axes.ravel().tolist(), shrink=0.5, label="share of the source image (sqrt scale)")
    return fig


# --- notebook 04: loss-weight widget ------------------------------------------------------------------------------

from dataclasses import dataclass  # noqa: E402  (this block's own imports)
from typing import Any  # noqa: E402

from matplotlib.figure import Figure  # noqa: E402

LOSS_WEIGHT_KNOBS = ("mom", "luma", "chroma", "gram", "tv")
"""The stage-1 loss weights the notebook-04 widget turns (fields of :class:`~isp_support.train.losses.LossWeights`)."""
_KNOB_STYLE = {"untrained (= input)": "tab:gray", "after the steps": "tab:orange"}


def weighted_loss_terms(y_hat: torch.Tensor, y: torch.Tensor, weights, gram=None) -> dict[str, float]:
    """:func:`~isp_support.train.losses.stage1_loss`'s terms of ``y_hat`` against ``y``, each times its weight.

    One entry per :data:`LOSS_WEIGHT_KNOBS` (0.0 for a term whose weight is 0: ``stage1_loss`` does not compute
    it), ``pal`` when weighted, and ``total`` (``stage1_loss``'s, the sum of the others). No gradients.
    ``gram``: the :class:`~isp_support.train.losses.GramLoss` (needed unless ``weights.gram == 0``).
    """
    from .train.losses import stage1_loss

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
    (``gram``: the :class:`~isp_support.train.losses.GramLoss`, on ``device``; may be ``None`` when ``weights.gram == 0``).
    Every step sees the same batch: ``x`` and ``y`` (``(B, 3, H, W)``) centre-cropped to ``crop`` pixels (``None``:
    whole patches), which keeps one call to a few seconds on two CPU cores. A step whose loss is not finite is
    skipped, as in training. Deterministic for a seed on a given device.
    """
    import time

    from .train.losses import stage1_loss
    from .train.models import ColourNet

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
    return FewSteps(weights, taken, float(cfg.train.lr), xs.cpu(), tuple(x.shape[-2:]), ys.cpu(), out.cpu(), before, after,
                    time.perf_counter() - t0)


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
    ax.set_xticks(pos, [f"{k}\n{result.before[k]:.3g}\n-> {result.after[k]:.3g}" for k in names], fontsize=7)
    ax.set_ylabel("weight x term")
    ax.set_title(f"{title}\n{_weights_label(result.weights)}", fontsize=9)
    if legend:
        ax.legend(fontsize=7)


def _image_panels(axes, result: FewSteps, index: int) -> None:
    change = float((result.rendering[index] - result.source[index]).abs().mean())
    images = (("source input", result.source), (f"after {result.steps} steps\nmean |change| {change:.3f}",
                                                result.rendering), ("pseudo target", result.target))
    for ax, (label, batch) in zip(axes, images):
        ax.imshow(to_rgb_images(batch[index:index + 1])[0])
        ax.set_title(label, fontsize=9)
        ax.axis("off")


def _few_steps_note(result: FewSteps) -> str:
    b, _, h, w = result.source.shape
    window = "whole" if (h, w) == result.patch_size else "centre crops"
    return (f"{result.steps} AdamW steps at lr {result.lr:g} on ONE fixed batch ({b} patches, {window} {h}x{w}) "
            f"from the identity network: a probe of the loss, not training")


def loss_terms_and_rendering(x: torch.Tensor, y: torch.Tensor, weights, gram, cfg, steps: int = 20, seed: int = 0,
                             crop: int | None = 48, device: str | torch.device = "cpu", index: int = 0) -> Figure:
    """The notebook-04 widget's view of one weighting: :func:`few_step_rendering`, drawn.

    Left: each weighted term and the total (:func:`weighted_loss_terms`) of the untrained network and after the
    steps ("off": weight 0). Right: image ``index`` of the batch as input, after the steps, and its pseudo
    target. Returns a figure outside pyplot (shown once when it is a cell's or an ``interact`` callback's value).
    """
    result = few_step_rendering(x, y, weights, gram, cfg, steps=steps, seed=seed, crop=crop, device=device)
    fig = Figure(figsize=(13, 3.4), layout="constrained")
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


def loss_weight_grid(x: torch.Tensor, y: torch.Tensor, weights, gram, cfg, presets: dict | None = None,
                     steps: int = 20, seed: int = 0, crop: int | None = 48, device: str | torch.device = "cpu",
                     index: int = 0) -> Figure:
    """The static view of the loss-weight widget: one row of :func:`loss_terms_and_rendering`'s panels per preset.

    ``presets``: ``{name: LossWeights}``, default :func:`loss_weight_presets` of ``weights``. Every row starts from
    the same seeded network on the same batch; the bar panels share their y range. Deterministic; returns a
    figure outside pyplot.
    """
    presets = loss_weight_presets(weights) if presets is None else presets
    fig = Figure(figsize=(13, 3.1 * len(presets)), layout="constrained")
    axes = fig.subplots(len(presets), 4, width_ratios=(2.2, 1, 1, 1), squeeze=False)
    result = None
    for r, (name, w) in enumerate(presets.items()):
        row = axes[r]
        result = few_step_rendering(x, y, w, gram, cfg, steps=steps, seed=seed, crop=crop, device=device)
        _terms_panel(row[0], result, name, legend=r == 0)
        _image_panels(row[1:], result, index)
    top = max(ax.get_ylim()[1] for ax in axes[:, 0])
    for ax in axes[:, 0]:
        ax.set_ylim(0, top)
    if result is not None:
        fig.suptitle(_few_steps_note(result), fontsize=9)
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
