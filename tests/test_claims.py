"""The paper's claims judged from the verdict table (isp_support.evaluate.claims): the paragraph says what the
table says, with the reason, for every way a claim can end."""

import numpy as np
import pandas as pd
import pytest

from isp_support.evaluate import claims, scoring


def _scenes(gaps: dict[str, float], noise: float, n: int = 12, seed: int = 0) -> pd.DataFrame:
    """Per-scene scores: the reference row ``ot`` and rows ``gap`` dB PSNR above it, scene noise ``noise`` (none
    for a row of gap 0: the same scores as the reference)."""
    rng = np.random.default_rng(seed)
    base = rng.uniform(15, 20, n)
    rows = [{"method": "ot", "seed": 0, "scene": f"s{i}", "psnr": base[i], "ssim": 0.7, "delta_e2000": 10.0}
            for i in range(n)]
    for method, gap in gaps.items():
        rows += [{"method": method, "seed": 0, "scene": f"s{i}",
                  "psnr": base[i] + gap + (rng.normal(0, noise) if gap else 0.0),
                  "ssim": 0.7, "delta_e2000": 10.0} for i in range(n)]
    return pd.DataFrame(rows)


def _judge(gaps, noise, sd):
    per_scene = _scenes(gaps, noise)
    versus = scoring.compare_to(per_scene, "ot", 0, 500, 0)
    table = pd.DataFrame({"psnr sd": {k: sd.get(k, np.nan) for k in versus.index},
                          "ssim sd": np.nan, "delta_e2000 sd": np.nan,
                          "parameters": {k: 0 if k == "floor" else 7000 for k in versus.index}})
    judged = scoring.verdicts(versus, table, "ot", ("psnr",))
    return claims.judge(versus, judged, "ot", "psnr").set_index("worse"), judged


def test_confirmed_refuted_and_undecided_follow_the_verdict_table():
    # floor well below ot (claim: ot beats floor), knn well above (claim: ot beats knn, refuted), random equal
    j, judged = _judge({"floor": -5.0, "knn": 4.0, "random": 0.0}, noise=0.3,
                       sd={"ot": 0.2, "knn": 0.2, "random": 0.2})
    assert j.loc["floor", "verdict"] == "confirmed" and judged.loc["floor", "psnr verdict"] == "worse"
    assert j.loc["knn", "verdict"] == "refuted" and judged.loc["knn", "psnr verdict"] == "better"
    assert j.loc["random", "verdict"] == "undecided" and "includes zero" in j.loc["random", "reason"]
    assert j.loc["floor", "gap"] == pytest.approx(5.0, abs=0.3) and j.loc["knn", "gap"] == pytest.approx(-4.0, abs=0.3)
    assert j.loc["floor", "lo"] <= j.loc["floor", "gap"] <= j.loc["floor", "hi"]


def test_a_gap_within_twice_the_seed_spread_is_undecided_with_that_reason():
    j, _ = _judge({"knn": -2.0}, noise=0.1, sd={"ot": 3.0, "knn": 3.0})
    assert j.loc["knn", "verdict"] == "undecided"
    assert "within twice the seed spread" in j.loc["knn", "reason"] and "excludes zero" in j.loc["knn", "reason"]


def test_a_claim_on_the_other_side_of_the_reference_keeps_its_direction():
    # ot_stage2 should beat ot: a row 2 dB above the reference confirms it
    j, _ = _judge({"ot_stage2": 2.0}, noise=0.2, sd={})
    row = j.reset_index().set_index("better").loc["ot_stage2"]
    assert row["verdict"] == "confirmed" and row["gap"] > 0


def test_sentences_say_each_verdict_and_sum_them_up():
    j, _ = _judge({"floor": -5.0, "knn": 4.0, "random": 0.0}, noise=0.3, sd={"ot": 0.2, "knn": 0.2, "random": 0.2})
    said = claims.sentences(j.reset_index())
    assert said[0].startswith("Confirmed: a network trained on OT pseudo pairs improves")
    assert any(s.startswith("Refuted: OT matching beats kNN") for s in said)
    assert any(s.startswith("Cannot decide: OT pseudo pairs beat random") for s in said)
    assert said[-1].startswith("In all, this run confirms 1, refutes 1 and cannot decide 1 of the 3 claims")
    assert "more test scenes would help" in said[-1]


def test_rows_missing_from_the_run_are_left_out():
    j, _ = _judge({"random": 1.0}, noise=0.3, sd={})
    assert list(j.reset_index()["worse"]) == ["random"]
    assert claims.sentences(j.iloc[:0]) == []


def test_the_claims_and_seed_pictures_draw_one_row_per_claim_and_per_method(monkeypatch):
    import matplotlib.pyplot as plt

    from isp_support import viz

    monkeypatch.setattr(plt, "show", lambda: None)
    j, _ = _judge({"floor": -5.0, "knn": 4.0, "random": 0.0}, noise=0.3, sd={"ot": 0.2, "knn": 0.2, "random": 0.2})
    viz.claims_figure(j.reset_index())
    ax = plt.gcf().axes[0]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["ot vs floor", "ot vs random", "ot vs knn"]
    assert sorted(t.get_text() for t in ax.get_legend().get_texts()) == ["confirmed", "refuted", "undecided"]
    plt.close("all")
    scores = pd.DataFrame({"method": ["ot", "ot", "floor"], "seed": [0, 1, 0], "psnr": [18.0, 17.0, 12.0]})
    viz.seed_points(scores, ["floor", "ot"])
    assert [t.get_text() for t in plt.gcf().axes[0].get_yticklabels()] == ["floor", "ot"]
    plt.close("all")
