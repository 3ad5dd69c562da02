"""Colour soft histograms and the matching descriptors."""

import dataclasses

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from isp_support import colour
from isp_support.embed import descriptors


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
    assert descriptors.fitted_size(300, 600, 448) == (224, 448)
    h, w = descriptors.fitted_size(512, 384, 224)
    assert h == 224 and w % 14 == 0 and abs(w / h - 0.75) < 0.05


def test_count_sketch_is_fixed_linear_and_norm_preserving():
    sketch = descriptors.CountSketch(50_000, 1024)
    again = descriptors.CountSketch(50_000, 1024)
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
    f = descriptors.semantic_features(TinyViT(), x)
    tok = x.flatten(2).transpose(1, 2)
    torch.testing.assert_close(f[:, :3], F.normalize(tok.mean(1), dim=1))
    torch.testing.assert_close(f[:, 3:], F.normalize(tok, dim=-1).mean(1))  # mean of normalised tokens
    assert descriptors.semantic_features(TinyCNN(), x).shape == (2, 12)


def test_image_descriptor_weights_the_blocks():
    torch.manual_seed(0)
    net = TinyCNN()
    x = torch.rand(2, 3, 16, 16)
    d = descriptors.ImageDescriptor(net, net, (1.0, 4.0, 0.25), 32)
    blocks = d.blocks(x)
    assert all(torch.allclose(b.norm(dim=1), torch.ones(2)) for b in blocks.values())
    full = d(x)
    expected = sum(w * (b[0] - b[1]).pow(2).sum() for w, b in zip((1.0, 4.0, 0.25), blocks.values()))
    torch.testing.assert_close((full[0] - full[1]).pow(2).sum(), expected)


def _items(n, shape=(8, 8), seed=0):
    rng = np.random.default_rng(seed)
    imgs = [rng.random((*shape, 3), dtype=np.float32) for _ in range(n)]
    return [descriptors.Item(f"s_{i}", f"k{i}", shape, lambda im=im: im) for i, im in enumerate(imgs)]


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
        descriptors.extract(items, describe, descriptors.FeatureCache(tmp_path / "c"), *args, progress=False)
    assert calls == [2, 2, 2]
    crash["on"], calls[:] = False, []
    resumed = descriptors.extract(items, describe, descriptors.FeatureCache(tmp_path / "c"), *args, progress=False)
    assert sum(calls) == 6  # the 4 finished items were not redone
    fresh = descriptors.extract(items, describe, descriptors.FeatureCache(tmp_path / "d"), *args, progress=False)
    np.testing.assert_array_equal(resumed, fresh)
    calls[:] = []
    changed = items[:3] + [descriptors.Item("s_3", "new", (8, 8), items[4].load)] + items[4:]
    out = descriptors.extract(changed, describe, descriptors.FeatureCache(tmp_path / "c"), *args, progress=False)
    assert calls == [1] and np.array_equal(out[3], out[4])
    calls[:] = []
    descriptors.extract(items, describe, descriptors.FeatureCache(tmp_path / "c"), "other settings", *args[1:],
                     progress=False)
    assert sum(calls) == 10  # new settings: everything recomputed


def test_matching_items_need_earlier_notebooks(tiny_dataset, tmp_path):
    from isp_support.data import open_dataset

    with pytest.raises(FileNotFoundError, match="run 01_preprocess and 02_stitch"):
        descriptors.matching_items(open_dataset(tiny_dataset), tmp_path)


def test_image_descriptor_blocks_split_back_out():
    net = TinyCNN()
    d = descriptors.ImageDescriptor(net, net, (1.0, 4.0, 0.25), 32)
    x = torch.rand(3, 3, 16, 16)
    blocks, parts = d.blocks(x), d.split(d(x))
    for name in blocks:
        torch.testing.assert_close(parts[name], blocks[name])


def test_extract_handles_layouts_the_demo_builder_never_makes(tmp_path):
    """Equal aspect but different sizes share a resized shape (they used to be stacked unresized), and a
    1 x 42 strip keeps a shortest side a VGG can pool five times."""
    assert min(descriptors.fitted_size(96, 4032, 224)) >= descriptors.MIN_SIDE
    shapes = {"a": (32, 48), "b": (64, 96), "strip": (16, 16 * 42)}
    rng = np.random.default_rng(0)
    arrays = {k: rng.random((*hw, 3), dtype=np.float32) for k, hw in shapes.items()}
    items = [descriptors.Item(k, k, hw, lambda k=k: arrays[k]) for k, hw in shapes.items()]
    seen = []

    def describe(x):
        seen.append(tuple(x.shape[-2:]))
        return F.max_pool2d(x, 2 ** 5).mean(dim=(2, 3))   # fails on inputs shorter than 32 px

    out = descriptors.extract(items, describe, descriptors.FeatureCache(tmp_path), "s",
                           lambda hw: descriptors.fitted_size(*hw, 112), 8, "cpu", progress=False)
    assert out.shape == (3, 3) and np.isfinite(out).all()
    assert descriptors.fitted_size(32, 48, 112) in seen and len(seen) == 2   # a and b in one batch
    for k, hw in shapes.items():   # each item's features are those of its own resized image
        x = descriptors.resize(torch.from_numpy(arrays[k]).permute(2, 0, 1)[None], descriptors.fitted_size(*hw, 112))
        np.testing.assert_allclose(out[list(shapes).index(k)], describe(x)[0].numpy(), rtol=1e-5)


def test_extract_handles_every_grid_the_layout_allows(tmp_path):
    """Scenes of 14, 35 or 42 patches in every grid they factor into, at three patch sizes, in one call."""
    grids = [(r, n // r) for n in (14, 35, 42) for r in range(1, n + 1) if n % r == 0]
    shapes = [(r * p, c * p) for r, c in grids for p in (8, 12, 16)]
    rng = np.random.default_rng(1)
    arrays = [rng.random((*hw, 3), dtype=np.float32) for hw in shapes]
    items = [descriptors.Item(str(i), str(i), hw, lambda i=i: arrays[i]) for i, hw in enumerate(shapes)]

    def describe(x):
        return F.max_pool2d(x, 2 ** 5).mean(dim=(2, 3))

    out = descriptors.extract(items, describe, descriptors.FeatureCache(tmp_path), "s",
                           lambda hw: descriptors.fitted_size(*hw, 112), 8, "cpu", progress=False)
    assert out.shape == (len(shapes), 3) and np.isfinite(out).all()
    for i in (0, len(shapes) // 2, len(shapes) - 1):
        x = descriptors.resize(torch.from_numpy(arrays[i]).permute(2, 0, 1)[None], descriptors.fitted_size(*shapes[i], 112))
        np.testing.assert_allclose(out[i], describe(x)[0].numpy(), rtol=1e-5)


def _scene_items(arrays):
    """Items for matching_descriptors: each array is a scene (image) and also its only patch ``<scene>_0``."""
    items = {f"{side}_{level}": [] for side in ("source", "target") for level in ("images", "patches")}
    for scene, (side, arr) in arrays.items():
        for level, item_id in (("images", scene), ("patches", f"{scene}_0")):
            items[f"{side}_{level}"].append(descriptors.Item(item_id, f"{item_id}-key", arr.shape[:2],
                                                          lambda a=arr: a))
    return items, {f"{scene}_0": scene for scene in arrays}


def test_grey_world_descriptors_ignore_a_scene_colour_cast_and_colour_block_is_appended(tmp_path):
    from isp_support.config import EmbedConfig

    rng = np.random.default_rng(1)
    photo = rng.uniform(0.2, 0.6, (32, 32, 3)).astype(np.float32)
    gains = np.array([0.6, 1.0, 0.8])
    gains *= photo.reshape(-1, 3).mean() / (photo.reshape(-1, 3).mean(0) * gains).mean()   # same grey level
    cast = (photo * gains).astype(np.float32)                       # the same scene under another white balance
    items, scene_of = _scene_items({"s": ("source", cast), "t": ("target", photo)})
    torch.manual_seed(0)
    net = TinyCNN()
    embed = EmbedConfig(image_side=28, patch_side=28, style_dim=16, cast="grey_world", patch_colour_weight=0.0)
    desc, _ = descriptors.matching_descriptors(items, scene_of, net, net, embed, tmp_path, "w", "cpu", progress=False)
    np.testing.assert_allclose(desc["source_images"], desc["target_images"], atol=1e-5)
    np.testing.assert_allclose(desc["source_patches"], desc["target_patches"], atol=1e-5)
    plain, _ = descriptors.matching_descriptors(items, scene_of, net, net, dataclasses.replace(embed, cast="none"),
                                             tmp_path, "w", "cpu", progress=False)
    assert np.abs(plain["source_images"] - plain["target_images"]).max() > 1e-2
    # A colour block of weight 4 appended to the patch descriptors: norm sqrt(1 + 4), semantic part unchanged.
    coloured, _ = descriptors.matching_descriptors(items, scene_of, net, net,
                                                dataclasses.replace(embed, patch_colour_weight=4.0), tmp_path, "w",
                                                "cpu", progress=False)
    width = desc["source_patches"].shape[1]
    np.testing.assert_allclose(coloured["source_patches"][:, :width], desc["source_patches"], atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(coloured["source_patches"], axis=1), np.sqrt(5.0), rtol=1e-5)
    with pytest.raises(ValueError, match="colour-cast"):
        descriptors.cast_normalised_items(items, scene_of, "sepia")
