"""The notebooks' figure helpers (isp_support.viz): each draws what it is given, headlessly."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
import torch

from isp_support import viz
from isp_support.pairing.graph import PairGraph


@pytest.fixture
def figure(monkeypatch):
    """The figure a helper draws: ``plt.show`` is kept from closing it; all figures are closed afterwards."""
    monkeypatch.setattr(plt, "show", lambda: None)
    yield lambda: plt.gcf()
    plt.close("all")


def test_every_public_name_is_exported():
    assert all(hasattr(viz, name) for name in viz.__all__)
    assert len(set(viz.__all__)) == len(viz.__all__)


def test_preprocess_figures(figure):
    raws = np.random.default_rng(0).integers(0, 1024, (2, 6, 6, 4))
    viz.raw_channels(raws, ["s_0", "s_1"], ("R", "Gr", "Gb", "B"))
    assert len(figure().axes) == 8 and figure().axes[5].get_title().startswith("s_1 · Gr")
    viz.stage_histograms({"a": torch.rand(2, 3, 4, 4), "b": torch.rand(2, 4, 4, 4)})
    assert [ax.get_title() for ax in figure().axes] == ["a", "b"]
    viz.stored_histograms({"train": np.zeros((2, 3, 4, 4), np.float16)})
    assert figure().axes[0].get_legend() is not None


def test_seam_score_matrices_ring_the_true_neighbours(figure):
    scores = {(1, 6): 0.3, (2, 3): 0.1, (3, 2): 0.4, (6, 1): 0.5}
    viz.seam_score_matrices(np.ones((6, 6)), np.ones((6, 6)), 3, scores)
    right, below, bars = figure().axes[:3]

    def ringed(ax):
        return sorted(tuple(p[::-1]) for c in ax.collections for p in c.get_offsets().tolist())

    assert ringed(right) == [(0, 1), (1, 2), (3, 4), (4, 5)]
    assert ringed(below) == [(0, 3), (1, 4), (2, 5)]
    assert [b.get_height() for b in bars.patches] == list(scores.values()) and "lowest 2x3" in bars.get_title()


def test_transport_problem_draws_the_costs_and_row_normalised_plans(figure):
    plan = torch.rand(5, 4, dtype=torch.float64)
    viz.transport_problem(torch.rand(5, 4), torch.rand(5, 5), torch.rand(4, 4), {"OT": plan})
    drawn = [ax for ax in figure().axes if ax.images and ax.get_title()]
    assert len(drawn) == 4
    np.testing.assert_allclose(drawn[-1].images[0].get_array(), (plan / plan.sum(1, keepdim=True)).numpy())


def _graph():
    return PairGraph.from_rows(["s0", "s1"], ["t0", "t1", "t2"], [[0, 1, 2], [2, 1]], [[0.2, 0.5, 0.3], [0.5, 0.5]])


def test_target_loads_plot_the_sorted_expected_draws(figure):
    viz.target_loads({"ot": _graph()})
    np.testing.assert_allclose(figure().axes[0].lines[0].get_ydata(), [1.0, 0.8, 0.2])  # t1, t2, t0


def test_patch_matches_show_each_sources_heaviest_targets(figure, tmp_path):
    from PIL import Image

    (tmp_path / "preprocessed" / "train").mkdir(parents=True)
    paths = {}
    for s in ("s0", "s1"):
        np.save(tmp_path / "preprocessed" / "train" / f"{s}.npy", np.zeros((3, 4, 4), np.float16))
    for t in ("t0", "t1", "t2"):
        paths[t] = tmp_path / f"{t}.png"
        Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(paths[t])
    viz.patch_matches(["s0", "s1"], {"ot": _graph()}, tmp_path, paths, k=2)
    titles = [ax.get_title() for ax in figure().axes]
    assert titles[:3] == ["s0 (ot)", "t1 · w=0.50", "t2 · w=0.30"]
    assert titles[3:] == ["s1 (ot)", "t2 · w=0.50", "t1 · w=0.50"]  # equal weights: decreasing target id


def test_evaluation_figures(figure):
    regret = pd.DataFrame({"rule": ["a", "a", "b"], "method": ["ot", "knn", "ot"], "regret psnr": [0.0, -0.5, -0.1]})
    viz.regret_scatter(regret)
    assert [t.get_text() for t in figure().axes[0].get_yticklabels()] == ["a", "b"]
    img = torch.rand(3, 8, 8)
    viz.whole_and_patchwise(img, img, torch.zeros(8, 8), "ot")
    assert figure().axes[0].get_title() == "ot: whole image"
    viz.rendering_grid({"floor: 20.00 dB": [img, img], "ot: 21.00 dB": [img, img]}, {"gt (a)": img, "gt (b)": img})
    assert [ax.get_title() for ax in figure().axes] == ["floor: 20.00 dB"] * 2 + ["ot: 21.00 dB"] * 2 + ["gt (a)",
                                                                                                          "gt (b)"]


def _run(folder, history, best_epoch=1, name="stage1_ot"):
    from types import SimpleNamespace

    return SimpleNamespace(name=name, folder=folder, history=history, best_epoch=best_epoch,
                           checkpoint_rule="pseudo_loss")


def test_epoch_panels_draw_every_validation_figure_and_the_ground_truth(figure):
    history = [{"epoch": e, "pseudo_loss": 1.0 - e / 10, "colour_distance": 0.5, "structure": 0.9} for e in range(3)]
    viz.epoch_panels(_run(None, history), None, 0.8)
    assert [ax.get_title() for ax in figure().axes] == ["pseudo_loss", "colour_distance", "structure"]
    assert figure().axes[2].lines[-1].get_ydata()[0] == 0.8  # the structure floor
    scores = pd.DataFrame({"psnr": [20.0, 21.0, 20.5], "delta_e2000": [5.0, 4.0, 4.5]}, index=[0, 1, 2])
    viz.epoch_panels(_run(None, history), scores, 0.8)
    np.testing.assert_allclose(figure().axes[3].lines[0].get_ydata(), [20.0, 21.0, 20.5])
    assert figure().axes[4].get_title() == "delta_e2000 vs train/gt (scoring only)"


def test_renderings_show_the_saved_sample_strips(figure, tmp_path):
    from PIL import Image

    (tmp_path / "samples").mkdir()
    for e in range(4):
        Image.fromarray(np.full((4, 8, 3), 40 * e, np.uint8)).save(tmp_path / "samples" / f"epoch_{e:03d}.png")
    history = [{"epoch": e} for e in range(4)]
    assert viz.epoch_renderings(_run(tmp_path, history, best_epoch=1), samples=2) == [0, 1, 2, 3]
    labels = [t.get_text() for t in figure().axes[0].get_yticklabels()]
    assert labels == ["input", "epoch 0", "epoch 1 (kept)", "epoch 2", "epoch 3"]
    assert figure().axes[0].images[0].get_array()[-1, 0, 0] == 120  # the last row: epoch 3's output
    viz.kept_renderings({"stage 1": _run(tmp_path, history, 2), "stage 2": _run(tmp_path, history, 0)}, samples=2)
    assert [ax.get_title() for ax in figure().axes] == ["stage 1 (epoch 2)", "stage 2 (epoch 0)"]
