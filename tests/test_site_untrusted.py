"""The site treats a run folder as untrusted: planted directives, links, HTML and script never reach the site."""

import json
import secrets
from html.parser import HTMLParser

import nbformat
import pytest

from isp_support.runs import RunLayout
from isp_support.site import SiteError, build_site, inert_markdown, inert_notebook, plain


class Elements(HTMLParser):
    """Event-handler attributes and the text of every script element of a page."""

    def __init__(self):
        super().__init__()
        self.handlers, self.scripts, self._in_script = [], [], False

    def handle_starttag(self, tag, attrs):
        self.handlers += [(tag, k) for k, _ in attrs if k.lower().startswith("on")]
        self._in_script = tag == "script"

    def handle_data(self, data):
        if self._in_script:
            self.scripts.append(data)

    def handle_endtag(self, tag):
        self._in_script = False


@pytest.fixture()
def secret_file(tmp_path):
    """A file the builder can read and a hostile run folder wants published."""
    path = tmp_path / "private" / "hostname"
    path.parent.mkdir()
    token = secrets.token_hex(16)
    path.write_text(token)
    return path, token


def hostile_run(tmp_path, secret):
    source = tmp_path / "series"
    source.mkdir()
    nb = nbformat.v4.new_notebook()
    rel = "../../../../../../../../.." + str(secret)
    nb.cells = [
        nbformat.v4.new_markdown_cell(f"# Toy\n\n```{{include}} {rel}\n```\n\n```{{literalinclude}} {secret}\n```\n"
                                      f"\n{{download}}`{secret}` and [leak]({rel}) ![img]({secret})\n\n"
                                      f"[ref]: {secret}\n\n<script>alert('cell')</script> and `<scene>` stays code"),
        nbformat.v4.new_raw_cell(f".. include:: {secret}"),
        nbformat.v4.new_code_cell("1", outputs=[nbformat.v4.new_output("display_data", data={
            "text/html": "<table><tr><td onclick='x()'>1</td></tr></table><script>alert('html')</script>"
                         f"<img src='{secret}' onerror='alert(2)'>",
            "text/markdown": f"```{{include}} {secret}\n```",
            "application/javascript": "alert('js')", "image/svg+xml": "<svg onload='alert(3)'/>",
            "text/plain": "1"})]),
    ]
    nbformat.write(nb, source / "01_toy.ipynb")
    run = tmp_path / "run"
    layout = RunLayout(run)
    layout.notebooks.mkdir(parents=True)
    nbformat.write(nb, layout.notebooks / "01_toy.ipynb")
    layout.record.write_text(json.dumps({"config": {"profile": "<script>alert('profile')</script>`x`"},
                                         "seed": "{include}`/etc/hostname`", "versions": {"<b>torch</b>": "|1|"},
                                         "notebooks": {"01": {"platform": f"```{{include}} {secret}"}}}))
    layout.metrics("06_evaluate").parent.mkdir(parents=True, exist_ok=True)
    layout.metrics("06_evaluate").write_text(json.dumps({
        "table": {"<script>alert('row')</script>": {"psnr": 1.0}}, "split": "test", "scenes": 1, "patches": 1,
        "seeds": [0], "verdict": [f"```{{include}} {secret}\n```", "<script>alert('verdict')</script>"]}))
    return run, source


def test_a_hostile_run_folder_publishes_no_file_and_no_script(tmp_path, secret_file):
    secret, token = secret_file
    run, source = hostile_run(tmp_path, secret)
    site = build_site(run, source, out_dir=tmp_path / "site", log=lambda *_: None)
    published = {p: p.read_bytes() for p in site.rglob("*") if p.is_file()}
    assert not [p for p, data in published.items() if token.encode() in data]
    pages = {p.name: data.decode() for p, data in published.items() if p.suffix == ".html"}
    assert {"index.html", "run.html", "01_toy.html"} <= pages.keys()
    for name, page in pages.items():
        found = Elements()
        found.feed(page)
        assert not found.handlers and not [t for t in found.scripts if "alert" in t], name
    assert "&lt;script&gt;alert(" in pages["index.html"]   # shown as text
    assert "&lt;scene&gt;" in pages["01_toy.html"]          # the code span is still shown as code
    assert "profile" in pages["run.html"] and "torch" in pages["run.html"]


def test_inert_markdown_keeps_code_and_safe_links():
    text = "`<b>` and\n```python\nx = '<i>'\n```\n[site](https://example.org) [anchor](#top) $x_{i}$"
    assert inert_markdown(text) == text
    assert inert_markdown("<b>x</b> [a](/etc/passwd)") == "&lt;b>x&lt;/b> a"
    assert plain("a|b `c` <d>") == "a\\|b \\`c\\` \\<d\\>"


def test_outputs_other_than_text_and_pictures_are_dropped():
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("1", outputs=[nbformat.v4.new_output(
        "display_data", data={"application/vnd.jupyter.widget-view+json": {"model_id": "x"}, "image/png": "iVBO",
                              "application/javascript": "alert(1)"})])])
    assert set(inert_notebook(nb).cells[0].outputs[0].data) == {"image/png"}


def test_a_notebook_a_killed_run_left_behind_is_refused(tmp_path):
    source = tmp_path / "series"
    source.mkdir()
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("1"), nbformat.v4.new_code_cell("2")])
    nb.cells[0].metadata["papermill"] = {"status": "completed"}
    nb.cells[1].metadata["papermill"] = {"status": "running"}
    nbformat.write(nb, source / "01_toy.ipynb")
    RunLayout(tmp_path / "run").notebooks.mkdir(parents=True)
    nbformat.write(nb, RunLayout(tmp_path / "run").notebooks / "01_toy.ipynb")
    with pytest.raises(SiteError, match="did not finish: papermill left cell 1"):
        build_site(tmp_path / "run", source, out_dir=tmp_path / "site", log=lambda *_: None)
    assert not (tmp_path / "site").exists()


def test_a_notebooks_folder_without_series_notebooks_is_refused(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(SiteError, match="no series notebooks"):
        build_site(tmp_path / "run", tmp_path / "empty", out_dir=tmp_path / "site", log=lambda *_: None)
    assert not (tmp_path / "site").exists()
