"""How good are the pseudo pairs? A training-free figure of merit for every pairing choice.

Training on pseudo pairs is noisy and slow to judge; this module measures what a pair graph hands on
to training directly. On data whose source patches have ground truth (``train/gt``: the demo set does,
the challenge does not), for every source patch ``s`` with edges ``w_st``:

* the **expected pseudo-target statistics** ``E_w[stat(t)] = sum_t w_st stat(t)``: the mean and the
  spread (standard deviation) of Y, U and V (kornia's BT.601 YUV), and the expected soft histogram
  (the mixture ``sum_t w_st h(t)`` of the targets' 64-bin Y and 32 x 32 UV histograms), are compared with
  the same statistics of the patch's own ground truth. This is what the distribution losses of stage 1
  pull the prediction towards, on average over draws; its error is the *label error* of the pairing.
* ``histogram`` is the Hellinger distance (0 to 1) between the expected and the true histograms,
  ``sqrt((H_Y^2 + H_UV^2) / 2)``.

Two summaries, both with 95% percentile-bootstrap intervals over **scenes** (patches of a scene are not
independent): ``patch`` (for each scene the mean over its patches of the absolute error, then the mean
over scenes) and ``scene`` (for each scene the absolute value of its patches' mean error, i.e. the colour
bias the graph gives the whole scene; for the histogram, the distance between the scene's pooled
expected and true histograms). :func:`compare` gives paired bootstrap intervals of the difference
between two graphs on the same scenes.

``top_target_share``: for each source *image* (scene) the share of its patches' total weight that
lands on its single heaviest target image; 1 means every pseudo-target of the scene comes from one
target image (the near-permutation image plan of the issue this module was written for), ``1 / #targets``
an even spread.

The ground truth is read only here, to score; nothing in :mod:`isp_support.pairing.match` sees it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from kornia.color import rgb_to_yuv

from ..colour import uv_histogram, y_histogram
from .graph import PairGraph

MOMENTS = ("Y mean", "U mean", "V mean", "Y sd", "U sd", "V sd")
FIGURES = (*MOMENTS, "histogram")
Y_BINS, UV_BINS = 64, 32

__all__ = ["FIGURES", "MOMENTS", "ColourStats", "PairingQuality", "colour_stats", "compare", "load_colour_stats",
           "pairing_quality", "summary_table"]


@dataclass(frozen=True)
class ColourStats:
    """Colour statistics of a set of patches, keyed by id: ``moments (N, 6)``, histograms ``(N, 64)``, ``(N, 1024)``."""

    ids: tuple[str, ...]
    moments: np.ndarray
    hist_y: np.ndarray
    hist_uv: np.ndarray

    def take(self, ids: Sequence[str]) -> "ColourStats":
        pos = {i: k for k, i in enumerate(self.ids)}
        try:
            rows = np.fromiter((pos[i] for i in ids), dtype=np.int64, count=len(ids))
        except KeyError as exc:
            raise KeyError(f"no colour statistics for patch {exc.args[0]!r}") from None
        return ColourStats(tuple(ids), self.moments[rows], self.hist_y[rows], self.hist_uv[rows])


def colour_stats(rgb: torch.Tensor) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(B, 3, H, W)`` sRGB in [0, 1] -> YUV means and spreads ``(B, 6)``, Y and UV soft histograms."""
    yuv = rgb_to_yuv(rgb.float()).flatten(2)
    moments = torch.cat([yuv.mean(2), yuv.std(2, unbiased=False)], dim=1)
    return (moments.double().numpy(), y_histogram(rgb.float(), Y_BINS).double().numpy(),
            uv_histogram(rgb.float(), UV_BINS).flatten(1).double().numpy())


def load_colour_stats(files: Mapping[str, Path], batch_size: int = 64) -> ColourStats:
    """Statistics of image files (``{id: path}``, PNG or JPEG), read and described in batches of equal size."""
    from ..io import read_rgb

    ids = tuple(sorted(files))
    parts: dict[str, tuple[np.ndarray, ...]] = {}
    by_shape: dict[tuple[int, ...], list[str]] = {}
    images = {i: read_rgb(files[i]) for i in ids}
    for i in ids:
        by_shape.setdefault(images[i].shape, []).append(i)
    for members in by_shape.values():
        for lo in range(0, len(members), batch_size):
            chunk = members[lo:lo + batch_size]
            x = torch.from_numpy(np.stack([images[i] for i in chunk])).permute(0, 3, 1, 2).float() / 255.0
            for i, *row in zip(chunk, *colour_stats(x)):
                parts[i] = tuple(row)
    return ColourStats(ids, *(np.stack([parts[i][k] for i in ids]) for k in range(3)))


@dataclass
class PairingQuality:
    """The label error of one pair graph (see the module docstring)."""

    name: str
    patch_errors: pd.DataFrame
    """One row per source patch: ``scene`` and the absolute error of each figure."""
    scene_errors: pd.DataFrame
    """One row per scene: the scene-level (bias) error of each figure."""
    top_target_share: pd.Series
    """Per source image: the share of its weight on its heaviest target image."""

    def per_scene(self, level: str) -> pd.DataFrame:
        """Scenes x figures at ``level`` ``"patch"`` (scene means of patch errors) or ``"scene"``."""
        if level == "patch":
            return self.patch_errors.groupby("scene")[list(FIGURES)].mean()
        if level == "scene":
            return self.scene_errors[list(FIGURES)]
        raise ValueError(f"level must be 'patch' or 'scene', got {level!r}")

    def summary(self, n_boot: int = 2000, seed: int = 0) -> pd.DataFrame:
        """Figures x levels: mean over scenes with a 95% bootstrap interval over scenes."""
        rows = []
        for level in ("patch", "scene"):
            table = self.per_scene(level)
            boots = _bootstrap_means(table.to_numpy(), n_boot, seed)
            lo, hi = np.percentile(boots, [2.5, 97.5], axis=0)
            for k, fig in enumerate(FIGURES):
                rows.append({"level": level, "figure": fig, "mean": float(table[fig].mean()), "lo": lo[k],
                             "hi": hi[k]})
        share = self.top_target_share.to_numpy()
        boots = _bootstrap_means(share[:, None], n_boot, seed)[:, 0]
        rows.append({"level": "image", "figure": "top target share", "mean": float(share.mean()),
                     "lo": float(np.percentile(boots, 2.5)), "hi": float(np.percentile(boots, 97.5))})
        return pd.DataFrame(rows).assign(graph=self.name)


def _bootstrap_means(values: np.ndarray, n_boot: int, seed: int) -> np.ndarray:
    """``(n_boot, F)`` means of ``values (n, F)`` over rows resampled with replacement."""
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, len(values), size=(n_boot, len(values)))
    return values[picks].mean(axis=1)


def _hellinger(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    return np.sqrt(np.clip(0.5 * ((np.sqrt(np.clip(p, 0, None)) - np.sqrt(np.clip(q, 0, None))) ** 2).sum(1), 0, 1))


def _histogram_distance(ey: np.ndarray, euv: np.ndarray, gy: np.ndarray, guv: np.ndarray) -> np.ndarray:
    return np.sqrt((_hellinger(ey, gy) ** 2 + _hellinger(euv, guv) ** 2) / 2.0)


def pairing_quality(graph: PairGraph, targets: ColourStats, truth: ColourStats, source_scene: Mapping[str, str],
                    target_image: Mapping[str, str], name: str | None = None) -> PairingQuality:
    """Label error of ``graph``: its expected pseudo-target statistics against each source patch's truth.

    ``targets``: statistics of (at least) every target patch of the graph; ``truth``: of every source
    patch's ground truth (same ids as the graph's sources); ``source_scene[s]`` is a source patch's scene
    (its image), ``target_image[t]`` a target patch's image. All sums over edges are one sparse product.
    """
    src = graph.source_ids
    tgt = targets.take(graph.target_ids)
    gt = truth.take(src)
    rows = np.repeat(np.arange(len(src)), np.diff(graph.indptr))
    w = graph.weights

    def expected(values: np.ndarray) -> np.ndarray:
        out = np.zeros((len(src), values.shape[1]))
        np.add.at(out, rows, w[:, None] * values[graph.indices])
        return out

    e_mom, e_y, e_uv = expected(tgt.moments), expected(tgt.hist_y), expected(tgt.hist_uv)
    scenes = np.array([source_scene[s] for s in src])
    signed = e_mom - gt.moments
    patch = pd.DataFrame(np.abs(signed), columns=list(MOMENTS))
    patch["histogram"] = _histogram_distance(e_y, e_uv, gt.hist_y, gt.hist_uv)
    patch.insert(0, "scene", scenes)
    patch.index = pd.Index(src, name="patch")

    names, inverse = np.unique(scenes, return_inverse=True)
    counts = np.bincount(inverse).astype(np.float64)

    def scene_mean(values: np.ndarray) -> np.ndarray:
        out = np.zeros((len(names), values.shape[1]))
        np.add.at(out, inverse, values)
        return out / counts[:, None]

    scene = pd.DataFrame(np.abs(scene_mean(signed)), columns=list(MOMENTS), index=pd.Index(names, name="scene"))
    scene["histogram"] = _histogram_distance(scene_mean(e_y), scene_mean(e_uv), scene_mean(gt.hist_y),
                                             scene_mean(gt.hist_uv))

    images, t_img = np.unique([target_image[t] for t in graph.target_ids], return_inverse=True)
    load = np.zeros((len(names), len(images)))
    np.add.at(load, (inverse[rows], t_img[graph.indices]), w)
    share = pd.Series(load.max(1) / load.sum(1), index=pd.Index(names, name="scene"), name="top target share")
    return PairingQuality(name or str(graph.meta.get("method", "graph")), patch, scene, share)


def compare(a: PairingQuality, b: PairingQuality, level: str = "patch", n_boot: int = 2000,
            seed: int = 0) -> pd.DataFrame:
    """Per figure: mean over scenes of ``a - b`` with a 95% paired bootstrap interval (same resampled scenes).

    ``better`` is true when the whole interval lies below zero (``a``'s error is smaller).
    """
    ta, tb = a.per_scene(level), b.per_scene(level)
    if list(ta.index) != list(tb.index):
        raise ValueError(f"{a.name} and {b.name} cover different scenes; compare graphs of the same data")
    diff = (ta - tb).to_numpy()
    boots = _bootstrap_means(diff, n_boot, seed)
    lo, hi = np.percentile(boots, [2.5, 97.5], axis=0)
    return pd.DataFrame({"diff": diff.mean(0), "lo": lo, "hi": hi, "better": hi < 0, "worse": lo > 0},
                        index=pd.Index(FIGURES, name="figure"))


def summary_table(qualities: Sequence[PairingQuality], level: str = "patch", n_boot: int = 2000,
                  seed: int = 0) -> pd.DataFrame:
    """Graphs x figures at ``level``, as ``mean [lo, hi]`` numbers in separate columns, plus the top-target share."""
    out = {}
    for q in qualities:
        s = q.summary(n_boot, seed)
        s = s[(s["level"] == level) | (s["level"] == "image")]
        out[q.name] = {f"{r.figure}{suffix}": getattr(r, col) for r in s.itertuples()
                       for suffix, col in (("", "mean"), (" lo", "lo"), (" hi", "hi"))}
    return pd.DataFrame(out).T
