"""Linear operators on batched torch tensors.

A ``LinearOperator`` maps tensors of shape ``(*batch, *domain_shape)`` to
``(*batch, *range_shape)``. Subclasses implement ``_forward`` and ``_adjoint``
on raw tensors; the public ``A(x)`` / ``A.adjoint(y)`` validate the input and
run through one autograd node whose backward applies the adjoint, so
gradients never flow through a backend's internals:

    d<g, A x>/dx = A^H g.
"""

from __future__ import annotations

import numbers
from typing import Sequence

import torch

from .._validation import check_tensor

__all__ = [
    "LinearOperator",
    "AdjointOperator",
    "ComposedOperator",
    "SumOperator",
    "ScaledOperator",
    "MatrixOperator",
]


class _ApplyLinear(torch.autograd.Function):
    """``y = A x`` with backward ``A^H g``; the backward is itself differentiable."""

    @staticmethod
    def forward(ctx, op: "LinearOperator", x: torch.Tensor) -> torch.Tensor:
        ctx.op = op
        with torch.autocast(x.device.type, enabled=False):  # backends compute in the input's own precision
            return op._forward(x)

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor):
        grad = _ApplyLinear.apply(ctx.op.T, grad_output)
        if ctx.op.domain_kind == "real" and grad.is_complex():
            grad = grad.real  # real inputs: the gradient is Re(A^H g)
        return None, grad


class LinearOperator:
    """A linear map ``A: (*batch, *domain_shape) -> (*batch, *range_shape)``.

    Behaves like a matrix: ``A(x)`` or ``A @ x`` applies it, ``A.T`` (alias
    ``A.adjoint``) is the adjoint (conjugate transpose), ``A @ B``, ``A + B``,
    ``c * A`` build new operators, ``A.opnorm()`` estimates ``||A||_2``.

    Parameters
    ----------
    domain_shape, range_shape : sequence of int
        Shapes of one input and one output, without batch dimensions.
    domain_kind, range_kind : {"real", "complex"}
        Which dtypes the operator accepts and returns.
    """

    check_finite: bool = True
    """Reject NaN/Inf inputs (one reduction per call; switch off per instance in hot loops)."""

    device_types: tuple[str, ...] | None = None
    """Device types the operator runs on (``None``: any device torch supports)."""

    def __init__(
        self,
        domain_shape: Sequence[int],
        range_shape: Sequence[int],
        *,
        domain_kind: str = "real",
        range_kind: str = "real",
    ):
        self.domain_shape = tuple(int(s) for s in domain_shape)
        self.range_shape = tuple(int(s) for s in range_shape)
        self.domain_kind = domain_kind
        self.range_kind = range_kind

    # -- to implement ---------------------------------------------------------
    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply ``A`` to ``x`` of shape ``(*batch, *domain_shape)``; no checks, no autograd."""
        raise NotImplementedError

    def _adjoint(self, y: torch.Tensor) -> torch.Tensor:
        """Apply ``A^H`` to ``y`` of shape ``(*batch, *range_shape)``; no checks, no autograd."""
        raise NotImplementedError

    # -- public application ---------------------------------------------------
    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """``A x`` for ``x`` of shape ``(*batch, *domain_shape)``, differentiable in ``x``."""
        name = self._input_name()
        if self.device_types is not None and isinstance(x, torch.Tensor) and x.device.type not in self.device_types:
            raise ValueError(f"{name}: expected a tensor on a {' or '.join(self.device_types)} device, found {x.device}")
        check_tensor(x, name, kind=self.domain_kind, trailing_shape=self.domain_shape, finite=self.check_finite)
        if x.dtype in (torch.float16, torch.bfloat16):
            # mixed precision: the backends compute in float32 (ASTRA and sparse products need it), the
            # result comes back in the input's dtype
            y = _ApplyLinear.apply(self, x.float())
            return y if y.is_complex() else y.to(x.dtype)
        return _ApplyLinear.apply(self, x)

    forward = __call__

    def _input_name(self) -> str:
        """How error messages name this operator's input."""
        return f"{type(self).__name__} input"

    def adjoint(self, y: torch.Tensor) -> torch.Tensor:
        """``A^H y`` for ``y`` of shape ``(*batch, *range_shape)``, differentiable in ``y``."""
        return self.T(y)

    def normal(self, x: torch.Tensor) -> torch.Tensor:
        """``A^H A x``, the normal operator applied to ``x``."""
        return self.N(x)

    @property
    def T(self) -> "LinearOperator":
        """The adjoint operator ``A^H`` (the transpose for real operators)."""
        if getattr(self, "_adjoint_op", None) is None:
            self._adjoint_op = AdjointOperator(self)
        return self._adjoint_op

    H = T

    @property
    def N(self) -> "LinearOperator":
        """The normal operator ``A^H A``."""
        if getattr(self, "_normal_op", None) is None:
            self._normal_op = ComposedOperator(self.T, self)
        return self._normal_op

    # -- algebra ----------------------------------------------------------------
    def __matmul__(self, other):
        if isinstance(other, LinearOperator):
            return ComposedOperator(self, other)
        if isinstance(other, torch.Tensor):
            return self(other)
        return NotImplemented

    def __add__(self, other):
        if isinstance(other, LinearOperator):
            return SumOperator(self, other)
        return NotImplemented

    def __sub__(self, other):
        if isinstance(other, LinearOperator):
            return SumOperator(self, ScaledOperator(other, -1.0))
        return NotImplemented

    def __mul__(self, scalar):
        if isinstance(scalar, numbers.Number):
            return ScaledOperator(self, scalar)
        return NotImplemented

    __rmul__ = __mul__

    def __truediv__(self, scalar):
        if isinstance(scalar, numbers.Number):
            return ScaledOperator(self, 1.0 / scalar)
        return NotImplemented

    def __neg__(self):
        return ScaledOperator(self, -1.0)

    # -- diagnostics ------------------------------------------------------------
    def opnorm(
        self,
        iterations: int = 100,
        rtol: float = 1e-6,
        *,
        dtype: torch.dtype | None = None,
        device: torch.device | str = "cpu",
        seed: int = 0,
    ) -> float:
        """Estimate the spectral norm ``||A||_2`` by power iteration on ``A^H A``.

        Stops after ``iterations`` steps or when the estimate changes by less
        than ``rtol`` (relative). Starts from a seeded Gaussian vector, so the
        result is reproducible.
        """
        if dtype is None:
            dtype = torch.complex128 if self.domain_kind == "complex" else torch.float64
        gen = torch.Generator().manual_seed(seed)
        x = torch.randn(self.domain_shape, generator=gen, dtype=dtype).to(device)
        x = x / torch.linalg.vector_norm(x)
        estimate = 0.0
        with torch.no_grad():
            for _ in range(iterations):
                z = self._adjoint(self._forward(x))
                norm = float(torch.linalg.vector_norm(z))
                if norm == 0.0:
                    return 0.0
                x = z / norm
                previous, estimate = estimate, norm ** 0.5
                if abs(estimate - previous) <= rtol * estimate:
                    break
        return estimate

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.domain_shape} -> {self.range_shape})"


def _common_devices(*ops: LinearOperator) -> tuple[str, ...] | None:
    """Device types every operator in ``ops`` runs on (``None``: no restriction)."""
    allowed = None
    for op in ops:
        if op.device_types is not None:
            allowed = op.device_types if allowed is None else tuple(d for d in allowed if d in op.device_types)
    return allowed


class AdjointOperator(LinearOperator):
    """``A^H``: swaps the forward and adjoint of ``A``."""

    def __init__(self, op: LinearOperator):
        super().__init__(op.range_shape, op.domain_shape,
                         domain_kind=op.range_kind, range_kind=op.domain_kind)
        self.op = op
        self._adjoint_op = op
        self.check_finite = op.check_finite
        self.device_types = op.device_types

    def _input_name(self) -> str:
        return f"{type(self.op).__name__} adjoint input"

    def _forward(self, x):
        return self.op._adjoint(x)

    def _adjoint(self, y):
        return self.op._forward(y)

    def __repr__(self) -> str:
        return f"{self.op!r}.T"


class ComposedOperator(LinearOperator):
    """``A @ B``: first ``B``, then ``A``."""

    def __init__(self, left: LinearOperator, right: LinearOperator):
        if left.domain_shape != right.range_shape:
            raise ValueError(
                f"A @ B: expected B's range shape to equal A's domain shape {left.domain_shape}, "
                f"found {right.range_shape}"
            )
        if left.domain_kind != right.range_kind:
            raise ValueError(f"A @ B: expected B's range to be {left.domain_kind} like A's domain, "
                             f"found {right.range_kind}")
        super().__init__(right.domain_shape, left.range_shape,
                         domain_kind=right.domain_kind, range_kind=left.range_kind)
        self.left, self.right = left, right
        self.check_finite = right.check_finite
        self.device_types = _common_devices(left, right)

    def _forward(self, x):
        return self.left._forward(self.right._forward(x))

    def _adjoint(self, y):
        return self.right._adjoint(self.left._adjoint(y))

    def __repr__(self) -> str:
        return f"({self.left!r} @ {self.right!r})"


class SumOperator(LinearOperator):
    """``A + B`` for operators with equal domain and range."""

    def __init__(self, a: LinearOperator, b: LinearOperator):
        if (a.domain_shape, a.range_shape) != (b.domain_shape, b.range_shape):
            raise ValueError(
                f"A + B: expected equal shapes, found {a.domain_shape} -> {a.range_shape} "
                f"and {b.domain_shape} -> {b.range_shape}"
            )
        if (a.domain_kind, a.range_kind) != (b.domain_kind, b.range_kind):
            raise ValueError(f"A + B: expected equal kinds, found {a.domain_kind} -> {a.range_kind} "
                             f"and {b.domain_kind} -> {b.range_kind}")
        super().__init__(a.domain_shape, a.range_shape,
                         domain_kind=a.domain_kind, range_kind=a.range_kind)
        self.a, self.b = a, b
        self.check_finite = a.check_finite
        self.device_types = _common_devices(a, b)

    def _forward(self, x):
        return self.a._forward(x) + self.b._forward(x)

    def _adjoint(self, y):
        return self.a._adjoint(y) + self.b._adjoint(y)

    def __repr__(self) -> str:
        return f"({self.a!r} + {self.b!r})"


class ScaledOperator(LinearOperator):
    """``c A`` for a scalar ``c``; its adjoint is ``conj(c) A^H``."""

    def __init__(self, op: LinearOperator, scalar: numbers.Number):
        if isinstance(scalar, numbers.Real):
            scalar = float(scalar)
        else:
            scalar = complex(scalar)
            if op.range_kind == "real":
                raise ValueError(f"c * A: expected a real scalar for an operator with a real range, found {scalar!r}")
        super().__init__(op.domain_shape, op.range_shape,
                         domain_kind=op.domain_kind, range_kind=op.range_kind)
        self.op, self.scalar = op, scalar
        self.check_finite = op.check_finite
        self.device_types = op.device_types

    def _forward(self, x):
        return self.scalar * self.op._forward(x)

    def _adjoint(self, y):
        return self.scalar.conjugate() * self.op._adjoint(y)

    def __repr__(self) -> str:
        return f"{self.scalar!r} * {self.op!r}"


class MatrixOperator(LinearOperator):
    """A dense matrix ``M`` of shape ``(m, n)`` acting on the last dimension: ``(..., n) -> (..., m)``."""

    def __init__(self, matrix: torch.Tensor):
        check_tensor(matrix, "matrix", kind="any")
        if matrix.ndim != 2:
            raise ValueError(f"matrix: expected 2 dimensions, found shape {tuple(matrix.shape)}")
        kind = "complex" if matrix.is_complex() else "real"
        super().__init__((matrix.shape[1],), (matrix.shape[0],), domain_kind=kind, range_kind=kind)
        self.matrix = matrix

    def _cast(self, like: torch.Tensor) -> torch.Tensor:
        return self.matrix.to(device=like.device, dtype=like.dtype)

    def _forward(self, x):
        return x @ self._cast(x).T

    def _adjoint(self, y):
        return y @ self._cast(y).conj()
