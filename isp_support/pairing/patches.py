"""Patch-level pseudo-pairs (paper section 4.2, second step): OT between each source image's patches and its candidates.

For each source image, entropic OT between its patches and all patches of its top-10 target images
(semantic patch descriptors, squared Euclidean cost, uniform marginals); ``w_st ∝ P_patch(s, t) *
P_image(I_s, I_t)`` normalised per source patch; the ``top_patches`` (8) largest are kept
(:func:`patch_plans`, in CSR form: :class:`PatchMatch`).

How the image level enters the patch level
------------------------------------------
A balanced image plan with uniform marginals, solved to convergence, is close to a permutation when
the two sides have similar numbers of images: each source image then sends nearly all its mass to one
target image, and the product ``P_patch x P_image`` pins every patch of that source to that one
target image, whatever the patch shows. ``MatchConfig.image_level`` chooses how much the image level
decides (``paper``, ``tempered``, ``candidates``, ``marginal``; :func:`patch_plans`), and
``image_epsilon`` / ``image_tau`` soften or relax the image plan alone. Which works is measured, not
assumed: :mod:`isp_support.pairing.quality` scores every graph against ground truth where a data set has
it, and notebook 03 compares them.

Batching
--------
The patch-level problems (one per source image: ~35 source patches against
~10 x 35 candidates) are padded to the largest sizes in a chunk and solved
together by :func:`~isp_support.ot.sinkhorn.entropic_ot_batched`. Each chunk gathers its source and
candidate descriptors and builds its costs with one batched matrix product
(``baddbmm``). Chunks are bounded by ``max_chunk_bytes`` (the gathered descriptors
plus a few ``B x n x m`` work tensors; default 256 MiB), so memory stays flat at
full challenge scale; the only Python loop is over chunks. Problems are sorted by size before
chunking and candidate lists are compacted (valid patches first), so padding stays small.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from ..config_rules import IMAGE_LEVELS
from ..ot.reports import BatchOTReport, _warn
from ..ot.sinkhorn import _device_of, _numpy, _tensor, entropic_ot_batched

_REPORT_ARRAYS = ("iterations", "converged", "marginal_error", "stop_error", "epsilon_abs", "sizes")


def top_k_targets(plan: Any, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Per source row, the ``k`` columns with the largest plan entries: ``(indices, scores)``, both ``(Ns, k)``.

    Sorted by decreasing score; ties go to the lower column index (stable). ``k`` is capped at ``Nt``.
    """
    P = _numpy(plan).astype(np.float64, copy=False)
    k = min(int(k), P.shape[1])
    if k <= 0:
        raise ValueError(f"k must be positive, got {k}")
    order = np.argsort(-P, axis=1, kind="stable")[:, :k]
    return order.astype(np.int64), np.take_along_axis(P, order, 1)


@dataclass
class PatchMatch:
    """Sparse top-``k`` patch assignments in CSR form over the input's source patches (in input order)."""

    indptr: np.ndarray
    indices: np.ndarray
    """Target patch index (into the input's target patches)."""
    weights: np.ndarray
    report: BatchOTReport | None
    """Per problem (one per source image that has patches, in source-image order; ``None`` for kNN)."""
    problems: np.ndarray | None = None
    """Source image index of each problem (each entry of ``report``)."""
    seconds: dict[str, float] = field(default_factory=dict)


def _group_table(parent: np.ndarray, n_groups: int) -> np.ndarray:
    """``(n_groups, max_count)`` table of member indices per group (input order kept), ``-1`` padding."""
    parent = np.asarray(parent, dtype=np.int64)
    if parent.size and (parent.min() < 0 or parent.max() >= n_groups):
        raise ValueError(f"parent index out of range [0, {n_groups})")
    counts = np.bincount(parent, minlength=n_groups)
    width = max(int(counts.max()) if counts.size else 0, 1)
    order = np.argsort(parent, kind="stable")
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    pos = np.arange(parent.size) - starts[parent[order]]
    table = np.full((n_groups, width), -1, dtype=np.int64)
    table[parent[order], pos] = order
    return table


@dataclass
class _Problems:
    """The patch-level problems: one per source image that has patches."""

    src_table: np.ndarray
    """``(n_src_img, width)`` source patches per source image, ``-1`` padding."""
    tgt_table: np.ndarray
    """``(n_tgt_img, width)`` target patches per target image, ``-1`` padding."""
    problems: np.ndarray
    """Source image of each problem."""
    cand: np.ndarray
    """``(len(problems), width)`` candidate target patches per problem, valid ones first, ``-1`` padding."""
    n_cand: np.ndarray
    n_rows: np.ndarray


def _patch_problems(src_parent: np.ndarray, tgt_parent: np.ndarray, top_images: np.ndarray,
                    P_img: np.ndarray | None) -> _Problems:
    """Group patches by image and list each source image's candidate target patches (its top images')."""
    src_table = _group_table(src_parent, top_images.shape[0])
    tgt_table = _group_table(tgt_parent, int(tgt_parent.max()) + 1 if tgt_parent.size else 1)
    if P_img is not None and tgt_table.shape[0] > P_img.shape[1]:
        raise ValueError("a target patch's parent index exceeds the image plan's columns")
    if tgt_table.shape[0] < int(top_images.max()) + 1:
        tgt_table = np.concatenate([tgt_table, np.full((int(top_images.max()) + 1 - tgt_table.shape[0],
                                                        tgt_table.shape[1]), -1, np.int64)])
    problems = np.flatnonzero((src_table >= 0).any(1))
    # Candidate target patches per problem, valid ones first (stable), padded with -1.
    cand = tgt_table[top_images[problems]].reshape(len(problems), -1)
    cand = np.take_along_axis(cand, np.argsort(cand < 0, axis=1, kind="stable"), 1)
    n_cand = (cand >= 0).sum(1)
    if (n_cand == 0).any():
        bad = int(problems[np.flatnonzero(n_cand == 0)[0]])
        raise ValueError(f"source image {bad} has no candidate target patches (its top images have no patches)")
    n_rows = (src_table[problems] >= 0).sum(1)
    return _Problems(src_table, tgt_table, problems, cand, n_cand, n_rows)


def _chunks(order: np.ndarray, n_rows: np.ndarray, n_cand: np.ndarray, d: int, itemsize: int,
            max_chunk_bytes: int) -> Iterator[np.ndarray]:
    """Consecutive runs of ``order`` (problems sorted by size) whose padded work fits ``max_chunk_bytes``."""
    start = 0
    while start < len(order):
        n_max = int(n_rows[order[start:]].max())
        m_max = int(n_cand[order[start:]].max())
        per_problem = (m_max * d + n_max * d + 8 * n_max * m_max) * itemsize
        size = max(1, min(len(order) - start, int(max_chunk_bytes // max(per_problem, 1))))
        idx = order[start:start + size]
        start += size
        yield idx


def _chunk_cost(X: torch.Tensor, Y: torch.Tensor, sq_x: torch.Tensor, sq_y: torch.Tensor, rows: np.ndarray,
                cols: np.ndarray, dev: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(cost, rmask, cmask)`` of one chunk: squared distances ``(B, n, m)`` by one batched product."""
    rmask = torch.as_tensor(rows >= 0, device=dev)
    cmask = torch.as_tensor(cols >= 0, device=dev)
    ri = torch.as_tensor(np.maximum(rows, 0), device=dev)
    ci = torch.as_tensor(np.maximum(cols, 0), device=dev)
    Xb = X[ri]
    Yb = Y[ci]
    cost = torch.baddbmm(sq_x[ri][:, :, None] + sq_y[ci][:, None, :], Xb, Yb.transpose(1, 2), alpha=-2.0)
    cost.clamp_min_(0.0)
    return cost, rmask, cmask


def _target_marginal(pimg: torch.Tensor, n_patches: torch.Tensor) -> torch.Tensor:
    """``image_level="marginal"``: ``b_t ∝ P_image(I_s, I_t) / n(I_t)`` over each problem's candidates."""
    b = pimg / n_patches
    return b / b.sum(1, keepdim=True).clamp_min(1e-300)


def _ot_select(plan: torch.Tensor, pimg: torch.Tensor, cmask: torch.Tensor, image_level: str, image_gamma: float,
               top_patches: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``mode="ot"`` on one chunk: the plans combined with the image plan ``pimg`` as ``image_level`` says,
    normalised per source patch; the top ``top_patches`` ``(weights, positions)``."""
    if image_level == "paper":
        score = plan * pimg[:, None, :]
    elif image_level == "tempered":
        score = plan * pimg.pow(image_gamma)[:, None, :]
    else:
        score = plan.masked_fill(~cmask[:, None, :], 0.0)
    total = score.sum(2, keepdim=True)
    score = torch.where(total > 0, score / total.clamp_min(1e-300), plan)
    score = score.masked_fill(~cmask[:, None, :], -1.0)
    k = min(top_patches, score.shape[2])
    return torch.topk(score, k, dim=2)


def _knn_scores(cost: torch.Tensor, cmask: torch.Tensor, top_patches: int, knn_weighting: str,
                temperature_rel: float) -> tuple[torch.Tensor, torch.Tensor]:
    """``mode="knn"`` on one chunk: the ``top_patches`` nearest candidates, ``(weights, positions)``."""
    dist = cost.masked_fill(~cmask[:, None, :], math.inf)
    k = min(top_patches, dist.shape[2])
    neg, pos = torch.topk(-dist, k, dim=2)
    vals = _knn_weights(-neg, knn_weighting, temperature_rel)
    vals = vals.masked_fill(~torch.isfinite(neg), -1.0)
    return vals, pos


def _knn_weights(dist: torch.Tensor, weighting: str, temperature_rel: float) -> torch.Tensor:
    """Weights for the ``k`` nearest neighbours (sorted distances ``(..., k)``; ``inf`` = missing)."""
    finite = torch.isfinite(dist)
    if weighting == "uniform":
        w = finite.to(dist.dtype)
    elif weighting == "softmax":
        d = dist.masked_fill(~finite, 0.0)
        count = finite.sum(-1, keepdim=True).clamp_min(1)
        temp = (temperature_rel * d.sum(-1, keepdim=True) / count).clamp_min(1e-12)
        logits = (-(d - d[..., :1]) / temp).masked_fill(~finite, -math.inf)
        w = torch.softmax(logits, dim=-1)
    else:
        raise ValueError(f"unknown kNN weighting {weighting!r}; expected 'uniform' or 'softmax'")
    return w / w.sum(-1, keepdim=True).clamp_min(1e-300)


def _chunk_edges(vals: torch.Tensor, pos: torch.Tensor, rows: np.ndarray,
                 cols: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(source, target, weight)`` of the kept edges of one chunk (positive weight, real source patch)."""
    vals_np, pos_np = _numpy(vals), _numpy(pos)
    keep = (vals_np > 0) & (rows >= 0)[:, :, None]
    tgt = np.take_along_axis(np.broadcast_to(cols[:, None, :], (*rows.shape, cols.shape[1])), pos_np, 2)
    src = np.broadcast_to(rows[:, :, None], pos_np.shape)
    return src[keep], tgt[keep], vals_np[keep]


def _assemble(edge_src: list[np.ndarray], edge_tgt: list[np.ndarray], edge_w: list[np.ndarray],
              n_src: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """CSR ``(indptr, indices, weights)`` over ``n_src`` source patches from the chunks' edges.

    Per source patch: edges by decreasing weight (ties: lower target index), renormalised.
    """
    src_all = np.concatenate(edge_src) if edge_src else np.zeros(0, np.int64)
    tgt_all = np.concatenate(edge_tgt) if edge_tgt else np.zeros(0, np.int64)
    w_all = np.concatenate(edge_w) if edge_w else np.zeros(0)
    o = np.lexsort((tgt_all, -w_all, src_all))
    src_all, tgt_all, w_all = src_all[o], tgt_all[o], w_all[o]
    counts = np.bincount(src_all, minlength=n_src)
    missing = np.flatnonzero(counts == 0)
    if missing.size:
        raise ValueError(f"{missing.size} source patches got no pseudo-pair (e.g. patch {int(missing[0])})")
    indptr = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    sums = np.add.reduceat(w_all, indptr[:-1])
    w_all = w_all / np.repeat(sums, counts)
    return indptr, tgt_all, w_all


def _problem_order_report(reports: list[BatchOTReport], order: np.ndarray) -> BatchOTReport | None:
    """The chunks' reports as one, per-problem arrays put back in source-image order (chunks ran in size order)."""
    if not reports:
        return None
    report = BatchOTReport.concatenate(reports)
    inv = np.empty_like(order)
    inv[order] = np.arange(order.size)
    for name in _REPORT_ARRAYS:
        setattr(report, name, getattr(report, name)[inv])
    return report


def patch_plans(src_feats: Any, src_parent: Sequence[int] | np.ndarray, tgt_feats: Any,
                tgt_parent: Sequence[int] | np.ndarray, image_plan: Any, top_images: np.ndarray, *,
                top_patches: int = 8, epsilon_rel: float = 0.05, unbalanced_tau: float | None = None,
                max_iter: int = 2000, tol: float = 1e-7, mode: str = "ot", image_level: str = "paper",
                image_gamma: float = 0.5, knn_weighting: str = "uniform",
                device: Any = None, dtype: torch.dtype | None = None, max_chunk_bytes: int = 256 << 20,
                overrelax: float = 1.0, warn: bool = True) -> PatchMatch:
    """Patch-level pseudo-pairs: per source image, OT between its patches and its top images' patches.

    ``src_parent[s]`` is the row of ``image_plan`` (source image) of source patch ``s``; ``tgt_parent[t]``
    the column (target image) of target patch ``t``. ``top_images`` (``Ns_img x k``) lists each source
    image's candidate target images. ``mode="ot"``: entropic OT (unbalanced with ``unbalanced_tau``),
    uniform source marginal, and by ``image_level`` (:data:`~isp_support.config_rules.IMAGE_LEVELS`):

    * ``paper``: uniform target marginal, ``w_st ∝ P_patch(s, t) P_image(I_s, I_t)``;
    * ``tempered``: uniform target marginal, ``w_st ∝ P_patch(s, t) P_image(I_s, I_t) ** image_gamma``;
    * ``candidates``: uniform target marginal, ``w_st ∝ P_patch(s, t)``;
    * ``marginal``: target marginal ``b_t ∝ P_image(I_s, I_t) / n(I_t)`` (each candidate image receives
      mass in proportion to its image-level plan entry, shared by its ``n(I_t)`` patches),
      ``w_st ∝ P_patch(s, t)``;

    normalised per source patch, top ``top_patches`` kept and renormalised. ``mode="knn"``: the
    ``top_patches`` nearest candidates
    (the restricted kNN ablation), weights uniform or softmax (``knn_weighting``). Source patches
    whose image has no candidate patches raise ``ValueError``.
    """
    t0 = time.perf_counter()
    dev = torch.device(device) if device is not None else _device_of(src_feats, tgt_feats)
    dt = dtype or torch.float64
    X = _tensor(src_feats, dev, dt)
    Y = _tensor(tgt_feats, dev, dt)
    src_parent = np.asarray(src_parent, dtype=np.int64)
    tgt_parent = np.asarray(tgt_parent, dtype=np.int64)
    top_images = np.asarray(top_images, dtype=np.int64)
    if len(src_parent) != X.shape[0] or len(tgt_parent) != Y.shape[0]:
        raise ValueError("parent arrays must have one entry per patch")
    P_img = None if image_plan is None else _numpy(image_plan).astype(np.float64)
    if mode == "ot" and P_img is None:
        raise ValueError("mode='ot' needs the image plan")
    if image_level not in IMAGE_LEVELS:
        raise ValueError(f"unknown image_level {image_level!r}; expected one of {', '.join(IMAGE_LEVELS)}")
    pr = _patch_problems(src_parent, tgt_parent, top_images, P_img)
    P_img_t = None if P_img is None else torch.as_tensor(P_img, device=dev, dtype=dt)
    n_patches_t = torch.as_tensor((pr.tgt_table >= 0).sum(1), device=dev, dtype=dt).clamp_min(1.0)
    edges, reports, timing, order = _solve_chunks(X, Y, pr, tgt_parent, P_img_t, n_patches_t, dict(
        top_patches=top_patches, mode=mode, image_level=image_level, image_gamma=image_gamma,
        knn_weighting=knn_weighting, epsilon_rel=epsilon_rel, max_chunk_bytes=max_chunk_bytes,
        solve=dict(epsilon_rel=epsilon_rel, unbalanced_tau=unbalanced_tau, max_iter=max_iter, tol=tol,
                   overrelax=overrelax)))
    t4 = time.perf_counter()
    indptr, tgt_all, w_all = _assemble(*edges, X.shape[0])
    report = _problem_order_report(reports, order)
    if report is not None and not report.all_converged:
        bad = int((~report.converged).sum())
        _warn(f"patch-level OT: {bad} of {len(report.converged)} problems did not converge in {max_iter} "
              f"iterations (max stop error {float(report.stop_error.max()):.3g}, tol {tol:g})", warn)
    timing["assemble"] = time.perf_counter() - t4
    timing["total"] = time.perf_counter() - t0
    return PatchMatch(indptr=indptr, indices=tgt_all.astype(np.int64), weights=w_all, report=report,
                      problems=pr.problems, seconds=timing)


def _solve_chunks(X: torch.Tensor, Y: torch.Tensor, pr: _Problems, tgt_parent: np.ndarray,
                  P_img_t: torch.Tensor | None, n_patches_t: torch.Tensor, opts: dict[str, Any]) -> tuple:
    """The chunk loop of :func:`patch_plans`: ``((edge_src, edge_tgt, edge_w), reports, timing, order)``."""
    dev = X.device
    sq_x = (X * X).sum(1)
    sq_y = (Y * Y).sum(1)
    itemsize = torch.finfo(X.dtype).bits // 8
    edges: tuple[list[np.ndarray], list[np.ndarray], list[np.ndarray]] = ([], [], [])
    reports: list[BatchOTReport] = []
    timing = {"cost": 0.0, "solve": 0.0, "select": 0.0}
    # Chunks of problems, sorted by size so padding within a chunk stays small.
    order = np.lexsort((pr.n_cand, pr.n_rows))
    for idx in _chunks(order, pr.n_rows, pr.n_cand, X.shape[1], itemsize, opts["max_chunk_bytes"]):
        t1 = time.perf_counter()
        rows = pr.src_table[pr.problems[idx]][:, : int(pr.n_rows[idx].max())]
        cols = pr.cand[idx][:, : int(pr.n_cand[idx].max())]
        cost, rmask, cmask = _chunk_cost(X, Y, sq_x, sq_y, rows, cols, dev)
        t2 = time.perf_counter()
        if opts["mode"] == "ot":
            cand_img = torch.as_tensor(tgt_parent[np.maximum(cols, 0)], device=dev)
            src_img = torch.as_tensor(pr.problems[idx], device=dev)
            pimg = P_img_t[src_img[:, None], cand_img].masked_fill(~cmask, 0.0)
            b = _target_marginal(pimg, n_patches_t[cand_img]) if opts["image_level"] == "marginal" else None
            plan, rep = entropic_ot_batched(cost, rmask, cmask & (b > 0) if b is not None else cmask, b=b,
                                            warn=False, **opts["solve"])
            reports.append(rep)
            del cost
            vals, pos = _ot_select(plan, pimg, cmask, opts["image_level"], opts["image_gamma"], opts["top_patches"])
        elif opts["mode"] == "knn":
            vals, pos = _knn_scores(cost, cmask, opts["top_patches"], opts["knn_weighting"], opts["epsilon_rel"])
            del cost
        else:
            raise ValueError(f"unknown patch mode {opts['mode']!r}")
        t3 = time.perf_counter()
        for part, values in zip(edges, _chunk_edges(vals, pos, rows, cols)):
            part.append(values)
        timing["cost"] += t2 - t1
        timing["solve"] += t3 - t2
        timing["select"] += time.perf_counter() - t3
    return edges, reports, timing, order
