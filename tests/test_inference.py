"""Inference: tiled rendering equals one pass, 8-bit export rounds, camera RAW packing, the predict entry point."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch
from PIL import Image

from isp_support.evaluate import inference
from isp_support.evaluate.tiles import AUTO_TILE, network_tile, render, tiled
from isp_support.cli import main
from isp_support.config import PreprocessConfig, load_config
from isp_support.io import DataError
from isp_support.train.models import ColourNet
from isp_support.pipeline.raw import RawPipeline


def _net(head: str = "1x1", seed: int = 0) -> ColourNet:
    torch.manual_seed(seed)
    net = ColourNet(head=head)
    with torch.no_grad():  # away from the identity, so the 3x3 context matters
        net.conv2.weight.normal_(0, 0.05)
        if head == "1x1":
            net.head.weight.add_(0.1 * torch.randn_like(net.head.weight))
    return net.eval()


@pytest.mark.parametrize("head", ["1x1", "lut"])
@pytest.mark.parametrize("tile", [1, 7, 16, 33])
def test_tiled_rendering_equals_one_pass(head, tile):
    net = _net(head)
    image = torch.rand(2, 3, 37, 50)
    whole = render(net, image)
    # equal up to float32 summation order (convolution algorithms differ with the input size); a seam is > 1e-3
    torch.testing.assert_close(render(net, image, tile=tile), whole, atol=1e-6, rtol=0)
    torch.testing.assert_close(render(net, image[0], tile=tile), whole[0], atol=1e-6, rtol=0)


def test_auto_tile_is_cache_sized_on_the_cpu_and_gives_the_one_pass_result():
    assert network_tile("auto", "cpu") == AUTO_TILE["cpu"]
    assert network_tile("auto", "cuda:1") == AUTO_TILE["cuda"]
    assert network_tile(None, "cpu") is None and network_tile(40, "cpu") == 40
    with pytest.raises(ValueError, match="tile must be"):
        network_tile("big", "cpu")
    net, image = _net(), torch.rand(1, 3, 300, 260)  # larger than one CPU tile
    torch.testing.assert_close(render(net, image, tile="auto"), render(net, image), atol=1e-6,
                               rtol=0)


def test_tiling_without_context_shows_seams():
    net = _net()
    image = torch.rand(1, 3, 32, 32)
    seamy = tiled(lambda t: net(t), image, tile=16, context=0)
    with torch.no_grad():
        diff = (seamy - net(image)).abs()[0].amax(0)
    assert diff[:, 15:17].max() > 1e-3 and diff[3:12, 3:12].max() < 1e-6  # only along the tile borders


@pytest.mark.parametrize("demosaicker,denoiser", [("bilinear", "none"), ("demosaicnet", "ffdnet")])
def test_tiled_preprocessing_matches_one_pass(demosaicker, denoiser):
    cfg = load_config("tiny").preprocess.__class__(demosaicker=demosaicker, denoiser=denoiser, black_level=0.0,
                                                   white_level=1.0)
    pipe = RawPipeline(cfg)
    rng = np.random.default_rng(0)
    packed = torch.from_numpy(rng.uniform(0.05, 0.9, (1, 4, 90, 100)).astype(np.float32))
    whole = pipe(packed)
    tiles = tiled(lambda t: pipe(t), packed, tile=40, context=inference.PIPELINE_CONTEXT, scale=2)
    assert tiles.shape == whole.shape == (1, 3, 180, 200)
    assert (tiles - whole).abs().max() < 1e-5  # float32 summation order only


def test_predict_batches_equal_one_batch():
    net = _net()
    x = torch.rand(10, 3, 12, 12)
    assert torch.allclose(inference.predict(net, x, batch_size=3), net(x), atol=1e-6)


def test_to_uint8_rounds_and_clips():
    levels = np.arange(256, dtype=np.float64)
    for offset in (-0.49, 0.0, 0.49):
        values = np.clip((levels + offset) / 255.0, 0, 1).reshape(16, 16, 1).repeat(3, axis=2)
        assert np.array_equal(inference.to_uint8(values)[..., 0].ravel(), levels.astype(np.uint8))
    assert inference.to_uint8(np.full((1, 1, 3), 254.6 / 255))[0, 0, 0] == 255  # truncation would give 254
    assert inference.to_uint8(np.array([[[-0.2, 1.7, 0.5]]])).tolist() == [[[0, 255, 128]]]
    assert inference.to_uint8(torch.full((3, 2, 2), 0.6 / 255)).max() == 1


def test_save_png_round_trip(tmp_path):
    rgb = torch.rand(3, 9, 11)
    path = inference.save_png(tmp_path / "a" / "s_1.png", rgb)
    back = np.asarray(Image.open(path))
    assert back.dtype == np.uint8 and back.shape == (9, 11, 3)
    assert np.array_equal(back, inference.to_uint8(rgb))
    assert not list(tmp_path.glob("a/*.tmp"))


# --- camera RAW files ------------------------------------------------------------------------------------

def write_dng(path, bayer: np.ndarray, cfa: str = "RGGB", black: int = 64, white: int = 1023,
              neutral=((1, 2), (1, 1), (2, 3))):
    """A minimal uncompressed CFA DNG written with pidng."""
    from pidng.core import RAW2DNG, DNGTags, Tag
    from pidng.defs import CFAPattern, DNGVersion, PhotometricInterpretation

    h, w = bayer.shape
    tags = DNGTags()
    for tag, value in [(Tag.ImageWidth, w), (Tag.ImageLength, h), (Tag.TileWidth, w), (Tag.TileLength, h),
                       (Tag.Orientation, 1), (Tag.SamplesPerPixel, 1), (Tag.BitsPerSample, 16),
                       (Tag.PhotometricInterpretation, PhotometricInterpretation.Color_Filter_Array),
                       (Tag.CFARepeatPatternDim, [2, 2]), (Tag.CFAPattern, getattr(CFAPattern, cfa)),
                       (Tag.BlackLevel, black), (Tag.WhiteLevel, white),
                       (Tag.ColorMatrix1, [[1, 1], [0, 1], [0, 1], [0, 1], [1, 1], [0, 1], [0, 1], [0, 1], [1, 1]]),
                       (Tag.AsShotNeutral, [list(v) for v in neutral]), (Tag.Make, "isp-support"),
                       (Tag.Model, "synthetic"), (Tag.DNGVersion, DNGVersion.V1_4),
                       (Tag.DNGBackwardVersion, DNGVersion.V1_2)]:
        tags.set(tag, value)
    writer = RAW2DNG()
    writer.options(tags, path=str(path.parent), compress=False)
    return writer.convert(bayer.astype(np.uint16), filename=path.stem)


@pytest.mark.parametrize("cfa", ["RGGB", "BGGR", "GRBG", "GBRG"])
def test_read_camera_raw_packs_by_the_files_pattern(tmp_path, cfa):
    rng = np.random.default_rng(1)
    h, w = 32, 48  # LibRaw refuses images under about 22 pixels a side
    planes = {c: rng.integers(64, 1024, (h // 2, w // 2)) for c in ("R", "Gr", "Gb", "B")}
    bayer = np.zeros((h, w), np.int64)
    # place the planes by the named pattern: its first row holds R or B with the matching green
    letters = [cfa[0], cfa[1]], [cfa[2], cfa[3]]
    for dy in range(2):
        for dx in range(2):
            c = letters[dy][dx]
            if c == "G":
                c = "Gr" if "R" in letters[dy] else "Gb"
            bayer[dy::2, dx::2] = planes[c]
    path = write_dng(tmp_path / f"{cfa}.dng", bayer, cfa)
    packed, info = inference.read_camera_raw(path)
    assert info["cfa"] == cfa and packed.shape == (h // 2, w // 2, 4)
    for k, c in enumerate(("R", "Gr", "Gb", "B")):
        assert np.allclose(packed[..., k], np.clip((planes[c] - 64) / (1023 - 64), 0, 1), atol=1e-6), c


@pytest.mark.parametrize("black, white", [(1023, 1023), (900, 600)])
def test_a_dng_whose_white_level_is_not_above_its_black_level_is_refused(tmp_path, black, white):
    path = write_dng(tmp_path / "levels.dng", np.full((32, 48), 700), black=black, white=white)
    with pytest.raises(DataError, match=r"levels.dng: white level .* is not above the black levels"):
        inference.read_camera_raw(path)


def test_camera_white_balance_with_a_zero_neutral_is_refused(tmp_path, checkpoint):
    path = write_dng(tmp_path / "zero.dng", np.full((32, 48), 500), neutral=((0, 1), (1, 1), (2, 3)))
    predictor = inference.Predictor(checkpoint, device="cpu", tile=None)
    predictor.camera_raw(path)  # the configured gains: fine
    with pytest.raises(DataError, match="zero.dng: as-shot white balance .* zero, negative or non-finite"):
        predictor.camera_raw(path, camera_wb=True)


def test_read_camera_raw_names_a_bad_file(tmp_path):
    bad = tmp_path / "broken.dng"
    bad.write_bytes(b"not a raw file at all" * 10)
    with pytest.raises(DataError, match="broken.dng"):
        inference.read_camera_raw(bad)


# --- the predict entry point --------------------------------------------------------------------------------

FAST = PreprocessConfig(demosaicker="bilinear", denoiser="none")
"""Pre-processing that needs no model weights."""


def save_checkpoint(path, seed: int = 0, preprocess: PreprocessConfig | None = FAST, **entries):
    """A ``best.pt`` as :func:`isp_support.train.loop.train` writes it (``preprocess=None``: one written before
    checkpoints recorded their pre-processing); ``entries`` are added or replace the standard ones."""
    state = {"model": _net(seed=seed).state_dict(), "model_args": {"hidden": 128, "head": "1x1"}, "epoch": 0,
             "figures": {}, "preprocess": None if preprocess is None else dataclasses.asdict(preprocess)}
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state | entries, path)
    if path.name == "best.pt":  # a finished run's, as predict requires (its record is written last)
        (path.parent / "result.json").write_text(json.dumps({"best_epoch": 0}))
    return path


@pytest.fixture()
def checkpoint(tmp_path):
    """A trained-network file that records fast pre-processing."""
    return save_checkpoint(tmp_path / "run" / "train" / "net" / "best.pt")


def test_predict_folder_of_patches(tmp_path, checkpoint, capsys):
    rng = np.random.default_rng(2)
    src = tmp_path / "raws"
    src.mkdir()
    raws = {f"scene_{i}": rng.integers(0, 1024, (8, 12, 4)).astype(np.uint16) for i in (1, 2, 10)}
    raws["other_1"] = rng.integers(0, 1024, (6, 6, 4)).astype(np.uint16)  # another size: its own batch
    for name, arr in raws.items():
        np.save(src / f"{name}.npy", arr)
    out = tmp_path / "pngs"
    assert main(["predict", str(checkpoint), str(src), str(out), "--device", "cpu"]) == 0
    predictor = inference.Predictor(checkpoint, device="cpu")
    assert predictor.preprocess == FAST  # recorded in the checkpoint
    for name, arr in raws.items():
        png = np.asarray(Image.open(out / f"{name}.png"))
        assert png.dtype == np.uint8 and png.shape == (2 * arr.shape[0], 2 * arr.shape[1], 3)
        expected = inference.to_uint8(predictor.model(RawPipeline(predictor.preprocess)(arr))[0].detach())
        assert np.abs(png.astype(int) - expected.astype(int)).max() <= 1, name  # batch-size float noise only
    # a second run skips what exists; another checkpoint into the same folder is refused
    stamp = (out / "scene_1.png").stat().st_mtime_ns
    assert main(["predict", str(checkpoint), str(src), str(out), "--device", "cpu"]) == 0
    assert (out / "scene_1.png").stat().st_mtime_ns == stamp
    save_checkpoint(checkpoint, seed=5)
    assert main(["predict", str(checkpoint), str(src), str(out), "--device", "cpu"]) == 2
    assert "another checkpoint or settings" in capsys.readouterr().err


def test_predict_names_a_corrupt_patch(tmp_path, checkpoint):
    src = tmp_path / "raws"
    src.mkdir()
    np.save(src / "s_1.npy", np.zeros((8, 8, 3), np.uint16))
    with pytest.raises(DataError, match="s_1.npy"):
        inference.export_folder(inference.Predictor(checkpoint, device="cpu"), src, tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists()  # nothing written before every patch was read
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no RAW input"):
        inference.export_folder(inference.Predictor(checkpoint, device="cpu"), tmp_path / "empty", tmp_path / "o2")


def test_predict_renders_a_dng(tmp_path, checkpoint):
    rng = np.random.default_rng(3)
    yy, xx = np.mgrid[0:64, 0:96]
    bayer = 64 + (xx * 9 + yy * 5) % 900 + rng.integers(0, 20, (64, 96))
    dng = write_dng(tmp_path / "shot.dng", bayer)
    out = tmp_path / "out"
    assert main(["predict", str(checkpoint), str(dng), str(out), "--device", "cpu", "--tile", "32"]) == 0
    png = np.asarray(Image.open(out / "shot.png"))
    assert png.shape == (64, 96, 3) and png.dtype == np.uint8
    predictor = inference.Predictor(checkpoint, device="cpu", tile=None)
    whole, info = predictor.camera_raw(dng)
    assert info["cfa"] == "RGGB"
    assert np.abs(png.astype(int) - inference.to_uint8(whole).astype(int)).max() <= 1  # tiled == one pass


def test_predict_rejects_a_bad_tile(tmp_path, checkpoint, capsys):
    with pytest.raises(SystemExit) as stop:
        main(["predict", str(checkpoint), str(tmp_path), str(tmp_path / "out"), "--tile", "big"])
    assert stop.value.code == 2 and "expected 'auto' or a number of pixels, got 'big'" in capsys.readouterr().err
