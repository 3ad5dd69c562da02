"""Image- and patch-level OT matching (isp_support.pairing.match): small, hand-checkable CPU cases."""

from __future__ import annotations

import dataclasses
import itertools
import warnings

import numpy as np
import ot
import pytest
import torch
from scipy import stats

from isp_support.config import MatchConfig
from isp_support.pairing.match import (
    DescriptorSet,
    MatchingConvergenceWarning,
    PairGraph,
    PairGraphError,
    entropic_ot,
    entropic_ot_batched,
    fused_gw_from_costs,
    fused_gw_plan,
    fused_objective,
    graph_stats,
    gromov_term,
    knn_graph,
    match_dataset,
    ot_graph,
    patch_plans,
    random_graph,
    sq_distances,
    synthetic_match_inputs,
    top_k_targets,
)

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


# --- top-k, patch level ---------------------------------------------------------------------------------------------

def test_top_k_targets_orders_by_score_with_stable_ties_and_caps_k():
    plan = np.array([[0.1, 0.3, 0.3, 0.0], [0.4, 0.0, 0.2, 0.1]])
    idx, sc = top_k_targets(plan, 3)
    assert idx.tolist() == [[1, 2, 0], [0, 2, 3]]
    np.testing.assert_allclose(sc, [[0.3, 0.3, 0.1], [0.4, 0.2, 0.1]])
    assert top_k_targets(plan, 10)[0].shape == (2, 4)


def test_patch_plans_unequal_sizes_stay_within_the_top_images():
    rng = np.random.default_rng(8)
    n_src_img, n_tgt_img = 5, 9
    src_counts, tgt_counts = rng.integers(2, 7, n_src_img), rng.integers(1, 6, n_tgt_img)
    src_parent, tgt_parent = np.repeat(np.arange(n_src_img), src_counts), np.repeat(np.arange(n_tgt_img), tgt_counts)
    xs, xt = rng.standard_normal((src_parent.size, 12)), rng.standard_normal((tgt_parent.size, 12))
    image_plan = rng.random((n_src_img, n_tgt_img))
    image_plan /= image_plan.sum()
    top, _ = top_k_targets(image_plan, 3)
    # shuffle the patch order: grouping must not assume contiguous parents
    ps, pt = rng.permutation(src_parent.size), rng.permutation(tgt_parent.size)
    pm = patch_plans(xs[ps], src_parent[ps], xt[pt], tgt_parent[pt], image_plan, top, top_patches=4,
                     max_chunk_bytes=2000)            # forces several chunks
    assert pm.report.all_converged and pm.report.chunks > 1
    assert len(pm.report.iterations) == n_src_img
    assert pm.indptr.shape == (src_parent.size + 1,)
    counts = np.diff(pm.indptr)
    assert counts.min() >= 1 and counts.max() <= 4
    np.testing.assert_allclose(np.add.reduceat(pm.weights, pm.indptr[:-1]), 1.0)
    for s in range(src_parent.size):
        targets = pm.indices[pm.indptr[s]:pm.indptr[s + 1]]
        assert set(tgt_parent[pt][targets]) <= set(top[src_parent[ps][s]])
        w = pm.weights[pm.indptr[s]:pm.indptr[s + 1]]
        assert np.all(np.diff(w) <= 0)                # sorted by decreasing weight


def test_patch_weights_are_patch_plan_times_image_plan():
    """One source image, two candidate images: w_st ∝ P_patch(s,t) P_image(I_s, I_t), renormalised."""
    rng = np.random.default_rng(9)
    xs, xt = rng.standard_normal((3, 5)), rng.standard_normal((4, 5))
    tgt_parent = np.array([0, 0, 1, 1])
    image_plan = np.array([[0.7, 0.3]])
    pm = patch_plans(xs, np.zeros(3, int), xt, tgt_parent, image_plan, np.array([[0, 1]]), top_patches=8, tol=1e-12,
                     max_iter=20000)
    P, _ = entropic_ot(sq_distances(_t(xs), _t(xt)), epsilon_rel=0.05, tol=1e-12, max_iter=20000)
    w = P.numpy() * image_plan[0, tgt_parent][None, :]
    w /= w.sum(1, keepdims=True)
    for s in range(3):
        got = dict(zip(pm.indices[pm.indptr[s]:pm.indptr[s + 1]].tolist(), pm.weights[pm.indptr[s]:pm.indptr[s + 1]]))
        np.testing.assert_allclose([got[t] for t in range(4)], w[s], rtol=1e-8)



def _weights_matrix(pm, n_src, n_tgt):
    W = np.zeros((n_src, n_tgt))
    for s in range(n_src):
        W[s, pm.indices[pm.indptr[s]:pm.indptr[s + 1]]] = pm.weights[pm.indptr[s]:pm.indptr[s + 1]]
    return W


@pytest.mark.parametrize("level", ["paper", "tempered", "candidates", "marginal"])
def test_each_image_level_option_has_the_patch_marginals_it_claims(level):
    """Nothing truncated (top_patches >= candidates), so the patch plan can be read back from the weights.

    Rows of every patch plan are uniform (1/n); its columns are uniform for ``paper``, ``tempered`` and
    ``candidates`` and follow ``P_image / n(I_t)`` for ``marginal``.
    """
    rng = np.random.default_rng(21)
    xs, xt = rng.standard_normal((4, 6)), rng.standard_normal((5, 6))
    tgt_parent = np.array([0, 0, 0, 1, 1])
    image_plan = np.array([[0.8, 0.2]])
    pm = patch_plans(xs, np.zeros(4, int), xt, tgt_parent, image_plan, np.array([[0, 1]]), top_patches=8,
                     tol=1e-12, max_iter=20000, image_level=level, image_gamma=0.5)
    W = _weights_matrix(pm, 4, 5)
    factor = {"paper": image_plan[0, tgt_parent], "tempered": image_plan[0, tgt_parent] ** 0.5}.get(level, 1.0)
    P = W / factor                        # each row of P ∝ the patch plan's row
    P = P / P.sum(1, keepdims=True) / 4   # rows of the plan are exactly 1/n
    b = (image_plan[0, tgt_parent] / np.bincount(tgt_parent)[tgt_parent] if level == "marginal"
         else np.full(5, 1.0))
    np.testing.assert_allclose(P.sum(0), b / b.sum(), atol=1e-9)
    if level == "candidates":            # the image plan leaves the weights alone
        Q, _ = entropic_ot(sq_distances(_t(xs), _t(xt)), epsilon_rel=0.05, tol=1e-12, max_iter=20000)
        np.testing.assert_allclose(W, Q.numpy() / Q.numpy().sum(1, keepdims=True), rtol=1e-8)


def test_image_level_epsilon_and_tau_soften_and_relax_only_the_image_plan(small_inputs):
    base = MatchConfig(tol=1e-9, max_iter=20000)
    hard = match_dataset(*small_inputs, base, warn=False)
    soft = match_dataset(*small_inputs, dataclasses.replace(base, image_epsilon=0.5), warn=False)
    ns, nt = hard.image_plan.shape
    for r in (hard, soft):                # balanced: uniform marginals
        np.testing.assert_allclose(r.image_plan.sum(1), 1 / ns, atol=1e-7)
        np.testing.assert_allclose(r.image_plan.sum(0), 1 / nt, atol=1e-7)
    top_share = lambda plan: float((plan.max(1) / plan.sum(1)).mean())  # noqa: E731
    assert top_share(soft.image_plan) < top_share(hard.image_plan)
    assert soft.image_report.epsilon_rel == 0.5 and soft.patch_graph.meta["epsilon"] == base.epsilon
    relaxed = match_dataset(*small_inputs, dataclasses.replace(base, image_tau=0.05), warn=False)
    assert relaxed.image_report.unbalanced_tau_abs is not None and relaxed.patch_report.unbalanced_tau_rel is None
    assert np.abs(relaxed.image_plan.sum(0) - 1 / nt).max() > 1e-3       # the column marginal is relaxed
    tight = match_dataset(*small_inputs, dataclasses.replace(base, image_tau=1e6), warn=False)
    np.testing.assert_allclose(tight.image_plan.sum(0), 1 / nt, atol=1e-5)  # and a huge tau restores it
    with pytest.raises(ValueError, match="image_level"):
        match_dataset(*small_inputs, dataclasses.replace(base, image_level="nonsense"), warn=False)


# --- the pair graph -------------------------------------------------------------------------------------------------

def _small_graph():
    return PairGraph.from_rows(["a_0", "a_1", "b_0"], ["x_0", "x_1", "y_0", "y_1"],
                               [[0, 2], [1], [3, 0, 2]], [[0.25, 0.75], [2.0], [0.5, 0.3, 0.2]],
                               meta={"method": "test"})


def test_pair_graph_round_trips_exactly(tmp_path):
    g = _small_graph()
    assert g.row("a_0") == [("y_0", 0.75), ("x_0", 0.25)]
    assert g.row("a_1") == [("x_1", 1.0)]
    path = g.save(tmp_path / "graph.npz")
    h = PairGraph.load(path)
    assert h == g
    assert h.to_edges() == g.to_edges()
    assert h.meta == {"method": "test"}
    assert not list(tmp_path.glob(".*tmp"))          # no temporary left behind


@pytest.mark.parametrize("damage", ["truncate", "garbage", "bad_weights", "empty"])
def test_corrupt_graph_file_raises_an_error_naming_the_file(tmp_path, damage):
    path = _small_graph().save(tmp_path / "graph.npz")
    data = path.read_bytes()
    if damage == "truncate":
        path.write_bytes(data[: len(data) // 2])
    elif damage == "garbage":
        path.write_bytes(data[:200] + bytes(len(data) - 200))
    elif damage == "empty":
        path.write_bytes(b"")
    else:
        g = _small_graph()
        bad = PairGraph.__new__(PairGraph)
        bad.__dict__.update(g.__dict__)
        bad.weights = g.weights * 2                   # rows no longer sum to 1
        PairGraph.save(bad, path)
    with pytest.raises(PairGraphError, match="graph.npz"):
        PairGraph.load(path)


def test_pair_graph_rejects_inconsistent_input():
    with pytest.raises(PairGraphError, match="duplicate"):
        PairGraph(["a", "a"], ["x"], [0, 1, 2], [0, 0], [1.0, 1.0])
    with pytest.raises(PairGraphError, match="out of range"):
        PairGraph(["a"], ["x"], [0, 1], [3], [1.0])
    with pytest.raises(PairGraphError, match="sum to"):
        PairGraph(["a"], ["x", "y"], [0, 2], [0, 1], [0.5, 0.6])


def test_sampler_frequencies_follow_the_weights_and_are_reproducible():
    weights = np.array([0.4, 0.25, 0.15, 0.1, 0.05, 0.03, 0.015, 0.005])
    g = PairGraph(["s0", "s1"], [f"t{i}" for i in range(9)], [0, 8, 9], list(range(8)) + [8],
                  list(weights) + [1.0])
    n = 200_000
    draws = g.sampler(seed=123).sample(["s0"] * n)
    counts = np.array([draws.count(f"t{i}") for i in range(8)])
    assert counts.sum() == n
    expected = n * weights
    sd = np.sqrt(n * weights * (1 - weights))          # binomial standard deviation per target
    assert np.all(np.abs(counts - expected) < 5 * sd), (counts, expected)
    chi2 = float(((counts - expected) ** 2 / expected).sum())
    assert chi2 < stats.chi2.ppf(1 - 1e-6, df=len(weights) - 1)
    # a single-edge source always gets its target; a mixed batch keeps positions
    assert g.sampler(0).sample(["s1", "s0", "s1"])[::2] == ["t8", "t8"]
    ids = ["s0", "s1"] * 500
    assert g.sampler(7).sample(ids) == g.sampler(7).sample(ids)
    assert g.sampler(7).sample(ids) != g.sampler(8).sample(ids)
    with pytest.raises(KeyError, match="nope"):
        g.sampler(0).sample(["nope"])


def test_zero_weight_edges_are_never_drawn():
    g = PairGraph(["s"], ["a", "b", "c"], [0, 3], [0, 1, 2], [0.5, 0.0, 0.5])
    draws = g.sampler(1).sample(["s"] * 5000)
    assert "b" not in draws and {"a", "c"} == set(draws)


# --- baselines and diversity ----------------------------------------------------------------------------------------

def test_random_and_knn_graphs_share_the_format(tmp_path):
    rng = np.random.default_rng(10)
    src_ids, tgt_ids = [f"s_{i}" for i in range(30)], [f"t_{i}" for i in range(17)]
    xs, xt = rng.standard_normal((30, 6)), rng.standard_normal((17, 6))
    graphs = {"random": random_graph(src_ids, tgt_ids, 5, seed=3),
              "knn": knn_graph(xs, xt, src_ids, tgt_ids, 5),
              "knn_softmax": knn_graph(xs, xt, src_ids, tgt_ids, 5, weighting="softmax"),
              "ot": ot_graph(xs, xt, src_ids, tgt_ids, 5)[0]}
    d = sq_distances(_t(xs), _t(xt)).numpy()
    for name, g in graphs.items():
        assert isinstance(g, PairGraph) and g.source_ids == tuple(src_ids) and g.target_ids == tuple(tgt_ids)
        assert np.diff(g.indptr).tolist() == [5] * 30
        np.testing.assert_allclose(np.add.reduceat(g.weights, g.indptr[:-1]), 1.0)
        assert PairGraph.load(g.save(tmp_path / f"{name}.npz")) == g
    assert random_graph(src_ids, tgt_ids, 5, seed=3) == graphs["random"]
    nearest = np.sort(np.argsort(d, axis=1, kind="stable")[:, :5], axis=1)
    assert np.array_equal(np.sort(graphs["knn"].indices.reshape(30, 5), axis=1), nearest)
    assert np.all(graphs["knn"].weights == 0.2)
    assert np.all(np.diff(graphs["knn_softmax"].weights.reshape(30, 5), axis=1) <= 1e-15)


def test_knn_collapses_onto_a_hub_target_and_ot_does_not():
    """Sources on a unit circle, one hub target at the centre (distance 1 from every source), the other
    targets on a circle of radius 2.2: every source's nearest target is the hub."""
    n = 24
    ang = 2 * np.pi * np.arange(n) / n
    xs = np.stack([np.cos(ang), np.sin(ang)], 1)
    ring = 2.2 * np.stack([np.cos(ang[:-1] + 0.1), np.sin(ang[:-1] + 0.1)], 1)
    xt = np.concatenate([[[0.0, 0.0]], ring])
    src, tgt = [f"s_{i}" for i in range(n)], [f"t_{i}" for i in range(n)]
    knn = graph_stats(knn_graph(xs, xt, src, tgt, 1))
    g_ot, rep = ot_graph(xs, xt, src, tgt, 1)
    flat = graph_stats(g_ot)
    assert rep.converged
    assert knn["distinct_targets"] == 1 and knn["max_in_degree"] == n
    assert flat["distinct_targets"] >= n // 2 and flat["max_in_degree"] <= 2
    assert knn["gini_load"] > 0.9 > 0.5 > flat["gini_load"]
    assert knn["load_entropy_norm"] < flat["load_entropy_norm"]


def test_graph_stats_on_a_hand_graph():
    g = PairGraph(["a", "b"], ["x", "y", "z", "w"], [0, 2, 4], [0, 1, 0, 2], [0.5, 0.5, 0.5, 0.5])
    st = graph_stats(g)
    assert st["distinct_targets"] == 3 and st["fraction_targets_used"] == 0.75
    assert st["max_in_degree"] == 2 and st["max_load"] == 1.0
    assert st["mean_weight_entropy"] == pytest.approx(np.log(2))
    uniform = PairGraph(["a", "b"], ["x", "y"], [0, 1, 2], [0, 1], [1.0, 1.0])
    assert graph_stats(uniform)["gini_load"] == pytest.approx(0.0)
    assert graph_stats(uniform)["load_entropy_norm"] == pytest.approx(1.0)


# --- match_dataset --------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def small_inputs():
    return synthetic_match_inputs(7, 11, (3, 6), image_dim=48, patch_dim=24, n_classes=3, seed=11)


@pytest.mark.parametrize("method", ["ot", "unbalanced", "knn", "random"])
def test_match_dataset_methods_give_patch_graphs_over_all_patches(small_inputs, method, tmp_path):
    si, ti, sp, tp = small_inputs
    cfg = MatchConfig(method=method, top_images=4, top_patches=5)
    res = match_dataset(si, ti, sp, tp, cfg)
    g = res.patch_graph
    assert g.source_ids == tuple(sorted(sp.ids)) and g.target_ids == tuple(sorted(tp.ids))
    assert res.converged
    np.testing.assert_allclose(np.add.reduceat(g.weights, g.indptr[:-1]), 1.0)
    assert np.diff(g.indptr).max() <= 5
    if method in ("ot", "unbalanced"):
        assert res.image_plan.shape == (7, 11) and res.top_images.shape == (7, 4)
        parent_s, parent_t = dict(zip(sp.ids, sp.parents)), dict(zip(tp.ids, tp.parents))
        tops = {res.source_image_ids[i]: {res.target_image_ids[j] for j in row} for i, row in enumerate(res.top_images)}
        for s, t, _ in g.to_edges():
            assert parent_t[t] in tops[parent_s[s]]
        assert res.patch_report.all_converged and len(res.patch_report.iterations) == 7
    if method == "unbalanced":
        assert res.image_report.mass < 1.0
    res.save(tmp_path)
    assert PairGraph.load(tmp_path / "patch_graph.npz") == g
    assert (tmp_path / "match_report.json").is_file()


def test_match_dataset_is_keyed_by_ids_not_positions(small_inputs):
    si, ti, sp, tp = small_inputs
    rng = np.random.default_rng(12)

    def shuffled(d: DescriptorSet) -> DescriptorSet:
        o = rng.permutation(len(d))
        return DescriptorSet(tuple(d.ids[i] for i in o), d.features[o],
                             None if d.parents is None else tuple(d.parents[i] for i in o))

    cfg = MatchConfig(top_images=4, top_patches=5)
    a = match_dataset(si, ti, sp, tp, cfg)
    b = match_dataset(shuffled(si), shuffled(ti), shuffled(sp), shuffled(tp), cfg)
    assert a.patch_graph == b.patch_graph
    for s in sp.ids[:5]:
        assert a.patch_graph.row(s) == b.patch_graph.row(s)
    assert np.array_equal(a.image_plan, b.image_plan)


def test_match_dataset_knn_scope_top_images_restricts_candidates(small_inputs):
    si, ti, sp, tp = small_inputs
    cfg = MatchConfig(method="knn", top_images=2, top_patches=3)
    res = match_dataset(si, ti, sp, tp, cfg, knn_scope="top_images")
    parent_s, parent_t = dict(zip(sp.ids, sp.parents)), dict(zip(tp.ids, tp.parents))
    tops = {res.source_image_ids[i]: {res.target_image_ids[j] for j in row} for i, row in enumerate(res.top_images)}
    assert res.image_report is not None
    for s, t, w in res.patch_graph.to_edges():
        assert parent_t[t] in tops[parent_s[s]]
    assert set(res.patch_graph.weights.round(12)) <= {round(1 / 3, 12), 0.5, 1.0}


def test_match_dataset_rejects_bad_input(small_inputs):
    si, ti, sp, tp = small_inputs
    with pytest.raises(ValueError, match="unknown matching method"):
        match_dataset(si, ti, sp, tp, dataclasses.replace(MatchConfig(), method="nope"))
    orphan = DescriptorSet(sp.ids, sp.features, ("zzz",) + sp.parents[1:])
    with pytest.raises(ValueError, match="zzz"):
        match_dataset(si, ti, orphan, tp, MatchConfig())
