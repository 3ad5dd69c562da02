"""The demo dataset builder: layout, manifest, RAW statistics, determinism, atomicity, crops."""

import hashlib
import itertools
import json
import re
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from isp_support.demo_data import build as B
from isp_support.demo_data import crops as C
from isp_support.config import DatasetConfig, load_config
from isp_support.data import open_dataset, parse_patch_name
from isp_support.io import UnreadableFileError, read_raw, read_rgb
from isp_support.demo_data.photos import Photo, folder_photos, load_photo, wheel_photos
from isp_support.demo_data.unprocess import Capture, Sensor, noise_variance, unprocess


def manifest(root):
    return json.loads((root / B.MANIFEST).read_text())


CROPS = {"dataset.crops_per_photo": 3, "dataset.target_crops_per_photo": 4}


@pytest.fixture(scope="module")
def cropped_cfg(tiny_cfg):
    return tiny_cfg.replace(**CROPS)


@pytest.fixture(scope="module")
def cropped_dataset(tmp_path_factory, cropped_cfg):
    """The tiny dataset with up to 3 crops per source/test photo and 4 per target photo."""
    return B.build_dataset(tmp_path_factory.mktemp("cropped") / "tiny", cropped_cfg.dataset, seed=0,
                           progress=False, log=lambda *_: None)


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


@pytest.mark.parametrize("which", ["tiny_dataset", "cropped_dataset"])
def test_raw_statistics_match_the_parameters_used(which, request, tiny_cfg):
    """Re-run the noise-free unprocessing from the manifest; the stored RAW must be it plus the recorded noise."""
    tiny_dataset = request.getfixturevalue(which)
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
    picks = {C.choose_grid(100, 350, grids, np.random.default_rng(s)) for s in range(20)}
    assert (2, 7) in picks and (7, 2) not in picks
    assert C.centre_crop_box(100, 400, 2.0) == (0, 100, 100, 200)
    assert C.centre_crop_box(400, 100, 0.5) == (100, 0, 200, 100)
    del rng


# --- several crops per photo --------------------------------------------------

def _photo(name="p"):
    return Photo(f"fake/{name}", Path(f"{name}.jpg"), "test", "CC0-1.0", "nobody", f"fake/{name}")


def _blank(h, w):
    """A stand-in decoded photo: only its shape is read when planning."""
    return np.broadcast_to(np.zeros(1, np.float32), (h, w, 3))


def _overlap(a, b):
    (t1, l1, h1, w1), (t2, l2, h2, w2) = a, b
    return t1 < t2 + h2 and t2 < t1 + h1 and l1 < l2 + w2 and l2 < l1 + w1


def _old_plan(roles, images, cfg, seed):
    """Builder version 1's _plan_scenes, verbatim (one scene per photo)."""
    plans = []
    prefix = {"source": "src", "target": "tgt", "test": "test"}
    for role in B.ROLES:
        for k, photo in enumerate(roles[role]):
            h, w = images[photo.id].shape[:2]
            rows, cols = C.choose_grid(h, w, cfg.grids, C.photo_rng(seed, photo, 0))
            crop = C.centre_crop_box(h, w, cols / rows)
            plans.append(B.ScenePlan(f"{prefix[role]}{k:03d}", role, photo, rows, cols, crop))
    return plans


DEMO = load_config("demo", environ={}).dataset
SIZES = ((1080, 1920), (1200, 1920), (3168, 4224), (3837, 2560), (4096, 4096), (1074, 1365), (2988, 5312),
         (500, 667), (700, 700))


@pytest.mark.parametrize("n", [2, 3, 4, 7])
def test_crops_are_disjoint_inside_the_photo_at_their_grid_aspect_and_never_upscaled(n):
    scene_px = 2 * DEMO.raw_patch
    for (h, w), seed in itertools.product(SIZES, range(3)):
        crops = C.photo_crops(h, w, n, DEMO.grids, DEMO.raw_patch, seed, _photo(f"{h}x{w}"))
        assert 1 <= len(crops) <= n
        for rows, cols, (top, left, ch, cw) in crops:
            assert (rows, cols) in DEMO.grids
            assert top >= 0 and left >= 0 and top + ch <= h and left + cw <= w
            assert abs(np.log(cw / ch) - np.log(cols / rows)) < 0.01
            if len(crops) > 1:
                assert ch >= rows * scene_px and cw >= cols * scene_px
        for (_, _, a), (_, _, b) in itertools.combinations(crops, 2):
            assert not _overlap(a, b)
    # a 4K photo has room for every crop asked for
    assert len(C.photo_crops(2160, 3840, n, DEMO.grids, DEMO.raw_patch, 0, _photo())) == n


def test_photo_too_small_for_two_crops_gives_the_single_centred_crop():
    # the smallest demo scene (3 x 4 patches of 96 px) needs 288 x 384: two do not fit in these
    for h, w in ((512, 512), (427, 569), (300, 451), (700, 380)):
        photo = _photo(f"{h}x{w}")
        crops = C.photo_crops(h, w, 4, DEMO.grids, DEMO.raw_patch, 0, photo)
        rows, cols = C.choose_grid(h, w, DEMO.grids, C.photo_rng(0, photo, 0))
        assert crops == [(rows, cols, C.centre_crop_box(h, w, cols / rows))]
        assert crops == C.photo_crops(h, w, 1, DEMO.grids, DEMO.raw_patch, 0, photo)
    # room for two but not four: two
    assert len(C.photo_crops(500, 667, 4, DEMO.grids, DEMO.raw_patch, 0, _photo())) == 2


def _fake_roles(n_photos=12):
    photos = [_photo(f"p{k:02d}") for k in range(n_photos)]
    sizes = [SIZES[k % len(SIZES)] for k in range(n_photos)]
    images = {p.id: _blank(*hw) for p, hw in zip(photos, sizes)}
    return photos, images


def test_one_crop_per_photo_reproduces_the_old_plan_and_build_key(tiny_cfg):
    photos, images = _fake_roles()
    one_crop = replace(DEMO, crops_per_photo=1, target_crops_per_photo=None)
    for cfg in (one_crop, tiny_cfg.dataset, DatasetConfig()):
        for seed in (0, 1):
            roles = B.assign_roles(photos, cfg.split_fractions, seed)
            assert B._plan_scenes(roles, images, cfg, seed) == _old_plan(roles, images, cfg, seed)
    # fields at their defaults stay out of the build key, so datasets built before crops stay up to date
    look = B.PhoneLook()
    wheels = wheel_photos()
    cfg = tiny_cfg.dataset
    old = {k: v for k, v in asdict(cfg).items() if k not in ("crops_per_photo", "target_crops_per_photo")}
    blob = json.dumps({"builder": 1, "config": old, "seed": 0, "look": look.to_dict(),
                       "photos": [(p.id, B.sha256_file(p.path)) for p in wheels]}, sort_keys=True)
    assert B.build_key(cfg, 0, wheels, look) == hashlib.sha256(blob.encode()).hexdigest()
    assert B.build_key(replace(cfg, crops_per_photo=2), 0, wheels, look) != B.build_key(cfg, 0, wheels, look)


def test_crop_plan_is_deterministic_and_follows_the_seed():
    photos, images = _fake_roles()
    cfg = replace(DEMO, crops_per_photo=3, target_crops_per_photo=4)
    roles = B.assign_roles(photos, cfg.split_fractions, 0)
    plan = B._plan_scenes(roles, images, cfg, 0)
    assert plan == B._plan_scenes(roles, images, cfg, 0)
    assert plan != B._plan_scenes(roles, images, cfg, 1)
    per_role = {r: max(sum(1 for s in plan if s.photo.id == p.id) for p in roles[r]) for r in B.ROLES}
    assert per_role == {"source": 3, "target": 4, "test": 3}


def test_cropped_dataset_keeps_every_photo_in_one_split(cropped_dataset, cropped_cfg):
    ds = open_dataset(cropped_dataset, check_values=True)
    m = manifest(cropped_dataset)
    recs = m["scenes"]
    names = [r["scene"] for r in recs]
    assert len(names) == len(set(names))
    by_photo = {}
    for rec in recs:
        by_photo.setdefault(rec["photo_id"], []).append(rec)
    limit = {"source": 3, "target": 4, "test": 3}
    assert any(len(v) > 1 for v in by_photo.values())
    for photo_id, crops in by_photo.items():
        assert len({r["role"] for r in crops}) == 1 and len({r["group"] for r in crops}) == 1
        assert 1 <= len(crops) <= limit[crops[0]["role"]]
        assert [r["crop_index"] for r in crops] == list(range(len(crops)))
        base = crops[0]["scene"]
        assert re.fullmatch(r"(src|tgt|test)\d{3}", base)
        assert [r["scene"] for r in crops] == [base] + [f"{base}c{j}" for j in range(1, len(crops))]
        h, w = crops[0]["photo_size"]
        for r in crops:
            top, left, ch, cw = r["crop"]
            assert top >= 0 and left >= 0 and top + ch <= h and left + cw <= w
        for a, b in itertools.combinations(crops, 2):
            assert not _overlap(a["crop"], b["crop"])
        if crops[0]["role"] == "source" and len(crops) > 1:  # per-scene illuminant and noise
            assert len({json.dumps(r["capture"], sort_keys=True) for r in crops}) == len(crops)
    for rec in (r for r in recs if r["role"] == "test"):
        assert {"test"} == {x["role"] for x in by_photo[rec["photo_id"]]}
    groups = {}
    for rec in recs:
        groups.setdefault(rec["group"], set()).add(rec["role"])
    assert all(len(v) == 1 for v in groups.values())
    # every file name parses back to its scene
    for rel in m["files"]:
        scene, _ = parse_patch_name(rel)
        assert scene in set(names)
    assert set(ds["train"].raws) == {r["scene"] for r in recs if r["role"] == "source"}
    assert set(ds["train"].jpegs) == {r["scene"] for r in recs if r["role"] == "target"}
    assert set(ds["test"].raws) == {r["scene"] for r in recs if r["role"] == "test"}
    assert B.verify_manifest(cropped_dataset) == []
    with Image.open(cropped_dataset / m["contact_sheet"]) as sheet:
        n_thumbs = sum(2 if r["role"] == "test" else 1 for r in recs)
        assert sheet.size[1] >= 160 * (n_thumbs // 6)


def test_cropped_build_is_deterministic(cropped_dataset, cropped_cfg, tmp_path):
    again = B.build_dataset(tmp_path / "again", cropped_cfg.dataset, seed=0, progress=False, log=lambda *_: None)
    assert manifest(again)["files"] == manifest(cropped_dataset)["files"]
    assert manifest(again)["build_key"] == manifest(cropped_dataset)["build_key"]


@pytest.mark.parametrize("bad", [{"dataset.crops_per_photo": 0}, {"dataset.target_crops_per_photo": -1}])
def test_bad_crop_count_fails_before_writing(tiny_cfg, tmp_path, bad):
    with pytest.raises(B.DatasetBuildError, match="crops per photo"):
        B.build_dataset(tmp_path / "d", tiny_cfg.replace(**bad).dataset, progress=False, log=lambda *_: None)
    assert not (tmp_path / "d").exists()
