"""Turn sRGB photos into plausible sensor RAW, after Brooks et al. 2019.

"Unprocessing images for learned raw denoising" (CVPR 2019) runs a camera
pipeline backwards. The steps, in order, and their parameters:

1. **Inverse tone mapping.** Cameras apply an S-shaped tone curve; Brooks
   model it as smoothstep ``3x^2 - 2x^3``, inverted in closed form:
   ``x = 0.5 - sin(asin(1 - 2y) / 3)``.
2. **Inverse gamma.** ``linear = max(x, 1e-8) ** 2.2``.
3. **Inverse colour correction.** One sensor per dataset: ``rgb2cam`` is a
   random convex combination of four real cameras' XYZ->camera matrices times
   sRGB->XYZ (D65), each row normalised to sum to 1 (so grey stays grey
   before white balance). ``cam = rgb2cam @ rgb``.
4. **Inverse white balance and brightness.** Per scene (each scene has its own
   illuminant): red gain ~ U(1.9, 2.4), blue gain ~ U(1.5, 1.9), brightness
   gain ``1 / N(0.8, 0.1)``. Channels are divided by their gains, except that
   near-saturated pixels keep their value (Brooks' highlight-preserving
   "safe" inversion), so clipped highlights stay clipped instead of turning
   magenta.
5. **RGGB mosaic**, packed as ``(H/2, W/2, 4)`` with channels R, Gr, Gb, B:
   R at (even row, even col), Gr at (even, odd), Gb at (odd, even), B at (odd, odd).
6. **Shot and read noise.** Heteroscedastic Gaussian with variance
   ``shot * x + read``: ``log(shot) ~ U(log 1e-4, log 1.2e-2)``,
   ``log(read) = 2.18 log(shot) + 1.20 + N(0, 0.26)``.
7. **10-bit quantisation.** ``round(clip(x, 0, 1) * 1023)`` as ``uint16``;
   black level 0, white level 1023 as in the NTIRE 2026 data.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

RAW_WHITE = 1023

# XYZ -> camera matrices of four real cameras, as used by Brooks et al. 2019
# (their values originate in the Adobe DNG converter / dcraw colour tables).
XYZ2CAM = np.array([
    [[1.0234, -0.2969, -0.2266], [-0.5625, 1.6328, -0.0469], [-0.0703, 0.2188, 0.6406]],
    [[0.4913, -0.0541, -0.0202], [-0.6130, 1.3513, 0.2906], [-0.1564, 0.2151, 0.7183]],
    [[0.8380, -0.2630, -0.0639], [-0.2887, 1.0725, 0.2496], [-0.0627, 0.1427, 0.5438]],
    [[0.6596, -0.2079, -0.0562], [-0.4782, 1.3016, 0.1933], [-0.0970, 0.1581, 0.5181]],
])
# linear sRGB -> XYZ, D65 white point (IEC 61966-2-1).
RGB2XYZ = np.array([
    [0.4124564, 0.3575761, 0.1804375],
    [0.2126729, 0.7151522, 0.0721750],
    [0.0193339, 0.1191920, 0.9503041],
])


@dataclass(frozen=True)
class Sensor:
    """The simulated phone sensor: one colour matrix for a whole dataset."""

    rgb2cam: tuple[tuple[float, float, float], ...]
    camera_weights: tuple[float, ...]

    @property
    def matrix(self) -> np.ndarray:
        return np.asarray(self.rgb2cam, dtype=np.float64)


@dataclass(frozen=True)
class Capture:
    """Per-scene capture conditions."""

    red_gain: float
    blue_gain: float
    brightness_gain: float
    shot_noise: float
    read_noise: float

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


def sample_sensor(rng: np.random.Generator) -> Sensor:
    weights = rng.uniform(1e-8, 1e8, size=len(XYZ2CAM))
    weights = weights / weights.sum()
    xyz2cam = np.tensordot(weights, XYZ2CAM, axes=1)
    rgb2cam = xyz2cam @ RGB2XYZ
    rgb2cam = rgb2cam / rgb2cam.sum(axis=1, keepdims=True)
    return Sensor(tuple(tuple(float(v) for v in row) for row in rgb2cam), tuple(float(w) for w in weights))


def sample_capture(rng: np.random.Generator) -> Capture:
    red_gain = rng.uniform(1.9, 2.4)
    blue_gain = rng.uniform(1.5, 1.9)
    brightness_gain = 1.0 / rng.normal(0.8, 0.1)
    log_shot = rng.uniform(np.log(1e-4), np.log(1.2e-2))
    log_read = 2.18 * log_shot + 1.20 + rng.normal(0.0, 0.26)
    return Capture(float(red_gain), float(blue_gain), float(brightness_gain),
                   float(np.exp(log_shot)), float(np.exp(log_read)))


def inverse_smoothstep(y: np.ndarray) -> np.ndarray:
    y = np.clip(y, 0.0, 1.0)
    return 0.5 - np.sin(np.arcsin(1.0 - 2.0 * y) / 3.0)


def gamma_expand(x: np.ndarray, gamma: float = 2.2) -> np.ndarray:
    return np.maximum(x, 1e-8) ** gamma


def apply_ccm(image: np.ndarray, ccm: np.ndarray) -> np.ndarray:
    """``(H, W, 3) @ ccm.T``: each output channel is a row of ``ccm`` dotted with the pixel."""
    return np.einsum("hwc,kc->hwk", image, ccm)


def safe_invert_gains(image: np.ndarray, capture: Capture, inflection: float = 0.9) -> np.ndarray:
    """Divide by white-balance and brightness gains, keeping near-white pixels near white."""
    gains = np.array([1.0 / capture.red_gain, 1.0, 1.0 / capture.blue_gain]) / capture.brightness_gain
    gray = image.mean(axis=-1, keepdims=True)
    mask = (np.maximum(gray - inflection, 0.0) / (1.0 - inflection)) ** 2
    safe = np.maximum(mask + (1.0 - mask) * gains, gains)
    return image * safe


def mosaic_rggb(image: np.ndarray) -> np.ndarray:
    """``(H, W, 3)`` with even H, W -> packed ``(H/2, W/2, 4)`` R, Gr, Gb, B."""
    h, w, _ = image.shape
    if h % 2 or w % 2:
        raise ValueError(f"mosaicking needs even height and width, got {h}x{w}")
    return np.stack([image[0::2, 0::2, 0], image[0::2, 1::2, 1],
                     image[1::2, 0::2, 1], image[1::2, 1::2, 2]], axis=-1)


def unprocess(srgb: np.ndarray, sensor: Sensor, capture: Capture) -> np.ndarray:
    """Steps 1-5: noise-free linear packed mosaic in [0, 1] from an sRGB image in [0, 1]."""
    linear = gamma_expand(inverse_smoothstep(srgb))
    cam = np.clip(apply_ccm(linear, sensor.matrix), 0.0, 1.0)
    cam = np.clip(safe_invert_gains(cam, capture), 0.0, 1.0)
    return mosaic_rggb(cam)


def noise_variance(clean: np.ndarray, capture: Capture) -> np.ndarray:
    return capture.shot_noise * clean + capture.read_noise


def add_noise(clean: np.ndarray, capture: Capture, rng: np.random.Generator) -> np.ndarray:
    """Step 6: heteroscedastic Gaussian approximation of Poisson shot noise plus read noise."""
    return clean + rng.standard_normal(clean.shape) * np.sqrt(noise_variance(clean, capture))


def quantise_10bit(x: np.ndarray) -> np.ndarray:
    """Step 7."""
    return np.round(np.clip(x, 0.0, 1.0) * RAW_WHITE).astype(np.uint16)


def synthesize_raw(srgb: np.ndarray, sensor: Sensor, capture: Capture,
                   rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """All steps: returns ``(raw uint16 (H/2, W/2, 4), clean float mosaic)``."""
    clean = unprocess(srgb.astype(np.float64), sensor, capture)
    return quantise_10bit(add_noise(clean, capture, rng)), clean
