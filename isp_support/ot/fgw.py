"""Entropic fused Gromov-Wasserstein: the image-level plan of paper section 4.2 (eqs. 1-5).

Source full-image descriptors ``x_i`` (``i < Ns``) and target descriptors ``y_j`` (``j < Nt``;
``Ns != Nt`` in general) give

* ``C_ij = ||x_i - y_j||^2`` (eq. 2),
* ``D_X(i, i') = ||x_i - x_i'||^2`` and ``D_Y(j, j') = ||y_j - y_j'||^2`` (eq. 4),

and an entropic fused Gromov-Wasserstein plan ``P*`` with uniform marginals (eq. 5).

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

Normalisation
-------------
``C``, ``D_X`` and ``D_Y`` are each divided by their **mean** entry (the mean
over the whole matrix, diagonal included) before solving, so ``alpha`` balances
dimensionless terms and nothing depends on the descriptor scale. The mean is
used rather than the max because high-dimensional squared distances concentrate
and one outlier would shrink every other entry under a max normalisation.

Caveat: a constant offset in ``C`` (e.g. the RAW-vs-JPEG domain gap) raises its
mean without changing the balanced plan, so after mean-normalisation the
informative spread of ``C`` is smaller against ``alpha`` and ``eps``; the scales
used are in :class:`FGWReport` (``scales``). The relative ``epsilon`` is taken against
``mean((1 - alpha) C + alpha S(a b^T))``, the fused cost at the independent coupling.

Solvers
-------
* :func:`fused_gw_plan` / :func:`fused_gw_from_costs`: entropic FGW by projected
  (mirror) gradient descent, the PGD scheme of Peyré et al. 2016 that
  ``ot.gromov.entropic_fused_gromov_wasserstein(solver="PGD")`` uses:
  ``P <- Sinkhorn_eps((1 - alpha) C + 2 alpha S(P))`` from ``P = a b^T``, until the
  relative Frobenius change of ``P`` is below ``outer_tol``. We run the loop
  ourselves (``solver="pgd"``, the default) because POT's function calls the
  *non-log* ``ot.sinkhorn(method="sinkhorn")`` inside and cannot be told
  otherwise (its ``method`` is fixed), which underflows for small ``eps`` (and in
  float32), and its log has no inner convergence information. Our loop uses
  :func:`~isp_support.ot.sinkhorn.entropic_ot` (log-domain) warm-started from the previous duals
  (converged or not), and reports outer and inner convergence. ``solver="pot"``
  calls POT's function directly (balanced only); the two agree in the tests.
* ``unbalanced`` (after EGUOT: unbalanced OT discounts targets that would be
  costly to map): the same PGD loop with unbalanced inner Sinkhorn steps (KL
  marginal relaxation ``tau_abs = unbalanced_tau * cost_scale``), i.e. each step solves
  unbalanced entropic OT on the linearised fused cost. POT's
  ``ot.gromov.fused_unbalanced_gromov_wasserstein`` (0.9.7) exists, but it relaxes the
  marginals of a pair of couplings, puts ``epsilon`` on ``P ⊗ Q`` and weights the
  linear term by ``alpha / 2`` against a Gromov term of weight 1, so its parameters
  would not mean what :class:`~isp_support.config.MatchConfig` says; we did not use it.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from typing import Any

import ot
import torch

from .reports import OTReport, _jsonable, _warn
from .sinkhorn import CHECK_EVERY, _device_of, _marginal, _marginal_error, _mean_scale, _tensor, entropic_ot


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
    a, b = _marginal(a, ns, C), _marginal(b, nt, C)
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
        T, report = _fgw_pot(C, DX, DY, a, b, common)
        if not report.converged:
            _warn(f"POT entropic FGW did not converge: {report.outer_iterations} outer iterations, "
                  f"last error {report.plan_change:.3g}", warn)
        return T, report
    if solver != "pgd":
        raise ValueError(f"unknown FGW solver {solver!r}; expected 'pgd' or 'pot'")
    T, report = _fgw_pgd(C, DX, DY, a, b, T, unbalanced_tau=unbalanced_tau, overrelax=overrelax, common=common)
    if not report.converged:
        _warn(f"entropic FGW did not converge: {report.outer_iterations} outer iterations (relative plan change "
              f"{report.plan_change:.3g}, outer_tol {outer_tol:g}), {report.inner_not_converged} inner solves not "
              "converged", warn)
    return T, report


def _fgw_pot(C: torch.Tensor, DX: torch.Tensor, DY: torch.Tensor, a: torch.Tensor, b: torch.Tensor,
             common: dict[str, Any]) -> tuple[torch.Tensor, FGWReport]:
    """``solver="pot"``: POT's ``entropic_fused_gromov_wasserstein`` (PGD) on the normalised costs."""
    alpha, outer_tol, outer_max_iter = common["alpha"], common["outer_tol"], common["outer_max_iter"]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        T, log = ot.gromov.entropic_fused_gromov_wasserstein(
            C, DX, DY, a, b, loss_fun="square_loss", epsilon=common["epsilon_abs"], symmetric=True, alpha=alpha,
            max_iter=outer_max_iter, tol=outer_tol, solver="PGD", log=True, numItermax=common["max_iter"],
            stopThr=common["tol"])
    messages = [str(w.message) for w in caught]
    errs = [float(e) for e in log["err"]]
    outer_conv = bool(errs) and errs[-1] <= outer_tol
    inner_bad = sum("did not converge" in msg for msg in messages)
    total, lin, gw = fused_objective(C, DX, DY, T, alpha)
    report = FGWReport(converged=outer_conv and inner_bad == 0, outer_converged=outer_conv,
                       outer_iterations=CHECK_EVERY * max(len(errs) - 1, 0) + 1 if outer_conv else outer_max_iter,
                       plan_change=errs[-1] if errs else math.inf, inner_iterations_total=-1,
                       inner_not_converged=inner_bad, marginal_error=_marginal_error(T, a, b), objective=total,
                       linear_term=lin, gromov_term=gw,
                       solver="ot.gromov.entropic_fused_gromov_wasserstein(solver='PGD')",
                       mass=float(T.sum()), solver_warnings=messages, **common)
    return T, report


def _fgw_pgd(C: torch.Tensor, DX: torch.Tensor, DY: torch.Tensor, a: torch.Tensor, b: torch.Tensor,
             T: torch.Tensor, *, unbalanced_tau: float | None, overrelax: float,
             common: dict[str, Any]) -> tuple[torch.Tensor, FGWReport]:
    """``solver="pgd"``: our PGD loop from the plan ``T``, log-domain inner solves warm-started from their duals."""
    alpha, outer_tol = common["alpha"], common["outer_tol"]
    inner_total = 0
    inner_bad = 0
    messages: list[str] = []
    duals = None
    change = math.inf
    outer_conv = False
    rep = None
    k = 0
    for k in range(1, common["outer_max_iter"] + 1):
        grad = (1.0 - alpha) * C + (2.0 * alpha) * gromov_term(DX, DY, T) if alpha > 0 else C
        T_new, rep, new_duals = entropic_ot(grad, a, b, epsilon_rel=common["epsilon_rel"],
                                            cost_scale=common["cost_scale"], max_iter=common["max_iter"],
                                            tol=common["tol"], unbalanced_tau=unbalanced_tau, warmstart=duals,
                                            warn=False, overrelax=overrelax, return_duals=True)
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
    last_ok = rep is not None and rep.converged
    report = FGWReport(converged=outer_conv and last_ok, outer_converged=outer_conv, outer_iterations=k,
                       plan_change=change, inner_iterations_total=inner_total, inner_not_converged=inner_bad,
                       marginal_error=_marginal_error(T, a, b), objective=total, linear_term=lin, gromov_term=gw,
                       solver="pgd+" + (rep.solver if rep else "?"), mass=float(T.sum()), last_inner=rep,
                       solver_warnings=messages[-5:], **common)
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
