"""Image- and patch-level optimal-transport pseudo-pairing (paper section 4.2): notebook 03's entry point.

1. **Image level.** Source and target full-image descriptors give an entropic fused Gromov-Wasserstein
   plan ``P*`` with uniform marginals (eqs. 1-5; :mod:`isp_support.ot.fgw`, which also holds the reading
   of eq. 3). Each source image keeps its ``top_images`` (10) targets by ``P*``.
2. **Patch level.** For each source image, entropic OT between its patches and all patches of its
   top-10 target images; ``w_st ∝ P_patch(s, t) * P_image(I_s, I_t)`` normalised per source patch; the
   ``top_patches`` (8) largest are kept (:mod:`isp_support.pairing.patches`) as a sparse
   :class:`~isp_support.pairing.graph.PairGraph`, from which training samples a target with
   probability ``w_st``.

:func:`match_dataset` runs both for one :class:`~isp_support.config.MatchConfig` (or a baseline of
:mod:`isp_support.pairing.baselines`), keyed by stable ids: it sorts every input by id before solving,
so the result for an id does not depend on the order of the inputs (bit for bit). :data:`PAIRING_VARIANTS`
are the settings notebook 03 compares; :func:`synthetic_match_inputs` makes descriptors with a known
structure for the tests and the benchmark.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..artifacts import atomic_save_npy, atomic_write_json
from ..config import MatchConfig
from ..config_rules import KNN_SCOPES
from ..config_rules import MATCH_METHODS as METHODS
from ..ot.fgw import FGWReport, fused_gw_plan, sq_distances
from ..ot.reports import BatchOTReport, _jsonable
from ..ot.sinkhorn import _device_of, _numpy, _tensor
from .baselines import knn_graph, random_graph
from .graph import PairGraph, _check_ids, graph_stats
from .patches import patch_plans, top_k_targets

PAPER_IMAGE_LEVEL = {"image_level": "paper", "image_epsilon": None, "image_tau": None}
"""The :class:`MatchConfig` fields that give section 4.2 as printed (with ``EmbedConfig.cast="none"``)."""
PAIRING_VARIANTS: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
    "paper": ({}, {}),
    "a candidates": ({}, {"image_level": "candidates"}),
    "b tempered": ({}, {"image_level": "tempered", "image_gamma": 0.5}),
    "c soft image eps": ({}, {"image_epsilon": 0.2}),
    "d unbalanced image": ({}, {"image_tau": 0.1}),
    "e marginal": ({}, {"image_level": "marginal"}),
    "f grey world": ({"cast": "grey_world"}, {}),
    "f channel norm": ({"cast": "channel_norm"}, {}),
    "g patch colour": ({"patch_colour_weight": 1.0}, {}),
    "f + c": ({"cast": "grey_world"}, {"image_epsilon": 0.2}),
    "c + g": ({"patch_colour_weight": 1.0}, {"image_epsilon": 0.2}),
    "f + c + g": ({"cast": "grey_world", "patch_colour_weight": 1.0}, {"image_epsilon": 0.2}),
    "f + a + c + g": ({"cast": "grey_world", "patch_colour_weight": 1.0},
                      {"image_level": "candidates", "image_epsilon": 0.2}),
    "f + d + g": ({"cast": "grey_world", "patch_colour_weight": 1.0}, {"image_tau": 0.1}),
    "f + e + c + g": ({"cast": "grey_world", "patch_colour_weight": 1.0},
                      {"image_level": "marginal", "image_epsilon": 0.2}),
}
"""The variants notebook 03 compares: ``name -> (EmbedConfig changes, MatchConfig changes)``, both from the
paper's reading (``cast="none"``, ``patch_colour_weight=0``, :data:`PAPER_IMAGE_LEVEL`). The letters are
those of the pairing-quality issue: (a) candidates only, (b) tempered product, (c) softer image eps,
(d) unbalanced image plan, (e) image plan as the patch-level target marginal, (f) colour-cast-normalised
descriptor inputs; (g), the colour block in the patch descriptors, is this series' addition."""

__all__ = ["METHODS", "PAPER_IMAGE_LEVEL", "PAIRING_VARIANTS", "DescriptorSet", "MatchResult", "match_dataset",
           "synthetic_match_inputs", "descriptor_sets"]


@dataclass(frozen=True)
class DescriptorSet:
    """Descriptors with stable ids; patches also name their parent image (``parents``)."""

    ids: tuple[str, ...]
    features: Any
    """``(N, D)`` numpy array or torch tensor."""
    parents: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "ids", _check_ids(self.ids, "DescriptorSet"))
        if self.parents is not None:
            object.__setattr__(self, "parents", tuple(self.parents))
            if len(self.parents) != len(self.ids):
                raise ValueError(f"{len(self.parents)} parents for {len(self.ids)} ids")
        shape = tuple(self.features.shape)
        if len(shape) != 2 or shape[0] != len(self.ids):
            raise ValueError(f"features must be (len(ids), D) = ({len(self.ids)}, D), got {shape}")

    def __len__(self) -> int:
        return len(self.ids)

    def sorted(self) -> "DescriptorSet":
        """The same set ordered by id (what :func:`match_dataset` works on)."""
        order = sorted(range(len(self.ids)), key=self.ids.__getitem__)
        if order == list(range(len(self.ids))):
            return self
        o = (torch.as_tensor(order, device=self.features.device) if isinstance(self.features, torch.Tensor)
             else np.asarray(order))
        return DescriptorSet(tuple(self.ids[i] for i in order), self.features[o],
                             None if self.parents is None else tuple(self.parents[i] for i in order))


@dataclass
class MatchResult:
    """Everything :func:`match_dataset` produces (ids sorted; plans indexed by the sorted id lists)."""

    method: str
    config: dict[str, Any]
    source_image_ids: tuple[str, ...]
    target_image_ids: tuple[str, ...]
    image_plan: np.ndarray | None
    image_report: FGWReport | None
    top_images: np.ndarray | None
    """``(Ns_img, k)`` positions in ``target_image_ids``, best first."""
    top_image_scores: np.ndarray | None
    patch_graph: PairGraph
    patch_report: BatchOTReport | None
    seconds: dict[str, float] = field(default_factory=dict)

    @property
    def converged(self) -> bool:
        ok = self.image_report is None or self.image_report.converged
        return ok and (self.patch_report is None or self.patch_report.all_converged)

    def image_graph(self) -> PairGraph | None:
        """The top-k image lists as a graph (weights: plan entries renormalised per source image)."""
        if self.top_images is None:
            return None
        scores = np.maximum(self.top_image_scores, 1e-300)
        return PairGraph.from_rows(self.source_image_ids, self.target_image_ids, self.top_images, scores,
                                   {"method": self.method, "level": "image"})

    def summary(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "config": self.config,
            "converged": self.converged,
            "source_images": len(self.source_image_ids),
            "target_images": len(self.target_image_ids),
            "image_report": None if self.image_report is None else self.image_report.to_dict(),
            "patch_report": None if self.patch_report is None else self.patch_report.summary(),
            "patch_graph_stats": graph_stats(self.patch_graph),
            "seconds": self.seconds,
        }

    def save(self, folder: str | Path) -> Path:
        """Write ``patch_graph.npz``, ``image_graph.npz`` + ``image_plan.npy`` (when present) and
        ``match_report.json``, each atomically."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        self.patch_graph.save(folder / "patch_graph.npz")
        ig = self.image_graph()
        if ig is not None:
            ig.save(folder / "image_graph.npz")
        if self.image_plan is not None:
            atomic_save_npy(folder / "image_plan.npy", self.image_plan)
        atomic_write_json(folder / "match_report.json", _jsonable(self.summary()))
        return folder


def match_dataset(source_images: DescriptorSet, target_images: DescriptorSet, source_patches: DescriptorSet,
                  target_patches: DescriptorSet, cfg: MatchConfig | None = None, *, seed: int = 0,
                  device: Any = None, dtype: torch.dtype | None = None, warn: bool = True) -> MatchResult:
    """Section 4.2 end to end, dispatching on ``cfg.method``.

    * ``ot``: entropic FGW image plan (uniform marginals; ``cfg.image_epsilon`` and ``cfg.image_tau``
      soften or relax it), top ``cfg.top_images`` per source image, patch-level entropic OT combined
      with the image plan as ``cfg.image_level`` says (``paper``: ``w_st ∝ P_patch P_image``), top
      ``cfg.top_patches``;
    * ``unbalanced``: the same with the unbalanced relaxation (``cfg.unbalanced_tau``) at both levels;
    * ``knn``: image top-k by descriptor distance; patches: ``cfg.knn_scope="global"`` (default) the
      ``top_patches`` nearest of all target patches, or ``"top_images"`` the nearest among the patches
      of the FGW top images (the ablation that isolates the patch-level OT); weights by
      ``cfg.knn_weighting``;
    * ``random``: ``top_patches`` uniformly random target patches per source patch (``seed``).

    Inputs are sorted by id first, so results per id do not depend on input order. ``device=None`` uses
    the features' device (CPU for numpy); ``"auto"`` picks CUDA when visible. ``cfg.max_iter``/``cfg.tol``
    bound every Sinkhorn solve, ``cfg.outer_max_iter``/``cfg.outer_tol`` the FGW loop; ``cfg.overrelax``
    (default 1, plain Sinkhorn) applies to the image-level inner solves and the patch level, and
    ``cfg.max_chunk_bytes`` bounds a patch-level batch. Non-converged solves warn (``warn=True``) and
    show in ``MatchResult.converged`` and the reports.
    """
    cfg = cfg or MatchConfig()
    if cfg.method not in METHODS:
        raise ValueError(f"unknown matching method {cfg.method!r}; expected one of {', '.join(METHODS)}")
    if cfg.knn_scope not in KNN_SCOPES:
        raise ValueError(f"knn_scope must be 'global' or 'top_images', got {cfg.knn_scope!r}")
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    t0 = time.perf_counter()
    si, ti, sp, tp, src_parent, tgt_parent = _sorted_inputs(source_images, target_images, source_patches,
                                                            target_patches)
    conf = dataclasses.asdict(cfg)
    seconds: dict[str, float] = {}
    unb = cfg.unbalanced_tau if cfg.method == "unbalanced" else None
    common = dict(device=device, dtype=dtype)

    if cfg.method == "random":
        graph = random_graph(sp.ids, tp.ids, cfg.top_patches, seed=seed)
        seconds["total"] = time.perf_counter() - t0
        return MatchResult(cfg.method, conf, si.ids, ti.ids, None, None, None, None, graph, None, seconds)

    t1 = time.perf_counter()
    if cfg.method in ("ot", "unbalanced") or cfg.knn_scope == "top_images":
        plan_np, report, top, scores = _fgw_top_images(si, ti, cfg, unb, warn, common)
    else:
        plan_np, report = None, None
        top, scores = _nearest_images(si, ti, cfg.top_images, device, dtype)
    seconds["image"] = time.perf_counter() - t1

    t2 = time.perf_counter()
    graph, pm_report = _patch_graph(sp, tp, src_parent, tgt_parent, plan_np, top, cfg, unb, warn, common, seconds)
    graph.meta.update(_graph_meta(cfg, unb))
    seconds["patch"] = time.perf_counter() - t2
    seconds["total"] = time.perf_counter() - t0
    return MatchResult(cfg.method, conf, si.ids, ti.ids, plan_np, report, top, scores, graph, pm_report, seconds)


def _sorted_inputs(*sets: DescriptorSet) -> tuple:
    """``(si, ti, sp, tp, src_parent, tgt_parent)``: the four sets sorted by id, and each patch's image position."""
    si, ti, sp, tp = (d.sorted() for d in sets)
    for name, p, img in (("source", sp, si), ("target", tp, ti)):
        if p.parents is None:
            raise ValueError(f"{name} patches need parent image ids")
        known = set(img.ids)
        unknown = [q for q in p.parents if q not in known]
        if unknown:
            raise ValueError(f"{name} patch parent {unknown[0]!r} is not a {name} image id")
    s_pos = {s: i for i, s in enumerate(si.ids)}
    t_pos = {t: j for j, t in enumerate(ti.ids)}
    src_parent = np.array([s_pos[q] for q in sp.parents], dtype=np.int64)
    tgt_parent = np.array([t_pos[q] for q in tp.parents], dtype=np.int64)
    return si, ti, sp, tp, src_parent, tgt_parent


def _fgw_top_images(si: DescriptorSet, ti: DescriptorSet, cfg: MatchConfig, unb: float | None, warn: bool,
                    common: dict[str, Any]) -> tuple[np.ndarray, FGWReport, np.ndarray, np.ndarray]:
    """The image-level FGW plan and each source image's top ``cfg.top_images``: ``(plan, report, top, scores)``."""
    image_eps = cfg.epsilon if cfg.image_epsilon is None else cfg.image_epsilon
    image_tau = cfg.image_tau if cfg.image_tau is not None else unb
    plan, report = fused_gw_plan(si.features, ti.features, alpha=cfg.alpha, epsilon_rel=image_eps,
                                 unbalanced_tau=image_tau, max_iter=cfg.max_iter, tol=cfg.tol,
                                 outer_max_iter=cfg.outer_max_iter, outer_tol=cfg.outer_tol,
                                 overrelax=cfg.overrelax, warn=warn, **common)
    plan_np = _numpy(plan)
    top, scores = top_k_targets(plan_np, cfg.top_images)
    return plan_np, report, top, scores


def _nearest_images(si: DescriptorSet, ti: DescriptorSet, k: int, device: Any,
                    dtype: torch.dtype | None) -> tuple[np.ndarray, np.ndarray]:
    """Each source image's ``k`` nearest target images by descriptor distance: ``(top, -distances)``."""
    dev = device if device is not None else _device_of(si.features)
    d = _numpy(sq_distances(_tensor(si.features, dev, dtype), _tensor(ti.features, dev, dtype)))
    top = np.argsort(d, axis=1, kind="stable")[:, : min(k, d.shape[1])].astype(np.int64)
    return top, -np.take_along_axis(d, top, 1)


def _patch_graph(sp: DescriptorSet, tp: DescriptorSet, src_parent: np.ndarray, tgt_parent: np.ndarray,
                 plan_np: np.ndarray | None, top: np.ndarray, cfg: MatchConfig, unb: float | None, warn: bool,
                 common: dict[str, Any], seconds: dict[str, float]) -> tuple[PairGraph, BatchOTReport | None]:
    """The patch level: global kNN, or :func:`~isp_support.pairing.patches.patch_plans` over the top images
    (adding its timings to ``seconds``); ``(graph, patch report)``."""
    if cfg.method == "knn" and cfg.knn_scope == "global":
        graph = knn_graph(sp.features, tp.features, sp.ids, tp.ids, cfg.top_patches, weighting=cfg.knn_weighting,
                          temperature_rel=cfg.epsilon, **common)
        return graph, None
    pm = patch_plans(sp.features, src_parent, tp.features, tgt_parent, plan_np, top,
                     top_patches=cfg.top_patches, epsilon_rel=cfg.epsilon, unbalanced_tau=unb,
                     max_iter=cfg.max_iter, tol=cfg.tol, mode="knn" if cfg.method == "knn" else "ot",
                     image_level=cfg.image_level, image_gamma=cfg.image_gamma, knn_weighting=cfg.knn_weighting,
                     max_chunk_bytes=cfg.max_chunk_bytes, overrelax=cfg.overrelax, warn=warn, **common)
    seconds.update({f"patch_{k}": v for k, v in pm.seconds.items() if k != "total"})
    return PairGraph(sp.ids, tp.ids, pm.indptr, pm.indices, pm.weights), pm.report


def _graph_meta(cfg: MatchConfig, unb: float | None) -> dict[str, Any]:
    """What :func:`match_dataset` records in the patch graph's ``meta``."""
    return {"method": cfg.method, "level": "patch", "top_patches": cfg.top_patches,
            "top_images": cfg.top_images, "epsilon": cfg.epsilon, "alpha": cfg.alpha,
            "unbalanced_tau": unb, "knn_scope": cfg.knn_scope if cfg.method == "knn" else None,
            **({"image_level": cfg.image_level, "image_gamma": cfg.image_gamma,
                "image_epsilon": cfg.image_epsilon, "image_tau": cfg.image_tau}
               if cfg.method in ("ot", "unbalanced") else {})}


def descriptor_sets(items: dict[str, Sequence[Any]], desc: dict[str, Any],
                    parents: dict[str, str]) -> tuple[DescriptorSet, DescriptorSet, DescriptorSet, DescriptorSet]:
    """``(source_images, target_images, source_patches, target_patches)`` for :func:`match_dataset`.

    ``items``/``desc``: the item lists (anything with an ``id``) and descriptor arrays of
    :func:`isp_support.embed.descriptors.matching_items` / :func:`~isp_support.embed.descriptors.matching_descriptors`;
    ``parents[patch_id]`` is the scene of a patch.
    """
    names = ("source_images", "target_images", "source_patches", "target_patches")
    return tuple(DescriptorSet(tuple(it.id for it in items[k]), desc[k],
                               tuple(parents[it.id] for it in items[k]) if k.endswith("patches") else None)
                 for k in names)


# --- synthetic inputs (tests, benchmarks) --------------------------------------------------------------------------

def synthetic_match_inputs(n_source_images: int, n_target_images: int, patches_per_image: int | tuple[int, int] = 35,
                           image_dim: int = 2560, patch_dim: int = 768, n_classes: int = 8, parts_per_class: int = 6,
                           domain_shift: float = 0.5, noise: float = 0.3, seed: int = 0, dtype: Any = np.float32
                           ) -> tuple[DescriptorSet, DescriptorSet, DescriptorSet, DescriptorSet]:
    """Clustered random descriptors: ``(source_images, target_images, source_patches, target_patches)``.

    Each image belongs to one of ``n_classes`` scene classes; its descriptor is the class centre plus
    noise. Each patch shows one of its class's ``parts_per_class`` parts: ``0.6 x`` class patch centre
    ``+ 0.8 x`` part centre ``+`` noise (unit-norm centres, noise of norm about ``noise``), so patch costs
    have the two-level structure real semantic features have. Targets get a fixed domain shift of norm
    about ``domain_shift`` at both levels. ``patches_per_image`` is a count or an inclusive ``(lo, hi)``
    range. Ids: ``src0003`` / ``tgt0003`` for images, ``src0003_12`` for patches.
    """
    rng = np.random.default_rng(seed)

    def unit(*shape: int) -> np.ndarray:
        return rng.standard_normal(shape) / math.sqrt(shape[-1])

    img_centres = unit(n_classes, image_dim)
    patch_centres = unit(n_classes, patch_dim)
    part_centres = unit(n_classes, parts_per_class, patch_dim)
    shifts = {"src": (np.zeros(image_dim), np.zeros(patch_dim)),
              "tgt": (domain_shift * unit(image_dim), domain_shift * unit(patch_dim))}

    def side(prefix: str, n: int) -> tuple[DescriptorSet, DescriptorSet]:
        shift_i, shift_p = shifts[prefix]
        cls = rng.integers(0, n_classes, n)
        feats = img_centres[cls] + shift_i + noise * unit(n, image_dim)
        ids = [f"{prefix}{i:04d}" for i in range(n)]
        if isinstance(patches_per_image, tuple):
            counts = rng.integers(patches_per_image[0], patches_per_image[1] + 1, n)
        else:
            counts = np.full(n, int(patches_per_image))
        parent = np.repeat(np.arange(n), counts)
        part = rng.integers(0, parts_per_class, parent.size)
        pf = (0.6 * patch_centres[cls[parent]] + 0.8 * part_centres[cls[parent], part] + shift_p
              + noise * unit(parent.size, patch_dim))
        pids = [f"{ids[i]}_{k}" for i in range(n) for k in range(counts[i])]
        return (DescriptorSet(tuple(ids), feats.astype(dtype)),
                DescriptorSet(tuple(pids), pf.astype(dtype), tuple(ids[i] for i in parent)))

    si, sp = side("src", n_source_images)
    ti, tp = side("tgt", n_target_images)
    return si, ti, sp, tp
