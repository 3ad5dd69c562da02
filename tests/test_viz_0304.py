"""Notebooks 03 and 04's figures and generated readings: sized for the column, and worded by their numbers."""

from __future__ import annotations

from types import SimpleNamespace

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
import torch

from isp_support import viz
from isp_support.pairing.quality import PairingQuality


@pytest.fixture
def figure(monkeypatch):
    monkeypatch.setattr(plt, "show", lambda: None)
    yield lambda: plt.gcf()
    plt.close("all")


def _quality(name, errors, seed=0):
    """A PairingQuality whose scenes' Y/U/V mean errors are ``errors`` (n_scenes,) plus small per-figure noise."""
    from isp_support.pairing.quality import FIGURES

    rng = np.random.default_rng(seed)
    scenes = [f"s{i}" for i in range(len(errors))]
    patch = pd.DataFrame({f: np.asarray(errors, float) + rng.normal(0, 1e-4, len(errors)) for f in FIGURES})
    patch.insert(0, "scene", scenes)
    return PairingQuality(name, patch, patch.set_index("scene"), pd.Series(0.5, index=scenes))


def test_figures_fit_the_column(figure):
    viz.transport_problem(torch.rand(5, 4), torch.rand(5, 5), torch.rand(4, 4), {"a": torch.rand(5, 4),
                                                                                 "b": torch.rand(5, 4)})
    fig = figure()
    assert fig.get_size_inches()[0] <= viz.COLUMN_INCHES + 1e-9
    matrices = [ax for ax in fig.axes if ax.images]
    assert len(matrices) == 5 and all(ax.get_xlabel() and ax.get_ylabel() for ax in matrices)
    assert len(fig.axes) - len(matrices) >= 5  # a colour bar per matrix
    blocks = {s: {k: torch.rand(n, 3) for k in ("semantic", "style", "colour")} for s, n in (("source", 3),
                                                                                              ("target", 4))}
    viz.block_distances(blocks)
    assert figure().get_size_inches()[0] <= viz.COLUMN_INCHES + 1e-9
    viz.image_plans({"a": np.random.rand(3, 4), "b": np.random.rand(3, 4)})
    assert figure().get_size_inches()[0] <= viz.COLUMN_INCHES + 1e-9


def test_label_quality_points_draw_each_graph_and_reading_follows_the_numbers(figure):
    qualities = {"random": _quality("random", [0.3, 0.32, 0.28, 0.31]),
                 "default (ot)": _quality("default (ot)", [0.1, 0.12, 0.09, 0.11], 1),
                 "knn": _quality("knn", [0.3, 0.33, 0.28, 0.31], 2)}
    viz.label_quality_points(qualities, n_boot=200)
    fig = figure()
    assert fig.get_size_inches()[0] <= viz.COLUMN_INCHES + 1e-9
    assert [t.get_text() for t in fig.axes[0].get_yticklabels()] == list(qualities)
    long = viz.quality_long(qualities)
    assert len(long) == 3 * 4 * 3 and set(long["figure"]) == set(viz.label_quality.QUALITY_FIGURES)
    text = viz.label_quality_reading(qualities, n_boot=200)
    assert "lowest **default (ot)**" in text and "ranks 1 of 3" in text
    assert "lower on Y mean" in text and "beyond its paired interval" in text and "apart on" in text
    # swap the roles: now the default is the worst, and the reading says so
    worse = {**qualities, "default (ot)": _quality("default (ot)", [0.5, 0.52, 0.49, 0.51], 1)}
    text = viz.label_quality_reading(worse, n_boot=200)
    assert "highest **default (ot)**" in text and "higher on Y mean" in text


def test_plan_share_reading_words_follow_the_shares():
    pinned = np.eye(4) + 1e-6
    uniform = np.ones((4, 8))
    text = viz.plan_share_reading({"p": pinned, "u": uniform})
    assert "pins each source image on one target image" in text
    assert "almost uniformly" in text
    middle = np.array([[0.42, 0.3, 0.28] + [0.0] * 7] * 3)
    assert "without pinning it on one" in viz.plan_share_reading({"m": middle})
    assert "0.42" in viz.plan_share_reading({"m": middle})


def test_grid_settings_name_the_grid():
    settings = viz.grid_settings(viz.KNOB_GRID["eps"], viz.KNOB_GRID["alpha"])
    assert settings == "image eps 0.05, 0.2 and 1; alpha 0 and 0.75"


def test_knob_grid_reading_compares_the_uniform_cell_with_the_reference():
    from isp_support.config import MatchConfig
    from isp_support.pairing import match
    from isp_support.pairing.quality import ColourStats, pairing_quality

    sets = match.synthetic_match_inputs(6, 8, (3, 5), image_dim=40, patch_dim=20, n_classes=3, seed=5)
    rng = np.random.default_rng(3)

    def stats(ids):
        hy, huv = rng.random((len(ids), 8)), rng.random((len(ids), 16))
        return ColourStats(tuple(ids), rng.normal(0.0, 0.2, (len(ids), 6)), hy / hy.sum(1, keepdims=True),
                           huv / huv.sum(1, keepdims=True))

    scoring = {"targets": stats(sets[3].ids), "truth": stats(sets[2].ids),
               "source_scene": dict(zip(sets[2].ids, sets[2].parents)),
               "target_image": dict(zip(sets[3].ids, sets[3].parents))}
    cfg = MatchConfig()
    same = viz.knob_match(sets, cfg, 1.0, 0.0)
    reference = pairing_quality(same.patch_graph, name="same", **scoring)
    text = viz.knob_grid_reading(sets, cfg, (0.05, 1.0), (0.0, 0.75), scoring=scoring, reference=reference)
    assert "eps 1, alpha 0" in text and "scores as well as the default" in text  # it IS the reference graph
    assert "not measured" in viz.knob_grid_reading(sets, cfg, (1.0,), (0.0,), scoring=None, reference=None)


def _probe(source, rendering, target, steps=20):
    return SimpleNamespace(source=source, rendering=rendering, target=target, steps=steps)


def test_probe_reading_says_away_or_towards_by_the_colour_distance():
    grey = torch.full((2, 3, 4, 4), 0.5)
    green = grey.clone()
    green[:, 1] = 0.8
    red = grey.clone()
    red[:, 0] = 0.9
    assert "moves away from its target's colour" in viz.probe_reading({"d": _probe(grey, red, green)})
    assert "moves towards its target's colour" in viz.probe_reading({"d": _probe(grey, green, green)})


def test_checkpoint_and_training_readings_follow_the_history():
    history = [{"epoch": e, "pseudo_loss": 2.0 - 0.1 * e, "colour_distance": [0.2, 0.1, 0.15, 0.12][e],
                "structure": 0.99} for e in range(4)]
    scores = pd.DataFrame({"psnr": [16.0, 18.0, 19.0, 20.0]}, index=range(4))
    text = viz.checkpoint_rules_reading(history, 0.9, "pseudo_loss", scores)
    assert "`pseudo_loss` (this run's rule) keeps epoch 3 (20.00 dB)" in text
    assert "`colour_distance` keeps epoch 1 (18.00 dB)" in text and "2.00 dB higher" in text
    assert "best epoch by PSNR is 3" in text
    assert "not measured" in viz.checkpoint_rules_reading(history, 0.9, "pseudo_loss", None)
    text = viz.training_effect_reading({"colour_distance": 0.2}, {"colour_distance": 0.1, "structure": 0.95}, 3, 0.9)
    assert "closer to" in text and "-50%" in text and "above the floor" in text
    table = pd.DataFrame({"PSNR to ground truth (dB)": [16.0, 19.0, 22.0]}, index=["identity", "s1", "paired"])
    assert "closes 50% of" in viz.upper_bound_reading(table)


def test_epoch_panels_and_renderings_are_laid_out_in_rows(figure, tmp_path):
    from PIL import Image

    history = [{"epoch": e, "pseudo_loss": 1.0, "colour_distance": 0.5, "structure": 0.95} for e in range(20)]
    run = SimpleNamespace(name="r", folder=tmp_path, history=history, best_epoch=7, checkpoint_rule="pseudo_loss")
    scores = pd.DataFrame({"psnr": [20.0] * 20, "delta_e2000": [5.0] * 20}, index=range(20))
    viz.epoch_panels(run, scores, 0.9)
    fig = figure()
    assert fig.get_size_inches()[0] <= viz.COLUMN_INCHES + 1e-9 and len(fig.axes) == 5
    assert len({round(ax.get_position().x0, 3) for ax in fig.axes}) == 2  # two panels a row
    (tmp_path / "samples").mkdir()
    for e in range(20):
        Image.fromarray(np.full((4, 12, 3), e, np.uint8)).save(tmp_path / "samples" / f"epoch_{e:03d}.png")
    shown = viz.epoch_renderings(run, samples=6)
    assert len(shown) <= viz.training.MAX_EPOCH_ROWS + 2 and {0, 7, 19} <= set(shown)
    assert figure().get_size_inches()[0] <= viz.COLUMN_INCHES + 1e-9


def test_one_step_picture_writes_zero_gradients_out(figure):
    viz.one_step_picture({"mom": 0.1, "tv": 0.01}, {"conv1.weight": 0.0, "head.weight": 0.5},
                         {"conv1.weight": 1e-4, "head.weight": 1e-3})
    fig = figure()
    assert fig.get_size_inches()[0] <= viz.COLUMN_INCHES + 1e-9
    assert [t.get_text() for t in fig.axes[1].texts] == [" 0"]
