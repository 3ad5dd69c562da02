"""Checkpoints of a training run: the weights files notebooks and ``predict`` load, read weights-only.

``best.pt`` (the kept epoch) and ``epochs/epoch_<e>.pt`` (every epoch's evaluated weights) hold one
:class:`~isp_support.train.models.ColourNet` in the format of :func:`weights_bytes`; :func:`read_checkpoint`
rebuilds it without unpickling anything. The full per-epoch checkpoints of :func:`isp_support.train.loop.train`
(``checkpoints/epoch_<e>.pt``: weights, optimiser, schedule, EMA, discriminator, history) are written with
:func:`to_bytes` and read with :func:`load_state`.
"""

from __future__ import annotations

import dataclasses
import io
import json
import pickle
import re
import zipfile
from pathlib import Path
from typing import Any

import torch

from . import TrainingError
from .models import ColourNet
from .precision import precision
from ..artifacts import atomic_write_bytes, sha256_file
from ..config import Config, PreprocessConfig
from ..io import DataError, require_regular_file

__all__ = ["BEST", "EPOCHS", "GRAM_BACKBONE_RAN", "LOADER_ONLY", "RESULT", "comparable", "epoch_models",
           "load_epoch", "load_model", "load_state", "read_checkpoint", "require_run_record", "run_settings",
           "same_settings", "sample_path", "save_samples", "to_bytes", "weights_bytes"]

EPOCHS = "epochs"
"""Folder of a run holding every epoch's evaluated weights (``epoch_<e>.pt``)."""
RESULT, BEST = "result.json", "best.pt"
"""A finished run's record, written last, and its kept epoch's weights, written just before it."""
GRAM_BACKBONE_RAN = "gram_backbone_ran"
"""Settings key of a run whose Gram loss ran on another backbone than ``EmbedConfig.style_backbone`` (VGG19's
stand-in, :func:`~isp_support.train.gram.gram_loss_for`); absent when it ran on the configured one."""


def run_settings(cfg: Config, stage: int, src: Any, init: Path | None, device: str) -> dict[str, Any]:
    """What a run's weights depend on (``src``: its :class:`~isp_support.train.pairs.PairSource`); a finished
    run or checkpoint is loaded only with the same settings. Training adds ``gram_backbone_ran`` when the Gram
    loss loads another backbone than ``style_backbone`` (:data:`GRAM_BACKBONE_RAN`)."""
    train = dataclasses.asdict(cfg.train)
    if train["gram_layers"] is None:  # added later: recorded when set, so runs trained before it still load
        del train["gram_layers"]
    return {"stage": stage, "seed": cfg.seed, "train": train,
            "stage2": dataclasses.asdict(cfg.stage2) if stage == 2 else None, "data": src.fingerprint(),
            "style_backbone": cfg.embed.style_backbone, "precision": precision(device, cfg.train.amp, cfg.train.cpu_amp),
            "init_sha256": sha256_file(init) if init else None}


LOADER_ONLY = ("workers",)
"""``TrainConfig`` fields that change how fast pairs are loaded, never which pairs or what the weights become; a
run resumes or loads whatever they were (older runs recorded them, so they are left out of the comparison)."""


def comparable(settings: Any) -> Any:
    """``settings`` (as recorded, JSON types) without :data:`LOADER_ONLY` fields, for comparing two runs' settings."""
    if isinstance(settings, dict) and isinstance(settings.get("train"), dict):
        return {**settings, "train": {k: v for k, v in settings["train"].items() if k not in LOADER_ONLY}}
    return settings


def same_settings(recorded: Any, settings: dict[str, Any]) -> tuple[bool, str | None]:
    """Whether a finished run's recorded settings are ``settings`` (:func:`comparable`), and the Gram stand-in it
    recorded (or ``None``).

    :data:`GRAM_BACKBONE_RAN` is not compared: which backbone loads is known only once it is loaded, and the run is
    what it was trained as."""
    ran = recorded.get(GRAM_BACKBONE_RAN) if isinstance(recorded, dict) else None
    if ran is not None:
        recorded = {k: v for k, v in recorded.items() if k != GRAM_BACKBONE_RAN}
    return comparable(recorded) == comparable(json.loads(json.dumps(settings, sort_keys=True))), ran


def to_bytes(obj: Any) -> bytes:
    """``obj`` as :func:`torch.save` writes it."""
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


def load_state(path: Path, remedy: str = "delete it to retrain from the previous one") -> Any:
    """A checkpoint's contents, weights-only (pickled objects are refused, never run); ``remedy`` ends the
    message when the file is damaged. Torch's own advice to load with ``weights_only=False`` is not passed on."""
    try:
        on_disk = require_regular_file(path).st_size
    except DataError as exc:
        raise TrainingError(f"{path}: checkpoint {exc.problem}") from None
    _check_declared_sizes(Path(path), on_disk, remedy)
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        found = re.search(r"GLOBAL (\S+) was not an allowed global", str(exc))
        what = f"it holds a pickled {found[1]}" if found else "not a file torch.save wrote"
        raise TrainingError(f"{path}: not a weights-only checkpoint of this package ({what}); pickled objects are "
                            f"refused") from None
    except Exception as exc:  # torch raises RuntimeError, EOFError, zipfile errors ...
        detail = " ".join(str(exc).split()) or "empty or truncated"
        raise TrainingError(f"{path}: unreadable checkpoint ({type(exc).__name__}: {detail}); {remedy}") from None


EXPANSION_SLACK = 1 << 20
"""Bytes a checkpoint's entries may declare beyond the file's own size. ``torch.save`` stores its entries
uncompressed, so a checkpoint holds about what it declares; one that declares more would expand on loading."""


def _check_declared_sizes(path: Path, on_disk: int, remedy: str) -> None:
    """Refuse a checkpoint whose zip entries declare more than the file holds (:data:`EXPANSION_SLACK`), before
    ``torch.load`` allocates anything: a 0.6 MB compressed file could otherwise ask for gigabytes."""
    try:
        with zipfile.ZipFile(path) as archive:
            declared = sum(entry.file_size for entry in archive.infolist())
    except zipfile.BadZipFile:
        raise TrainingError(f"{path}: unreadable checkpoint (not the zip file torch.save writes); {remedy}") from None
    except OSError as exc:
        raise TrainingError(f"{path}: checkpoint cannot be read: {exc.strerror or exc}") from None
    if declared > on_disk + EXPANSION_SLACK:
        raise TrainingError(f"{path}: checkpoint declares {declared:,} bytes of contents in a {on_disk:,}-byte file "
                            f"(compressed entries; torch.save stores them uncompressed), refused before expanding it")


def _check_finite(path: str | Path, weights: dict[str, Any]) -> None:
    """Refuse weights holding NaN or infinity: they would render black or saturated images that look complete."""
    bad = sorted(k for k, v in weights.items() if isinstance(v, torch.Tensor) and v.is_floating_point()
                 and not torch.isfinite(v).all())
    if bad:
        raise TrainingError(f"{path}: non-finite weights in {', '.join(bad[:3])}{' ...' if len(bad) > 3 else ''}; "
                            f"the network diverged: train it again")


_MODEL_ARG_LIMITS = {"hidden": 4096, "lut_size": 129}
"""Largest ColourNet sizes a checkpoint may ask for (far above the 7K network's 128 and 33)."""


def read_checkpoint(path: str | Path) -> tuple[ColourNet, dict[str, Any]]:
    """The colour network of ``best.pt`` or ``epochs/epoch_<e>.pt`` (on the CPU, in eval mode) and the
    checkpoint's entries (``model``, ``model_args``, ``epoch``, ``figures``, ``preprocess``: see
    :func:`weights_bytes`). Anything else, a bare state dict included, is a :class:`TrainingError`."""
    path = Path(path)
    state = load_state(path, "it is damaged: train it again or pass another checkpoint")
    if not isinstance(state, dict) or not {"model", "model_args"} <= state.keys():
        found = sorted(map(str, state))[:4] if isinstance(state, dict) else type(state).__name__
        raise TrainingError(f"{path}: not a network checkpoint of this package (a bare state dict? it needs "
                            f"'model' and 'model_args' entries; found {found}); use a best.pt of training.train")
    args = state["model_args"]
    if not isinstance(args, dict) or not isinstance(state["model"], dict):
        raise TrainingError(f"{path}: model_args {args!r} and model must be mappings (keyword arguments of "
                            f"ColourNet and its state dict)")
    too_big = {k: v for k, v in args.items() if k in _MODEL_ARG_LIMITS and not (
        isinstance(v, int) and 1 <= v <= _MODEL_ARG_LIMITS[k])}
    if too_big:
        raise TrainingError(f"{path}: model_args {too_big} out of range (allowed: 1..{_MODEL_ARG_LIMITS}), "
                            f"refused before any allocation")
    _check_finite(path, state["model"])
    try:
        model = ColourNet(**args)
        model.load_state_dict(state["model"])
    except (TypeError, ValueError, RuntimeError) as exc:
        raise TrainingError(f"{path}: model_args {args} and the saved weights do not make a ColourNet: "
                            f"{' '.join(str(exc).split())}") from None
    return model.eval(), state


def require_run_record(path: str | Path) -> None:
    """A ``best.pt`` is used only beside its run's ``result.json``, which training writes last: without it the run
    did not finish (killed, or still training). Other files (an exported copy) are not checked."""
    path = Path(path)
    if path.name == BEST and path.exists() and not (path.parent / RESULT).is_file():
        raise TrainingError(f"{path}: no result.json beside it, so its training run did not finish (killed or still "
                            f"running); finish the run, or pass --unrecorded to use these weights anyway")


def load_model(path: str | Path, device: str = "cpu") -> ColourNet:
    """The colour network saved in ``best.pt`` or ``epochs/epoch_<e>.pt`` (weights only, no unpickling)."""
    return read_checkpoint(path)[0].to(device)


def weights_bytes(model: torch.nn.Module, model_args: dict[str, Any], epoch: int, figures: dict[str, float],
                   preprocess: PreprocessConfig | None = None) -> bytes:
    """The format of ``best.pt`` and ``epochs/epoch_<e>.pt``; ``preprocess``: the pre-processing the network
    was trained behind, as a plain dict (``None``: not known). Non-finite weights are refused, never saved."""
    _check_finite(f"epoch {epoch}", model.state_dict())
    return to_bytes({"model": model.state_dict(), "model_args": model_args, "epoch": epoch, "figures": figures,
                      "preprocess": None if preprocess is None else dataclasses.asdict(preprocess)})


def load_epoch(folder: str | Path, epoch: int, device: str = "cpu") -> ColourNet:
    """The evaluated weights (the EMA's when on) of one epoch of the run in ``folder``; 0 = the start."""
    path = Path(folder) / EPOCHS / f"epoch_{epoch:03d}.pt"
    if not path.is_file():
        raise TrainingError(f"{path}: no weights of epoch {epoch}; the run has not reached it, or predates "
                            f"per-epoch weights (train it again with retrain=True)")
    return load_model(path, device)


def epoch_models(folder: str | Path, device: str = "cpu") -> dict[int, ColourNet]:
    """Every saved epoch's evaluated weights, epoch 0 included, in epoch order.

    For *scoring* each epoch against ground truth (notebooks 04 and 06): the kept epoch is chosen
    during training by ``TrainConfig.checkpoint_rule``, never from these scores.
    """
    files = sorted((Path(folder) / EPOCHS).glob("epoch_*.pt"))
    if not files:
        raise TrainingError(f"{Path(folder) / EPOCHS}: no per-epoch weights; the run predates them or never "
                            f"started (train it again with retrain=True)")
    return {int(f.stem.split("_")[1]): load_model(f, device) for f in files}


def sample_path(folder: str | Path, epoch: int) -> Path:
    """The validation renderings a run saves after ``epoch``: inputs above, outputs below."""
    return Path(folder) / "samples" / f"epoch_{epoch:03d}.png"


def save_samples(folder: Path, epoch: int, inputs: torch.Tensor, preds: torch.Tensor) -> None:
    """Inputs (top row) and this epoch's predictions (bottom row) as one PNG."""
    from PIL import Image

    top = torch.cat(list(inputs.float()), dim=2)
    bottom = torch.cat(list(preds.float()), dim=2)
    grid = (torch.cat([top, bottom], dim=1).clamp(0, 1) * 255).round().byte().permute(1, 2, 0).numpy()
    buf = io.BytesIO()
    Image.fromarray(grid).save(buf, format="PNG")
    atomic_write_bytes(sample_path(folder, epoch), buf.getvalue())
