"""MoDL: model-based deep learning (Aggarwal, Mani & Jacob 2019, "MoDL: Model-Based Deep Learning
Architecture for Inverse Problems", IEEE TMI 38(2)).

With the normalised operator ``K = A / ||A||``, data ``g = y / ||A||``, a residual CNN denoiser
``D(x) = x + CNN(x)`` and a learned weight ``lam > 0``, starting from ``x_0 = K^H g``:

    z_k     = D(x_k)
    x_{k+1} = argmin_x ||K x - g||^2 + lam ||x - z_k||^2  =  (K^H K + lam I)^{-1} (K^H g + lam z_k)

for ``k = 0..iterations-1``; the reconstruction is the last ``x``. The data-consistency solve is
``cg_iterations`` steps of batched conjugate gradients started at ``z_k``, differentiated by autograd
through the unrolled steps. Complex images enter the CNN as 2 real channels.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from .._validation import check_positive
from .layers import ConvBlock, from_channels, to_channels
from .physics_tools import check_model_inputs, operator_scale
from .reconstruction import Reconstruction

__all__ = ["MoDL", "conjugate_gradient"]


class MoDL(nn.Module):
    """MoDL: ``model(y, physics) -> Reconstruction``.

    Parameters
    ----------
    iterations : int
        Outer iterations (denoiser, then data consistency); 10 in the paper.
    cg_iterations : int
        Conjugate-gradient steps per data-consistency solve (10 in the paper).
    hidden : int
        Hidden channels of the denoiser CNN (64 in the paper).
    layers : int
        Convolutions of the denoiser CNN (5 in the paper).
    share_weights : bool
        One denoiser and one ``lam`` for all iterations (the paper's choice) instead of one per iteration.
    checkpointing : bool
        Recompute each outer iteration in the backward pass instead of storing its activations
        (the conjugate-gradient steps are the bulk of the memory).
    complex_data : bool
        ``True`` for complex images and measurements (MRI), ``False`` for real ones (CT).
    lam_init : float
        Initial data-consistency weight ``lam`` (relative to ``||K|| = 1``); learned as ``exp(log_lam)``.
    """

    def __init__(self, iterations: int = 10, cg_iterations: int = 10, hidden: int = 64, layers: int = 5,
                 share_weights: bool = True, checkpointing: bool = False, complex_data: bool = False,
                 lam_init: float = 0.05):
        super().__init__()
        check_positive(iterations, "iterations", integer=True)
        check_positive(cg_iterations, "cg_iterations", integer=True)
        check_positive(lam_init, "lam_init")
        self.iterations, self.cg_iterations = iterations, cg_iterations
        self.share_weights, self.checkpointing = bool(share_weights), bool(checkpointing)
        self.complex_data = bool(complex_data)
        self.image_width = 2 if complex_data else 1
        blocks = 1 if share_weights else iterations
        self.denoisers = nn.ModuleList(
            ConvBlock(self.image_width, self.image_width, hidden, layers) for _ in range(blocks))
        self.log_lam = nn.Parameter(torch.full((blocks,), math.log(lam_init)))

    @property
    def lam(self) -> torch.Tensor:
        """The data-consistency weights ``(blocks,)``, positive."""
        return self.log_lam.exp()

    def forward(self, y: torch.Tensor, physics) -> Reconstruction:
        check_model_inputs(y, physics, "MoDL", self.complex_data)
        scale = operator_scale(physics)
        op = physics.operator
        rhs_data = op.adjoint(y) * scale**2  # K^H g
        if rhs_data.is_complex() != self.complex_data:
            raise ValueError(f"MoDL: expected {'complex' if self.complex_data else 'real'} images "
                             f"(complex_data={self.complex_data}), found {rhs_data.dtype} from {op!r}")
        x = rhs_data
        for k in range(self.iterations):
            block = 0 if self.share_weights else k
            step = _MoDLStep(op, scale, self.denoisers[block], self.complex_data, self.cg_iterations)
            if self.checkpointing and torch.is_grad_enabled():
                x = checkpoint(step, x, rhs_data, self.log_lam[block], use_reentrant=False)
            else:
                x = step(x, rhs_data, self.log_lam[block])
        return Reconstruction(x)


class _MoDLStep:
    """Denoise, then solve the data-consistency system (a plain callable, for checkpointing)."""

    def __init__(self, op, scale, denoiser, complex_data, cg_iterations):
        self.op, self.scale, self.denoiser = op, scale, denoiser
        self.complex_data, self.cg_iterations = complex_data, cg_iterations

    def normal(self, x):
        return self.op.adjoint(self.op(x)) * self.scale**2

    def __call__(self, x, rhs_data, log_lam):
        h = to_channels(x)
        z = from_channels(h + self.denoiser(h), self.complex_data)
        lam = log_lam.exp()
        return conjugate_gradient(lambda v: self.normal(v) + lam * v, rhs_data + lam * z, z, self.cg_iterations)


def _batch_dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``Re <a, b>`` per sample, shaped ``(B, 1, ..., 1)`` to broadcast against ``a``."""
    product = a.conj() * b if a.is_complex() else a * b
    return product.real.sum(dim=tuple(range(1, a.ndim)), keepdim=True)


def _safe_ratio(numerator: torch.Tensor, denominator: torch.Tensor) -> torch.Tensor:
    """``numerator / denominator``, 0 where the denominator is 0 (with finite gradients there)."""
    nonzero = denominator != 0
    return torch.where(nonzero, numerator / torch.where(nonzero, denominator, torch.ones_like(denominator)),
                       torch.zeros_like(numerator))


def conjugate_gradient(apply_matrix, rhs: torch.Tensor, x: torch.Tensor, iterations: int) -> torch.Tensor:
    """``iterations`` conjugate-gradient steps for ``M x = rhs`` (``M`` Hermitian positive definite), per sample.

    ``apply_matrix`` maps ``(B, ...)`` to ``(B, ...)``; ``x`` is the starting point. Step sizes are computed for
    each sample separately (``alpha_b = |r_b|^2 / Re <p_b, M p_b>``); a sample whose residual vanished stays put.
    Differentiable by autograd through the unrolled steps.
    """
    residual = rhs - apply_matrix(x)
    direction = residual
    residual_norm2 = _batch_dot(residual, residual)
    for _ in range(iterations):
        applied = apply_matrix(direction)
        alpha = _safe_ratio(residual_norm2, _batch_dot(direction, applied))
        x = x + alpha * direction
        residual = residual - alpha * applied
        new_norm2 = _batch_dot(residual, residual)
        direction = residual + _safe_ratio(new_norm2, residual_norm2) * direction
        residual_norm2 = new_norm2
    return x
