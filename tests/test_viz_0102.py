"""Notebooks 01 and 02's figures fit the site's column and return the numbers their readings are made from; the
grid flags of 02 (isp_support.pipeline.grid.grid_flags)."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch

from isp_support import viz
from isp_support.pipeline import demosaic, grid
from isp_support.viz.preprocess import demosaic_toy, total_variation


@pytest.fixture
def figure(monkeypatch):
    """The figure a helper draws: ``plt.show`` is kept from closing it; all figures are closed afterwards."""
    viz.use_theme()
    monkeypatch.setattr(plt, "show", lambda: None)
    yield lambda: plt.gcf()
    plt.close("all")


def _fits(fig) -> bool:
    return fig.get_size_inches()[0] <= viz.COLUMN_INCHES + 1e-9


def _result(layout, ratio=2.0, low=False, reason=None) -> grid.GridResult:
    scores = {layout: 1.0, (layout[1], layout[0]): ratio}
    return grid.GridResult("s", *layout, 1.0, ratio, scores, ratio, low, reason, {})


def test_a_grid_like_the_datas_is_not_flagged():
    assert grid.grid_flags(_result((5, 7)), [(2, 7), (5, 7)]) == []


def test_a_strip_longer_than_the_datas_grids_is_flagged_degenerate():
    flags = grid.grid_flags(_result((1, 42)), [(2, 7), (7, 2), (6, 7)])
    assert len(flags) == 1 and flags[0].startswith("degenerate: 1x42 is 42.0:1") and "3.5:1" in flags[0]


def test_a_true_strip_of_the_data_is_not_degenerate():
    assert grid.grid_flags(_result((1, 3)), [(1, 3), (2, 2)]) == []


def test_low_confidence_is_flagged_with_its_ratio_and_reason():
    flags = grid.grid_flags(_result((3, 4), ratio=1.01, low=True, reason="close call"))
    assert flags == ["low confidence (second/best 1.010): close call"]


def test_a_recovered_strip_is_flagged_both_ways():
    ramp = np.tile(np.linspace(0, 1, 24), (4, 1))  # a horizontal ramp: only left-to-right seams fit
    patches = np.stack([ramp[:, 4 * i:4 * i + 4] for i in range(6)])
    result = grid.recover_grid(patches, border=1, score="paper")
    assert result.layout == (1, 6)
    flags = grid.grid_flags(result, [(2, 3), (3, 2)])
    assert [f.split()[0] for f in flags] == ["low", "degenerate:"]


def test_preprocess_figures_fit_the_column_and_return_their_numbers(figure):
    raws = np.random.default_rng(0).integers(0, 1024, (3, 6, 6, 4))
    means = viz.raw_channels(raws, ["a", "b", "c"], ("R", "Gr", "Gb", "B"))
    assert _fits(figure()) and np.allclose(means, raws.reshape(-1, 4).mean(0))
    stages = {name: torch.full((1, 3, 4, 4), v) for name, v in zip("abcde", (0.1, 0.2, 0.3, 0.4, 0.5))}
    medians = viz.stage_histograms(stages)
    assert _fits(figure()) and len(figure().axes) == 5
    assert medians == pytest.approx({"a": 0.1, "b": 0.2, "c": 0.3, "d": 0.4, "e": 0.5})
    shares = viz.stored_histograms({"train": np.full((2, 3, 4, 4), 0.2, np.float16),
                                    "test": np.full((2, 3, 4, 4), 0.9, np.float16)})
    assert _fits(figure()) and all(s.sum() == pytest.approx(1.0) for s in shares.values())
    assert total_variation(shares["train"], shares["test"]) == pytest.approx(1.0)
    assert total_variation(shares["train"], shares["train"]) == 0.0


def test_demosaic_toy_draws_the_check_and_reports_the_interior_difference(figure):
    bayer = demosaic.packed_to_bayer(torch.rand(1, 4, 4, 4, generator=torch.Generator().manual_seed(0)))
    theirs = demosaic.demosaic(bayer, "bilinear")
    mine = theirs.clone()
    mine[..., 0, :] += 0.5  # a border row differs, the interior does not
    assert demosaic_toy(bayer, mine, theirs, border=2) == 0.0
    assert _fits(figure()) and any(ax.images for ax in figure().axes)
    mine[..., 4, 4] += 0.25
    assert demosaic_toy(bayer, mine, theirs, border=2) == pytest.approx(0.25)


def test_score_map_strip_wraps_into_rows_within_the_column(figure):
    maps = [np.zeros((4, 4))] * 35
    viz.score_map_strip(maps, list(range(35)), "scene", per_row=12)
    shown = [ax for ax in figure().axes if ax.images]
    assert _fits(figure()) and len(shown) == 35 and len(figure().axes) == 36  # 3 rows of 12, one left empty


def test_stitching_figures_fit_the_column(figure):
    viz.seam_score_matrices(np.ones((6, 6)), np.ones((6, 6)), 3, {(1, 6): 0.3, (2, 3): 0.1, (3, 2): 0.4})
    assert _fits(figure())
    res = {"a": _result((3, 4)), "b": _result((4, 3))}
    viz.layout_score_bars([("s", res)], {"s": (3, 4)})
    assert _fits(figure())


def test_the_data_description_follows_the_data_and_the_config():
    demo = viz.data_description("demo", {"unprocessing": "Brooks et al. 2019, CVPR", "config": {"photo_sources": [
        "wheels"]}, "scenes": [{"photo_id": 1}, {"photo_id": 1}, {"photo_id": 2}]}, n_raw=10, n_gt=10, side=48,
        semantic="vgg16_offline", style="vgg16_offline")
    assert "**synthetic**: 2 real photos (wheels)" in demo[0] and "all 10 RAW patches have" in demo[0]
    assert "against the paper's 256 px" in demo[1]
    assert "VGG16 in place of the paper's DINOv2" in demo[2] and "in place of the paper's VGG19" in demo[2]
    full = viz.data_description("full", {}, n_raw=10, n_gt=0, side=256, semantic="dinov2_vits14", style="vgg19")
    assert "not built by this package" in full[0] and "no RAW patch has a ground-truth" in full[0]
    assert "the paper's size" in full[1] and full[2].count("as the paper does") == 2


def test_the_channel_reading_names_the_cast_the_planes_show():
    green = viz.channel_reading({"R": 100, "Gr": 300, "Gb": 300, "B": 100}, 3, 1023)
    assert "3.00 times the red" in green and "green cast" in green and "(of 1023)" in green
    assert "leans away from blue" in viz.channel_reading({"R": 280, "Gr": 300, "Gb": 300, "B": 100}, 3, 1023)
    assert "little green cast" in viz.channel_reading({"R": 290, "Gr": 300, "Gb": 300, "B": 280}, 3, 1023)
