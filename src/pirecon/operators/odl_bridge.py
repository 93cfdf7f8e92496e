"""Any linear ODL operator as a differentiable pirecon ``LinearOperator``.

ODL defines adjoints with respect to the (possibly weighted) inner products
of its spaces, ``c_range <A x, y> = c_domain <x, A* y>``. pirecon's adjoint
is the Euclidean one, so the wrapper applies ``(c_domain / c_range) A*``.
ODL evaluates on NumPy arrays: inputs are copied to host memory, one batch
item at a time, and results are copied back to the input's device.
"""

from __future__ import annotations

import numpy as np
import torch

from .base import LinearOperator

__all__ = ["OdlOperator"]


def _constant_weight(space, name: str) -> float:
    """The constant ``c`` with ``<a, b>_space = c sum(conj(a) b)``; product spaces multiply in their components'."""
    weighting = getattr(space, "weighting", None)
    const = getattr(weighting, "const", None)
    if const is None:
        raise ValueError(
            f"OdlOperator: expected the operator's {name} to have a constant weighting, "
            f"found {type(weighting).__name__}"
        )
    if getattr(space, "is_power_space", False) or hasattr(space, "spaces"):
        inner = {_constant_weight(s, name) for s in space.spaces}
        if len(inner) != 1:
            raise ValueError(f"OdlOperator: expected equally weighted components in the {name}, found weights {sorted(inner)}")
        const = const * inner.pop()
    return float(const)


class OdlOperator(LinearOperator):
    """Wrap a linear ``odl.Operator``; batches run over leading dimensions.

    Parameters
    ----------
    odl_op : odl.Operator
        A linear operator between tensor spaces (``odl_op.is_linear``) with an
        ``adjoint``. Real and complex spaces are supported.
    """

    def __init__(self, odl_op):
        import odl

        if not isinstance(odl_op, odl.Operator):
            raise TypeError(f"odl_op: expected an odl.Operator, found {type(odl_op).__name__}")
        if not odl_op.is_linear:
            raise ValueError(f"odl_op: expected a linear operator, found {odl_op!r} with is_linear=False")
        kind = lambda space: "complex" if space.is_complex else "real"  # noqa: E731
        super().__init__(odl_op.domain.shape, odl_op.range.shape,
                         domain_kind=kind(odl_op.domain), range_kind=kind(odl_op.range))
        self.odl_op = odl_op
        self._adjoint_scale = (_constant_weight(odl_op.domain, "domain")
                               / _constant_weight(odl_op.range, "range"))
        self._odl_adjoint = None

    @staticmethod
    def _map(op, x: torch.Tensor, in_shape, out_shape, out_kind: str) -> torch.Tensor:
        """Apply ``op`` item by item in its own dtypes; the result is ``x``'s precision in ``out_kind``."""
        batch = x.shape[: x.ndim - len(in_shape)]
        items = x.detach().reshape(-1, *in_shape).cpu().numpy().astype(op.domain.dtype, copy=False)
        out = np.stack([np.asarray(op(item).asarray()) for item in items])
        real = x.real.dtype if x.is_complex() else x.dtype
        dtype = real.to_complex() if out_kind == "complex" else real
        return torch.from_numpy(out).to(device=x.device, dtype=dtype).reshape(*batch, *out_shape)

    def _forward(self, x):
        return self._map(self.odl_op, x, self.domain_shape, self.range_shape, self.range_kind)

    def _adjoint(self, y):
        if self._odl_adjoint is None:
            self._odl_adjoint = self.odl_op.adjoint
        out = self._map(self._odl_adjoint, y, self.range_shape, self.domain_shape, self.domain_kind)
        return out if self._adjoint_scale == 1.0 else out * self._adjoint_scale

    def __repr__(self) -> str:
        return f"OdlOperator({self.odl_op!r})"
