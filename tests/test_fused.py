"""The fast inference path (evaluate.fused) against the network itself: same output to 1e-5."""

import pytest
import torch

from isp_support.evaluate import inference, tiles
from isp_support.evaluate.fused import FusedColourNet, fused
from isp_support.train.models import ColourNet


def trained_like(head: str = "1x1", clamp: str = "ste", seed: int = 0) -> ColourNet:
    """A ColourNet with every weight moved off its identity initialisation, as after training."""
    torch.manual_seed(seed)
    net = ColourNet(head=head, clamp=clamp)
    with torch.no_grad():
        net.conv1.weight.mul_(3)
        net.conv2.weight.normal_(0, 0.02)
        net.conv2.bias.normal_(0, 0.02)
        if head == "1x1":
            net.head.weight.add_(0.1 * torch.randn_like(net.head.weight))
            net.head.bias.normal_(0, 0.03)
        else:
            net.head.lut.add_(0.05 * torch.randn_like(net.head.lut))
    return net.eval()


@pytest.mark.parametrize("head", ["1x1", "lut"])
@pytest.mark.parametrize("clamp", ["ste", "hard", "none"])
@pytest.mark.parametrize("shape", [(1, 3, 37, 53), (4, 3, 48, 48), (2, 3, 2, 9)])
def test_fused_equals_the_network(head, clamp, shape):
    net = trained_like(head, clamp)
    x = torch.rand(*shape, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        want = net(x)
    got = FusedColourNet(net)(x)
    assert got.shape == want.shape
    assert (got - want).abs().max().item() <= 1e-5
    if clamp != "none":  # the outputs move: the test would see a wrong fold
        assert (want - x).abs().max().item() > 1e-2


def test_fused_sees_a_changed_head():
    """The fold really uses the head: another head's fused network differs from this one."""
    net = trained_like()
    other = trained_like(seed=1)
    x = torch.rand(1, 3, 20, 20)
    assert (FusedColourNet(other)(x) - net(x).detach()).abs().max().item() > 1e-3


def test_untrained_fused_network_is_the_identity():
    x = torch.rand(2, 3, 16, 24)
    assert torch.equal(FusedColourNet(ColourNet().eval())(x), x)


def test_fused_passes_other_modules_through_and_refuses_them_directly():
    conv = torch.nn.Conv2d(3, 3, 1)
    assert fused(conv) is conv
    with pytest.raises(TypeError, match="ColourNet"):
        FusedColourNet(conv)
    with pytest.raises(ValueError, match="expected"):
        FusedColourNet(ColourNet().eval())(torch.rand(3, 8, 8))


@pytest.mark.parametrize("tile", [None, 32, "auto"])
def test_render_fast_equals_render_plain(tile):
    net = trained_like()
    image = torch.rand(3, 150, 97)
    plain = tiles.render(net, image, tile=tile, fast=False)
    fast = tiles.render(net, image, tile=tile, fast=True)
    assert (fast - plain).abs().max().item() <= 1e-5


def test_predict_fast_equals_predict_plain():
    net = trained_like(head="lut")
    x = torch.rand(70, 3, 24, 24)
    plain = inference.predict(net, x, fast=False)
    fast = inference.predict(net, x)
    assert fast.shape == plain.shape == x.shape
    assert (fast - plain).abs().max().item() <= 1e-5
