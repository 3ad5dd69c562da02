"""Whole images through the colour network, in one pass or in overlapping tiles.

:func:`render`: one whole image in one pass, or tiled with overlap when it is too large
for memory. The tiles overlap by the network's context (:attr:`ColourNet.context`) and
keep only their inner part, so a tiled rendering equals the one-pass rendering: no seams.
``tile="auto"`` (:func:`network_tile`) takes cache-sized tiles on the CPU, where they are
faster than one pass (docs/measurements.md, "Evaluation"), and large ones on a GPU.
:func:`tiled` is the tiling itself, for any function with a bounded reach.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from .fused import fused
from ..train.models import AUTO_TILE

__all__ = ["AUTO_TILE", "network_tile", "render", "tiled"]


def tiled(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, tile: int | None, context: int,
          scale: int = 1) -> torch.Tensor:
    """Apply ``fn`` to ``(B, C, H, W)`` in overlapping tiles and assemble the result.

    ``fn`` maps ``(B, C, h, w)`` to ``(B, C', scale h, scale w)`` and its output pixel depends on
    at most ``context`` input pixels on each side. Each tile is cut with ``context`` extra input
    pixels on every inner side and only its inner part is kept, so the result equals ``fn(x)``
    whenever ``context`` covers ``fn``'s reach (image borders are the image's own borders in
    both). ``tile=None`` or a tile at least the image's size: one pass.
    """
    h, w = x.shape[-2:]
    if tile is None or (tile >= h and tile >= w):
        return fn(x)
    if tile < 1:
        raise ValueError(f"tile must be a positive number of pixels, got {tile}")
    out: torch.Tensor | None = None
    for y0 in range(0, h, tile):
        for x0 in range(0, w, tile):
            y1, x1 = min(y0 + tile, h), min(x0 + tile, w)
            ty0, tx0 = max(y0 - context, 0), max(x0 - context, 0)
            piece = fn(x[..., ty0:min(y1 + context, h), tx0:min(x1 + context, w)])
            if out is None:
                out = piece.new_empty(*piece.shape[:2], h * scale, w * scale)
            oy, ox = (y0 - ty0) * scale, (x0 - tx0) * scale
            out[..., y0 * scale:y1 * scale, x0 * scale:x1 * scale] = \
                piece[..., oy:oy + (y1 - y0) * scale, ox:ox + (x1 - x0) * scale]
    return out


def network_tile(tile: int | str | None, device: str | torch.device) -> int | None:
    """The tile side :func:`render` uses: ``"auto"`` is :data:`AUTO_TILE` of the device type; an
    int or ``None`` (one pass) is kept."""
    if tile == "auto":
        return AUTO_TILE.get(torch.device(device).type, AUTO_TILE["cuda"])
    if tile is not None and not isinstance(tile, int):
        raise ValueError(f"tile must be 'auto', a number of pixels or None, got {tile!r}")
    return tile


def render(model: torch.nn.Module, image: torch.Tensor, device: str | torch.device = "cpu",
           tile: int | str | None = None, fast: bool = True) -> torch.Tensor:
    """A whole image ``(3, H, W)`` or batch ``(B, 3, H, W)`` through the network: one pass, or tiles of
    ``tile`` pixels overlapping by the network's context (the same result, bounded memory);
    ``"auto"``: see :func:`network_tile`. ``fast`` (default) runs a ``ColourNet`` as
    :class:`~isp_support.evaluate.fused.FusedColourNet` (equal to float32 rounding); ``fast=False``
    runs the module itself (the reference path)."""
    tile = network_tile(tile, device)
    single = image.ndim == 3
    x = image.unsqueeze(0) if single else image
    model = model.eval().to(device)
    if fast:
        model = fused(model)
    context = int(getattr(model, "context", 0))
    with torch.inference_mode():
        out = tiled(lambda t: model(t.to(device, torch.float32)).float().cpu(), x, tile, context)
    return out[0] if single else out
