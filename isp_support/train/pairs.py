"""Training pairs: which patches one pairing mode trains and validates on, and what each epoch feeds the network.

* Source patches are the pre-processed RAW patches of notebook 01
  (``RUN_DIR/preprocessed/train``). Source *scenes* are split into training and
  validation scenes (``TrainConfig.val_fraction``, seeded); validation patches are
  never trained on (:func:`pair_source`).
* Each epoch visits every training patch once, in a seeded order, with one target
  drawn from the pair graph of notebook 03 (``RUN_DIR/match/<pairing>/patch_graph.npz``)
  with probability ``w_st`` (``ot``, ``unbalanced``, ``knn``, ``random``), or, for
  ``paired``, the patch's own ``train/gt`` rendering (the supervised upper bound,
  never used by the unpaired modes). The plan of epoch ``e`` depends only on
  ``(seed, e)`` (:func:`epoch_plan`). With ``TrainConfig.crop`` the source and target
  crops of a pair share their fractional offsets, so they cover the same relative
  window (for pseudo pairs as for true ones; :func:`cut`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from . import TrainingError
from ..artifacts import sha256_file
from ..config import Config
from ..config_rules import PAIRINGS
from ..runs import RunLayout
from ..data import open_dataset
from ..io import read_rgb_tensor
from ..pairing.graph import PairGraph
from ..pipeline.preprocess import output_path
from .decoded import DecodedTargets

__all__ = ["PairSource", "cut", "epoch_loader", "epoch_plan", "pair_source", "read_source", "seed_of"]


def seed_of(cfg: Config, part: str) -> int:
    """The seed that draws ``part`` of a training run (:data:`~isp_support.config_rules.RANDOMNESS`): the run's
    ``Config.seed``, or 0 where ``TrainConfig.fixed_randomness`` holds it fixed."""
    return 0 if part in cfg.train.fixed_randomness else cfg.seed


@dataclass(frozen=True)
class PairSource:
    """The patches one pairing mode trains and validates on, keyed by stable patch ids."""

    pairing: str
    train_ids: tuple[str, ...]
    val_ids: tuple[str, ...]
    val_scenes: tuple[str, ...]
    source_files: dict[str, Path]
    """Pre-processed source patch (``.npy``, ``(3, 2H, 2W)``) of every source id."""
    target_files: dict[str, Path]
    """Target-domain JPEG of every target id."""
    gt_files: dict[str, Path]
    """``train/gt`` rendering of every source id (``paired`` only; empty otherwise)."""
    graph: PairGraph | None
    graph_file: Path | None
    cache_dir: Path | None = None
    """Where the training targets are decoded once (:class:`~isp_support.train.decoded.DecodedTargets`);
    ``None``: decoded when read."""

    def fingerprint(self) -> dict[str, Any]:
        """What the trained weights depend on, for the settings hash."""
        return {"pairing": self.pairing, "train_ids": list(self.train_ids), "val_ids": list(self.val_ids),
                "graph_sha256": sha256_file(self.graph_file) if self.graph_file else None}


def pair_source(cfg: Config, run_dir: str | Path, pairing: str | None = None) -> PairSource:
    """Collect the training pairs of ``pairing`` (default ``cfg.train.pairing``); errors say which step to run."""
    pairing = pairing or cfg.train.pairing
    if pairing not in PAIRINGS:
        raise TrainingError(f"unknown pairing {pairing!r}; expected one of {', '.join(PAIRINGS)}")
    run_dir = Path(run_dir)
    split = open_dataset(cfg.data_dir)["train"]
    patches = split.raw_patches()
    scene_of = {p.id: p.scene for p in patches}
    source_files = {p.id: output_path(RunLayout(run_dir).preprocessed, "train", p.id) for p in patches}
    missing = [str(f) for f in source_files.values() if not f.is_file()]
    if missing:
        raise TrainingError(f"{len(missing)} pre-processed source patches are missing (first: {missing[0]}); "
                            f"run notebook 01_preprocess for this RUN_DIR first")
    target_files = {p.id: p.path for p in split.jpeg_patches()}
    graph = graph_file = None
    gt_files: dict[str, Path] = {}
    if pairing == "paired":
        gt_files = {p.id: p.path for s in split.gt.values() for p in s.patches}
        lacking = sorted(set(source_files) - set(gt_files))
        if lacking:
            raise TrainingError(f"pairing='paired' needs train/gt for every RAW patch; {cfg.data_dir}/train/gt lacks "
                                f"{len(lacking)} (first: {lacking[0]}.png). The unpaired modes need no ground truth.")
    else:
        graph_file = RunLayout(run_dir).patch_graph(pairing)
        if not graph_file.is_file():
            raise TrainingError(f"{graph_file}: no {pairing!r} pair graph; run notebook 03_embed_match first")
        graph = PairGraph.load(graph_file)
        unknown = sorted(set(source_files) - set(graph.source_ids))
        if unknown:
            raise TrainingError(f"{graph_file}: {len(unknown)} source patches have no edges (first: {unknown[0]}); "
                                f"the graph was built for other data: rerun 03_embed_match")
        absent = sorted(set(graph.target_ids) - set(target_files))
        if absent:
            raise TrainingError(f"{graph_file}: targets missing from {cfg.data_dir}/train/jpegs (first: {absent[0]})")
    scenes = sorted(set(scene_of.values()))
    if len(scenes) < 2:
        raise TrainingError(f"{cfg.data_dir}/train/raws has {len(scenes)} scene(s); validation holds out whole "
                            f"scenes, so at least 2 are needed")
    n_val = min(len(scenes) - 1, max(1, round(cfg.train.val_fraction * len(scenes))))
    order = np.random.default_rng([seed_of(cfg, "split"), 17]).permutation(len(scenes))
    val_scenes = tuple(sorted(scenes[i] for i in order[:n_val]))
    ids = sorted(source_files)
    return PairSource(
        pairing=pairing,
        train_ids=tuple(i for i in ids if scene_of[i] not in val_scenes),
        val_ids=tuple(i for i in ids if scene_of[i] in val_scenes),
        val_scenes=val_scenes, source_files=source_files, target_files=target_files, gt_files=gt_files,
        graph=graph, graph_file=graph_file, cache_dir=RunLayout(run_dir).root / "cache" / "decoded")


def epoch_plan(src: PairSource, epoch: int, cfg: Config) -> tuple[list[str], list[Path], np.ndarray | None]:
    """Epoch ``epoch``'s source ids in visiting order, each one's target file, and each pair's crop offsets
    (``(N, 2)`` fractions; ``None`` without ``TrainConfig.crop``). Order, targets and crops have a generator
    each (:func:`seed_of`), so that the seed spread's study can hold any of them fixed."""
    rng = np.random.default_rng([seed_of(cfg, "order"), epoch])
    order = [src.train_ids[i] for i in rng.permutation(len(src.train_ids))]
    if src.graph is None:
        targets = [src.gt_files[i] for i in order]
    else:
        sampler = src.graph.sampler(int(np.random.default_rng([seed_of(cfg, "targets"), epoch, 1]).integers(2 ** 62)))
        targets = [src.target_files[t] for t in sampler.sample(order)]
    crops = np.random.default_rng([seed_of(cfg, "crops"), epoch, 2])
    return order, targets, crops.random((len(order), 2)) if cfg.train.crop else None


def read_source(path: Path) -> torch.Tensor:
    """A pre-processed patch as float32 ``(3, H, W)``; a wrong shape or non-finite value names the file."""
    try:
        arr = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise TrainingError(f"{path}: unreadable pre-processed patch ({exc}); rerun 01_preprocess") from exc
    if arr.ndim != 3 or arr.shape[0] != 3:
        raise TrainingError(f"{path}: pre-processed patch of shape {arr.shape}, expected (3, H, W)")
    x = torch.from_numpy(arr.astype(np.float32))
    if not torch.isfinite(x).all():
        raise TrainingError(f"{path}: pre-processed patch holds non-finite values; rerun 01_preprocess")
    return x


def cut(t: torch.Tensor, crop: int, fy: float, fx: float, path: Path) -> torch.Tensor:
    """The ``crop`` x ``crop`` window of ``t`` (``(..., H, W)``) at fractional offsets ``(fy, fx)`` in [0, 1).

    The offsets scale with ``t``'s own size, so a source and a target of unequal sizes cut with the
    same offsets cover the same relative position.
    """
    h, w = t.shape[-2:]
    if crop > min(h, w):
        raise TrainingError(f"{path}: patch {h}x{w} is smaller than TrainConfig.crop={crop}")
    y0, x0 = int(fy * (h - crop + 1)), int(fx * (w - crop + 1))
    return t[..., y0:y0 + crop, x0:x0 + crop]


class _PairDataset(torch.utils.data.Dataset):
    """Item ``i``: (source, target) tensors of the plan, both cut at the pair's planned offsets ``offsets[i]``.

    One ``(fy, fx)`` per pair: a pseudo pair shows a similar scene, so its two crops cover the same
    relative window, as a true pair's do.
    """

    def __init__(self, sources: list[Path], targets: list[Path], offsets: np.ndarray | None, crop: int | None,
                 decoded: DecodedTargets | None = None):
        self.sources, self.targets, self.offsets, self.crop, self.decoded = sources, targets, offsets, crop, decoded

    def __len__(self) -> int:
        return len(self.sources)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        x = read_source(self.sources[i])
        y = self.decoded.tensor(self.targets[i]) if self.decoded else read_rgb_tensor(self.targets[i])
        if self.crop is None:
            if x.shape != y.shape:
                raise TrainingError(f"{self.sources[i]} is {tuple(x.shape)} but its target {self.targets[i]} is "
                                    f"{tuple(y.shape)}; set TrainConfig.crop to train on patches of unequal size")
            return x, y
        fy, fx = self.offsets[i]
        return cut(x, self.crop, fy, fx, self.sources[i]), cut(y, self.crop, fy, fx, self.targets[i])


def epoch_loader(src: PairSource, epoch: int, cfg: Config, device: str, decode_once: bool = True,
                 log=print) -> torch.utils.data.DataLoader:
    """Epoch ``epoch``'s batches in plan order (:func:`epoch_plan`), cut at seeded offsets with ``TrainConfig.crop``;
    targets decoded once for all epochs (:class:`~isp_support.train.decoded.DecodedTargets`, the same values) unless
    ``decode_once=False`` or ``src.cache_dir`` is ``None``."""
    order, targets, offsets = epoch_plan(src, epoch, cfg)
    files = src.gt_files if src.graph is None else src.target_files
    decoded = DecodedTargets.build(files.values(), src.cache_dir, log) if decode_once and src.cache_dir else None
    ds = _PairDataset([src.source_files[i] for i in order], targets, offsets, cfg.train.crop, decoded)
    return torch.utils.data.DataLoader(ds, batch_size=cfg.train.batch_size, shuffle=False, drop_last=False,
                                       num_workers=cfg.train.workers, pin_memory=device.startswith("cuda"))
