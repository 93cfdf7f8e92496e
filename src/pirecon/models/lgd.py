"""Learned Gradient Descent (Adler & Oktem 2017, "Solving ill-posed inverse problems using iterative deep
neural networks", Inverse Problems 33(12)).

With the normalised operator ``K = A / ||A||`` and data ``g = y / ||A||``, an image ``x`` starting at the
classical reconstruction (or zero) and ``M`` memory images starting at zero:

    grad = K^H (K x - g)                          (gradient of 1/2 ||K x - g||^2)
    [x, memory] <- [x, memory] + Lambda_i(x, memory, grad)

for ``i = 1..iterations``; the reconstruction is ``x``. Complex images enter the CNNs as 2 real channels.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from .._validation import check_choice, check_positive
from .layers import ConvBlock, from_channels, to_channels
from .physics_tools import check_model_inputs, initial_image, operator_scale
from .reconstruction import Reconstruction

__all__ = ["LearnedGradientDescent"]

INITIAL_IMAGES = ("fbp", "zeros")


class LearnedGradientDescent(nn.Module):
    """Learned Gradient Descent: ``model(y, physics) -> Reconstruction``.

    Parameters
    ----------
    iterations : int
        Unrolled gradient steps (10 in the paper).
    memory : int
        Memory images carried between iterations besides the image itself (5 in the paper).
    hidden : int
        Hidden channels of each CNN block (32 in the paper).
    layers : int
        Convolutions per block (3 in the paper).
    share_weights : bool
        One CNN block for all iterations instead of one per iteration.
    checkpointing : bool
        Recompute each iteration in the backward pass instead of storing its activations.
    complex_data : bool
        ``True`` for complex images and measurements (MRI), ``False`` for real ones (CT).
    initial : {"fbp", "zeros"}
        Starting image: ``"fbp"`` the classical one of :func:`initial_image` (Hann-filtered FBP for CT,
        ``A^H y`` otherwise), ``"zeros"`` zero.
    """

    def __init__(self, iterations: int = 10, memory: int = 5, hidden: int = 32, layers: int = 3,
                 share_weights: bool = False, checkpointing: bool = False, complex_data: bool = False,
                 initial: str = "fbp"):
        super().__init__()
        check_positive(iterations, "iterations", integer=True)
        if isinstance(memory, bool) or not isinstance(memory, int) or memory < 0:
            raise ValueError(f"memory: expected a non-negative integer, found {memory!r}")
        self.iterations, self.memory = iterations, memory
        self.share_weights, self.checkpointing = bool(share_weights), bool(checkpointing)
        self.complex_data = bool(complex_data)
        self.initial = check_choice(initial, "initial", INITIAL_IMAGES)
        self.image_width = 2 if complex_data else 1  # real channels of one image
        state = self.image_width * (1 + memory)  # image and memory
        blocks = 1 if share_weights else iterations
        self.blocks = nn.ModuleList(
            ConvBlock(state + self.image_width, state, hidden, layers) for _ in range(blocks))

    def forward(self, y: torch.Tensor, physics) -> Reconstruction:
        check_model_inputs(y, physics, "LearnedGradientDescent", self.complex_data)
        scale = operator_scale(physics)
        op = physics.operator
        g = y * scale
        if self.initial == "fbp":
            x = initial_image(y, physics)
        else:
            x = torch.zeros_like(op.adjoint(y))
        if x.is_complex() != self.complex_data:
            raise ValueError(f"LearnedGradientDescent: expected {'complex' if self.complex_data else 'real'} "
                             f"images (complex_data={self.complex_data}), found {x.dtype} from {op!r}")
        x = to_channels(x)
        state = torch.cat([x, x.new_zeros(x.shape[0], self.image_width * self.memory, *x.shape[2:])], dim=1)
        for i in range(self.iterations):
            step = _GradientStep(op, scale, self.blocks[0 if self.share_weights else i], self.complex_data,
                                 self.image_width)
            if self.checkpointing and torch.is_grad_enabled():
                state = checkpoint(step, state, g, use_reentrant=False)
            else:
                state = step(state, g)
        return Reconstruction(from_channels(state[:, :self.image_width], self.complex_data))


class _GradientStep:
    """One learned gradient step on the real channel stack ``[x, memory]`` (a plain callable, for checkpointing)."""

    def __init__(self, op, scale, block, complex_data, image_width):
        self.op, self.scale, self.block = op, scale, block
        self.complex_data, self.image_width = complex_data, image_width

    def __call__(self, state, g):
        x = from_channels(state[:, :self.image_width], self.complex_data)
        residual = self.op(x) * self.scale - g
        grad = to_channels(self.op.adjoint(residual) * self.scale)
        return state + self.block(torch.cat([state, grad], dim=1))
