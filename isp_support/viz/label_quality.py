"""Notebook 03's label-quality picture: each pair graph's label error, scene by scene, as points with intervals.

The figure of merit of a pair graph (:mod:`isp_support.pairing.quality`) is a mean over source scenes; a table of
means hides how much the scenes disagree. :func:`label_quality_points` draws each graph's scene mean with a 95%
bootstrap interval over scenes (seaborn), one panel per figure, and :func:`label_quality_reading` says in words
which graph is better than which, by how much, and whether the difference is beyond its paired interval.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns

from .theme import PALETTE, column_figsize

QUALITY_FIGURES = ("Y mean", "U mean", "V mean")
"""The figures the picture shows: the label error of the expected Y, U and V means."""
DEFAULT_GRAPH = "default (ot)"
"""The name notebook 03 gives this profile's default graph."""
_ROLE_COLOUR = {DEFAULT_GRAPH: 2, "paper": 3, "random": 7, "knn": 7}


def quality_long(qualities: Mapping, figures: Sequence[str] = QUALITY_FIGURES, level: str = "patch") -> pd.DataFrame:
    """One row per graph, scene and figure: ``graph``, ``scene``, ``figure``, ``error`` (the scene's value)."""
    frames = []
    for name, q in qualities.items():
        table = q.per_scene(level)[list(figures)].reset_index()
        long = table.melt(id_vars=table.columns[0], var_name="figure", value_name="error")
        frames.append(long.rename(columns={table.columns[0]: "scene"}).assign(graph=name))
    return pd.concat(frames, ignore_index=True)[["graph", "scene", "figure", "error"]]


def label_quality_points(qualities: Mapping, figures: Sequence[str] = QUALITY_FIGURES, level: str = "patch",
                         seed: int = 0, n_boot: int = 2000):
    """Each graph's mean label error over scenes (point) with its 95% bootstrap interval over scenes (bar).

    ``qualities``: ``{name: PairingQuality}`` in the order to draw; one panel per figure, graphs on the shared
    y axis. The dashed line is ``random``'s mean when it is among them; the default graph is green, the paper's
    reading red, the baselines grey.
    """
    data = quality_long(qualities, figures, level)
    names = list(qualities)
    colours = sns.color_palette(PALETTE, 10)
    palette = {n: colours[_ROLE_COLOUR.get(n, 0)] for n in names}
    fig, axes = plt.subplots(1, len(figures), figsize=column_figsize(len(figures), 1, 0.1 * len(names) + 0.2, 0.6),
                             layout="constrained", sharey=True, squeeze=False)
    for ax, figure in zip(axes[0], figures):
        sub = data[data["figure"] == figure]
        sns.pointplot(data=sub, x="error", y="graph", hue="graph", order=names, hue_order=names, palette=palette,
                      errorbar=("ci", 95), n_boot=n_boot, seed=seed, linestyle="none", markersize=4,
                      err_kws={"linewidth": 1.2}, legend=False, ax=ax)
        if "random" in qualities:
            ax.axvline(sub.loc[sub["graph"] == "random", "error"].mean(), color="k", lw=0.8, ls="--")
        ax.set_title(f"{figure} error")
        ax.set_xlabel("label error")
        ax.set_ylabel("")
    fig.suptitle(f"label error (lower is better): mean and 95% interval over scenes ({level} level)", fontsize=9)
    plt.show()
    return data


def _apart(a, b, figures: Sequence[str], level: str, seed: int, n_boot: int) -> list[str]:
    """The figures on which the two graphs' own 95% bootstrap intervals over scenes
    (:meth:`~isp_support.pairing.quality.PairingQuality.summary`) do not overlap."""
    sa, sb = (t[t["level"] == level].set_index("figure") for t in (q.summary(n_boot, seed) for q in (a, b)))
    return [f for f in figures if sa.loc[f, "hi"] < sb.loc[f, "lo"] or sb.loc[f, "hi"] < sa.loc[f, "lo"]]


def _pair_sentence(a, b, figures: Sequence[str], level: str, seed: int, n_boot: int) -> str:
    from ..pairing.quality import compare

    c = compare(a, b, level, n_boot=n_boot, seed=seed)
    parts = []
    for f in figures:
        d, lo, hi = (float(c.loc[f, k]) for k in ("diff", "lo", "hi"))
        side = "lower" if d <= -5e-5 else "higher" if d >= 5e-5 else "about equal"
        sure = "beyond its paired interval" if lo > 0 or hi < 0 else "within its paired interval: undecided"
        parts.append(f"{side} on {f} (by {abs(d):.4f}, {sure})")
    apart = _apart(a, b, figures, level, seed, n_boot)
    seen = (f"their intervals in the picture are apart on {', '.join(apart)}" if apart
            else "their intervals in the picture overlap on every figure")
    return f"* **{a.name}** against **{b.name}**: error {'; '.join(parts)}; {seen}."


def label_quality_reading(qualities: Mapping, reference: str = DEFAULT_GRAPH,
                          against: Sequence[str] = ("random", "knn", "paper"),
                          figures: Sequence[str] = QUALITY_FIGURES, level: str = "patch", seed: int = 0,
                          n_boot: int = 2000) -> str:
    """The picture's reading: the ranking by summed error, then ``reference`` against each of ``against``."""
    totals = pd.Series({n: float(q.per_scene(level)[list(figures)].mean().sum()) for n, q in qualities.items()})
    ranked = totals.sort_values()
    lines = [f"Summed mean label error of {', '.join(figures)}: lowest **{ranked.index[0]}** "
             f"({ranked.iloc[0]:.4f}), highest **{ranked.index[-1]}** ({ranked.iloc[-1]:.4f})"]
    if reference in qualities:
        rank = list(ranked.index).index(reference) + 1
        lines[0] += f"; **{reference}** ranks {rank} of {len(ranked)} ({totals[reference]:.4f})."
        lines += [_pair_sentence(qualities[reference], qualities[o], figures, level, seed, n_boot)
                  for o in against if o in qualities and o != reference]
    else:
        lines[0] += "."
    lines.append("A paired interval resamples the same scenes for both graphs, so it can decide a difference "
                 "that the two graphs' own intervals in the picture, which overlap when scenes vary a lot, cannot.")
    return "\n".join(lines)
