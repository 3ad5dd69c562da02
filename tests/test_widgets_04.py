"""Notebook 04's loss-weight widget (isp_support.viz): weighted terms, the few-step rendering, the static grid."""

import dataclasses

import pytest
import torch
from matplotlib.figure import Figure
from torch import nn

from isp_support.train import losses
from isp_support.train.gram import GramLoss
from isp_support import viz
from isp_support.config import profile_config

CFG = profile_config("tiny")
WEIGHTS = losses.LossWeights(mom=1.0, luma=0.7, chroma=1.5, gram=2.0, tv=0.3)


class StubBackbone(nn.Module):
    """A small random conv net with the VGG wrappers' interface (``features_at``, ``style_layers``)."""

    style_layers = ("a", "b")

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv1 = nn.Conv2d(3, 4, 3, padding=1)
        self.conv2 = nn.Conv2d(4, 5, 3, padding=1, stride=2)

    def features_at(self, x, layers=None):
        a = torch.relu(self.conv1(x))
        out = {"a": a, "b": torch.tanh(self.conv2(a))}
        return {name: out[name] for name in (self.style_layers if layers is None else layers)}


@pytest.fixture(scope="module")
def gram():
    return GramLoss(StubBackbone(), reduction="mean")


@pytest.fixture(scope="module")
def batch():
    g = torch.Generator().manual_seed(1)
    x = torch.rand(3, 3, 20, 20, generator=g) * 0.6 + 0.2
    y = (torch.rand(3, 3, 20, 20, generator=g) * torch.tensor([0.3, 0.9, 0.5]).view(1, 3, 1, 1)).clamp(0, 1)
    return x, y


def _bars(ax):
    """``{label: heights}`` of the bar containers of a terms panel."""
    return {c.get_label(): [p.get_height() for p in c.patches] for c in ax.containers}


def test_weighted_terms_are_stage1_terms_times_weights(batch, gram):
    x, y = batch
    y_hat = (x * 1.1).clamp(0, 1)
    got = viz.weighted_loss_terms(y_hat, y, WEIGHTS, gram)
    _, terms = losses.stage1_loss(y_hat, y, WEIGHTS, gram)
    assert list(got) == [*viz.LOSS_WEIGHT_KNOBS, "total"]
    for k in viz.LOSS_WEIGHT_KNOBS:
        assert float(terms[k]) > 0
        assert got[k] == pytest.approx(getattr(WEIGHTS, k) * float(terms[k]), rel=1e-6)
    assert got["total"] == pytest.approx(float(terms["total"]), rel=1e-6)
    assert got["total"] == pytest.approx(sum(got[k] for k in viz.LOSS_WEIGHT_KNOBS), rel=1e-5)


def test_zero_weight_gives_zero_term_and_zero_bar(batch, gram):
    x, y = batch
    w = dataclasses.replace(WEIGHTS, gram=0.0, tv=0.0)
    assert viz.weighted_loss_terms(x, y, w, None)["gram"] == 0.0  # no Gram loss needed once its weight is 0
    fig = viz.loss_terms_and_rendering(x, y, w, gram, CFG, steps=3, seed=0)
    assert isinstance(fig, Figure)
    bars = _bars(fig.axes[0])
    assert len(bars) == 2 and all(len(h) == len(viz.LOSS_WEIGHT_KNOBS) + 1 for h in bars.values())
    names = [*viz.LOSS_WEIGHT_KNOBS, "total"]
    for heights in bars.values():
        assert heights[names.index("gram")] == 0.0 and heights[names.index("tv")] == 0.0
        assert heights[names.index("mom")] > 0 and heights[names.index("total")] > 0
    off = [t.get_text() for t in fig.axes[0].texts]
    assert off.count("off") == 2


def test_few_steps_deterministic_for_a_seed_and_change_the_input(batch, gram):
    x, y = batch
    a = viz.few_step_rendering(x, y, WEIGHTS, gram, CFG, steps=5, seed=3)
    b = viz.few_step_rendering(x, y, WEIGHTS, gram, CFG, steps=5, seed=3)
    assert a.steps == 5 and torch.equal(a.rendering, b.rendering) and a.after == b.after
    assert torch.equal(a.source, x)  # 20x20 patches: smaller than the crop, so whole
    assert (a.rendering - a.source).abs().max() > 1e-3
    assert a.after["total"] < a.before["total"]  # the steps descend the loss they are given
    assert a.before == viz.weighted_loss_terms(x, y, WEIGHTS, gram)  # untrained network == identity
    c = viz.few_step_rendering(x, y, WEIGHTS, gram, CFG, steps=5, seed=4)
    assert not torch.equal(a.rendering, c.rendering)  # the seed sets the network's start


def test_few_steps_leave_global_rng_and_zero_weights_alone(batch, gram):
    x, y = batch
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    off = losses.LossWeights(mom=0, luma=0, chroma=0, gram=0, tv=0)
    r = viz.few_step_rendering(x, y, off, None, CFG, steps=5, seed=0)
    assert torch.equal(torch.rand(3), expected)
    assert r.steps == 0 and torch.equal(r.rendering, r.source)
    assert r.before == dict.fromkeys([*viz.LOSS_WEIGHT_KNOBS, "total"], 0.0)


def test_centre_crop(gram):
    x = torch.rand(2, 3, 30, 40)
    r = viz.few_step_rendering(x, x.flip(-1), WEIGHTS, gram, CFG, steps=1, crop=16)
    assert r.source.shape == r.target.shape == r.rendering.shape == (2, 3, 16, 16)
    assert torch.equal(r.source, x[..., 7:23, 12:28]) and r.patch_size == (30, 40)


def test_grid_rows_are_presets_and_deterministic(batch, gram):
    x, y = batch
    presets = viz.loss_weight_presets(WEIGHTS)
    assert list(presets) == ["default (cfg.train)", "luma + chroma only", "Gram only", "no TV"]
    assert presets["Gram only"] == dataclasses.replace(WEIGHTS, mom=0, luma=0, chroma=0, tv=0)
    assert presets["no TV"].tv == 0 and presets["luma + chroma only"].gram == 0
    figs = [viz.loss_weight_grid(x, y, WEIGHTS, gram, CFG, steps=2, seed=0) for _ in range(2)]
    assert len(figs[0].axes) == 4 * len(presets)
    bars = [[_bars(ax) for ax in f.axes[::4]] for f in figs]
    assert bars[0] == bars[1]
    gram_only = bars[0][2]["untrained (= input)"]
    assert gram_only[:3] == [0.0, 0.0, 0.0] and gram_only[3] > 0 and gram_only[4] == 0.0
    assert len({ax.get_ylim() for ax in figs[0].axes[::4]}) == 1  # the bar panels share their range
    # the grid's default row is the widget's view of the same weights
    single = viz.loss_terms_and_rendering(x, y, WEIGHTS, gram, CFG, steps=2, seed=0)
    assert _bars(single.axes[0]) == bars[0][0]


def test_sliders_start_at_the_weights():
    sliders = viz.loss_weight_sliders(WEIGHTS)
    assert list(sliders) == list(viz.LOSS_WEIGHT_KNOBS)
    for k, s in sliders.items():
        assert s.value == pytest.approx(getattr(WEIGHTS, k)) and s.min == 0 and not s.continuous_update
