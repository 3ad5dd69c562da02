"""Entropic optimal transport in the log domain, one problem or a padded batch, with convergence reports.

* :func:`entropic_ot` (one problem). Balanced: ``ot.bregman.sinkhorn_log`` (log-domain Sinkhorn). Its
  stopping rule is the L2 norm of the column-marginal violation (rows are exact after the last update)
  below ``tol``, checked every 10 iterations; ``niter`` comes from POT's log. Unbalanced (KL marginal
  penalty ``tau``, entropy as ``KL(P | a b^T)``, POT's ``reg_type="kl"``): our log-domain solver below
  with one problem (stopping rule: the largest change of a log-scaling in one iteration below ``tol``,
  like POT's relative change of ``u``). POT 0.9.7 has no log-domain unbalanced Sinkhorn, and its
  absorption variant ``ot.unbalanced.sinkhorn_unbalanced(method="sinkhorn_stabilized")`` gave wrong
  plans on small cases in our checks (docs/measurements.md, "Matching"), where POT's ``"sinkhorn"`` and
  ``"sinkhorn_translation_invariant"`` and our solver agree. Those POT methods remain selectable
  (``unbalanced_solver=``); the tests compare ours with POT's ``"sinkhorn"``. POT's warnings are
  captured into the report (``solver_warnings``) and re-issued once as
  :class:`~isp_support.ot.reports.MatchingConvergenceWarning` when ``warn=True``. ``overrelax != 1``
  switches balanced problems to our solver too.
* :func:`entropic_ot_batched` (many independent problems of padded equal size): our own log-domain
  Sinkhorn in torch with masks for padding, balanced or unbalanced, one batched tensor operation per
  half-iteration (no per-problem Python loop), with POT's stopping rules per problem and exact
  per-problem iteration counts. Converged problems leave the work tensors at the next check (active
  set), so easy problems do not pay for the slowest. The log-sum-exp is written out (max, subtract,
  exp, sum, log, in place; :func:`_lse`) because ``torch.logsumexp`` in float64 on CPU is slower on these
  shapes. Optional over-relaxation ``overrelax=omega`` (same fixed point, safeguarded).
  ``ot.batch.solve_batch`` (POT 0.9.7) was not used: it has no masks for ragged sizes, no unbalanced
  option and reports one iteration count and one error for the whole batch. Checked against POT's
  single-problem solvers in the tests.

Sinkhorn's tail is slow when the plan is nearly decomposable: near-duplicate patches, or scene classes
whose proportions differ between the domains (mass must cross between blocks through entries of size
``exp(-gap / eps)``). The remedies are ``overrelax`` (about 1.8 to 1.9), a larger ``max_iter`` or a
looser ``tol``; the unbalanced option's updates contract by ``tau / (tau + eps)``. What this costs and
gains on the synthetic benchmark is in docs/measurements.md ("Matching").

The tensor helpers here (``_tensor``, ``_numpy``, ``_device_of`` ...) are shared by :mod:`isp_support.ot.fgw`
and :mod:`isp_support.pairing`; the reports and :class:`~isp_support.ot.reports.MatchingConvergenceWarning`
are in :mod:`isp_support.ot.reports`.
"""

from __future__ import annotations

import math
import warnings
from typing import Any, NamedTuple

import numpy as np
import ot
import torch

from .reports import BatchOTReport, OTReport, _warn

CHECK_EVERY = 10
"""Iterations between two checks of a Sinkhorn stopping rule (POT's interval)."""


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


def _marginal(x: Any, n: int, like: torch.Tensor) -> torch.Tensor:
    """``x`` on ``like``'s device and dtype, or the uniform marginal ``1/n`` when ``x`` is ``None``."""
    if x is None:
        return torch.full((n,), 1.0 / n, dtype=like.dtype, device=like.device)
    return _tensor(x, like.device, like.dtype)


def _marginal_error(plan: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> float:
    """``max(||P 1 - a||_1, ||P^T 1 - b||_1)``."""
    return max(float((plan.sum(1) - a).abs().sum()), float((plan.sum(0) - b).abs().sum()))


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


# --- single entropic OT (POT, or ours) ---------------------------------------------------------------------------

class _Solved(NamedTuple):
    """What one of :func:`entropic_ot`'s solvers returns."""

    plan: torch.Tensor
    duals: tuple[torch.Tensor, torch.Tensor]
    stop_error: float
    iterations: int
    iterations_exact: bool
    tau_abs: float | None
    solver: str


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
    a, b = _marginal(a, n, M), _marginal(b, m, M)
    scale = _mean_scale(M) if cost_scale is None else float(cost_scale)
    eps = epsilon_rel * scale
    if not eps > 0:
        raise ValueError(f"epsilon must be positive, got epsilon_rel={epsilon_rel} x cost_scale={scale}")
    caught: list[warnings.WarningMessage]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        s = _solve_one(M, a, b, eps, scale, epsilon_rel=epsilon_rel, max_iter=max_iter, tol=tol,
                       unbalanced_tau=unbalanced_tau, warmstart=warmstart, unbalanced_solver=unbalanced_solver,
                       overrelax=overrelax)
    messages = [str(w.message) for w in caught if issubclass(w.category, Warning)]
    messages = [msg for msg in messages if "reg_type = entropy" not in msg]
    finite = bool(torch.isfinite(s.plan).all())
    numerical = any("Numerical errors" in msg for msg in messages)
    converged = finite and not numerical and s.stop_error < tol
    report = OTReport(iterations=s.iterations, converged=converged, marginal_error=_marginal_error(s.plan, a, b),
                      stop_error=s.stop_error, epsilon_abs=eps, epsilon_rel=epsilon_rel, cost_scale=scale, tol=tol,
                      max_iter=max_iter, solver=s.solver, unbalanced_tau_abs=s.tau_abs, mass=float(s.plan.sum()),
                      iterations_exact=s.iterations_exact, solver_warnings=messages)
    if not converged:
        _warn(f"entropic OT ({n} x {m}) did not converge: {s.iterations} iterations, stop error {s.stop_error:.3g} "
              f"(tol {tol:g}), eps {eps:.3g}" + ("" if finite else ", non-finite plan") +
              (f"; solver said: {messages[-1]}" if messages else ""), warn)
    if return_duals:
        return s.plan, report, s.duals
    return s.plan, report


def _solve_one(M: torch.Tensor, a: torch.Tensor, b: torch.Tensor, eps: float, scale: float, *, epsilon_rel: float,
               max_iter: int, tol: float, unbalanced_tau: float | None, warmstart: Any, unbalanced_solver: str,
               overrelax: float) -> _Solved:
    """The solver :func:`entropic_ot` picks: ours (unbalanced ``"log"`` or over-relaxed) or POT's."""
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
        solver = (f"entropic_ot_batched (log-domain {'un' if unbalanced_tau is not None else ''}balanced "
                  f"Sinkhorn, overrelax {overrelax:g})")
        return _Solved(plans[0], bduals, float(brep.stop_error[0]), int(brep.iterations[0]), True, tau_abs, solver)
    if unbalanced_tau is None:
        plan, log = ot.bregman.sinkhorn_log(a, b, M, eps, numItermax=max_iter, stopThr=tol, log=True,
                                            warn=False, warmstart=warmstart)
        col_err = float(torch.linalg.vector_norm(plan.sum(0) - b))
        return _Solved(plan, (log["log_u"], log["log_v"]), col_err, int(log["niter"]) + 1, True, None,
                       "ot.bregman.sinkhorn_log")
    tau_abs = unbalanced_tau * scale
    plan, log = ot.unbalanced.sinkhorn_unbalanced(a, b, M, eps, tau_abs, method=unbalanced_solver,
                                                  reg_type="kl", numItermax=max_iter, stopThr=tol, log=True,
                                                  warmstart=warmstart)
    errs = [float(e) for e in log["err"]]
    stop_error = errs[-1] if errs else float("inf")
    iterations = min(max_iter, CHECK_EVERY * max(len(errs) - 1, 0) + 1)
    if stop_error >= tol:
        iterations = max_iter
    return _Solved(plan, (log["logu"], log["logv"]), stop_error, iterations, False, tau_abs,
                   f"ot.unbalanced.sinkhorn_unbalanced(method={unbalanced_solver!r})")


# --- batched entropic OT (ours, torch) ---------------------------------------------------------------------------

def entropic_ot_batched(cost: torch.Tensor, row_mask: torch.Tensor | None = None, col_mask: torch.Tensor | None = None,
                        *, epsilon_rel: float = 0.05, cost_scale: torch.Tensor | None = None,
                        unbalanced_tau: float | None = None, max_iter: int = 2000, tol: float = 1e-7,
                        a: torch.Tensor | None = None, b: torch.Tensor | None = None,
                        warmstart: tuple[torch.Tensor, torch.Tensor] | None = None, return_duals: bool = False,
                        overrelax: float = 1.0, check_every: int = CHECK_EVERY, warn: bool = True) -> tuple:
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
    ten times the best it has reached falls back to ``omega = 1``.
    """
    if not 0.0 < overrelax < 2.0:
        raise ValueError(f"overrelax must lie in (0, 2), got {overrelax}")
    B, n, m = cost.shape
    rmask, na, nb, eps, loga, logb, KaT, Kb, fi = _batch_problem(cost, row_mask, col_mask, epsilon_rel, cost_scale,
                                                                 unbalanced_tau, a, b)
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
    a_marg = torch.exp(loga)
    _sinkhorn_loop([KaT, Kb, fi, logb, b_marg, rmask, loga, a_marg], phi, gam, iters, stop, done,
                   max_iter=max_iter, tol=tol, overrelax=overrelax, check_every=check_every,
                   balanced=unbalanced_tau is None)
    plan = torch.exp(KaT.transpose(1, 2) + logb[:, None, :] + phi[:, :, None] + gam[:, None, :])
    del KaT, Kb
    report = _batch_report(plan, a_marg, b_marg, done, iters, stop, eps, na, nb, tol=tol, max_iter=max_iter,
                           unbalanced_tau=unbalanced_tau)
    if not report.all_converged:
        bad = int((~report.converged).sum())
        _warn(f"batched entropic OT: {bad} of {B} problems did not converge in {max_iter} iterations "
              f"(max stop error {float(np.max(report.stop_error)):.3g}, tol {tol:g})", warn)
    if return_duals:
        return plan, report, (phi, gam)
    return plan, report


def _batch_problem(cost: torch.Tensor, row_mask: torch.Tensor | None, col_mask: torch.Tensor | None,
                   epsilon_rel: float, cost_scale: torch.Tensor | None, unbalanced_tau: float | None,
                   a: torch.Tensor | None, b: torch.Tensor | None) -> tuple[torch.Tensor, ...]:
    """``(rmask, na, nb, eps, loga, logb, KaT, Kb, fi)``: masks and counts, ``eps`` and log marginals of each
    problem, the two log kernels (:func:`_log_kernels`) and the damping ``fi`` of the dual updates (1 when
    balanced, ``tau / (tau + eps)`` when unbalanced)."""
    B, n, m = cost.shape
    rmask = torch.ones(B, n, dtype=torch.bool, device=cost.device) if row_mask is None else row_mask.to(cost.device)
    cmask = torch.ones(B, m, dtype=torch.bool, device=cost.device) if col_mask is None else col_mask.to(cost.device)
    na = rmask.sum(1).to(cost.dtype)
    nb = cmask.sum(1).to(cost.dtype)
    if bool((na == 0).any()) or bool((nb == 0).any()):
        raise ValueError("every batched OT problem needs at least one row and one column")
    C = cost.masked_fill(~(rmask[:, :, None] & cmask[:, None, :]), 0.0)
    if cost_scale is None:
        scale = C.sum((1, 2)) / (na * nb)
        scale = torch.where(scale > 0, scale, torch.ones_like(scale))
    else:
        scale = torch.as_tensor(cost_scale, dtype=C.dtype, device=C.device).expand(B)
    eps = epsilon_rel * scale
    loga, logb = _log_marginal(a, rmask, na, C.dtype), _log_marginal(b, cmask, nb, C.dtype)
    KaT, Kb = _log_kernels(C, eps, loga, logb)
    del C
    if unbalanced_tau is None:
        fi = torch.ones(B, 1, dtype=Kb.dtype, device=Kb.device)
    else:
        tau = unbalanced_tau * scale
        fi = (tau / (tau + eps))[:, None]
    return rmask, na, nb, eps, loga, logb, KaT, Kb, fi


def _log_marginal(w: torch.Tensor | None, mask: torch.Tensor, count: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Log of a batch of marginals: uniform over ``mask`` (``w=None``) or ``w``; ``-inf`` on padding."""
    neg_inf = torch.tensor(-math.inf, dtype=dtype, device=mask.device)
    if w is None:
        return torch.where(mask, -torch.log(count)[:, None], neg_inf)
    return torch.where(mask & (w > 0), torch.log(w.to(dtype).clamp_min(1e-300)), neg_inf)


def _log_kernels(C: torch.Tensor, eps: torch.Tensor, loga: torch.Tensor,
                 logb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(KaT, Kb)`` from the masked cost ``C`` (consumed in place): ``K = -C / eps`` with ``log a`` / ``log b``.

    Both half-steps reduce over the last axis of a contiguous tensor (much faster than a strided
    reduction): ``KaT = (K + log a)^T`` for the column update, ``Kb = K + log b`` for the row update.
    """
    K = C.div_(-eps[:, None, None])    # C is a fresh tensor (masked_fill), safe to reuse
    KaT = (K + loga[:, :, None]).transpose(1, 2).contiguous()   # -inf on padded rows
    Kb = K.add_(logb[:, None, :])                                  # -inf on padded columns
    return KaT, Kb


def _sinkhorn_loop(work: list[torch.Tensor], phi: torch.Tensor, gam: torch.Tensor, iters: torch.Tensor,
                   stop: torch.Tensor, done: torch.Tensor, *, max_iter: int, tol: float, overrelax: float,
                   check_every: int, balanced: bool) -> None:
    """The iterations of :func:`entropic_ot_batched`; fills ``phi``, ``gam``, ``iters``, ``stop``, ``done`` in place.

    ``work``: ``[KaT, Kb, fi, logb, b_marg, rmask, loga, a_marg]``. Active set: problems still iterating;
    converged ones are dropped from the work tensors at the next check (their potentials are final), so
    easy problems do not pay for the hardest one.
    """
    B = phi.shape[0]
    act = torch.arange(B, device=phi.device)
    relax = overrelax != 1.0
    A_KaT, A_Kb, A_fi, A_logb, A_bm, A_rmask, A_loga, A_am = work
    A_om = torch.full((B, 1), float(overrelax), dtype=A_Kb.dtype, device=A_Kb.device)
    A_prev = torch.full((B,), math.inf, dtype=A_Kb.dtype, device=A_Kb.device)
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
        if balanced:
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


def _batch_report(plan: torch.Tensor, a_marg: torch.Tensor, b_marg: torch.Tensor, done: torch.Tensor,
                  iters: torch.Tensor, stop: torch.Tensor, eps: torch.Tensor, na: torch.Tensor, nb: torch.Tensor, *,
                  tol: float, max_iter: int, unbalanced_tau: float | None) -> BatchOTReport:
    """The :class:`BatchOTReport` of a finished batch (a problem converged if it met ``tol`` with a finite plan)."""
    marg = torch.maximum((plan.sum(2) - a_marg).abs().sum(1), (plan.sum(1) - b_marg).abs().sum(1))
    finite = torch.isfinite(plan).flatten(1).all(1)
    converged = done & finite
    return BatchOTReport(iterations=_numpy(iters), converged=_numpy(converged), marginal_error=_numpy(marg),
                         stop_error=_numpy(stop), epsilon_abs=_numpy(eps),
                         sizes=np.stack([_numpy(na).astype(np.int64), _numpy(nb).astype(np.int64)], 1),
                         tol=tol, max_iter=max_iter, unbalanced_tau_rel=unbalanced_tau)
