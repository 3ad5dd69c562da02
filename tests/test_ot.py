"""The OT solvers (isp_support.ot): the fused objective, entropic OT, batched Sinkhorn, FGW; small CPU cases."""

from __future__ import annotations

import itertools
import warnings

import numpy as np
import ot
import pytest
import torch

from isp_support.ot.fgw import fused_gw_from_costs, fused_gw_plan, fused_objective, gromov_term, sq_distances
from isp_support.ot.reports import MatchingConvergenceWarning
from isp_support.ot.sinkhorn import entropic_ot, entropic_ot_batched

F64 = torch.float64


def _t(x):
    return torch.as_tensor(np.asarray(x), dtype=F64)



def _isometric_clouds(n=6, seed=0):
    """``X`` and ``Y = rotate(X) + shift``, rows of ``Y`` permuted; ``inv[i]`` is the row of ``Y`` that is ``X[i]``."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, 3))
    th = 1.1
    R = np.array([[np.cos(th), -np.sin(th), 0], [np.sin(th), np.cos(th), 0], [0, 0, 1]])
    perm = rng.permutation(n)
    Y = (X @ R.T + np.array([3.0, -2.0, 1.0]))[perm]
    return X, Y, np.argsort(perm)


# --- the fused objective and its decomposition ----------------------------------------------------------------------

def test_gromov_term_and_fused_objective_match_a_brute_force_4d_loop():
    rng = np.random.default_rng(1)
    ns, nt = 3, 4
    X, Y = rng.standard_normal((ns, 2)), rng.standard_normal((nt, 2))
    C, DX, DY = sq_distances(_t(X), _t(Y)), sq_distances(_t(X)), sq_distances(_t(Y))
    P = _t(rng.random((ns, nt)))          # any non-negative matrix, marginals not uniform
    alpha = 0.3
    S_brute = np.zeros((ns, nt))
    gw_brute = 0.0
    for i, j, k, l in itertools.product(range(ns), range(nt), range(ns), range(nt)):
        L = (float(DX[i, k]) - float(DY[j, l])) ** 2
        S_brute[i, j] += L * float(P[k, l])
        gw_brute += L * float(P[i, j]) * float(P[k, l])
    np.testing.assert_allclose(gromov_term(DX, DY, P).numpy(), S_brute, rtol=1e-12)
    total, linear, gw = fused_objective(C, DX, DY, P, alpha)
    assert linear == pytest.approx(float((C * P).sum()), rel=1e-12)
    assert gw == pytest.approx(gw_brute, rel=1e-12)
    assert total == pytest.approx((1 - alpha) * linear + alpha * gw_brute, rel=1e-12)


def test_gromov_term_by_hand_on_two_points():
    """D_X = D_Y = [[0, 1], [1, 0]]: the identity and the swap are both isometries (Gromov cost 0); the
    independent coupling pays 1/2. S_ij = sum_kl (D_X[i,k] - D_Y[j,l])^2 P_kl worked out by hand."""
    D = _t([[0.0, 1.0], [1.0, 0.0]])
    ident, swap, indep = _t(np.eye(2) / 2), _t(np.eye(2)[::-1] / 2), torch.full((2, 2), 0.25, dtype=F64)
    np.testing.assert_allclose(gromov_term(D, D, ident).numpy(), [[0, 1], [1, 0]])
    np.testing.assert_allclose(gromov_term(D, D, swap).numpy(), [[1, 0], [0, 1]])
    np.testing.assert_allclose(gromov_term(D, D, indep).numpy(), [[0.5, 0.5], [0.5, 0.5]])
    C = _t([[0.0, 1.0], [1.0, 0.0]])               # the linear cost prefers the identity
    assert fused_objective(C, D, D, ident, 0.5) == (0.0, 0.0, 0.0)
    assert fused_objective(C, D, D, swap, 0.5) == (0.5, 1.0, 0.0)
    assert fused_objective(C, D, D, indep, 0.5) == (0.5, 0.5, 0.5)
    plan, rep = fused_gw_from_costs(C, D, D, alpha=0.5, epsilon_rel=0.05)
    assert rep.converged and float(plan[0, 0] + plan[1, 1]) > 0.99


def test_gromov_gradient_agrees_with_pot_on_a_balanced_plan():
    rng = np.random.default_rng(2)
    DX, DY = sq_distances(_t(rng.standard_normal((5, 3)))), sq_distances(_t(rng.standard_normal((7, 3))))
    P, _ = entropic_ot(_t(rng.random((5, 7))), epsilon_rel=0.2)
    constC, hC1, hC2 = ot.gromov.init_matrix(DX, DY, P.sum(1), P.sum(0), "square_loss")
    np.testing.assert_allclose((2 * gromov_term(DX, DY, P)).numpy(),
                               ot.gromov.gwggrad(constC, hC1, hC2, P).numpy(), rtol=1e-10, atol=1e-12)


def test_fgw_finds_the_isometry_when_the_linear_cost_is_uninformative():
    X, Y, inv = _isometric_clouds()
    DX, DY = sq_distances(_t(X)), sq_distances(_t(Y))
    C = torch.ones(6, 6, dtype=F64)              # no feature information at all
    plan0, rep0 = fused_gw_from_costs(C, DX, DY, alpha=0.0)
    assert rep0.converged and float(plan0.max() - plan0.min()) < 1e-12   # linear term alone: uniform plan
    plan, rep = fused_gw_from_costs(C, DX, DY, alpha=1.0, epsilon_rel=0.05)
    assert rep.converged, rep
    assert np.array_equal(plan.argmax(1).numpy(), inv)
    assert float(plan[np.arange(6), inv].sum()) > 0.8     # most of the mass on the isometry's support
    # The paper's alpha = 0.5 finds the same support. Its inner Sinkhorn solves have a very slow tail
    # on this tiny, nearly symmetric cloud (error ~1e-9 after 1000 iterations, then almost flat), so
    # convergence is only reported here, not required.
    plan, rep = fused_gw_from_costs(C, DX, DY, alpha=0.5, epsilon_rel=0.02, warn=False)
    assert np.array_equal(plan.argmax(1).numpy(), inv)
    assert rep.gromov_term < 0.05 * rep0.gromov_term


def test_our_pgd_loop_agrees_with_pots_entropic_fgw():
    rng = np.random.default_rng(3)
    xs, xt = rng.standard_normal((6, 4)), rng.standard_normal((8, 4)) + 0.5
    C, DX, DY = sq_distances(_t(xs), _t(xt)), sq_distances(_t(xs)), sq_distances(_t(xt))
    kw = dict(alpha=0.5, epsilon_rel=0.1, outer_tol=1e-9, max_iter=20000, tol=1e-10)
    ours, rep = fused_gw_from_costs(C, DX, DY, solver="pgd", **kw)
    pots, rep_pot = fused_gw_from_costs(C, DX, DY, solver="pot", **kw)
    assert rep.converged and rep_pot.converged
    np.testing.assert_allclose(ours.numpy(), pots.numpy(), atol=1e-7)
    assert rep.objective == pytest.approx(rep_pot.objective, rel=1e-6)


# --- entropic OT: marginals, unbalanced, convergence reporting ------------------------------------------------------

@pytest.mark.parametrize("shape", [(7, 7), (5, 9), (12, 4)])
def test_balanced_plans_have_the_right_marginals(shape):
    rng = np.random.default_rng(sum(shape))
    cost = _t(rng.random(shape))
    plan, rep = entropic_ot(cost, epsilon_rel=0.05, max_iter=20000)
    assert rep.converged and rep.iterations <= rep.max_iter
    np.testing.assert_allclose(plan.sum(1).numpy(), np.full(shape[0], 1 / shape[0]), atol=1e-7)
    np.testing.assert_allclose(plan.sum(0).numpy(), np.full(shape[1], 1 / shape[1]), atol=1e-7)
    assert rep.marginal_error < 1e-6
    assert rep.epsilon_abs == pytest.approx(0.05 * float(cost.mean()))


def test_fgw_plan_with_unequal_sizes_has_uniform_marginals():
    rng = np.random.default_rng(4)
    plan, rep = fused_gw_plan(rng.standard_normal((9, 16)), rng.standard_normal((14, 16)))
    assert plan.shape == (9, 14) and rep.converged
    np.testing.assert_allclose(plan.sum(1).numpy(), 1 / 9, atol=1e-6)
    np.testing.assert_allclose(plan.sum(0).numpy(), 1 / 14, atol=1e-6)


def _outlier_case(seed=5):
    rng = np.random.default_rng(seed)
    xs = rng.standard_normal((20, 8)) * 0.3
    xt = rng.standard_normal((16, 8)) * 0.3 + 0.1
    xt[-1] += 8.0                                  # one target far from everything
    return xs, xt


def test_unbalanced_ot_gives_an_outlier_target_much_less_mass():
    xs, xt = _outlier_case()
    C = sq_distances(_t(xs), _t(xt))
    bal, rep_b = entropic_ot(C, epsilon_rel=0.05)
    unb, rep_u = entropic_ot(C, epsilon_rel=0.05, unbalanced_tau=1.0)
    assert rep_b.converged and rep_u.converged
    assert float(bal[:, -1].sum()) == pytest.approx(1 / 16, rel=1e-5)
    assert float(unb[:, -1].sum()) < 0.01 * float(bal[:, -1].sum())
    # the other targets keep roughly their share
    assert float(unb[:, :-1].sum(0).min()) > 0.3 / 16


def test_unbalanced_fgw_down_weights_the_outlier_target():
    xs, xt = _outlier_case()
    bal, rep_b = fused_gw_plan(xs, xt)
    unb, rep_u = fused_gw_plan(xs, xt, unbalanced_tau=1.0)
    assert rep_b.converged and rep_u.converged
    assert float(bal[:, -1].sum()) == pytest.approx(1 / 16, rel=1e-4)
    assert float(unb[:, -1].sum()) < 0.05 * float(bal[:, -1].sum())
    assert rep_u.unbalanced_tau_abs == pytest.approx(rep_u.cost_scale)


def test_non_converged_solves_are_reported_and_warned():
    rng = np.random.default_rng(6)
    cost = _t(rng.random((10, 12)))
    with pytest.warns(MatchingConvergenceWarning, match="did not converge"):
        _, rep = entropic_ot(cost, epsilon_rel=0.01, max_iter=2)
    assert rep.converged is False and rep.iterations == 2 and rep.stop_error > rep.tol
    with warnings.catch_warnings():
        warnings.simplefilter("error")                  # warn=False: reported, not warned
        _, rep = entropic_ot(cost, epsilon_rel=0.01, max_iter=2, unbalanced_tau=1.0, warn=False)
        assert rep.converged is False
        _, brep = entropic_ot_batched(cost[None], epsilon_rel=0.01, max_iter=2, warn=False)
        assert not brep.all_converged and brep.iterations.tolist() == [2]
        _, frep = fused_gw_plan(rng.standard_normal((6, 3)), rng.standard_normal((7, 3)), outer_max_iter=2,
                                warn=False)
        assert frep.converged is False and frep.outer_iterations == 2


@pytest.mark.parametrize("tau", [None, 0.5])
def test_batched_solver_with_padding_matches_pot_per_problem(tau):
    rng = np.random.default_rng(7)
    sizes = [(4, 9), (6, 5), (3, 12)]
    n, m = max(s[0] for s in sizes), max(s[1] for s in sizes)
    cost = torch.zeros(len(sizes), n, m, dtype=F64)
    rmask = torch.zeros(len(sizes), n, dtype=torch.bool)
    cmask = torch.zeros(len(sizes), m, dtype=torch.bool)
    blocks = []
    for k, (r, c) in enumerate(sizes):
        block = _t(rng.random((r, c)) * (k + 1))
        blocks.append(block)
        cost[k, :r, :c] = block
        cost[k, r:, :] = 1e6                       # padding must not matter
        cost[k, :, c:] = -1e6
        rmask[k, :r] = True
        cmask[k, :c] = True
    plans, rep = entropic_ot_batched(cost, rmask, cmask, epsilon_rel=0.05, unbalanced_tau=tau, tol=1e-10,
                                     max_iter=20000)
    assert rep.all_converged
    for k, (r, c) in enumerate(sizes):
        # reference: POT's sinkhorn_log (balanced) or plain unbalanced Sinkhorn-Knopp (well scaled here)
        ref, ref_rep = entropic_ot(blocks[k], epsilon_rel=0.05, unbalanced_tau=tau, tol=1e-10, max_iter=20000,
                                   unbalanced_solver="sinkhorn")
        assert ref_rep.converged and ref_rep.solver.startswith("ot.")
        np.testing.assert_allclose(plans[k, :r, :c].numpy(), ref.numpy(), rtol=1e-6, atol=1e-12)
        assert float(plans[k].sum()) == pytest.approx(float(ref.sum()), rel=1e-6)
        assert float(plans[k, r:].abs().sum() + plans[k, :, c:].abs().sum()) == 0.0
        assert rep.epsilon_abs[k] == pytest.approx(ref_rep.epsilon_abs)
    assert rep.sizes.tolist() == [list(s) for s in sizes]


def test_overrelaxed_sinkhorn_reaches_the_same_plan_in_fewer_iterations():
    """A 12 x 4 random cost at eps = 0.05 x mean: plain Sinkhorn needs thousands of iterations
    (rows pile onto few columns, a nearly decomposable plan); over-relaxation keeps the fixed point."""
    cost = _t(np.random.default_rng(16).random((12, 4)))[None]
    plain, rep1 = entropic_ot_batched(cost, epsilon_rel=0.05, max_iter=50000, tol=1e-9)
    fast, rep2 = entropic_ot_batched(cost, epsilon_rel=0.05, max_iter=50000, tol=1e-9, overrelax=1.8)
    assert rep1.all_converged and rep2.all_converged
    assert rep1.iterations[0] > 2000 and rep2.iterations[0] < rep1.iterations[0] / 3
    np.testing.assert_allclose(fast.numpy(), plain.numpy(), atol=1e-8)
    np.testing.assert_allclose(fast[0].sum(1).numpy(), 1 / 12, atol=1e-9)   # rows are checked too
    with pytest.raises(ValueError, match="overrelax"):
        entropic_ot_batched(cost, overrelax=2.0)
