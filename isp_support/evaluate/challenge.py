"""Notebook 06 on the challenge's data: no ground truth anywhere, figures without a reference, the submission.

The released NTIRE 2026 data has no ground truth in any split (``REFERENCE_NOTES.md``): every score comes from the
organisers' server. What a run can still say about its renderings, and what it must hand in:

* :func:`truth_splits` and :func:`rows_needing_truth`: which splits can be scored, and which rows of the ablation
  cannot be trained at all (the paired upper bounds train on ``train/gt``), each with its reason.
* :class:`TargetDomain` and :func:`no_reference_figures`: the series' figures that need no reference, on a whole
  split, streamed from notebook 01's pre-processed patches in batches (memory: one batch and a bounded pixel
  sample, whatever the split's size): the colour distance of the pooled renderings to the target domain (sliced
  W1 of YUV pixels, as training's validation computes it) and, per patch, the structure fidelity of output to
  input and the luma SSIM.
* :func:`nearest_targets`: for a rendered scene, the target-domain images whose colour histograms are closest,
  to put beside it.
* :func:`write_submission`: a split rendered into the challenge's layout by ``isp-support predict``'s export
  (``<scene>_<idx>.png``, or ``.jpg`` as the official baseline writes it), zipped with the ``readme.txt`` NTIRE
  submissions carry (runtime per image, CPU or GPU, extra data, parameters, device).
"""

from __future__ import annotations

import io
import math
import os
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from ..data import ChallengeDataset
from ..embed.descriptors import colour_features
from ..io import read_raw
from ..metrics import SlicedReference, ssim_luma, structure_fidelity, yuv_pixels
from ..pipeline.preprocess import load_preprocessed
from ..pipeline.stitch import load_stitched
from ..runs import RunLayout, device_description
from ..train.validate import target_pixels
from . import inference
from .scoring import EvaluationError, Method, median_seconds

__all__ = ["SUBMISSION_FORMATS", "TargetDomain", "no_reference_figures", "nearest_targets", "rows_needing_truth",
           "thumbnail", "truth_splits", "write_submission"]

SUBMISSION_FORMATS = ("png", "jpeg")
BASELINE_JPEG_QUALITY = 75
"""PIL's default JPEG quality, which the official baseline's ``predict.py`` writes with."""


def truth_splits(data: ChallengeDataset) -> dict[str, bool]:
    """Each split of the dataset and whether it holds ground truth (``<split>/gt``)."""
    return {name: bool(part.gt) for name, part in data.splits.items()}


def rows_needing_truth(methods: list[Method], data: ChallengeDataset) -> dict[str, str]:
    """The rows that cannot be trained on this dataset, each with the reason (the paired bounds need
    ``train/gt``)."""
    has_train_gt = "train" in data.splits and bool(data["train"].gt)
    return {m.key: f"needs train/gt (it trains on the true renderings), and {data.root / 'train'} has none"
            for m in methods if m.pairing == "paired" and not has_train_gt}


@dataclass
class TargetDomain:
    """The target domain's colours, sampled once: a :class:`~isp_support.metrics.SlicedReference` of YUV pixels
    from ``patches`` evenly spaced ``train/jpegs`` patches, and a colour histogram per target scene (for
    :func:`nearest_targets`)."""

    reference: SlicedReference
    scenes: list[str]
    histograms: torch.Tensor

    @classmethod
    def from_run(cls, data: ChallengeDataset, run_dir: str | Path, patches: int, seed: int = 0,
                 max_pixels: int = 200_000, thumb: int = 256) -> "TargetDomain":
        part = data["train"]
        files = [p.path for p in sorted(part.jpeg_patches(), key=lambda p: p.id)]
        if not files:
            raise EvaluationError(f"{data.root / 'train' / 'jpegs'}: no target-domain images to compare with")
        pixels = target_pixels(files, patches, seed, max_pixels)  # the reference training's validation draws
        scenes = sorted(part.jpegs)
        histograms = torch.stack([colour_features(thumbnail(torch.from_numpy(
            load_stitched(run_dir, "train", "jpeg", s)).permute(2, 0, 1), thumb)[None])[0] for s in scenes])
        return cls(SlicedReference(pixels, seed=seed), scenes, histograms)


def thumbnail(image: torch.Tensor, side: int) -> torch.Tensor:
    """``(3, H, W)`` in [0, 1] resized (antialiased, clamped to [0, 1]) so its longer side is at most ``side``."""
    h, w = image.shape[-2:]
    scale = min(1.0, side / max(h, w))
    if scale == 1.0:
        return image.float().clamp(0, 1)
    size = (max(1, round(h * scale)), max(1, round(w * scale)))
    return torch.nn.functional.interpolate(image[None].float(), size=size, mode="bilinear", antialias=True,
                                           align_corners=False)[0].clamp_(0, 1)  # the filter overshoots a little


def nearest_targets(rendering: torch.Tensor, target: TargetDomain, k: int = 1, thumb: int = 256) -> list[str]:
    """The ``k`` target scenes whose colour histograms (:func:`~isp_support.embed.descriptors.colour_features`)
    are closest to the rendering's."""
    h = colour_features(thumbnail(rendering.clamp(0, 1), thumb)[None])[0]
    order = torch.cdist(h[None], target.histograms)[0].argsort()
    return [target.scenes[int(i)] for i in order[:k]]


def no_reference_figures(model: torch.nn.Module | None, run_dir: str | Path, split: str, patch_ids: list[str],
                         target: TargetDomain, device: str = "cpu", batch_size: int = 32, max_pixels: int = 200_000,
                         seed: int = 0) -> tuple[pd.DataFrame, float]:
    """Per patch ``structure`` (fidelity of output to input, 1: unchanged) and ``ssim_luma``, and the colour
    distance of all renderings, pooled, to the target domain; ``model=None``: the pre-processing alone.

    Patches are read from notebook 01's output a batch at a time and each batch contributes an equal share of
    at most ``max_pixels`` pixels to the pooled sample, so memory is one batch and the sample.
    """
    pre = RunLayout(run_dir).preprocessed
    n = len(patch_ids)
    if not n:
        raise EvaluationError(f"{pre / split}: no patches to render")
    per_batch = math.ceil(max_pixels * batch_size / n)
    pixels, structure, ssim = [], [], []
    for k, i in enumerate(range(0, n, batch_size)):
        ids = patch_ids[i:i + batch_size]
        try:
            x = torch.from_numpy(np.stack([load_preprocessed(pre, split, p) for p in ids]).astype(np.float32))
        except FileNotFoundError as exc:
            raise EvaluationError(f"{exc.filename}: missing pre-processed patch; run 01_preprocess first") from None
        pred = x if model is None else inference.predict(model, x, device)
        pixels.append(yuv_pixels(pred, per_batch, seed + 1 + k))
        structure.append(structure_fidelity(x, pred))
        ssim.append(ssim_luma(x, pred))
    table = pd.DataFrame({"patch": patch_ids, "structure": torch.cat(structure).double().numpy(),
                          "ssim_luma": torch.cat(ssim).double().numpy()})
    return table, target.reference.distance(torch.cat(pixels))


def _runtime_per_image(predictor: inference.Predictor, raws: list[Path], repeats: int = 3) -> float:
    """Median seconds per image of pre-processing and network on one batch of the split (after a warm-up)."""
    batch = np.stack([read_raw(f) for f in raws[:predictor.batch_size]])
    return median_seconds(lambda: predictor.patches(batch), predictor.device, repeats) / len(batch)


def write_submission(predictor: inference.Predictor, raw_dir: str | Path, out_dir: str | Path, name: str,
                     fmt: str = "png", description: str = "", parameters: int | None = None,
                     extra_data: bool = False, progress: bool = True, log=print) -> dict[str, Any]:
    """Render every RAW patch of ``raw_dir`` into ``out_dir/<name>/`` (``isp-support predict``'s export, which
    resumes and checks its outputs) and zip them as ``out_dir/<name>.zip``, flat, with ``readme.txt``.

    ``fmt``: ``png`` (lossless, the default) or ``jpeg`` (``.jpg`` at PIL's default quality 75, as the official
    baseline writes, from the same rounded 8-bit values; the baseline truncated them). The zip holds exactly one
    image per RAW patch; its members carry a fixed date, so two exports of the same images differ only in the
    runtime ``readme.txt`` reports. It is written under a temporary name and renamed when complete. Returns what
    the readme says and where the files are.
    """
    if fmt not in SUBMISSION_FORMATS:
        raise EvaluationError(f"submission format {fmt!r}: expected one of {', '.join(SUBMISSION_FORMATS)}")
    raw_dir, out_dir = Path(raw_dir), Path(out_dir)
    images = out_dir / name
    written = inference.export_folder(predictor, raw_dir, images, progress=progress, log=log)
    raws = sorted(raw_dir.glob("*.npy"))
    pngs = [images / f"{r.stem}.png" for r in raws]
    missing = [p.name for p in pngs if not p.is_file()]
    if missing or not raws:
        raise EvaluationError(f"{images}: no image for {len(missing)} of the {len(raws)} RAW patches in {raw_dir} "
                              f"(first: {missing[0] if missing else 'none'})")
    runtime = _runtime_per_image(predictor, raws)
    on_gpu = predictor.device.startswith("cuda")
    readme = {
        "runtime per image [s]": f"{runtime:.4f}",
        "CPU[1] / GPU[0]": "0" if on_gpu else "1",
        "Extra Data [1] / No Extra Data [0]": "1" if extra_data else "0",
        "Other description": (f"{description} Parameters: {parameters if parameters is not None else 'unknown'}. "
                              f"Runtime: pre-processing (fixed RAW pipeline) and network per "
                              f"{2 * read_raw(raws[0]).shape[0]} px patch, median of 3 batches of "
                              f"{min(len(raws), predictor.batch_size)} on {device_description(predictor.device)}. "
                              f"Images: {fmt.upper()}, 8-bit, rounded.").strip(),
    }
    text = "".join(f"{k} : {v}\n" for k, v in readme.items())
    target = out_dir / f"{name}.zip"
    fd, tmp = tempfile.mkstemp(prefix=f".{name}.zip.partial-", dir=out_dir)
    try:
        with os.fdopen(fd, "wb") as fh, zipfile.ZipFile(fh, "w") as zf:
            for png in pngs:
                if fmt == "png":
                    _add(zf, png.name, png.read_bytes(), zipfile.ZIP_STORED)  # PNG is compressed already
                else:
                    _add(zf, f"{png.stem}.jpg", _jpeg_bytes(png), zipfile.ZIP_STORED)
            _add(zf, "readme.txt", text.encode(), zipfile.ZIP_DEFLATED)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return {"zip": str(target), "images": len(pngs), "rendered_now": len(written), "format": fmt,
            "readme": readme, "runtime_s_per_image": runtime}


def _add(zf: zipfile.ZipFile, name: str, data: bytes, compression: int) -> None:
    """One member with a fixed date (not the file's), so the same images give the same member bytes."""
    info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
    info.compress_type = compression
    zf.writestr(info, data)


def _jpeg_bytes(png: Path) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    with Image.open(png) as img:
        img.convert("RGB").save(buf, format="JPEG", quality=BASELINE_JPEG_QUALITY)
    return buf.getvalue()
