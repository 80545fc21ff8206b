"""Atomic writes: whole files or none, no temporaries left, permissions from the umask."""
import os
import stat

import pytest

from harness import storage
from harness.storage import atomic_write_bytes


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path, monkeypatch):
    target = tmp_path / "results.json"
    atomic_write_bytes(target, b"old")

    def broken_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(storage.os, "replace", broken_replace)
    with pytest.raises(OSError, match="disk full"):
        atomic_write_bytes(target, b"new")
    assert target.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results.json"]


def test_files_get_the_usual_permissions(tmp_path):
    path = atomic_write_bytes(tmp_path / "sub" / "x.bin", b"1")
    mask = os.umask(0)
    os.umask(mask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~mask


@pytest.fixture
def umask_027():
    """The process umask set to 0o027 for one test (after the harness was imported)."""
    set_umask = os.umask  # the real one, whatever a test patches
    old = set_umask(0o027)
    yield 0o027
    set_umask(old)


def test_the_umask_is_read_when_writing_not_at_import(tmp_path, umask_027):
    """A program that sets its umask after importing the harness gets files by that umask."""
    path = atomic_write_bytes(tmp_path / "x.bin", b"1")
    assert stat.S_IMODE(path.stat().st_mode) == 0o640
    with storage.staged_directory(tmp_path / "run") as staging:
        assert stat.S_IMODE(staging.stat().st_mode) == 0o750


def test_importing_storage_leaves_the_umask_alone():
    import subprocess
    import sys

    code = ("import os\n"
            "def refuse(*args): raise AssertionError('os.umask called at import')\n"
            "os.umask = refuse\n"
            "import harness.storage\n"
            "print('ok')\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="no /proc (not Linux)")
def test_on_linux_the_umask_is_read_without_changing_it(monkeypatch, umask_027):
    def refuse(*args):
        raise AssertionError("os.umask changes process-wide state other threads see")

    monkeypatch.setattr(storage.os, "umask", refuse)
    assert storage._umask() == 0o027


def test_a_streamed_write_that_fails_midway_leaves_the_old_file(tmp_path):
    target = tmp_path / "weights.pth"
    atomic_write_bytes(target, b"old")
    with pytest.raises(ConnectionError):
        with storage.atomic_writer(target) as out:
            out.write(b"new, half")
            raise ConnectionError("the connection dropped")
    assert target.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["weights.pth"]
    with storage.atomic_writer(target) as out:
        out.write(b"new, ")
        out.write(b"whole")
    assert target.read_bytes() == b"new, whole"
