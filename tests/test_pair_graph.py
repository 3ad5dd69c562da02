"""The pair graph (isp_support.pairing.graph) and the baseline graphs (isp_support.pairing.baselines)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import stats

from isp_support.ot.fgw import sq_distances
from isp_support.pairing.baselines import knn_graph, ot_graph, random_graph
from isp_support.pairing.graph import PairGraph, PairGraphError, graph_stats

F64 = torch.float64


def _t(x):
    return torch.as_tensor(np.asarray(x), dtype=F64)



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
