"""Notebook 03's eps / alpha widget: the figures show what the package's solvers return for the knob settings."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from isp_support.ot.fgw import fused_gw_plan
from isp_support.pairing import match
from isp_support.pairing import quality as pair_quality
from isp_support import viz
from isp_support.config import MatchConfig
from isp_support.pairing.baselines import random_graph
from isp_support.pairing.quality import ColourStats


@pytest.fixture(scope="module")
def knob_inputs():
    sets = match.synthetic_match_inputs(6, 8, (3, 5), image_dim=40, patch_dim=20, n_classes=3, seed=5)
    si, ti, sp, tp = sets
    rng = np.random.default_rng(3)

    def stats(ids):
        hy, huv = rng.random((len(ids), 8)), rng.random((len(ids), 16))
        return ColourStats(tuple(ids), rng.normal(0.0, 0.2, (len(ids), 6)), hy / hy.sum(1, keepdims=True),
                           huv / huv.sum(1, keepdims=True))

    scoring = {"targets": stats(tp.ids), "truth": stats(sp.ids), "source_scene": dict(zip(sp.ids, sp.parents)),
               "target_image": dict(zip(tp.ids, tp.parents))}
    cfg = MatchConfig()
    graphs = {"default (ot)": match.match_dataset(*sets, cfg, warn=False).patch_graph,
              "random": random_graph(sp.ids, tp.ids, cfg.top_patches, seed=0)}
    references = {name: pair_quality.pairing_quality(g, name=name, **scoring) for name, g in graphs.items()}
    return sets, cfg, scoring, references


def _plan_image(ax) -> np.ndarray:
    assert len(ax.images) == 1
    return np.asarray(ax.images[0].get_array(), dtype=np.float64)


def _row_entropy(p: np.ndarray) -> float:
    p = p / p.sum(1, keepdims=True)
    return float(-(p * np.log(np.clip(p, 1e-300, None))).sum(1).mean())


def _bar_heights(ax) -> dict[str, np.ndarray]:
    return {c.get_label(): np.array([b.get_height() for b in c]) for c in ax.containers}


@pytest.mark.parametrize("eps, alpha", [(0.02, 0.2), (0.5, 0.8)])
def test_plan_panel_is_the_solvers_plan_for_the_knob_settings(knob_inputs, eps, alpha):
    sets, cfg, scoring, references = knob_inputs
    fig = viz.plan_and_quality_figure(sets, cfg, eps, alpha, scoring=scoring, references=references)
    shown = _plan_image(fig.axes[0])
    plan, report = fused_gw_plan(sets[0].features, sets[1].features, alpha=alpha, epsilon_rel=eps,
                                 max_iter=cfg.max_iter, tol=cfg.tol, warn=False)
    plan = plan.numpy()
    assert report.converged
    np.testing.assert_allclose(shown, plan / plan.sum(1, keepdims=True), rtol=1e-9, atol=1e-12)
    # ... and not the plan of the configuration the knobs started from.
    default, _ = fused_gw_plan(sets[0].features, sets[1].features, alpha=cfg.alpha,
                               epsilon_rel=cfg.image_epsilon, tol=cfg.tol, warn=False)
    default = default.numpy()
    assert np.abs(shown - default / default.sum(1, keepdims=True)).max() > 1e-3


def test_larger_eps_spreads_the_plan(knob_inputs):
    sets, cfg, scoring, references = knob_inputs
    entropies = [_row_entropy(_plan_image(viz.plan_and_quality_figure(sets, cfg, eps, 0.5).axes[0]))
                 for eps in (0.02, 0.1, 1.0)]
    assert entropies[0] < entropies[1] < entropies[2] <= np.log(len(sets[1])) + 1e-9
    assert entropies[2] - entropies[0] > 0.5  # nats: a clearly wider spread, not rounding


def test_quality_panel_scores_the_re_solved_graph_beside_the_references(knob_inputs):
    sets, cfg, scoring, references = knob_inputs
    eps, alpha = 0.03, 0.9
    fig = viz.plan_and_quality_figure(sets, cfg, eps, alpha, scoring=scoring, references=references)
    bars = _bar_heights(fig.axes[1])
    assert list(bars) == ["this setting", "default (ot)", "random"]
    graph = match.match_dataset(*sets, dataclasses.replace(cfg, image_epsilon=eps, alpha=alpha),
                                   warn=False).patch_graph
    expected = pair_quality.pairing_quality(graph, **scoring).per_scene("patch")[list(viz.KNOB_FIGURES)].mean()
    np.testing.assert_allclose(bars["this setting"], expected.to_numpy(), rtol=1e-12)
    for name, q in references.items():
        np.testing.assert_allclose(bars[name], q.per_scene("patch")[list(viz.KNOB_FIGURES)].mean().to_numpy())
    assert not np.allclose(bars["this setting"], bars["default (ot)"])
    # At the configuration's own values the knobs reproduce the default graph.
    same = _bar_heights(viz.plan_and_quality_figure(sets, cfg, cfg.image_epsilon, cfg.alpha, scoring=scoring,
                                                    references=references).axes[1])
    np.testing.assert_allclose(same["this setting"], same["default (ot)"], rtol=1e-12)


def test_static_grid_holds_the_same_panels_deterministically(knob_inputs):
    sets, cfg, scoring, references = knob_inputs
    eps_values, alpha_values = (0.02, 0.1, 1.0), (0.0, 0.75)
    grid = viz.plan_and_quality_grid(sets, cfg, eps_values, alpha_values, scoring=scoring, references=references)
    plan_axes = [ax for ax in grid.axes if ax.images]
    quality_axes = [ax for ax in grid.axes if ax.containers]
    assert len(plan_axes) == len(quality_axes) == 6
    shown = np.array([_plan_image(ax) for ax in plan_axes]).reshape(3, 2, len(sets[0]), len(sets[1]))
    single = _plan_image(viz.plan_and_quality_figure(sets, cfg, 0.1, 0.75).axes[0])
    np.testing.assert_array_equal(shown[1, 1], single)
    for c in range(2):  # down each alpha column, eps grows and so does the spread
        h = [_row_entropy(shown[r, c]) for r in range(3)]
        assert h[0] < h[1] < h[2]
    assert len({ax.get_ylim() for ax in quality_axes}) == 1
    again = viz.plan_and_quality_grid(sets, cfg, eps_values, alpha_values, scoring=scoring, references=references)
    np.testing.assert_array_equal(shown.ravel(), np.array([_plan_image(ax) for ax in again.axes if ax.images]).ravel())


def test_without_ground_truth_the_quality_panel_says_so_and_baselines_are_refused(knob_inputs):
    sets, cfg, _, _ = knob_inputs
    fig = viz.plan_and_quality_figure(sets, cfg, 0.1, 0.5)
    assert not fig.axes[1].containers
    assert "no ground truth" in fig.axes[1].texts[0].get_text()
    with pytest.raises(ValueError, match="'ot' or 'unbalanced'"):
        viz.knob_match(sets, dataclasses.replace(cfg, method="knn"), 0.1, 0.5)
