"""Unpaired validation figures: colour distance and structure fidelity."""

import pytest
import torch
import torch.nn.functional as F
from kornia.color import rgb_to_yuv
from skimage.metrics import peak_signal_noise_ratio

from isp_support.metrics import SlicedReference, colour_distance, psnr, ssim_luma, structure_fidelity, yuv_pixels


def smooth_images(n=3, size=32, seed=0):
    gen = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 3, size // 4, size // 4, generator=gen)
    return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False) * 0.6 + 0.2


def test_colour_distance_is_zero_for_the_same_set_and_measures_a_brightness_shift():
    x = smooth_images()
    assert colour_distance(x, x) == pytest.approx(0.0, abs=1e-7)
    pixels = yuv_pixels(x, 10 ** 9)
    ref = SlicedReference(pixels)
    assert ref.distance(pixels) == pytest.approx(0.0, abs=1e-7)
    # Adding c to R, G and B adds c to Y and nothing to U, V: every projection on direction d shifts by c * d_y.
    c = 0.1
    shifted = ref.distance(yuv_pixels(x + c, 10 ** 9))
    assert shifted == pytest.approx(c * float(ref.directions[:, 0].abs().mean()), rel=1e-4)


def test_colour_distance_grows_with_a_colour_cast():
    x = smooth_images(seed=1)
    cast = torch.tensor([1.0, 0.9, 0.7]).view(1, 3, 1, 1)
    small = colour_distance(x * cast ** 0.5, x)
    large = colour_distance(x * cast, x)
    assert 0 < small < large


def test_yuv_pixels_subsamples_deterministically():
    x = smooth_images()
    a, b = yuv_pixels(x, 100, seed=5), yuv_pixels(x, 100, seed=5)
    assert a.shape == (100, 3) and torch.equal(a, b)
    full = rgb_to_yuv(x).permute(0, 2, 3, 1).reshape(-1, 3)
    assert torch.equal(yuv_pixels(x, 10 ** 9), full)


def test_structure_fidelity_ignores_tone_changes_but_not_invented_edges():
    x = smooth_images(seed=2)
    assert torch.allclose(structure_fidelity(x, x), torch.ones(3), atol=1e-5)
    toned = 0.1 + 0.7 * x                                  # brightness and contrast change of every channel
    assert torch.allclose(structure_fidelity(x, toned), torch.ones(3), atol=1e-3)
    assert float(ssim_luma(x, toned).mean()) < 0.99        # full SSIM does see the tone change
    emboss = torch.tensor([[-2.0, -1, 0], [-1, 1, 1], [0, 1, 2]]).view(1, 1, 3, 3).repeat(3, 1, 1, 1)
    embossed = (F.conv2d(F.pad(x, (1, 1, 1, 1), mode="reflect"), emboss, groups=3) * 0.5 + 0.5 * x).clamp(0, 1)
    assert float(structure_fidelity(x, embossed).mean()) < 0.9
    noise = (x + 0.2 * torch.randn(x.shape, generator=torch.Generator().manual_seed(0))).clamp(0, 1)
    assert float(structure_fidelity(x, noise).mean()) < float(structure_fidelity(x, toned).mean())


def test_psnr_matches_scikit_image():
    x = smooth_images(seed=4)
    y = (x + 0.05 * torch.randn(x.shape, generator=torch.Generator().manual_seed(1))).clamp(0, 1)
    ours = psnr(y, x)
    for i in range(len(x)):
        ref = peak_signal_noise_ratio(x[i].numpy(), y[i].numpy(), data_range=1.0)
        assert float(ours[i]) == pytest.approx(ref, rel=1e-5)
