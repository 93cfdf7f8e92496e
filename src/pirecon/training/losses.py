"""Training losses: a weighted sum of MSE, L1 and (1 - SSIM).

    loss = w_mse * mean |x - t|^2 + w_l1 * mean |x - t| + w_ssim * (1 - SSIM(|x|, |t|))

Complex images count by their complex difference in MSE and L1, by magnitude in SSIM. SSIM uses
each target image's own range ``max - min`` (Gaussian window 11, sigma 1.5).
"""

from __future__ import annotations

import numbers

import torch
from torch import nn
from torchmetrics.functional.image import structural_similarity_index_measure

__all__ = ["ReconstructionLoss", "ssim_per_image"]


def ssim_per_image(image: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Differentiable SSIM of real ``(B, C, H, W)`` images, one value per image, each with its target's range."""
    flat = target.detach().flatten(1)
    ranges = (flat.amax(dim=1) - flat.amin(dim=1)).clamp_min(torch.finfo(target.dtype).eps)
    # torchmetrics takes one data range per call: scale each pair to a unit range instead
    scale = ranges.view(-1, *([1] * (target.ndim - 1)))
    return structural_similarity_index_measure(image / scale, target / scale, data_range=1.0, reduction="none")


class ReconstructionLoss(nn.Module):
    """``w_mse * MSE + w_l1 * L1 + w_ssim * (1 - SSIM)`` between a reconstruction and its target ``(B, C, H, W)``.

    Parameters
    ----------
    mse, l1, ssim : float
        Non-negative weights; at least one positive.
    """

    def __init__(self, mse: float = 1.0, l1: float = 0.0, ssim: float = 0.0):
        super().__init__()
        weights = {"mse": mse, "l1": l1, "ssim": ssim}
        for name, value in weights.items():
            if isinstance(value, bool) or not isinstance(value, numbers.Real) or not value >= 0:
                raise ValueError(f"loss.{name}: expected a non-negative weight, found {value!r}")
        if not any(v > 0 for v in weights.values()):
            raise ValueError(f"loss: expected at least one positive weight among mse, l1, ssim, found {weights}")
        self.weights = {k: float(v) for k, v in weights.items()}

    def forward(self, image: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if image.shape != target.shape:
            raise ValueError(f"loss: expected the reconstruction to have the target's shape {tuple(target.shape)}, "
                             f"found {tuple(image.shape)}")
        total = image.new_zeros((), dtype=image.real.dtype)
        difference = image - target
        if self.weights["mse"]:
            total = total + self.weights["mse"] * (difference.abs() ** 2).mean()
        if self.weights["l1"]:
            total = total + self.weights["l1"] * difference.abs().mean()
        if self.weights["ssim"]:
            magnitude = image.abs() if image.is_complex() else image
            reference = target.abs() if target.is_complex() else target
            total = total + self.weights["ssim"] * (1 - ssim_per_image(magnitude, reference)).mean()
        return total

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v:g}" for k, v in self.weights.items())
