"""Notebook 05's figures and readings (isp_support/viz/adversarial.py): the hinge toy, the chroma spread of the UV
clouds, and the generated reading of stage 2's epochs, whose wording must follow the numbers."""

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from isp_support import viz  # noqa: E402
from isp_support.metrics import yuv_pixels  # noqa: E402
from isp_support.train import losses  # noqa: E402
from isp_support.viz import adversarial  # noqa: E402


def test_chance_is_the_package_hinge_loss_of_a_blind_discriminator():
    zeros = torch.zeros(4, 1, 8, 8)
    assert float(losses.hinge_d_loss(zeros, zeros)) == adversarial.CHANCE


def _game(mean_after: float, sd_after: float, d_loss: float, n: int = 4000):
    g = torch.Generator().manual_seed(0)
    real = 2.0 + 0.5 * torch.randn(n, 1, generator=g)
    before = torch.randn(n, 1, generator=g)
    after = mean_after + sd_after * torch.randn(n, 1, generator=g)
    history = [{"d_loss": d_loss, "g_loss": 0.0}] * 60
    return real, before, after, history


def test_toy_figure_fits_the_column():
    plt.close("all")
    real, before, after, history = _game(2.0, 0.5, 2.0)
    critic = torch.nn.Linear(1, 1)
    viz.hinge_toy(real, before, after, {"D at step 1": critic, "D at step 60": critic}, history)
    fig = plt.gcf()
    assert fig.get_size_inches()[0] <= viz.COLUMN_INCHES + 1e-9
    assert len(fig.axes) == 3
    plt.close("all")


def test_toy_reading_follows_the_numbers():
    won = viz.toy_reading(*_game(2.0, 0.5, 2.0))
    assert "reaches the target's mean" in won and "close to chance" in won and "about as wide as" in won
    lost = viz.toy_reading(*_game(-0.5, 1.5, 0.4))
    assert "does not move toward" in lost and "below chance" in lost and "times as wide as" in lost
    halfway = viz.toy_reading(*_game(1.0, 0.2, 1.95))
    assert "toward the target's mean without reaching it" in halfway and "narrower than" in halfway


def _two_colour_batch(a: tuple[float, float, float], b: tuple[float, float, float]) -> torch.Tensor:
    """A (1, 3, 8, 8) image, left half colour ``a``, right half ``b``."""
    img = torch.empty(1, 3, 8, 8)
    img[..., :4] = torch.tensor(a)[:, None, None]
    img[..., 4:] = torch.tensor(b)[:, None, None]
    return img


def test_chroma_spread_measures_the_uv_cloud():
    wide = _two_colour_batch((0.9, 0.2, 0.1), (0.1, 0.3, 0.9))
    narrow = _two_colour_batch((0.6, 0.5, 0.4), (0.4, 0.5, 0.6))
    table = viz.chroma_spread({"input": narrow, "net": wide, "target domain": narrow})
    uv = yuv_pixels(wide, 10 ** 6)[:, 1:].double().numpy()
    expected = np.sqrt(((uv - uv.mean(0)) ** 2).sum(1).mean())  # half the distance between the two colours
    assert table.loc["net", "chroma spread"] == pytest.approx(expected)
    assert table.loc["net", "spread / target's"] > 1
    assert table.loc["target domain", "spread / target's"] == pytest.approx(1.0)
    assert table.loc["target domain", "centre offset"] == pytest.approx(0.0)
    grey = viz.chroma_spread({"net": torch.full((1, 3, 4, 4), 0.5), "target domain": narrow})
    assert grey.loc["net", "chroma spread"] == pytest.approx(0.0, abs=1e-6)


def test_spread_reading_says_overshoot_only_when_wider():
    wide = _two_colour_batch((0.9, 0.2, 0.1), (0.1, 0.3, 0.9))
    narrow = _two_colour_batch((0.6, 0.5, 0.4), (0.4, 0.5, 0.6))
    over = viz.spread_reading(viz.chroma_spread({"input": narrow, "net": wide, "target domain": narrow}))
    assert "overshoots" in over and "narrower" not in over
    under = viz.spread_reading(viz.chroma_spread({"input": wide, "net": narrow, "target domain": wide}))
    assert "narrower than the target's" in under and "overshoots" not in under
    same = viz.spread_reading(viz.chroma_spread({"net": narrow, "target domain": narrow}))
    assert "about as wide as" in same and "within" in same
    mixed = viz.spread_reading(viz.chroma_spread({"a": wide, "b": narrow, "target domain": narrow}))
    assert "not all wider" in mixed


def _history(colour: list[float], pseudo: list[float], d_loss: list[float] | None = None) -> list[dict]:
    d_loss = d_loss or [1.9] * (len(colour) - 1)
    return [{"epoch": e, "colour_distance": c, "pseudo_loss": p, "structure": 0.98,
             "terms": {"d_loss": d_loss[e - 1], "adv": 0.1} if e else {}}
            for e, (c, p) in enumerate(zip(colour, pseudo))]


def test_stage2_reading_names_the_kept_network_and_the_direction():
    rising = viz.stage2_reading("U-Net", _history([0.07, 0.08, 0.09], [1.8, 1.9, 1.85]), 0, "pseudo_loss", 0.9)
    assert "rises in every epoch" in rising and "the stage-1 network" in rising and "further from" in rising
    kept = viz.stage2_reading("U-Net", _history([0.07, 0.08, 0.075], [1.8, 1.7, 1.75]), 1, "pseudo_loss", 0.9)
    assert "adversarial epoch 1" in kept and "higher than" in kept and "not by colour distance" in kept
    assert "rises in 1 of 2 epochs and falls in 1" in kept
    better = viz.stage2_reading("U-Net", _history([0.07, 0.065], [1.8, 1.7], [1.99]), 1, "pseudo_loss", 0.9)
    assert "falls in the one adversarial epoch" in better and "lower than" in better and "closer to" in better
    assert "near chance" in better and "not by colour distance" not in better


def test_stage2_reading_reads_each_expert():
    history = _history([0.07, 0.068], [1.8, 1.7])
    history[1]["terms"] = {"d_loss": 5.3, "d_colour": 1.98, "d_structure": 1.3, "d_frequency": 1.99}
    text = viz.stage2_reading("experts", history, 1, "pseudo_loss", 0.9, chance=6.0)
    assert "only structure separates them" in text and "below chance" in text


def test_the_target_sample_of_the_colour_figures_reaches_every_scene():
    from isp_support.evaluate.held_out import even_sample

    ids = [f"tgt{s:03d}_{k}" for s in range(5) for k in range(20)]
    picked = even_sample(ids, 10)
    assert len(picked) == 10 and {p[:6] for p in picked} == {f"tgt{s:03d}" for s in range(5)}
    assert sorted(ids)[:10] != picked and {p[:6] for p in sorted(ids)[:10]} == {"tgt000"}  # the old sample
    assert even_sample(ids[:3], 10) == ids[:3] and even_sample([], 4) == []


def test_comparison_reading_follows_each_difference():
    import pandas as pd

    table = pd.DataFrame({"stage 1": {"colour_distance": 0.07, "structure": 0.98, "kept epoch": 8.0,
                                      "PSNR to ground truth (dB)": 20.0},
                          "stage 2 · a": {"colour_distance": 0.08, "structure": 0.97, "kept epoch": 3.0,
                                          "PSNR to ground truth (dB)": 19.5},
                          "stage 2 · b": {"colour_distance": 0.06, "structure": 0.99, "kept epoch": 0.0,
                                          "PSNR to ground truth (dB)": 20.25}}).T
    lines = viz.comparison_reading(table).splitlines()
    a = next(line for line in lines if "stage 2 · a" in line)
    b = next(line for line in lines if "stage 2 · b" in line)
    assert "further from the target domain" in a and "0.50 dB below" in a and "lower than 0.9800" in a
    assert "closer to the target domain" in b and "0.25 dB above" in b and "kept epoch 0" in b
    no_truth = viz.comparison_reading(table.drop(columns="PSNR to ground truth (dB)"))
    assert "PSNR" not in no_truth


def test_spread_reading_compares_stage2_with_stage1():
    wide = _two_colour_batch((0.9, 0.2, 0.1), (0.1, 0.3, 0.9))
    narrow = _two_colour_batch((0.6, 0.5, 0.4), (0.4, 0.5, 0.6))
    text = viz.spread_reading(viz.chroma_spread({"stage 1": narrow, "stage 2": wide, "target domain": wide}))
    assert "`stage 2`'s is" in text and "(wider)" in text
    same = viz.spread_reading(viz.chroma_spread({"stage 1": wide, "stage 2": wide, "target domain": wide}))
    assert "(about as wide)" in same and "(wider)" not in same
