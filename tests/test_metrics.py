"""Unpaired validation figures (colour distance, structure fidelity) and paired metrics (PSNR, SSIM, CIEDE2000)."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from kornia.color import rgb_to_yuv
from skimage import data
from skimage.color import deltaE_ciede2000, rgb2lab
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from isp_support.metrics import (
    SlicedReference,
    column_quantiles,
    colour_distance,
    delta_e2000,
    delta_e2000_lab,
    delta_e2000_map,
    image_metrics,
    psnr,
    rgb_to_lab,
    ssim,
    ssim_luma,
    structure_fidelity,
    yuv_pixels,
)


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


@pytest.mark.parametrize("threads", [1, 2, 3])
def test_column_quantiles_equal_torch_quantile_bit_for_bit(threads):
    gen = torch.Generator().manual_seed(threads)
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        for trial in range(12):
            n = int(torch.randint(1, 40 if trial % 3 == 0 else 60_000, (1,), generator=gen))
            d = int(torch.randint(1, 20, (1,), generator=gen))
            values = torch.randn(n, d, generator=gen) * 10.0 ** float(torch.randint(-3, 3, (1,), generator=gen))
            if trial % 4 == 0:
                values = values.round()  # ties, and zeros of both signs
            levels = int(torch.randint(1, 300, (1,), generator=gen))
            q = (torch.arange(levels) + 0.5) / levels if trial % 2 else torch.rand(levels, generator=gen)
            expected, got = torch.quantile(values, q, dim=0), column_quantiles(values, q)
            assert got.shape == expected.shape and got.stride() == expected.stride()
            assert torch.equal(got, expected), (trial, n, d, levels)
    finally:
        torch.set_num_threads(before)


def test_column_quantiles_hand_nan_and_bad_levels_to_torch_quantile():
    values = torch.rand(50, 4)
    values[7, 2] = float("nan")
    q = torch.tensor([0.1, 0.5, 1.0])
    got = column_quantiles(values, q)
    assert got[:, 2].isnan().all() and torch.equal(got[:, :2], torch.quantile(values, q, dim=0)[:, :2])
    with pytest.raises(RuntimeError, match="range"):
        column_quantiles(torch.rand(5, 2), torch.tensor([1.5]))
    with pytest.raises(RuntimeError, match="same dtype"):
        column_quantiles(torch.rand(5, 2), torch.tensor([0.5], dtype=torch.float64))


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


# Sharma, Wu, Dalal (2005), "The CIEDE2000 color-difference formula: implementation notes, supplementary
# test data, and mathematical observations", Table 1: L1, a1, b1, L2, a2, b2, published dE00 (4 decimals).
SHARMA_PAIRS = [
    (50.0000, 2.6772, -79.7751, 50.0000, 0.0000, -82.7485, 2.0425),
    (50.0000, 3.1571, -77.2803, 50.0000, 0.0000, -82.7485, 2.8615),
    (50.0000, 2.8361, -74.0200, 50.0000, 0.0000, -82.7485, 3.4412),
    (50.0000, -1.3802, -84.2814, 50.0000, 0.0000, -82.7485, 1.0000),
    (50.0000, -1.1848, -84.8006, 50.0000, 0.0000, -82.7485, 1.0000),
    (50.0000, -0.9009, -85.5211, 50.0000, 0.0000, -82.7485, 1.0000),
    (50.0000, 0.0000, 0.0000, 50.0000, -1.0000, 2.0000, 2.3669),
    (50.0000, -1.0000, 2.0000, 50.0000, 0.0000, 0.0000, 2.3669),
    (50.0000, 2.4900, -0.0010, 50.0000, -2.4900, 0.0009, 7.1792),
    (50.0000, 2.4900, -0.0010, 50.0000, -2.4900, 0.0010, 7.1792),
    (50.0000, 2.4900, -0.0010, 50.0000, -2.4900, 0.0011, 7.2195),
    (50.0000, 2.4900, -0.0010, 50.0000, -2.4900, 0.0012, 7.2195),
    (50.0000, -0.0010, 2.4900, 50.0000, 0.0009, -2.4900, 4.8045),
    (50.0000, -0.0010, 2.4900, 50.0000, 0.0010, -2.4900, 4.8045),
    (50.0000, -0.0010, 2.4900, 50.0000, 0.0011, -2.4900, 4.7461),
    (50.0000, 2.5000, 0.0000, 50.0000, 0.0000, -2.5000, 4.3065),
    (50.0000, 2.5000, 0.0000, 73.0000, 25.0000, -18.0000, 27.1492),
    (50.0000, 2.5000, 0.0000, 61.0000, -5.0000, 29.0000, 22.8977),
    (50.0000, 2.5000, 0.0000, 56.0000, -27.0000, -3.0000, 31.9030),
    (50.0000, 2.5000, 0.0000, 58.0000, 24.0000, 15.0000, 19.4535),
    (50.0000, 2.5000, 0.0000, 50.0000, 3.1736, 0.5854, 1.0000),
    (50.0000, 2.5000, 0.0000, 50.0000, 3.2972, 0.0000, 1.0000),
    (50.0000, 2.5000, 0.0000, 50.0000, 1.8634, 0.5757, 1.0000),
    (50.0000, 2.5000, 0.0000, 50.0000, 3.2592, 0.3350, 1.0000),
    (60.2574, -34.0099, 36.2677, 60.4626, -34.1751, 39.4387, 1.2644),
    (63.0109, -31.0961, -5.8663, 62.8187, -29.7946, -4.0864, 1.2630),
    (61.2901, 3.7196, -5.3901, 61.4292, 2.2480, -4.9620, 1.8731),
    (35.0831, -44.1164, 3.7933, 35.0232, -40.0716, 1.5901, 1.8645),
    (22.7233, 20.0904, -46.6940, 23.0331, 14.9730, -42.5619, 2.0373),
    (36.4612, 47.8580, 18.3852, 36.2715, 50.5065, 21.2231, 1.4146),
    (90.8027, -2.0831, 1.4410, 91.1528, -1.6435, 0.0447, 1.4441),
    (90.9257, -0.5406, -0.9208, 88.6381, -0.8985, -0.7239, 1.5381),
    (6.7747, -0.2908, -2.4247, 5.8714, -0.0985, -2.2286, 0.6377),
    (2.0776, 0.0795, -1.1350, 0.9033, -0.0636, -0.5514, 0.9082),
]


def hwc(x):
    """``(3, H, W)`` tensor to an ``(H, W, 3)`` float64 array for scikit-image."""
    return x.permute(1, 2, 0).double().numpy()


def paired_batch(dtype=torch.float64):
    """Three astronaut crops of different content and a random image, each against a degraded version."""
    astro = torch.from_numpy(data.astronaut() / 255.0).permute(2, 0, 1)
    gen = torch.Generator().manual_seed(3)
    ref = torch.stack([
        astro[:, 20:84, 180:260],      # face
        astro[:, 300:364, 30:110],     # suit and flag
        astro[:, 420:484, 400:480],    # hands and helmet
        torch.rand(3, 64, 80, generator=gen, dtype=torch.float64),
    ])
    blurred = F.avg_pool2d(F.pad(ref[:1], (1, 1, 1, 1), mode="replicate"), 3, stride=1)
    cast = ref[1:2] * torch.tensor([1.05, 0.95, 0.8], dtype=torch.float64).view(1, 3, 1, 1) + 0.03
    noisy = ref[2:] + 0.08 * torch.randn(ref[2:].shape, generator=gen, dtype=torch.float64)
    pred = torch.cat([blurred, cast, noisy]).clamp(0, 1)
    # Quantise to 8 bits like the scored PNGs: exact greys (zero chroma) exercise CIEDE2000's hue branches.
    quant = lambda t: (t * 255).round() / 255  # noqa: E731
    return quant(pred).to(dtype), quant(ref).to(dtype)


def skimage_ssim(pred, ref):
    return np.array([
        structural_similarity(hwc(p), hwc(r), gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
                              data_range=1.0, channel_axis=-1)
        for p, r in zip(pred, ref)
    ])


def skimage_delta_e(pred, ref):
    return np.stack([deltaE_ciede2000(rgb2lab(hwc(p)), rgb2lab(hwc(r))) for p, r in zip(pred, ref)])


@pytest.mark.parametrize("dtype, tol", [(torch.float32, 1e-5), (torch.float64, 1e-10)])
def test_ssim_matches_scikit_image(dtype, tol):
    pred, ref = paired_batch(dtype)
    ours = ssim(pred, ref)
    assert ours.shape == (4,) and ours.dtype == dtype
    expected = skimage_ssim(pred, ref)
    assert expected.min() < 0.95 and np.ptp(expected) > 0.05   # the pairs really differ, and from each other
    err = np.abs(ours.double().numpy() - expected).max()
    assert err < tol, f"SSIM vs skimage: max abs error {err:.2e} > {tol:.0e}"
    # Identical images: SSIM 1 (tolerance 1e-6).
    assert torch.allclose(ssim(ref, ref), torch.ones(4, dtype=dtype), atol=1e-6)


def test_ssim_clamps_and_works_down_to_11x11():
    pred, ref = paired_batch()
    # Out-of-range values are clamped to [0, 1] first (tolerance 1e-12).
    wild = pred * 1.6 - 0.3
    assert torch.allclose(ssim(wild, ref), ssim(wild.clamp(0, 1), ref), atol=1e-12, rtol=0)
    # 11x11 is the smallest image: its SSIM is the single valid window's, as in skimage (tolerance 1e-10).
    small_p, small_r = pred[..., :11, :11], ref[..., :11, :11]
    err = np.abs(ssim(small_p, small_r).numpy() - skimage_ssim(small_p, small_r)).max()
    assert err < 1e-10, f"11x11 SSIM vs skimage: max abs error {err:.2e}"


@pytest.mark.parametrize("dtype, tol", [(torch.float32, 1e-3), (torch.float64, 1e-9)])
def test_rgb_to_lab_matches_scikit_image(dtype, tol):
    pred, ref = paired_batch(dtype)
    rgb = torch.cat([pred, ref])
    lab = rgb_to_lab(rgb)
    assert lab.shape == rgb.shape and lab.dtype == dtype
    expected = np.stack([rgb2lab(hwc(x)) for x in rgb])
    err = np.abs(lab.permute(0, 2, 3, 1).double().numpy() - expected).max()
    assert err < tol, f"Lab vs skimage.color.rgb2lab: max abs error {err:.2e} > {tol:.0e}"


def test_delta_e2000_lab_matches_sharmas_published_table():
    pairs = torch.tensor(SHARMA_PAIRS, dtype=torch.float64)
    ours = delta_e2000_lab(pairs[:, :3], pairs[:, 3:6])
    err = (ours - pairs[:, 6]).abs().max().item()
    # The published values have 4 decimals: tolerance 1e-4 (in float64: pair 14's hues are exactly 180 degrees apart).
    assert err < 1e-4, f"CIEDE2000 vs Sharma et al.'s table: max abs error {err:.2e}"
    assert torch.equal(delta_e2000_lab(pairs[:, 3:6], pairs[:, :3]), ours)   # symmetric, also on the edge cases


def test_delta_e2000_lab_matches_scikit_image_on_hue_edge_cases():
    gen = torch.Generator().manual_seed(7)
    lab1 = torch.rand(2000, 3, generator=gen, dtype=torch.float64) * torch.tensor([100.0, 200, 200]) - torch.tensor(
        [0.0, 100, 100])
    lab2 = lab1.flip(0).clone()
    lab1[:200, 1:] = 0                         # zero chroma, one side
    lab2[100:300, 1:] = 0                      # and both sides
    # Hues 180 +- (0.01 .. 3) degrees apart, on both sides of the |h1 - h2| > 180 branch. (Exactly opposite hues are
    # left out: CIEDE2000 jumps there, so the last bit of atan2 would decide between two different values.)
    turn = torch.deg2rad(180 + (torch.rand(300, generator=gen, dtype=torch.float64) * 2.99 + 0.01)
                         * torch.where(torch.arange(300) % 2 == 0, 1.0, -1.0).double())
    a, b = lab1[300:600, 1], lab1[300:600, 2]
    lab2[300:600, 1], lab2[300:600, 2] = a * turn.cos() - b * turn.sin(), a * turn.sin() + b * turn.cos()
    lab2[600:800, 2] = -lab1[600:800, 2]       # hues across 0 / 360 degrees
    ours = delta_e2000_lab(lab1, lab2).numpy()
    err = np.abs(ours - deltaE_ciede2000(lab1.numpy(), lab2.numpy())).max()
    assert err < 1e-10, f"CIEDE2000 (Lab) vs skimage: max abs error {err:.2e}"


@pytest.mark.parametrize("dtype, tol_mean, tol_map", [(torch.float32, 1e-4, 1e-3), (torch.float64, 1e-9, 1e-9)])
def test_delta_e2000_matches_scikit_image(dtype, tol_mean, tol_map):
    pred, ref = paired_batch(dtype)
    expected = skimage_delta_e(pred, ref)
    dmap = delta_e2000_map(pred, ref)
    assert dmap.shape == (4, 64, 80) and dmap.dtype == dtype
    err_map = np.abs(dmap.double().numpy() - expected).max()
    assert err_map < tol_map, f"CIEDE2000 map vs skimage: max abs error {err_map:.2e} > {tol_map:.0e}"
    err = np.abs(delta_e2000(pred, ref).double().numpy() - expected.mean(axis=(1, 2))).max()
    assert err < tol_mean, f"mean CIEDE2000 vs skimage: max abs error {err:.2e} > {tol_mean:.0e}"


def test_delta_e2000_is_zero_for_identical_images_symmetric_and_clamps():
    pred, ref = paired_batch()
    assert torch.equal(delta_e2000(ref, ref), torch.zeros(4, dtype=torch.float64))
    # Symmetric (tolerance 1e-12).
    assert torch.allclose(delta_e2000(pred, ref), delta_e2000(ref, pred), atol=1e-12, rtol=0)
    wild = pred * 1.6 - 0.3
    assert torch.equal(delta_e2000_map(wild, ref), delta_e2000_map(wild.clamp(0, 1), ref))


def test_image_metrics_returns_the_three_metrics_in_float32_and_float64():
    pred64, ref64 = paired_batch()
    out64 = image_metrics(pred64, ref64)
    out32 = image_metrics(pred64.float(), ref64.float())
    assert list(out64) == ["psnr", "ssim", "delta_e2000"]
    assert torch.equal(out64["ssim"], ssim(pred64, ref64)) and torch.equal(out64["psnr"], psnr(pred64, ref64))
    assert torch.equal(out64["delta_e2000"], delta_e2000(pred64, ref64))
    assert out64["ssim"].dtype == out64["delta_e2000"].dtype == torch.float64
    for name in out64:
        assert out64[name].shape == out32[name].shape == (4,)
        # float32 vs float64 agree to 1e-4 relative.
        assert torch.allclose(out32[name].double(), out64[name].double(), rtol=1e-4, atol=1e-5), name


def test_metrics_reject_mismatched_or_too_small_images():
    a, b = torch.rand(2, 3, 16, 16), torch.rand(2, 3, 16, 17)
    for fn in (ssim, delta_e2000, delta_e2000_map, image_metrics):
        with pytest.raises(ValueError, match=r"\(2, 3, 16, 16\) vs \(2, 3, 16, 17\)"):
            fn(a, b)
    tiny = torch.rand(1, 3, 10, 32)
    for fn in (ssim, image_metrics):
        with pytest.raises(ValueError, match=r"\(1, 3, 10, 32\) are smaller than 11x11"):
            fn(tiny, tiny)
    assert delta_e2000(tiny, tiny).shape == (1,)          # CIEDE2000 is per pixel: any size works
    with pytest.raises(ValueError, match=r"expected \(B, 3, H, W\)"):
        ssim(torch.rand(3, 16, 16), torch.rand(3, 16, 16))
