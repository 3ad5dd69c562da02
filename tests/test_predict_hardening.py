"""``isp-support predict`` on bad input: named errors, an output record that never trusts what it cannot
verify, and pre-processing settings that come from the checkpoint or an explicit option, never a stray run.json."""

from __future__ import annotations

import dataclasses
import io
import json
import zipfile

import numpy as np
import pytest
import torch
from PIL import Image

from isp_support.evaluate import inference
from isp_support.train import TrainingError
from isp_support.train import loop
from isp_support.train.checkpoint import EPOCHS, load_model, read_checkpoint, weights_bytes
from isp_support.artifacts import sha256_file
from isp_support.cli import main
from isp_support.config import load_config
from isp_support.config_rules import ConfigError
from isp_support.io import DataError
from isp_support.pipeline.preprocess import pipeline_settings
from tests.test_inference import FAST, _net, save_checkpoint, write_dng
from tests.test_training import cfg_for, quiet, run  # noqa: F401  (``run`` is a fixture)


@pytest.fixture()
def checkpoint(tmp_path):
    return save_checkpoint(tmp_path / "run" / "train" / "net" / "best.pt")


def raw_folder(folder, names=("s_1", "s_2", "s_3"), seed=0, shape=(8, 8, 4)):
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        np.save(folder / f"{name}.npy", rng.integers(0, 1024, shape).astype(np.uint16))
    return folder


def predict(*args) -> int:
    return main(["predict", *map(str, args), "--device", "cpu"])


def one_line_error(capsys, *names) -> str:
    """The CLI's stderr: one ``error: ...`` line naming every one of ``names``, no traceback."""
    err = capsys.readouterr().err
    assert err.startswith("error: ") and len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    for name in names:
        assert str(name) in err, (name, err)
    return err


def record(out):
    return json.loads((out / inference.MANIFEST).read_text())


# --- 1. named errors instead of tracebacks ----------------------------------------------------------------

STATE = _net().state_dict()


@pytest.mark.parametrize("state, problem", [
    (STATE, "bare state dict"),                                            # KeyError today
    ({"model": STATE}, "model_args"),                                      # KeyError today
    (torch.zeros(3), "bare state dict"),                                   # IndexError today
    ({"model": STATE, "model_args": {"hidden": 128, "head": "1x1", "depth": 3}}, "depth"),  # TypeError today
    ({"model": STATE, "model_args": {"hidden": 64, "head": "1x1"}}, "size mismatch"),       # RuntimeError today
    ({"model": STATE, "model_args": {"hidden": 128, "head": "lut"}}, "head.lut"),           # RuntimeError today
    ({"model": STATE, "model_args": {"hidden": -1}}, "out of range"),                       # RuntimeError today
    ({"model": STATE, "model_args": ["hidden", 128]}, "model_args"),                        # TypeError today
])
def test_a_checkpoint_that_is_not_a_network_of_this_package_is_a_named_error(tmp_path, capsys, state, problem):
    path = tmp_path / "net.pt"
    torch.save(state, path)
    src = raw_folder(tmp_path / "raws")
    assert predict(path, src, tmp_path / "out", "--profile", "tiny") == 2
    one_line_error(capsys, path, problem)
    assert not (tmp_path / "out").exists()


def test_a_missing_checkpoint_is_said_not_to_exist(tmp_path, capsys):
    path = tmp_path / "nowhere" / "best.pt"
    assert predict(path, raw_folder(tmp_path / "raws"), tmp_path / "out", "--profile", "tiny") == 2
    err = one_line_error(capsys, path, "does not exist")
    assert "delete it" not in err and "unreadable" not in err


@pytest.mark.parametrize("extra, problem", [(np.zeros(3), "pickled numpy"), (dataclasses.replace, "pickled")])
def test_a_pickled_checkpoint_is_refused_without_torchs_advice(tmp_path, capsys, extra, problem):
    path = tmp_path / "net.pt"
    torch.save({"model": STATE, "model_args": {"hidden": 128, "head": "1x1"}, "extra": extra}, path)
    assert predict(path, raw_folder(tmp_path / "raws"), tmp_path / "out", "--profile", "tiny") == 2
    err = one_line_error(capsys, path, "not a weights-only checkpoint of this package", problem,
                         "pickled objects are refused")
    assert "weights_only" not in err
    with pytest.raises(TrainingError) as info:
        load_model(path)
    assert "weights_only" not in str(info.value) and info.value.__cause__ is None and info.value.__suppress_context__


@pytest.mark.parametrize("data", [b"", b"not a checkpoint at all" * 10])
def test_a_damaged_checkpoint_names_the_file_without_torchs_advice(tmp_path, capsys, data):
    path = tmp_path / "net.pt"
    path.write_bytes(data)
    assert predict(path, raw_folder(tmp_path / "raws"), tmp_path / "out", "--profile", "tiny") == 2
    assert "weights_only" not in one_line_error(capsys, path)


def test_a_checkpoint_that_would_expand_is_refused_before_loading(tmp_path, capsys):
    """A zip that declares 400 MB in a few hundred kilobytes: torch.load would allocate it all first."""
    path = tmp_path / "net.pt"
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("net/data.pkl", b"\0" * (400 << 20))
    assert path.stat().st_size < 1 << 20
    assert predict(path, raw_folder(tmp_path / "raws"), tmp_path / "out", "--profile", "tiny") == 2
    one_line_error(capsys, path, "declares 419,430,400 bytes", "refused before expanding it")
    assert not (tmp_path / "out").exists()


def test_non_finite_weights_are_refused_by_predict_and_never_saved(tmp_path, capsys):
    path = tmp_path / "net.pt"
    bad = {k: v.clone() for k, v in STATE.items()}
    bad["head.weight"][0, 0] = float("nan")
    torch.save({"model": bad, "model_args": {"hidden": 128, "head": "1x1"}}, path)
    assert predict(path, raw_folder(tmp_path / "raws"), tmp_path / "out", "--profile", "tiny") == 2
    one_line_error(capsys, path, "non-finite weights in head.weight")
    assert not (tmp_path / "out").exists()
    net = _net()
    net.load_state_dict(bad)
    with pytest.raises(TrainingError, match="non-finite"):
        weights_bytes(net, {"hidden": 128, "head": "1x1"}, 3, {})


def test_a_best_pt_without_its_runs_record_is_refused_unless_told(tmp_path, capsys, checkpoint):
    """A run killed mid-training has no result.json (written last): its weights are not silently used."""
    (checkpoint.parent / "result.json").unlink()
    src = raw_folder(tmp_path / "raws")
    assert predict(checkpoint, src, tmp_path / "out") == 2
    one_line_error(capsys, checkpoint, "no result.json beside it", "--unrecorded")
    assert not (tmp_path / "out").exists()
    assert predict(checkpoint, src, tmp_path / "out", "--unrecorded") == 0
    assert len(list((tmp_path / "out").glob("*.png"))) == 3


@pytest.mark.parametrize("batch", ["0", "-3"])
def test_a_batch_size_below_one_is_a_named_error(tmp_path, capsys, checkpoint, batch):
    assert predict(checkpoint, raw_folder(tmp_path / "raws"), tmp_path / "out", "--batch", batch) == 2
    one_line_error(capsys, "batch", batch)
    with pytest.raises(ConfigError, match="batch"):
        inference.Predictor(checkpoint, device="cpu", batch_size=int(batch))


@pytest.mark.parametrize("device", ["tpu", "cuda:x", "cpu:0", ""])
def test_an_unknown_device_is_a_named_error_listing_the_allowed_ones(tmp_path, capsys, checkpoint, device):
    assert main(["predict", str(checkpoint), str(raw_folder(tmp_path / "raws")), str(tmp_path / "out"),
                 "--device", device]) == 2
    one_line_error(capsys, repr(device), "auto, cpu, cuda, cuda:N")
    with pytest.raises(ConfigError, match="auto, cpu, cuda, cuda:N"):
        inference.Predictor(checkpoint, device=device)


FIELDS = dataclasses.asdict(FAST)


@pytest.mark.parametrize("text, problem", [
    ("{not json", "not JSON"),
    ("[1, 2]", "config"),
    ('{"seed": 1}', "config"),
    ('{"config": 3}', "config"),
    ('{"config": {"profile": "tiny"}}', "preprocess"),                                   # incomplete
    (json.dumps({"config": {"preprocess": {"gamma": 0.2}}}), "lack"),                    # incomplete
    (json.dumps({"config": {"preprocess": FIELDS | {"gamma": "steep"}}}), "gamma"),
    (json.dumps({"config": {"preprocess": FIELDS | {"sharpen": 1.0}}}), "sharpen"),
    (json.dumps({"config": {"preprocess": FIELDS | {"demosaicker": "magic"}}}), "magic"),
    (json.dumps({"config": {"preprocess": FIELDS | {"black_level": 9.0, "white_level": 1.0}}}), "white_level"),
])
def test_a_malformed_run_json_is_a_named_error(tmp_path, capsys, checkpoint, text, problem):
    path = tmp_path / "elsewhere" / "run.json"
    path.parent.mkdir()
    path.write_text(text)
    assert predict(checkpoint, raw_folder(tmp_path / "raws"), tmp_path / "out", "--preprocess-from", path) == 2
    one_line_error(capsys, path, problem)
    assert not (tmp_path / "out").exists()


def test_a_missing_run_json_is_said_not_to_exist(tmp_path, capsys, checkpoint):
    path = tmp_path / "run.json"
    assert predict(checkpoint, raw_folder(tmp_path / "raws"), tmp_path / "out", "--preprocess-from", path) == 2
    one_line_error(capsys, path, "does not exist")


def test_profile_and_run_json_together_are_refused(tmp_path, checkpoint):
    with pytest.raises(ConfigError, match="either"):
        inference.Predictor(checkpoint, device="cpu", profile="tiny", preprocess_from=tmp_path / "run.json")


# --- 2. the output record ---------------------------------------------------------------------------------

def test_the_record_names_each_output_with_its_input_checkpoint_and_settings(tmp_path, checkpoint):
    src = raw_folder(tmp_path / "raws")
    out = tmp_path / "out"
    assert predict(checkpoint, src, out) == 0
    saved = record(out)
    assert saved["complete"] is True
    assert sorted(saved["files"]) == sorted(p.name for p in out.glob("*.png")) == ["s_1.png", "s_2.png", "s_3.png"]
    settings = json.loads(json.dumps(pipeline_settings(FAST)))
    for name, entry in saved["files"].items():
        raw = src / name.replace(".png", ".npy")
        assert entry == {"input": str(raw.resolve()), "input_sha256": sha256_file(raw),
                         "png_sha256": sha256_file(out / name), "checkpoint_sha256": sha256_file(checkpoint),
                         "preprocess": settings, "camera_wb": False}


def test_a_failed_run_leaves_no_record(tmp_path, checkpoint):
    src = raw_folder(tmp_path / "raws")
    np.save(src / "s_9.npy", np.zeros((8, 8, 3), np.uint16))  # not 4 channels
    with pytest.raises(DataError, match="s_9.npy"):
        inference.export_folder(inference.Predictor(checkpoint, device="cpu"), src, tmp_path / "out", progress=False)
    assert not (tmp_path / "out" / inference.MANIFEST).exists()


def test_a_killed_run_records_what_it_wrote_and_resumes_with_the_rest(tmp_path, checkpoint, monkeypatch):
    src = raw_folder(tmp_path / "raws")
    out = tmp_path / "out"
    predictor = inference.Predictor(checkpoint, device="cpu", batch_size=1)
    rendered = []
    real = predictor.patches

    def dies_on_the_second_batch(raws):
        if rendered:
            raise KeyboardInterrupt
        rendered.append(raws)
        return real(raws)

    monkeypatch.setattr(predictor, "patches", dies_on_the_second_batch)
    with pytest.raises(KeyboardInterrupt):
        inference.export_folder(predictor, src, out, progress=False)
    saved = record(out)
    assert saved["complete"] is False and sorted(saved["files"]) == ["s_1.png"]
    assert sorted(p.name for p in out.iterdir()) == ["predict.json", "s_1.png"]  # no half-written PNG
    monkeypatch.undo()
    written = inference.export_folder(predictor, src, out, progress=False, log=quiet)
    assert [p.name for p in written] == ["s_2.png", "s_3.png"]
    assert record(out)["complete"] is True and sorted(record(out)["files"]) == ["s_1.png", "s_2.png", "s_3.png"]


def _png(out, name):
    return np.asarray(Image.open(out / name))


def _tiny_png(path):
    buf = io.BytesIO()
    Image.fromarray(np.zeros((5, 5, 3), np.uint8)).save(buf, format="PNG")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(buf.getvalue())


def test_a_png_not_in_the_record_is_never_trusted(tmp_path, checkpoint):
    src = raw_folder(tmp_path / "raws")
    out = tmp_path / "out"
    _tiny_png(out / "s_1.png")  # a leftover of the right name, no record
    assert predict(checkpoint, src, out) == 0
    assert _png(out, "s_1.png").shape == (16, 16, 3)
    reference = tmp_path / "reference"
    assert predict(checkpoint, src, reference) == 0
    assert (out / "s_1.png").read_bytes() == (reference / "s_1.png").read_bytes()


def test_a_png_that_no_longer_matches_its_record_is_rendered_again(tmp_path, checkpoint):
    src = raw_folder(tmp_path / "raws")
    out = tmp_path / "out"
    assert predict(checkpoint, src, out) == 0
    good = (out / "s_2.png").read_bytes()
    _tiny_png(out / "s_2.png")
    (out / "s_3.png").unlink()
    assert predict(checkpoint, src, out) == 0
    assert (out / "s_2.png").read_bytes() == good and (out / "s_3.png").is_file()
    assert record(out)["files"]["s_2.png"]["png_sha256"] == sha256_file(out / "s_2.png")


def test_a_changed_input_is_rendered_again(tmp_path, checkpoint):
    src = raw_folder(tmp_path / "raws")
    out = tmp_path / "out"
    assert predict(checkpoint, src, out) == 0
    before = _png(out, "s_1.png")
    raw_folder(src, names=("s_1",), seed=7)  # the same name, other pixels
    assert predict(checkpoint, src, out) == 0
    assert not np.array_equal(_png(out, "s_1.png"), before)
    assert record(out)["files"]["s_1.png"]["input_sha256"] == sha256_file(src / "s_1.npy")


def test_inputs_with_the_same_stem_are_refused(tmp_path, capsys, checkpoint):
    src = raw_folder(tmp_path / "raws", names=("x", "y"))
    yy, xx = np.mgrid[0:32, 0:48]
    write_dng(src / "x.dng", 64 + (xx * 9 + yy * 5) % 900)
    assert predict(checkpoint, src, tmp_path / "out") == 2
    one_line_error(capsys, src, "x.dng", "x.npy", "x.png")
    assert not (tmp_path / "out").exists()


def test_overwrite_on_a_subset_removes_the_other_checkpoints_outputs(tmp_path, checkpoint, capsys):
    src = raw_folder(tmp_path / "raws")
    out = tmp_path / "out"
    assert predict(checkpoint, src, out) == 0
    other = save_checkpoint(tmp_path / "other.pt", seed=5)
    capsys.readouterr()
    assert predict(other, src / "s_1.npy", out) == 2  # another checkpoint: refused without overwrite
    one_line_error(capsys, out, "another checkpoint or settings")
    assert predict(other, src / "s_1.npy", out, "--overwrite") == 0
    assert sorted(p.name for p in out.iterdir()) == ["predict.json", "s_1.png"]
    assert list(record(out)["files"]) == ["s_1.png"]
    assert record(out)["files"]["s_1.png"]["checkpoint_sha256"] == sha256_file(other)


def test_overwrite_keeps_outputs_of_the_same_checkpoint(tmp_path, checkpoint):
    src = raw_folder(tmp_path / "raws")
    out = tmp_path / "out"
    assert predict(checkpoint, src, out) == 0
    assert predict(checkpoint, src / "s_1.npy", out, "--overwrite") == 0
    assert sorted(record(out)["files"]) == ["s_1.png", "s_2.png", "s_3.png"]


@pytest.mark.parametrize("text", ['{"checkpoint_sha256": "0", "preprocess": {}, "camera_wb": false}', "{broken",
                                  '{"files": {"s_1.png": {"input": "s_1.npy"}}}'])
def test_a_record_of_another_format_is_refused_unless_overwrite(tmp_path, capsys, checkpoint, text):
    src = raw_folder(tmp_path / "raws")
    out = tmp_path / "out"
    out.mkdir()
    (out / inference.MANIFEST).write_text(text)
    assert predict(checkpoint, src, out) == 2
    one_line_error(capsys, out / inference.MANIFEST, "overwrite")
    assert predict(checkpoint, src, out, "--overwrite") == 0
    assert sorted(record(out)["files"]) == ["s_1.png", "s_2.png", "s_3.png"]


# --- 3. where the pre-processing settings come from --------------------------------------------------------

def _stray_run_json(checkpoint):
    """A run.json two folders above the checkpoint, with a gamma nobody asked for."""
    cfg = load_config("tiny", overrides={"preprocess.gamma": 0.2, "preprocess.demosaicker": "bilinear",
                                         "preprocess.denoiser": "none"})
    path = checkpoint.parents[2] / "run.json"
    path.write_text(json.dumps({"config": cfg.to_dict()}))
    return path


def test_the_settings_come_from_the_checkpoint_not_a_parent_run_json(tmp_path, capsys, checkpoint):
    _stray_run_json(checkpoint)
    predictor = inference.Predictor(checkpoint, device="cpu")
    assert predictor.preprocess == FAST and str(checkpoint) in predictor.config_source
    assert predict(checkpoint, raw_folder(tmp_path / "raws"), tmp_path / "out") == 0
    assert f"pre-processing from the checkpoint {checkpoint}" in capsys.readouterr().out


def test_an_old_checkpoint_needs_the_settings_given_explicitly(tmp_path, capsys):
    old = save_checkpoint(tmp_path / "run" / "train" / "net" / "best.pt", preprocess=None)
    stray = _stray_run_json(old)
    with pytest.raises(DataError, match="--profile.*--preprocess-from"):
        inference.Predictor(old, device="cpu")
    assert predict(old, raw_folder(tmp_path / "raws"), tmp_path / "out") == 2
    one_line_error(capsys, old, "records no pre-processing settings")
    from_run = inference.Predictor(old, device="cpu", preprocess_from=stray)
    assert from_run.preprocess.gamma == 0.2 and from_run.config_source == f"run record {stray}"
    assert predict(old, raw_folder(tmp_path / "raws"), tmp_path / "out", "--preprocess-from", stray) == 0
    assert f"pre-processing from run record {stray}" in capsys.readouterr().out
    from_profile = inference.Predictor(old, device="cpu", profile="tiny")
    assert from_profile.preprocess == load_config("tiny").preprocess
    assert from_profile.config_source == "profile 'tiny' defaults"


def test_an_explicit_option_wins_over_the_checkpoints_settings(tmp_path, checkpoint):
    stray = _stray_run_json(checkpoint)
    assert inference.Predictor(checkpoint, device="cpu", preprocess_from=stray).preprocess.gamma == 0.2


@pytest.mark.parametrize("entry, problem", [
    ("bilinear", "not a mapping"),
    ({"gamma": 2.2}, "lack"),
    (FIELDS | {"gamma": "steep"}, "gamma"),
    (FIELDS | {"sharpen": 1.0}, "sharpen"),
    (FIELDS | {"denoiser": "magic"}, "magic"),
])
def test_malformed_settings_in_the_checkpoint_are_a_named_error(tmp_path, capsys, entry, problem):
    path = save_checkpoint(tmp_path / "best.pt")
    torch.save(torch.load(path, weights_only=True) | {"preprocess": entry}, path)
    assert predict(path, raw_folder(tmp_path / "raws"), tmp_path / "out") == 2
    one_line_error(capsys, path, problem)


def test_training_records_the_preprocessing_in_the_checkpoint(tiny_dataset, run):  # noqa: F811
    cfg = cfg_for(tiny_dataset, run, **{"train.epochs": 1, "preprocess.demosaicker": "bilinear",
                                        "preprocess.denoiser": "none", "preprocess.gamma": 2.0})
    result = loop.train(cfg, run, name="records_preprocess", progress=False, log=quiet)
    for path in (result.folder / loop.BEST, *sorted((result.folder / EPOCHS).glob("*.pt"))):
        assert torch.load(path, weights_only=True)["preprocess"] == dataclasses.asdict(cfg.preprocess), path
    assert inference.Predictor(result.folder / loop.BEST, device="cpu").preprocess == cfg.preprocess


def test_model_args_asking_for_a_huge_network_are_refused_before_allocating(tmp_path):
    torch.save({"model": {}, "model_args": {"hidden": 128, "head": "lut", "lut_size": 10 ** 6}}, tmp_path / "big.pt")
    with pytest.raises(TrainingError, match="out of range"):
        read_checkpoint(tmp_path / "big.pt")


def test_a_fifo_input_and_a_file_as_output_folder_are_named_errors(tmp_path):
    import os

    from isp_support.io import UnreadableFileError
    from isp_support.evaluate.inference import PredictError, _inputs, export_folder

    (tmp_path / "in").mkdir()
    os.mkfifo(tmp_path / "in" / "x.npy")
    with pytest.raises(UnreadableFileError, match="not a regular file"):
        _inputs(tmp_path / "in")
    (tmp_path / "out").write_text("a file")
    with pytest.raises(PredictError, match="existing file"):
        export_folder(None, tmp_path / "in", tmp_path / "out")


def test_a_fifo_checkpoint_is_named_not_missing(tmp_path):
    import os

    os.mkfifo(tmp_path / "best.pt")
    with pytest.raises(TrainingError, match="checkpoint not a regular file"):
        read_checkpoint(tmp_path / "best.pt")


def test_a_newline_in_a_path_cannot_forge_a_line_of_predicts_output(tmp_path, capsys, checkpoint):
    src = raw_folder(tmp_path / "raws")
    out = tmp_path / "out\nerror: forged"
    assert predict(checkpoint, src, out) == 0
    lines = capsys.readouterr().out.splitlines()
    assert not [line for line in lines if line.startswith("error:")] and any("\\nerror: forged" in ln for ln in lines)
