"""Patch-level pseudo-pairs (isp_support.pairing.patches) and match_dataset (isp_support.pairing.match)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from isp_support.config import MatchConfig, load_config
from isp_support.ot.fgw import sq_distances
from isp_support.ot.sinkhorn import entropic_ot
from isp_support.pairing.graph import PairGraph
from isp_support.pairing.match import DescriptorSet, match_dataset, synthetic_match_inputs
from isp_support.pairing.patches import patch_plans, top_k_targets

F64 = torch.float64


def _t(x):
    return torch.as_tensor(np.asarray(x), dtype=F64)



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


def _outside_top_images(res, sp, tp) -> int:
    """Edges of ``res.patch_graph`` whose target patch is not in one of its source image's top images."""
    parent_s, parent_t = dict(zip(sp.ids, sp.parents)), dict(zip(tp.ids, tp.parents))
    tops = {res.source_image_ids[i]: {res.target_image_ids[j] for j in row} for i, row in enumerate(res.top_images)}
    return sum(parent_t[t] not in tops[parent_s[s]] for s, t, _ in res.patch_graph.to_edges())


def test_match_dataset_knn_scope_top_images_restricts_candidates(small_inputs):
    si, ti, sp, tp = small_inputs
    cfg = load_config("tiny", overrides={"match.method": "knn", "match.top_images": 2, "match.top_patches": 3,
                                         "match.knn_scope": "top_images"}, environ={}).match
    res = match_dataset(si, ti, sp, tp, cfg)
    assert res.image_report is not None and res.patch_graph.meta["knn_scope"] == "top_images"
    assert _outside_top_images(res, sp, tp) == 0
    assert set(res.patch_graph.weights.round(12)) <= {round(1 / 3, 12), 0.5, 1.0}
    wide = match_dataset(si, ti, sp, tp, dataclasses.replace(cfg, knn_scope="global"))
    assert wide.image_report is None and wide.patch_graph.meta["knn_scope"] == "global"
    assert _outside_top_images(wide, sp, tp) > 0          # the global search leaves the top images


def test_match_dataset_knn_weighting_comes_from_the_config(small_inputs):
    si, ti, sp, tp = small_inputs
    cfg = MatchConfig(method="knn", top_images=2, top_patches=3)
    for scope in ("global", "top_images"):
        plain = match_dataset(si, ti, sp, tp, dataclasses.replace(cfg, knn_scope=scope))
        soft = match_dataset(si, ti, sp, tp, dataclasses.replace(cfg, knn_scope=scope, knn_weighting="softmax"))
        assert set(plain.patch_graph.weights.round(12)) <= {round(1 / 3, 12), 0.5, 1.0}
        assert len(set(soft.patch_graph.weights.round(12))) > 3         # distance-dependent weights
        np.testing.assert_allclose(np.add.reduceat(soft.patch_graph.weights, soft.patch_graph.indptr[:-1]), 1.0)


def test_match_dataset_solver_options_come_from_the_config(small_inputs, monkeypatch):
    """``outer_max_iter``, ``outer_tol``, ``overrelax`` and ``max_chunk_bytes`` of a Config reach the solvers."""
    from isp_support.pairing import patches

    seen: list[float] = []

    def spy(*args, **kwargs):
        seen.append(kwargs["overrelax"])
        return batched(*args, **kwargs)

    batched = patches.entropic_ot_batched
    monkeypatch.setattr(patches, "entropic_ot_batched", spy)
    base = MatchConfig(top_images=4, top_patches=5)
    default = match_dataset(*small_inputs, base, warn=False)
    assert default.image_report.outer_tol == 1e-6 and default.image_report.outer_max_iter == 200
    assert default.patch_report.chunks == 1 and set(seen) == {1.0}
    cfg = load_config("tiny", overrides={"match.top_images": 4, "match.top_patches": 5, "match.outer_max_iter": 2,
                                         "match.outer_tol": 1e-12, "match.overrelax": 1.5,
                                         "match.max_chunk_bytes": 4000}, environ={}).match
    seen.clear()
    res = match_dataset(*small_inputs, cfg, warn=False)
    rep = res.image_report
    assert rep.outer_iterations == 2 and rep.outer_max_iter == 2 and rep.outer_tol == 1e-12
    assert not rep.outer_converged and "overrelax 1.5" in rep.last_inner.solver
    assert res.patch_report.chunks > 1 and set(seen) == {1.5}
    assert res.config["overrelax"] == 1.5 and res.config["max_chunk_bytes"] == 4000


def test_match_dataset_refuses_a_bad_knn_scope_built_without_validation(small_inputs):
    with pytest.raises(ValueError, match="knn_scope must be 'global' or 'top_images'"):
        match_dataset(*small_inputs, MatchConfig(method="knn", knn_scope="nearest"))


def test_match_dataset_rejects_bad_input(small_inputs):
    si, ti, sp, tp = small_inputs
    with pytest.raises(ValueError, match="unknown matching method"):
        match_dataset(si, ti, sp, tp, dataclasses.replace(MatchConfig(), method="nope"))
    orphan = DescriptorSet(sp.ids, sp.features, ("zzz",) + sp.parents[1:])
    with pytest.raises(ValueError, match="zzz"):
        match_dataset(si, ti, orphan, tp, MatchConfig())
