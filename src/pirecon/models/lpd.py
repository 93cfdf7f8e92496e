"""Learned Primal-Dual (Adler & Oktem 2018, "Learned Primal-Dual Reconstruction", IEEE TMI 37(6)).

With the normalised operator ``K = A / ||A||`` and data ``g = y / ||A||``, primal memory ``f``
(``P`` images, starting at zero, or every one at the FBP with ``initial="fbp"``) and dual memory ``h``
(``D`` measurements, starting at zero):

    h <- h + Gamma_i(h, K f[1], g)         (dual step, a CNN on measurement space)
    f <- f + Lambda_i(f, K^H h[0])         (primal step, a CNN on image space)

for ``i = 1..iterations``; the reconstruction is ``f[0]``. As in Algorithm 3 of the paper, the forward
operator sees the second primal channel ``f[1]`` (``f^(2)``), the adjoint the first dual channel
``h[0]`` (``h^(1)``), and the output is the first primal channel ``f[0]`` (``f^(1)``); with a single
primal channel the forward operator sees ``f[0]``. Complex images and measurements enter
the CNNs as 2 real channels. The dual CNN convolves over the measurement's own grid: sinograms
``(angles, detectors)``, Cartesian k-space ``(H, W)`` with coils as channels, non-Cartesian
k-space ``(samples,)`` with 1D convolutions.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from .._validation import check_choice, check_positive
from .layers import ConvBlock, from_channels, num_channels, to_channels
from .physics_tools import check_model_inputs, initial_image, operator_scale
from .reconstruction import Reconstruction

__all__ = ["LearnedPrimalDual"]


class LearnedPrimalDual(nn.Module):
    """Learned Primal-Dual: ``model(y, physics) -> Reconstruction``.

    Parameters
    ----------
    iterations : int
        Unrolled primal-dual iterations (10 in the paper).
    primal_channels, dual_channels : int
        Memory images and measurements (5 each in the paper).
    hidden : int
        Hidden channels of each 3-layer CNN block (32 in the paper).
    layers : int
        Convolutions per block (3 in the paper).
    share_weights : bool
        One primal and one dual block for all iterations instead of one per iteration.
    checkpointing : bool
        Recompute each iteration in the backward pass instead of storing its activations
        (less memory, about one more forward pass of time).
    complex_data : bool
        ``True`` for complex images and measurements (MRI), ``False`` for real ones (CT).
    coils : int
        Channels of the measurements: coils for multi-coil MRI, 1 for CT and single coil.
    measurement_dims, image_dims : int
        Spatial dimensions the CNNs convolve over: 2 for sinograms and Cartesian k-space, 1 for
        non-Cartesian k-space ``(coils, samples)``; 2 for images (3 for volumes).
    initial : {"zeros", "fbp"}
        Primal memory at the start: zero (the paper), or the classical image of
        :func:`initial_image` (Hann FBP for CT, ``A^H y`` otherwise) in every channel, which
        shortens training.
    identity_init : bool
        Start the last convolution of every block at zero, so each residual update starts as the
        identity and the untrained network returns its initial primal memory (with
        ``initial="fbp"``: the FBP) instead of a random perturbation of it. The paper starts every
        layer Xavier-uniform (``False``); ``True`` shortens training.
    """

    def __init__(self, iterations: int = 10, primal_channels: int = 5, dual_channels: int = 5, hidden: int = 32,
                 layers: int = 3, share_weights: bool = False, checkpointing: bool = False,
                 complex_data: bool = False, coils: int = 1, measurement_dims: int = 2, image_dims: int = 2,
                 initial: str = "zeros", identity_init: bool = False):
        super().__init__()
        for name, value in (("iterations", iterations), ("primal_channels", primal_channels),
                            ("dual_channels", dual_channels), ("coils", coils)):
            check_positive(value, name, integer=True)
        self.iterations = iterations
        self.primal_channels, self.dual_channels = primal_channels, dual_channels
        self.share_weights, self.checkpointing = bool(share_weights), bool(checkpointing)
        self.complex_data = bool(complex_data)
        self.initial = check_choice(initial, "initial", ("zeros", "fbp"))
        self.identity_init = bool(identity_init)
        self.image_dims = image_dims
        factor = 2 if complex_data else 1
        self.image_width = factor  # real channels of one image
        self.measurement_width = factor * coils  # real channels of one measurement
        blocks = 1 if share_weights else iterations
        self.primal_blocks = nn.ModuleList(
            ConvBlock(self.image_width * (primal_channels + 1), self.image_width * primal_channels, hidden, layers,
                      dim=image_dims, zero_output=self.identity_init) for _ in range(blocks))
        self.dual_blocks = nn.ModuleList(
            ConvBlock(self.measurement_width * (dual_channels + 2), self.measurement_width * dual_channels, hidden,
                      layers, dim=measurement_dims, zero_output=self.identity_init) for _ in range(blocks))

    def forward(self, y: torch.Tensor, physics) -> Reconstruction:
        check_model_inputs(y, physics, "LearnedPrimalDual", self.complex_data)
        if num_channels(y) != self.measurement_width:
            coils = self.measurement_width // self.image_width
            raise ValueError(f"LearnedPrimalDual: expected measurements with {coils} channel(s) (coils={coils}), "
                             f"found {y.shape[1]} in shape {tuple(y.shape)}")
        scale = operator_scale(physics)
        op = physics.operator
        g = to_channels(y * scale)
        image_shape = op.domain_shape[-self.image_dims:]
        batch = y.shape[0]
        real_dtype = g.dtype
        if self.initial == "fbp":
            start = to_channels(initial_image(y, physics)).to(real_dtype)
            primal = start.repeat(1, self.primal_channels, *([1] * (start.ndim - 2)))
        else:
            primal = g.new_zeros(batch, self.image_width * self.primal_channels, *image_shape, dtype=real_dtype)
        dual = g.new_zeros(batch, self.measurement_width * self.dual_channels, *g.shape[2:])
        for i in range(self.iterations):
            k = 0 if self.share_weights else i
            step = _PrimalDualStep(op, scale, self.dual_blocks[k], self.primal_blocks[k], self.complex_data,
                                   self.image_width, self.measurement_width)
            if self.checkpointing and torch.is_grad_enabled():
                primal, dual = checkpoint(step, primal, dual, g, use_reentrant=False)
            else:
                primal, dual = step(primal, dual, g)
        return Reconstruction(from_channels(primal[:, :self.image_width], self.complex_data))


class _PrimalDualStep:
    """One primal-dual iteration on real channel stacks (a plain callable, so it can be checkpointed).

    The forward operator is applied to primal channel ``f^(2)`` (the first channel when there is only
    one), the adjoint to dual channel ``h^(1)``: Algorithm 3 of Adler & Oktem (2018).
    """

    def __init__(self, op, scale, dual_block, primal_block, complex_data, image_width, measurement_width):
        self.op, self.scale = op, scale
        self.dual_block, self.primal_block = dual_block, primal_block
        self.complex_data = complex_data
        self.image_width, self.measurement_width = image_width, measurement_width

    def __call__(self, primal, dual, g):
        first = self.image_width if primal.shape[1] > self.image_width else 0  # f^(2), or f^(1) when alone
        current = from_channels(primal[:, first:first + self.image_width], self.complex_data)
        evaluated = to_channels(self.op(current) * self.scale)
        dual = dual + self.dual_block(torch.cat([dual, evaluated, g], dim=1))
        back = from_channels(dual[:, :self.measurement_width], self.complex_data)
        adjoint = to_channels(self.op.adjoint(back) * self.scale)
        primal = primal + self.primal_block(torch.cat([primal, adjoint], dim=1))
        return primal, dual
