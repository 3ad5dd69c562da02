"""Image- and patch-level optimal-transport pseudo-pairing (paper section 4.2).

Pipeline
--------
1. **Image level.** Source full-image descriptors ``x_i`` (``i < Ns``) and target
   descriptors ``y_j`` (``j < Nt``; ``Ns != Nt`` in general) give

   * ``C_ij = ||x_i - y_j||^2`` (eq. 2),
   * ``D_X(i, i') = ||x_i - x_i'||^2`` and ``D_Y(j, j') = ||y_j - y_j'||^2`` (eq. 4),

   and an entropic fused Gromov-Wasserstein plan ``P*`` with uniform marginals
   (eq. 5). Each source image keeps its ``top_images`` (10) targets by ``P*``.
2. **Patch level.** For each source image, entropic OT between its patches and
   all patches of its top-10 target images (semantic patch descriptors, squared
   Euclidean cost, uniform marginals); ``w_st ∝ P_patch(s, t) * P_image(I_s, I_t)``
   normalised per source patch; the ``top_patches`` (8) largest are kept as a
   sparse :class:`PairGraph`, from which training samples a target with
   probability ``w_st`` (:meth:`PairGraph.sampler`).

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

Reading of equation 3
---------------------
As printed, ``S_ij = sum_{i',j'} (D_X(i,i') - D_Y(j,j'))^2 C_ij C_i'j'`` multiplies
by the *cost* ``C``, which makes ``S`` a fixed matrix that does not depend on the
plan and is not the fused Gromov-Wasserstein (FGW) objective. We implement the
reading "``S`` is the FGW Gromov term with the plan in place of ``C``" (Vayer et
al. 2019)::

    S(P)_ij = sum_{i',j'} (D_X(i,i') - D_Y(j,j'))^2 P_i'j'          (= L(D_X, D_Y) ⊗ P)
    E(P)    = (1 - alpha) <C, P> + alpha <S(P), P> - eps H(P)        (alpha = 0.5)

so ``<C_fused, P>`` of eq. 1 becomes ``(1 - alpha) <C, P> + alpha <S(P), P>``, the
standard FGW objective with ``loss_fun="square_loss"``. ``S(P)`` is never built
from an ``N x M x N x M`` tensor: with ``r = P 1`` and ``c = P^T 1`` (Peyré, Cuturi
and Solomon 2016, Prop. 1)::

    S(P) = (D_X**2) r 1^T + 1 c^T (D_Y**2)^T - 2 D_X P D_Y^T

which costs ``O(N^2 M + N M^2)`` (:func:`gromov_term`). It uses the plan's actual
marginals, so it also holds for unbalanced plans (POT's ``init_matrix`` assumes
the marginals are ``a`` and ``b``; both agree on balanced plans, checked in the tests).

Normalisation and relative epsilon
----------------------------------
``C``, ``D_X`` and ``D_Y`` are each divided by their **mean** entry (the mean
over the whole matrix, diagonal included) before solving, so ``alpha`` balances
dimensionless terms and nothing depends on the descriptor scale. The mean is
used rather than the max because high-dimensional squared distances concentrate
and one outlier would shrink every other entry under a max normalisation.

Caveat: a constant offset in ``C`` (e.g. the RAW-vs-JPEG domain gap) raises its
mean without changing the balanced plan, so after mean-normalisation the
informative spread of ``C`` is smaller against ``alpha`` and ``eps``; the scales
used are in :class:`FGWReport` (``scales``).

``epsilon`` (and ``unbalanced_tau``) in :class:`~isp_support.config.MatchConfig` are
relative: ``eps_abs = epsilon * cost_scale`` where ``cost_scale`` is the mean of the
cost the solver sees. For plain OT this is the mean of the cost matrix (the
patch level: per problem, the mean over that source image's patches x its
candidates). For FGW it is the mean of the fused cost of eq. 1 at the independent
coupling ``a b^T``, ``mean((1 - alpha) C + alpha S(a b^T))``, a fixed number that
does not change between iterations. Both absolute values are in the reports.

Solvers
-------
All computation is in torch (POT's torch backend for POT calls), on the device of
the input tensors, in float64 unless a ``dtype`` is given (float32 is fine on a GPU).

* :func:`entropic_ot` (one problem). Balanced: ``ot.bregman.sinkhorn_log``
  (log-domain Sinkhorn). Its stopping rule is the L2 norm of the column-marginal
  violation (rows are exact after the last update) below ``tol``, checked every
  10 iterations; ``niter`` comes from POT's log. Unbalanced (KL marginal
  penalty ``tau``, entropy as ``KL(P | a b^T)``, POT's ``reg_type="kl"``): our
  log-domain solver below with one problem (stopping rule: the largest change of
  a log-scaling in one iteration below ``tol``, like POT's relative change of
  ``u``). POT 0.9.7 has no log-domain unbalanced Sinkhorn, and its absorption
  variant ``ot.unbalanced.sinkhorn_unbalanced(method="sinkhorn_stabilized")`` gave
  wrong plans on small cases in our checks: a total mass of 8e-10 instead of 0.946
  (reported as converged, no warning) on a 20 x 16 problem with one far outlier,
  and a mass of 476 ("did not converge") on a 4 x 9 uniform-random one, where POT's
  ``"sinkhorn"`` and ``"sinkhorn_translation_invariant"`` and our solver agree to
  1e-10. Those POT methods remain selectable (``unbalanced_solver=``); the tests
  compare ours with POT's ``"sinkhorn"``. POT's warnings are captured into the
  report (``solver_warnings``) and re-issued once as
  :class:`MatchingConvergenceWarning` when ``warn=True``. ``overrelax != 1``
  switches balanced problems to our solver too (see below).
* :func:`entropic_ot_batched` (many independent problems of padded equal size):
  our own log-domain Sinkhorn in torch with masks for padding, balanced or
  unbalanced, one batched tensor operation per half-iteration (no per-problem
  Python loop), with POT's stopping rules per problem and exact per-problem
  iteration counts. Converged problems leave the work tensors at the next check
  (active set), so easy problems do not pay for the slowest. The log-sum-exp is
  written out (max, subtract, exp, sum, log, in place): ``torch.logsumexp`` in
  float64 on CPU was 7x slower on these shapes (25 ms against 3.5 ms for
  60 x 34 x 294). Optional over-relaxation ``overrelax=omega`` (same fixed point,
  safeguarded). ``ot.batch.solve_batch`` (POT 0.9.7) was not used: it has no
  masks for ragged sizes, no unbalanced option and reports one iteration count
  and one error for the whole batch. Checked against POT's single-problem solvers
  in the tests.
* :func:`fused_gw_plan` / :func:`fused_gw_from_costs`: entropic FGW by projected
  (mirror) gradient descent, the PGD scheme of Peyré et al. 2016 that
  ``ot.gromov.entropic_fused_gromov_wasserstein(solver="PGD")`` uses:
  ``P <- Sinkhorn_eps((1 - alpha) C + 2 alpha S(P))`` from ``P = a b^T``, until the
  relative Frobenius change of ``P`` is below ``outer_tol``. We run the loop
  ourselves (``solver="pgd"``, the default) because POT's function calls the
  *non-log* ``ot.sinkhorn(method="sinkhorn")`` inside and cannot be told
  otherwise (its ``method`` is fixed), which underflows for small ``eps`` (and in
  float32), and its log has no inner convergence information. Our loop uses
  :func:`entropic_ot` (log-domain) warm-started from the previous duals
  (converged or not), and reports outer and inner convergence. ``solver="pot"``
  calls POT's function directly (balanced only); the two agree in the tests.
* ``unbalanced`` (after EGUOT: unbalanced OT discounts targets that would be
  costly to map): the same PGD loop with unbalanced inner Sinkhorn steps (KL
  marginal relaxation ``tau_abs = unbalanced_tau * cost_scale``), i.e. each step solves
  unbalanced entropic OT on the linearised fused cost. POT's
  ``ot.gromov.fused_unbalanced_gromov_wasserstein`` (0.9.7) exists, but it relaxes the
  marginals of a pair of couplings, puts ``epsilon`` on ``P ⊗ Q`` and weights the
  linear term by ``alpha / 2`` against a Gromov term of weight 1, so its parameters
  would not mean what :class:`MatchConfig` says; we did not use it. The patch level
  uses unbalanced batched Sinkhorn with the same ``tau``.

Convergence is never silently capped: every solve returns a report with
``converged``; a non-converged solve issues a :class:`MatchingConvergenceWarning`
when ``warn=True`` and the reports are surfaced in :class:`MatchResult`.

Convergence in practice
-----------------------
Sinkhorn's tail is slow when the plan is nearly decomposable: near-duplicate
patches, or scene classes whose proportions differ between the domains (mass
must cross between blocks through entries of size ``exp(-gap / eps)``). With
:class:`MatchConfig`'s ``epsilon=0.05``, ``tol=1e-7`` and ``max_iter=2000``, on the
synthetic benchmark descriptors (``benchmarks/bench_matching.py``): at full scale
(383 images of 35 patches per side) 28 of 383 patch problems stop at the cap
with L2 marginal errors up to 9e-6 (some need ~18,000 iterations), and at 200
images the image-level FGW's inner solves end at 2.1e-7 against ``tol`` 1e-7.
The plans are then within ~1e-9 (absolute) of the converged ones and the top-8
edges are identical, so this is a reporting matter, not a quality one; options are
``overrelax`` of about 1.8 to 1.9 (image level converged; patch level 369/383 at
``omega`` 1.8 and 378/383 at 1.9, 400/400 on a 400-image set, in about half the
solve time), a larger ``max_iter``, or ``tol=1e-6``. The unbalanced option converges in under
200 iterations everywhere (its updates contract by ``tau / (tau + eps)``).

Patch level batching
--------------------
The patch-level problems (one per source image: ~35 source patches against
~10 x 35 candidates) are padded to the largest sizes in a chunk and solved
together by :func:`entropic_ot_batched`. Each chunk gathers its source and
candidate descriptors and builds its costs with one batched matrix product
(``baddbmm``). Chunks are bounded by ``max_chunk_bytes`` (the gathered descriptors
plus a few ``B x n x m`` work tensors; default 256 MiB), so memory stays flat at
full challenge scale; the only Python loop is over chunks (5 at full scale).
Problems are sorted by size before chunking and candidate lists are compacted
(valid patches first), so padding stays small.

Baselines
---------
:func:`random_graph` (``k`` distinct uniform random targets per source, equal
weights) and :func:`knn_graph` (the ``k`` nearest target descriptors by squared
Euclidean distance; ``weighting="uniform"`` (default, plain kNN) or
``"softmax"`` of the negative distance with temperature ``temperature_rel x the
mean of that source's k distances``). The restricted kNN ablation
(``match_dataset(..., knn_scope="top_images")``) searches only the patches of the
source image's top-10 FGW images, so it differs from ``ot`` only in the
patch-level assignment: it isolates what the patch-level OT adds. All produce a
:class:`PairGraph`.

Stable ids
----------
Graphs are keyed by ids (``"<scene>_<idx>"``), never list positions, and
:func:`match_dataset` sorts every input by id before solving, so the result for
an id does not depend on the order of the inputs (bit for bit).
"""

from __future__ import annotations

import dataclasses
import io
import json
import math
import time
import warnings
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import ot
import torch

from ..artifacts import atomic_save_npy, atomic_write_bytes, atomic_write_json
from ..config import IMAGE_LEVELS, MatchConfig
from ..config import MATCH_METHODS as METHODS

PAPER_IMAGE_LEVEL = {"image_level": "paper", "image_epsilon": None, "image_tau": None}
"""The :class:`MatchConfig` fields that give section 4.2 as printed (with ``EmbedConfig.cast="none"``)."""
PAIRING_VARIANTS: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
    "paper": ({}, {}),
    "a candidates": ({}, {"image_level": "candidates"}),
    "b tempered": ({}, {"image_level": "tempered", "image_gamma": 0.5}),
    "c soft image eps": ({}, {"image_epsilon": 0.2}),
    "d unbalanced image": ({}, {"image_tau": 0.1}),
    "e marginal": ({}, {"image_level": "marginal"}),
    "f grey world": ({"cast": "grey_world"}, {}),
    "f channel norm": ({"cast": "channel_norm"}, {}),
    "g patch colour": ({"patch_colour_weight": 1.0}, {}),
    "f + c": ({"cast": "grey_world"}, {"image_epsilon": 0.2}),
    "c + g": ({"patch_colour_weight": 1.0}, {"image_epsilon": 0.2}),
    "f + c + g": ({"cast": "grey_world", "patch_colour_weight": 1.0}, {"image_epsilon": 0.2}),
    "f + a + c + g": ({"cast": "grey_world", "patch_colour_weight": 1.0},
                      {"image_level": "candidates", "image_epsilon": 0.2}),
    "f + d + g": ({"cast": "grey_world", "patch_colour_weight": 1.0}, {"image_tau": 0.1}),
    "f + e + c + g": ({"cast": "grey_world", "patch_colour_weight": 1.0},
                      {"image_level": "marginal", "image_epsilon": 0.2}),
}
"""The variants notebook 03 compares: ``name -> (EmbedConfig changes, MatchConfig changes)``, both from the
paper's reading (``cast="none"``, ``patch_colour_weight=0``, :data:`PAPER_IMAGE_LEVEL`). The letters are
those of the pairing-quality issue: (a) candidates only, (b) tempered product, (c) softer image eps,
(d) unbalanced image plan, (e) image plan as the patch-level target marginal, (f) colour-cast-normalised
descriptor inputs; (g), the colour block in the patch descriptors, is this series' addition."""
GRAPH_FORMAT = "isp_support.pair_graph"
GRAPH_VERSION = 1
_CHECK_EVERY = 10

__all__ = [
    "METHODS", "MatchingConvergenceWarning", "PairGraphError", "OTReport", "BatchOTReport", "FGWReport",
    "sq_distances", "gromov_term", "fused_objective", "entropic_ot", "entropic_ot_batched", "fused_gw_from_costs",
    "fused_gw_plan", "top_k_targets", "PatchMatch", "patch_plans", "PairGraph", "GraphSampler", "random_graph",
    "knn_graph", "ot_graph", "graph_stats", "DescriptorSet", "MatchResult", "match_dataset", "synthetic_match_inputs",
]


class MatchingConvergenceWarning(RuntimeWarning):
    """An OT solve stopped at its iteration cap (or hit numerical trouble) before meeting its tolerance."""


class PairGraphError(ValueError):
    """A pair graph (in memory or on disk) is inconsistent; the message names the file when there is one."""


# --- tensors -----------------------------------------------------------------------------------------------------

def _device_of(*xs: Any) -> torch.device:
    for x in xs:
        if isinstance(x, torch.Tensor):
            return x.device
    return torch.device("cpu")


def _tensor(x: Any, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> torch.Tensor:
    """``x`` as a floating tensor on ``device`` (default: its own, CPU for numpy) in ``dtype`` (default float64)."""
    t = x if isinstance(x, torch.Tensor) else torch.as_tensor(np.asarray(x))
    return t.to(device=t.device if device is None else torch.device(device), dtype=dtype or torch.float64)


def _numpy(x: Any) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def sq_distances(x: Any, y: Any | None = None) -> torch.Tensor:
    """Squared Euclidean distances ``||x_i - y_j||^2`` (``y=None``: ``x`` with itself, zero diagonal)."""
    x = x if isinstance(x, torch.Tensor) else _tensor(x)
    same = y is None
    y = x if same else (y if isinstance(y, torch.Tensor) else _tensor(y, x.device, x.dtype))
    d = (x * x).sum(1)[:, None] + (y * y).sum(1)[None, :] - 2.0 * (x @ y.T)
    d = d.clamp_min_(0.0)
    if same:
        d.fill_diagonal_(0.0)
    return d


def gromov_term(dx: torch.Tensor, dy: torch.Tensor, plan: torch.Tensor) -> torch.Tensor:
    """``S(P)_ij = sum_{k,l} (D_X(i,k) - D_Y(j,l))^2 P_kl`` by the square-loss decomposition.

    ``(D_X**2) r 1^T + 1 c^T (D_Y**2)^T - 2 D_X P D_Y^T`` with the plan's own marginals ``r, c``:
    ``O(N^2 M + N M^2)`` time and ``O(N M)`` extra memory, never an ``N x M x N x M`` tensor.
    """
    r = plan.sum(1)
    c = plan.sum(0)
    return (dx * dx) @ r[:, None] + ((dy * dy) @ c)[None, :] - 2.0 * (dx @ plan @ dy.T)


def fused_objective(cost: torch.Tensor, dx: torch.Tensor, dy: torch.Tensor, plan: torch.Tensor,
                    alpha: float) -> tuple[float, float, float]:
    """``(total, linear, gromov)``: ``(1 - alpha) <C, P> + alpha <S(P), P>`` and its two parts (no entropy)."""
    linear = float((cost * plan).sum())
    gromov = float((gromov_term(dx, dy, plan) * plan).sum())
    return (1.0 - alpha) * linear + alpha * gromov, linear, gromov


def _lse(x: torch.Tensor) -> torch.Tensor:
    """``logsumexp`` over the last axis, consuming ``x`` (a temporary) in place.

    Several times faster than ``torch.logsumexp`` for float64 on CPU (torch 2.x). Rows that are
    entirely ``-inf`` give ``-inf``.
    """
    mx = x.amax(-1, keepdim=True)
    mx = torch.where(torch.isfinite(mx), mx, torch.zeros_like(mx))
    return x.sub_(mx).exp_().sum(-1).log_().add_(mx.squeeze(-1))


def _mean_scale(m: torch.Tensor) -> float:
    s = float(m.mean())
    return s if s > 0 and math.isfinite(s) else 1.0


# --- reports -----------------------------------------------------------------------------------------------------

def _jsonable(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: _jsonable(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return str(obj)
    return obj


@dataclass
class OTReport:
    """Outcome of one entropic OT solve."""

    iterations: int
    """Sinkhorn iterations run (see ``iterations_exact``)."""
    converged: bool
    """The solver's stopping rule was met before ``max_iter``, without numerical errors."""
    marginal_error: float
    """``max(||P 1 - a||_1, ||P^T 1 - b||_1)`` of the returned plan. For an unbalanced solve this is the
    deliberate relaxation, not an error."""
    stop_error: float
    """The stopping rule's value at exit (balanced: L2 column-marginal violation; unbalanced: relative
    change of the scaling), compared with ``tol``."""
    epsilon_abs: float
    epsilon_rel: float
    cost_scale: float
    tol: float
    max_iter: int
    solver: str
    unbalanced_tau_abs: float | None = None
    mass: float = 1.0
    iterations_exact: bool = True
    solver_warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return _jsonable(self)


@dataclass
class BatchOTReport:
    """Outcome of a batch of independent entropic OT solves (one entry per problem)."""

    iterations: np.ndarray
    converged: np.ndarray
    marginal_error: np.ndarray
    stop_error: np.ndarray
    epsilon_abs: np.ndarray
    sizes: np.ndarray
    """``(B, 2)``: valid rows and columns of each problem."""
    tol: float
    max_iter: int
    unbalanced_tau_rel: float | None = None
    chunks: int = 1

    @property
    def all_converged(self) -> bool:
        return bool(np.all(self.converged))

    @staticmethod
    def concatenate(reports: Sequence["BatchOTReport"]) -> "BatchOTReport":
        first = reports[0]
        cat = {name: np.concatenate([getattr(r, name) for r in reports])
               for name in ("iterations", "converged", "marginal_error", "stop_error", "epsilon_abs", "sizes")}
        return BatchOTReport(**cat, tol=first.tol, max_iter=first.max_iter, unbalanced_tau_rel=first.unbalanced_tau_rel,
                             chunks=sum(r.chunks for r in reports))

    def summary(self) -> dict[str, Any]:
        n = len(self.iterations)
        return {
            "problems": n,
            "converged": int(self.converged.sum()),
            "all_converged": self.all_converged,
            "iterations_max": int(self.iterations.max()) if n else 0,
            "iterations_mean": float(self.iterations.mean()) if n else 0.0,
            "marginal_error_max": float(self.marginal_error.max()) if n else 0.0,
            "stop_error_max": float(self.stop_error.max()) if n else 0.0,
            "epsilon_abs_min": float(self.epsilon_abs.min()) if n else 0.0,
            "epsilon_abs_max": float(self.epsilon_abs.max()) if n else 0.0,
            "rows_max": int(self.sizes[:, 0].max()) if n else 0,
            "cols_max": int(self.sizes[:, 1].max()) if n else 0,
            "tol": self.tol,
            "max_iter": self.max_iter,
            "unbalanced_tau_rel": self.unbalanced_tau_rel,
            "chunks": self.chunks,
        }

    def to_dict(self) -> dict[str, Any]:
        return self.summary()


@dataclass
class FGWReport:
    """Outcome of an entropic fused Gromov-Wasserstein solve (outer PGD loop plus inner Sinkhorn solves)."""

    converged: bool
    """Outer loop met ``outer_tol`` and every inner solve converged."""
    outer_converged: bool
    outer_iterations: int
    plan_change: float
    """Relative Frobenius change of the plan in the last outer iteration."""
    inner_iterations_total: int
    inner_not_converged: int
    marginal_error: float
    epsilon_abs: float
    epsilon_rel: float
    cost_scale: float
    alpha: float
    objective: float
    """``(1 - alpha) <C, P> + alpha <S(P), P>`` on the normalised costs (no entropy)."""
    linear_term: float
    gromov_term: float
    scales: dict[str, float]
    """Means that ``C``, ``D_X`` and ``D_Y`` were divided by."""
    solver: str
    outer_tol: float
    outer_max_iter: int
    tol: float
    max_iter: int
    unbalanced_tau_abs: float | None = None
    mass: float = 1.0
    last_inner: OTReport | None = None
    solver_warnings: list[str] = field(default_factory=list)

    @property
    def iterations(self) -> int:
        return self.outer_iterations

    def to_dict(self) -> dict[str, Any]:
        return _jsonable(self)


def _warn(message: str, warn: bool) -> None:
    if warn:
        warnings.warn(message, MatchingConvergenceWarning, stacklevel=3)


# --- single entropic OT (POT) ------------------------------------------------------------------------------------

def entropic_ot(cost: Any, a: Any = None, b: Any = None, *, epsilon_rel: float = 0.05, max_iter: int = 2000,
                tol: float = 1e-7, unbalanced_tau: float | None = None, cost_scale: float | None = None,
                warmstart: tuple[torch.Tensor, torch.Tensor] | None = None, warn: bool = True,
                device: Any = None, dtype: torch.dtype | None = None, unbalanced_solver: str = "log",
                overrelax: float = 1.0, return_duals: bool = False) -> tuple:
    """Entropic OT ``argmin <P, C> + eps KL(P | a b^T)`` in the log domain, with a convergence report.

    ``eps = epsilon_rel * cost_scale`` (default ``cost_scale``: the mean of ``cost``). With
    ``unbalanced_tau`` the marginal constraints become ``tau KL(P 1 | a) + tau KL(P^T 1 | b)`` with
    ``tau = unbalanced_tau * cost_scale``. ``a``/``b`` default to uniform. Balanced problems use
    ``ot.bregman.sinkhorn_log``; unbalanced ones our log-domain solver (``unbalanced_solver="log"``,
    :func:`entropic_ot_batched` with one problem) or a method of ``ot.unbalanced.sinkhorn_unbalanced``
    (``"sinkhorn"``, ``"sinkhorn_translation_invariant"``, ``"sinkhorn_stabilized"``: see the module
    docstring for why the last is not the default). ``overrelax != 1`` runs our solver (balanced or
    not) with over-relaxation (see :func:`entropic_ot_batched`). Returns ``(plan, report)`` (plus the
    solver's log-domain duals, to pass back as ``warmstart`` to the same solver, when ``return_duals``).
    """
    M = _tensor(cost, device if device is not None else _device_of(cost), dtype)
    n, m = M.shape
    a = torch.full((n,), 1.0 / n, dtype=M.dtype, device=M.device) if a is None else _tensor(a, M.device, M.dtype)
    b = torch.full((m,), 1.0 / m, dtype=M.dtype, device=M.device) if b is None else _tensor(b, M.device, M.dtype)
    scale = _mean_scale(M) if cost_scale is None else float(cost_scale)
    eps = epsilon_rel * scale
    if not eps > 0:
        raise ValueError(f"epsilon must be positive, got epsilon_rel={epsilon_rel} x cost_scale={scale}")
    caught: list[warnings.WarningMessage]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ours = (unbalanced_solver == "log") if unbalanced_tau is not None else overrelax != 1.0
        if not ours and overrelax != 1.0:
            raise ValueError("overrelax needs our log-domain solver (unbalanced_solver='log')")
        if ours:
            tau_abs = None if unbalanced_tau is None else unbalanced_tau * scale
            plans, brep, bduals = entropic_ot_batched(M[None], epsilon_rel=epsilon_rel,
                                                      cost_scale=torch.tensor([scale], dtype=M.dtype),
                                                      unbalanced_tau=unbalanced_tau, max_iter=max_iter, tol=tol,
                                                      a=a[None], b=b[None], warmstart=warmstart, warn=False,
                                                      overrelax=overrelax, return_duals=True)
            plan = plans[0]
            duals = bduals
            stop_error = float(brep.stop_error[0])
            iterations, exact = int(brep.iterations[0]), True
            solver = (f"entropic_ot_batched (log-domain {'un' if unbalanced_tau is not None else ''}balanced "
                      f"Sinkhorn, overrelax {overrelax:g})")
        elif unbalanced_tau is None:
            plan, log = ot.bregman.sinkhorn_log(a, b, M, eps, numItermax=max_iter, stopThr=tol, log=True,
                                                warn=False, warmstart=warmstart)
            duals = (log["log_u"], log["log_v"])
            col_err = float(torch.linalg.vector_norm(plan.sum(0) - b))
            stop_error = col_err
            iterations, exact, tau_abs, solver = int(log["niter"]) + 1, True, None, "ot.bregman.sinkhorn_log"
        else:
            tau_abs = unbalanced_tau * scale
            plan, log = ot.unbalanced.sinkhorn_unbalanced(a, b, M, eps, tau_abs, method=unbalanced_solver,
                                                          reg_type="kl", numItermax=max_iter, stopThr=tol, log=True,
                                                          warmstart=warmstart)
            duals = (log["logu"], log["logv"])
            errs = [float(e) for e in log["err"]]
            stop_error = errs[-1] if errs else float("inf")
            iterations, exact = min(max_iter, _CHECK_EVERY * max(len(errs) - 1, 0) + 1), False
            if stop_error >= tol:
                iterations = max_iter
            solver = f"ot.unbalanced.sinkhorn_unbalanced(method={unbalanced_solver!r})"
    messages = [str(w.message) for w in caught if issubclass(w.category, Warning)]
    messages = [msg for msg in messages if "reg_type = entropy" not in msg]
    finite = bool(torch.isfinite(plan).all())
    numerical = any("Numerical errors" in msg for msg in messages)
    converged = finite and not numerical and stop_error < tol
    marginal_error = max(float((plan.sum(1) - a).abs().sum()), float((plan.sum(0) - b).abs().sum()))
    report = OTReport(iterations=iterations, converged=converged, marginal_error=marginal_error,
                      stop_error=stop_error, epsilon_abs=eps, epsilon_rel=epsilon_rel, cost_scale=scale, tol=tol,
                      max_iter=max_iter, solver=solver, unbalanced_tau_abs=tau_abs, mass=float(plan.sum()),
                      iterations_exact=exact, solver_warnings=messages)
    if not converged:
        _warn(f"entropic OT ({n} x {m}) did not converge: {iterations} iterations, stop error {stop_error:.3g} "
              f"(tol {tol:g}), eps {eps:.3g}" + ("" if finite else ", non-finite plan") +
              (f"; solver said: {messages[-1]}" if messages else ""), warn)
    if return_duals:
        return plan, report, duals
    return plan, report


# --- batched entropic OT (ours, torch) ---------------------------------------------------------------------------

def entropic_ot_batched(cost: torch.Tensor, row_mask: torch.Tensor | None = None, col_mask: torch.Tensor | None = None,
                        *, epsilon_rel: float = 0.05, cost_scale: torch.Tensor | None = None,
                        unbalanced_tau: float | None = None, max_iter: int = 2000, tol: float = 1e-7,
                        a: torch.Tensor | None = None, b: torch.Tensor | None = None,
                        warmstart: tuple[torch.Tensor, torch.Tensor] | None = None, return_duals: bool = False,
                        overrelax: float = 1.0, check_every: int = _CHECK_EVERY, warn: bool = True) -> tuple:
    """Many independent entropic OT problems ``(B, n, m)`` at once, log-domain Sinkhorn with padding masks.

    Problem ``k`` uses the rows with ``row_mask[k]`` and the columns with ``col_mask[k]`` (padding gets
    zero mass), uniform marginals over them, ``eps_k = epsilon_rel x cost_scale[k]`` (default: the mean
    of the problem's valid costs) and, with ``unbalanced_tau``, ``tau_k = unbalanced_tau x cost_scale[k]``.
    Same objective, stopping rules and check interval as :func:`entropic_ot` (balanced: L2 column
    violation < ``tol``; unbalanced: max change of the log-scaling in one iteration < ``tol``), per
    problem; the loop ends when every problem has converged or at ``max_iter``. Problems that have
    converged leave the work tensors at the next check (active set).

    ``a``/``b`` (``(B, n)``/``(B, m)``) replace the uniform marginals (zero on padding). The plan is
    ``a_i b_j exp(phi_i + gam_j - C_ij / eps)``; ``return_duals`` adds ``(phi, gam)``, which
    ``warmstart`` accepts. Returns ``(plan, report)`` or ``(plan, report, duals)``.

    ``overrelax`` (``omega``, default 1: plain Sinkhorn) replaces each half-step by
    ``phi <- (1 - omega) phi + omega phi_sinkhorn`` (Thibault et al. 2017; Lehmann et al. 2021). The fixed
    point is unchanged; the slow tail of nearly degenerate problems gets much shorter for ``omega`` in
    about ``1.5 .. 1.9``. Rows are then no longer exact after each step, so the balanced stopping rule
    takes the larger of the row and column L2 violations. Safeguard: a problem whose error climbs to
    ten times the best it has reached falls back to ``omega = 1``. Measured on the full-scale synthetic
    benchmark (400 problems of 35 x 350, eps 0.05, tol 1e-7): plain Sinkhorn left 28 problems
    unconverged at 2,000 iterations (they need up to ~18,000), ``omega = 1.9`` converged all of them
    within 1,840 iterations, in half the time, with the same top-8 edges.
    """
    if not 0.0 < overrelax < 2.0:
        raise ValueError(f"overrelax must lie in (0, 2), got {overrelax}")
    C = cost
    B, n, m = C.shape
    rmask = torch.ones(B, n, dtype=torch.bool, device=C.device) if row_mask is None else row_mask.to(C.device)
    cmask = torch.ones(B, m, dtype=torch.bool, device=C.device) if col_mask is None else col_mask.to(C.device)
    na = rmask.sum(1).to(C.dtype)
    nb = cmask.sum(1).to(C.dtype)
    if bool((na == 0).any()) or bool((nb == 0).any()):
        raise ValueError("every batched OT problem needs at least one row and one column")
    valid = rmask[:, :, None] & cmask[:, None, :]
    C = C.masked_fill(~valid, 0.0)
    if cost_scale is None:
        scale = C.sum((1, 2)) / (na * nb)
        scale = torch.where(scale > 0, scale, torch.ones_like(scale))
    else:
        scale = torch.as_tensor(cost_scale, dtype=C.dtype, device=C.device).expand(B)
    eps = epsilon_rel * scale
    neg_inf = torch.tensor(-math.inf, dtype=C.dtype, device=C.device)
    if a is None:
        loga = torch.where(rmask, -torch.log(na)[:, None], neg_inf)
    else:
        loga = torch.where(rmask & (a > 0), torch.log(a.to(C.dtype).clamp_min(1e-300)), neg_inf)
    if b is None:
        logb = torch.where(cmask, -torch.log(nb)[:, None], neg_inf)
    else:
        logb = torch.where(cmask & (b > 0), torch.log(b.to(C.dtype).clamp_min(1e-300)), neg_inf)
    K = C.div_(-eps[:, None, None])    # C is a fresh tensor (masked_fill), safe to reuse
    # Both half-steps reduce over the last axis of a contiguous tensor (much faster than a strided
    # reduction): KaT = (K + log a)^T for the column update, Kb = K + log b for the row update.
    KaT = (K + loga[:, :, None]).transpose(1, 2).contiguous()   # -inf on padded rows
    Kb = K.add_(logb[:, None, :])                                  # -inf on padded columns
    del K, C
    if unbalanced_tau is None:
        fi = torch.ones(B, 1, dtype=Kb.dtype, device=Kb.device)
    else:
        tau = unbalanced_tau * scale
        fi = (tau / (tau + eps))[:, None]
    b_marg = torch.exp(logb)
    if warmstart is None:
        phi = torch.zeros(B, n, dtype=Kb.dtype, device=Kb.device)
        gam = torch.zeros(B, m, dtype=Kb.dtype, device=Kb.device)
    else:
        phi = torch.nan_to_num(warmstart[0].to(Kb), neginf=0.0, posinf=0.0).reshape(B, n)
        gam = torch.nan_to_num(warmstart[1].to(Kb), neginf=0.0, posinf=0.0).reshape(B, m)
    iters = torch.full((B,), max_iter, dtype=torch.int64, device=Kb.device)
    stop = torch.full((B,), math.inf, dtype=Kb.dtype, device=Kb.device)
    done = torch.zeros(B, dtype=torch.bool, device=Kb.device)
    # Active set: problems still iterating; converged ones are dropped from the work tensors at the
    # next check (their potentials are final), so easy problems do not pay for the hardest one.
    act = torch.arange(B, device=Kb.device)
    a_marg = torch.exp(loga)
    relax = overrelax != 1.0
    A_KaT, A_Kb, A_fi, A_logb, A_bm, A_rmask, A_loga, A_am = KaT, Kb, fi, logb, b_marg, rmask, loga, a_marg
    A_om = torch.full((B, 1), float(overrelax), dtype=Kb.dtype, device=Kb.device)
    A_prev = torch.full((B,), math.inf, dtype=Kb.dtype, device=Kb.device)
    A_phi, A_gam = phi.clone(), gam.clone()
    lse_col = _lse(A_KaT + A_phi[:, None, :])
    for it in range(max_iter):
        g_new = -A_fi * lse_col
        A_gam = torch.lerp(A_gam, g_new, A_om) if relax else g_new
        lrow = _lse(A_Kb + A_gam[:, None, :])
        A_phi_prev = A_phi
        p_new = -A_fi * lrow
        A_phi = torch.lerp(A_phi, p_new, A_om) if relax else p_new
        lse_col = _lse(A_KaT + A_phi[:, None, :])
        if (it + 1) % check_every and it != 0 and it != max_iter - 1:
            continue
        if unbalanced_tau is None:
            col = torch.exp(A_logb + A_gam + lse_col)        # column marginal of the current plan
            err = torch.linalg.vector_norm(col - A_bm, dim=1)
            if relax:                                        # rows are exact only without relaxation
                row = torch.exp(A_loga + A_phi + lrow)
                err = torch.maximum(err, torch.linalg.vector_norm(row - A_am, dim=1))
        else:
            err = torch.where(A_rmask, (A_phi - A_phi_prev).abs(), torch.zeros_like(A_phi)).amax(1)
        err = torch.where(torch.isfinite(err), err, torch.full_like(err, math.inf))
        if relax:
            # Safeguard: the over-relaxed error oscillates, but a problem whose error climbs to 10x the
            # best it has reached falls back to plain Sinkhorn (omega = 1) for good.
            A_om = torch.where((err > 10.0 * A_prev)[:, None], torch.ones_like(A_om), A_om)
            A_prev = torch.minimum(A_prev, err)
        ok = err < tol
        stop[act] = err
        phi[act] = A_phi
        gam[act] = A_gam
        if bool(ok.any()):
            iters[act[ok]] = it + 1
            done[act[ok]] = True
            keep = ~ok
            if not bool(keep.any()):
                break
            act = act[keep]
            (A_KaT, A_Kb, A_fi, A_logb, A_bm, A_rmask, A_loga, A_am, A_om, A_prev, A_phi, A_gam, lse_col) = (
                t[keep] for t in (A_KaT, A_Kb, A_fi, A_logb, A_bm, A_rmask, A_loga, A_am, A_om, A_prev, A_phi, A_gam,
                                  lse_col))
    del A_KaT, A_Kb
    Ka = KaT.transpose(1, 2)
    plan = torch.exp(Ka + logb[:, None, :] + phi[:, :, None] + gam[:, None, :])
    del Ka, KaT, Kb
    marg = torch.maximum((plan.sum(2) - a_marg).abs().sum(1), (plan.sum(1) - b_marg).abs().sum(1))
    finite = torch.isfinite(plan).flatten(1).all(1)
    converged = done & finite
    report = BatchOTReport(iterations=_numpy(iters), converged=_numpy(converged), marginal_error=_numpy(marg),
                           stop_error=_numpy(stop), epsilon_abs=_numpy(eps),
                           sizes=np.stack([_numpy(na).astype(np.int64), _numpy(nb).astype(np.int64)], 1),
                           tol=tol, max_iter=max_iter, unbalanced_tau_rel=unbalanced_tau)
    if not report.all_converged:
        bad = int((~report.converged).sum())
        _warn(f"batched entropic OT: {bad} of {B} problems did not converge in {max_iter} iterations "
              f"(max stop error {float(np.max(report.stop_error)):.3g}, tol {tol:g})", warn)
    if return_duals:
        return plan, report, (phi, gam)
    return plan, report


# --- image level: entropic fused Gromov-Wasserstein --------------------------------------------------------------

def fused_gw_from_costs(cost: Any, dx: Any, dy: Any, *, alpha: float = 0.5, epsilon_rel: float = 0.05,
                        a: Any = None, b: Any = None, unbalanced_tau: float | None = None, max_iter: int = 2000,
                        tol: float = 1e-7, outer_max_iter: int = 200, outer_tol: float = 1e-6,
                        solver: str = "pgd", normalise: bool = True, overrelax: float = 1.0, warn: bool = True,
                        device: Any = None, dtype: torch.dtype | None = None) -> tuple[torch.Tensor, FGWReport]:
    """Entropic FGW plan from a cross cost ``C`` (Ns x Nt) and intra-domain distances ``D_X``, ``D_Y``.

    Minimises ``(1 - alpha) <C, P> + alpha <S(P), P> + eps KL(P | a b^T)`` over ``Pi(a, b)`` (or with KL
    marginal penalties when ``unbalanced_tau`` is given) after dividing ``C``, ``D_X``, ``D_Y`` by their
    means (``normalise``). ``max_iter``/``tol`` apply to each inner Sinkhorn solve, ``outer_max_iter``/
    ``outer_tol`` to the PGD loop (relative Frobenius change of the plan). ``overrelax != 1`` makes the
    inner solves over-relaxed (our log-domain solver instead of ``ot.bregman.sinkhorn_log``). See the
    module docstring.
    """
    dev = device if device is not None else _device_of(cost, dx, dy)
    C, DX, DY = (_tensor(v, dev, dtype) for v in (cost, dx, dy))
    ns, nt = C.shape
    if DX.shape != (ns, ns) or DY.shape != (nt, nt):
        raise ValueError(f"shapes disagree: C {tuple(C.shape)}, D_X {tuple(DX.shape)}, D_Y {tuple(DY.shape)}")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must lie in [0, 1], got {alpha}")
    scales = {"C": 1.0, "D_X": 1.0, "D_Y": 1.0}
    if normalise:
        scales = {"C": _mean_scale(C), "D_X": _mean_scale(DX), "D_Y": _mean_scale(DY)}
        C, DX, DY = C / scales["C"], DX / scales["D_X"], DY / scales["D_Y"]
    a = torch.full((ns,), 1.0 / ns, dtype=C.dtype, device=C.device) if a is None else _tensor(a, C.device, C.dtype)
    b = torch.full((nt,), 1.0 / nt, dtype=C.dtype, device=C.device) if b is None else _tensor(b, C.device, C.dtype)
    T = a[:, None] * b[None, :]
    cost_scale = float(((1.0 - alpha) * C + alpha * gromov_term(DX, DY, T)).mean())
    cost_scale = cost_scale if cost_scale > 0 else 1.0
    eps = epsilon_rel * cost_scale
    tau_abs = None if unbalanced_tau is None else unbalanced_tau * cost_scale
    common = dict(epsilon_abs=eps, epsilon_rel=epsilon_rel, cost_scale=cost_scale, alpha=alpha, scales=scales,
                  outer_tol=outer_tol, outer_max_iter=outer_max_iter, tol=tol, max_iter=max_iter,
                  unbalanced_tau_abs=tau_abs)

    if solver == "pot":
        if unbalanced_tau is not None:
            raise ValueError("solver='pot' is balanced only; use solver='pgd' for the unbalanced relaxation")
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            T, log = ot.gromov.entropic_fused_gromov_wasserstein(
                C, DX, DY, a, b, loss_fun="square_loss", epsilon=eps, symmetric=True, alpha=alpha,
                max_iter=outer_max_iter, tol=outer_tol, solver="PGD", log=True, numItermax=max_iter, stopThr=tol)
        messages = [str(w.message) for w in caught]
        errs = [float(e) for e in log["err"]]
        outer_conv = bool(errs) and errs[-1] <= outer_tol
        inner_bad = sum("did not converge" in msg for msg in messages)
        total, lin, gw = fused_objective(C, DX, DY, T, alpha)
        marg = max(float((T.sum(1) - a).abs().sum()), float((T.sum(0) - b).abs().sum()))
        report = FGWReport(converged=outer_conv and inner_bad == 0, outer_converged=outer_conv,
                           outer_iterations=_CHECK_EVERY * max(len(errs) - 1, 0) + 1 if outer_conv else outer_max_iter,
                           plan_change=errs[-1] if errs else math.inf, inner_iterations_total=-1,
                           inner_not_converged=inner_bad, marginal_error=marg, objective=total, linear_term=lin,
                           gromov_term=gw, solver="ot.gromov.entropic_fused_gromov_wasserstein(solver='PGD')",
                           mass=float(T.sum()), solver_warnings=messages, **common)
        if not report.converged:
            _warn(f"POT entropic FGW did not converge: {report.outer_iterations} outer iterations, "
                  f"last error {report.plan_change:.3g}", warn)
        return T, report
    if solver != "pgd":
        raise ValueError(f"unknown FGW solver {solver!r}; expected 'pgd' or 'pot'")

    inner_total = 0
    inner_bad = 0
    messages: list[str] = []
    duals = None
    change = math.inf
    outer_conv = False
    rep = None
    k = 0
    for k in range(1, outer_max_iter + 1):
        grad = (1.0 - alpha) * C + (2.0 * alpha) * gromov_term(DX, DY, T) if alpha > 0 else C
        T_new, rep, new_duals = entropic_ot(grad, a, b, epsilon_rel=epsilon_rel, cost_scale=cost_scale,
                                            max_iter=max_iter, tol=tol, unbalanced_tau=unbalanced_tau,
                                            warmstart=duals, warn=False, overrelax=overrelax, return_duals=True)
        inner_total += rep.iterations
        if not rep.converged:
            inner_bad += 1
            messages.extend(rep.solver_warnings[-1:] or [f"inner solve {k} stopped at {rep.iterations} iterations "
                                                         f"(stop error {rep.stop_error:.3g})"])
        # Warm-start the next projection from these duals, converged or not (they are closer than zero).
        duals = new_duals if all(bool(torch.isfinite(d).all()) for d in new_duals) else None
        change = float(torch.linalg.matrix_norm(T_new - T) / torch.linalg.matrix_norm(T_new).clamp_min(1e-300))
        T = T_new
        if alpha == 0 or change < outer_tol:
            outer_conv = True
            break
    total, lin, gw = fused_objective(C, DX, DY, T, alpha)
    marg = max(float((T.sum(1) - a).abs().sum()), float((T.sum(0) - b).abs().sum()))
    last_ok = rep is not None and rep.converged
    report = FGWReport(converged=outer_conv and last_ok, outer_converged=outer_conv, outer_iterations=k,
                       plan_change=change, inner_iterations_total=inner_total, inner_not_converged=inner_bad,
                       marginal_error=marg, objective=total, linear_term=lin, gromov_term=gw,
                       solver="pgd+" + (rep.solver if rep else "?"), mass=float(T.sum()), last_inner=rep,
                       solver_warnings=messages[-5:], **common)
    if not report.converged:
        _warn(f"entropic FGW did not converge: {k} outer iterations (relative plan change {change:.3g}, "
              f"outer_tol {outer_tol:g}), {inner_bad} inner solves not converged", warn)
    return T, report


def fused_gw_plan(xs: Any, xt: Any, *, alpha: float = 0.5, epsilon_rel: float = 0.05,
                  unbalanced_tau: float | None = None, max_iter: int = 2000, tol: float = 1e-7,
                  outer_max_iter: int = 200, outer_tol: float = 1e-6, solver: str = "pgd", overrelax: float = 1.0,
                  warn: bool = True, device: Any = None,
                  dtype: torch.dtype | None = None) -> tuple[torch.Tensor, FGWReport]:
    """Image-level plan from descriptors ``xs`` (Ns x D) and ``xt`` (Nt x D): eqs. 1-5 under our reading.

    Uniform marginals; ``unbalanced_tau`` switches to the unbalanced relaxation. ``alpha=0`` is plain
    entropic OT on ``C``.
    """
    dev = device if device is not None else _device_of(xs, xt)
    xs, xt = _tensor(xs, dev, dtype), _tensor(xt, dev, dtype)
    return fused_gw_from_costs(sq_distances(xs, xt), sq_distances(xs), sq_distances(xt), alpha=alpha,
                               epsilon_rel=epsilon_rel, unbalanced_tau=unbalanced_tau, max_iter=max_iter, tol=tol,
                               outer_max_iter=outer_max_iter, outer_tol=outer_tol, solver=solver,
                               overrelax=overrelax, warn=warn)


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


# --- patch level -------------------------------------------------------------------------------------------------

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
    uniform source marginal, and by ``image_level`` (:data:`IMAGE_LEVELS`):

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
    n_src_img = top_images.shape[0]
    P_img = None if image_plan is None else _numpy(image_plan).astype(np.float64)
    if mode == "ot" and P_img is None:
        raise ValueError("mode='ot' needs the image plan")
    if image_level not in IMAGE_LEVELS:
        raise ValueError(f"unknown image_level {image_level!r}; expected one of {', '.join(IMAGE_LEVELS)}")
    src_table = _group_table(src_parent, n_src_img)
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
    sq_x = (X * X).sum(1)
    sq_y = (Y * Y).sum(1)
    P_img_t = None if P_img is None else torch.as_tensor(P_img, device=dev, dtype=dt)
    n_patches_t = torch.as_tensor((tgt_table >= 0).sum(1), device=dev, dtype=dt).clamp_min(1.0)
    itemsize = torch.finfo(dt).bits // 8
    d = X.shape[1]

    edge_src: list[np.ndarray] = []
    edge_tgt: list[np.ndarray] = []
    edge_w: list[np.ndarray] = []
    reports: list[BatchOTReport] = []
    timing = {"cost": 0.0, "solve": 0.0, "select": 0.0}
    # Chunks of problems, sorted by size so padding within a chunk stays small.
    order = np.lexsort((n_cand, n_rows))
    start = 0
    while start < len(order):
        n_max = int(n_rows[order[start:]].max())
        m_max = int(n_cand[order[start:]].max())
        per_problem = (m_max * d + n_max * d + 8 * n_max * m_max) * itemsize
        size = max(1, min(len(order) - start, int(max_chunk_bytes // max(per_problem, 1))))
        idx = order[start:start + size]
        start += size
        t1 = time.perf_counter()
        rows = src_table[problems[idx]][:, : int(n_rows[idx].max())]
        cols = cand[idx][:, : int(n_cand[idx].max())]
        rmask = torch.as_tensor(rows >= 0, device=dev)
        cmask = torch.as_tensor(cols >= 0, device=dev)
        ri = torch.as_tensor(np.maximum(rows, 0), device=dev)
        ci = torch.as_tensor(np.maximum(cols, 0), device=dev)
        Xb = X[ri]
        Yb = Y[ci]
        cost = torch.baddbmm(sq_x[ri][:, :, None] + sq_y[ci][:, None, :], Xb, Yb.transpose(1, 2), alpha=-2.0)
        cost.clamp_min_(0.0)
        del Xb, Yb
        t2 = time.perf_counter()
        if mode == "ot":
            cand_img = torch.as_tensor(tgt_parent[np.maximum(cols, 0)], device=dev)
            src_img = torch.as_tensor(problems[idx], device=dev)
            pimg = P_img_t[src_img[:, None], cand_img].masked_fill(~cmask, 0.0)
            b = None
            if image_level == "marginal":
                b = pimg / n_patches_t[cand_img]
                b = b / b.sum(1, keepdim=True).clamp_min(1e-300)
            plan, rep = entropic_ot_batched(cost, rmask, cmask & (b > 0) if b is not None else cmask,
                                            epsilon_rel=epsilon_rel, unbalanced_tau=unbalanced_tau, b=b,
                                            max_iter=max_iter, tol=tol, overrelax=overrelax, warn=False)
            reports.append(rep)
            del cost
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
            vals, pos = torch.topk(score, k, dim=2)
        elif mode == "knn":
            dist = cost.masked_fill(~cmask[:, None, :], math.inf)
            k = min(top_patches, dist.shape[2])
            neg, pos = torch.topk(-dist, k, dim=2)
            vals = _knn_weights(-neg, knn_weighting, epsilon_rel)
            vals = vals.masked_fill(~torch.isfinite(neg), -1.0)
            del cost
        else:
            raise ValueError(f"unknown patch mode {mode!r}")
        t3 = time.perf_counter()
        vals_np, pos_np = _numpy(vals), _numpy(pos)
        keep = (vals_np > 0) & (rows >= 0)[:, :, None]
        tgt = np.take_along_axis(np.broadcast_to(cols[:, None, :], (*rows.shape, cols.shape[1])), pos_np, 2)
        src = np.broadcast_to(rows[:, :, None], pos_np.shape)
        edge_src.append(src[keep])
        edge_tgt.append(tgt[keep])
        edge_w.append(vals_np[keep])
        timing["cost"] += t2 - t1
        timing["solve"] += t3 - t2
        timing["select"] += time.perf_counter() - t3
    t4 = time.perf_counter()
    src_all = np.concatenate(edge_src) if edge_src else np.zeros(0, np.int64)
    tgt_all = np.concatenate(edge_tgt) if edge_tgt else np.zeros(0, np.int64)
    w_all = np.concatenate(edge_w) if edge_w else np.zeros(0)
    # Per source patch: order edges by decreasing weight (ties: lower target index), renormalise.
    o = np.lexsort((tgt_all, -w_all, src_all))
    src_all, tgt_all, w_all = src_all[o], tgt_all[o], w_all[o]
    counts = np.bincount(src_all, minlength=X.shape[0])
    missing = np.flatnonzero(counts == 0)
    if missing.size:
        raise ValueError(f"{missing.size} source patches got no pseudo-pair (e.g. patch {int(missing[0])})")
    indptr = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    sums = np.add.reduceat(w_all, indptr[:-1])
    w_all = w_all / np.repeat(sums, counts)
    report = BatchOTReport.concatenate(reports) if reports else None
    if report is not None:
        # Chunks ran in size order; put the per-problem arrays back in source-image order.
        inv = np.empty_like(order)
        inv[order] = np.arange(order.size)
        for name in ("iterations", "converged", "marginal_error", "stop_error", "epsilon_abs", "sizes"):
            setattr(report, name, getattr(report, name)[inv])
    if report is not None and not report.all_converged:
        bad = int((~report.converged).sum())
        _warn(f"patch-level OT: {bad} of {len(report.converged)} problems did not converge in {max_iter} "
              f"iterations (max stop error {float(report.stop_error.max()):.3g}, tol {tol:g})", warn)
    timing["assemble"] = time.perf_counter() - t4
    timing["total"] = time.perf_counter() - t0
    return PatchMatch(indptr=indptr, indices=tgt_all.astype(np.int64), weights=w_all, report=report,
                      problems=problems, seconds=timing)


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


# --- the sparse pseudo-pair graph --------------------------------------------------------------------------------

def _check_ids(ids: Sequence[str], what: str) -> tuple[str, ...]:
    ids = tuple(ids)
    for i in ids:
        if not isinstance(i, str) or not i or "\x00" in i:
            raise PairGraphError(f"{what}: ids must be non-empty strings without NUL, got {i!r}")
    if len(set(ids)) != len(ids):
        seen: set[str] = set()
        for i in ids:
            if i in seen:
                raise PairGraphError(f"{what}: duplicate id {i!r}")
            seen.add(i)
    return ids


class PairGraph:
    """Sparse pseudo-pair graph keyed by stable ids: per source id, ``(target_id, weight)`` edges summing to 1.

    Stored as CSR arrays: ``indptr`` (``len(source_ids) + 1``), ``indices`` (positions in ``target_ids``)
    and ``weights`` (float64), plus the two id lists and a JSON-able ``meta`` dict. Edges of a source
    are in decreasing weight order.
    """

    def __init__(self, source_ids: Sequence[str], target_ids: Sequence[str], indptr: Any, indices: Any,
                 weights: Any, meta: dict[str, Any] | None = None, *, _where: str = "pair graph"):
        self.source_ids = _check_ids(source_ids, f"{_where}: source_ids")
        self.target_ids = _check_ids(target_ids, f"{_where}: target_ids")
        self.indptr = np.ascontiguousarray(indptr, dtype=np.int64)
        self.indices = np.ascontiguousarray(indices, dtype=np.int64)
        self.weights = np.ascontiguousarray(weights, dtype=np.float64)
        self.meta = dict(meta or {})
        self._validate(_where)
        self._row = {s: i for i, s in enumerate(self.source_ids)}

    def _validate(self, where: str) -> None:
        ns, nt = len(self.source_ids), len(self.target_ids)
        p, idx, w = self.indptr, self.indices, self.weights
        if p.ndim != 1 or idx.ndim != 1 or w.ndim != 1:
            raise PairGraphError(f"{where}: CSR arrays must be 1-D")
        if p.shape[0] != ns + 1 or p[0] != 0 or p[-1] != idx.shape[0] or idx.shape != w.shape:
            raise PairGraphError(f"{where}: inconsistent CSR shapes (indptr {p.shape[0]} for {ns} sources, "
                                 f"{idx.shape[0]} indices, {w.shape[0]} weights)")
        if np.any(np.diff(p) <= 0):
            raise PairGraphError(f"{where}: every source needs at least one edge (indptr must increase)")
        if idx.size and (idx.min() < 0 or idx.max() >= nt):
            raise PairGraphError(f"{where}: target index out of range [0, {nt})")
        if not np.all(np.isfinite(w)) or np.any(w < 0):
            raise PairGraphError(f"{where}: weights must be finite and non-negative")
        sums = np.add.reduceat(w, p[:-1]) if ns else np.zeros(0)
        if ns and np.max(np.abs(sums - 1.0)) > 1e-9:
            worst = int(np.argmax(np.abs(sums - 1.0)))
            raise PairGraphError(f"{where}: weights of source {self.source_ids[worst]!r} sum to {sums[worst]!r}, not 1")
        rows = np.repeat(np.arange(ns), np.diff(p))
        if idx.size and np.unique(rows * np.int64(nt) + idx).size != idx.size:
            raise PairGraphError(f"{where}: a source lists the same target twice")

    # -- access
    def __len__(self) -> int:
        return len(self.source_ids)

    @property
    def n_edges(self) -> int:
        return int(self.indices.shape[0])

    def row(self, source_id: str) -> list[tuple[str, float]]:
        """``[(target_id, weight), ...]`` of one source, by decreasing weight."""
        try:
            r = self._row[source_id]
        except KeyError:
            raise KeyError(f"source id {source_id!r} is not in the pair graph") from None
        lo, hi = self.indptr[r], self.indptr[r + 1]
        return [(self.target_ids[t], float(w)) for t, w in zip(self.indices[lo:hi], self.weights[lo:hi])]

    def to_edges(self) -> list[tuple[str, str, float]]:
        """All edges as ``(source_id, target_id, weight)``, sources in graph order."""
        rows = np.repeat(np.arange(len(self.source_ids)), np.diff(self.indptr))
        return [(self.source_ids[r], self.target_ids[t], float(w))
                for r, t, w in zip(rows.tolist(), self.indices.tolist(), self.weights)]

    def to_dict(self) -> dict[str, list[tuple[str, float]]]:
        """``{source_id: [(target_id, weight), ...]}``."""
        return {s: self.row(s) for s in self.source_ids}

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, PairGraph):
            return NotImplemented
        return (self.source_ids == other.source_ids and self.target_ids == other.target_ids
                and np.array_equal(self.indptr, other.indptr) and np.array_equal(self.indices, other.indices)
                and np.array_equal(self.weights, other.weights) and self.meta == other.meta)

    def __repr__(self) -> str:
        return (f"PairGraph({len(self.source_ids)} sources, {len(self.target_ids)} targets, {self.n_edges} edges, "
                f"meta={self.meta})")

    # -- construction
    @classmethod
    def from_rows(cls, source_ids: Sequence[str], target_ids: Sequence[str], rows: Sequence[Sequence[int]],
                  weights: Sequence[Sequence[float]], meta: dict[str, Any] | None = None,
                  normalise: bool = True) -> "PairGraph":
        """Build from per-source lists of target positions and weights (sorted and normalised here)."""
        indptr = [0]
        idx_all: list[np.ndarray] = []
        w_all: list[np.ndarray] = []
        for r, w in zip(rows, weights):
            r = np.asarray(r, dtype=np.int64)
            w = np.asarray(w, dtype=np.float64)
            o = np.lexsort((r, -w))
            r, w = r[o], w[o]
            if normalise:
                w = w / w.sum()
            idx_all.append(r)
            w_all.append(w)
            indptr.append(indptr[-1] + len(r))
        return cls(source_ids, target_ids, np.asarray(indptr), np.concatenate(idx_all) if idx_all else [],
                   np.concatenate(w_all) if w_all else [], meta)

    # -- persistence
    def save(self, path: str | Path) -> Path:
        """Write one ``.npz`` atomically (temporary file, fsync, rename); zip CRCs guard the bytes."""
        buf = io.BytesIO()
        header = {"format": GRAPH_FORMAT, "version": GRAPH_VERSION, "meta": self.meta}
        np.savez(buf, header=np.array(json.dumps(_jsonable(header), sort_keys=True)),
                 source_ids=np.array(self.source_ids, dtype=str), target_ids=np.array(self.target_ids, dtype=str),
                 indptr=self.indptr, indices=self.indices, weights=self.weights)
        return atomic_write_bytes(path, buf.getvalue())

    @classmethod
    def load(cls, path: str | Path) -> "PairGraph":
        """Read and validate a graph written by :meth:`save`; :class:`PairGraphError` names the file if corrupt."""
        path = Path(path)
        try:
            data = path.read_bytes()
            with np.load(io.BytesIO(data), allow_pickle=False) as z:
                arrays = {k: z[k] for k in ("header", "source_ids", "target_ids", "indptr", "indices", "weights")}
            header = json.loads(str(arrays["header"]))
        except FileNotFoundError:
            raise
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile, json.JSONDecodeError) as exc:
            raise PairGraphError(f"{path}: corrupt or not a pair graph file ({type(exc).__name__}: {exc})") from exc
        if not isinstance(header, dict) or header.get("format") != GRAPH_FORMAT:
            fmt = header.get("format") if isinstance(header, dict) else header
            raise PairGraphError(f"{path}: not a pair graph file (format {fmt!r})")
        if header.get("version") != GRAPH_VERSION:
            raise PairGraphError(f"{path}: unsupported pair graph version {header.get('version')!r}")
        for name in ("indptr", "indices"):
            if arrays[name].dtype.kind not in "iu":
                raise PairGraphError(f"{path}: {name} must be integers, got {arrays[name].dtype}")
        return cls(arrays["source_ids"].tolist(), arrays["target_ids"].tolist(), arrays["indptr"], arrays["indices"],
                   arrays["weights"], header.get("meta") or {}, _where=str(path))

    # -- sampling
    def sampler(self, seed: int | None = 0) -> "GraphSampler":
        return GraphSampler(self, seed)


class GraphSampler:
    """Draws one target per source with probability equal to its edge weight (inverse CDF, vectorised)."""

    def __init__(self, graph: PairGraph, seed: int | None = 0):
        self.graph = graph
        self.rng = np.random.default_rng(seed)
        counts = np.diff(graph.indptr)
        rows = np.repeat(np.arange(len(graph.source_ids)), counts)
        total = np.concatenate([[0.0], np.cumsum(graph.weights)])
        row_sum = total[graph.indptr[1:]] - total[graph.indptr[:-1]]
        within = (total[1:] - np.repeat(total[graph.indptr[:-1]], counts)) / np.repeat(row_sum, counts)
        # Key of an edge of row r: r + (cumulative weight within the row), in [r, r + 1], the row's last
        # key exactly r + 1; a draw for row r is r + u with u uniform in [0, 1): its edge is the first key
        # above it (zero-weight edges repeat the previous key and are never chosen).
        keys = rows + np.clip(within, 0.0, 1.0)
        keys[graph.indptr[1:] - 1] = np.arange(1, len(graph.source_ids) + 1)
        self._keys = keys

    def sample_indices(self, rows: np.ndarray) -> np.ndarray:
        """Target positions for source rows ``rows``."""
        rows = np.asarray(rows, dtype=np.int64)
        u = self.rng.random(rows.shape[0])
        pos = np.searchsorted(self._keys, rows + u, side="right")
        return np.clip(pos, self.graph.indptr[rows], self.graph.indptr[rows + 1] - 1)

    def sample(self, source_ids: Sequence[str]) -> list[str]:
        """One target id per source id, drawn with probability ``w_st``; reproducible for a seed."""
        try:
            rows = np.fromiter((self.graph._row[s] for s in source_ids), dtype=np.int64, count=len(source_ids))
        except KeyError as exc:
            raise KeyError(f"source id {exc.args[0]!r} is not in the pair graph") from None
        tids = self.graph.target_ids
        return [tids[t] for t in self.graph.indices[self.sample_indices(rows)].tolist()]


# --- baselines -----------------------------------------------------------------------------------------------------

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


# --- statistics ----------------------------------------------------------------------------------------------------

def graph_stats(graph: PairGraph) -> dict[str, float]:
    """Diversity of a pair graph (many-to-one collapse shows as few targets, high in-degree and Gini).

    * ``distinct_targets`` / ``fraction_targets_used``: targets with at least one edge;
    * ``distinct_top1_targets``: targets that are some source's highest-weight edge;
    * ``max_in_degree``: most edges into one target; ``max_load``: the largest expected number of draws
      of one target when every source draws once (sum of its incoming weights);
    * ``gini_load`` (0: every target equally used, -> 1: one target takes all) and
      ``load_entropy_norm`` (entropy of the load distribution / log(#targets), 1 = uniform);
    * ``mean_weight_entropy``: mean over sources of the entropy (nats) of its edge weights.
    """
    ns, nt = len(graph.source_ids), len(graph.target_ids)
    deg = np.bincount(graph.indices, minlength=nt)
    load = np.bincount(graph.indices, weights=graph.weights, minlength=nt)
    top1 = graph.indices[graph.indptr[:-1]] if ns else np.zeros(0, np.int64)
    srt = np.sort(load)
    total = load.sum()
    gini = float((2 * np.sum(np.arange(1, nt + 1) * srt) / (nt * total)) - (nt + 1) / nt) if total > 0 else 0.0
    p = load[load > 0] / total if total > 0 else np.zeros(0)
    ent = float(-(p * np.log(p)).sum()) if p.size else 0.0
    w = graph.weights
    wl = np.where(w > 0, w * np.log(np.where(w > 0, w, 1.0)), 0.0)
    row_ent = -np.add.reduceat(wl, graph.indptr[:-1]) if ns else np.zeros(0)
    return {
        "sources": ns,
        "targets": nt,
        "edges": graph.n_edges,
        "mean_edges_per_source": graph.n_edges / ns if ns else 0.0,
        "distinct_targets": int((deg > 0).sum()),
        "fraction_targets_used": float((deg > 0).mean()) if nt else 0.0,
        "distinct_top1_targets": int(np.unique(top1).size),
        "max_in_degree": int(deg.max()) if nt else 0,
        "max_load": float(load.max()) if nt else 0.0,
        "gini_load": gini,
        "load_entropy_norm": ent / math.log(nt) if nt > 1 else 1.0,
        "mean_weight_entropy": float(row_ent.mean()) if ns else 0.0,
    }


# --- the notebook entry point --------------------------------------------------------------------------------------

@dataclass(frozen=True)
class DescriptorSet:
    """Descriptors with stable ids; patches also name their parent image (``parents``)."""

    ids: tuple[str, ...]
    features: Any
    """``(N, D)`` numpy array or torch tensor."""
    parents: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "ids", _check_ids(self.ids, "DescriptorSet"))
        if self.parents is not None:
            object.__setattr__(self, "parents", tuple(self.parents))
            if len(self.parents) != len(self.ids):
                raise ValueError(f"{len(self.parents)} parents for {len(self.ids)} ids")
        shape = tuple(self.features.shape)
        if len(shape) != 2 or shape[0] != len(self.ids):
            raise ValueError(f"features must be (len(ids), D) = ({len(self.ids)}, D), got {shape}")

    def __len__(self) -> int:
        return len(self.ids)

    def sorted(self) -> "DescriptorSet":
        """The same set ordered by id (what :func:`match_dataset` works on)."""
        order = sorted(range(len(self.ids)), key=self.ids.__getitem__)
        if order == list(range(len(self.ids))):
            return self
        o = (torch.as_tensor(order, device=self.features.device) if isinstance(self.features, torch.Tensor)
             else np.asarray(order))
        return DescriptorSet(tuple(self.ids[i] for i in order), self.features[o],
                             None if self.parents is None else tuple(self.parents[i] for i in order))


@dataclass
class MatchResult:
    """Everything :func:`match_dataset` produces (ids sorted; plans indexed by the sorted id lists)."""

    method: str
    config: dict[str, Any]
    source_image_ids: tuple[str, ...]
    target_image_ids: tuple[str, ...]
    image_plan: np.ndarray | None
    image_report: FGWReport | None
    top_images: np.ndarray | None
    """``(Ns_img, k)`` positions in ``target_image_ids``, best first."""
    top_image_scores: np.ndarray | None
    patch_graph: PairGraph
    patch_report: BatchOTReport | None
    seconds: dict[str, float] = field(default_factory=dict)

    @property
    def converged(self) -> bool:
        ok = self.image_report is None or self.image_report.converged
        return ok and (self.patch_report is None or self.patch_report.all_converged)

    def image_graph(self) -> PairGraph | None:
        """The top-k image lists as a graph (weights: plan entries renormalised per source image)."""
        if self.top_images is None:
            return None
        scores = np.maximum(self.top_image_scores, 1e-300)
        return PairGraph.from_rows(self.source_image_ids, self.target_image_ids, self.top_images, scores,
                                   {"method": self.method, "level": "image"})

    def summary(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "config": self.config,
            "converged": self.converged,
            "source_images": len(self.source_image_ids),
            "target_images": len(self.target_image_ids),
            "image_report": None if self.image_report is None else self.image_report.to_dict(),
            "patch_report": None if self.patch_report is None else self.patch_report.summary(),
            "patch_graph_stats": graph_stats(self.patch_graph),
            "seconds": self.seconds,
        }

    def save(self, folder: str | Path) -> Path:
        """Write ``patch_graph.npz``, ``image_graph.npz`` + ``image_plan.npy`` (when present) and
        ``match_report.json``, each atomically."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        self.patch_graph.save(folder / "patch_graph.npz")
        ig = self.image_graph()
        if ig is not None:
            ig.save(folder / "image_graph.npz")
        if self.image_plan is not None:
            atomic_save_npy(folder / "image_plan.npy", self.image_plan)
        atomic_write_json(folder / "match_report.json", _jsonable(self.summary()))
        return folder


def match_dataset(source_images: DescriptorSet, target_images: DescriptorSet, source_patches: DescriptorSet,
                  target_patches: DescriptorSet, cfg: MatchConfig | None = None, *, seed: int = 0,
                  device: Any = None, dtype: torch.dtype | None = None, knn_scope: str = "global",
                  knn_weighting: str = "uniform", outer_max_iter: int = 200, outer_tol: float = 1e-6,
                  max_chunk_bytes: int = 256 << 20, overrelax: float = 1.0, warn: bool = True) -> MatchResult:
    """Section 4.2 end to end, dispatching on ``cfg.method``.

    * ``ot``: entropic FGW image plan (uniform marginals; ``cfg.image_epsilon`` and ``cfg.image_tau``
      soften or relax it), top ``cfg.top_images`` per source image, patch-level entropic OT combined
      with the image plan as ``cfg.image_level`` says (``paper``: ``w_st ∝ P_patch P_image``), top
      ``cfg.top_patches``;
    * ``unbalanced``: the same with the unbalanced relaxation (``cfg.unbalanced_tau``) at both levels;
    * ``knn``: image top-k by descriptor distance; patches: ``knn_scope="global"`` (default) the
      ``top_patches`` nearest of all target patches, or ``"top_images"`` the nearest among the patches
      of the FGW top images (the ablation that isolates the patch-level OT);
    * ``random``: ``top_patches`` uniformly random target patches per source patch (``seed``).

    Inputs are sorted by id first, so results per id do not depend on input order. ``device=None`` uses
    the features' device (CPU for numpy); ``"auto"`` picks CUDA when visible. ``cfg.max_iter``/``cfg.tol``
    bound every Sinkhorn solve, ``outer_max_iter``/``outer_tol`` the FGW loop; ``overrelax`` (default 1,
    plain Sinkhorn) applies to the image-level inner solves and the patch level. Non-converged solves
    warn (``warn=True``) and show in ``MatchResult.converged`` and the reports.
    """
    cfg = cfg or MatchConfig()
    if cfg.method not in METHODS:
        raise ValueError(f"unknown matching method {cfg.method!r}; expected one of {', '.join(METHODS)}")
    if knn_scope not in ("global", "top_images"):
        raise ValueError(f"knn_scope must be 'global' or 'top_images', got {knn_scope!r}")
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    t0 = time.perf_counter()
    si, ti, sp, tp = (d.sorted() for d in (source_images, target_images, source_patches, target_patches))
    for name, p, img in (("source", sp, si), ("target", tp, ti)):
        if p.parents is None:
            raise ValueError(f"{name} patches need parent image ids")
        known = set(img.ids)
        unknown = [q for q in p.parents if q not in known]
        if unknown:
            raise ValueError(f"{name} patch parent {unknown[0]!r} is not a {name} image id")
    s_pos = {s: i for i, s in enumerate(si.ids)}
    t_pos = {t: j for j, t in enumerate(ti.ids)}
    src_parent = np.array([s_pos[q] for q in sp.parents], dtype=np.int64)
    tgt_parent = np.array([t_pos[q] for q in tp.parents], dtype=np.int64)
    conf = dataclasses.asdict(cfg)
    seconds: dict[str, float] = {}
    unb = cfg.unbalanced_tau if cfg.method == "unbalanced" else None
    common = dict(device=device, dtype=dtype)

    if cfg.method == "random":
        graph = random_graph(sp.ids, tp.ids, cfg.top_patches, seed=seed)
        seconds["total"] = time.perf_counter() - t0
        return MatchResult(cfg.method, conf, si.ids, ti.ids, None, None, None, None, graph, None, seconds)

    need_fgw = cfg.method in ("ot", "unbalanced") or knn_scope == "top_images"
    plan_np = None
    report = None
    if need_fgw:
        t1 = time.perf_counter()
        image_eps = cfg.epsilon if cfg.image_epsilon is None else cfg.image_epsilon
        image_tau = cfg.image_tau if cfg.image_tau is not None else unb
        plan, report = fused_gw_plan(si.features, ti.features, alpha=cfg.alpha, epsilon_rel=image_eps,
                                     unbalanced_tau=image_tau, max_iter=cfg.max_iter, tol=cfg.tol,
                                     outer_max_iter=outer_max_iter, outer_tol=outer_tol, overrelax=overrelax,
                                     warn=warn, **common)
        plan_np = _numpy(plan)
        top, scores = top_k_targets(plan_np, cfg.top_images)
        seconds["image"] = time.perf_counter() - t1
    else:
        t1 = time.perf_counter()
        dev = device if device is not None else _device_of(si.features)
        d = _numpy(sq_distances(_tensor(si.features, dev, dtype), _tensor(ti.features, dev, dtype)))
        top = np.argsort(d, axis=1, kind="stable")[:, : min(cfg.top_images, d.shape[1])].astype(np.int64)
        scores = -np.take_along_axis(d, top, 1)
        seconds["image"] = time.perf_counter() - t1

    t2 = time.perf_counter()
    if cfg.method == "knn" and knn_scope == "global":
        graph = knn_graph(sp.features, tp.features, sp.ids, tp.ids, cfg.top_patches, weighting=knn_weighting,
                          temperature_rel=cfg.epsilon, **common)
        pm_report = None
    else:
        mode = "knn" if cfg.method == "knn" else "ot"
        pm = patch_plans(sp.features, src_parent, tp.features, tgt_parent, plan_np, top,
                         top_patches=cfg.top_patches, epsilon_rel=cfg.epsilon, unbalanced_tau=unb,
                         max_iter=cfg.max_iter, tol=cfg.tol, mode=mode, image_level=cfg.image_level,
                         image_gamma=cfg.image_gamma, knn_weighting=knn_weighting,
                         max_chunk_bytes=max_chunk_bytes, overrelax=overrelax, warn=warn, **common)
        graph = PairGraph(sp.ids, tp.ids, pm.indptr, pm.indices, pm.weights)
        pm_report = pm.report
        seconds.update({f"patch_{k}": v for k, v in pm.seconds.items() if k != "total"})
    graph.meta.update({"method": cfg.method, "level": "patch", "top_patches": cfg.top_patches,
                       "top_images": cfg.top_images, "epsilon": cfg.epsilon, "alpha": cfg.alpha,
                       "unbalanced_tau": unb, "knn_scope": knn_scope if cfg.method == "knn" else None,
                       **({"image_level": cfg.image_level, "image_gamma": cfg.image_gamma,
                           "image_epsilon": cfg.image_epsilon, "image_tau": cfg.image_tau}
                          if cfg.method in ("ot", "unbalanced") else {})})
    seconds["patch"] = time.perf_counter() - t2
    seconds["total"] = time.perf_counter() - t0
    return MatchResult(cfg.method, conf, si.ids, ti.ids, plan_np, report, top, scores, graph, pm_report, seconds)


# --- synthetic inputs (tests, benchmarks) --------------------------------------------------------------------------

def synthetic_match_inputs(n_source_images: int, n_target_images: int, patches_per_image: int | tuple[int, int] = 35,
                           image_dim: int = 2560, patch_dim: int = 768, n_classes: int = 8, parts_per_class: int = 6,
                           domain_shift: float = 0.5, noise: float = 0.3, seed: int = 0, dtype: Any = np.float32
                           ) -> tuple[DescriptorSet, DescriptorSet, DescriptorSet, DescriptorSet]:
    """Clustered random descriptors: ``(source_images, target_images, source_patches, target_patches)``.

    Each image belongs to one of ``n_classes`` scene classes; its descriptor is the class centre plus
    noise. Each patch shows one of its class's ``parts_per_class`` parts: ``0.6 x`` class patch centre
    ``+ 0.8 x`` part centre ``+`` noise (unit-norm centres, noise of norm about ``noise``), so patch costs
    have the two-level structure real semantic features have. Targets get a fixed domain shift of norm
    about ``domain_shift`` at both levels. ``patches_per_image`` is a count or an inclusive ``(lo, hi)``
    range. Ids: ``src0003`` / ``tgt0003`` for images, ``src0003_12`` for patches.
    """
    rng = np.random.default_rng(seed)

    def unit(*shape: int) -> np.ndarray:
        return rng.standard_normal(shape) / math.sqrt(shape[-1])

    img_centres = unit(n_classes, image_dim)
    patch_centres = unit(n_classes, patch_dim)
    part_centres = unit(n_classes, parts_per_class, patch_dim)
    shifts = {"src": (np.zeros(image_dim), np.zeros(patch_dim)),
              "tgt": (domain_shift * unit(image_dim), domain_shift * unit(patch_dim))}

    def side(prefix: str, n: int) -> tuple[DescriptorSet, DescriptorSet]:
        shift_i, shift_p = shifts[prefix]
        cls = rng.integers(0, n_classes, n)
        feats = img_centres[cls] + shift_i + noise * unit(n, image_dim)
        ids = [f"{prefix}{i:04d}" for i in range(n)]
        if isinstance(patches_per_image, tuple):
            counts = rng.integers(patches_per_image[0], patches_per_image[1] + 1, n)
        else:
            counts = np.full(n, int(patches_per_image))
        parent = np.repeat(np.arange(n), counts)
        part = rng.integers(0, parts_per_class, parent.size)
        pf = (0.6 * patch_centres[cls[parent]] + 0.8 * part_centres[cls[parent], part] + shift_p
              + noise * unit(parent.size, patch_dim))
        pids = [f"{ids[i]}_{k}" for i in range(n) for k in range(counts[i])]
        return (DescriptorSet(tuple(ids), feats.astype(dtype)),
                DescriptorSet(tuple(pids), pf.astype(dtype), tuple(ids[i] for i in parent)))

    si, sp = side("src", n_source_images)
    ti, tp = side("tgt", n_target_images)
    return si, ti, sp, tp


def descriptor_sets(items: dict[str, Sequence[Any]], desc: dict[str, Any],
                    parents: dict[str, str]) -> tuple[DescriptorSet, DescriptorSet, DescriptorSet, DescriptorSet]:
    """``(source_images, target_images, source_patches, target_patches)`` for :func:`match_dataset`.

    ``items``/``desc``: the item lists (anything with an ``id``) and descriptor arrays of
    :func:`isp_support.embed.descriptors.matching_items` / :func:`~isp_support.embed.descriptors.matching_descriptors`;
    ``parents[patch_id]`` is the scene of a patch.
    """
    names = ("source_images", "target_images", "source_patches", "target_patches")
    return tuple(DescriptorSet(tuple(it.id for it in items[k]), desc[k],
                               tuple(parents[it.id] for it in items[k]) if k.endswith("patches") else None)
                 for k in names)
