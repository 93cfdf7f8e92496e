"""A fixed sparse matrix as a linear operator, applied with torch CSR products on any device."""

from __future__ import annotations

import warnings
from typing import Sequence

import numpy as np
import scipy.sparse as sp
import torch

from .base import LinearOperator

__all__ = ["SparseMatrixOperator"]


def _csr_tensor(matrix: sp.csr_matrix, device, dtype) -> torch.Tensor:
    index_dtype = torch.int32 if matrix.nnz < 2**31 else torch.int64
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "sparse CSR support is in beta"
        return torch.sparse_csr_tensor(
            torch.from_numpy(matrix.indptr).to(index_dtype),
            torch.from_numpy(matrix.indices).to(index_dtype),
            torch.from_numpy(matrix.data).to(dtype),
            size=matrix.shape,
        ).to(device)


class SparseMatrixOperator(LinearOperator):
    """``x -> M x`` for a real sparse matrix ``M`` of shape ``(prod(range_shape), prod(domain_shape))``.

    Inputs ``(*batch, *domain_shape)`` are flattened per item; ``M`` and
    ``M^T`` are held as CSR tensors with int32 indices (int64 beyond 2^31
    nonzeros), one pair per device and dtype in use, created on first use,
    so forward and adjoint are both row-parallel CSR-times-dense products.
    Half-precision inputs are computed in float32.
    """

    def __init__(self, matrix: sp.spmatrix, domain_shape: Sequence[int], range_shape: Sequence[int]):
        super().__init__(domain_shape, range_shape)
        expected = (int(np.prod(self.range_shape)), int(np.prod(self.domain_shape)))
        if matrix.shape != expected:
            raise ValueError(f"matrix: expected shape {expected} for {self.domain_shape} -> {self.range_shape}, "
                             f"found {matrix.shape}")
        self.matrix = matrix.tocsr()
        self._transpose: sp.csr_matrix | None = None
        self._tensors: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}

    def _operands(self, device, dtype) -> tuple[torch.Tensor, torch.Tensor]:
        key = (device, dtype)
        if key not in self._tensors:
            if self._transpose is None:
                self._transpose = self.matrix.T.tocsr()
            self._tensors[key] = (_csr_tensor(self.matrix, device, dtype), _csr_tensor(self._transpose, device, dtype))
        return self._tensors[key]

    @staticmethod
    def _apply(matrix: torch.Tensor, x: torch.Tensor, in_shape, out_shape) -> torch.Tensor:
        work = x if x.dtype in (torch.float32, torch.float64) else x.float()
        batch = work.shape[: work.ndim - len(in_shape)]
        columns = work.reshape(-1, matrix.shape[1]).T.contiguous()  # (n, batch) row-major: MKL's fastest layout
        out = (matrix @ columns).T.reshape(*batch, *out_shape)
        return out.to(x.dtype)

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        M, _ = self._operands(x.device, torch.float64 if x.dtype == torch.float64 else torch.float32)
        return self._apply(M, x, self.domain_shape, self.range_shape)

    def _adjoint(self, y: torch.Tensor) -> torch.Tensor:
        _, MT = self._operands(y.device, torch.float64 if y.dtype == torch.float64 else torch.float32)
        return self._apply(MT, y, self.range_shape, self.domain_shape)

    def __repr__(self) -> str:
        return f"SparseMatrixOperator({self.domain_shape} -> {self.range_shape}, nnz={self.matrix.nnz})"
