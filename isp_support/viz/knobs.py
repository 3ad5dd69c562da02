"""Notebook 03's knobs: the image-level entropic eps and the FGW alpha, re-solved and drawn."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .theme import column_figsize

KNOB_FIGURES = ("Y mean", "U mean", "V mean")
"""The pairing-quality figures the knob panels show (label error of the expected Y, U, V means)."""
KNOB_GRID = {"eps": (0.05, 0.2, 1.0), "alpha": (0.0, 0.75)}
"""The static grid of notebook 03 (:func:`plan_and_quality_grid`): image-level eps values and FGW alpha values."""
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

    from ..pairing.match import match_dataset

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
    ax.grid(False)
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
    from ..pairing.quality import pairing_quality

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

    fig = Figure(figsize=column_figsize(2, 1, 0.8), layout="constrained")
    ax_plan, ax_quality = fig.subplots(1, 2)
    im = _knob_panels(ax_plan, ax_quality, sets, match_cfg, epsilon, alpha, scoring, references, seed, device)
    fig.colorbar(im, ax=ax_plan, label="share of the source image (sqrt scale)")
    return fig


def plan_and_quality_grid(sets: Sequence, match_cfg, eps_values: Sequence[float], alpha_values: Sequence[float], *,
                          scoring: dict | None = None, references: dict | None = None, seed: int = 0, device=None):
    """The panels of :func:`plan_and_quality_figure` for every ``eps_values x alpha_values`` pair: the static view.

    One row per (eps, alpha) pair, eps first: the plan panel and the quality panel side by side, so the grid keeps
    the column's width. The quality panels share their y axis. Deterministic (the solvers are); returns a figure
    outside pyplot.
    """
    from matplotlib.figure import Figure

    pairs = [(eps, alpha) for eps in eps_values for alpha in alpha_values]
    fig = Figure(figsize=column_figsize(2, len(pairs), 0.72), layout="constrained")
    axes = fig.subplots(len(pairs), 2, squeeze=False)
    im = None
    for r, (eps, alpha) in enumerate(pairs):
        im = _knob_panels(axes[r, 0], axes[r, 1], sets, match_cfg, eps, alpha, scoring, references, seed, device,
                          legend=r == 0)
    if scoring is not None:
        top = max(ax.get_ylim()[1] for ax in axes[:, 1])
        for ax in axes[:, 1]:
            ax.set_ylim(0, top)
    fig.colorbar(im, ax=axes[:, 0].tolist(), shrink=0.3, label="share of the source image (sqrt scale)")
    return fig
