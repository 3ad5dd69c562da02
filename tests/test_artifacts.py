import os
import stat

import numpy as np
import pytest

from isp_support import artifacts
from isp_support.artifacts import atomic_directory, atomic_save_npy, atomic_write_bytes, atomic_write_json

UMASKS = [0o022, 0o077, 0o002]


@pytest.fixture(params=UMASKS, ids=oct)
def umask(request):
    old = os.umask(request.param)
    yield request.param
    os.umask(old)


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_atomic_files_get_the_mode_a_plain_write_gives(tmp_path, umask):
    with open(tmp_path / "plain", "w"):
        pass
    written = [atomic_write_bytes(tmp_path / "a.bin", b"x"), atomic_write_json(tmp_path / "a.json", {"a": 1}),
               atomic_save_npy(tmp_path / "a.npy", np.zeros(2))]
    assert [_mode(p) for p in written] == [_mode(tmp_path / "plain")] * 3 == [0o666 & ~umask] * 3


def test_atomic_directories_get_the_mode_a_plain_mkdir_gives(tmp_path, umask):
    os.mkdir(tmp_path / "plain")
    with atomic_directory(tmp_path / "new") as tmp:
        (tmp / "f").write_text("x")
    assert _mode(tmp_path / "new") == _mode(tmp_path / "plain") == 0o777 & ~umask
    with atomic_directory(tmp_path / "new", overwrite=True) as tmp:
        (tmp / "g").write_text("y")
    assert _mode(tmp_path / "new") == 0o777 & ~umask and os.listdir(tmp_path / "new") == ["g"]


def test_umask_without_proc_falls_back_to_setting_it(monkeypatch, umask):
    assert artifacts.current_umask() == umask
    monkeypatch.setattr(artifacts, "_PROC_STATUS", "/nonexistent/status")
    assert artifacts.current_umask() == umask
    assert os.umask(umask) == umask  # the fallback put it back


def test_hashing_refuses_what_is_not_a_regular_file(tmp_path):
    from isp_support.artifacts import sha256_file
    from isp_support.io import UnreadableFileError

    os.mkfifo(tmp_path / "fifo")
    (tmp_path / "zero").symlink_to("/dev/zero")
    for name in ("fifo", "zero"):
        with pytest.raises(UnreadableFileError, match="not a regular file"):
            sha256_file(tmp_path / name)
