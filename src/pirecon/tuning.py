"""Fair tuning of classical baselines: pick a parameter by a grid on validation data.

A comparison with a learned method is fair only against the best-tuned
baseline, so benchmarks tune each baseline's parameter (TV's lambda, an FBP
filter) on held-out validation images and report it at that value.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence

import torch

from .metrics import psnr

__all__ = ["GridSearchResult", "grid_search"]


@dataclass(frozen=True)
class GridSearchResult:
    """The best value and the mean score of every value tried, in grid order."""

    best: Any
    best_score: float
    scores: tuple[tuple[Any, float], ...]


def grid_search(reconstruct: Callable[[Any], torch.Tensor], values: Sequence, truth: torch.Tensor, *,
                metric: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = psnr) -> GridSearchResult:
    """Evaluate ``reconstruct(value)`` for every value and keep the one with the highest mean ``metric``.

    ``reconstruct(value)`` returns images shaped like ``truth`` ``(B, C, H, W)`` (complex images are
    compared by magnitude); ``metric(image, truth)`` returns one score per image (default PSNR).
    """
    values = list(values)
    if not values:
        raise ValueError("values: expected at least one value to try, found none")
    reference = truth.abs() if truth.is_complex() else truth
    scores = []
    for value in values:
        image = reconstruct(value)
        image = image.abs() if image.is_complex() else image
        scores.append((value, float(metric(image.to(reference.dtype), reference).mean())))
    best, best_score = max(scores, key=lambda pair: pair[1])
    return GridSearchResult(best, best_score, tuple(scores))
