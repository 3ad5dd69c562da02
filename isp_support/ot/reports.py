"""Convergence reports and warnings of the OT solvers (:mod:`.sinkhorn`; :class:`~.fgw.FGWReport` is in :mod:`.fgw`)."""

from __future__ import annotations

import dataclasses
import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np


class MatchingConvergenceWarning(RuntimeWarning):
    """An OT solve stopped at its iteration cap (or hit numerical trouble) before meeting its tolerance."""


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


def _warn(message: str, warn: bool) -> None:
    if warn:
        warnings.warn(message, MatchingConvergenceWarning, stacklevel=3)
