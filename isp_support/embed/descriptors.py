"""Descriptors for matching (paper section 4.2).

**Image level**: three blocks, each L2-normalised, then scaled by the square
root of its weight (``EmbedConfig.weight_*``) so that squared distances add up
with those weights:

* *semantic*: for DINOv2, the L2-normalised [CLS] token concatenated with the
  mean of the L2-normalised patch tokens of the last block (the paper's
  descriptor; the authors' code returned the CLS token only). For a CNN
  backbone, the analogue on its deepest layer: the normalised global average
  feature concatenated with the mean of the normalised local features.
* *style*: Gram matrices of the style layers (VGG19 relu1_1..relu5_1, or the
  offline VGG16's relu1_2..relu5_3), upper triangles, each layer L2-normalised
  (so no layer dominates: the authors concatenated ~306k values unweighted).
  The concatenation is compressed to ``style_dim`` values with a fixed count
  sketch (each entry hashed to one output with a random sign, seed 0), which
  preserves inner products in expectation at O(input) memory.
* *colour*: square roots of the 64-bin Y and 32x32 UV soft histograms
  (:mod:`isp_support.colour`), so Euclidean distance is the Hellinger distance.

Full images keep their aspect ratio: the longer side is resized to
``image_side`` and both sides rounded to a multiple of 14 (DINOv2's patch).
Images of equal size are batched together.

**Patch level**: the semantic block only, patches resized to ``patch_side``.

:class:`FeatureCache` stores features in chunks written atomically, keyed by
item id and a content key (input checksum plus settings), so extraction
resumes after a kill and redoes only changed items.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from ..artifacts import atomic_save_npy, atomic_write_json
from ..colour import uv_histogram, y_histogram
from ..config_rules import CASTS
from ..runs import RunLayout

SKETCH_SEED = 0
SIZE_MULTIPLE = 14
COLOUR_DIM = 64 + 32 * 32
"""Length of the colour block: Y histogram (64 bins) and UV histogram (32 x 32)."""


MIN_SIDE = 56
"""Shortest side fed to a backbone: a VGG needs at least 32 px for its deepest layers, so a very
elongated image (a 1 x 42 strip) gets a longer side beyond ``long_side`` instead of a 14 px height."""


def fitted_size(height: int, width: int, long_side: int, multiple: int = SIZE_MULTIPLE,
                min_side: int = MIN_SIDE) -> tuple[int, int]:
    """``(h, w)`` with the longer side near ``long_side`` (the shorter at least ``min_side``), aspect kept,
    both multiples of ``multiple``."""
    scale = max(long_side / max(height, width), min_side / min(height, width))
    return (max(multiple, int(round(height * scale / multiple)) * multiple),
            max(multiple, int(round(width * scale / multiple)) * multiple))


def resize(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Antialiased bilinear resize of ``(B, 3, H, W)``."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x, size=size, mode="bilinear", antialias=True, align_corners=False).clamp(0, 1)


def semantic_features(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``(B, 2D)``: normalised global token/feature and mean of normalised local tokens/features."""
    if hasattr(model, "tokens"):
        cls, patch_tokens = model.tokens(x)
        local = F.normalize(patch_tokens, dim=-1).mean(dim=1)
        return torch.cat([F.normalize(cls, dim=-1), local], dim=1)
    layer = model.style_layers[-1]
    fmap = model.features_at(x, [layer])[layer]
    return torch.cat([F.normalize(fmap.mean(dim=(2, 3)), dim=1), F.normalize(fmap, dim=1).mean(dim=(2, 3))], dim=1)


class CountSketch:
    """A fixed random projection ``R^n -> R^dim``: entry ``i`` goes to bucket ``h(i)`` with sign ``s(i)``."""

    def __init__(self, n_in: int, dim: int, seed: int = SKETCH_SEED):
        gen = torch.Generator().manual_seed(seed)
        self.bucket = torch.randint(0, dim, (n_in,), generator=gen)
        self.sign = torch.randint(0, 2, (n_in,), generator=gen).float() * 2 - 1
        self.dim = dim

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        out = x.new_zeros(x.shape[0], self.dim)
        return out.index_add_(1, self.bucket.to(x.device), x * self.sign.to(x.device, x.dtype))


def gram_features(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Concatenated, per-layer normalised upper triangles of the style layers' Gram matrices."""
    parts = []
    for fmap in model.features_at(x, list(model.style_layers)).values():
        flat = fmap.flatten(2)
        gram = flat @ flat.transpose(1, 2) / flat.shape[-1]
        iu = torch.triu_indices(gram.shape[-1], gram.shape[-1], device=gram.device)
        parts.append(F.normalize(gram[:, iu[0], iu[1]], dim=1))
    return torch.cat(parts, dim=1)


def cast_statistics(image: np.ndarray) -> np.ndarray:
    """``(2, 3)``: per-channel mean and standard deviation of an ``(H, W, 3)`` image."""
    flat = image.reshape(-1, 3).astype(np.float64)
    return np.stack([flat.mean(0), flat.std(0)])


def normalise_cast(x: np.ndarray, stats: np.ndarray, mode: str) -> np.ndarray:
    """Remove an image's colour cast from ``x`` (``(H, W, 3)`` in [0, 1]) given that image's :func:`cast_statistics`.

    ``grey_world``: each channel scaled so its image mean equals the image's mean over all channels (the
    grey-world white balance). ``channel_norm``: each channel standardised with the image's statistics
    and mapped to mean 0.45 and spread 0.2, which also evens out contrast between channels. ``none``:
    unchanged. The statistics are those of the whole image, so its patches get the same correction and
    keep their colour relative to the rest of the scene.
    """
    if mode == "none":
        return x
    mean, sd = stats[0], stats[1]
    if mode == "grey_world":
        out = x * (mean.mean() / np.maximum(mean, 1e-6))
    elif mode == "channel_norm":
        out = (x - mean) / np.maximum(sd, 1e-6) * 0.2 + 0.45
    else:
        raise ValueError(f"unknown colour-cast normalisation {mode!r}; expected one of {', '.join(CASTS)}")
    return np.clip(out, 0.0, 1.0).astype(np.float32)


def cast_normalised_items(items: dict[str, list[Item]], scene_of: dict[str, str], mode: str) -> dict[str, list[Item]]:
    """``items`` (of :func:`matching_items`) whose loaders remove each scene's colour cast (``mode``).

    The statistics come from each full image (``*_images`` items, ids are scene names); a patch uses its
    scene's (``scene_of[patch_id]``). Content keys gain the mode, so cached features never mix.
    """
    if mode == "none":
        return items
    if mode not in CASTS:
        raise ValueError(f"unknown colour-cast normalisation {mode!r}; expected one of {', '.join(CASTS)}")
    stats = {it.id: cast_statistics(it.load()) for side in ("source", "target") for it in items[f"{side}_images"]}

    def wrap(it: Item, scene: str) -> Item:
        return Item(it.id, f"{it.key}|cast={mode}", it.shape,
                    lambda: normalise_cast(it.load(), stats[scene], mode))

    return {name: [wrap(it, it.id if name.endswith("images") else scene_of[it.id]) for it in members]
            for name, members in items.items()}


def colour_features(x: torch.Tensor) -> torch.Tensor:
    """Hellinger embedding of the Y (64 bins) and UV (32 x 32) soft histograms."""
    return torch.cat([y_histogram(x, 64).sqrt(), uv_histogram(x, 32).flatten(1).sqrt()], dim=1)


def patch_descriptor(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The patch-level descriptor of a batch: its semantic block, L2-normalised (the paper's patch level)."""
    return F.normalize(semantic_features(model, x), dim=1)


@dataclass
class ImageDescriptor:
    """Callable turning a batch of full images into the fused image-level descriptor."""

    semantic_model: torch.nn.Module
    style_model: torch.nn.Module
    weights: tuple[float, float, float]
    style_dim: int
    _sketch: CountSketch | None = None

    def blocks(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        gram = gram_features(self.style_model, x)
        if self._sketch is None or self._sketch.bucket.numel() != gram.shape[1]:
            self._sketch = CountSketch(gram.shape[1], self.style_dim)
        return {"semantic": F.normalize(semantic_features(self.semantic_model, x), dim=1),
                "style": F.normalize(self._sketch(gram), dim=1),
                "colour": F.normalize(colour_features(x), dim=1)}

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        blocks = self.blocks(x)
        return torch.cat([math.sqrt(w) * b for w, b in zip(self.weights, blocks.values())], dim=1)

    def split(self, fused: np.ndarray | torch.Tensor) -> dict[str, np.ndarray | torch.Tensor]:
        """The normalised blocks back out of fused descriptors ``(N, D)`` (their weights undone)."""
        colour = COLOUR_DIM
        semantic = fused.shape[1] - self.style_dim - colour
        edges = {"semantic": (0, semantic), "style": (semantic, semantic + self.style_dim),
                 "colour": (semantic + self.style_dim, fused.shape[1])}
        return {name: fused[:, a:b] / math.sqrt(w) for (name, (a, b)), w in zip(edges.items(), self.weights)}


class FeatureCache:
    """Feature vectors of many items on disk, resumable.

    ``<folder>/chunk-<hash>.npy`` holds one batch's features; ``index.json``
    maps each item id to its chunk, row and content key. Both are written
    atomically, the index after its chunk, so a killed run loses at most the
    batch in flight.
    """

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        self.index_path = self.folder / "index.json"
        self.index: dict[str, list] = {}
        if self.index_path.is_file():
            try:
                self.index = json.loads(self.index_path.read_text())["items"]
            except (ValueError, KeyError):
                self.index = {}  # an unreadable index only costs recomputation

    def missing(self, ids: Sequence[str], keys: Sequence[str]) -> list[int]:
        """Positions of the items whose cached features are absent or stale."""
        return [i for i, (item, key) in enumerate(zip(ids, keys))
                if self.index.get(item, [None, None, None])[2] != key
                or not (self.folder / self.index[item][0]).is_file()]

    def add(self, ids: Sequence[str], keys: Sequence[str], features: np.ndarray) -> None:
        name = "chunk-" + hashlib.sha256("\n".join(f"{i}:{k}" for i, k in zip(ids, keys)).encode()).hexdigest()[:20]
        atomic_save_npy(self.folder / f"{name}.npy", features.astype(np.float32))
        for row, (item, key) in enumerate(zip(ids, keys)):
            self.index[item] = [f"{name}.npy", row, key]
        atomic_write_json(self.index_path, {"items": self.index})

    def load(self, ids: Sequence[str]) -> np.ndarray:
        chunks: dict[str, np.ndarray] = {}
        rows = []
        for item in ids:
            chunk, row, _ = self.index[item]
            if chunk not in chunks:
                chunks[chunk] = np.load(self.folder / chunk)
            rows.append(chunks[chunk][row])
        return np.stack(rows)


@dataclass(frozen=True)
class Item:
    """One image or patch to describe: a stable id, a content key and how to load it as ``(H, W, 3)`` in [0, 1]."""

    id: str
    key: str
    shape: tuple[int, int]
    load: Callable[[], np.ndarray]


def extract(items: Sequence[Item], describe: Callable[[torch.Tensor], torch.Tensor], cache: FeatureCache,
            settings_key: str, size: Callable[[tuple[int, int]], tuple[int, int]], batch_size: int,
            device: str, desc: str = "features", progress: bool = True) -> np.ndarray:
    """Features of every item (cached ones reused), in the items' order.

    Items are grouped by their resized shape and described in batches of
    ``batch_size``; each batch is written to ``cache`` as soon as it is done.
    """
    keys = [hashlib.sha256(f"{it.key}|{settings_key}".encode()).hexdigest()[:32] for it in items]
    todo = cache.missing([it.id for it in items], keys)
    groups: dict[tuple[int, int], list[int]] = defaultdict(list)
    for i in todo:
        groups[size(items[i].shape)].append(i)
    with tqdm(total=len(items), initial=len(items) - len(todo), desc=desc, disable=not progress) as bar:
        for shape, members in sorted(groups.items()):
            for start in range(0, len(members), batch_size):
                batch = members[start:start + batch_size]
                # Items of one resized shape may differ in size on disk (grids of equal aspect): resize
                # each before stacking.
                x = torch.cat([resize(torch.from_numpy(np.ascontiguousarray(items[i].load())).permute(2, 0, 1)[None]
                                      .to(device, torch.float32), shape) for i in batch])
                with torch.inference_mode():
                    feats = describe(x).float().cpu().numpy()
                cache.add([items[i].id for i in batch], [keys[i] for i in batch], feats)
                bar.update(len(batch))
    return cache.load([it.id for it in items])


def _npy_shape(path: Path) -> tuple[int, ...]:
    with open(path, "rb") as fh:
        major, _ = np.lib.format.read_magic(fh)
        read = np.lib.format.read_array_header_1_0 if major == 1 else np.lib.format.read_array_header_2_0
        return read(fh)[0]


def _png_or_jpeg(path: Path) -> Callable[[], np.ndarray]:
    from ..io import read_rgb_tensor

    return lambda: read_rgb_tensor(path).permute(1, 2, 0).numpy()


def matching_items(dataset, run_dir: str | Path, split: str = "train") -> dict[str, list[Item]]:
    """What 03_embed_match describes, from the files 01 and 02 wrote under ``run_dir``.

    ``source_images`` / ``target_images``: stitched full images (ids are scene names);
    ``source_patches``: pre-processed RAW patches; ``target_patches``: target JPEG
    patches (ids ``<scene>_<idx>``). Content keys are the files' sha256.
    """
    from PIL import Image

    from ..artifacts import sha256_file
    from ..pipeline.preprocess import MissingPreprocessedError, output_path, require_current

    run_dir = Path(run_dir)
    layout = RunLayout(run_dir)
    part = dataset[split]
    stitched = layout.stitched / split
    missing = [p for p in (stitched / "raw", stitched / "jpeg", layout.preprocessed / split) if not p.is_dir()]
    if missing:
        raise MissingPreprocessedError(missing[0], f"missing: run 01_preprocess and 02_stitch with RUN_DIR={run_dir}")
    require_current(layout.preprocessed, split, part.raw_patches())

    def npy_item(item_id: str, path: Path, channels_first: bool) -> Item:
        shape = _npy_shape(path)
        hw = shape[1:3] if channels_first else shape[:2]
        load = (lambda p=path: np.load(p).astype(np.float32).transpose(1, 2, 0)) if channels_first else \
            (lambda p=path: np.load(p).astype(np.float32))
        return Item(item_id, sha256_file(path), tuple(int(v) for v in hw), load)

    def image_item(item_id: str, path: Path) -> Item:
        with Image.open(path) as img:
            hw = (img.height, img.width)
        return Item(item_id, sha256_file(path), hw, _png_or_jpeg(path))

    return {
        "source_images": [npy_item(s, stitched / "raw" / f"{s}.npy", False) for s in part.raws],
        "target_images": [image_item(s, stitched / "jpeg" / f"{s}.png") for s in part.jpegs],
        "source_patches": [npy_item(p.id, output_path(layout.preprocessed, split, p.id), True)
                           for p in part.raw_patches()],
        "target_patches": [image_item(p.id, p.path) for p in part.jpeg_patches()],
    }


def backbones_key(semantic_info, style_info) -> str:
    """The feature-cache key naming a backbone pair (``weights_key`` of :func:`matching_descriptors`): their sha256."""
    return f"{semantic_info.sha256}+{style_info.sha256}"


def matching_descriptors(items: dict[str, list[Item]], scene_of: dict[str, str], semantic_net: torch.nn.Module,
                         style_net: torch.nn.Module, embed, cache_root: str | Path, weights_key: str, device: str,
                         progress: bool = True) -> tuple[dict[str, np.ndarray], ImageDescriptor]:
    """The four descriptor sets of notebook 03 (``items`` from :func:`matching_items`), cached and resumable.

    Images get the fused descriptor at ``embed.image_side`` (aspect kept), patches the normalised semantic
    block at ``embed.patch_side`` (and, with ``embed.patch_colour_weight > 0``, the colour block with that
    weight: the paper's patch level is semantic only); with ``embed.cast != "none"`` every image and patch is first corrected
    by its scene's colour-cast statistics (:func:`cast_normalised_items`; ``scene_of`` maps patch ids to
    scenes). Each cast has its own cache folder under ``cache_root``, so comparing casts does not evict
    the other's features. ``weights_key`` names the backbone weights (their checksums).
    """
    describe_image = ImageDescriptor(semantic_net, style_net, (embed.weight_semantic, embed.weight_style,
                                     embed.weight_colour), embed.style_dim)
    describers = {"images": describe_image,
                  "patches": functools.partial(patch_descriptor, semantic_net),
                  "colour": lambda x: F.normalize(colour_features(x), dim=1)}
    # The colour weight only scales a block appended afterwards: it stays out of the cache key.
    fields = sorted(k for k in embed.__dataclass_fields__ if k != "patch_colour_weight")
    settings = json.dumps({"embed": {k: getattr(embed, k) for k in fields}, "weights": weights_key}, sort_keys=True)
    sizes = {"images": lambda hw: fitted_size(*hw, embed.image_side),
             "patches": lambda hw: (embed.patch_side, embed.patch_side)}
    out = {}
    for name, members in cast_normalised_items(items, scene_of, embed.cast).items():
        level = name.split("_")[1]
        kinds = ["images"] if level == "images" else ["patches"] + (["colour"] if embed.patch_colour_weight else [])
        blocks = [extract(members, describers[kind], FeatureCache(Path(cache_root) / embed.cast / f"{name}_{kind}"),
                          settings, sizes[level], embed.batch_size, device,
                          desc=f"{name.replace('_', ' ')} {kind} ({embed.cast})", progress=progress)
                  for kind in kinds]
        if len(blocks) == 2:
            blocks[1] = blocks[1] * math.sqrt(embed.patch_colour_weight)
        out[name] = np.concatenate(blocks, axis=1)
    return out, describe_image
