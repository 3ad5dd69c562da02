"""Plotting helpers and widgets shared by the notebooks, one module per topic.

The names below are the package's API (``from isp_support import viz; viz.show_images(...)``):

* :mod:`.theme`: one look for every figure, sized for the site's column (``use_theme``, ``column_figsize``);
* :mod:`.images`: batches as displayable RGB, image grids;
* :mod:`.widgets`: live widgets (a note in headless runs);
* :mod:`.preprocess` (01), :mod:`.stitching` (02), :mod:`.matching` and :mod:`.knobs` (03),
  :mod:`.training` and :mod:`.loss_weights` (04, 05), :mod:`.evaluation` (06): each notebook's figures.
"""

from __future__ import annotations

from .adversarial import comparison_reading, hinge_toy, stage2_reading, toy_reading
from .colour_spread import chroma_spread, spread_reading
from .data_readings import channel_reading, data_description
from .evaluation import claims_figure, regret_scatter, rendering_grid, seed_points, whole_and_patchwise
from .images import show_images, to_rgb_images
from .knobs import (KNOB_FIGURES, KNOB_GRID, knob_match, plan_and_quality_figure, plan_and_quality_grid,
                    plan_row_entropy)
from .label_quality import label_quality_points, label_quality_reading, quality_long
from .loss_weights import (LOSS_WEIGHT_KNOBS, FewSteps, few_step_rendering, loss_terms_and_rendering,
                           loss_weight_grid, loss_weight_presets, loss_weight_probes, loss_weight_sliders,
                           weighted_loss_terms)
from .match_readings import (beats_random_reading, diversity_reading, grid_settings, knob_grid_reading,
                             plan_share_reading, toy_spread_reading)
from .matching import block_distances, image_plans, patch_matches, ranked_matches, target_loads, transport_problem
from .preprocess import raw_channels, stage_histograms, stored_histograms
from .stitching import layout_score_bars, score_map_strip, seam_score_matrices, stitched_and_runner_up
from .theme import COLUMN_INCHES, column_figsize, use_theme
from .train_readings import checkpoint_rules_reading, probe_reading, training_effect_reading, upper_bound_reading
from .training import (colour_distributions, epoch_panels, epoch_renderings, kept_renderings, one_step_picture,
                       training_curves)
from .widgets import knob_widget

__all__ = [
    "chroma_spread", "comparison_reading", "hinge_toy", "spread_reading", "stage2_reading",
    "toy_reading",
    "COLUMN_INCHES", "KNOB_FIGURES", "KNOB_GRID", "LOSS_WEIGHT_KNOBS", "FewSteps", "beats_random_reading",
    "block_distances", "checkpoint_rules_reading", "claims_figure", "colour_distributions", "column_figsize",
    "diversity_reading", "epoch_panels", "epoch_renderings", "few_step_rendering", "grid_settings", "image_plans",
    "kept_renderings", "knob_grid_reading", "knob_match", "knob_widget", "label_quality_points",
    "label_quality_reading", "layout_score_bars", "loss_terms_and_rendering", "loss_weight_grid",
    "loss_weight_presets", "loss_weight_probes", "loss_weight_sliders", "one_step_picture", "patch_matches",
    "plan_and_quality_figure", "plan_and_quality_grid", "plan_row_entropy", "plan_share_reading", "probe_reading",
    "quality_long", "ranked_matches", "raw_channels", "regret_scatter", "rendering_grid", "score_map_strip",
    "seam_score_matrices", "seed_points", "show_images", "stage_histograms", "stitched_and_runner_up",
    "stored_histograms", "target_loads", "to_rgb_images", "toy_spread_reading", "training_curves",
    "training_effect_reading", "transport_problem", "upper_bound_reading", "use_theme",
    "weighted_loss_terms", "whole_and_patchwise",
]
