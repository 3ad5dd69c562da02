"""Plotting helpers and widgets shared by the notebooks, one module per topic.

The names below are the package's API (``from isp_support import viz; viz.show_images(...)``):

* :mod:`.theme`: one look for every figure, sized for the site's column (``use_theme``, ``column_figsize``);
* :mod:`.images`: batches as displayable RGB, image grids;
* :mod:`.widgets`: live widgets (a note in headless runs);
* :mod:`.preprocess` (01), :mod:`.stitching` (02), :mod:`.matching` and :mod:`.knobs` (03),
  :mod:`.training` and :mod:`.loss_weights` (04, 05), :mod:`.evaluation` (06): each notebook's figures.
"""

from __future__ import annotations

from .adversarial import (chroma_spread, comparison_reading, hinge_toy, spread_reading, stage2_reading,
                          target_sample, toy_reading)
from .evaluation import claims_figure, regret_scatter, rendering_grid, seed_points, whole_and_patchwise
from .images import show_images, to_rgb_images
from .knobs import KNOB_FIGURES, knob_match, plan_and_quality_figure, plan_and_quality_grid, plan_row_entropy
from .loss_weights import (LOSS_WEIGHT_KNOBS, FewSteps, few_step_rendering, loss_terms_and_rendering,
                           loss_weight_grid, loss_weight_presets, loss_weight_sliders, weighted_loss_terms)
from .matching import (block_distances, image_plans, pairing_quality_bars, patch_matches, ranked_matches,
                       target_loads, transport_problem)
from .preprocess import raw_channels, stage_histograms, stored_histograms
from .stitching import layout_score_bars, score_map_strip, seam_score_matrices, stitched_and_runner_up
from .theme import COLUMN_INCHES, column_figsize, use_theme
from .training import colour_distributions, epoch_panels, epoch_renderings, kept_renderings, training_curves
from .widgets import knob_widget

__all__ = [
    "chroma_spread", "comparison_reading", "hinge_toy", "spread_reading", "stage2_reading", "target_sample",
    "toy_reading",
    "COLUMN_INCHES", "KNOB_FIGURES", "LOSS_WEIGHT_KNOBS", "column_figsize", "use_theme", "FewSteps",
    "block_distances", "claims_figure", "colour_distributions", "epoch_panels",
    "epoch_renderings", "few_step_rendering", "image_plans", "kept_renderings", "knob_match", "knob_widget",
    "layout_score_bars", "loss_terms_and_rendering", "loss_weight_grid",
    "loss_weight_presets", "loss_weight_sliders", "pairing_quality_bars", "patch_matches", "plan_and_quality_figure",
    "plan_and_quality_grid", "plan_row_entropy", "ranked_matches", "raw_channels", "regret_scatter",
    "rendering_grid", "score_map_strip", "seed_points", "seam_score_matrices", "show_images", "stage_histograms",
    "stitched_and_runner_up", "stored_histograms", "target_loads", "to_rgb_images", "training_curves",
    "transport_problem", "weighted_loss_terms", "whole_and_patchwise",
]
