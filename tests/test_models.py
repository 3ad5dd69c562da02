"""Colour network, 3D LUT, U-Net discriminator and expert committee, and the discriminators' one interface."""

import itertools

import pytest
import torch
from torch.nn.utils import parametrize

from isp_support.train import discriminators, models
from isp_support.train.losses import hinge_d_loss, hinge_g_loss
from isp_support.train.discriminators import Discriminator, ExpertCommittee, UNetDiscriminator
from isp_support.train.models import LUT3D, ColourNet, clamp01, count_parameters

CONV_PART = 3 * 128 * 9 + 128 + 128 * 3 * 9 + 3  # 7,043


def reference_trilinear(lut: torch.Tensor, rgb: torch.Tensor) -> torch.Tensor:
    """Explicit per-point trilinear interpolation; ``lut[c, b, g, r]``, ``rgb`` (N, 3) in [0, 1] -> (N, 3)."""
    size = lut.shape[-1]
    out = []
    for r, g, b in rgb.tolist():
        idx, frac = [], []
        for v in (r, g, b):
            pos = v * (size - 1)
            i0 = min(int(pos // 1), size - 2)
            idx.append(i0)
            frac.append(pos - i0)
        value = torch.zeros(3, dtype=lut.dtype)
        for dr, dg, db in itertools.product((0, 1), repeat=3):
            weight = ((frac[0] if dr else 1 - frac[0]) * (frac[1] if dg else 1 - frac[1])
                      * (frac[2] if db else 1 - frac[2]))
            value += weight * lut[:, idx[2] + db, idx[1] + dg, idx[0] + dr]
        out.append(value)
    return torch.stack(out)


def test_count_parameters_and_paper_size():
    torch.manual_seed(0)
    net = ColourNet()
    assert count_parameters(net) == 7_055 == CONV_PART + 9 + 3
    net.head.weight.requires_grad_(False)
    assert count_parameters(net, trainable_only=True) == 7_055 - 9
    assert count_parameters(ColourNet(hidden=16)) == 3 * 16 * 9 + 16 + 16 * 3 * 9 + 3 + 12


@pytest.mark.parametrize("clamp", ["ste", "hard", "none"])
def test_untrained_colournet_is_identity(clamp):
    torch.manual_seed(1)
    net = ColourNet(clamp=clamp)
    x = torch.rand(2, 3, 17, 23)
    x[0, :, 0, 0] = torch.tensor([0.0, 1.0, 0.5])
    with torch.no_grad():
        assert torch.equal(net.residual(x), torch.zeros_like(x))
        torch.testing.assert_close(net(x), x, atol=1e-7, rtol=0)


def test_lut_head_variant_size_and_identity():
    torch.manual_seed(2)
    net = ColourNet(head="lut", lut_size=33)
    assert count_parameters(net) == 3 * 33**3 + CONV_PART
    assert count_parameters(ColourNet(head="lut", lut_size=9, hidden=8)) == 3 * 9**3 + 3 * 8 * 9 + 8 + 8 * 3 * 9 + 3
    x = torch.rand(2, 3, 16, 12)
    with torch.no_grad():
        torch.testing.assert_close(net(x), x, atol=1e-6, rtol=0)


def test_clamp_modes_values_and_gradients():
    x = torch.tensor([-0.5, 0.0, 0.3, 1.0, 1.7], requires_grad=True)
    expected = torch.tensor([0.0, 0.0, 0.3, 1.0, 1.0])
    (torch_grad,) = torch.autograd.grad(x.clamp(0, 1).sum(), x)
    grads = {}
    for mode in ("hard", "ste"):
        y = clamp01(x, mode)
        assert torch.equal(y, expected)  # bit-identical forward values
        (grads[mode],) = torch.autograd.grad(y.sum(), x)
    assert grads["ste"].tolist() == [1.0] * 5  # straight through everywhere
    assert torch.equal(grads["hard"], torch_grad)  # the authors' plain clamp
    assert grads["hard"][[0, 2, 4]].tolist() == [0.0, 1.0, 0.0]  # (at exactly 0 and 1: 0 in torch 2.14)
    with pytest.raises(ValueError):
        clamp01(x, "soft")
    with pytest.raises(ValueError):
        ColourNet(clamp="soft")
    with pytest.raises(ValueError):
        ColourNet(head="mlp")


def test_colournet_trains_away_from_identity():
    torch.manual_seed(3)
    net = ColourNet(hidden=8)
    x = torch.rand(1, 3, 8, 8)
    opt = torch.optim.SGD(net.parameters(), lr=0.5)
    for _ in range(3):
        opt.zero_grad()
        loss = (net(x) - 0.8 * x).square().mean()
        loss.backward()
        opt.step()
    assert net.conv1.weight.grad.abs().sum() > 0 and net.conv2.weight.grad.abs().sum() > 0
    assert not torch.allclose(net(x), x)


def test_lut_matches_reference_on_random_points():
    torch.manual_seed(4)
    lut = LUT3D(size=5).double()
    with torch.no_grad():
        lut.lut.copy_(torch.rand_like(lut.lut))
    pts = torch.rand(200, 3, dtype=torch.float64)
    pts[:8] = torch.tensor(list(itertools.product((0.0, 1.0), repeat=3)), dtype=torch.float64)  # cube corners
    pts[8] = torch.tensor([0.25, 0.5, 0.75], dtype=torch.float64)  # on grid points
    x = pts.T.reshape(1, 3, 20, 10)  # arbitrary (H, W) layout of the points
    out = lut(x).reshape(3, -1).T
    torch.testing.assert_close(out, reference_trilinear(lut.lut.detach(), pts), atol=1e-10, rtol=0)
    # batch layout: two images give the same as each alone
    x2 = torch.rand(2, 3, 4, 6, dtype=torch.float64)
    torch.testing.assert_close(lut(x2), torch.cat([lut(x2[:1]), lut(x2[1:])]))
    # corners of the cube read the corner entries exactly
    assert torch.allclose(lut(torch.ones(1, 3, 1, 1, dtype=torch.float64)).flatten(), lut.lut[:, -1, -1, -1])


def test_identity_lut_returns_input_and_is_regular():
    lut = LUT3D(33)
    assert lut.lut.shape == (3, 33, 33, 33)
    x = torch.rand(3, 3, 9, 11)
    torch.testing.assert_close(lut(x), x, atol=1e-6, rtol=0)
    assert lut.smoothness().item() == pytest.approx(0, abs=1e-12)
    assert lut.monotonicity().item() == 0
    with torch.no_grad():
        lut.lut[0, :, :, 5] = 0.9  # red channel dips after r index 5
    assert lut.monotonicity().item() > 0 and lut.smoothness().item() > 0


def test_lut_gradients_reach_table_and_input():
    torch.manual_seed(5)
    lut = LUT3D(9).double()
    with torch.no_grad():
        lut.lut.add_(0.05 * torch.randn_like(lut.lut))
    x = (torch.rand(1, 3, 3, 4, dtype=torch.float64) * 0.9 + 0.05).requires_grad_(True)
    lut(x).square().sum().backward()
    assert lut.lut.grad is not None and lut.lut.grad.abs().sum() > 0
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert torch.autograd.gradcheck(lambda t: lut(t), (x.detach().requires_grad_(True),), eps=1e-6, atol=1e-5)
    # the identity LUT's Jacobian wrt its input is the identity (away from cell boundaries)
    ident = LUT3D(5).double()
    xi = torch.tensor([0.1, 0.4, 0.6], dtype=torch.float64).view(1, 3, 1, 1).requires_grad_(True)
    jac = torch.autograd.functional.jacobian(lambda t: ident(t).flatten(), xi).reshape(3, 3)
    torch.testing.assert_close(jac, torch.eye(3, dtype=torch.float64))


@pytest.mark.parametrize("size", [(32, 32), (40, 48), (33, 37)])
def test_unet_discriminator_shapes(size):
    torch.manual_seed(6)
    disc = UNetDiscriminator(features=8)
    x = torch.rand(2, 3, *size)
    assert disc(x).shape == (2, 1, *size)


def test_unet_discriminator_spectral_norm_and_gradients():
    torch.manual_seed(7)
    disc = UNetDiscriminator()  # paper size, 64 features
    convs = [m for m in disc.modules() if isinstance(m, torch.nn.Conv2d)]
    assert [c.in_channels for c in disc.down] == [64, 128, 256]
    assert [c.out_channels for c in disc.down] == [128, 256, 512]
    assert all(c.stride == (2, 2) and c.kernel_size == (4, 4) for c in disc.down)
    normed = [c for c in convs if parametrize.is_parametrized(c, "weight")]
    assert len(normed) == len(convs) - 2  # all but the first and last, as in Real-ESRGAN
    assert all(isinstance(c.parametrizations.weight[0], torch.nn.Module) for c in normed)
    full = UNetDiscriminator(features=8, sn_first_last=True)
    assert all(parametrize.is_parametrized(m, "weight") for m in full.modules() if isinstance(m, torch.nn.Conv2d))
    x = torch.rand(1, 3, 32, 32, requires_grad=True)
    out = disc(x)
    out.mean().backward()
    assert x.grad.abs().sum() > 0
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in disc.parameters())
    # after power iterations the largest singular value of each normalised weight is about 1
    disc.train()
    for _ in range(30):
        disc(torch.rand(1, 3, 16, 16))
    disc.eval()
    w = disc.down[1].weight.detach().flatten(1)
    assert torch.linalg.matrix_norm(w, ord=2).item() == pytest.approx(1.0, rel=0.05)


def test_the_float32_spectral_norm_keeps_torchs_state_dict_and_values():
    """Checkpoints of discriminators built with torch's own ``spectral_norm`` load, and compute the same."""
    torch.manual_seed(13)
    theirs = torch.nn.utils.parametrizations.spectral_norm(torch.nn.Conv2d(4, 8, 3))
    ours = discriminators.spectral_norm(torch.nn.Conv2d(4, 8, 3))
    assert ours.state_dict().keys() == theirs.state_dict().keys()
    ours.load_state_dict(theirs.state_dict())
    x = torch.rand(1, 4, 8, 8)
    assert torch.equal(ours(x), theirs(x))                 # training mode: one power iteration each
    assert all(torch.equal(a, b) for a, b in zip(ours.state_dict().values(), theirs.state_dict().values()))


def test_expert_committee_outputs_and_weighted_losses():
    torch.manual_seed(8)
    weights = {"colour": 2.0, "structure": 0.5, "frequency": 0.25}
    committee = ExpertCommittee(weights=weights, features=8, patch=16)
    real, fake = torch.rand(2, 3, 40, 48), torch.rand(2, 3, 40, 48).requires_grad_(True)
    logits = committee(real)
    assert set(logits) == {"colour", "structure", "frequency"}
    assert logits["colour"].shape == (2, 1, 10, 12)
    assert logits["structure"].shape == (2, 1, 10, 12)
    assert logits["frequency"].shape == (2, 1, 2, 3)
    assert all(torch.isfinite(v).all() for v in logits.values())
    for expert in committee.experts.values():
        assert any(parametrize.is_parametrized(m, "weight") for m in expert.modules())

    fake_logits = committee(fake)
    total, parts = committee.d_loss(logits, {k: v.detach() for k, v in fake_logits.items()})
    expected = sum(weights[k] * hinge_d_loss(logits[k], fake_logits[k]) for k in weights)
    torch.testing.assert_close(total, expected)
    torch.testing.assert_close(parts["colour"], hinge_d_loss(logits["colour"], fake_logits["colour"]))
    g_total, g_parts = committee.g_loss(fake_logits)
    torch.testing.assert_close(g_total, sum(-weights[k] * fake_logits[k].mean() for k in weights))
    assert set(g_parts) == set(weights)
    # weights can be overridden per call, and the images path gives the same as precomputed logits
    committee.eval()
    only_colour, _ = committee.g_loss(fake, weights={"colour": 1.0, "structure": 0.0, "frequency": 0.0})
    torch.testing.assert_close(only_colour, hinge_g_loss(committee(fake)["colour"]))
    only_colour.backward()
    assert fake.grad is not None and torch.isfinite(fake.grad).all() and fake.grad.abs().sum() > 0
    with pytest.raises(ValueError):
        ExpertCommittee(weights={"texture": 1.0})


def test_both_discriminators_answer_d_loss_and_g_loss_with_the_hinge_losses_of_their_logits():
    torch.manual_seed(10)
    real, fake = torch.rand(2, 3, 32, 32), torch.rand(2, 3, 32, 32)
    for disc in (UNetDiscriminator(features=8), ExpertCommittee(features=8, patch=16)):
        assert isinstance(disc, Discriminator)
        disc.eval()  # no power iteration: the same logits on every call
        d_total, d_parts = disc.d_loss(real, fake)
        g_total, g_parts = disc.g_loss(fake)
        r, f = disc(real), disc(fake)
        if isinstance(disc, UNetDiscriminator):
            assert torch.equal(d_total, hinge_d_loss(r, f)) and torch.equal(g_total, hinge_g_loss(f))
            assert d_parts == g_parts == {}
        else:
            assert torch.equal(d_total, disc.combine({k: hinge_d_loss(r[k], f[k]) for k in disc.NAMES}))
            assert torch.equal(g_total, disc.combine({k: hinge_g_loss(f[k]) for k in disc.NAMES}))
            assert set(d_parts) == set(g_parts) == set(disc.NAMES)


def test_expert_views():
    torch.manual_seed(9)
    committee = ExpertCommittee(features=8, patch=16)
    flat = torch.full((1, 3, 32, 32), 0.4)
    colour_view = committee.experts["colour"].view(flat)
    assert colour_view.shape == (1, 3, 8, 8)
    torch.testing.assert_close(colour_view[:, 1:], torch.zeros(1, 2, 8, 8), atol=1e-6, rtol=0)  # grey: no chroma
    structure_view = committee.experts["structure"].view(flat)
    assert structure_view.shape == (1, 4, 32, 32)
    assert structure_view[:, :3].abs().max() < 1e-6  # no high-pass content in a flat image
    spec, grid = committee.experts["frequency"].view(flat)
    assert grid == (2, 2) and spec.shape == (4, 1, 16, 9)
    assert spec.abs().max() < 1e-4  # mean removed: flat patches have an empty spectrum
    # small images still work (patch shrinks to the image, kernels to the size)
    out = committee(torch.rand(1, 3, 12, 10))
    assert out["frequency"].shape == (1, 1, 1, 1) and all(torch.isfinite(v).all() for v in out.values())


def test_everything_is_deterministic_under_seed():
    def build_and_run():
        torch.manual_seed(123)
        nets = [ColourNet(hidden=16), ColourNet(hidden=8, head="lut", lut_size=5), UNetDiscriminator(features=8),
                ExpertCommittee(features=8, patch=16)]
        x = torch.rand(1, 3, 32, 32)
        outs = []
        for net in nets:
            with torch.no_grad():
                for p in net.parameters():  # move the generators away from identity
                    p.add_(0.01 * torch.randn_like(p))
            y = net(x)
            outs.extend(y.values() if isinstance(y, dict) else [y])
        states = [t for net in nets for t in net.state_dict().values()]
        return outs, states

    (o1, s1), (o2, s2) = build_and_run(), build_and_run()
    assert all(torch.equal(a, b) for a, b in zip(o1, o2))
    assert all(torch.equal(a, b) for a, b in zip(s1, s2))


def test_public_api():
    for module in (models, discriminators):
        for name in module.__all__:
            assert hasattr(module, name)
