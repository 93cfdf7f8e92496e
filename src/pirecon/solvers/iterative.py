"""Iterative least-squares solvers for any ``LinearOperator``: CGLS, Landweber, SIRT.

All solvers share these conventions:

- ``y`` has shape ``(*batch, *operator.range_shape)``; the image has shape
  ``(*batch, *operator.domain_shape)``. Every batch item is solved
  independently (per-item step scalars where an algorithm has them), all
  items at once, with no Python loop over the batch.
- They run on the device of ``y`` and in its precision (float16/bfloat16
  data are solved in float32), under ``torch.no_grad``: no autograd graph is
  built. Images are real for operators with a real domain and complex for
  operators with a complex domain (MRI).
- ``y`` is validated once at entry; the iterations call the operator's
  private ``_forward`` / ``_adjoint``.
- ``callback(k, x)`` is called after iteration ``k`` (``k = 0, 1, ...``) with
  the current iterate; ``progress=True`` shows a ``tqdm`` bar.
- Each returns a ``SolverResult(image, iterations, history)``; ``history``
  holds one float per iteration performed (documented per solver), summed
  over the batch.
"""

from __future__ import annotations

import math
import numbers
from typing import Callable, NamedTuple

import torch

from .._validation import check_positive, check_tensor
from ..operators.base import LinearOperator

__all__ = ["SolverResult", "cgls", "landweber", "sirt"]

Callback = Callable[[int, torch.Tensor], None]


class SolverResult(NamedTuple):
    """The outcome of an iterative solver.

    Attributes
    ----------
    image : Tensor
        The reconstruction ``(*batch, *operator.domain_shape)``.
    iterations : int
        Number of iterations performed (fewer than requested when a stopping
        rule fired).
    history : list of float
        One value per iteration performed: the objective or residual norm
        documented by each solver.
    """

    image: torch.Tensor
    iterations: int
    history: list


# --------------------------------------------------------------------------
# shared helpers (also used by tv.py)
# --------------------------------------------------------------------------

_REAL_WORK = {torch.float16: torch.float32, torch.bfloat16: torch.float32,
              torch.float32: torch.float32, torch.float64: torch.float64}


def _check_operator(operator) -> LinearOperator:
    if not isinstance(operator, LinearOperator):
        raise TypeError(f"operator: expected a pirecon LinearOperator, found {type(operator).__name__}")
    return operator


def _check_iterations(iterations) -> int:
    return int(check_positive(iterations, "iterations", integer=True))


def _check_callback(callback):
    if callback is not None and not callable(callback):
        raise TypeError(f"callback: expected a callable callback(k, x) or None, found {type(callback).__name__}")
    return callback


def _prepare_data(y, operator: LinearOperator) -> tuple[torch.Tensor, tuple[int, ...], torch.dtype]:
    """Validate ``y`` against ``operator``; return ``y`` in the working dtype, the batch shape and the image dtype."""
    if not isinstance(y, torch.Tensor):
        raise TypeError(f"y: expected a torch.Tensor, found {type(y).__name__}")
    name = type(operator).__name__
    if y.is_complex() and operator.range_kind == "real":
        raise TypeError(f"y: expected real data for the real operator {name}, "
                        f"found dtype {str(y.dtype).replace('torch.', '')}")
    check_tensor(y, "y", kind="any", trailing_shape=operator.range_shape)
    if operator.device_types is not None and y.device.type not in operator.device_types:
        raise ValueError(f"y: expected a tensor on a {' or '.join(operator.device_types)} device "
                         f"for {name}, found {y.device}")
    real = _REAL_WORK[y.real.dtype if y.is_complex() else y.dtype]
    complex_ = torch.complex64 if real == torch.float32 else torch.complex128
    data_dtype = complex_ if operator.range_kind == "complex" else real
    image_dtype = complex_ if operator.domain_kind == "complex" else real
    batch = tuple(y.shape[: y.ndim - len(operator.range_shape)])
    return y.detach().to(data_dtype), batch, image_dtype


def _prepare_x0(x0, operator: LinearOperator, batch, dtype, device) -> torch.Tensor:
    """The starting image: zeros, or ``x0`` broadcast to ``(*batch, *domain_shape)`` (a fresh copy)."""
    shape = tuple(batch) + operator.domain_shape
    if x0 is None:
        return torch.zeros(shape, dtype=dtype, device=device)
    kind = "any" if dtype.is_complex else "real"
    check_tensor(x0, "x0", kind=kind, trailing_shape=operator.domain_shape)
    try:
        ok = torch.broadcast_shapes(x0.shape, shape) == shape
    except RuntimeError:
        ok = False
    if not ok:
        raise ValueError(f"x0: expected shape {shape} (batch of y and the operator's domain), "
                         f"found {tuple(x0.shape)}")
    return x0.detach().to(device=device, dtype=dtype).expand(shape).clone()


def _sqnorm(x: torch.Tensor, ndim: int) -> torch.Tensor:
    """Per-item squared norms over the last ``ndim`` dimensions (real, shape = batch)."""
    dims = tuple(range(x.ndim - ndim, x.ndim))
    v = x.real.square() + x.imag.square() if x.is_complex() else x.square()
    return v.sum(dim=dims) if dims else v


def _expand(scalars: torch.Tensor, ndim: int) -> torch.Tensor:
    """Per-item scalars ``(*batch)`` reshaped to broadcast against ``(*batch, *item)`` with ``ndim`` item dims."""
    return scalars.reshape(scalars.shape + (1,) * ndim)


class _Ops:
    """Unchecked ``A`` and ``A^H`` on the working dtypes (real part of ``A^H`` for real domains)."""

    def __init__(self, operator: LinearOperator, data_dtype: torch.dtype):
        self.op = operator
        self.real_domain = operator.domain_kind == "real"

    def A(self, x):
        return self.op._forward(x)

    def AH(self, r):
        z = self.op._adjoint(r)
        if self.real_domain and z.is_complex():
            z = z.real
        return z


def _iterator(iterations: int, progress: bool, desc: str):
    if not progress:
        return range(iterations)
    from .._progress import progress_bar

    return progress_bar(range(iterations), desc=desc, leave=False)


def _close(it):
    close = getattr(it, "close", None)
    if close is not None:
        close()


# --------------------------------------------------------------------------
# CGLS
# --------------------------------------------------------------------------

def cgls(y: torch.Tensor, operator: LinearOperator, *, iterations: int = 50, tikhonov: float = 0.0,
         x0: torch.Tensor | None = None, tol: float = 1e-6, callback: Callback | None = None,
         progress: bool = False) -> SolverResult:
    """Conjugate gradients on the normal equations ``(A^H A + tikhonov I) x = A^H y`` (CGLS).

    Minimises ``1/2 ||A x - y||^2 + tikhonov/2 ||x||^2`` per batch item, with
    its own CG step scalars ``alpha``, ``beta`` for every item (vectorised
    over the batch). One ``A`` and one ``A^H`` per iteration; the data
    residual is updated recursively (the classical CGLS form, more stable
    than CG on ``A^H A``).

    Stopping rule: after ``iterations`` iterations, or earlier once every
    item satisfies ``||s_k|| <= tol * ||s_0||`` with ``s_k = A^H (y - A x_k)
    - tikhonov x_k`` the residual of the normal equations. Items that have
    converged are frozen while the others continue. ``tol=0`` runs all
    iterations.

    Parameters
    ----------
    y : Tensor ``(*batch, *operator.range_shape)``
    operator : LinearOperator
    iterations : int
        Maximum number of iterations (> 0).
    tikhonov : float
        Tikhonov weight ``>= 0``.
    x0 : Tensor, optional
        Starting image ``(*batch, *domain_shape)`` (broadcastable); zeros by default.
    tol : float
        Relative tolerance ``>= 0`` of the stopping rule.
    callback, progress
        See the module docstring.

    Returns
    -------
    SolverResult
        ``history[k] = ||s_{k+1}||``, the normal-equation residual norm after
        iteration ``k`` over the whole batch.
    """
    operator = _check_operator(operator)
    y, batch, image_dtype = _prepare_data(y, operator)
    iterations = _check_iterations(iterations)
    if isinstance(tikhonov, bool) or not isinstance(tikhonov, numbers.Real) or not (tikhonov >= 0) \
            or not math.isfinite(tikhonov):
        raise ValueError(f"tikhonov: expected a number >= 0, found {tikhonov!r}")
    if isinstance(tol, bool) or not isinstance(tol, numbers.Real) or not (tol >= 0) or not math.isfinite(tol):
        raise ValueError(f"tol: expected a number >= 0, found {tol!r}")
    callback = _check_callback(callback)
    lam = float(tikhonov)
    nd, nr = len(operator.domain_shape), len(operator.range_shape)

    with torch.no_grad():
        ops = _Ops(operator, y.dtype)
        x = _prepare_x0(x0, operator, batch, image_dtype, y.device)
        r = y - ops.A(x) if x0 is not None else y.clone()
        s = ops.AH(r)
        if lam:
            s = s - lam * x
        p = s.clone()
        gamma = _sqnorm(s, nd)
        threshold = (tol ** 2) * gamma
        active = gamma > threshold  # items still iterating (gamma = 0: already solved)
        history: list[float] = []
        done = 0
        it = _iterator(iterations, progress, "CGLS")
        try:
            for k in it:
                if not bool(active.any()):
                    break
                q = ops.A(p)
                delta = _sqnorm(q, nr)
                if lam:
                    delta = delta + lam * _sqnorm(p, nd)
                ok = active & (delta > 0)
                alpha = torch.where(ok, gamma / torch.where(ok, delta, torch.ones_like(delta)),
                                    torch.zeros_like(gamma))
                x.add_(_expand(alpha, nd) * p)
                r.sub_(_expand(alpha, nr).to(r.dtype) * q)
                s = ops.AH(r)
                if lam:
                    s = s - lam * x
                gamma_new = _sqnorm(s, nd)
                beta = torch.where(ok, gamma_new / torch.where(ok, gamma, torch.ones_like(gamma)),
                                   torch.zeros_like(gamma))
                p = torch.where(_expand(ok, nd), s + _expand(beta, nd) * p, p)
                gamma = torch.where(ok, gamma_new, gamma)
                active = ok & (gamma_new > threshold)
                done = k + 1
                history.append(float(gamma.sum()) ** 0.5)
                if callback is not None:
                    callback(k, x)
        finally:
            _close(it)
    return SolverResult(x, done, history)


# --------------------------------------------------------------------------
# Landweber
# --------------------------------------------------------------------------

def landweber(y: torch.Tensor, operator: LinearOperator, *, iterations: int = 100, step: float | None = None,
              nonnegative: bool = False, x0: torch.Tensor | None = None, callback: Callback | None = None,
              progress: bool = False) -> SolverResult:
    """Landweber iteration ``x <- P(x + step * A^H (y - A x))`` (projected gradient descent on ``1/2 ||A x - y||^2``).

    ``P`` is the projection onto ``x >= 0`` when ``nonnegative`` (real
    images only), else the identity. The default step ``1 / ||A||^2`` (the
    norm estimated once by ``operator.opnorm()``) makes the residual
    ``||y - A x_k||`` non-increasing; any ``0 < step < 2 / ||A||^2``
    converges. Runs exactly ``iterations`` iterations.

    Returns
    -------
    SolverResult
        ``history[k] = ||y - A x_{k+1}||`` after iteration ``k``, over the whole batch.
    """
    operator = _check_operator(operator)
    y, batch, image_dtype = _prepare_data(y, operator)
    iterations = _check_iterations(iterations)
    if step is None:
        norm = operator.opnorm(device=y.device)
        if norm == 0:
            raise ValueError("operator: expected a nonzero operator, found ||A|| = 0")
        step = 1.0 / norm ** 2
    else:
        step = float(check_positive(step, "step"))
    _check_nonnegative_kind(nonnegative, operator)
    callback = _check_callback(callback)

    with torch.no_grad():
        ops = _Ops(operator, y.dtype)
        x = _prepare_x0(x0, operator, batch, image_dtype, y.device)
        history = _projected_gradient(y, ops, x, None, step, nonnegative, iterations, progress, "Landweber", callback)
    return SolverResult(x, iterations, history)


def _projected_gradient(y, ops, x, row_weight, col_weight, nonnegative: bool, iterations: int, progress: bool,
                        name: str, callback) -> list[float]:
    """``x <- P(x + C A^H (R (y - A x)))`` in place; returns ``||y - A x_{k+1}||_R`` per iteration.

    ``R = 1`` when ``row_weight`` is ``None``; ``C`` is a scalar step or a per-pixel weight.
    Landweber and SIRT are this iteration with different weights.
    """
    if nonnegative:
        x.clamp_(min=0)
    r = y - ops.A(x)
    history: list[float] = []
    it = _iterator(iterations, progress, name)
    try:
        for k in it:
            x.add_(ops.AH(r if row_weight is None else r * row_weight) * col_weight)
            if nonnegative:
                x.clamp_(min=0)
            r = y - ops.A(x)
            squared = r.abs().square() if row_weight is None else r.square() * row_weight
            history.append(float(squared.sum()) ** 0.5)
            if callback is not None:
                callback(k, x)
    finally:
        _close(it)
    return history


def _check_nonnegative_kind(nonnegative, operator: LinearOperator) -> None:
    if not isinstance(nonnegative, bool):
        raise TypeError(f"nonnegative: expected a bool, found {type(nonnegative).__name__}")
    if nonnegative and operator.domain_kind == "complex":
        raise ValueError(f"nonnegative: expected False for {type(operator).__name__}, whose images are complex "
                         "(nonnegativity applies to real images only)")


# --------------------------------------------------------------------------
# SIRT
# --------------------------------------------------------------------------

def sirt(y: torch.Tensor, operator: LinearOperator, *, iterations: int = 100, nonnegative: bool = True,
         x0: torch.Tensor | None = None, callback: Callback | None = None, progress: bool = False) -> SolverResult:
    """SIRT: ``x <- P(x + C A^T R (y - A x))`` with ``R = 1 / (A 1)`` and ``C = 1 / (A^T 1)``.

    The row and column sums of a nonnegative operator (the ray transform)
    weight the update; rays or pixels with a zero sum get weight 0. This is
    projected gradient descent on ``1/2 ||A x - y||_R^2`` in the metric
    ``C^{-1}``, with step 1 (admissible since ``||C^{1/2} A^T R A C^{1/2}|| <=
    1`` for a nonnegative ``A``), so the weighted residual is
    non-increasing. ``P`` is the projection onto ``x >= 0`` when
    ``nonnegative``. Runs exactly ``iterations`` iterations.

    Only real operators are accepted; the weights need ``A 1 >= 0`` and
    ``A^T 1 >= 0`` (checked once).

    Returns
    -------
    SolverResult
        ``history[k] = ||y - A x_{k+1}||_R = sqrt(sum R (y - A x)^2)`` over the whole batch.
    """
    operator = _check_operator(operator)
    if operator.domain_kind != "real" or operator.range_kind != "real":
        raise ValueError(f"operator: expected a real operator for SIRT (row/column-sum weights), found "
                         f"{type(operator).__name__} with {operator.domain_kind} images and "
                         f"{operator.range_kind} data; use cgls or landweber")
    y, batch, image_dtype = _prepare_data(y, operator)
    iterations = _check_iterations(iterations)
    _check_nonnegative_kind(nonnegative, operator)
    callback = _check_callback(callback)

    with torch.no_grad():
        ops = _Ops(operator, y.dtype)
        row = ops.A(torch.ones(operator.domain_shape, dtype=image_dtype, device=y.device))
        col = ops.AH(torch.ones(operator.range_shape, dtype=y.dtype, device=y.device))
        tiny = torch.finfo(image_dtype).tiny
        if bool((row < -1e-6 * row.abs().max()).any()) or bool((col < -1e-6 * col.abs().max()).any()):
            raise ValueError(f"operator: expected a nonnegative operator for SIRT (A 1 >= 0 and A^T 1 >= 0), "
                             f"found negative row or column sums in {type(operator).__name__}")
        R = torch.where(row > tiny, 1.0 / row.clamp(min=tiny), torch.zeros_like(row))
        C = torch.where(col > tiny, 1.0 / col.clamp(min=tiny), torch.zeros_like(col))
        x = _prepare_x0(x0, operator, batch, image_dtype, y.device)
        history = _projected_gradient(y, ops, x, R, C, nonnegative, iterations, progress, "SIRT", callback)
    return SolverResult(x, iterations, history)
