"""Photo sources: wheel photos, Debian packages (a locally built .deb, no network) and licences."""

import shutil
import subprocess

import numpy as np
import pytest
from PIL import Image

from isp_support.demo_data import photos as P
from isp_support.io import ShapeError, UnreadableFileError

DEP5 = """Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: demo-wallpapers

Files: *
Copyright: 2020 Someone
License: GPL-2+

Files: 16.04/lake_by_Ann.jpg
Copyright: Ann Example, 2018
License: CC-BY-4.0

Files: nature/Fern.jpg
       nature/Moss.jpg
Copyright: 2008, Bo <bo@example.org>
License: CC0-1.0
 Public domain dedication.
"""


def test_wheel_photos_exist_with_licences():
    photos = P.wheel_photos()
    assert len(photos) == 9
    assert all(p.path.is_file() and p.licence and "wheel" in p.source for p in photos)
    groups = [p.group for p in photos]
    assert groups.count("skimage/motorcycle") == 2  # the stereo pair is one scene
    rgb = P.load_photo(photos[0])
    assert rgb.dtype == np.float32 and rgb.ndim == 3 and 0 <= rgb.min() and rgb.max() <= 1


def test_dep5_parsing_and_last_match_wins():
    stanzas = P.parse_dep5(DEP5)
    assert [s[1] for s in stanzas] == ["GPL-2+", "CC-BY-4.0", "CC0-1.0"]
    assert P.licence_for("lake_by_Ann.jpg", stanzas) == ("CC-BY-4.0", "Ann Example, 2018")
    assert P.licence_for("Moss.jpg", stanzas)[0] == "CC0-1.0"
    assert P.licence_for("other.jpg", stanzas)[0] == "GPL-2+"
    assert P.licence_for("x.jpg", [])[0].startswith("unknown")


@pytest.mark.skipif(shutil.which("dpkg-deb") is None, reason="needs dpkg-deb")
def test_debian_package_unpacks_with_licences(tmp_path, monkeypatch):
    pkg = tmp_path / "pkg"
    (pkg / "DEBIAN").mkdir(parents=True)
    (pkg / "DEBIAN" / "control").write_text("Package: demo-wallpapers\nVersion: 1.2-3\nArchitecture: all\n"
                                            "Maintainer: t <t@example.org>\nDescription: test\n")
    (pkg / "usr/share/backgrounds").mkdir(parents=True)
    (pkg / "usr/share/doc/demo-wallpapers").mkdir(parents=True)
    (pkg / "usr/share/doc/demo-wallpapers/copyright").write_text(DEP5)
    for name in ("lake_by_Ann.jpg", "city.jpg"):
        Image.fromarray(np.full((40, 60, 3), 90, np.uint8)).save(pkg / "usr/share/backgrounds" / name)
    cache = tmp_path / "cache"
    (cache / "debs").mkdir(parents=True)
    subprocess.run(["dpkg-deb", "--build", "--root-owner-group", str(pkg),
                    str(cache / "debs" / "demo-wallpapers_1.2-3_all.deb")], check=True, capture_output=True)
    # stand in for `apt-get download`: the .deb is already in the cache's debs/ folder
    monkeypatch.setattr(P, "_apt_download", lambda package, dest: dest / f"{package}_1.2-3_all.deb")
    photos = P.debian_photos(cache, {"demo-wallpapers": "usr/share/backgrounds/*.jpg"})
    assert [(p.id, p.licence) for p in photos] == [("debian/city", "GPL-2+"), ("debian/lake_by_Ann", "CC-BY-4.0")]
    assert photos[0].source == "Debian package demo-wallpapers 1.2-3"
    assert not list(cache.glob(".*partial"))


def test_broken_deb_is_named(tmp_path):
    deb = tmp_path / "x.deb"
    deb.write_bytes(b"garbage")
    with pytest.raises(UnreadableFileError, match="x.deb"):
        P.extract_deb(deb, tmp_path / "x")
    assert not (tmp_path / "x").exists()


def test_bad_photos_are_named(tmp_path):
    gray = tmp_path / "gray.png"
    Image.fromarray(np.zeros((64, 64), np.uint8)).save(gray)
    with pytest.raises(ShapeError, match="gray.png.*grayscale"):
        P.load_photo(gray)
    tiny = tmp_path / "tiny.png"
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tiny)
    with pytest.raises(ShapeError, match="too small"):
        P.load_photo(tiny)
    (tmp_path / "empty").mkdir()
    with pytest.raises(UnreadableFileError, match="no photos"):
        P.folder_photos(tmp_path / "empty")
    with pytest.raises(UnreadableFileError, match="does not exist"):
        P.folder_photos(tmp_path / "nowhere")
