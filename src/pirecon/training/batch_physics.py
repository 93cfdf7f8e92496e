"""What losses and metrics compare: a batch's target and the matching part of a reconstruction.

A batch's measurements and physics come from :mod:`pirecon.data.acquisition` (``measurement``,
``BatchPhysics``), the one door from raw data to ``(y, Physics)``; they are re-exported here.
"""

from __future__ import annotations

import torch

from ..data.acquisition import BatchPhysics, measurement

__all__ = ["BatchPhysics", "measurement", "target_and_prediction", "center_crop"]


def center_crop(x: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
    """The central ``shape = (h, w)`` of the last two dimensions of ``x``."""
    height, width = x.shape[-2:]
    h, w = shape
    if h > height or w > width:
        raise ValueError(f"center_crop: expected a crop of at most {(height, width)}, found {(h, w)}")
    top, left = (height - h) // 2, (width - w) // 2
    return x[..., top:top + h, left:left + w]


def target_and_prediction(batch: dict, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(target, prediction)`` compared by losses and metrics, same shape ``(B, 1, h, w)``.

    The target is the batch's ``ground_truth`` (the prediction as it is: real for CT, complex for
    MRI); without one, fastMRI's ``reconstruction_rss`` (magnitude), compared with the magnitude of
    the reconstruction cropped to its size.
    """
    if "ground_truth" in batch:
        target = batch["ground_truth"]
        if target.is_complex() != image.is_complex():
            target = target.abs() if target.is_complex() else target
            image = image.abs() if image.is_complex() else image
        return target.to(image.dtype), image
    if "reconstruction_rss" in batch:
        target = batch["reconstruction_rss"]
        prediction = image.abs() if image.is_complex() else image
        return target.to(prediction.dtype), center_crop(prediction, tuple(target.shape[-2:]))
    raise ValueError(f"batch: expected a 'ground_truth' or 'reconstruction_rss' target, found keys {sorted(batch)}")
