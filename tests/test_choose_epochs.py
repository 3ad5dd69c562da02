"""benchmarks/choose_epochs.py: stage-1 epochs compared on the validation split's held-out loss."""

import importlib.util
import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from isp_support.config import profile_config

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "choose_epochs.py"
spec = importlib.util.spec_from_file_location("choose_epochs", SCRIPT)
choose_epochs = importlib.util.module_from_spec(spec)
spec.loader.exec_module(choose_epochs)


def test_the_jobs_are_notebook_06s_stage1_runs():
    cfg = profile_config("demo")
    jobs = [(m.key, s) for m, s in choose_epochs.stage1_jobs(cfg)]
    assert ("ot", 0) in jobs and ("ot", 2) in jobs and ("paired_l1", 0) in jobs
    assert ("knn", 1) not in jobs                                  # extra seeds: seed_methods only
    assert not any(k in ("floor", "ot_stage2", "ot_experts") for k, _ in jobs)
    assert len(jobs) == 9 + 2 * len(cfg.evaluate.seed_methods)


def test_a_run_folder_without_notebook_03s_outputs_is_refused(tmp_path):
    (tmp_path / "src").mkdir()
    with pytest.raises(SystemExit, match="no preprocessed"):
        choose_epochs.linked_run_dir(tmp_path / "src", tmp_path / "out")


def test_held_out_losses_are_compared_run_by_run(tmp_path, monkeypatch, capsys):
    src = tmp_path / "run"
    for name in choose_epochs.SHARED:
        (src / name).mkdir(parents=True) if "." not in name else (src / name).write_text("{}")
    (src / "train").mkdir()
    monkeypatch.setattr(choose_epochs, "load_config", lambda *a, **k: profile_config("demo"))
    seen = []

    def fake_train(cfg, where, method, seed=None, progress=True, log=print):
        epochs = cfg.train.epochs
        seen.append((epochs, Path(where), method.key, seed))
        loss = {"ot": 1.0, "random": 2.0}.get(method.key, 3.0) * (1 + 0.01 * seed) * (1.1 if epochs == 3 else 1.0)
        rule = "paired_loss" if method.pairing == "paired" else "pseudo_loss"
        return SimpleNamespace(checkpoint_rule=rule, best_epoch=epochs, best={rule: loss}, seconds=epochs * 10.0,
                               loaded=where == src)

    monkeypatch.setattr(choose_epochs.scoring, "train_method", fake_train)
    assert choose_epochs.main(["--run-dir", str(src), "--epochs", "3", "--out", str(tmp_path / "out")]) == 0
    base_epochs = profile_config("demo").train.epochs
    assert {w for e, w, _, _ in seen if e == base_epochs} == {src}          # the profile's runs: loaded in place
    assert {w for e, w, _, _ in seen if e == 3} == {tmp_path / "out" / "epochs-3"}
    assert (tmp_path / "out" / "epochs-3" / "match").is_symlink()
    report = json.loads((tmp_path / "out" / "choose_epochs.json").read_text())
    summary = report["summary"]["3"]
    assert summary["worse"] == summary["runs"] == 15 and summary["median_change"] == pytest.approx(0.1)
    assert "worse in 15 of 15 runs" in capsys.readouterr().out
    seen.clear()
    assert choose_epochs.main(["--run-dir", str(src), "--epochs", "3", "--out", str(tmp_path / "out"),
                               "--rows", "ot", "knn", "--seeds", "0"]) == 0
    assert sorted((e, k, s) for e, _, k, s in seen) == [(3, "knn", 0), (3, "ot", 0), (base_epochs, "knn", 0),
                                                         (base_epochs, "ot", 0)]
