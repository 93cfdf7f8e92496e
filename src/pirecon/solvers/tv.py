"""Total-variation regularised reconstruction by PDHG (Chambolle-Pock), for any ``LinearOperator``."""

from __future__ import annotations

import torch

from .._validation import check_positive
from ..operators.base import LinearOperator
from .iterative import (
    Callback,
    SolverResult,
    _check_callback,
    _check_iterations,
    _check_nonnegative_kind,
    _check_operator,
    _close,
    _iterator,
    _Ops,
    _prepare_data,
    _prepare_x0,
    _sqnorm,
)

__all__ = ["tv_pdhg", "gradient", "gradient_adjoint", "tv_norm"]


def gradient(x: torch.Tensor) -> torch.Tensor:
    """Forward differences over the last two dimensions with Neumann boundary, stacked first: ``(2, *x.shape)``.

    ``g[0][..., i, j] = x[..., i+1, j] - x[..., i, j]`` (rows) and
    ``g[1][..., i, j] = x[..., i, j+1] - x[..., i, j]`` (columns); the
    difference leaving the image is 0 (the image is extended by its edge
    values). Unit pixel spacing.
    """
    g = x.new_zeros((2,) + tuple(x.shape))
    torch.sub(x[..., 1:, :], x[..., :-1, :], out=g[0][..., :-1, :])
    torch.sub(x[..., :, 1:], x[..., :, :-1], out=g[1][..., :, :-1])
    return g


def gradient_adjoint(g: torch.Tensor) -> torch.Tensor:
    """The adjoint of ``gradient`` (minus the divergence): ``(2, *shape) -> shape``."""
    rows, cols = g[0], g[1]
    out = torch.zeros_like(rows)
    out[..., :-1, :] -= rows[..., :-1, :]
    out[..., 1:, :] += rows[..., :-1, :]
    out[..., :, :-1] -= cols[..., :, :-1]
    out[..., :, 1:] += cols[..., :, :-1]
    return out


def _pointwise_modulus(g: torch.Tensor) -> torch.Tensor:
    """``sqrt(|g_0|^2 + |g_1|^2)`` per pixel (complex moduli for complex images)."""
    return torch.sqrt(_sqnorm(g.movedim(0, -1), 1))


def tv_norm(x: torch.Tensor) -> torch.Tensor:
    """Isotropic TV over the last two dimensions, per item: ``sum_ij |gradient(x)_ij|`` (shape ``x.shape[:-2]``)."""
    return _pointwise_modulus(gradient(x)).sum(dim=(-2, -1))


def _k_norm(ops: _Ops, operator: LinearOperator, dtype, device, iterations: int = 100, rtol: float = 1e-4) -> float:
    """``||K||`` for ``K = [A; gradient]`` by power iteration on ``K^H K`` (seeded, reproducible)."""
    gen = torch.Generator().manual_seed(0)
    real = dtype.to_real() if dtype.is_complex else dtype
    x = torch.randn(operator.domain_shape, generator=gen, dtype=real)
    if dtype.is_complex:
        x = torch.complex(x, torch.randn(operator.domain_shape, generator=gen, dtype=real))
    x = (x / torch.linalg.vector_norm(x)).to(device)
    nd = len(operator.domain_shape)
    estimate = 0.0
    for _ in range(iterations):
        z = ops.AH(ops.A(x)) + gradient_adjoint(gradient(x))
        norms = _sqnorm(z, nd).sqrt()  # one per item when the operator carries a batch of its own
        top = float(norms.max())
        if top == 0.0:
            return 0.0
        x = z / norms.clamp(min=torch.finfo(real).tiny).reshape(norms.shape + (1,) * nd)
        previous, estimate = estimate, top ** 0.5
        if abs(estimate - previous) <= rtol * estimate:
            break
    return estimate


def tv_pdhg(y: torch.Tensor, operator: LinearOperator, *, lam: float, iterations: int = 500,
            nonnegative: bool = False, x0: torch.Tensor | None = None, opnorm: float | None = None,
            callback: Callback | None = None, progress: bool = False) -> SolverResult:
    """TV-regularised least squares by the primal-dual hybrid gradient method (Chambolle & Pock 2011).

    Solves, for every batch item independently (all at once),

        min_x  1/2 ||A x - y||^2 + lam * TV(x)  [+ indicator(x >= 0) when ``nonnegative``]

    where ``TV(x) = sum_ij sqrt(|(D_r x)_ij|^2 + |(D_c x)_ij|^2)`` is the
    isotropic total variation over the last two dimensions of the image,
    with forward differences, unit pixel spacing and Neumann boundary (the
    difference leaving the image is 0); see ``gradient``. Complex images
    (MRI) are supported: the moduli are complex moduli.

    Algorithm: PDHG with ``K = [A; gradient]``, ``f(Kx) = 1/2 ||A x - y||^2 +
    lam ||grad x||_{2,1}``, primal term ``g`` = the nonnegativity indicator
    (or 0), steps ``tau = sigma = 1 / ||K||`` and over-relaxation
    ``theta = 1``; the starting dual variables are 0. ``||K||`` is estimated
    once by power iteration on ``K^H K = A^H A + grad^H grad`` unless given
    as ``opnorm``. One ``A`` and one ``A^H`` per iteration
    (``A x_bar = 2 A x_{k+1} - A x_k`` by linearity). Runs exactly
    ``iterations`` iterations.

    Parameters
    ----------
    y : Tensor ``(*batch, *operator.range_shape)``
    operator : LinearOperator
        Its domain must have at least 2 dimensions (the image is its last two).
    lam : float
        Regularisation weight (> 0), in the units of the unweighted sums above.
    iterations : int
        Number of iterations (> 0).
    nonnegative : bool
        Constrain ``x >= 0`` (real images only).
    x0 : Tensor, optional
        Starting image; zeros by default.
    opnorm : float, optional
        ``||K||`` if known (e.g. reused across calls).
    callback, progress
        ``callback(k, x)`` after every iteration; a ``tqdm`` bar.

    Returns
    -------
    SolverResult
        ``history[k]`` = the objective ``1/2 ||A x - y||^2 + lam TV(x)`` at
        ``x_{k+1}``, summed over the batch.
    """
    operator = _check_operator(operator)
    y, batch, image_dtype = _prepare_data(y, operator)
    if len(operator.domain_shape) < 2:
        raise ValueError(f"operator: expected images with at least 2 dimensions for TV, found domain shape "
                         f"{operator.domain_shape}")
    lam = float(check_positive(lam, "lam"))
    iterations = _check_iterations(iterations)
    _check_nonnegative_kind(nonnegative, operator)
    if opnorm is not None:
        opnorm = float(check_positive(opnorm, "opnorm"))
    callback = _check_callback(callback)
    nr = len(operator.range_shape)

    with torch.no_grad():
        ops = _Ops(operator, y.dtype)
        if opnorm is None:
            opnorm = _k_norm(ops, operator, image_dtype, y.device)
        tau = sigma = 1.0 / opnorm
        x = _prepare_x0(x0, operator, batch, image_dtype, y.device)
        if nonnegative:
            x.clamp_(min=0)
        Ax = ops.A(x)
        Axbar = Ax
        xbar = x
        p = torch.zeros_like(y)
        q = x.new_zeros((2,) + tuple(x.shape))
        history: list[float] = []
        it = _iterator(iterations, progress, "TV-PDHG")
        try:
            for k in it:
                # dual steps: prox of sigma f*, data term then TV term
                p = (p + sigma * (Axbar - y)) / (1.0 + sigma)
                q.add_(gradient(xbar), alpha=sigma)
                q.div_(torch.clamp(_pointwise_modulus(q) / lam, min=1.0))
                # primal step
                x_new = x - tau * (ops.AH(p) + gradient_adjoint(q))
                if nonnegative:
                    x_new.clamp_(min=0)
                Ax_new = ops.A(x_new)
                xbar = 2.0 * x_new - x
                Axbar = 2.0 * Ax_new - Ax
                x, Ax = x_new, Ax_new
                objective = 0.5 * _sqnorm(Ax - y, nr).sum() + lam * tv_norm(x).sum()
                history.append(float(objective))
                if callback is not None:
                    callback(k, x)
        finally:
            _close(it)
    return SolverResult(x, iterations, history)
