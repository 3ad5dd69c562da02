"""Notebooks 04 and 05's scoring on the validation scenes (isp_support.evaluate.held_out)."""

from __future__ import annotations

import torch

from isp_support.evaluate import held_out
from isp_support.metrics import psnr
from isp_support.train.models import ColourNet


def test_psnr_to_truth_is_the_mean_psnr_of_the_renderings():
    x = torch.rand(3, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    truth = (x + 0.05).clamp(0, 1)
    assert held_out.psnr_to_truth(ColourNet(), x, truth) == float(psnr(x, truth).mean())  # identity network


def test_epoch_check_without_ground_truth_is_empty():
    assert held_out.epoch_check(object(), None, None) == (None, None)
