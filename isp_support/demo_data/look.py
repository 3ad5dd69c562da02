"""The demo dataset's "target phone look": how the target phone renders a scene.

Applied to an sRGB photo in [0, 1], in this order:

1. **Local contrast** ("clarity"): luminance detail above a Gaussian base of
   ``sigma = local_contrast_radius * min(H, W)`` is boosted by
   ``local_contrast``, and the luminance change is added to every channel.
2. **Tone curve**: a blend of identity and smoothstep (S-curve) of strength
   ``tone_contrast``, then the shadows are lifted by ``shadow_lift``
   (``y = lift + (1 - lift) * y``).
3. **Saturation**: chroma around Rec. 601 luminance scaled by ``saturation``.
4. **Colour grading** (split toning): ``shadow_tint * (1 - Y)^2`` and
   ``highlight_tint * Y^2`` are added, warm highlights and teal shadows.
5. Clip to [0, 1].
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from scipy.ndimage import gaussian_filter

LUMA = np.array([0.299, 0.587, 0.114])


@dataclass(frozen=True)
class PhoneLook:
    local_contrast: float = 0.35
    local_contrast_radius: float = 0.03
    tone_contrast: float = 0.35
    shadow_lift: float = 0.025
    saturation: float = 1.25
    shadow_tint: tuple[float, float, float] = (-0.03, 0.005, 0.035)
    highlight_tint: tuple[float, float, float] = (0.04, 0.012, -0.035)

    def to_dict(self) -> dict:
        return asdict(self)


def render_look(srgb: np.ndarray, look: PhoneLook = PhoneLook()) -> np.ndarray:
    """Render ``(H, W, 3)`` sRGB in [0, 1] with the target look; returns float in [0, 1]."""
    x = np.clip(srgb.astype(np.float64), 0.0, 1.0)
    y = x @ LUMA
    sigma = max(look.local_contrast_radius * min(x.shape[:2]), 0.5)
    base = gaussian_filter(y, sigma=sigma, mode="reflect")
    x = x + (look.local_contrast * (y - base))[..., None]
    x = np.clip(x, 0.0, 1.0)
    s_curve = x * x * (3.0 - 2.0 * x)
    x = (1.0 - look.tone_contrast) * x + look.tone_contrast * s_curve
    x = look.shadow_lift + (1.0 - look.shadow_lift) * x
    y = (x @ LUMA)[..., None]
    x = y + look.saturation * (x - y)
    x = x + np.asarray(look.shadow_tint) * (1.0 - y) ** 2 + np.asarray(look.highlight_tint) * y ** 2
    return np.clip(x, 0.0, 1.0)


def to_uint8(x: np.ndarray) -> np.ndarray:
    """[0, 1] float -> uint8 with rounding (never truncation)."""
    return np.clip(np.round(x * 255.0), 0, 255).astype(np.uint8)
