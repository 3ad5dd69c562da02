"""The Brooks et al. unprocessing steps and the target look, on hand-made values."""

import numpy as np

from isp_support.demo_data import unprocess as U
from isp_support.demo_data.look import PhoneLook, render_look, to_uint8


def test_inverse_smoothstep_inverts_smoothstep():
    x = np.linspace(0, 1, 101)
    np.testing.assert_allclose(U.inverse_smoothstep(3 * x ** 2 - 2 * x ** 3), x, atol=1e-9)


def test_sensor_keeps_grey_grey():
    sensor = U.sample_sensor(np.random.default_rng(0))
    np.testing.assert_allclose(sensor.matrix.sum(axis=1), 1.0)
    np.testing.assert_allclose(sum(sensor.camera_weights), 1.0)


def test_mosaic_positions():
    img = np.zeros((4, 6, 3))
    img[..., 0], img[..., 1], img[..., 2] = 1, 2, 3
    img[1::2, :, 1] = 5  # Gb rows differ from Gr rows
    packed = U.mosaic_rggb(img)
    assert packed.shape == (2, 3, 4)
    assert (packed[..., 0] == 1).all() and (packed[..., 1] == 2).all()
    assert (packed[..., 2] == 5).all() and (packed[..., 3] == 3).all()


def test_white_balance_inverse_and_highlight_protection():
    cap = U.Capture(red_gain=2.0, blue_gain=1.6, brightness_gain=1.25, shot_noise=0, read_noise=0)
    mid = np.full((1, 1, 3), 0.5)
    np.testing.assert_allclose(U.safe_invert_gains(mid, cap)[0, 0], [0.5 / 2 / 1.25, 0.5 / 1.25, 0.5 / 1.6 / 1.25])
    white = np.ones((1, 1, 3))
    np.testing.assert_allclose(U.safe_invert_gains(white, cap), 1.0)  # clipped highlights stay white


def test_quantisation_rounds_and_clips():
    q = U.quantise_10bit(np.array([-0.1, 0.0, 0.49 / 1023, 0.51 / 1023, 1.0, 1.7]))
    assert q.dtype == np.uint16 and q.tolist() == [0, 0, 0, 1, 1023, 1023]


def test_sampled_capture_ranges():
    caps = [U.sample_capture(np.random.default_rng(s)) for s in range(200)]
    assert all(1.9 <= c.red_gain <= 2.4 and 1.5 <= c.blue_gain <= 1.9 for c in caps)
    assert all(1e-4 <= c.shot_noise <= 1.2e-2 for c in caps)


def test_look_is_a_visible_but_bounded_change():
    rng = np.random.default_rng(0)
    img = np.clip(rng.normal(0.5, 0.15, (64, 64, 3)), 0, 1)
    out = render_look(img)
    assert out.min() >= 0 and out.max() <= 1 and 0.02 < np.abs(out - img).mean() < 0.2
    grey = np.full((8, 8, 3), 0.5)
    neutral = PhoneLook(local_contrast=0, tone_contrast=0, shadow_lift=0, saturation=1,
                        shadow_tint=(0, 0, 0), highlight_tint=(0, 0, 0))
    np.testing.assert_allclose(render_look(grey, neutral), grey)
    assert to_uint8(np.array([0.6 / 255, 1.49 / 255, 2.51 / 255])).tolist() == [1, 1, 3]  # round, not truncate
