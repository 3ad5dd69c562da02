"""Notebook 03's generated readings: what its toy, its plans, its graphs and its knob grid show, in words.

Each function returns Markdown whose numbers and wording come from the figures it is given (the prose rule,
:mod:`isp_support.prose`); the notebook displays it with :func:`isp_support.prose.show` beside the figure.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np


def top_shares(plan) -> np.ndarray:
    """Per row (source) of a plan, the share of its mass on its heaviest column (target)."""
    p = np.asarray(plan, dtype=np.float64)
    return p.max(1) / p.sum(1)


def concentration_words(share: float, n_targets: int) -> str:
    """How concentrated a row whose heaviest target holds ``share`` of its mass is, among ``n_targets``."""
    if share >= 0.9:
        return "pins each source image on one target image"
    if share >= 0.5:
        return "puts most of each source image's weight on one target image"
    if share * n_targets < 1.5:
        return "spreads each source image almost uniformly over the target images"
    if share < 0.2:
        return "spreads each source image over many target images"
    return "concentrates each source image on a few target images without pinning it on one"


def toy_spread_reading(plans: Mapping[str, object]) -> str:
    """The toy plans' reading: per plan, the mean and largest share of a row on its heaviest target."""
    lines = []
    for name, plan in plans.items():
        s = top_shares(plan)
        lines.append(f"* **{name}**: on average {s.mean():.2f} of a row on its heaviest target (largest "
                     f"{s.max():.2f}, uniform {1 / np.asarray(plan).shape[1]:.2f}): it "
                     f"{concentration_words(float(s.mean()), np.asarray(plan).shape[1]).replace('image', 'point')}.")
    return "\n".join(lines)


def plan_share_reading(plans: Mapping[str, object]) -> str:
    """The image plans' reading: how much of a source image each plan puts on its heaviest target image."""
    lines = []
    for name, plan in plans.items():
        s = top_shares(plan)
        n_src, n_tgt = np.asarray(plan).shape
        half = int((s > 0.5).sum())
        lines.append(f"* **{name}** puts on average {s.mean():.2f} of a source image's weight on its heaviest "
                     f"target image (uniform: {1 / n_tgt:.3f}; {half} of {n_src} source images put more than half "
                     f"on one): it {concentration_words(float(s.mean()), n_tgt)}.")
    return "\n".join(lines)


def diversity_reading(stats: Mapping[str, Mapping[str, float]], a: str = "knn", b: str = "ot") -> str:
    """Which of two graphs uses more distinct targets and loads its busiest target less (``graph_stats`` rows)."""
    if a not in stats or b not in stats:
        return ""
    sa, sb = stats[a], stats[b]
    wider = b if sb["distinct_targets"] > sa["distinct_targets"] else a
    lighter = b if sb["max_load"] < sa["max_load"] else a
    return (f"**{a}** uses {int(sa['distinct_targets'])} distinct targets of {int(sa['targets'])} (busiest target's "
            f"load {sa['max_load']:.2f}); **{b}** uses {int(sb['distinct_targets'])} (busiest {sb['max_load']:.2f}). "
            f"On this run **{wider}** spreads its sources over more targets and **{lighter}** loads its busiest "
            f"target less.")


def beats_random_reading(verdicts: Mapping[str, object], figures: Sequence[str]) -> str:
    """Per graph, the figures on which it beats random beyond the paired interval and those where it does not.

    ``verdicts``: ``{graph: compare(graph, random)}`` frames of :func:`isp_support.pairing.quality.compare`."""
    lines = []
    for name, c in verdicts.items():
        beats = [f for f in figures if bool(c.loc[f, "better"])]
        worse = [f for f in figures if bool(c.loc[f, "worse"])]
        rest = [f for f in figures if f not in beats and f not in worse]
        parts = [f"beats random beyond the interval on {', '.join(beats)}" if beats else
                 "beats random beyond the interval on no figure"]
        if worse:
            parts.append(f"is worse than random beyond it on {', '.join(worse)}")
        if rest:
            parts.append(f"is undecided on {', '.join(rest)}")
        lines.append(f"* **{name}** {'; '.join(parts)}.")
    return "On this run's scenes:\n" + "\n".join(lines)


def grid_settings(eps_values: Sequence[float], alpha_values: Sequence[float]) -> str:
    """The knob grid's settings in words, e.g. ``image eps 0.05, 0.2 and 1; alpha 0 and 0.75``."""
    def words(values):
        v = [f"{x:g}" for x in values]
        return v[0] if len(v) == 1 else f"{', '.join(v[:-1])} and {v[-1]}"

    return f"image eps {words(eps_values)}; alpha {words(alpha_values)}"


def knob_grid_reading(sets: Sequence, match_cfg, eps_values: Sequence[float], alpha_values: Sequence[float], *,
                      scoring: Mapping | None, reference, seed: int = 0, device=None,
                      figures: Sequence[str] = ("Y mean", "U mean", "V mean")) -> str:
    """The grid's reading: its most uniform cell (largest eps, smallest alpha) against ``reference`` (the default
    graph's :class:`~isp_support.pairing.quality.PairingQuality`), by the paired bootstrap over scenes."""
    from ..pairing.quality import compare, pairing_quality
    from .knobs import knob_match, plan_row_entropy

    eps, alpha = max(eps_values), min(alpha_values)
    result = knob_match(sets, match_cfg, eps, alpha, seed=seed, device=device)
    plan = result.image_plan
    cell = (f"The grid's most uniform image plan (eps {eps:g}, alpha {alpha:g}) has a row entropy of "
            f"{plan_row_entropy(plan):.2f} nats, of at most {np.log(plan.shape[1]):.2f} (uniform)")
    if scoring is None or reference is None:
        return cell + "; without ground truth its pairing quality is not measured."
    c = compare(pairing_quality(result.patch_graph, name="grid", **scoring), reference, "patch", seed=seed)
    worse = [f for f in figures if bool(c.loc[f, "worse"])]
    better = [f for f in figures if bool(c.loc[f, "better"])]
    diffs = ", ".join(f"{f} {float(c.loc[f, 'diff']):+.4f}" for f in figures)
    if not worse and not better:
        verdict = (f"it scores as well as the default (differences {diffs}, each within its paired 95% interval): "
                   f"on this data the image-level FGW plan adds little to what the patch level finds alone")
    elif worse and not better:
        verdict = (f"it scores worse than the default on {', '.join(worse)} (differences {diffs}): the image-level "
                   f"plan helps on this data")
    elif better and not worse:
        verdict = (f"it scores better than the default on {', '.join(better)} (differences {diffs}): on this data "
                   f"the default's image-level plan costs label quality")
    else:
        verdict = (f"it is worse than the default on {', '.join(worse)} and better on {', '.join(better)} "
                   f"(differences {diffs})")
    return f"{cell}; {verdict}."
