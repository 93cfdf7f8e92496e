"""Linear operators on batched torch tensors: base class, algebra, checks, the ODL bridge."""

from .base import (
    AdjointOperator,
    ComposedOperator,
    LinearOperator,
    MatrixOperator,
    ScaledOperator,
    SumOperator,
)
from .checks import adjoint_test
from .odl_bridge import OdlOperator
from .sparse import SparseMatrixOperator

__all__ = [
    "LinearOperator",
    "AdjointOperator",
    "ComposedOperator",
    "SumOperator",
    "ScaledOperator",
    "MatrixOperator",
    "OdlOperator",
    "SparseMatrixOperator",
    "adjoint_test",
]
