"""Tests of the training losses (isp_support.train.losses, .gram): hand-computed values, gradchecks, frozen backbones.

CPU only and fast: a tiny random conv net stands in for VGG where the real one is
not the point; one test loads the offline ImageNet VGG16 on 32 x 32 images.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch
from torch import nn
from torch.autograd import gradcheck

from isp_support.train import losses
from isp_support.embed import backbones
from isp_support.embed import weights_files
from isp_support.colour import U_RANGE
from isp_support.config import EmbedConfig, profile_config
from isp_support.train.gram import INPUT_SCALE_CORRECTION, GramLoss, gram_loss_for, gram_matrix, uses_trace_form
from isp_support.train.losses import (LossWeights, chroma_histogram_loss, hinge_d_loss, hinge_g_loss,
                                      luma_histogram_loss, moment_loss, pal_loss, stage1_loss, tv_loss)
from isp_support.embed.weights_files import WeightsUnavailableError


class StubBackbone(nn.Module):
    """A random two-layer conv net with the VGG wrappers' interface (features_at, style_layers)."""

    style_layers = ("a", "b")

    def __init__(self, dtype: torch.dtype = torch.float32, seed: int = 0):
        super().__init__()
        torch.manual_seed(seed)
        self.conv1 = nn.Conv2d(3, 4, 3, padding=1)
        self.conv2 = nn.Conv2d(4, 5, 3, padding=1, stride=2)
        self.to(dtype)

    def features_at(self, x, layers=None):
        layers = self.style_layers if layers is None else tuple(layers)
        a = torch.relu(self.conv1(x))
        b = torch.tanh(self.conv2(a))  # smooth, so finite differences agree with autograd
        out = {"a": a, "b": b}
        return {name: out[name] for name in layers}


def constant(colour, shape=(1, 4, 4), dtype=torch.float64):
    b, h, w = shape
    return torch.tensor(colour, dtype=dtype).view(1, 3, 1, 1).expand(b, 3, h, w).clone()


def rand(*shape, seed=0, lo=0.05, hi=0.95):
    g = torch.Generator().manual_seed(seed)
    return lo + (hi - lo) * torch.rand(*shape, generator=g, dtype=torch.float64)


# --- moments (eq. 6) -------------------------------------------------------------------------

def test_moment_constant_images_by_hand():
    a, b = constant([0.2, 0.5, 0.9]), constant([0.4, 0.5, 0.6])
    # means differ by 0.2 + 0 + 0.3; both standard deviations are sqrt(eps)
    assert float(moment_loss(a, b)) == pytest.approx(0.5, abs=1e-12)
    assert float(moment_loss(a, b, per_sample=True)) == pytest.approx(0.5, abs=1e-12)
    assert float(moment_loss(a, a)) == 0.0


def test_moment_std_of_half_black_half_white():
    x = torch.zeros(1, 3, 4, 4, dtype=torch.float64)
    x[..., 2:] = 1.0                     # mean 0.5, population std 0.5 in each channel
    grey = torch.full_like(x, 0.5)       # mean 0.5, std 0
    eps = losses.STD_EPS                 # sigma = sqrt(var + eps)
    expected = 3 * ((0.25 + eps) ** 0.5 - eps ** 0.5)
    assert float(moment_loss(x, grey)) == pytest.approx(expected, abs=1e-12)
    assert expected == pytest.approx(1.5, abs=1e-3)


def test_moment_batch_level_versus_per_sample():
    """A batch (black, white) against (white, black): same batch statistics, opposite pairs."""
    pred = torch.cat([constant([0, 0, 0]), constant([1, 1, 1])])
    target = pred.flip(0)
    assert float(moment_loss(pred, target)) == pytest.approx(0.0, abs=1e-12)
    assert float(moment_loss(pred, target, per_sample=True)) == pytest.approx(3.0, abs=1e-12)


def test_per_pair_moment_by_hand_and_through_stage1_loss():
    """Eq. 6 as printed: each prediction against its own target, averaged over the batch."""
    half = torch.zeros(1, 3, 4, 4, dtype=torch.float64)
    half[..., 2:] = 1.0                                   # mean 0.5, population std 0.5 per channel
    pred = torch.cat([constant([0.2, 0.4, 0.6]), half])
    target = torch.cat([constant([0.3, 0.4, 0.5]), constant([0.5, 0.5, 0.5])])
    eps = losses.STD_EPS
    first = 0.1 + 0.0 + 0.1                               # means differ, both flat
    second = 3 * ((0.25 + eps) ** 0.5 - eps ** 0.5)       # same means, std 0.5 against 0
    expected = (first + second) / 2
    assert float(moment_loss(pred, target, per_sample=True)) == pytest.approx(expected, abs=1e-12)
    assert abs(float(moment_loss(pred, target)) - expected) > 0.1  # batch statistics pool the two pairs
    w = LossWeights(luma=0, chroma=0, gram=0, tv=0, moment_per_sample=True)
    _, terms = stage1_loss(pred, target, w)
    assert float(terms["mom"]) == pytest.approx(expected, abs=1e-12)
    _, terms = stage1_loss(pred, target, dataclasses.replace(w, moment_per_sample=False))
    assert float(terms["mom"]) == pytest.approx(float(moment_loss(pred, target)), abs=1e-12)


# --- histograms (eqs. 7-8) -------------------------------------------------------------------

def test_histogram_losses_identical_images_are_zero():
    x = rand(2, 3, 8, 8)
    assert float(luma_histogram_loss(x, x)) == 0.0
    assert float(chroma_histogram_loss(x, x)) == 0.0


def test_luma_histogram_black_versus_white():
    black, white = constant([0, 0, 0]), constant([1, 1, 1])
    # all mass in bin 0 versus all in bin 63: ||e_0 - e_63||^2 = 2; greys have the same chroma
    assert float(luma_histogram_loss(black, white)) == pytest.approx(2.0, abs=1e-6)
    assert float(chroma_histogram_loss(black, white)) == pytest.approx(0.0, abs=1e-12)


def test_chroma_histogram_grey_versus_red_by_hand():
    grey, red = constant([0.5, 0.5, 0.5]), constant([1.0, 0.0, 0.0])
    # grey: U = V = 0 sits halfway between bins 15 and 16 on both axes -> four cells of 1/4
    grey_sq = 4 * 0.25 ** 2
    # red: V = 0.615 (top of its range) -> all in column 31; U = -0.147 splits between rows 10 and 11
    pos = (-0.147 - U_RANGE[0]) / (U_RANGE[1] - U_RANGE[0]) * 31
    frac = pos - 10
    red_sq = (1 - frac) ** 2 + frac ** 2
    # disjoint supports: ||h_a - h_b||^2 = ||h_a||^2 + ||h_b||^2
    assert float(chroma_histogram_loss(grey, red)) == pytest.approx(grey_sq + red_sq, abs=1e-3)
    batch = chroma_histogram_loss(torch.cat([grey, grey]), torch.cat([red, grey]))
    assert float(batch) == pytest.approx((grey_sq + red_sq) / 2, abs=1e-3)  # mean over the batch


# --- total variation (eq. 10) ----------------------------------------------------------------

def test_tv_of_a_step_image():
    x = torch.zeros(2, 3, 4, 6, dtype=torch.float64)
    x[..., 3:] = 1.0
    # one unit jump per row and channel: 3 * 4 / (3 * 4 * 6) = 1 / W
    assert float(tv_loss(x)) == pytest.approx(1 / 6)
    # a horizontal edge in a 6 x 4 image: one jump per column and channel, 3 * 4 / (3 * 6 * 4) = 1 / H
    assert float(tv_loss(x.transpose(2, 3))) == pytest.approx(1 / 6)
    y = torch.zeros(1, 3, 4, 6, dtype=torch.float64)
    y[..., 2:, :] = 1.0                  # horizontal edge in a 4 x 6 image: 1 / H = 1 / 4
    assert float(tv_loss(y)) == pytest.approx(1 / 4)
    assert float(tv_loss(torch.full_like(x, 0.3))) == 0.0


def test_tv_checkerboard_counts_only_valid_differences():
    x = (torch.arange(3).view(3, 1) + torch.arange(3).view(1, 3)).remainder(2).double().expand(1, 3, 3, 3)
    # 3 x 2 horizontal + 2 x 3 vertical unit differences per channel, no boundary terms
    assert float(tv_loss(x)) == pytest.approx(3 * 12 / (3 * 9))


# --- hinge (eqs. 11-12) ----------------------------------------------------------------------

def test_hinge_values():
    d_real = torch.tensor([[2.0, 0.5], [-1.0, 1.0]])   # relu(1 - d): 0, 0.5, 2, 0 -> mean 0.625
    d_fake = torch.tensor([-2.0, 0.0, 1.0])            # relu(1 + d): 0, 1, 2 -> mean 1
    assert float(hinge_d_loss(d_real, d_fake)) == pytest.approx(1.625)
    assert float(hinge_g_loss(d_fake)) == pytest.approx(1 / 3)
    assert float(hinge_d_loss(torch.full((2, 1, 3, 3), 1.5), torch.full((2, 1, 3, 3), -1.5))) == 0.0


# --- PAL ---------------------------------------------------------------------------------------

def affine(x, a, b):
    return torch.einsum("ij,bjhw->bihw", a, x) + b.view(1, 3, 1, 1)


def test_pal_discounts_an_affine_colour_transform():
    y = rand(2, 3, 16, 16, seed=1)
    a = torch.tensor([[0.8, 0.1, 0.0], [0.05, 0.7, 0.1], [0.0, 0.2, 0.6]], dtype=torch.float64)
    y_hat = affine(y, a, torch.tensor([0.1, -0.05, 0.2], dtype=torch.float64))
    plain = (y_hat - y).abs().mean()
    assert float(plain) > 0.05
    loss, a_fit, b_fit = pal_loss(y_hat, y, ridge=1e-9, return_transform=True)
    assert float(loss) < 1e-6
    assert torch.allclose(a_fit @ y_hat.flatten(2) + b_fit.unsqueeze(-1), y.flatten(2), atol=1e-6)
    # without a bias an offset cannot be fully explained, but a pure linear map can
    lin = affine(y, a, torch.zeros(3, dtype=torch.float64))
    assert float(pal_loss(lin, y, ridge=1e-9, bias=False)) < 1e-6
    assert float(pal_loss(y_hat, y, ridge=1e-9, bias=False)) > 1e-4


def test_pal_does_not_discount_structure():
    y = rand(1, 3, 16, 16, seed=2)
    y_hat = y.flip(-1)                           # same colours, different structure
    assert float(pal_loss(y_hat, y, ridge=1e-9)) > 0.1
    assert float(pal_loss(y_hat, y, base="l2")) > 0.02


def test_pal_ridge_limits():
    y, y_hat = rand(2, 3, 8, 8, seed=3), rand(2, 3, 8, 8, seed=4)
    huge = 1e9
    shift = y.mean(dim=(2, 3), keepdim=True) - y_hat.mean(dim=(2, 3), keepdim=True)
    assert float(pal_loss(y_hat, y, ridge=huge)) == pytest.approx(float((y_hat + shift - y).abs().mean()), rel=1e-6)
    assert float(pal_loss(y_hat, y, ridge=huge, bias=False)) == pytest.approx(float((y_hat - y).abs().mean()),
                                                                             rel=1e-6)
    assert float(pal_loss(y_hat, y, ridge=huge, base="l2", bias=False)) == pytest.approx(
        float((y_hat - y).pow(2).mean()), rel=1e-6)
    # a flat prediction is aligned by its mean only (A = I since its covariance is 0)
    flat = torch.full_like(y, 0.3)
    _, a_fit, _ = pal_loss(flat, y, return_transform=True)
    assert torch.allclose(a_fit, torch.eye(3, dtype=torch.float64).expand(2, 3, 3))


def test_pal_batched_equals_per_sample():
    y, y_hat = rand(3, 3, 8, 8, seed=5), rand(3, 3, 8, 8, seed=6)
    whole = pal_loss(y_hat, y)
    singles = torch.stack([pal_loss(y_hat[i:i + 1], y[i:i + 1]) for i in range(3)]).mean()
    assert float(whole) == pytest.approx(float(singles), rel=1e-10)


def test_pal_detach_transform_changes_only_the_gradient():
    y, y_hat = rand(1, 3, 8, 8, seed=7), rand(1, 3, 8, 8, seed=8).requires_grad_()
    g_flow, = torch.autograd.grad(pal_loss(y_hat, y, base="l2"), y_hat)
    g_det, = torch.autograd.grad(pal_loss(y_hat, y, base="l2", detach_transform=True), y_hat)
    with torch.no_grad():
        assert float(pal_loss(y_hat, y, base="l2")) == float(pal_loss(y_hat, y, base="l2", detach_transform=True))
    # at the optimum the derivative through A and b vanishes (envelope theorem) up to the ridge term
    assert torch.allclose(g_flow, g_det, atol=1e-4)
    with pytest.raises(ValueError):
        pal_loss(y_hat, y, base="huber")


# --- gradients ---------------------------------------------------------------------------------

@pytest.mark.parametrize("name, fn", [
    ("moment", lambda p, t: moment_loss(p, t)),
    ("moment_per_sample", lambda p, t: moment_loss(p, t, per_sample=True)),
    ("luma", lambda p, t: luma_histogram_loss(p, t, bins=8)),
    ("chroma", lambda p, t: chroma_histogram_loss(p, t, bins=6)),
    ("tv", lambda p, t: tv_loss(p)),
    ("pal_l2", lambda p, t: pal_loss(p, t, base="l2")),
    ("pal_l1", lambda p, t: pal_loss(p, t, base="l1")),
    ("pal_nobias", lambda p, t: pal_loss(p, t, base="l2", bias=False, ridge=1e-2)),
])
def test_gradcheck(name, fn):
    pred = rand(2, 3, 5, 5, seed=10).requires_grad_()
    target = rand(2, 3, 5, 5, seed=11)
    assert gradcheck(lambda p: fn(p, target), (pred,), eps=1e-6, atol=1e-5, rtol=1e-3)


def test_gradcheck_gram_with_stub_backbone():
    gram = GramLoss(StubBackbone(torch.float64))
    pred = rand(2, 3, 6, 6, seed=12).requires_grad_()
    target = rand(2, 3, 6, 6, seed=13)
    assert gradcheck(lambda p: gram(p, target), (pred,), eps=1e-6, atol=1e-6, rtol=1e-3)


# --- Gram (eq. 9) ------------------------------------------------------------------------------

def test_gram_matrix_normalisation():
    f = torch.ones(1, 2, 3, 4)
    assert torch.allclose(gram_matrix(f), torch.full((1, 2, 2), 12 / 24))


def test_gram_loss_matches_its_definition_and_freezes_the_backbone():
    stub = StubBackbone()
    gram = GramLoss(stub)
    assert gram.layers == ("a", "b")
    assert not any(p.requires_grad for p in stub.parameters())
    gram.train()
    assert not stub.training
    x, y = torch.rand(2, 3, 8, 8), torch.rand(2, 3, 8, 8)
    assert float(gram(x, x)) == 0.0
    fx, fy = stub.features_at(x), stub.features_at(y)
    expected = sum(((gram_matrix(fx[k]) - gram_matrix(fy[k])) ** 2).sum(dim=(1, 2)).mean() for k in "ab")
    assert float(GramLoss(stub, layers=["b"], scale=2.0)(x, y)) == pytest.approx(
        2 * float(((gram_matrix(fx["b"]) - gram_matrix(fy["b"])) ** 2).sum(dim=(1, 2)).mean()), rel=1e-5)
    x.requires_grad_()
    y.requires_grad_()
    loss = gram(x, y)
    assert float(loss.detach()) == pytest.approx(float(expected), rel=1e-5)
    loss.backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert y.grad is None                                   # the target is a constant
    assert all(p.grad is None for p in stub.parameters())   # the backbone is never updated


def test_gram_loss_mean_reduction_divides_each_layer_by_channels_squared():
    stub = StubBackbone()
    x, y = torch.rand(2, 3, 8, 8), torch.rand(2, 3, 8, 8)
    summed = GramLoss(stub).per_layer(x, y)
    meaned = GramLoss(stub, reduction="mean").per_layer(x, y)
    channels = {k: v.shape[1] for k, v in stub.features_at(x).items()}
    for k in summed:
        assert float(meaned[k]) == pytest.approx(float(summed[k]) / channels[k] ** 2, rel=1e-6)
    with pytest.raises(ValueError, match="reduction"):
        GramLoss(stub, reduction="max")


def test_gram_loss_with_offline_vgg16():
    backbone, info = backbones.load_backbone("vgg16_offline", EmbedConfig(), "cpu", log=lambda _: None)
    gram = GramLoss(backbone)
    assert gram.layers == backbones.VGG16_STYLE_LAYERS
    x, y = torch.rand(2, 3, 32, 32), torch.rand(2, 3, 32, 32).clamp(0.2, 0.6)
    assert float(gram(x, x)) == 0.0
    x.requires_grad_()
    loss = gram(x, y)
    assert torch.isfinite(loss) and float(loss.detach()) > 0
    loss.backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    assert all(p.grad is None and not p.requires_grad for p in backbone.parameters())


class DeepStubBackbone(nn.Module):
    """Two layers like the offline VGG16's on crops: "wide" has few channels for its positions (the Gram
    form), "deep" many channels on few positions (the trace form, ``uses_trace_form``)."""

    style_layers = ("wide", "deep")

    def __init__(self, dtype: torch.dtype = torch.float32):
        super().__init__()
        torch.manual_seed(1)
        self.conv1 = nn.Conv2d(3, 6, 3, padding=1)
        self.conv2 = nn.Conv2d(6, 40, 3, padding=1, stride=8)
        self.to(dtype)

    def features_at(self, x, layers=None):
        wide = torch.relu(self.conv1(x))
        out = {"wide": wide, "deep": torch.tanh(self.conv2(wide))}
        return {name: out[name] for name in (layers or self.style_layers)}


def _gram_form(stub, x, y, reduction):
    """Eq. 9 straight from its definition: the C x C Gram matrices and their difference."""
    fx, fy = stub.features_at(x), stub.features_at(y)
    reduce = (lambda d: d.sum(dim=(1, 2))) if reduction == "sum" else (lambda d: d.mean(dim=(1, 2)))
    return sum(reduce((gram_matrix(fx[k]) - gram_matrix(fy[k])) ** 2).mean() for k in stub.style_layers)


def test_trace_form_is_chosen_for_the_deep_vgg16_layers_on_training_crops():
    backbone, _ = backbones.load_backbone("vgg16_offline", EmbedConfig(), "cpu", log=lambda _: None)
    feats = backbone.features_at(torch.rand(1, 3, 48, 48))
    chosen = {k: uses_trace_form(f.shape[1], f.shape[2] * f.shape[3]) for k, f in feats.items()}
    assert chosen == {"relu1_2": False, "relu2_2": False, "relu3_3": False, "relu4_3": True, "relu5_3": True}
    stub_feats = DeepStubBackbone().features_at(torch.rand(1, 3, 16, 16))
    assert [uses_trace_form(f.shape[1], f.shape[2] * f.shape[3]) for f in stub_feats.values()] == [False, True]


def test_gram_layers_choose_the_terms_and_unknown_ones_are_refused_by_name():
    backbone, _ = backbones.load_backbone("vgg16_offline", EmbedConfig(), "cpu", log=lambda _: None)
    x, y = torch.rand(2, 3, 48, 48), torch.rand(2, 3, 48, 48)
    full = GramLoss(backbone, reduction="mean").per_layer(x, y)
    short = GramLoss(backbone, layers=("relu1_2", "relu2_2"), reduction="mean").per_layer(x, y)
    assert list(short) == ["relu1_2", "relu2_2"]
    assert all(torch.equal(short[k], full[k]) for k in short)       # the same terms, the deeper ones left out
    for bad in (("relu1_2", "relu9_9"), ()):
        with pytest.raises(ValueError, match="TrainConfig.gram_layers"):
            GramLoss(backbone, layers=bad)


def _float32_twin(stub64):
    stub32 = DeepStubBackbone()
    stub32.load_state_dict({k: v.float() for k, v in stub64.state_dict().items()})
    return stub32


@pytest.mark.parametrize("reduction", ["sum", "mean"])
def test_trace_form_gives_the_gram_forms_loss_and_gradient(reduction):
    """Against eq. 9 computed in float64 the Gram way; ``near``: a prediction within 1e-3 of the target,
    where float32 features alone carry about 1e-4 of the loss's size in rounding."""
    stub64 = DeepStubBackbone(torch.float64)
    stub32 = _float32_twin(stub64)
    gen = torch.Generator().manual_seed(5)
    y = torch.rand(3, 3, 16, 16, generator=gen, dtype=torch.float64)
    cases = {"apart": (torch.rand(3, 3, 16, 16, generator=gen, dtype=torch.float64), 1e-5),
             "near": (y + 1e-3 * torch.randn(3, 3, 16, 16, generator=gen, dtype=torch.float64), 1e-3)}
    for x0, rel in cases.values():
        x64, x32 = x0.clone().requires_grad_(), x0.float().requires_grad_()
        want, got = _gram_form(stub64, x64, y, reduction), GramLoss(stub32, reduction=reduction)(x32, y.float())
        assert got.dtype == torch.float32
        assert float(got.detach()) == pytest.approx(float(want.detach()), rel=rel)
        got.backward()
        want.backward()
        assert torch.allclose(x32.grad.double(), x64.grad, rtol=10 * rel, atol=10 * rel * float(x64.grad.abs().max()))
    assert float(GramLoss(stub32, reduction=reduction)(y.float(), y.float())) == 0.0


def test_trace_form_keeps_its_precision_when_prediction_and_target_nearly_agree():
    """The three terms of the trace form nearly cancel here; in float64 they keep the loss to 1e-2."""
    stub64 = DeepStubBackbone(torch.float64)
    gen = torch.Generator().manual_seed(6)
    y = torch.rand(2, 3, 16, 16, generator=gen, dtype=torch.float64)
    x = y + 1e-4 * torch.randn(2, 3, 16, 16, generator=gen, dtype=torch.float64)
    exact = GramLoss(stub64, layers=["deep"])(x, y)       # float64 throughout
    got = GramLoss(_float32_twin(stub64), layers=["deep"])(x.float(), y.float())
    assert float(exact) > 0 and float(got) == pytest.approx(float(exact), rel=1e-2)


def test_gradcheck_gram_trace_form():
    gram = GramLoss(DeepStubBackbone(torch.float64), layers=["deep"])
    pred = rand(2, 3, 8, 8, seed=14).requires_grad_()
    target = rand(2, 3, 8, 8, seed=15)
    assert gradcheck(lambda p: gram(p, target), (pred,), eps=1e-6, atol=1e-6, rtol=1e-3)


# --- backbone choice ---------------------------------------------------------------------------

@pytest.fixture()
def no_vgg19(monkeypatch):
    """``load_backbone`` without VGG19 weights (a stub for any other backbone); the names asked for, in order."""
    calls = []

    def fake_load(name, cfg, device="cpu", log=print):
        calls.append(name)
        if name == "vgg19":
            raise WeightsUnavailableError("VGG19 weights not found: no local file, no cache, downloads disabled")
        return StubBackbone(), "info"

    monkeypatch.setattr(backbones, "load_backbone", fake_load)
    return calls


def test_gram_loss_for_falls_back_loudly(no_vgg19):
    calls = no_vgg19
    lines = []
    cfg = profile_config("demo").replace(**{"embed.style_backbone": "vgg19"})  # the paper's, outside `full`
    gram = gram_loss_for(cfg, "cpu", log=lines.append)
    assert calls == ["vgg19", "vgg16_offline"]
    assert gram.backbone_name == "vgg16_offline" and gram.weights_info == "info"
    assert len(lines) == 1 and lines[0].startswith("WARNING") and "vgg16_offline" in lines[0] and "vgg19" in lines[0]
    assert "unavailable" in lines[0] and "downloads disabled" in lines[0]
    corrected = gram_loss_for(cfg, "cpu", log=lines.append, scale=None, reduction="mean")
    assert corrected.scale == INPUT_SCALE_CORRECTION["vgg16_offline"] == pytest.approx(57.63 ** -4)
    assert corrected.reduction == "mean"


def test_the_full_profile_refuses_the_stand_in_and_says_how_to_proceed(no_vgg19):
    calls = no_vgg19
    with pytest.raises(WeightsUnavailableError) as err:
        gram_loss_for(profile_config("full"), "cpu", log=lambda *_: None)
    assert calls == ["vgg19"]                         # no stand-in loaded
    msg = str(err.value)
    assert "downloads disabled" in msg and "EmbedConfig.vgg19_weights" in msg
    assert "isp-support prepare-weights --profile full" in msg and "embed.style_backbone=vgg16_offline" in msg
    calls.clear()                                     # the stand-in chosen explicitly: loaded as configured
    chosen = gram_loss_for(profile_config("full").replace(**{"embed.style_backbone": "vgg16_offline"}), "cpu",
                           log=lambda *_: None)
    assert calls == ["vgg16_offline"] and chosen.backbone_name == "vgg16_offline"


def test_gram_loss_for_uses_vgg19_when_available(monkeypatch):
    monkeypatch.setattr(backbones, "load_backbone", lambda name, cfg, device="cpu", log=print: (StubBackbone(), name))
    lines = []
    gram = gram_loss_for(profile_config("full"), "cpu", log=lines.append)
    assert gram.backbone_name == "vgg19" and len(lines) == 1 and "vgg19" in lines[0]
    lines.clear()
    gram = gram_loss_for(profile_config("demo"), "cpu", log=lines.append)  # configured offline: vgg19 not tried
    assert gram.weights_info == "vgg16_offline" and "as configured" in lines[0]
    with pytest.raises(ValueError):
        gram_loss_for(EmbedConfig(style_backbone="dinov2_vits14"), "cpu", log=lines.append)


def test_gram_loss_for_real_fallback_without_vgg19(monkeypatch, tmp_path):
    """The real loaders: no VGG19 anywhere and downloads off -> the offline VGG16, said so."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    monkeypatch.setattr(weights_files, "_download_vgg19", lambda *a, **k: pytest.fail("tried to download VGG19"))
    cfg = EmbedConfig(style_backbone="vgg19", allow_download=False)
    lines = []
    gram = gram_loss_for(cfg, "cpu", log=lines.append)
    assert gram.backbone_name == "vgg16_offline"
    assert any(line.startswith("WARNING") and "INSTEAD OF" in line for line in lines)
    with pytest.raises(WeightsUnavailableError, match="needs the paper's VGG19"):
        gram_loss_for(profile_config("full").replace(**{"embed.allow_download": False}), "cpu", log=lines.append)


# --- weighted sums -----------------------------------------------------------------------------

def test_stage1_loss_is_the_weighted_sum():
    gram = GramLoss(StubBackbone())
    y_hat = torch.rand(2, 3, 8, 8, requires_grad=True)
    y_star = torch.rand(2, 3, 8, 8)
    w = LossWeights()
    assert (w.mom, w.luma, w.chroma, w.gram, w.tv, w.pal) == (1.0, 1.0, 1.5, 1.0, 0.05, 0.0)
    total, terms = stage1_loss(y_hat, y_star, w, gram)
    assert set(terms) == {"mom", "luma", "chroma", "gram", "tv", "total"}
    expected = (moment_loss(y_hat, y_star) + luma_histogram_loss(y_hat, y_star)
                + 1.5 * chroma_histogram_loss(y_hat, y_star) + gram(y_hat, y_star) + 0.05 * tv_loss(y_hat))
    assert float(total.detach()) == pytest.approx(float(expected.detach()), rel=1e-6)
    assert float(terms["total"]) == pytest.approx(float(total.detach()))
    assert not any(t.requires_grad for t in terms.values())
    total.backward()
    assert y_hat.grad is not None and torch.isfinite(y_hat.grad).all()
    with pytest.raises(ValueError):
        stage1_loss(y_hat, y_star, w, None)
    _, terms = stage1_loss(y_hat, y_star, dataclasses.replace(w, gram=0.0, pal=0.5))
    assert "gram" not in terms and "pal" in terms


def test_losses_run_under_autocast_and_on_cuda_when_available():
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    for device in devices:
        y_hat = torch.rand(2, 3, 8, 8, device=device, requires_grad=True)
        y_star = torch.rand(2, 3, 8, 8, device=device)
        gram = GramLoss(StubBackbone()).to(device)
        dtype = torch.bfloat16 if device == "cpu" else torch.float16
        with torch.autocast(device_type=device, dtype=dtype):
            total, terms = stage1_loss(y_hat, y_star, LossWeights(pal=1.0), gram)
        assert torch.isfinite(total) and total.dtype == torch.float32
        total.backward()
        assert torch.isfinite(y_hat.grad).all()


# --- the target side kept (GramLoss.with_target_cache) -------------------------------------------

class CountingBackbone(StubBackbone):
    """StubBackbone that counts the images it has seen."""

    def __init__(self):
        super().__init__()
        self.seen = 0

    def features_at(self, x, layers=None):
        self.seen += len(x)
        return super().features_at(x, layers)


def test_cached_gram_targets_give_the_same_loss_and_gradient_as_computing_them_afresh():
    backbone = CountingBackbone()
    fresh = GramLoss(backbone, reduction="mean")
    cached = fresh.with_target_cache(1 << 20)
    gen = torch.Generator().manual_seed(3)
    y = torch.rand(4, 3, 16, 16, generator=gen)
    for _ in range(3):  # the same targets after every "epoch", new predictions each time
        x1 = torch.rand(4, 3, 16, 16, generator=gen, requires_grad=True)
        x2 = x1.detach().clone().requires_grad_(True)
        want, got = fresh(x1, y), cached(x2, y)
        assert torch.equal(want, got)
        want.backward()
        got.backward()
        assert torch.equal(x1.grad, x2.grad)
    assert (cached.target_cache.misses, cached.target_cache.hits) == (1, 2)
    # three fresh target passes, one cached target pass, six prediction passes: 10 batches of 4
    assert backbone.seen == 4 * (3 + 1 + 6)


def test_gram_target_cache_keys_on_the_exact_bytes():
    cached = GramLoss(StubBackbone(), reduction="mean").with_target_cache(1 << 20)
    y = torch.rand(2, 3, 16, 16)
    x = torch.rand(2, 3, 16, 16)
    first = cached(x, y)
    moved = y.clone()
    moved[0, 0, 0, 0] = torch.nextafter(moved[0, 0, 0, 0], torch.tensor(2.0))  # one ulp
    assert cached.target_cache.key(moved) != cached.target_cache.key(y)
    cached(x, moved)
    assert cached.target_cache.misses == 2 and cached.target_cache.hits == 0
    assert torch.equal(cached(x, y), first) and cached.target_cache.hits == 1


def test_gram_target_cache_stays_within_its_bytes():
    stub = StubBackbone()
    side = GramLoss(stub).target_side
    one = sum(t.numel() * t.element_size() for terms in side(torch.rand(1, 3, 16, 16)).values() for t in terms)
    cache = GramLoss(stub).with_target_cache(2 * one).target_cache
    ys = [torch.rand(1, 3, 16, 16) for _ in range(3)]
    for y in ys:
        cache.get(y, side)
    assert len(cache.entries) == 2 and cache.bytes == 2 * one
    assert cache.key(ys[2]) not in cache.entries  # kept until full, then not kept: no eviction
    cache.get(torch.rand(3, 3, 16, 16), side)  # three patches: larger than the cache
    assert len(cache.entries) == 2 and cache.bytes == 2 * one


def test_gram_target_cache_hits_on_cyclic_visits_larger_than_itself():
    """The held-out loss's pattern: the same batches in the same order each epoch, more than fit. Least
    recently used eviction would miss every lookup; keeping the first ones hits them every epoch."""
    stub = StubBackbone()
    side = GramLoss(stub).target_side
    one = sum(t.numel() * t.element_size() for terms in side(torch.rand(1, 3, 16, 16)).values() for t in terms)
    cache = GramLoss(stub).with_target_cache(3 * one).target_cache
    ys = [torch.rand(1, 3, 16, 16) for _ in range(4)]
    for _ in range(3):
        for y in ys:
            cache.get(y, side)
    assert cache.hits == 2 * 3 and cache.misses == 4 + 2 * 1
