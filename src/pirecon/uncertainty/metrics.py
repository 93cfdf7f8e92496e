"""How good an interval or a predicted standard deviation is, against the truth.

Per image ``(B,)``: :func:`miscoverage` (the risk calibration controls: the fraction of pixels outside the
interval) and :func:`coverage`, :func:`mean_width`. Over all pixels: :func:`risk_by_width_quartile` (is the
risk the same for narrow and wide intervals?), :func:`spearman` (does the width follow the error?),
:func:`uce` (uncertainty calibration error of a predicted variance, Laves et al. 2020) and
:func:`sparsification` / :func:`ause` (the error left after removing the most uncertain pixels, against the
oracle that removes the largest errors; Ilg et al. 2018).
"""

from __future__ import annotations

import numpy as np
import torch
from scipy import integrate, stats

from ..errors import ArgumentError
from .intervals import Interval

__all__ = ["miscoverage", "coverage", "mean_width", "risk_by_width_quartile", "spearman", "uce", "sparsification",
           "ause"]

_MAX_PIXELS = 2_000_000  # Spearman and sparsification on at most this many pixels (a fixed, seeded subsample)


def _truth(interval: Interval, truth) -> torch.Tensor:
    truth = torch.as_tensor(truth)
    if truth.shape != interval.center.shape:
        raise ArgumentError(f"truth: expected the interval's shape {tuple(interval.center.shape)}, found "
                            f"{tuple(truth.shape)}")
    return truth.to(interval.center.dtype)


def miscoverage(interval: Interval, truth) -> torch.Tensor:
    """``(B,)``: the fraction of each image's pixels whose truth lies outside ``[lower, upper]``."""
    truth = _truth(interval, truth)
    outside = (truth < interval.lower) | (truth > interval.upper)
    return outside.flatten(1).double().mean(dim=1)


def coverage(interval: Interval, truth) -> torch.Tensor:
    """``(B,)``: ``1 - miscoverage``."""
    return 1.0 - miscoverage(interval, truth)


def mean_width(interval: Interval) -> torch.Tensor:
    """``(B,)``: the mean of ``upper - lower`` over each image."""
    return interval.width.flatten(1).double().mean(dim=1)


def risk_by_width_quartile(interval: Interval, truth) -> np.ndarray:
    """The fraction of pixels outside the interval within each quartile of the width (narrowest first), ``(4,)``."""
    truth = _truth(interval, truth)
    width = interval.width.flatten().double().numpy()
    outside = ((truth < interval.lower) | (truth > interval.upper)).flatten().numpy()
    edges = np.quantile(width, [0.25, 0.5, 0.75])
    quartile = np.searchsorted(edges, width, side="right")
    return np.array([outside[quartile == q].mean() if np.any(quartile == q) else np.nan for q in range(4)])


def _pixels(*arrays, seed: int = 0) -> list[np.ndarray]:
    flat = [torch.as_tensor(a).flatten().double().numpy() for a in arrays]
    if flat[0].size > _MAX_PIXELS:
        keep = np.random.default_rng(seed).choice(flat[0].size, _MAX_PIXELS, replace=False)
        flat = [a[keep] for a in flat]
    return flat


def spearman(uncertainty, error) -> float:
    """Spearman's rank correlation between a per-pixel uncertainty (width or std) and ``|error|``."""
    u, e = _pixels(uncertainty, torch.as_tensor(error).abs())
    if u.shape != e.shape:
        raise ArgumentError(f"error: expected {u.size} pixels like the uncertainty, found {e.size}")
    return float(stats.spearmanr(u, e).statistic)


def uce(std, error, bins: int = 10) -> float:
    """Uncertainty calibration error: pixels binned by predicted variance (equal-count bins), then
    ``sum_b (n_b / N) |mean(var_b) - mean(error_b^2)|`` (0: the variance is the squared error on average)."""
    variance, squared = _pixels(torch.as_tensor(std) ** 2, torch.as_tensor(error) ** 2)
    order = np.argsort(variance, kind="stable")
    total = 0.0
    for chunk in np.array_split(order, bins):
        if chunk.size:
            total += chunk.size / order.size * abs(variance[chunk].mean() - squared[chunk].mean())
    return float(total)


def sparsification(uncertainty, error, steps: int = 20) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(fractions, curve, oracle)``: the mean ``|error|`` of the pixels left after removing the given fraction
    of the most uncertain pixels, and after removing the largest errors (the oracle), each divided by the mean
    over all pixels. ``fractions`` runs from 0 to ``(steps - 1) / steps``."""
    u, e = _pixels(uncertainty, torch.as_tensor(error).abs())
    fractions = np.arange(steps) / steps
    by_uncertainty, by_error = e[np.argsort(-u, kind="stable")], np.sort(e)[::-1]
    scale = e.mean() if e.mean() > 0 else 1.0

    def left(sorted_errors: np.ndarray) -> np.ndarray:
        return np.array([sorted_errors[int(f * e.size):].mean() for f in fractions]) / scale

    return fractions, left(by_uncertainty), left(by_error)


def ause(uncertainty, error, steps: int = 20) -> float:
    """Area between the sparsification curve and the oracle's (trapezoid rule over the removed fraction);
    0 when the uncertainty ranks the pixels as their errors do."""
    fractions, curve, oracle = sparsification(uncertainty, error, steps)
    return float(integrate.trapezoid(curve - oracle, fractions))
