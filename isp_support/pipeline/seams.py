"""Seam-consistency scores of a scene's candidate patch layouts (supplementary section A).

A challenge scene is a row-major list of ``N`` patches ``<scene>_<idx>`` whose
grid (``R`` rows by ``C`` columns, ``R * C = N``) is not given. Each layout is
scored by how well the patches it makes neighbours agree along their seams;
:mod:`isp_support.pipeline.grid` picks the lowest score.

Score maps
----------
Seams are compared on one scalar map ``M`` per patch:

* RAW patches ``(H, W, 4)`` packed R, Gr, Gb, B: ``M = (Gr + Gb) / 2``
  (:func:`score_maps_raw`);
* RGB/JPEG patches ``(H, W, 3)``: ``M = (R + G + B) / 3`` (:func:`score_maps_rgb`).

Seam-consistency score
----------------------
With border width ``b`` and ``M_{r,c}`` the map of patch ``k = r * C + c``::

    e_hor(r, c) = mean |M_{r,c}[:, W-b:] - M_{r,c+1}[:, :b]|     (last b columns vs first b columns)
    e_ver(r, c) = mean |M_{r,c}[H-b:, :] - M_{r+1,c}[:b, :]|     (last b rows vs first b rows)
    S(R, C)     = (sum of all e_hor + sum of all e_ver) / (R (C - 1) + (R - 1) C)

Every seam counts once, whatever its length. This is ``score="paper"``.

The normalised score (the default)
----------------------------------
The paper's score has a bias: a strip ``(1, N)`` keeps every true horizontal
seam, adds only ``R - 1`` wrong "wrap" seams (the end of one row against the
start of the next) and drops every true vertical seam. Where a scene's
vertical seams are naturally rougher than its horizontal ones (most photos
have more vertical than horizontal structure, or the other way round), the
strip wins. ``score="normalised"`` divides the seams' differences by what a
seam *should* cost there: the difference at the same offset ``b`` and in the
same direction inside the two patches beside it, e.g. for a horizontal seam::

    d_hor(r, c) = (mean |A[:, W-2b:W-b] - A[:, W-b:]| + mean |B[:, :b] - B[:, b:2b]|) / 2

and the same ``d_ver`` across rows. The division is pooled over each
direction of a layout, a ratio of means rather than a mean of ratios::

    R_hor   = mean e_hor / (mean d_hor + 1e-9)     (means over the layout's n_hor = R (C - 1) seams)
    R_ver   = mean e_ver / (mean d_ver + 1e-9)     (over its n_ver = (R - 1) C seams)
    S(R, C) = (n_hor R_hor + n_ver R_ver) / (n_hor + n_ver)

(a direction without seams adds nothing), so a true seam costs about 1 in
either direction and any texture, and a wrong one more. Pooling is what keeps
the score finite on flat content: a seam through a flat stretch (sky, a blown
highlight) has a ``d`` of 0 while each patch's own JPEG compression still
leaves a small step across it, and dividing seam by seam made that one seam
cost about ``1e8`` and sank every layout that held it (the demo's 7 x 6
target scene ``tgt004c1`` was read as a confident 1 x 42 strip, which has no
vertical seams). Pooled, such a seam weighs what its texture does: the ratio
of means is the mean of the seam ratios ``e / d`` weighted by ``d``.

The default is ``normalised`` with ``b = 1`` (which compares adjacent pixels,
where natural images are smoothest), chosen by its accuracy on the builder's
known grids (docs/measurements.md, "Stitching"); the paper's setting is
``StitchConfig(score="paper", border=4)``.

Horizontal neighbours are always the pairs ``(k, k + 1)``, so their errors are
computed once per scene and each layout sums the ones that do not wrap around a
row end; vertical neighbours are ``(k, k + C)``, one shifted difference per
column count. Only the ``b``-wide bands along the patch borders are read, and
they are compared in float64.
:func:`~isp_support.pipeline.grid.recover_grids` stacks scenes with identical
patch sizes and scores them together, on the device their maps are on.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Union

import numpy as np
import torch

from ..config_rules import SEAM_SCORES as SCORES
from ..data import RAW_EXT, Scene
from ..io import read_raw, read_rgb
from .errors import StitchError

Layout = tuple[int, int]
"""``(rows, cols)``."""
ArrayLike = Union[np.ndarray, torch.Tensor]
Maps = Union[ArrayLike, Sequence[ArrayLike]]
"""Score maps of one scene: a stack ``(N, H, W)``, or a sequence of ``(H_k, W_k)`` maps."""

_EPS = 1e-9


def check_score(score: str) -> str:
    """``score`` if it names a seam score (:data:`SCORES`), else :class:`StitchError`."""
    if score not in SCORES:
        raise StitchError(f"unknown seam score {score!r}; expected one of {', '.join(SCORES)}")
    return score


def scene_label(scene: str | None) -> str:
    """How error messages name a scene (``scene 'x'``, or just ``scene`` without a name)."""
    return f"scene {scene!r}" if scene is not None else "scene"


# --- score maps ----------------------------------------------------------------------

def score_maps_raw(patches: ArrayLike | Sequence[ArrayLike]) -> torch.Tensor | list[torch.Tensor]:
    """``M = (Gr + Gb) / 2`` of packed RAW patches: a stack ``(N, H, W, 4)`` or a sequence of ``(H, W, 4)``.

    Returns a ``(N, H, W)`` tensor, or a list of ``(H_k, W_k)`` tensors when a
    sequence holds patches of unequal size. Float64 input stays float64, any
    other becomes float32; tensors stay on their device.
    """
    return _score_maps(patches, 4, lambda x: (x[..., 1] + x[..., 2]) / 2)


def score_maps_rgb(patches: ArrayLike | Sequence[ArrayLike]) -> torch.Tensor | list[torch.Tensor]:
    """``M = (R + G + B) / 3`` of RGB patches: a stack ``(N, H, W, 3)`` or a sequence of ``(H, W, 3)``.

    Same return convention as :func:`score_maps_raw`.
    """
    return _score_maps(patches, 3, lambda x: x.sum(-1) / 3)


def _score_maps(patches: ArrayLike | Sequence[ArrayLike], channels: int,
                reduce: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor | list[torch.Tensor]:
    """Apply ``reduce`` to the patches as float; a sequence of equal-size patches gives a stack."""
    if isinstance(patches, (np.ndarray, torch.Tensor)):
        if patches.ndim != 4 or patches.shape[-1] != channels:
            raise StitchError(f"patch stack of shape {tuple(patches.shape)}, expected (N, H, W, {channels})")
        return reduce(_as_float_tensor(patches))
    maps = []
    for k, patch in enumerate(patches):
        if patch.ndim != 3 or patch.shape[-1] != channels:
            raise StitchError(f"patch {k} has shape {tuple(patch.shape)}, expected (H, W, {channels})")
        maps.append(reduce(_as_float_tensor(patch)))
    if not maps:
        raise StitchError("no patches to make score maps from")
    return torch.stack(maps) if len({m.shape for m in maps}) == 1 else maps


def _as_float_tensor(x: ArrayLike) -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        return x if x.dtype == torch.float64 else x.to(torch.float32)
    x = np.asarray(x)
    return torch.from_numpy(np.array(x, dtype=np.float64 if x.dtype == np.float64 else np.float32))


def load_score_maps(scene: Scene) -> torch.Tensor | list[torch.Tensor]:
    """Score maps of a data-layer :class:`~isp_support.data.Scene`.

    ``.npy`` patches are read with :func:`~isp_support.io.read_raw` (RAW
    maps), anything else with :func:`~isp_support.io.read_rgb` (RGB maps).
    """
    if not scene.patches:
        raise StitchError(f"scene {scene.name!r} has no patches")
    if scene.patches[0].path.suffix.lower() == RAW_EXT:
        return score_maps_raw([read_raw(p.path) for p in scene.patches])
    return score_maps_rgb([read_rgb(p.path) for p in scene.patches])


# --- scoring -------------------------------------------------------------------------

@dataclass(frozen=True)
class Bands:
    """The border bands of one scene's maps, float64, zero-padded to the largest patch."""

    right: torch.Tensor
    """``(N, H_max, b)``: last ``b`` columns of each map."""
    left: torch.Tensor
    """``(N, H_max, b)``: first ``b`` columns."""
    bottom: torch.Tensor
    """``(N, b, W_max)``: last ``b`` rows."""
    top: torch.Tensor
    """``(N, b, W_max)``: first ``b`` rows."""
    sizes: tuple[tuple[int, int], ...]
    """``(h, w)`` of each map."""
    inner: tuple[torch.Tensor, ...] | None = None
    """Same four bands shifted ``b`` pixels inwards (``normalised`` score only), else ``None``."""


def extract_bands(maps: Maps, border: int, scene: str | None, method: str = "normalised") -> Bands:
    """The border bands of one scene's maps; :class:`StitchError` for a bad border, map shape or patch size."""
    if isinstance(border, bool) or not isinstance(border, (int, np.integer)) or border < 1:
        raise StitchError(f"{scene_label(scene)}: border must be a positive integer, got {border!r}")
    b = int(border)
    if isinstance(maps, (np.ndarray, torch.Tensor)):
        stack = _as_float_tensor(maps)
        if stack.ndim != 3:
            raise StitchError(f"{scene_label(scene)}: score maps of shape {tuple(stack.shape)}, expected (N, H, W); "
                              "make them with score_maps_raw or score_maps_rgb")
        items = list(stack)
    else:
        items = [_as_float_tensor(m) for m in maps]
        stack = None
    if not items:
        raise StitchError(f"{scene_label(scene)}: no patches")
    for k, m in enumerate(items):
        if m.ndim != 2:
            raise StitchError(f"{scene_label(scene)}: score map {k} has shape {tuple(m.shape)}, expected (H, W)")
        if min(m.shape) < b:
            raise StitchError(f"{scene_label(scene)}: border {b} is larger than patch {k} of size "
                              f"{m.shape[0]}x{m.shape[1]}; it must not exceed any patch's height or width")
        if method == "normalised" and min(m.shape) < 2 * b:
            raise StitchError(f"{scene_label(scene)}: the normalised score needs patches of at least 2 x border = {2 * b} "
                              f"pixels, patch {k} is {m.shape[0]}x{m.shape[1]}; use a smaller border or score='paper'")
    sizes = tuple((int(m.shape[0]), int(m.shape[1])) for m in items)
    shifts = (0, b) if method == "normalised" else (0,)
    if stack is not None:
        sets = [(stack[:, :, w0 - b - s:w0 - s], stack[:, :, s:s + b], stack[:, h0 - b - s:h0 - s, :], stack[:, s:s + b, :])
                for s in shifts for h0, w0 in [stack.shape[1:]]]
        sets = [tuple(band.to(torch.float64) for band in bands) for bands in sets]
        return Bands(*sets[0], sizes, sets[1] if len(sets) > 1 else None)
    n, h_max, w_max = len(items), max(h for h, _ in sizes), max(w for _, w in sizes)
    opts = {"dtype": torch.float64, "device": items[0].device}
    sets = []
    for s in shifts:
        right, left = torch.zeros(n, h_max, b, **opts), torch.zeros(n, h_max, b, **opts)
        bottom, top = torch.zeros(n, b, w_max, **opts), torch.zeros(n, b, w_max, **opts)
        for k, (m, (h, w)) in enumerate(zip(items, sizes)):
            right[k, :h], left[k, :h] = m[:, w - b - s:w - s], m[:, s:s + b]
            bottom[k, :, :w], top[k, :, :w] = m[h - b - s:h - s, :], m[s:s + b, :]
        sets.append((right, left, bottom, top))
    return Bands(*sets[0], sizes, sets[1] if len(sets) > 1 else None)


def score_group(group: list[Bands], layouts: list[Layout], border: int) -> torch.Tensor:
    """``S`` of each layout for scenes with identical patch sizes: ``(scenes, layouts)``, NaN where no seam."""
    right, left = torch.stack([g.right for g in group]), torch.stack([g.left for g in group])
    bottom, top = torch.stack([g.bottom for g in group]), torch.stack([g.top for g in group])
    sizes = group[0].sizes
    n, device = len(sizes), right.device
    heights = torch.tensor([h for h, _ in sizes], dtype=torch.float64, device=device)
    widths = torch.tensor([w for _, w in sizes], dtype=torch.float64, device=device)
    # hor[:, k]: e_hor between patches k and k + 1 (padding rows cancel when their heights match).
    hor = (right[:, :-1] - left[:, 1:]).abs().sum((-2, -1)) / (border * heights[:-1])
    normalised = group[0].inner is not None
    if normalised:
        # Same-offset differences inside each patch along its four edges: what a true seam should cost.
        r_in, l_in, b_in, t_in = (torch.stack([g.inner[i] for g in group]) for i in range(4))
        inside_right = (r_in - right).abs().sum((-2, -1)) / (border * heights)
        inside_left = (left - l_in).abs().sum((-2, -1)) / (border * heights)
        inside_bottom = (b_in - bottom).abs().sum((-2, -1)) / (border * widths)
        inside_top = (top - t_in).abs().sum((-2, -1)) / (border * widths)
        hor_norm = (inside_right[:, :-1] + inside_left[:, 1:]) / 2
    next_index = torch.arange(1, n, device=device)
    out = []
    for rows, cols in layouts:
        seams = rows * (cols - 1) + (rows - 1) * cols
        if seams == 0:
            out.append(torch.full((len(group),), math.nan, dtype=torch.float64, device=device))
            continue
        inside_row = next_index % cols != 0
        ver = (bottom[:, :n - cols] - top[:, cols:]).abs().sum((-2, -1)) / (border * widths[:n - cols])
        if normalised:
            ver_norm = (inside_bottom[:, :n - cols] + inside_top[:, cols:]) / 2
            total = _pooled(hor[:, inside_row], hor_norm[:, inside_row]) + _pooled(ver, ver_norm)
        else:
            total = hor[:, inside_row].sum(-1) + ver.sum(-1)
        out.append(total / seams)
    return torch.stack(out, dim=1)


def _pooled(errors: torch.Tensor, norms: torch.Tensor) -> torch.Tensor:
    """``n * mean(errors) / (mean(norms) + eps)`` over the ``n`` seams of one direction (last axis).

    0 without seams, so a strip's missing direction adds nothing (the mean of none would be NaN).
    """
    if errors.shape[-1] == 0:
        return errors.sum(-1)
    return errors.shape[-1] * errors.mean(-1) / (norms.mean(-1) + _EPS)
