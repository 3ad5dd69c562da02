"""The colour network's fast inference path: the same function as :class:`~isp_support.train.models.ColourNet`,
computed in fewer, larger matrix products.

:class:`FusedColourNet` is built from a trained ``ColourNet`` and gives its output to float32
rounding (within ``1e-6`` on images in [0, 1]; ``tests/test_fused.py`` holds it to ``1e-5``, the
bound the challenge's 8-bit export cannot see). Three changes, each exact in real arithmetic:

* **The 1x1 colour head is folded into the second convolution.** ``head(x + conv2(h))`` is
  ``A x + (A W2) * h + (A b2 + c)`` for the head's matrix ``A`` and bias ``c``, so the head costs
  nothing. A LUT head (``head="lut"``) is not linear and is applied after the sum, unchanged.
* **The second convolution (hidden -> 3, 3x3) is one matrix product and nine shifted adds.** Its
  27 outputs per pixel, ``(dy, dx, channel)``, are ``W h`` with ``W`` of shape ``(27, hidden)``;
  the output pixel sums the nine taps from its neighbours. Reflect padding commutes with a
  per-pixel linear map, so padding the 27 planes equals padding the ``hidden`` planes first.
  On the CPU this product runs several times faster than the direct 128 -> 3 convolution.
* **The first convolution runs in channels-last memory**, where oneDNN's 3 -> 128 kernel is
  fastest and whose layout the matrix product then reads without a copy.

:func:`fused` returns the fast network for a ``ColourNet`` and any other module unchanged;
:func:`~isp_support.evaluate.inference.predict` and :func:`~isp_support.evaluate.tiles.render`
use it unless ``fast=False`` (the reference path). Inference only: the weights are copied into
buffers (a LUT head is kept as the network's own module) and no gradient is computed.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..train.models import ColourNet

__all__ = ["FusedColourNet", "fused"]

TAPS = tuple((dy, dx) for dy in range(3) for dx in range(3))
"""The second convolution's taps in the row order of :attr:`FusedColourNet.w2`."""


class FusedColourNet(nn.Module):
    """``net``'s function (a :class:`ColourNet` in eval mode) in the fused form of the module docstring.

    The weights are copied at construction: build it again after ``net`` changes.
    """

    def __init__(self, net: ColourNet):
        super().__init__()
        if not isinstance(net, ColourNet):
            raise TypeError(f"FusedColourNet needs a ColourNet, got {type(net).__name__}")
        self.context = net.context
        self.clamp = net.clamp
        with torch.no_grad():
            w2, b2 = net.conv2.weight.detach().float(), net.conv2.bias.detach().float()
            if net.head_type == "1x1":
                mix = net.head.weight.detach().float()[:, :, 0, 0]
                w2 = torch.einsum("oc,cikl->oikl", mix, w2)
                b2 = mix @ b2 + net.head.bias.detach().float()
                self.lut = None
            else:
                mix = None
                self.lut = net.head
            hidden = w2.shape[1]
            self.register_buffer("w1", net.conv1.weight.detach().float().contiguous(memory_format=torch.channels_last))
            self.register_buffer("b1", net.conv1.bias.detach().float().clone())
            # rows (dy, dx, out channel), as TAPS
            self.register_buffer("w2", w2.permute(2, 3, 0, 1).reshape(len(TAPS) * 3, hidden).contiguous())
            self.register_buffer("b2", b2.view(1, 3, 1, 1).clone())
            self.register_buffer("mix", mix)

    @torch.inference_mode()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f"expected (B, 3, H, W), got {tuple(x.shape)}")
        b, _, h, w = x.shape
        x = x.float()
        padded = F.pad(x, (1, 1, 1, 1), mode="reflect").contiguous(memory_format=torch.channels_last)
        hidden = F.conv2d(padded, self.w1, self.b1).relu_()  # (B, hidden, H, W), channels-last
        per_pixel = hidden.permute(0, 2, 3, 1).reshape(b, h * w, -1)  # a view when channels-last
        taps = torch.matmul(self.w2, per_pixel.transpose(1, 2)).view(b, len(TAPS) * 3, h, w)
        taps = F.pad(taps, (1, 1, 1, 1), mode="reflect")
        out = (x if self.mix is None else torch.einsum("oc,bchw->bohw", self.mix, x)) + self.b2
        for k, (dy, dx) in enumerate(TAPS):
            out += taps[:, 3 * k:3 * k + 3, dy:dy + h, dx:dx + w]
        if self.lut is not None:
            out = self.lut(out)
        return out if self.clamp == "none" else out.clamp_(0.0, 1.0)


def fused(model: nn.Module) -> nn.Module:
    """The fast inference form of ``model``: a :class:`FusedColourNet` for a ``ColourNet``, else ``model``."""
    return FusedColourNet(model.eval()) if isinstance(model, ColourNet) else model
