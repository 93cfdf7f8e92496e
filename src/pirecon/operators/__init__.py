"""Linear operators on batched torch tensors: base class, algebra, checks."""

from .base import (
    AdjointOperator,
    ComposedOperator,
    LinearOperator,
    MatrixOperator,
    ScaledOperator,
    SumOperator,
)
from .checks import adjoint_test

__all__ = [
    "LinearOperator",
    "AdjointOperator",
    "ComposedOperator",
    "SumOperator",
    "ScaledOperator",
    "MatrixOperator",
    "adjoint_test",
]
