"""Image-quality metrics per image, on torchmetrics.

Both take ``(B, C, H, W)`` tensors (``(B, C, D, H, W)`` for PSNR) and return
one value per image ``(B,)``; the data range is that of each ground-truth
image, ``max - min``.
"""

from __future__ import annotations

import torch
from torchmetrics.functional.image import peak_signal_noise_ratio, structural_similarity_index_measure

from ._validation import check_tensor

__all__ = ["psnr", "ssim", "nmse"]


def _pairs(image: torch.Tensor, truth: torch.Tensor):
    check_tensor(truth, "truth", min_ndim=4)
    check_tensor(image, "image", trailing_shape=truth.shape[1:])
    if image.shape != truth.shape:
        raise ValueError(f"image: expected shape {tuple(truth.shape)} like truth, found {tuple(image.shape)}")
    flat = truth.reshape(truth.shape[0], -1)
    ranges = (flat.amax(dim=1) - flat.amin(dim=1)).double()
    constant = torch.nonzero(ranges == 0).flatten().tolist()
    if constant:
        raise ValueError(f"truth: expected images with a data range max - min > 0, found constant images at {constant}")
    return image.double(), truth.double(), ranges


def psnr(image: torch.Tensor, truth: torch.Tensor) -> torch.Tensor:
    """Peak signal-to-noise ratio in dB: ``10 log10(range^2 / mean((image - truth)^2))``."""
    image, truth, ranges = _pairs(image, truth)
    return torch.stack([
        peak_signal_noise_ratio(i[None], t[None], data_range=float(r)) for i, t, r in zip(image, truth, ranges)
    ])


def ssim(image: torch.Tensor, truth: torch.Tensor) -> torch.Tensor:
    """Structural similarity (Gaussian window 11, sigma 1.5), per image."""
    image, truth, ranges = _pairs(image, truth)
    return torch.stack([
        structural_similarity_index_measure(i[None], t[None], data_range=float(r)) for i, t, r in zip(image, truth, ranges)
    ])


def nmse(image: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Normalised mean squared error per image: ``||image - target||^2 / ||target||^2``, shape ``(B,)``;
    real or complex, differentiable (fastMRI's NMSE)."""
    difference = (image - target).flatten(1).abs().pow(2).sum(dim=1)
    return difference / target.flatten(1).abs().pow(2).sum(dim=1).clamp_min(torch.finfo(difference.dtype).tiny)
