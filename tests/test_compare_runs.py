"""benchmarks/compare_runs.py: two runs agree only when every figure, table and plan agrees to the last digit."""

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "compare_runs.py"
spec = importlib.util.spec_from_file_location("compare_runs", SCRIPT)
compare_runs = importlib.util.module_from_spec(spec)
spec.loader.exec_module(compare_runs)


def make_run(root: Path, psnr: float = 17.25, seconds: float = 3.0, plan_entry: float = 0.5) -> Path:
    (root / "metrics").mkdir(parents=True)
    (root / "eval").mkdir()
    (root / "match" / "ot").mkdir(parents=True)
    (root / "metrics" / "06_evaluate.json").write_text(json.dumps({
        "table": {"ot": {"psnr": psnr, "s_per_mp": seconds}}, "export": {"folder": str(root / "eval" / "sub")}}))
    (root / "series.json").write_text(json.dumps({"seconds": {"01": seconds}}))
    (root / "eval" / "ablation.csv").write_text(f"row,psnr,s_per_mp\not,{psnr},{seconds}\n")
    np.savez(root / "match" / "ot" / "patch_graph.npz", weights=np.array([plan_entry, 1 - plan_entry]))
    np.save(root / "match" / "ot" / "image_plan.npy", np.eye(2))
    return root


def test_runs_that_differ_only_in_timings_and_their_own_folder_agree(tmp_path, capsys):
    a, b = make_run(tmp_path / "a"), make_run(tmp_path / "b", seconds=9.0)
    assert compare_runs.main([str(a), str(b)]) == 0
    assert "4 files compared, 0 differences" in capsys.readouterr().out


@pytest.mark.parametrize("change, where", [
    ({"psnr": 17.250000000000004}, "06_evaluate.json.table.ot.psnr"),
    ({"plan_entry": 0.5000001}, "patch_graph.npz[weights]: arrays differ"),
])
def test_a_difference_in_the_last_digit_is_reported(tmp_path, capsys, change, where):
    a, b = make_run(tmp_path / "a"), make_run(tmp_path / "b", **change)
    assert compare_runs.main([str(a), str(b)]) == 1
    assert where in capsys.readouterr().out


def test_a_file_missing_on_one_side_is_reported(tmp_path):
    a, b = make_run(tmp_path / "a"), make_run(tmp_path / "b")
    (b / "match" / "ot" / "image_plan.npy").unlink()
    count, diffs = compare_runs.compare_runs(a, b)
    assert diffs == [f"{Path('match/ot/image_plan.npy')}: only in A"]


def test_a_folder_that_is_not_a_run_is_refused(tmp_path, capsys):
    assert compare_runs.main([str(make_run(tmp_path / "a")), str(tmp_path)]) == 2
    assert "not a run folder" in capsys.readouterr().err


def test_added_keys_count_unless_allowed_and_changed_values_count_always(tmp_path, capsys):
    a, b = make_run(tmp_path / "a"), make_run(tmp_path / "b", psnr=18.0)
    metrics = b / "metrics" / "06_evaluate.json"
    metrics.write_text(metrics.read_text().replace('"export"', '"new_field": 1, "export"'))
    assert compare_runs.main([str(a), str(b), "--allow-added"]) == 1  # the PSNR still differs
    out = capsys.readouterr().out
    assert "06_evaluate.json.new_field: added in B" in out and "1 keys added in B" in out
    b2 = make_run(tmp_path / "b2")
    metrics = b2 / "metrics" / "06_evaluate.json"
    metrics.write_text(metrics.read_text().replace('"export"', '"new_field": 1, "export"'))
    assert compare_runs.main([str(a), str(b2)]) == 1
    assert compare_runs.main([str(a), str(b2), "--allow-added"]) == 0
