"""The ``sparse`` ray-transform backend: a cached Joseph system matrix applied with torch CSR products.

The matrix is built once per geometry (``joseph.joseph_matrix``), cached on
disk (``matrix_cache``) keyed by the geometry's fingerprint, and applied by a
``SparseMatrixOperator`` (CSR products of ``A`` and ``A^T``, int32 indices).
"""

from __future__ import annotations

import functools
import hashlib
import inspect
import os

import numpy as np
import scipy.sparse as sp
import torch

from .._validation import BackendUnavailableError
from ..operators.sparse import SparseMatrixOperator
from .joseph import estimate_nnz, joseph_matrix
from .matrix_cache import cached_matrix

__all__ = ["SparseBackend", "SparseBudgetError", "system_matrix", "DEFAULT_MAX_BYTES"]

DEFAULT_MAX_BYTES = 4 * 2**30


class SparseBudgetError(BackendUnavailableError):
    """The system matrix would exceed the memory budget of the ``sparse`` backend."""


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
    except (ValueError, OverflowError):
        raise ValueError(f"PIRECON_SPARSE_MAX_BYTES: expected a finite number of bytes, found {value!r}") from None


@functools.lru_cache(maxsize=1)
def _builder_version() -> str:
    """Hash of the matrix builder's source: editing ``joseph.py`` invalidates cached matrices."""
    from . import joseph

    return hashlib.sha256(inspect.getsource(joseph).encode()).hexdigest()[:12]


@functools.lru_cache(maxsize=4)
def system_matrix(geometry, directory: str | None = None) -> sp.csr_matrix:
    """The geometry's Joseph matrix (float32 CSR), from the disk cache or built and cached."""
    shape = (geometry.num_angles * geometry.num_detectors, int(np.prod(geometry.image_shape)))
    kind = f"raytransform-joseph-{_builder_version()}"
    return cached_matrix(kind, geometry, lambda: joseph_matrix(geometry), shape, directory)


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
        matrix = system_matrix(geometry, None if cache_directory is None else str(cache_directory))
        self.operator = SparseMatrixOperator(matrix, geometry.image_shape, geometry.sinogram_shape)

    @property
    def matrix(self) -> sp.csr_matrix:
        """The ``(angles * detectors, H * W)`` Joseph matrix."""
        return self.operator.matrix

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(..., H, W) -> (..., angles, detectors)``."""
        return self.operator._forward(x)

    def adjoint(self, y: torch.Tensor) -> torch.Tensor:
        """``(..., angles, detectors) -> (..., H, W)``."""
        return self.operator._adjoint(y)
