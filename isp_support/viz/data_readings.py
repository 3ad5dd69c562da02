"""Notebook 01's generated prose: what a run's data is, and what its RAW planes show (words chosen by the numbers).

* :func:`data_description`: the data's origin (the demo builder's manifest, or none: the challenge's own patches),
  how many RAW patches have ground truth, the patch size against the paper's and the backbones against the
  paper's, as three sentences, so 01's opening is true on every profile;
* :func:`channel_reading`: the green planes against red and blue, and whether the unbalanced image has a cast.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .. import paper

BACKBONES = {"dinov2_vits14": "DINOv2 ViT-S/14", "vgg19": "VGG19", "vgg16_offline": "an ImageNet VGG16"}
"""How the prose names each backbone choice of the config."""


def _backbone(chosen: str, field: str, paper_name: str) -> str:
    name = BACKBONES.get(chosen, chosen)
    same = chosen == paper.SETTINGS[field]
    return f"{name}, as the paper does" if same else f"{name} in place of the paper's {paper_name}"


def data_description(profile: str, manifest: Mapping[str, Any], n_raw: int, n_gt: int, side: int,
                     semantic: str, style: str) -> list[str]:
    """Three sentences: the data's origin and ground truth, its patch size, its backbones (``side``: the RAW
    patch's side in packed pixels; ``manifest``: the builder's ``manifest.json``, empty for other data)."""
    if "unprocessing" in manifest:
        photos = len({s.get("photo_id") for s in manifest.get("scenes", [])})
        sources = ", ".join(manifest.get("config", {}).get("photo_sources", []))
        origin = (f"**synthetic**: {photos} real photos ({sources}) cut into scenes and turned into packed RAW by "
                  f"unprocessing them ({str(manifest['unprocessing']).split(',')[0]})")
    else:
        origin = "**not built by this package** (no builder manifest): the challenge's own patches, or a copy of them"
    truth = (f"all {n_raw} RAW patches have their ground-truth rendering" if n_gt >= n_raw > 0 else
             f"{n_gt} of {n_raw} RAW patches have a ground-truth rendering" if n_gt else
             "no RAW patch has a ground-truth rendering: results are judged without a reference")
    paper_side = paper.SETTINGS["dataset.raw_patch"]
    size = ("the paper's size" if side == paper_side else
            f"against the paper's {paper_side} px ({2 * paper_side} px RGB)")
    return [f"This run (`{profile}` profile) reads data that is {origin}; {truth}.",
            f"Patches are {side} px packed RAW ({2 * side} px RGB), {size}.",
            f"Matching describes images with {_backbone(semantic, 'embed.semantic_backbone', 'DINOv2 ViT-S/14')}, "
            f"and their style (Gram matrices, also the Gram loss of training) with "
            f"{_backbone(style, 'embed.style_backbone', 'VGG19')}."]


def channel_reading(plane_means: Mapping[str, float], n_patches: int, white_level: float,
                    dominant: float = 1.2) -> str:
    """The green planes' mean against red and blue; green *dominates* a plane when it is ``dominant`` times it."""
    green = (plane_means["Gr"] + plane_means["Gb"]) / 2
    to_red, to_blue = green / max(plane_means["R"], 1e-9), green / max(plane_means["B"], 1e-9)
    above = [name for name, ratio in (("red", to_red), ("blue", to_blue)) if ratio > dominant]
    cast = ("the greens dominate, so the unbalanced image has a green cast" if len(above) == 2 else
            f"green clearly outweighs {above[0]} only, so the cast leans away from {above[0]}" if above else
            "no plane clearly dominates, so the unbalanced image has little green cast")
    return (f"Over these {n_patches} patches the green planes average {green:.0f} (of {white_level:.0f}), "
            f"{to_red:.2f} times the red plane and {to_blue:.2f} times the blue: {cast}.")
