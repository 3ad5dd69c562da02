"""benchmarks/bench_all.py's summary: figures, the before/after table, the baseline and the limits at the matrix-product rate."""

import json
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import bench_all  # noqa: E402
import bench_training  # noqa: E402


def record(step=40.0, limit=None, series=None, fast=7.0):
    training = {"stage_1": step, "stage_1_no_Gram": 180.0, "stage_2": 30.0, "side": 48}
    if limit is not None:
        training |= {"stage_1_limit_patches_per_s": limit, "stage_1_flop_per_patch": 4.6e9, "matmul_gflops": 190.0}
    stages = {"training": training | {"peak_rss_mib": 900.0},
              "inference": {"1x1_fast_auto_tiles_megapixels_per_s": fast, "1x1_auto_tiles_megapixels_per_s": 3.5,
                            "limit_megapixels_per_s": 14.0, "flop_per_pixel": 13_970, "matmul_gflops": 190.0,
                            "peak_rss_mib": 500.0}}
    if series is not None:
        stages["demo series"] = {"seconds": series, "peak_rss_mib": 100.0}
    return {"device": "cpu", "device_name": "test cpu", "threads": 2, "stages": stages}


def test_figures_list_the_rates_the_limits_and_the_series_total():
    rows = {name: (value, unit) for name, value, unit in
            bench_all.figures(record(limit=41.0, series={"01_preprocess": 20.0, "02_stitch": 10.0}))}
    assert rows["training step, stage 1"] == (40.0, "patches/s")
    assert rows["training step, stage 1, at the matmul rate"] == (41.0, "patches/s")
    assert rows["inference, at the matmul rate"] == (14.0, "MP/s")
    assert rows["demo series, all notebooks"] == (30.0, "s")
    assert "training step, stage 1, at the matmul rate" not in {n for n, _, _ in bench_all.figures(record())}


def test_the_summary_puts_the_baseline_beside_with_speed_ups(capsys):
    before = record(step=20.0, series={"06_evaluate": 300.0}, fast=3.5)
    bench_all.print_summary(record(step=40.0, limit=50.0, series={"06_evaluate": 100.0}), before)
    out = capsys.readouterr().out
    line = next(x for x in out.splitlines() if x.startswith("training step, stage 1 "))
    assert line.split()[-4:] == ["20.00", "40.00", "patches/s", "2.00x"]
    line = next(x for x in out.splitlines() if x.startswith("demo series, 06_evaluate"))
    assert line.split()[-2:] == ["s", "3.00x"]  # a time: before / after
    assert "stage-1 training step: 80% of the limit" in out
    assert "fast inference in auto tiles: 50% of the limit at the matrix-product rate" in out


def test_load_baseline_takes_the_series_from_a_run_folder(tmp_path):
    path = tmp_path / "bench.json"
    path.write_text(json.dumps(record(series={"01_preprocess": 99.0})))
    run = tmp_path / "run"
    run.mkdir()
    (run / "series.json").write_text(json.dumps({"seconds": {"01_preprocess": 12.5, "02_stitch": 3.0}}))
    assert bench_all.load_baseline(None, None) is None
    assert bench_all.load_baseline(str(path), None)["stages"]["demo series"]["seconds"] == {"01_preprocess": 99.0}
    got = bench_all.load_baseline(str(path), str(run))["stages"]["demo series"]["seconds"]
    assert got == {"01_preprocess": 12.5, "02_stitch": 3.0}


def test_training_limit_is_the_counted_work_at_the_matrix_product_rate(capsys):
    rows = [{"step": "stage 1", "patches_per_s": 30.0, "flop_per_patch": 4e9},
            {"step": "Gram fwd+bwd", "patches_per_s": None, "flop_per_patch": 3e9}]
    out = bench_all.training_limit(rows, 200.0)
    assert out["stage_1_limit_patches_per_s"] == pytest.approx(50.0)
    printed = capsys.readouterr().out
    assert "the Gram loss 75% of it" in printed and "reaches 60% of it" in printed


def test_the_training_limit_names_the_precision_of_its_rate(capsys):
    rows = [{"step": "stage 1", "patches_per_s": 30.0, "flop_per_patch": 4e9},
            {"step": "Gram fwd+bwd", "patches_per_s": None, "flop_per_patch": 3e9}]
    out = bench_all.training_limit(rows, 400.0, "bfloat16")
    assert out["matmul_dtype"] == "bfloat16" and out["stage_1_limit_patches_per_s"] == pytest.approx(100.0)
    assert "400 GFLOP/s (bfloat16)" in capsys.readouterr().out


@pytest.mark.parametrize("amp, other, extra", [(True, True, "stage 1, float32"), (False, True, "stage 1, bfloat16"),
                                               (False, False, None)])
def test_the_bench_times_the_stage_1_step_in_the_other_arithmetic_when_asked(amp, other, extra):
    from isp_support.config import load_config

    cfg = load_config("tiny", environ={}, overrides={"train.gram": 0.0})
    steps = bench_training.side_steps(8, cfg, None, "cpu", 2, amp, stage2=False, other=other)
    assert [k for k in steps if k.startswith("stage 1, ") and k != "stage 1, no Gram"] == ([extra] if extra else [])
    for name, step in steps.items():
        if name != "Gram fwd+bwd":
            step()


def test_flop_per_call_counts_matrix_products_forward_and_backward():
    a = torch.rand(8, 16, requires_grad=True)
    b = torch.rand(16, 4)
    assert bench_training.flop_per_call(lambda: a @ b) == 2 * 8 * 16 * 4
    # backward to a only (b needs no gradient): one more product of the same size
    assert bench_training.flop_per_call(lambda: (a @ b).sum().backward()) == 2 * (2 * 8 * 16 * 4)


def test_training_floor_counts_the_stage_1_patch_steps_of_a_series(tmp_path, capsys):
    def run(name, stage, epochs):
        folder = tmp_path / "train" / name
        folder.mkdir(parents=True)
        history = [{"epoch": 0, "seconds": 3.0, "patches_per_second": 0.0}]
        history += [{"epoch": e, "seconds": 10.0, "patches_per_second": 30.4} for e in range(1, epochs + 1)]
        (folder / "result.json").write_text(json.dumps({"settings": {"stage": stage}, "history": history}))

    run("ot", 1, 2)
    run("random", 1, 3)
    run("ot_stage2", 2, 4)
    out = bench_all.training_floor(tmp_path, {"stage_1_flop_per_patch": 2e9, "matmul_gflops": 100.0})
    assert out["stage_1_runs"] == 2 and out["stage_1_patch_steps"] == 5 * 304
    assert out["stage_1_seconds"] == pytest.approx(50.0)
    assert out["stage_1_floor_seconds"] == pytest.approx(5 * 304 * 2e9 / 100e9)
    assert "2 runs, 1,520 patch-steps in 50 s" in capsys.readouterr().out
