"""The prose rule (isp_support.prose): a markdown cell's figures are settings of the run or the paper, never results.

The unit tests plant figures in notebooks; the notebook tests read every executed notebook of the tiny series and
of the challenge rehearsal, and plant a stale result into a copy of one to see the check fail."""

import json

import nbformat
import pytest

from isp_support import paper, prose


def _notebook(*markdown: str) -> nbformat.NotebookNode:
    return nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell(m) for m in markdown])


@pytest.mark.parametrize("text, printed", [
    ("a top share of 0.42 and 16.61 dB", ["0.42", "16.61"]),
    ("covers 54% of the gap, 3 dB better, 2.5 % off", ["54%", "3", "2.5 %"]),
    ("§4.1, Section 4.2, table 2.1, Eq. 3.5", []),
    ("ViT-S/14, relu1_2, v1.0, 7K parameters, 48 px patches, 10 epochs, 1e-6", []),
    ("a change of -0.30 dB", ["-0.30"]),
])
def test_figures_are_decimals_and_numbers_with_percent_or_db(text, printed):
    assert [f[0] for f in prose.figures(text)] == printed


def test_a_figure_matches_a_value_at_its_printed_precision():
    assert prose.matches(0.42, 2, False, [0.4213])
    assert not prose.matches(0.42, 2, False, [0.4261])
    assert prose.matches(54.0, 0, True, [0.5412])  # a percentage of a fraction
    assert not prose.matches(54.0, 0, False, [0.5412])
    assert prose.matches(0.30, 2, False, [0.3])


def test_a_setting_passes_and_a_hand_written_result_is_named():
    nb = _notebook("The paper's eps is 0.05 and its alpha 0.5.", "Stage 2 keeps a colour distance of 0.0898.")
    stale = prose.stale_figures(nb, {0.05, 0.5, 0.2}, "05_train_stage2.ipynb")
    assert [(s.cell, s.figure) for s in stale] == [(1, "0.0898")]
    assert "05_train_stage2.ipynb, markdown cell 1: '0.0898'" in str(stale[0])


def test_code_cells_and_their_generated_prose_are_not_checked():
    nb = _notebook("Nothing here.")
    nb.cells.append(nbformat.v4.new_code_cell("x = 0.0898", outputs=[nbformat.v4.new_output(
        "display_data", data={"text/markdown": "a result of 0.0898"})]))
    assert prose.stale_figures(nb, set()) == []


def test_check_run_reads_the_run_config_and_the_paper(tmp_path):
    (tmp_path / "run.json").write_text(json.dumps({"config": {"match": {"epsilon": 0.07}}}))
    lr = paper.SETTINGS["train.lr"]
    path = tmp_path / "03.ipynb"
    nbformat.write(_notebook(f"eps 0.07 here, the paper's lr {lr:.4f}", "a share of 0.42"), path)
    assert [s.figure for s in prose.check_run(tmp_path, [path])] == ["0.42"]


def test_paper_values_hold_every_number_of_its_settings_and_results():
    values = paper.values()
    assert all(abs(float(v)) in values for v in paper.RESULTS.values())
    assert 0.5 in values  # alpha


@pytest.mark.notebooks
@pytest.mark.parametrize("series", ["tiny_series", "challenge_series"])
def test_no_markdown_cell_of_the_series_states_a_result(series, request):
    run_dir, executed = request.getfixturevalue(series)[:2]
    assert executed
    assert [str(s) for s in prose.check_run(run_dir, executed)] == []


@pytest.mark.notebooks
def test_a_stale_result_planted_in_an_executed_notebook_fails_the_check(tiny_series, tmp_path):
    run_dir, executed = tiny_series
    path = next(p for p in executed if p.name.startswith("05"))
    nb = nbformat.read(path, as_version=4)
    nb.cells.insert(1, nbformat.v4.new_markdown_cell("The kept checkpoint has a colour distance of 0.0898."))
    planted = tmp_path / path.name
    nbformat.write(nb, planted)
    stale = prose.check_run(run_dir, [planted])
    assert [(s.notebook, s.cell, s.figure) for s in stale] == [(path.name, 1, "0.0898")]
