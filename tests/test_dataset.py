"""The demo dataset builder: layout, manifest, RAW statistics, determinism, atomicity."""

import json

import numpy as np
import pytest
from PIL import Image

from isp_support import dataset as B
from isp_support.data import UnreadableFileError, open_dataset, read_raw, read_rgb
from isp_support.photos import folder_photos, load_photo, wheel_photos
from isp_support.unprocess import Capture, Sensor, noise_variance, unprocess


def manifest(root):
    return json.loads((root / B.MANIFEST).read_text())


def test_built_dataset_reads_back(tiny_dataset, tiny_cfg):
    ds = open_dataset(tiny_dataset, check_values=True)  # raises on any problem
    m = manifest(tiny_dataset)
    patch = tiny_cfg.dataset.raw_patch
    roles = {r["scene"]: r for r in m["scenes"]}
    assert {r["role"] for r in roles.values()} == {"source", "target", "test"}
    for split, role in (("train", "source"), ("test", "test")):
        assert set(ds[split].raws) == {s for s, r in roles.items() if r["role"] == role}
        assert set(ds[split].gt) == set(ds[split].raws)  # ground truth for every RAW patch
        for scene in ds[split].raws.values():
            rec = roles[scene.name]
            assert len(scene) == rec["rows"] * rec["cols"]
            assert (rec["rows"], rec["cols"]) in tiny_cfg.dataset.grids
            raw = read_raw(scene.patches[0].path)
            assert raw.shape == (patch, patch, 4) and raw.dtype == np.uint16
    for scene in ds["train"].jpegs.values():
        assert read_rgb(scene.patches[0].path).shape == (2 * patch, 2 * patch, 3)
    # photo groups never straddle roles (no test scene is a training scene seen from another angle)
    groups = {}
    for rec in m["scenes"]:
        groups.setdefault(rec["group"], set()).add(rec["role"])
    assert all(len(v) == 1 for v in groups.values())


def test_manifest_records_sources_licences_and_checksums(tiny_dataset):
    m = manifest(tiny_dataset)
    assert m["seed"] == 0 and m["config"]["raw_patch"] == 16
    for rec in m["scenes"]:
        assert rec["licence"] and rec["source"].endswith("wheel") and len(rec["photo_sha256"]) == 64
    on_disk = {p.relative_to(tiny_dataset).as_posix() for p in tiny_dataset.rglob("*")
               if p.is_file() and p.name not in (B.MANIFEST, B.CONTACT_SHEET)}
    assert on_disk == set(m["files"])
    assert sum(m["counts"].values()) == len(m["files"])
    assert B.verify_manifest(tiny_dataset) == []


def test_tampering_is_detected(tiny_dataset, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(tiny_dataset, copy)
    victim = next(iter(sorted((copy / "train" / "raws").iterdir())))
    arr = np.load(victim)
    arr[0, 0, 0] ^= 1
    np.save(victim, arr)
    (copy / "test" / "gt" / sorted(p.name for p in (copy / "test" / "gt").iterdir())[0]).unlink()
    bad = B.verify_manifest(copy)
    assert len(bad) == 2 and any("checksum mismatch" in b for b in bad) and any("missing" in b for b in bad)


def _scene_raw(root, rec):
    tiles = [np.load(root / "train" / "raws" / f"{rec['scene']}_{i}.npy") for i in range(rec["rows"] * rec["cols"])]
    return np.concatenate([np.concatenate(tiles[r * rec["cols"]:(r + 1) * rec["cols"]], 1)
                           for r in range(rec["rows"])], 0)


def test_raw_statistics_match_the_parameters_used(tiny_dataset, tiny_cfg):
    """Re-run the noise-free unprocessing from the manifest; the stored RAW must be it plus the recorded noise."""
    m = manifest(tiny_dataset)
    sensor = Sensor(**m["sensor"])
    photos = {p.id: p for p in wheel_photos()}
    checked = 0
    for rec in (r for r in m["scenes"] if r["role"] == "source"):
        capture = Capture(**rec["capture"])
        plan = B.ScenePlan(rec["scene"], rec["role"], photos[rec["photo_id"]], rec["rows"], rec["cols"],
                           tuple(rec["crop"]))
        clean = unprocess(B.scene_image(load_photo(plan.photo), plan, tiny_cfg.dataset.raw_patch), sensor, capture)
        raw = _scene_raw(tiny_dataset, rec).astype(np.float64)
        assert raw.min() >= 0 and raw.max() <= 1023
        x = raw / 1023
        sigma = np.sqrt(noise_variance(clean, capture) + 1 / (12 * 1023 ** 2))
        # per-channel means follow the clean mosaic (so the sampled white-balance gains) within sampling error
        for c in range(4):
            unclipped = (clean[..., c] > 4 * sigma[..., c]) & (clean[..., c] < 1 - 4 * sigma[..., c])
            tol = 4 * np.sqrt(np.mean(sigma[..., c][unclipped] ** 2) / unclipped.sum()) + 0.5 / 1023
            assert abs(x[..., c][unclipped].mean() - clean[..., c][unclipped].mean()) < tol
        # the noise has the recorded level: normalised residuals have unit spread
        keep = (clean > 4 * sigma) & (clean < 1 - 4 * sigma)
        z = (x - clean)[keep] / sigma[keep]
        assert abs(z.mean()) < 4 / np.sqrt(z.size)
        assert abs(z.std() - 1) < 4 * np.sqrt(0.5 / z.size) + 0.02
        checked += 1
    assert checked >= 2


def test_same_seed_same_bytes_other_seed_differs(tiny_dataset, tiny_cfg, tmp_path):
    again = B.build_dataset(tmp_path / "again", tiny_cfg.dataset, seed=0, progress=False, log=lambda *_: None)
    assert manifest(again)["files"] == manifest(tiny_dataset)["files"]
    other = B.build_dataset(tmp_path / "other", tiny_cfg.dataset, seed=1, progress=False, log=lambda *_: None)
    assert manifest(other)["files"] != manifest(tiny_dataset)["files"]


def test_existing_identical_build_is_reused(tiny_cfg, tmp_path):
    out = B.build_dataset(tmp_path / "d", tiny_cfg.dataset, progress=False, log=lambda *_: None)
    stamp = (out / B.MANIFEST).stat().st_mtime_ns
    messages = []
    B.build_dataset(out, tiny_cfg.dataset, progress=False, log=messages.append)
    assert (out / B.MANIFEST).stat().st_mtime_ns == stamp and "up to date" in messages[0]


def test_killed_build_leaves_no_dataset(tiny_cfg, tmp_path, monkeypatch):
    calls = {"n": 0}
    real = B._write_scene

    def dying(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt  # as if the user killed the build
        return real(*args, **kwargs)

    monkeypatch.setattr(B, "_write_scene", dying)
    with pytest.raises(KeyboardInterrupt):
        B.build_dataset(tmp_path / "d", tiny_cfg.dataset, progress=False, log=lambda *_: None)
    assert list(tmp_path.iterdir()) == []  # neither the dataset nor a temporary folder


def test_bad_user_photo_is_named_and_nothing_written(tiny_cfg, tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    for k in range(3):
        Image.fromarray(np.full((64, 96, 3), 40 * k, np.uint8)).save(photos / f"p{k}.jpg")
    good = photos / "p1.jpg"
    good.write_bytes(good.read_bytes()[:300])
    cfg = tiny_cfg.replace(**{"dataset.photo_sources": ()}).dataset
    with pytest.raises(UnreadableFileError, match="p1.jpg"):
        B.build_dataset(tmp_path / "out", cfg, photo_folders=(photos,), progress=False, log=lambda *_: None)
    assert not (tmp_path / "out").exists()


def test_user_folder_builds(tiny_cfg, tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    rng = np.random.default_rng(0)
    for k in range(4):
        Image.fromarray(rng.integers(0, 255, (80, 120, 3), dtype=np.uint8)).save(photos / f"p{k}.png")
    cfg = tiny_cfg.replace(**{"dataset.photo_sources": ()}).dataset
    out = B.build_dataset(tmp_path / "out", cfg, photo_folders=(photos,), progress=False, log=lambda *_: None)
    open_dataset(out, check_values=True)
    assert {r["photo_id"] for r in manifest(out)["scenes"]} == {f"photos/p{k}" for k in range(4)}
    assert len(folder_photos(photos)) == 4


def test_contact_sheet_shows_every_scene(tiny_dataset):
    m = manifest(tiny_dataset)
    with Image.open(tiny_dataset / m["contact_sheet"]) as sheet:
        assert sheet.format == "PNG" and sheet.mode == "RGB"
        arr = np.asarray(sheet)
    n_thumbs = sum(2 if r["role"] == "test" else 1 for r in m["scenes"])
    assert arr.shape[1] >= 6 * 160 and arr.shape[0] >= 160 * (n_thumbs // 6)
    assert arr.std() > 20  # not a blank canvas


def test_grid_choice_follows_aspect():
    rng = np.random.default_rng(0)
    grids = ((2, 7), (7, 2), (5, 7), (7, 5), (6, 7), (7, 6))
    picks = {B.choose_grid(100, 350, grids, np.random.default_rng(s)) for s in range(20)}
    assert (2, 7) in picks and (7, 2) not in picks
    assert B.centre_crop_box(100, 400, 2.0) == (0, 100, 100, 200)
    assert B.centre_crop_box(400, 100, 0.5) == (100, 0, 200, 100)
    del rng
