"""On-disk cache of sparse matrices derived from a geometry (the ray transform's system matrix).

Files live under ``$PIRECON_CACHE_DIR`` (default ``$XDG_CACHE_HOME/pirecon``
or ``~/.cache/pirecon``), one ``.npz`` per (kind, geometry fingerprint),
written atomically. A file that is unreadable, truncated, or written for
another geometry or format is ignored and rebuilt. While one process builds
a matrix it holds a lock file, so concurrent jobs (DDP ranks, parallel test
workers) wait and then load instead of all building at once.
"""

from __future__ import annotations

import contextlib
import os
import warnings
from pathlib import Path
from typing import Callable

import numpy as np
import scipy.sparse as sp

from .._atomic import atomic_path

__all__ = ["cache_dir", "cached_matrix"]


def cache_dir() -> Path:
    """Where matrices are cached: ``$PIRECON_CACHE_DIR``, else the user cache directory."""
    if os.environ.get("PIRECON_CACHE_DIR"):
        return Path(os.environ["PIRECON_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "pirecon"


def _save(path: Path, kind: str, matrix: sp.csr_matrix, fingerprint: str) -> None:
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.savez(f, format=np.array(kind), fingerprint=np.array(fingerprint),
                 shape=np.array(matrix.shape, dtype=np.int64), indptr=matrix.indptr,
                 indices=matrix.indices, data=matrix.data)


def _load(path: Path, kind: str, fingerprint: str, shape: tuple[int, int]) -> sp.csr_matrix | None:
    try:
        with np.load(path, allow_pickle=False) as f:
            if str(f["format"]) != kind or str(f["fingerprint"]) != fingerprint:
                return None
            if tuple(int(s) for s in f["shape"]) != shape:
                return None
            return sp.csr_matrix((f["data"], f["indices"], f["indptr"]), shape=shape)
    except FileNotFoundError:
        return None
    except Exception as err:  # truncated or corrupt: rebuilt, never trusted
        warnings.warn(f"ignoring unreadable system-matrix cache {path}: {err}", stacklevel=3)
        return None


def cached_matrix(kind: str, geometry, build: Callable[[], sp.csr_matrix], shape: tuple[int, int],
                  directory: str | None = None) -> sp.csr_matrix:
    """Load the ``kind`` matrix of ``geometry`` from the cache, or ``build()`` it and cache it.

    ``kind`` names the matrix and its format version (e.g. ``"raytransform-joseph-v1"``).
    """
    directory = Path(directory) if directory else cache_dir()
    fingerprint = geometry.fingerprint()
    path = directory / f"{kind}-{fingerprint[:24]}.npz"
    matrix = _load(path, kind, fingerprint, shape)
    if matrix is not None:
        return matrix
    with _build_lock(path):
        matrix = _load(path, kind, fingerprint, shape)  # another process may have built it meanwhile
        if matrix is None:
            matrix = build()
            try:
                _save(path, kind, matrix, fingerprint)
            except OSError as err:
                warnings.warn(f"could not cache the matrix in {directory}: {err}", stacklevel=3)
    return matrix


@contextlib.contextmanager
def _build_lock(path: Path):
    """An exclusive advisory lock on ``path.lock`` (a no-op where ``fcntl`` or the directory is unavailable)."""
    try:
        import fcntl

        path.parent.mkdir(parents=True, exist_ok=True)
        handle = open(path.with_suffix(".lock"), "a")
    except (ImportError, OSError):
        yield
        return
    with handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
