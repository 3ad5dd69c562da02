"""Run the notebook series headlessly with papermill, in order."""

from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path

from .artifacts import atomic_write_json
from .config import Config
from .io import DataError, read_json
from .runs import RunLayout, check_run_dir

HEADLESS_ENV = "ISP_HEADLESS"
"""Set while :func:`run_series` runs the notebooks (and by ``make nbval``): no front end will show a widget."""

NOTEBOOK_PATTERN = re.compile(r"^(\d\d)_[a-z0-9_]+\.ipynb$")


def series_notebooks(folder: str | Path = "notebooks") -> list[Path]:
    """The series' notebooks (``NN_name.ipynb``) in order."""
    folder = Path(folder)
    return sorted(p for p in folder.glob("*.ipynb") if NOTEBOOK_PATTERN.match(p.name))


def notebook_parameters(cfg: Config, overrides: dict[str, object] | None = None) -> dict[str, object]:
    """The parameters cell's values; ``overrides`` (dotted config fields) travel as ``OVERRIDES``, JSON text."""
    params: dict[str, object] = {"PROFILE": cfg.profile, "DATA_DIR": str(Path(cfg.data_dir).resolve()),
                                 "RUN_DIR": str(Path(cfg.run_dir).resolve()), "SEED": cfg.seed, "DEVICE": cfg.device}
    if overrides:
        params["OVERRIDES"] = json.dumps(overrides, sort_keys=True)
    return params


def run_series(cfg: Config, notebooks_dir: str | Path = "notebooks", only: list[str] | None = None,
               log=print, overrides: dict[str, object] | None = None) -> list[Path]:
    """Execute every notebook in order into ``<run_dir>/notebooks/``; stops at the first failure.

    ``overrides`` (dotted config fields, already applied to ``cfg``) are passed to every notebook, so each
    one resolves the same config.

    ``<run_dir>/series.json`` records each notebook's wall time (seconds) as it finishes, and the total;
    the times of notebooks run earlier into the same folder (``only=``) are kept beside them.
    :data:`HEADLESS_ENV` is set for the kernels, so widget cells print a note instead of a widget.
    """
    check_run_dir(cfg.run_dir, notebooks_dir)
    notebooks = series_notebooks(notebooks_dir)
    if only:
        notebooks = [nb for nb in notebooks if any(nb.stem.startswith(o) for o in only)]
    if not notebooks:
        log(f"no notebooks matching NN_name.ipynb in {Path(notebooks_dir).resolve()}: nothing to run")
        return []
    out_dir = RunLayout(cfg.run_dir).notebooks
    out_dir.mkdir(parents=True, exist_ok=True)
    previous = os.environ.get(HEADLESS_ENV)
    os.environ[HEADLESS_ENV] = "1"  # the kernels papermill starts inherit it: widget cells print a note
    try:
        return _execute(cfg, notebooks, out_dir, log, overrides)
    finally:
        if previous is None:
            os.environ.pop(HEADLESS_ENV, None)
        else:
            os.environ[HEADLESS_ENV] = previous


class NotebookFailed(Exception):
    """A notebook of the series stopped with an error; the message is that error, one line."""


def _execute(cfg: Config, notebooks: list[Path], out_dir: Path, log, overrides: dict[str, object] | None) -> list[Path]:
    import papermill as pm
    from papermill.exceptions import PapermillExecutionError

    executed = []
    seconds = _recorded_seconds(RunLayout(cfg.run_dir).series, cfg.profile)
    for nb in notebooks:
        target = out_dir / nb.name
        log(f"--> {nb.name} (profile {cfg.profile})")
        start = time.perf_counter()
        try:
            pm.execute_notebook(str(nb), str(target), parameters=notebook_parameters(cfg, overrides),
                                kernel_name="python3", cwd=str(nb.parent), progress_bar=False, log_output=False)
        except PapermillExecutionError as exc:  # the named error from inside the notebook, not papermill's dump
            raise NotebookFailed(f"{target}: {nb.stem} stopped in cell {exc.exec_count}: {exc.ename}: "
                                 f"{' '.join(str(exc.evalue).split())} (the executed copy holds the traceback)") from None
        seconds[nb.stem] = round(time.perf_counter() - start, 2)
        log(f"    done in {seconds[nb.stem]:.1f} s -> {target}")
        executed.append(target)
        seconds = dict(sorted(seconds.items()))
        atomic_write_json(RunLayout(cfg.run_dir).series, {"profile": cfg.profile, "seconds": seconds,
                                                             "total_seconds": round(sum(seconds.values()), 2)})
    return executed


def _recorded_seconds(path: Path, profile: str) -> dict[str, float]:
    """The notebook times already in ``series.json`` for ``profile``; none when absent, unreadable or another
    profile's (the folder's record is then started again)."""
    try:
        record = read_json(path)
        seconds = record["seconds"] if record.get("profile") == profile else {}
        return {str(k): float(v) for k, v in seconds.items()}
    except (DataError, ValueError, TypeError, KeyError, AttributeError):
        return {}
