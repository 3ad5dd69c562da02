"""Baseline pair graphs for the ablations: random, k nearest neighbours, one flat OT.

:func:`random_graph` (``k`` distinct uniform random targets per source, equal weights) and
:func:`knn_graph` (the ``k`` nearest target descriptors by squared Euclidean distance;
``weighting="uniform"`` (default, plain kNN) or ``"softmax"`` of the negative distance with temperature
``temperature_rel x the mean of that source's k distances``). The restricted kNN ablation
(``MatchConfig.knn_scope="top_images"`` in :func:`~isp_support.pairing.match.match_dataset`) searches only
the patches of the source image's top-10 FGW images, so it differs from ``ot`` only in the patch-level
assignment: it isolates what the patch-level OT adds. :func:`ot_graph` is one entropic OT between all
sources and all targets. All produce a :class:`~isp_support.pairing.graph.PairGraph`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from ..ot.fgw import sq_distances
from ..ot.reports import OTReport
from ..ot.sinkhorn import _device_of, _mean_scale, _numpy, _tensor, entropic_ot
from .graph import PairGraph
from .patches import _knn_weights, top_k_targets


def random_graph(source_ids: Sequence[str], target_ids: Sequence[str], k: int, seed: int = 0) -> PairGraph:
    """``k`` distinct uniformly random targets per source, equal weights (``k`` capped at ``len(target_ids)``)."""
    nt = len(target_ids)
    k = min(int(k), nt)
    rng = np.random.default_rng(seed)
    ns = len(source_ids)
    # Vectorised: draw with replacement, redraw the rows that got a duplicate (rare when k << nt).
    idx = rng.integers(0, nt, size=(ns, k))
    if k > 1:
        while True:
            s = np.sort(idx, axis=1)
            dup = np.flatnonzero((s[:, 1:] == s[:, :-1]).any(1))
            if dup.size == 0:
                break
            idx[dup] = np.stack([rng.choice(nt, k, replace=False) for _ in dup])
    rows = np.sort(idx, axis=1)
    return PairGraph(source_ids, target_ids, np.arange(ns + 1) * k, rows.ravel(), np.full(ns * k, 1.0 / k),
                     {"method": "random", "k": k, "seed": seed})


def knn_graph(src_desc: Any, tgt_desc: Any, source_ids: Sequence[str], target_ids: Sequence[str], k: int, *,
              weighting: str = "uniform", temperature_rel: float = 0.05, device: Any = None,
              dtype: torch.dtype | None = None, max_chunk_bytes: int = 64 << 20) -> PairGraph:
    """The ``k`` nearest targets per source by squared Euclidean distance on the descriptors.

    ``weighting="uniform"`` (default): weights ``1/k``, plain kNN. ``"softmax"``: ``softmax(-d / T)`` with
    ``T = temperature_rel x`` the mean of that source's ``k`` distances. Ties go to the lower target index.
    Distances are computed ``max_chunk_bytes`` of rows at a time (brute force, ``O(Ns Nt D)``).
    """
    dev = device if device is not None else _device_of(src_desc, tgt_desc)
    X, Y = _tensor(src_desc, dev, dtype), _tensor(tgt_desc, dev, dtype)
    k = min(int(k), Y.shape[0])
    chunk_rows = max(1, int(max_chunk_bytes // (Y.shape[0] * Y.element_size())))
    idx_parts, w_parts = [], []
    for lo in range(0, X.shape[0], chunk_rows):
        d = sq_distances(X[lo:lo + chunk_rows], Y)
        dist, pos = _stable_smallest(d, k)
        idx_parts.append(_numpy(pos))
        w_parts.append(_numpy(_knn_weights(dist, weighting, temperature_rel)))
    idx = np.concatenate(idx_parts) if idx_parts else np.zeros((0, k), np.int64)
    w = np.concatenate(w_parts) if w_parts else np.zeros((0, k))
    return PairGraph(source_ids, target_ids, np.arange(X.shape[0] + 1) * k, idx.ravel(), w.ravel() / np.repeat(
        w.sum(1), k), {"method": "knn", "k": k, "weighting": weighting})


def _stable_smallest(d: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``k`` smallest per row, sorted ascending, equal values ordered by index."""
    vals, pos = torch.topk(d, k, dim=1, largest=False)
    v, p = _numpy(vals), _numpy(pos)
    o = np.lexsort((p, v), axis=1)
    return (torch.as_tensor(np.take_along_axis(v, o, 1), device=d.device),
            torch.as_tensor(np.take_along_axis(p, o, 1), device=d.device))


def ot_graph(src_desc: Any, tgt_desc: Any, source_ids: Sequence[str], target_ids: Sequence[str], k: int, *,
             epsilon_rel: float = 0.05, unbalanced_tau: float | None = None, max_iter: int = 2000,
             tol: float = 1e-7, warn: bool = True, device: Any = None,
             dtype: torch.dtype | None = None) -> tuple[PairGraph, OTReport]:
    """One flat entropic OT between all sources and all targets, top ``k`` per source by plan weight."""
    dev = device if device is not None else _device_of(src_desc, tgt_desc)
    X, Y = _tensor(src_desc, dev, dtype), _tensor(tgt_desc, dev, dtype)
    C = sq_distances(X, Y)
    C = C / _mean_scale(C)
    plan, rep = entropic_ot(C, epsilon_rel=epsilon_rel, unbalanced_tau=unbalanced_tau, max_iter=max_iter, tol=tol,
                            warn=warn)
    idx, w = top_k_targets(plan, k)
    graph = PairGraph.from_rows(source_ids, target_ids, idx, np.maximum(w, 1e-300),
                                {"method": "ot_flat", "k": int(idx.shape[1]), "epsilon_rel": epsilon_rel})
    return graph, rep
