"""benchmarks/compare_ablation.py: two runs' ablation tables agree when no figure moves beyond the seed spread."""

import importlib.util
import json
import math
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "compare_ablation.py"
spec = importlib.util.spec_from_file_location("compare_ablation", SCRIPT)
compare_ablation = importlib.util.module_from_spec(spec)
spec.loader.exec_module(compare_ablation)


def row(psnr, ssim=0.7, de=16.0, sd=None):
    out = {"psnr": psnr, "ssim": ssim, "delta_e2000": de}
    if sd is not None:
        out |= {"psnr sd": sd, "ssim sd": sd / 10, "delta_e2000 sd": sd}
    return out


def make_run(root: Path, table: dict) -> Path:
    (root / "metrics").mkdir(parents=True)
    (root / "metrics" / "06_evaluate.json").write_text(json.dumps({"table": table}))
    return root


def test_figures_within_the_largest_seed_sd_agree(tmp_path, capsys):
    a = make_run(tmp_path / "a", {"ot": row(17.5, sd=0.5), "random": row(16.0, sd=1.2), "lut": row(15.0)})
    b = make_run(tmp_path / "b", {"ot": row(17.9, sd=0.4), "random": row(15.1, sd=1.0), "lut": row(16.1)})
    assert compare_ablation.main([str(a), str(b)]) == 0
    out = capsys.readouterr().out
    assert "psnr 1.2" in out and "every figure within the seed spread" in out


def test_a_figure_beyond_the_spread_or_a_missing_row_fails(tmp_path, capsys):
    a = make_run(tmp_path / "a", {"ot": row(17.5, sd=0.5), "lut": row(15.0)})
    b = make_run(tmp_path / "b", {"ot": row(17.5, sd=0.5), "lut": row(15.6)})
    assert compare_ablation.main([str(a), str(b)]) == 1
    assert "lut             psnr" in (out := capsys.readouterr().out) and "BEYOND the spread" in out
    c = make_run(tmp_path / "c", {"ot": row(17.5, sd=0.5)})
    assert compare_ablation.main([str(a), str(c)]) == 1
    assert "only in A" in capsys.readouterr().out


def test_without_any_seeded_row_there_is_no_spread_and_nothing_passes(tmp_path):
    table = {"ot": row(17.5)}
    assert math.isnan(compare_ablation.seed_spread([table], "psnr"))
    assert compare_ablation.compare(table, table)[1] == 3


@pytest.mark.parametrize("content, problem", [(None, "no evaluation metrics"), ("{", "no ablation table"),
                                              ('{"table": [1]}', "not a mapping")])
def test_a_missing_or_broken_table_is_named(tmp_path, capsys, content, problem):
    run = tmp_path / "run"
    (run / "metrics").mkdir(parents=True)
    if content is not None:
        (run / "metrics" / "06_evaluate.json").write_text(content)
    assert compare_ablation.main([str(run), str(run)]) == 2
    err = capsys.readouterr().err
    assert "06_evaluate.json" in err and problem in err


def write_result(run: Path, name: str, losses: list[float], best: int, rule: str = "pseudo_loss") -> None:
    folder = run / "train" / name
    folder.mkdir(parents=True)
    history = [{"epoch": e, rule: v} for e, v in enumerate(losses)]
    (folder / "result.json").write_text(json.dumps({"history": history, "best_epoch": best, "checkpoint_rule": rule}))


def test_the_kept_held_out_losses_are_compared_run_by_run(tmp_path, capsys):
    table = {"ot": row(17.5, sd=0.5)}
    a, b = make_run(tmp_path / "a", table), make_run(tmp_path / "b", table)
    write_result(a, "stage1_ot", [3.0, 2.0, 1.0], best=2)
    write_result(b, "stage1_ot", [3.0, 1.5, 1.1], best=1)               # kept epoch 1: 1.5, +50%
    write_result(a, "stage1_paired_l1", [0.2, 0.1], best=1, rule="paired_loss")
    write_result(b, "stage1_paired_l1", [0.2, 0.08], best=1, rule="paired_loss")
    write_result(b, "stage1_knn", [1.0], best=0)                         # in one run only: left out
    (a / "train" / "broken").mkdir()
    (a / "train" / "broken" / "result.json").write_text("{")           # unreadable: left out
    assert compare_ablation.main([str(a), str(b)]) == 0                  # informative only
    out = capsys.readouterr().out
    assert "stage1_ot" in out and "+50.0%" in out and "-20.0%" in out
    assert "2 runs: 1 worse, 1 better" in out and "stage1_knn" not in out and "broken" not in out
