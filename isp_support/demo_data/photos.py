"""Real photographs available offline, each with its source and licence.

Three kinds of source:

* ``wheels``: photos bundled inside installed packages (scikit-image,
  scikit-learn, matplotlib).
* ``debian``: Debian's wallpaper packages, fetched with ``apt-get download``
  and unpacked with ``dpkg-deb -x`` under ``data/photos/debian``. Each file's
  licence is read from the package's machine-readable ``copyright`` file.
* any folder of photos a user points at (licence given by the user).
"""

from __future__ import annotations

import fnmatch
import importlib.metadata
import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from ..io import ShapeError, UnreadableFileError

PHOTO_EXTS = (".jpg", ".jpeg", ".png", ".tif", ".tiff", ".webp")


class PhotoSourceUnavailable(RuntimeError):
    """A photo source cannot be used on this machine (no apt, no network to the mirror, ...)."""


@dataclass(frozen=True)
class Photo:
    id: str
    """Stable identifier, ``<source>/<name>``."""
    path: Path
    source: str
    """Where the file came from (package and version, or folder)."""
    licence: str
    attribution: str
    group: str
    """Photos of the same scene share a group and always land in the same split."""


# (module, relative path, licence, attribution, group)
_WHEEL_PHOTOS = (
    ("skimage", "data/astronaut.png", "Public domain (NASA)", "NASA, Eileen Collins", "astronaut"),
    ("skimage", "data/chelsea.png", "CC0-1.0", "Stefan van der Walt", "chelsea"),
    ("skimage", "data/coffee.png", "CC0-1.0", "Rachel Michetti, courtesy of Pikolo Espresso Bar", "coffee"),
    ("skimage", "data/rocket.jpg", "Public domain (SpaceX)", "SpaceX", "rocket"),
    ("skimage", "data/motorcycle_left.png", "Middlebury Stereo Datasets 2014 (research use)",
     "D. Scharstein et al., Middlebury", "motorcycle"),
    ("skimage", "data/motorcycle_right.png", "Middlebury Stereo Datasets 2014 (research use)",
     "D. Scharstein et al., Middlebury", "motorcycle"),
    ("sklearn", "datasets/images/china.jpg", "CC-BY-2.0", "danielbuechele (Flickr)", "china"),
    ("sklearn", "datasets/images/flower.jpg", "CC-BY-2.0", "vultilion (Flickr)", "flower"),
    ("matplotlib", "mpl-data/sample_data/grace_hopper.jpg", "Public domain (U.S. Navy)", "U.S. Navy", "grace_hopper"),
)
_DISTRIBUTIONS = {"skimage": "scikit-image", "sklearn": "scikit-learn", "matplotlib": "matplotlib"}

# Debian package -> glob of the photos to take from it (paths inside the package).
DEBIAN_PACKAGES = {
    "lomiri-wallpapers-16.04": "usr/share/backgrounds/*.jpg",
    "lomiri-wallpapers-20.04": "usr/share/backgrounds/*.jpg",
    "mate-backgrounds": "usr/share/backgrounds/mate/nature/*.jpg",
}


def wheel_photos() -> list[Photo]:
    """Photos shipped inside installed wheels; a missing file is an error, never skipped silently."""
    photos = []
    for module, rel, licence, attribution, group in _WHEEL_PHOTOS:
        mod = __import__(module)
        path = Path(mod.__file__).parent / rel
        if not path.is_file():
            raise PhotoSourceUnavailable(f"{path} not found: is the {_DISTRIBUTIONS[module]} wheel complete?")
        version = importlib.metadata.version(_DISTRIBUTIONS[module])
        photos.append(Photo(f"{module}/{path.stem}", path, f"{_DISTRIBUTIONS[module]} {version} wheel",
                            licence, attribution, f"{module}/{group}"))
    return photos


def folder_photos(folder: str | Path, licence: str = "user-supplied (licence not recorded)") -> list[Photo]:
    """Every photo file in ``folder`` (recursively), in name order."""
    folder = Path(folder)
    if not folder.is_dir():
        raise UnreadableFileError(folder, "photo folder does not exist")
    paths = sorted(p for p in folder.rglob("*") if p.suffix.lower() in PHOTO_EXTS and p.is_file())
    if not paths:
        raise UnreadableFileError(folder, f"no photos ({', '.join(PHOTO_EXTS)}) in this folder")
    tag = re.sub(r"[^A-Za-z0-9_.-]", "_", folder.name) or "folder"
    return [Photo(f"{tag}/{p.relative_to(folder).with_suffix('').as_posix()}", p, f"folder {folder}",
                  licence, "user-supplied", f"{tag}/{p.relative_to(folder).with_suffix('').as_posix()}")
            for p in paths]


def debian_photos(cache_dir: str | Path, packages: dict[str, str] | None = None) -> list[Photo]:
    """Photos from Debian wallpaper packages, downloaded once into ``cache_dir``.

    Raises :class:`PhotoSourceUnavailable` when apt cannot fetch a package.
    """
    cache_dir = Path(cache_dir)
    photos = []
    for package, pattern in (packages or DEBIAN_PACKAGES).items():
        root = unpack_debian_package(package, cache_dir)
        version = (root / ".version").read_text().strip()
        copyright_file = root / "usr/share/doc" / package / "copyright"
        licences = parse_dep5(copyright_file.read_text(errors="replace")) if copyright_file.is_file() else []
        for path in sorted(root.glob(pattern)):
            licence, holder = licence_for(path.name, licences)
            photos.append(Photo(f"debian/{path.stem}", path, f"Debian package {package} {version}",
                                licence, holder, f"debian/{path.stem}"))
    return photos


def unpack_debian_package(package: str, cache_dir: Path) -> Path:
    """``apt-get download`` + ``dpkg-deb -x`` into ``cache_dir/<package>`` (done once, atomically)."""
    root = cache_dir / package
    if (root / ".version").is_file():
        return root
    if shutil.which("apt-get") is None or shutil.which("dpkg-deb") is None:
        raise PhotoSourceUnavailable("apt-get/dpkg-deb not found: Debian photo packages need a Debian-based machine")
    debs = cache_dir / "debs"
    debs.mkdir(parents=True, exist_ok=True)
    deb = _apt_download(package, debs)
    return extract_deb(deb, root)


def extract_deb(deb: Path, root: Path) -> Path:
    """Unpack a ``.deb`` into ``root`` under a temporary name, then rename it into place."""
    tmp = root.with_name(f".{root.name}.partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        subprocess.run(["dpkg-deb", "-x", str(deb), str(tmp)], check=True, capture_output=True)
        version = subprocess.run(["dpkg-deb", "-f", str(deb), "Version"], check=True,
                                 capture_output=True, text=True).stdout.strip()
        (tmp / ".version").write_text(version + "\n")
        shutil.rmtree(root, ignore_errors=True)
        os.replace(tmp, root)
    except (subprocess.CalledProcessError, OSError) as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        detail = getattr(exc, "stderr", b"") or b""
        raise UnreadableFileError(deb, f"cannot unpack Debian package: {detail.decode(errors='replace') or exc}") from exc
    return root


def _apt_download(package: str, dest: Path) -> Path:
    def attempt() -> subprocess.CompletedProcess:
        return subprocess.run(["apt-get", "download", package], cwd=dest, capture_output=True, text=True)

    result = attempt()
    if result.returncode != 0 and os.geteuid() == 0:
        subprocess.run(["apt-get", "update", "-qq"], capture_output=True, text=True)  # package lists may be empty
        result = attempt()
    found = sorted(dest.glob(f"{package}_*.deb"))
    if result.returncode != 0 or not found:
        raise PhotoSourceUnavailable(f"apt-get download {package} failed: {result.stderr.strip()[-300:]}")
    return found[-1]


def parse_dep5(text: str) -> list[tuple[list[str], str, str]]:
    """Parse a machine-readable Debian copyright file into ``[(file patterns, licence, holders)]``."""
    stanzas = []
    for block in re.split(r"\n\s*\n", text):
        fields: dict[str, str] = {}
        key = None
        for line in block.splitlines():
            if line[:1].isspace() and key:
                fields[key] += "\n" + line.strip()
            elif ":" in line:
                key, _, value = line.partition(":")
                key = key.strip()
                fields[key] = value.strip()
        if "Files" in fields and "License" in fields:
            patterns = fields["Files"].split()
            licence = fields["License"].splitlines()[0].strip()
            holders = " ".join(fields.get("Copyright", "").split())
            stanzas.append((patterns, licence, holders))
    return stanzas


def licence_for(filename: str, stanzas: list[tuple[list[str], str, str]]) -> tuple[str, str]:
    """Licence and holders for a file; the last matching stanza wins (DEP-5 rule).

    Upstream paths may differ from installed ones (``16.04/x.jpg`` installs as
    ``backgrounds/x.jpg``), so patterns are matched on their base name too.
    """
    best = ("unknown (not listed in the package's copyright file)", "unknown")
    for patterns, licence, holders in stanzas:
        for pattern in patterns:
            if fnmatch.fnmatch(filename, pattern) or fnmatch.fnmatch(filename, pattern.rsplit("/", 1)[-1]):
                best = (licence, holders)
    return best


def load_photo(photo: Photo | Path) -> np.ndarray:
    """Decode a photo to ``float32 (H, W, 3)`` sRGB in [0, 1]; errors name the file."""
    path = photo.path if isinstance(photo, Photo) else Path(photo)
    try:
        with Image.open(path) as img:
            img.load()
            if img.mode in ("L", "LA", "I", "I;16", "F", "1"):
                raise ShapeError(path, f"grayscale photo (mode {img.mode}); the dataset needs colour photos")
            rgb = img.convert("RGB")
    except ShapeError:
        raise
    except (OSError, SyntaxError, ValueError) as exc:
        raise UnreadableFileError(path, f"cannot decode photo (truncated or corrupt): {exc}") from exc
    arr = np.asarray(rgb, dtype=np.float32) / 255.0
    if min(arr.shape[:2]) < 32:
        raise ShapeError(path, f"photo of {arr.shape[1]}x{arr.shape[0]} pixels is too small (needs at least 32x32)")
    return arr
