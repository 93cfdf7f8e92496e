"""Numerical checks of linear operators."""

from __future__ import annotations

import torch

from .base import LinearOperator

__all__ = ["adjoint_test"]


def adjoint_test(
    op: LinearOperator,
    *,
    dtype: torch.dtype = torch.float64,
    device: torch.device | str = "cpu",
    batch_shape: tuple[int, ...] = (2,),
    seed: int = 0,
) -> float:
    """Relative error of the adjoint identity ``<A x, y> = <x, A^H y>``.

    Draws seeded Gaussian ``x`` of shape ``(*batch_shape, *domain_shape)`` and
    ``y`` of shape ``(*batch_shape, *range_shape)`` and returns

        |<A x, y> - <x, A^H y>| / max(|<A x, y>|, |<x, A^H y>|).

    ``dtype`` is the real precision; complex operators get the matching
    complex dtype.
    """
    if not isinstance(op, LinearOperator):
        raise TypeError(f"op: expected a LinearOperator, found {type(op).__name__}")
    gen = torch.Generator().manual_seed(seed)

    def draw(shape, kind):
        real = torch.randn(*batch_shape, *shape, generator=gen, dtype=dtype)
        if kind == "complex":
            real = torch.complex(real, torch.randn(*batch_shape, *shape, generator=gen, dtype=dtype))
        return real.to(device)

    x = draw(op.domain_shape, op.domain_kind)
    y = draw(op.range_shape, op.range_kind)
    with torch.no_grad():
        ax, aty = op(x), op.adjoint(y)
        common = torch.promote_types(ax.dtype, aty.dtype)
        lhs = torch.vdot(ax.flatten().to(common), y.flatten().to(common))
        rhs = torch.vdot(x.flatten().to(common), aty.flatten().to(common))
        if "real" in (op.domain_kind, op.range_kind):
            # a real space carries the real inner product Re<a, b>
            lhs, rhs = lhs.real, rhs.real
    scale = max(abs(complex(lhs)), abs(complex(rhs)))
    if scale == 0.0:
        return 0.0
    return abs(complex(lhs - rhs)) / scale
