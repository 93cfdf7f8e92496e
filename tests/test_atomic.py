import os
import stat

import pytest

from pirecon import _atomic
from pirecon._atomic import atomic_path


@pytest.fixture
def umask_forbidden(monkeypatch):
    """Fail the test if anything calls ``os.umask`` (it sets the mask of every thread of the process)."""
    def no_umask(*args):
        raise AssertionError("os.umask was called: it changes the umask of the whole process")

    monkeypatch.setattr(os, "umask", no_umask)


def test_file_appears_only_when_the_block_succeeds(tmp_path, umask_forbidden):
    target = tmp_path / "sub" / "out.txt"
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("killed")
    assert not target.exists()
    assert list((tmp_path / "sub").iterdir()) == []  # no temporary file left behind
    with atomic_path(target) as tmp:
        tmp.write_text("whole")
    assert target.read_text() == "whole"
    assert list((tmp_path / "sub").iterdir()) == [target]


def test_a_failing_block_keeps_the_old_file(tmp_path, umask_forbidden):
    target = tmp_path / "out.txt"
    target.write_text("old")
    with pytest.raises(OSError, match="disk full"):
        with atomic_path(target) as tmp:
            tmp.write_text("new, half")
            raise OSError("disk full")
    assert target.read_text() == "old"
    assert list(tmp_path.iterdir()) == [target]


def test_the_temporary_file_is_new_and_in_the_target_directory(tmp_path):
    target = tmp_path / "out.txt"
    with atomic_path(target) as first, atomic_path(target) as second:
        assert first != second and first.parent == second.parent == tmp_path
        assert first.exists() and first.stat().st_size == 0
        first.write_text("1")
        second.write_text("2")
    assert target.read_text() == "1"  # the last rename wins
    assert list(tmp_path.iterdir()) == [target]


@pytest.mark.skipif(os.name != "posix", reason="POSIX permission bits")
@pytest.mark.parametrize("mask, mode", [(0o022, 0o644), (0o027, 0o640), (0o077, 0o600), (0o002, 0o664)])
def test_permissions_follow_the_umask_without_changing_it(tmp_path, monkeypatch, mask, mode):
    real_umask = os.umask
    old = real_umask(mask)
    try:
        monkeypatch.setattr(os, "umask", lambda *args: pytest.fail("os.umask was called"))
        with atomic_path(tmp_path / "f") as tmp:
            tmp.write_text("x")
        monkeypatch.undo()
    finally:
        assert real_umask(old) == mask  # nobody changed the umask meanwhile
    assert stat.S_IMODE((tmp_path / "f").stat().st_mode) == mode


@pytest.mark.skipif(os.name != "posix", reason="directories are opened and flushed on POSIX")
def test_file_and_directory_are_flushed_around_the_rename(tmp_path, monkeypatch, umask_forbidden):
    target = tmp_path / "out.bin"
    real_fsync, synced = os.fsync, []

    def recording_fsync(fd):
        st = os.fstat(fd)
        what = "dir" if stat.S_ISDIR(st.st_mode) else "file"
        # the file must be flushed with its whole content before the rename, the directory after it
        synced.append((what, st.st_ino, st.st_size, target.exists()))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", recording_fsync)
    with atomic_path(target) as tmp:
        tmp.write_bytes(b"0123456789")
        synced.append(("written", tmp.stat().st_ino, None, None))
    ino = synced[0][1]
    assert synced == [("written", ino, None, None),
                      ("file", ino, 10, False),
                      ("dir", tmp_path.stat().st_ino, synced[2][2], True)]
    assert target.stat().st_ino == ino and target.read_bytes() == b"0123456789"


def test_no_flush_when_the_block_fails(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(os, "fsync", lambda fd: calls.append(fd))
    with pytest.raises(RuntimeError):
        with atomic_path(tmp_path / "f") as tmp:
            tmp.write_text("half")
            raise RuntimeError("killed")
    assert calls == [] and list(tmp_path.iterdir()) == []


@pytest.mark.skipif(os.name != "posix", reason="directories are opened and flushed on POSIX")
def test_directory_fsync_unsupported_is_tolerated(tmp_path, monkeypatch):
    real_fsync = os.fsync

    def fsync(fd):
        if stat.S_ISDIR(os.fstat(fd).st_mode):
            raise OSError(22, "Invalid argument")  # file systems without directory fsync answer EINVAL
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    with atomic_path(tmp_path / "f") as tmp:
        tmp.write_text("x")
    assert (tmp_path / "f").read_text() == "x"


def test_a_failing_file_fsync_is_not_hidden(tmp_path, monkeypatch):
    def fsync(fd):
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(os, "fsync", fsync)
    with pytest.raises(OSError, match="Input/output error"):
        with atomic_path(tmp_path / "f") as tmp:
            tmp.write_text("x")
    assert list(tmp_path.iterdir()) == []  # neither the target nor the temporary file


def test_writers_that_reopen_the_path_work(tmp_path):
    import h5py
    import numpy as np
    import torch

    with atomic_path(tmp_path / "a.h5") as tmp:
        with h5py.File(tmp, "w") as f:
            f["x"] = np.arange(3)
    with h5py.File(tmp_path / "a.h5") as f:
        assert f["x"][:].tolist() == [0, 1, 2]
    with atomic_path(tmp_path / "b.pt") as tmp:
        torch.save({"w": torch.ones(2)}, tmp)
    assert torch.load(tmp_path / "b.pt", weights_only=True)["w"].tolist() == [1.0, 1.0]
    with atomic_path(tmp_path / "c.bin") as tmp, open(tmp, "wb") as f:
        f.write(b"abc")
    assert (tmp_path / "c.bin").read_bytes() == b"abc"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.h5", "b.pt", "c.bin"]


def test_temporary_names_are_retried_when_taken(tmp_path, monkeypatch):
    names = iter(["aa", "aa", "bb"])
    monkeypatch.setattr(_atomic.secrets, "token_hex", lambda n: next(names))
    (tmp_path / ".f.aa.tmp").write_text("someone else's")
    with atomic_path(tmp_path / "f") as tmp:
        assert tmp.name == ".f.bb.tmp"
        tmp.write_text("x")
    assert (tmp_path / ".f.aa.tmp").read_text() == "someone else's"
