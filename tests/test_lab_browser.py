"""Notebook 03's eps / alpha widget in a real browser (marker: ``notebooks``).

JupyterLab starts as ``make lab`` starts it (``ISP_PROFILE``, ``ISP_DATA_DIR``, ``ISP_RUN_DIR``, the project's
kernel, ``--notebook-dir=notebooks``), headless on a free port of 127.0.0.1, on the tiny profile and a copy of
the session's tiny run (01 and 02's outputs are there). Headless Chromium opens 03_embed_match, runs the cells
up to the widget cell (found by its ``knob_widget`` call, not by position) through JupyterLab's Run menu,
waits for the ipywidgets sliders and the figure, moves each slider with the keyboard, and checks that the
slider's readout and the figure change. The notebooks are served from a copy, so the lab writes nothing into
the repository; the server and its kernel are stopped even on failure.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import nbformat
import pytest

from .conftest import REPO
from .test_site import browser

pytestmark = pytest.mark.notebooks

NOTEBOOK = "03_embed_match.ipynb"
WIDGET_CALL = "knob_widget("
TOKEN = "lab-browser-test"
JUPYTER = Path(sys.executable).parent / "jupyter"
QUIET_SETTINGS = {"@jupyterlab/apputils-extension/notification.jupyterlab-settings":
                  {"fetchNews": "false", "checkForUpdates": False}}
"""User settings for the test's lab: no news or update check (offline, and no toast over the notebook)."""


class Lab:
    """A running JupyterLab: its base URL, its runtime folder (kernels' connection files) and REST calls."""

    def __init__(self, port: int, runtime: Path, process: subprocess.Popen):
        self.url, self.runtime, self.process = f"http://127.0.0.1:{port}", runtime, process

    def api(self, path: str, method: str = "GET"):
        request = urllib.request.Request(f"{self.url}/api/{path}", method=method,
                                         headers={"Authorization": f"token {TOKEN}"})
        with urllib.request.urlopen(request, timeout=10) as r:
            body = r.read()
        return json.loads(body) if body else None

    def kernel_state(self) -> str | None:
        """The execution state of the notebook's kernel (``None``: no session yet)."""
        sessions = [s for s in self.api("sessions") if s["path"].endswith(NOTEBOOK)]
        return sessions[0]["kernel"]["execution_state"] if sessions and sessions[0].get("kernel") else None


def wait_for(what: str, probe, timeout: float, every: float = 0.5):
    """Poll ``probe`` until it returns something truthy; that value, or a failure naming ``what``."""
    deadline, last = time.monotonic() + timeout, None
    while time.monotonic() < deadline:
        try:
            value = probe()
        except Exception as exc:  # noqa: BLE001 - the page or the server may be between states
            value, last = None, exc
        if value:
            return value
        time.sleep(every)
    pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}" + (f" (last error: {last!r})" if last else ""))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _kernel_pids(runtime: Path) -> list[int]:
    """Processes whose command line names a connection file under ``runtime``: this lab's kernels."""
    pids = []
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and str(runtime) in (proc / "cmdline").read_bytes().decode(errors="replace"):
                pids.append(int(proc.name))
        except OSError:
            continue
    return pids


def _stop(lab: Lab) -> list[int]:
    """Shut the kernels down, stop the server's process group; kernels left behind are killed and returned."""
    try:
        for session in lab.api("sessions"):
            lab.api(f"sessions/{session['id']}", method="DELETE")
    except OSError:
        pass
    try:
        os.killpg(lab.process.pid, signal.SIGTERM)
        lab.process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(lab.process.pid, signal.SIGKILL)
        lab.process.wait(timeout=30)
    except ProcessLookupError:
        pass
    strays = _kernel_pids(lab.runtime)
    for pid in strays:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return strays


@pytest.fixture()
def lab(tiny_series, series_data_dir, tmp_path):
    """JupyterLab as ``make lab`` starts it, on the tiny profile and a copy of the session's tiny run."""
    run_dir, _ = tiny_series
    home = tmp_path / "lab"
    shutil.copytree(REPO / "notebooks", home / "notebooks", ignore=shutil.ignore_patterns(".ipynb_checkpoints"))
    shutil.copytree(run_dir, home / "run", symlinks=True)
    settings = home / "settings"
    for name, values in QUIET_SETTINGS.items():
        (settings / name).parent.mkdir(parents=True, exist_ok=True)
        (settings / name).write_text(json.dumps(values))
    env = {k: v for k, v in os.environ.items() if not k.startswith("ISP_")}
    env |= {"ISP_PROFILE": "tiny", "ISP_DATA_DIR": str(series_data_dir), "ISP_RUN_DIR": str(home / "run"),
            "JUPYTER_RUNTIME_DIR": str(home / "runtime"), "JUPYTER_CONFIG_DIR": str(home / "config"),
            "JUPYTERLAB_SETTINGS_DIR": str(settings), "JUPYTERLAB_WORKSPACES_DIR": str(home / "workspaces")}
    port = _free_port()
    with open(tmp_path / "lab.log", "wb") as log:
        process = subprocess.Popen(
            [str(JUPYTER), "lab", "--notebook-dir=notebooks", "--no-browser", f"--port={port}", "--ip=127.0.0.1",
             f"--IdentityProvider.token={TOKEN}", "--ServerApp.allow_root=True"],
            cwd=home, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    server = Lab(port, home / "runtime", process)
    try:
        wait_for("jupyter lab to answer", lambda: server.api("status"), 60)
        yield server
    finally:
        strays = _stop(server)
        assert not strays, f"kernels outlived the lab server (killed): {strays}"


def widget_cell_index(notebook: Path) -> tuple[int, int]:
    """The position, among all cells, of the code cell that calls ``knob_widget``, and the number of cells."""
    cells = nbformat.read(notebook, as_version=4).cells
    found = [i for i, c in enumerate(cells) if c.cell_type == "code" and WIDGET_CALL in c.source]
    assert len(found) == 1, f"{NOTEBOOK} should hold one cell calling {WIDGET_CALL!r}, found cells {found}"
    return found[0], len(cells)


def run_menu(driver, command: str) -> None:
    """Open JupyterLab's Run menu and click the item bound to ``command``."""
    from selenium.webdriver.common.by import By

    bar = wait_for("the Run menu", lambda: [m for m in driver.find_elements(By.CSS_SELECTOR, ".lm-MenuBar-item")
                                            if m.text.strip() == "Run"], 30)
    bar[0].click()
    item = wait_for(f"the menu item {command}", lambda: driver.find_element(
        By.CSS_SELECTOR, f".lm-Menu-item[data-command='{command}']"), 10)
    item.click()


def error_outputs(driver) -> list[str]:
    from selenium.webdriver.common.by import By

    return [e.text for e in driver.find_elements(
        By.CSS_SELECTOR, ".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.error']")]


def figure_src(cell) -> str | None:
    """The data URL of the widget's figure (its Output widget's image), ``None`` while it is redrawn."""
    from selenium.webdriver.common.by import By

    images = cell.find_elements(By.CSS_SELECTOR, ".widget-output img, .jupyter-widgets-output-area img")
    return images[0].get_attribute("src") if len(images) == 1 else None


def move_slider(driver, cell, label: str) -> tuple[str, str]:
    """Focus the slider ``label``'s handle and press an arrow key (right, or left at the maximum).

    Returns the slider's readout before and after the move (once the page shows the new value)."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    slider = [s for s in cell.find_elements(By.CSS_SELECTOR, ".widget-slider")
              if s.find_element(By.CSS_SELECTOR, ".widget-label").text.strip() == label]
    assert len(slider) == 1, f"one slider labelled {label!r} expected in the widget cell"
    handle = slider[0].find_element(By.CSS_SELECTOR, ".noUi-handle")
    readout = slider[0].find_element(By.CSS_SELECTOR, ".widget-readout")
    before = readout.text.strip()
    at_max = float(handle.get_attribute("aria-valuenow")) >= float(handle.get_attribute("aria-valuemax"))
    driver.execute_script("arguments[0].scrollIntoView({block: 'center'}); arguments[0].focus();", handle)
    handle.send_keys(Keys.ARROW_LEFT if at_max else Keys.ARROW_RIGHT)
    after = wait_for(f"the {label} readout to change", lambda: readout.text.strip() != before and readout.text, 10)
    return before, after.strip()


def run_up_to(driver, cell) -> None:
    """Select ``cell``, then Run > Run All Above Selected Cell and Run > Run Selected Cell and Do not Advance.

    A run asked for while the page is still connecting to the kernel is dropped (JupyterLab clears the cells):
    the first is asked again until the first code cell shows it queued or run."""
    from selenium.webdriver.common.by import By

    driver.execute_script("arguments[0].scrollIntoView({block: 'center'});", cell)
    cell.find_element(By.CSS_SELECTOR, ".jp-InputPrompt").click()
    wait_for("the widget cell to be selected", lambda: "jp-mod-active" in cell.get_attribute("class"), 10)
    first_prompt = driver.find_element(By.CSS_SELECTOR, ".jp-NotebookPanel .jp-CodeCell .jp-InputPrompt")
    for attempt in range(3):
        run_menu(driver, "notebook:run-all-above")
        try:
            wait_for("the cells above to run", lambda: first_prompt.text.strip() not in ("", "[ ]:"), 15)
            break
        except pytest.fail.Exception:
            if attempt == 2:
                raise
    run_menu(driver, "notebook:run-cell")


def test_moving_a_slider_of_notebook_03s_widget_redraws_its_figure(lab, tmp_path):
    from selenium.webdriver.common.by import By

    index, n_cells = widget_cell_index(tmp_path / "lab" / "notebooks" / NOTEBOOK)
    driver = browser()
    try:
        driver.set_window_size(1400, 1000)
        driver.get(f"{lab.url}/lab/tree/{NOTEBOOK}?token={TOKEN}")
        wait_for("the kernel to be idle", lambda: lab.kernel_state() == "idle", 90)
        wait_for("the notebook to show its kernel idle", lambda: driver.find_elements(
            By.CSS_SELECTOR, ".jp-NotebookPanel .jp-Notebook-ExecutionIndicator[data-status='idle']"), 60)
        cells = wait_for(f"the notebook's {n_cells} cells", lambda: [c := driver.find_elements(
            By.CSS_SELECTOR, ".jp-NotebookPanel .jp-Notebook .jp-Cell"), len(c) == n_cells][1] and c, 30)
        cell = cells[index]
        assert WIDGET_CALL in cell.get_attribute("textContent"), f"cell {index} on the page is not the widget cell"
        run_up_to(driver, cell)
        src = wait_for("the widget's figure", lambda: error_outputs(driver) or figure_src(cell), 150, every=1)
        assert not error_outputs(driver), f"a cell failed: {error_outputs(driver)}"
        assert src.startswith("data:image/png")
        for label in ("alpha", "image eps"):
            before, after = move_slider(driver, cell, label)
            new = wait_for(f"the figure to be redrawn after moving {label}",
                           lambda: (s := figure_src(cell)) not in (None, src) and s, 60)
            assert new.startswith("data:image/png") and before != after
            src = new
        wait_for("the kernel to be idle again", lambda: lab.kernel_state() == "idle", 60)
        assert not error_outputs(driver), f"a cell failed: {error_outputs(driver)}"
    except BaseException:
        driver.save_screenshot(str(tmp_path / "lab_failure.png"))
        raise
    finally:
        driver.quit()
