"""Notebook runs through papermill on the tiny profile (marker: ``notebooks``)."""

import json

import nbformat
import pytest

from isp_support.config import load_config
from isp_support.series import NotebookFailed, run_series, series_notebooks

from .conftest import REPO

pytestmark = pytest.mark.notebooks


def _toy_notebook(path):
    nb = nbformat.v4.new_notebook()
    params = nbformat.v4.new_code_cell('PROFILE = None  # tiny | demo | full\nRUN_DIR = None  # where results go')
    params.metadata["tags"] = ["parameters"]
    body = nbformat.v4.new_code_cell(
        "from isp_support.config import load_config\nfrom isp_support.runs import init_run, write_metrics\n"
        "cfg = load_config(PROFILE, run_dir=RUN_DIR)\nrun_dir, device = init_run(cfg, notebook='00_toy')\n"
        "write_metrics(run_dir, '00_toy', {'profile': cfg.profile, 'device': device})")
    nb.cells = [params, body]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.metadata["language_info"] = {"name": "python"}
    nbformat.write(nb, path)


def test_series_runner_injects_parameters(tmp_path):
    (tmp_path / "nbs").mkdir()
    _toy_notebook(tmp_path / "nbs" / "00_toy.ipynb")
    _toy_notebook(tmp_path / "nbs" / "scratch.ipynb")  # not part of the series: ignored
    cfg = load_config("tiny", run_dir=tmp_path / "run", device="cpu", environ={})
    executed = run_series(cfg, tmp_path / "nbs", log=lambda *_: None)
    assert [p.name for p in executed] == ["00_toy.ipynb"]
    metrics = json.loads((tmp_path / "run" / "metrics" / "00_toy.json").read_text())
    assert metrics == {"profile": "tiny", "device": "cpu"}
    assert json.loads((tmp_path / "run" / "run.json").read_text())["config"]["profile"] == "tiny"
    timing = json.loads((tmp_path / "run" / "series.json").read_text())
    assert list(timing["seconds"]) == ["00_toy"] and timing["total_seconds"] == timing["seconds"]["00_toy"] > 0


def test_series_json_keeps_the_times_of_notebooks_run_before(tmp_path):
    (tmp_path / "nbs").mkdir()
    _toy_notebook(tmp_path / "nbs" / "00_toy.ipynb")
    _toy_notebook(tmp_path / "nbs" / "01_toy.ipynb")
    cfg = load_config("tiny", run_dir=tmp_path / "run", device="cpu", environ={})
    run_series(cfg, tmp_path / "nbs", only=["00"], log=lambda *_: None)
    first = json.loads((tmp_path / "run" / "series.json").read_text())["seconds"]["00_toy"]
    run_series(cfg, tmp_path / "nbs", only=["01"], log=lambda *_: None)
    timing = json.loads((tmp_path / "run" / "series.json").read_text())
    assert list(timing["seconds"]) == ["00_toy", "01_toy"] and timing["seconds"]["00_toy"] == first
    assert timing["total_seconds"] == pytest.approx(sum(timing["seconds"].values()))
    other = load_config("demo", run_dir=tmp_path / "run", device="cpu", environ={})
    with pytest.raises(NotebookFailed, match="records a run of the 'tiny' profile, not 'demo'"):
        run_series(other, tmp_path / "nbs", only=["01"], log=lambda *_: None)  # one run folder, one profile
    assert json.loads((tmp_path / "run" / "series.json").read_text()) == timing


@pytest.mark.parametrize("notebook", [p.name for p in series_notebooks(REPO / "notebooks")])
def test_notebook_runs_on_tiny(tiny_series, notebook):
    run_dir, executed = tiny_series
    assert notebook in [p.name for p in executed]
    assert (run_dir / "metrics" / f"{notebook[:-6]}.json").is_file()


@pytest.mark.parametrize("path", series_notebooks(REPO / "notebooks"), ids=lambda p: p.name)
def test_notebook_is_clean_and_parameterised(path):
    """Committed without outputs; first code cell tagged ``parameters`` holding literal assignments only."""
    import ast

    nb = nbformat.read(path, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(not c.outputs and c.execution_count is None for c in code), f"{path.name}: strip the outputs"
    assert "parameters" in code[0].metadata.get("tags", []), f"{path.name}: first code cell must be tagged"
    for node in ast.parse(code[0].source).body:
        assert isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant), ast.unparse(node)
    names = {t.id for node in ast.parse(code[0].source).body for t in node.targets}
    assert {"PROFILE", "DATA_DIR", "RUN_DIR", "SEED", "DEVICE"} <= names


def _metrics(tiny_series, name):
    run_dir, _ = tiny_series
    return json.loads((run_dir / "metrics" / f"{name}.json").read_text())


def test_preprocess_notebook_covers_every_patch(tiny_series, series_data_dir):
    from isp_support.data import open_dataset

    recorded = {name: s["patches"] for name, s in _metrics(tiny_series, "01_preprocess")["splits"].items()}
    assert recorded == {name: len(s.raw_patches()) for name, s in open_dataset(series_data_dir).splits.items()}


def test_stitch_notebook_recovers_every_true_grid(tiny_series):
    metrics = _metrics(tiny_series, "02_stitch")
    setting = metrics["setting"]
    assert metrics["accuracy"][f"{setting['score']}, b={setting['border']}"] == 1.0


def test_match_notebook_writes_converged_graphs_keyed_by_patch_ids(tiny_series, series_data_dir):
    from isp_support.data import open_dataset
    from isp_support.pairing.graph import PairGraph

    metrics = _metrics(tiny_series, "03_embed_match")
    assert set(metrics["methods"]) == {"ot", "ot_paper", "unbalanced", "knn", "random"}
    assert all(m["converged"] for m in metrics["methods"].values())
    assert "vgg16_offline" in metrics["backbones"]["semantic"]  # tiny runs offline and says so
    graph = PairGraph.load(metrics["graph"])
    train = open_dataset(series_data_dir)["train"]
    assert set(graph.source_ids) == {p.id for p in train.raw_patches()}
    assert set(graph.target_ids) <= {p.id for p in train.jpeg_patches()}
