"""Colour soft histograms and the matching descriptors."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from isp_support import colour, features


def test_soft_histograms_on_hand_made_values():
    v = torch.tensor([[0.0, 0.5, 1.0, 0.25]])
    # 5 centres 0, .25, .5, .75, 1: every value sits on a centre
    torch.testing.assert_close(colour.soft_histogram_1d(v, 5, (0, 1)), torch.tensor([[0.25, 0.25, 0.25, 0, 0.25]]))
    half = colour.soft_histogram_1d(torch.tensor([[0.125]]), 5, (0, 1))  # halfway between two centres
    torch.testing.assert_close(half, torch.tensor([[0.5, 0.5, 0, 0, 0]]))
    grey = torch.full((1, 3, 4, 4), 0.5)
    uv = colour.uv_histogram(grey, 33)  # odd bin count: U = V = 0 falls on the central bin
    assert uv[0, 16, 16].item() == pytest.approx(1.0)
    rgb = torch.rand(3, 3, 8, 8)
    torch.testing.assert_close(colour.y_histogram(rgb).sum(1), torch.ones(3))
    torch.testing.assert_close(colour.uv_histogram(rgb).sum((1, 2)), torch.ones(3))


def test_soft_histogram_gradients_match_finite_differences():
    x = (torch.rand(2, 3, 5, 5, dtype=torch.float64) * 0.8 + 0.1).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda t: colour.y_histogram(t, 16), (x,), eps=1e-6, atol=1e-5)
    assert torch.autograd.gradcheck(lambda t: colour.uv_histogram(t, 8), (x,), eps=1e-6, atol=1e-5)


def test_fitted_size_keeps_aspect_in_multiples_of_14():
    assert features.fitted_size(300, 600, 448) == (224, 448)
    h, w = features.fitted_size(512, 384, 224)
    assert h == 224 and w % 14 == 0 and abs(w / h - 0.75) < 0.05


def test_count_sketch_is_fixed_linear_and_norm_preserving():
    sketch = features.CountSketch(50_000, 1024)
    again = features.CountSketch(50_000, 1024)
    assert torch.equal(sketch.bucket, again.bucket) and torch.equal(sketch.sign, again.sign)
    x, y = torch.randn(64, 50_000, generator=torch.Generator().manual_seed(1)).unbind(0)[:2]
    torch.testing.assert_close(sketch((x + 2 * y)[None]), sketch(x[None]) + 2 * sketch(y[None]))
    xs = torch.randn(200, 50_000, generator=torch.Generator().manual_seed(2))
    ratio = sketch(xs).pow(2).sum(1) / xs.pow(2).sum(1)  # E = 1, std ~ sqrt(2 / 1024)
    assert abs(ratio.mean().item() - 1) < 5 * (2 / 1024) ** 0.5 / 200 ** 0.5


class TinyCNN(torch.nn.Module):
    style_layers = ("a", "b")

    def __init__(self):
        super().__init__()
        self.c1, self.c2 = torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.Conv2d(4, 6, 3, stride=2, padding=1)

    def features_at(self, x, layers):
        a = F.relu(self.c1(x))
        b = F.relu(self.c2(a))
        return {k: v for k, v in (("a", a), ("b", b)) if k in layers}


class TinyViT(torch.nn.Module):
    def tokens(self, x):
        tok = x.flatten(2).transpose(1, 2)  # (B, HW, 3) tokens
        return tok.mean(1) * 3, tok


def test_semantic_features_follow_the_paper():
    x = torch.rand(2, 3, 4, 4)
    f = features.semantic_features(TinyViT(), x)
    tok = x.flatten(2).transpose(1, 2)
    torch.testing.assert_close(f[:, :3], F.normalize(tok.mean(1), dim=1))
    torch.testing.assert_close(f[:, 3:], F.normalize(tok, dim=-1).mean(1))  # mean of normalised tokens
    assert features.semantic_features(TinyCNN(), x).shape == (2, 12)


def test_image_descriptor_weights_the_blocks():
    torch.manual_seed(0)
    net = TinyCNN()
    x = torch.rand(2, 3, 16, 16)
    d = features.ImageDescriptor(net, net, (1.0, 4.0, 0.25), 32)
    blocks = d.blocks(x)
    assert all(torch.allclose(b.norm(dim=1), torch.ones(2)) for b in blocks.values())
    full = d(x)
    expected = sum(w * (b[0] - b[1]).pow(2).sum() for w, b in zip((1.0, 4.0, 0.25), blocks.values()))
    torch.testing.assert_close((full[0] - full[1]).pow(2).sum(), expected)


def _items(n, shape=(8, 8), seed=0):
    rng = np.random.default_rng(seed)
    imgs = [rng.random((*shape, 3), dtype=np.float32) for _ in range(n)]
    return [features.Item(f"s_{i}", f"k{i}", shape, lambda im=im: im) for i, im in enumerate(imgs)]


def test_feature_cache_resumes_and_recomputes_changes(tmp_path):
    calls = []

    def describe(x):
        calls.append(len(x))
        if len(calls) == 3 and crash["on"]:
            raise KeyboardInterrupt
        return x.mean(dim=(2, 3))

    items = _items(10)
    crash = {"on": True}
    args = ("settings", lambda hw: hw, 2, "cpu")
    with pytest.raises(KeyboardInterrupt):
        features.extract(items, describe, features.FeatureCache(tmp_path / "c"), *args, progress=False)
    assert calls == [2, 2, 2]
    crash["on"], calls[:] = False, []
    resumed = features.extract(items, describe, features.FeatureCache(tmp_path / "c"), *args, progress=False)
    assert sum(calls) == 6  # the 4 finished items were not redone
    fresh = features.extract(items, describe, features.FeatureCache(tmp_path / "d"), *args, progress=False)
    np.testing.assert_array_equal(resumed, fresh)
    calls[:] = []
    changed = items[:3] + [features.Item("s_3", "new", (8, 8), items[4].load)] + items[4:]
    out = features.extract(changed, describe, features.FeatureCache(tmp_path / "c"), *args, progress=False)
    assert calls == [1] and np.array_equal(out[3], out[4])
    calls[:] = []
    features.extract(items, describe, features.FeatureCache(tmp_path / "c"), "other settings", *args[1:],
                     progress=False)
    assert sum(calls) == 10  # new settings: everything recomputed


def test_matching_items_need_earlier_notebooks(tiny_dataset, tmp_path):
    from isp_support.data import open_dataset

    with pytest.raises(FileNotFoundError, match="run 01_preprocess and 02_stitch"):
        features.matching_items(open_dataset(tiny_dataset), tmp_path)


def test_image_descriptor_blocks_split_back_out():
    net = TinyCNN()
    d = features.ImageDescriptor(net, net, (1.0, 4.0, 0.25), 32)
    x = torch.rand(3, 3, 16, 16)
    blocks, parts = d.blocks(x), d.split(d(x))
    for name in blocks:
        torch.testing.assert_close(parts[name], blocks[name])
