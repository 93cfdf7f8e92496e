"""The ``sparse`` ray-transform backend: a cached Joseph system matrix applied with torch CSR products.

The matrix is built once per geometry (``joseph.joseph_matrix``) and cached
on disk under ``$PIRECON_CACHE_DIR`` (default ``$XDG_CACHE_HOME/pirecon`` or
``~/.cache/pirecon``), keyed by the geometry's fingerprint. In memory it is
held as CSR tensors of ``A`` and ``A^T`` with int32 indices (int64 only when
the nonzeros exceed 2^31), one pair per device and dtype in use, so the
forward and the adjoint are both row-parallel CSR-times-dense products.
"""

from __future__ import annotations

import functools
import os
import warnings
from pathlib import Path

import numpy as np
import scipy.sparse as sp
import torch

from .._atomic import atomic_path
from .._validation import BackendUnavailableError
from .joseph import estimate_nnz, joseph_matrix

__all__ = ["SparseBackend", "SparseBudgetError", "cache_dir", "DEFAULT_MAX_BYTES"]

DEFAULT_MAX_BYTES = 4 * 2**30
_CACHE_FORMAT = "joseph-csr-v1"


class SparseBudgetError(BackendUnavailableError):
    """The system matrix would exceed the memory budget of the ``sparse`` backend."""


def cache_dir() -> Path:
    """Where system matrices are cached: ``$PIRECON_CACHE_DIR``, else the user cache directory."""
    if os.environ.get("PIRECON_CACHE_DIR"):
        return Path(os.environ["PIRECON_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "pirecon"


def _format_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    raise AssertionError("unreachable")


def _max_bytes_default() -> int:
    value = os.environ.get("PIRECON_SPARSE_MAX_BYTES")
    if value is None:
        return DEFAULT_MAX_BYTES
    try:
        return int(float(value))
    except ValueError:
        raise ValueError(f"PIRECON_SPARSE_MAX_BYTES: expected a number of bytes, found {value!r}") from None


def _save(path: Path, matrix: sp.csr_matrix, fingerprint: str) -> None:
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.savez(f, format=np.array(_CACHE_FORMAT), fingerprint=np.array(fingerprint),
                 shape=np.array(matrix.shape, dtype=np.int64), indptr=matrix.indptr,
                 indices=matrix.indices, data=matrix.data)


def _load(path: Path, fingerprint: str, shape: tuple[int, int]) -> sp.csr_matrix | None:
    """The cached matrix, or ``None`` if the file is missing, corrupt or for another geometry."""
    try:
        with np.load(path, allow_pickle=False) as f:
            if str(f["format"]) != _CACHE_FORMAT or str(f["fingerprint"]) != fingerprint:
                return None
            if tuple(int(s) for s in f["shape"]) != shape:
                return None
            return sp.csr_matrix((f["data"], f["indices"], f["indptr"]), shape=shape)
    except FileNotFoundError:
        return None
    except Exception as err:  # a truncated or corrupt cache file is rebuilt, not trusted
        warnings.warn(f"ignoring unreadable system-matrix cache {path}: {err}", stacklevel=3)
        return None


@functools.lru_cache(maxsize=4)
def system_matrix(geometry, directory: str | None = None) -> sp.csr_matrix:
    """The geometry's Joseph matrix (float32 CSR), from the disk cache or built and cached."""
    directory = Path(directory) if directory else cache_dir()
    fingerprint = geometry.fingerprint()
    path = directory / f"raytransform-{fingerprint[:24]}.npz"
    shape = (geometry.num_angles * geometry.num_detectors, int(np.prod(geometry.image_shape)))
    matrix = _load(path, fingerprint, shape)
    if matrix is None:
        matrix = joseph_matrix(geometry)
        try:
            _save(path, matrix, fingerprint)
        except OSError as err:
            warnings.warn(f"could not cache the system matrix in {directory}: {err}", stacklevel=2)
    return matrix


def _csr_tensor(matrix: sp.csr_matrix, device, dtype) -> torch.Tensor:
    index_dtype = torch.int32 if matrix.nnz < 2**31 else torch.int64
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return torch.sparse_csr_tensor(
            torch.from_numpy(matrix.indptr).to(index_dtype),
            torch.from_numpy(matrix.indices).to(index_dtype),
            torch.from_numpy(matrix.data).to(dtype),
            size=matrix.shape,
        ).to(device)


class SparseBackend:
    """Apply ``A`` and ``A^T`` of a 2D geometry as cached CSR products on any torch device.

    Parameters
    ----------
    geometry : ParallelBeam2D or FanBeam2D
    max_bytes : int, optional
        Memory budget for ``A`` and ``A^T`` in float32 (default 4 GiB, or
        ``$PIRECON_SPARSE_MAX_BYTES``). Geometries whose estimated matrix
        exceeds it raise ``SparseBudgetError`` before anything is built.
    cache_directory : str, optional
        Overrides ``$PIRECON_CACHE_DIR`` for this operator.
    """

    name = "sparse"

    def __init__(self, geometry, *, max_bytes: int | None = None, cache_directory: str | None = None):
        budget = _max_bytes_default() if max_bytes is None else int(max_bytes)
        needed = estimate_nnz(geometry) * 8 * 2  # float32 value + int32 index, for A and A^T
        if needed > budget:
            raise SparseBudgetError(
                f"sparse backend: the system matrix of {geometry!r} needs up to {_format_bytes(needed)}, "
                f"above the budget of {_format_bytes(budget)}; raise max_bytes (or PIRECON_SPARSE_MAX_BYTES) "
                f"or use backend='astra'"
            )
        self.geometry = geometry
        self.matrix = system_matrix(geometry, None if cache_directory is None else str(cache_directory))
        self._transpose = None
        self._tensors: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}

    def _operands(self, device, dtype) -> tuple[torch.Tensor, torch.Tensor]:
        key = (device, dtype)
        if key not in self._tensors:
            if self._transpose is None:
                self._transpose = self.matrix.T.tocsr()
            self._tensors[key] = (_csr_tensor(self.matrix, device, dtype),
                                  _csr_tensor(self._transpose, device, dtype))
        return self._tensors[key]

    @staticmethod
    def _apply(matrix: torch.Tensor, x: torch.Tensor, in_ndim: int, out_shape) -> torch.Tensor:
        work = x if x.dtype in (torch.float32, torch.float64) else x.float()
        batch = work.shape[: work.ndim - in_ndim]
        flat = work.reshape(-1, matrix.shape[1])
        out = (matrix @ flat.T).T.reshape(*batch, *out_shape)
        return out.to(x.dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(..., H, W) -> (..., angles, detectors)``."""
        A, _ = self._operands(x.device, torch.float64 if x.dtype == torch.float64 else torch.float32)
        return self._apply(A, x, 2, self.geometry.sinogram_shape)

    def adjoint(self, y: torch.Tensor) -> torch.Tensor:
        """``(..., angles, detectors) -> (..., H, W)``."""
        _, AT = self._operands(y.device, torch.float64 if y.dtype == torch.float64 else torch.float32)
        return self._apply(AT, y, 2, self.geometry.image_shape)
