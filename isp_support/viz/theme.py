"""One look for every figure of the series, sized for the course site's content column.

:func:`use_theme` is called once by each notebook's set-up cell: seaborn's ``whitegrid`` style with the
colour-blind palette, and figures whose width is at most :data:`COLUMN_INCHES` at :data:`DPI`, so a figure shown
in the site's column (about 800 px at a 1,366 px wide screen) is shown at its own size, not shrunk until its
labels cannot be read. Figure functions size themselves with :func:`column_figsize`.
"""

from __future__ import annotations

import matplotlib as mpl
import seaborn as sns

DPI = 100
"""Dots per inch of every figure, on screen and in the site."""
COLUMN_INCHES = 7.6
"""The widest a figure may be: the site's content column at 1,366 px (about 800 px), at :data:`DPI`, less the few pixels
the inline backend's tight bounding box adds."""
PALETTE = "colorblind"
"""seaborn's palette for every categorical colour (rows of a table, rules, methods)."""


def use_theme() -> None:
    """Set the series' look for matplotlib and seaborn (idempotent)."""
    sns.set_theme(context="notebook", style="whitegrid", palette=PALETTE, font_scale=0.9)
    mpl.rcParams.update({"figure.dpi": DPI, "savefig.dpi": DPI, "figure.figsize": (COLUMN_INCHES, 3.4),
                         "figure.constrained_layout.use": True, "axes.titlesize": "medium",
                         "image.cmap": "viridis"})


def column_figsize(n_cols: int, n_rows: int = 1, aspect: float = 1.0, extra_height: float = 0.4) -> tuple[float, float]:
    """A figure size of *n_cols* x *n_rows* panels of height/width *aspect* that fits the column's width."""
    width = COLUMN_INCHES
    panel = width / max(n_cols, 1)
    return width, panel * aspect * n_rows + extra_height
