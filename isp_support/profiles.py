"""The three profiles: what each changes in the configuration's defaults.

* ``tiny``: CI. Every notebook in a few minutes on 2 CPU cores.
* ``demo``: the README's main command. The whole series in under an hour
  on 2 CPU cores, with results that mean something.
* ``full``: the paper's settings, for the real NTIRE 2026 data on a GPU node.

A profile maps top-level :class:`~isp_support.config.Config` fields to their values and section names
(``"train"``, ``"embed"`` ...) to the section fields it changes; every other field keeps its dataclass
default. :func:`isp_support.config.profile_config` builds the config.
"""

from __future__ import annotations

from typing import Any

PROFILES = ("tiny", "demo", "full")

PROFILE_DEFAULTS: dict[str, dict[str, Any]] = {
    "tiny": {
        "data_dir": "data/tiny",
        "run_dir": "runs/tiny",
        "embed": {"semantic_backbone": "vgg16_offline", "style_backbone": "vgg16_offline", "image_side": 112,
                  "patch_side": 56, "style_dim": 256},
        "dataset": {
            "raw_patch": 16,
            "grids": ((2, 3), (3, 2), (2, 2), (1, 3), (3, 1)),
            "photo_sources": ("wheels",),
            "split_fractions": (0.45, 0.33, 0.22),
            "max_photos": 9,
        },
        "train": {"epochs": 2, "batch_size": 4, "lr": 1e-3, "val_max_patches": 16, "target_ref_patches": 16,
                  "samples": 2},
        "stage2": {"epochs": 1, "d_features": 16},
        "evaluate": {"seeds": (1,), "tile": 64, "timing_side": 256, "timing_repeats": 2, "bootstrap": 500},
    },
    "demo": {
        "data_dir": "data/demo",
        "run_dir": "runs/demo",
        "dataset": {"raw_patch": 48, "target_crops_per_photo": 3},
        "embed": {"semantic_backbone": "vgg16_offline", "style_backbone": "vgg16_offline", "image_side": 224,
                  "patch_side": 64},
        "train": {"epochs": 8, "batch_size": 8, "lr": 1e-3, "crop": 48, "schedule": "cosine", "ema": 0.98,
                  "gram_layers": ("relu1_2", "relu2_2")},  # chosen on the validation split: docs/measurements.md
        "stage2": {"epochs": 3, "lr": 1e-3, "d_lr": 2e-4, "d_features": 32},
        "evaluate": {"seeds": (1, 2)},
    },
    "full": {
        "data_dir": "data/ntire2026",
        "run_dir": "runs/full",
        "device": "cuda",
        "dataset": {"raw_patch": 256},
        "train": {"workers": 4},  # a GPU waits on the loader otherwise (benchmarks/estimate_gpu.py, bench_input.py)
    },
}
"""Each profile's changes to the :class:`~isp_support.config.Config` defaults, by field and section."""
