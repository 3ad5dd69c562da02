"""Where a photo's scenes are cut and which patch grid each scene gets, deterministically in the seed.

A scene's grid is picked from the profile's list: the one whose aspect ratio fits
its crop best, among the three closest, by seed (:func:`choose_grid`). A photo
gives up to ``n`` non-overlapping crops, none smaller than its scene's RGB size,
or one, the largest centred crop, when it is too small for two (:func:`photo_crops`).
"""

from __future__ import annotations

import math
import zlib

import numpy as np

from .photos import Photo


def choose_grid(height: int, width: int, grids: tuple[tuple[int, int], ...], rng: np.random.Generator) -> tuple[int, int]:
    """A grid whose aspect ratio is among the three closest to the photo's, picked by ``rng``."""
    aspect = math.log(width / height)
    ranked = sorted(grids, key=lambda g: (abs(math.log(g[1] / g[0]) - aspect), g))
    candidates = ranked[:3]
    return candidates[int(rng.integers(len(candidates)))]


def centre_crop_box(height: int, width: int, aspect: float) -> tuple[int, int, int, int]:
    """Largest centred (top, left, h, w) box of the given width/height ratio."""
    if width / height > aspect:
        w = int(round(height * aspect))
        return 0, (width - w) // 2, height, w
    h = int(round(width / aspect))
    return (height - h) // 2, 0, h, width


def grid_fits(height: int, width: int, grid: tuple[int, int], scene_px: int) -> bool:
    """Whether the largest box of the grid's aspect in ``height`` x ``width`` is at least the scene's size.

    ``scene_px`` is the RGB side of one patch (twice the RAW patch side): a box that
    fits needs no upscaling to ``rows * scene_px`` x ``cols * scene_px``.
    """
    rows, cols = grid
    _, _, h, w = centre_crop_box(height, width, cols / rows)
    return h >= rows * scene_px and w >= cols * scene_px


def crop_layouts(n: int) -> list[tuple[int, int]]:
    """Arrangements (rows, cols) of photo cells with room for ``n`` crops and no row or column to spare."""
    return [(a, b) for a in range(1, n + 1) for b in range(1, n + 1)
            if a * b >= n and (a - 1) * b < n and a * (b - 1) < n]


def multi_crop_boxes(height: int, width: int, n: int, grids: tuple[tuple[int, int], ...], scene_px: int,
                     rng: np.random.Generator) -> list[tuple[int, int, tuple[int, int, int, int]]]:
    """``n`` non-overlapping ``(rows, cols, (top, left, h, w))`` crops of a photo, or ``[]`` if they do not fit.

    Each arrangement of :func:`crop_layouts` splits the photo into equal cells, ``n``
    of them picked by ``rng``. A crop takes a grid that fits its cell
    (:func:`grid_fits`, so no crop is upscaled), among the three whose aspect is
    closest to the cell's, by ``rng``, and the largest box of that aspect in the
    cell, placed in the cell's slack by ``rng``. Boxes lie in disjoint cells, so
    they never overlap. The arrangement covering the most photo area wins (ties:
    the first); crops come in the row-major order of their cells.
    """
    best: list[tuple[int, int, tuple[int, int, int, int]]] = []
    best_area = 0
    for a, b in crop_layouts(n):
        ys = [round(i * height / a) for i in range(a + 1)]
        xs = [round(j * width / b) for j in range(b + 1)]
        crops: list[tuple[int, int, tuple[int, int, int, int]]] = []
        for cell in sorted(int(c) for c in rng.permutation(a * b)[:n]):
            i, j = divmod(cell, b)
            ch, cw = ys[i + 1] - ys[i], xs[j + 1] - xs[j]
            fitting = tuple(g for g in grids if grid_fits(ch, cw, g, scene_px))
            if not fitting:
                break
            rows, cols = choose_grid(ch, cw, fitting, rng)
            _, _, h, w = centre_crop_box(ch, cw, cols / rows)
            top = ys[i] + int(rng.integers(ch - h + 1))
            left = xs[j] + int(rng.integers(cw - w + 1))
            crops.append((rows, cols, (top, left, h, w)))
        if len(crops) < n:
            continue
        area = sum(h * w for _, _, (_, _, h, w) in crops)
        if area > best_area:
            best, best_area = crops, area
    return best


def photo_crops(height: int, width: int, n: int, grids: tuple[tuple[int, int], ...], raw_patch: int, seed: int,
                photo: Photo) -> list[tuple[int, int, tuple[int, int, int, int]]]:
    """A photo's scenes as ``(rows, cols, crop box)``: up to ``n`` crops that fit, at least one.

    Tries ``n``, ``n - 1``, ... crops (:func:`multi_crop_boxes`, RGB patch side
    ``2 * raw_patch``); when not even two fit, or ``n == 1``, the one scene is the
    largest centred crop with a grid fitted to the whole photo, exactly as before
    crops existed (so ``crops_per_photo=1`` builds what builder version 1 built).
    """
    for m in range(n, 1, -1):
        crops = multi_crop_boxes(height, width, m, grids, 2 * raw_patch, photo_rng(seed, photo, 3, m))
        if crops:
            return crops
    rows, cols = choose_grid(height, width, grids, photo_rng(seed, photo, 0))
    return [(rows, cols, centre_crop_box(height, width, cols / rows))]


def photo_rng(seed: int, photo: Photo, *stream: int) -> np.random.Generator:
    """The random stream ``stream`` of one photo, from the dataset seed and the photo's id."""
    return np.random.default_rng([seed, zlib.crc32(photo.id.encode()), *stream])
