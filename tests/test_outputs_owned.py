"""Output commands replace only what they made: a user's folder, file or added files are never deleted or changed."""

import json
import os
import string
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from isp_support.artifacts import ForeignFolderError, atomic_directory
from isp_support.cli import main
from isp_support.demo_data.build import MANIFEST, made_files
from isp_support.runs import RunDirError, check_run_dir
from isp_support.site import SITE_RECORD, site_files

NAMES = st.text(string.ascii_letters + string.digits + "._- ", min_size=1, max_size=12).filter(
    lambda n: n not in (".", ".."))


def snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def plant(root: Path, files: dict[tuple[str, ...], bytes]) -> None:
    for parts, data in files.items():
        path = root.joinpath(*parts)
        if any(parent.is_file() for parent in path.parents) or path.is_dir():
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)


def made_site(root: Path, files: list[str]) -> None:
    """A site folder as build-site leaves it: its files and the record listing them."""
    for name in files:
        (root / name).write_text("made by build-site")
    (root / SITE_RECORD).write_text(json.dumps({"made_by": "build-site", "files": [*files, SITE_RECORD]}))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(user=st.dictionaries(st.lists(NAMES, min_size=1, max_size=3).map(tuple), st.binary(max_size=64),
                            min_size=1, max_size=6),
       record=st.sampled_from(["none", "site", "dataset", "damaged"]))
def test_no_user_file_is_ever_deleted_or_changed(tmp_path_factory, user, record):
    """Random folders with planted user files at --out, some beside a real record of the command: each one is
    refused and left byte for byte as it was."""
    out = tmp_path_factory.mktemp("out") / "target"
    out.mkdir()
    if record == "site":
        made_site(out, ["index.html"])
    elif record == "dataset":
        (out / MANIFEST).write_text(json.dumps({"builder_version": 1, "files": {"train/a.png": "x"}}))
    elif record == "damaged":
        (out / SITE_RECORD).write_text("{not json")
    plant(out, {k: v for k, v in user.items() if k[0] not in (SITE_RECORD, MANIFEST, "index.html")})
    before = snapshot(out)
    if len(before) == (record in ("site", "dataset", "damaged")) + (record == "site"):
        return  # every planted name collided with the record's own files: nothing of the user's to protect
    for owned in (site_files, made_files):
        with pytest.raises(ForeignFolderError), atomic_directory(out, overwrite=True, owned=owned) as tmp:
            (tmp / "new").write_text("replacement")
        assert snapshot(out) == before
    assert not [p for p in out.parent.iterdir() if p.name != "target"]  # no hidden .old or .partial left


def test_a_folder_holding_only_what_the_command_made_is_replaced(tmp_path):
    out = tmp_path / "site"
    out.mkdir()
    (out / "_static").mkdir()
    made_site(out, ["index.html", "_static/style.css"])
    with atomic_directory(out, overwrite=True, owned=site_files) as tmp:
        (tmp / "index.html").write_text("new")
    assert snapshot(out) == {"index.html": b"new"}


def test_a_file_at_out_is_refused_and_not_moved_aside(tmp_path):
    out = tmp_path / "notes.txt"
    out.write_text("mine")
    with pytest.raises(ForeignFolderError, match="not a folder"), atomic_directory(out, overwrite=True,
                                                                                   owned=site_files):
        pass
    assert out.read_text() == "mine" and sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]


def test_build_site_into_a_run_folder_is_refused_by_name(tmp_path, capsys):
    run = tmp_path / "run"
    (run / "notebooks").mkdir(parents=True)
    (run / "run.json").write_text("{}")
    before = snapshot(run)
    assert main(["build-site", "--run-dir", str(run), "--out", str(run)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and str(run) in err and "not made by build-site" in err
    assert snapshot(run) == before


def test_build_dataset_into_a_photo_folder_is_refused_before_reading_it(tmp_path, capsys):
    photos = tmp_path / "photos"
    photos.mkdir()
    (photos / "holiday.jpg").write_bytes(b"not really a jpeg")
    assert main(["build-dataset", "--profile", "tiny", "--photos", str(photos), "--out", str(photos)]) == 2
    assert "not made by build-dataset" in capsys.readouterr().err
    assert snapshot(photos) == {"holiday.jpg": b"not really a jpeg"}


def test_a_run_folder_is_never_the_source_tree_or_the_series_notebooks(tmp_path):
    import isp_support

    with pytest.raises(RunDirError, match="source tree"):
        check_run_dir(Path(isp_support.__file__).parent / "runs")
    (tmp_path / "notebooks").mkdir()
    with pytest.raises(RunDirError, match="series' own"):
        check_run_dir(tmp_path, tmp_path / "notebooks")
    check_run_dir(tmp_path / "runs" / "demo", tmp_path / "notebooks")
    assert os.listdir(tmp_path) == ["notebooks"]


def test_an_operating_system_error_is_one_named_line(tmp_path, capsys):
    """An output under a file: mkdir fails (as a full disk or a read-only folder fails: an OSError), said in one
    line naming the file, without the errno."""
    blocker = tmp_path / "blocker"
    blocker.write_text("a file, not a folder")
    assert main(["build-dataset", "--profile", "tiny", "--out", str(blocker / "data")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert f"{blocker}: File exists" in err
