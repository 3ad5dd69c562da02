"""The pairing-quality diagnostic: hand-computed figures on a hand-made graph, and real statistics."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from kornia.color import rgb_to_yuv

from isp_support.pairing import quality as pair_quality
from isp_support.pairing.graph import PairGraph
from isp_support.pairing.quality import ColourStats


def _stats(ids, moments, hist_y, hist_uv):
    return ColourStats(tuple(ids), np.asarray(moments, float), np.asarray(hist_y, float), np.asarray(hist_uv, float))


@pytest.fixture()
def hand_made():
    # Three target patches: t0, t1 in target image T0, t2 in T1. Two-bin "histograms" keep the arithmetic short.
    targets = _stats(["t0", "t1", "t2"],
                     [[0.2, 0.0, 0.1, 0.1, 0.0, 0.0], [0.6, 0.1, 0.0, 0.3, 0.0, 0.0], [1.0, -0.2, 0.2, 0.2, 0.1, 0.0]],
                     [[1, 0], [0, 1], [0.5, 0.5]], [[1, 0], [1, 0], [0, 1]])
    # Sources: s0 in scene A, s1 and s2 in scene B.
    truth = _stats(["s0", "s1", "s2"],
                   [[0.3, 0.0, 0.0, 0.2, 0.0, 0.0], [0.5, 0.0, 0.1, 0.2, 0.0, 0.0], [0.9, 0.0, 0.1, 0.2, 0.0, 0.0]],
                   [[1, 0], [0, 1], [0, 1]], [[1, 0], [0, 1], [1, 0]])
    graph = PairGraph.from_rows(["s0", "s1", "s2"], ["t0", "t1", "t2"], [[0, 1], [2], [0, 2]],
                                [[0.75, 0.25], [1.0], [0.5, 0.5]])
    scene = {"s0": "A", "s1": "B", "s2": "B"}
    image = {"t0": "T0", "t1": "T0", "t2": "T1"}
    return pair_quality.pairing_quality(graph, targets, truth, scene, image, "hand")


def test_patch_errors_are_the_hand_computed_ones(hand_made):
    e = hand_made.patch_errors
    # s0: E[Y mean] = 0.75 * 0.2 + 0.25 * 0.6 = 0.3 (truth 0.3); E[V mean] = 0.075 (truth 0); E[Y sd] = 0.15 (0.2).
    assert e.loc["s0", "Y mean"] == pytest.approx(0.0, abs=1e-12)
    assert e.loc["s0", "V mean"] == pytest.approx(0.075)
    assert e.loc["s0", "Y sd"] == pytest.approx(0.05)
    # s1 -> t2 only: |1.0 - 0.5|, |-0.2 - 0|, |0.2 - 0.1|.
    assert e.loc["s1", ["Y mean", "U mean", "V mean"]].tolist() == pytest.approx([0.5, 0.2, 0.1])
    # s0's expected Y histogram (0.75, 0.25) against (1, 0); UV (1, 0) against (1, 0):
    h_y2 = 0.5 * ((np.sqrt(0.75) - 1) ** 2 + 0.25)
    assert e.loc["s0", "histogram"] == pytest.approx(np.sqrt(h_y2 / 2))
    # s2: Y (0.75, 0.25) vs (0, 1); UV (0.5, 0.5) vs (1, 0).
    h_y2 = 0.5 * (0.75 + (np.sqrt(0.25) - 1) ** 2)
    h_uv2 = 0.5 * ((np.sqrt(0.5) - 1) ** 2 + 0.5)
    assert e.loc["s2", "histogram"] == pytest.approx(np.sqrt((h_y2 + h_uv2) / 2))


def test_scene_errors_and_top_target_share(hand_made):
    # Scene B: signed Y mean errors +0.5 (s1) and 0.6 - 0.9 = -0.3 (s2) average to |0.1|; patch level averages |.|.
    assert hand_made.scene_errors.loc["B", "Y mean"] == pytest.approx(0.1)
    assert hand_made.per_scene("patch").loc["B", "Y mean"] == pytest.approx(0.4)
    # Scene A puts all its weight on T0; scene B puts 1 + 0.5 of 2 on T1.
    assert hand_made.top_target_share.to_dict() == pytest.approx({"A": 1.0, "B": 0.75})
    s = hand_made.summary(n_boot=200)
    row = s[(s.level == "patch") & (s.figure == "Y mean")].iloc[0]
    assert row["mean"] == pytest.approx((0.0 + 0.4) / 2) and row["lo"] <= row["mean"] <= row["hi"]


def test_compare_is_paired_and_says_which_is_better(hand_made):
    worse = pair_quality.PairingQuality("worse", hand_made.patch_errors.assign(
        **{f: hand_made.patch_errors[f] + 0.1 for f in pair_quality.FIGURES}), hand_made.scene_errors,
        hand_made.top_target_share)
    c = pair_quality.compare(hand_made, worse, n_boot=200)
    assert c["diff"].to_numpy() == pytest.approx(np.full(len(pair_quality.FIGURES), -0.1))
    assert c["better"].all() and not c["worse"].any()
    other = pair_quality.PairingQuality("other", hand_made.patch_errors.assign(scene="C"), hand_made.scene_errors,
                                        hand_made.top_target_share)
    with pytest.raises(ValueError, match="different scenes"):
        pair_quality.compare(hand_made, other)


def test_colour_stats_match_kornia_yuv_and_a_perfect_graph_scores_zero(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    files = {}
    for k in range(3):
        files[f"p{k}"] = tmp_path / f"p{k}.png"
        Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(files[f"p{k}"])
    stats = pair_quality.load_colour_stats(files)
    x = torch.from_numpy(np.array(Image.open(files["p1"]))).permute(2, 0, 1)[None].float() / 255
    yuv = rgb_to_yuv(x).flatten(2)[0]
    assert stats.take(["p1"]).moments[0] == pytest.approx(torch.cat([yuv.mean(1), yuv.std(1, unbiased=False)]).numpy(),
                                                          abs=1e-6)
    # Each source paired with a target showing exactly its truth: every error is zero.
    graph = PairGraph.from_rows(["p0", "p1", "p2"], ["p0", "p1", "p2"], [[0], [1], [2]], [[1.0]] * 3)
    q = pair_quality.pairing_quality(graph, stats, stats, {f"p{k}": f"s{k}" for k in range(3)},
                                     {f"p{k}": "T" for k in range(3)})
    assert np.abs(q.patch_errors[list(pair_quality.FIGURES)].to_numpy()).max() < 1e-7
    table = pair_quality.summary_table([q])
    assert isinstance(table, pd.DataFrame) and table.loc[q.name, "top target share"] == 1.0
