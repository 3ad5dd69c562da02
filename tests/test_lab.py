"""``make lab``: JupyterLab on notebooks/ with the project's kernel, the demo data and a fresh run folder."""

import json
import os
import re
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
JUPYTER = Path(sys.executable).parent / "jupyter"


def _lab_command(*make_args: str) -> str:
    out = subprocess.run(["make", "-s", "-n", "lab", *make_args], cwd=ROOT, capture_output=True, text=True,
                         check=True).stdout
    return next(line for line in out.replace("\\\n", " ").splitlines() if "jupyter lab" in line)


def test_make_lab_sets_the_demo_data_and_a_fresh_run_folder():
    line = _lab_command()
    assert f"ISP_PROFILE=demo ISP_DATA_DIR={ROOT}/data/demo" in line
    assert re.search(rf"ISP_RUN_DIR={re.escape(str(ROOT))}/runs/lab-\d{{8}}-\d{{6}}\s", line)
    assert line.rstrip().endswith("jupyter lab --notebook-dir=notebooks")
    assert "--no-browser" in _lab_command('LAB_ARGS=--no-browser')


def test_the_lab_kernel_is_the_project_environment():
    specs = json.loads(subprocess.run([str(JUPYTER), "kernelspec", "list", "--json"], capture_output=True,
                                      text=True, check=True).stdout)["kernelspecs"]
    assert Path(specs["python3"]["spec"]["argv"][0]) == Path(sys.executable)
    assert Path(specs["python3"]["resource_dir"]).resolve().is_relative_to(Path(sys.prefix).resolve())


def test_jupyter_lab_serves_the_notebooks(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = os.environ | {"JUPYTER_RUNTIME_DIR": str(tmp_path / "runtime"), "JUPYTER_CONFIG_DIR": str(tmp_path / "cfg")}
    server = subprocess.Popen([str(JUPYTER), "lab", "--notebook-dir=notebooks", "--no-browser", f"--port={port}",
                               "--ip=127.0.0.1", "--IdentityProvider.token=t", "--ServerApp.allow_root=True"],
                              cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        listing = None
        for _ in range(120):
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/contents?token=t", timeout=2) as r:
                    listing = json.load(r)
                break
            except OSError:
                time.sleep(0.5)
        assert listing is not None, "jupyter lab did not answer within 60 s"
        names = {item["name"] for item in listing["content"]}
        assert {"01_preprocess.ipynb", "06_evaluate.ipynb"} <= names
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/lab?token=t", timeout=10) as r:
            assert r.status == 200
    finally:
        server.terminate()
        server.wait(timeout=30)
