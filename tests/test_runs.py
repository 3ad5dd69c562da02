import os
import json
import re
from pathlib import Path

import pytest
import torch

from isp_support.config import load_config
from isp_support.config_rules import ConfigError
from isp_support.runs import RUN_RECORD, RunRecordError, init_run

BAD = [
    pytest.param({"device": "cuda"}, "no GPU is available", id="cuda-without-gpu",
                 marks=pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is visible")),
    pytest.param({"seed": -1}, r"Config.seed: expected an integer in \[0, 4294967295\]", id="seed-negative"),
    pytest.param({"seed": 2**70}, r"Config.seed: expected an integer in \[0, 4294967295\]", id="seed-huge"),
    pytest.param({"device": "nonsense"}, "Config.device: expected one of auto, cpu, cuda, cuda:N", id="device"),
    pytest.param({"train.epochs": 0}, "TrainConfig.epochs: expected an integer >= 1", id="epochs"),
]


@pytest.fixture()
def cfg(tmp_path):
    return load_config("tiny", run_dir=tmp_path / "runs" / "run", seed=5, device="cpu", environ={})


@pytest.mark.parametrize("change, message", BAD)
def test_bad_config_fails_before_the_run_dir_is_made(cfg, tmp_path, change, message):
    with pytest.raises(ConfigError, match=message):
        init_run(cfg.replace(**change), notebook="01_preprocess")
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("text, problem", [("{not json", "not JSON"), ("[1, 2]", "not a run record"),
                                           ('{"notebooks": []}', "not a run record"), (b"\xff\xfe", "not JSON")])
def test_malformed_run_record_is_named_and_left_alone(cfg, text, problem):
    path = Path(cfg.run_dir) / RUN_RECORD
    path.parent.mkdir(parents=True)
    data = text if isinstance(text, bytes) else text.encode()
    path.write_bytes(data)
    with pytest.raises(RunRecordError, match=f"{re.escape(str(path))}: {problem}"):
        init_run(cfg, notebook="01_preprocess")
    assert path.read_bytes() == data


def test_each_notebook_adds_its_entry_to_the_record(cfg):
    run_dir, _ = init_run(cfg, notebook="01_preprocess")
    init_run(cfg.replace(seed=6), notebook="02_stitch")
    record = json.loads((run_dir / RUN_RECORD).read_text())
    assert set(record["notebooks"]) == {"01_preprocess", "02_stitch"} and record["seed"] == 6
    assert record["notebooks"]["01_preprocess"]["seed"] == 5


def test_unreadable_run_record_is_named(cfg):
    path = Path(cfg.run_dir) / RUN_RECORD
    path.mkdir(parents=True)
    with pytest.raises(RunRecordError, match=f"{re.escape(str(path))}: cannot be read"):
        init_run(cfg)


def test_a_fifo_run_record_is_named_not_read(cfg):
    import os

    path = Path(cfg.run_dir) / RUN_RECORD
    path.parent.mkdir(parents=True)
    os.mkfifo(path)
    with pytest.raises(RunRecordError, match="cannot be read: not a regular file \\(a FIFO\\)"):
        init_run(cfg)


def test_run_layout_names_every_notebooks_output(tmp_path):
    from isp_support.runs import RunLayout

    layout = RunLayout(tmp_path)
    assert layout == RunLayout(str(tmp_path))
    assert layout.record == tmp_path / RUN_RECORD
    assert layout.metrics("03_embed_match") == tmp_path / "metrics" / "03_embed_match.json"
    assert layout.preprocessed == tmp_path / "preprocessed"
    assert layout.stitched == tmp_path / "stitched"
    assert layout.features == tmp_path / "match" / "features"
    assert layout.patch_graph("ot") == tmp_path / "match" / "ot" / "patch_graph.npz"
    assert layout.training("stage1_ot") == tmp_path / "train" / "stage1_ot"
    assert layout.evaluation == tmp_path / "eval"


@pytest.mark.parametrize("stage, pairing, change, extra_seed, expected", [
    (1, "ot", {}, None, "stage1_ot"),
    (1, "paired", {"train.paired_loss": "l1"}, None, "stage1_paired_l1"),
    (1, "ot", {"train.moment": "pair"}, None, "stage1_ot_pairmoment"),
    (1, "ot", {"train.head": "lut"}, 2, "stage1_ot_lut_seed2"),
    (2, "ot", {"stage2.discriminator": "experts"}, None, "stage2_ot_experts"),
    (1, "ot", {"stage2.discriminator": "experts"}, None, "stage1_ot"),  # stage 1 has no discriminator
])
def test_run_name_sets_runs_with_other_settings_apart(cfg, stage, pairing, change, extra_seed, expected):
    from isp_support.runs import run_name

    assert run_name(stage, pairing, cfg.replace(**change), extra_seed) == expected


def test_every_notebook_records_the_backend_flags_it_set(tmp_path):
    from isp_support.config import load_config
    from isp_support.runs import init_run

    cfg = load_config("tiny", run_dir=tmp_path / "run", device="cpu", environ={})
    init_run(cfg, notebook="01_preprocess")
    entry = json.loads((tmp_path / "run" / "run.json").read_text())["notebooks"]["01_preprocess"]
    assert entry["backends"] == {"cuda_matmul_allow_tf32": False, "cudnn_allow_tf32": False,
                                 "float32_matmul_precision": "highest", "cudnn_benchmark": False,
                                 "cudnn_deterministic": True}


def test_a_series_record_that_is_a_fifo_is_not_read(tmp_path):
    """Reading a FIFO blocks until a writer comes: run-series would hang before its first notebook."""
    from isp_support.series import _recorded_seconds

    path = tmp_path / "series.json"
    os.mkfifo(path)
    assert _recorded_seconds(path, "demo") == {}
    path.unlink()
    path.write_text('{"profile": "demo", "seconds": {"01_preprocess": 2.5}}')
    assert _recorded_seconds(path, "demo") == {"01_preprocess": 2.5} and _recorded_seconds(path, "tiny") == {}


def test_a_run_record_of_another_profile_is_refused_and_left_alone(cfg):
    run_dir, _ = init_run(cfg, notebook="01_preprocess")
    before = (run_dir / RUN_RECORD).read_bytes()
    demo = load_config("demo", run_dir=cfg.run_dir, device="cpu", environ={})
    with pytest.raises(RunRecordError, match="records a run of the 'tiny' profile, not 'demo'"):
        init_run(demo, notebook="02_stitch")
    assert (run_dir / RUN_RECORD).read_bytes() == before


def test_a_failing_notebook_under_run_series_is_its_own_error_in_one_line(tmp_path, capsys):
    import nbformat

    from isp_support.cli import main

    source = tmp_path / "series"
    source.mkdir()
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("raise ValueError('the data/x.npy patch is bad')")],
                                  metadata={"kernelspec": {"name": "python3", "language": "python",
                                                           "display_name": "Python 3"}})
    nbformat.write(nb, source / "01_fails.ipynb")
    run = tmp_path / "run"
    assert main(["run-series", "--profile", "tiny", "--run-dir", str(run), "--notebooks", str(source)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert re.search(r"01_fails stopped in cell \d+: ValueError: the data/x.npy patch is bad", err)
    assert str(run / "notebooks" / "01_fails.ipynb") in err
