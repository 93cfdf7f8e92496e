"""Baseline MRI reconstructions: zero-filled coil images, root-sum-of-squares, SENSE adjoint.

These are the references learned models must beat and the initialisations they start from.
"""

from __future__ import annotations

import torch

from .._validation import check_tensor
from .fft import ifft2c
from .operators import SenseOperator

__all__ = ["zero_filled", "rss", "sense_adjoint"]


def zero_filled(kspace: torch.Tensor) -> torch.Tensor:
    """Coil images ``ifft2c(y)`` of (masked, zero-filled) k-space ``(B, coils, H, W)``; same shape, complex."""
    check_tensor(kspace, "kspace", kind="complex", min_ndim=3)
    return ifft2c(kspace)


def rss(coil_images: torch.Tensor, dim: int = -3) -> torch.Tensor:
    """Root-sum-of-squares over coils: ``sqrt(sum_c |x_c|^2)``, real, with ``dim`` kept (size 1).

    ``rss(zero_filled(y))`` is fastMRI's multi-coil zero-filled baseline.
    """
    check_tensor(coil_images, "coil_images", kind="any", min_ndim=1)
    return torch.sqrt((coil_images.abs() ** 2).sum(dim=dim, keepdim=True))


def sense_adjoint(kspace: torch.Tensor, coil_maps: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Coil-combined image ``sum_c conj(S_c) ifft2c(M y_c)``: ``(B, coils, H, W) -> (B, 1, H, W)`` complex.

    With maps normalised to ``sum_c |S_c|^2 = 1`` this is the matched-filter combination of the coil images.
    """
    check_tensor(coil_maps, "coil_maps", kind="complex", min_ndim=3)
    check_tensor(kspace, "kspace", kind="complex", min_ndim=3)
    if kspace.shape[-3] != coil_maps.shape[-3]:
        raise ValueError(f"kspace: expected {coil_maps.shape[-3]} coils to match coil_maps, found {kspace.shape[-3]}")
    if tuple(kspace.shape[-2:]) != tuple(coil_maps.shape[-2:]):
        raise ValueError(f"kspace: expected (H, W) = {tuple(coil_maps.shape[-2:])} like coil_maps, "
                         f"found {tuple(kspace.shape[-2:])}")
    return SenseOperator(coil_maps, mask).adjoint(kspace)
