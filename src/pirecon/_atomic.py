"""Atomic file writes: a temporary file in the target directory, renamed into place when complete.

The sequence is the one that survives a crash or a power cut: write the
temporary file, flush it to disk (``fsync``), rename it over the target, then
flush the directory so that the rename itself is on disk. The process umask is
never changed (``os.umask`` sets it for every thread of the process): the
temporary file is created with mode ``0o666`` and the kernel applies the umask,
as it does for any new file.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from pathlib import Path

__all__ = ["atomic_path"]

_TRIES = 100  # unique temporary names to try before giving up


def _create_temporary(path: Path) -> Path:
    """Create an empty, new file next to ``path`` with the usual permissions (``0o666`` less the umask)."""
    flags = os.O_CREAT | os.O_EXCL | os.O_WRONLY | getattr(os, "O_BINARY", 0) | getattr(os, "O_CLOEXEC", 0)
    for _ in range(_TRIES):
        tmp = path.parent / f".{path.name}.{secrets.token_hex(8)}.tmp"
        try:
            fd = os.open(tmp, flags, 0o666)
        except FileExistsError:
            continue
        os.close(fd)
        return tmp
    raise FileExistsError(f"{path.parent}: expected a free temporary name for {path.name!r}, "
                          f"found {_TRIES} names taken")


def _fsync_file(path: Path) -> None:
    """Flush the file at ``path`` to disk (callers write to it by name, so it is reopened here)."""
    # Windows flushes only handles opened for writing; elsewhere a read-only descriptor suffices and
    # works for files whose writer made them read-only.
    flags = (os.O_RDWR | getattr(os, "O_BINARY", 0)) if os.name == "nt" else os.O_RDONLY
    fd = os.open(path, flags)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_directory(directory: Path) -> None:
    """Flush ``directory``'s entries (the rename) to disk, where the platform supports it."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # directories cannot be opened on some platforms (Windows)
        return
    try:
        os.fsync(fd)
    except OSError:  # some file systems and platforms do not support fsync on a directory
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike):
    """Yield a temporary path next to ``path``; move it to ``path`` only if the block succeeds.

    The block writes the file by name (``h5py.File(tmp, "w")``, ``torch.save``,
    ``Path.write_text``, ``savefig``). On success the file is flushed to disk,
    renamed to ``path`` and the rename flushed, so that after a crash ``path``
    holds either its old content or the whole new one. A killed or failing
    writer leaves no file at ``path`` that looks whole, and a failing block
    leaves no temporary file behind.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _create_temporary(path)
    try:
        yield tmp
        _fsync_file(tmp)
        os.replace(tmp, path)
        _fsync_directory(path.parent)
    finally:
        if os.path.lexists(tmp):
            os.unlink(tmp)
