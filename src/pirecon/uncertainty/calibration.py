"""Calibrating intervals with a guarantee: risk-controlling prediction sets and conformal risk control.

The loss of image ``i`` at scale ``lambda`` is the fraction of its pixels outside ``interval.scaled(lambda)``
(:func:`miscoverage_curves`), non-increasing in ``lambda``. On ``n`` calibration images:

* **RCPS** (Bates, Angelopoulos, Lei, Malik, Jordan 2021; Angelopoulos et al. 2022 for image-to-image
  regression): ``lambda_hat`` is the smallest scale such that for it and every larger scale on the grid the
  upper confidence bound (HB or WSR, :mod:`pirecon.uncertainty.bounds`) of the risk is below ``alpha``.
  Guarantee: if calibration and test images are exchangeable (i.i.d. from one distribution), then with
  probability at least ``1 - delta`` over the calibration set, the expected fraction of a test image's pixels
  outside its calibrated interval is at most ``alpha``.
* **Conformal risk control** (Angelopoulos, Bates, Fisch, Lei, Schuster 2024): ``lambda_hat`` is the smallest
  scale with ``(n R_n(lambda) + B) / (n + 1) <= alpha`` (``B = 1``, the largest loss). Guarantee, under
  exchangeability: the expected test risk, over calibration and test draws together, is at most ``alpha``.

Calibration and test images must be disjoint (:func:`check_disjoint`) and, where the data are volumes or
patients, split by volume or patient (:func:`group_splits`), never by slice.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch

from ..errors import ArgumentError, PireconUserError
from .bounds import BOUNDS, _check_level, hb_upper_bound, minimum_calibration_size, wsr_upper_bound
from .intervals import Interval

__all__ = ["Calibration", "required_scale", "miscoverage_curves", "rcps", "conformal_risk_control",
           "check_disjoint", "group_splits", "METHODS"]

METHODS = ("rcps", "crc")


@dataclass(frozen=True)
class Calibration:
    """The outcome of a calibration: ``lambda_hat`` and what it guarantees.

    ``risk_hat``: empirical risk at ``lambda_hat``; ``upper_bound``: its upper confidence bound (RCPS) or the
    adjusted risk ``(n R + 1) / (n + 1)`` (CRC); ``bound``: ``"hb"``, ``"wsr"`` or None (CRC).
    """

    method: str
    lambda_hat: float
    alpha: float
    delta: float | None
    n: int
    risk_hat: float
    upper_bound: float
    bound: str | None

    def to_dict(self) -> dict:
        return asdict(self)


def required_scale(interval: Interval, truth) -> torch.Tensor:
    """Per pixel, the smallest ``lambda`` whose scaled interval contains the truth, ``(B, H*W)`` float64:
    ``(c - t) / (c - l)`` below the centre, ``(t - c) / (u - c)`` above it, 0 at the centre, ``inf`` where the
    side has zero width and the truth is off the centre."""
    truth = torch.as_tensor(truth).to(torch.float64)
    if truth.shape != interval.center.shape:
        raise ArgumentError(f"truth: expected the interval's shape {tuple(interval.center.shape)}, found "
                            f"{tuple(truth.shape)}")
    c, lo, up = (v.to(torch.float64) for v in (interval.center, interval.lower, interval.upper))
    below, above = (c - truth).clamp(min=0), (truth - c).clamp(min=0)
    need_low = torch.where(below > 0, below / (c - lo), torch.zeros_like(below))  # x / 0 = inf: never covered
    need_up = torch.where(above > 0, above / (up - c), torch.zeros_like(above))
    return torch.maximum(need_low, need_up).reshape(truth.shape[0], -1)


def miscoverage_curves(interval: Interval, truth, lambdas) -> np.ndarray:
    """``(B, L)``: for each image, the fraction of its pixels outside ``interval.scaled(lambda)`` for each
    ``lambda`` of the ascending grid ``lambdas`` (exact, by sorting each image's :func:`required_scale`)."""
    grid = _grid(lambdas)
    needed = np.sort(required_scale(interval, truth).numpy(), axis=1)
    pixels = needed.shape[1]
    covered = np.stack([np.searchsorted(row, grid, side="right") for row in needed])
    return 1.0 - covered / pixels


def _grid(lambdas) -> np.ndarray:
    grid = np.asarray(lambdas, dtype=np.float64).ravel()
    if grid.size < 2 or not np.all(np.isfinite(grid)) or np.any(np.diff(grid) <= 0) or grid[0] < 0:
        raise ArgumentError(f"lambdas: expected at least two increasing finite scales >= 0, found {grid.size} values")
    return grid


def _losses(losses, grid: np.ndarray) -> np.ndarray:
    losses = np.asarray(losses, dtype=np.float64)
    if losses.ndim != 2 or losses.shape[1] != grid.size:
        raise ArgumentError(f"losses: expected shape (n, {grid.size}) (one loss per image and scale), found "
                            f"{losses.shape}")
    if not np.all(np.isfinite(losses)) or losses.min() < 0 or losses.max() > 1:
        raise ArgumentError("losses: expected finite values in [0, 1]")
    return losses


def rcps(losses, lambdas, alpha: float = 0.1, delta: float = 0.1, bound: str = "hb") -> Calibration:
    """Risk-controlling prediction set: ``lambda_hat`` from per-image losses ``(n, L)`` on the ascending grid
    ``lambdas`` (see the module). Refuses calibration sets too small for ``(alpha, delta)``."""
    grid = _grid(lambdas)
    losses = _losses(losses, grid)
    alpha, delta = _check_level(alpha, "alpha"), _check_level(delta, "delta")
    if bound not in BOUNDS:
        raise ArgumentError(f"bound: expected one of {', '.join(BOUNDS)}, found {bound!r}")
    n = losses.shape[0]
    needed = minimum_calibration_size(alpha, delta, bound)
    if n < needed:
        raise PireconUserError(f"calibration: expected at least {needed} calibration images for alpha={alpha:g}, "
                               f"delta={delta:g} with the {bound.upper()} bound, found {n}")
    risks = losses.mean(axis=0)

    def ucb(k: int) -> float:
        return hb_upper_bound(risks[k], n, delta) if bound == "hb" else wsr_upper_bound(losses[:, k], delta)

    chosen = None
    for k in range(grid.size - 1, -1, -1):  # from the widest interval down, while the bound stays below alpha
        bound_k = ucb(k)
        if bound_k >= alpha:
            break
        chosen, chosen_bound = k, bound_k
    if chosen is None:
        raise PireconUserError(f"calibration: expected a scale on the grid whose risk bound is below alpha={alpha:g}, "
                               f"found none (the largest, {grid[-1]:g}, has empirical risk {risks[-1]:.4f} and bound "
                               f"{ucb(grid.size - 1):.4f} on {n} images); use more calibration images or extend the "
                               "grid")
    return Calibration("rcps", float(grid[chosen]), alpha, delta, n, float(risks[chosen]), float(chosen_bound), bound)


def conformal_risk_control(losses, lambdas, alpha: float = 0.1) -> Calibration:
    """Conformal risk control: the smallest scale with ``(n R_n + 1) / (n + 1) <= alpha`` (losses in [0, 1])."""
    grid = _grid(lambdas)
    losses = _losses(losses, grid)
    alpha = _check_level(alpha, "alpha")
    n = losses.shape[0]
    adjusted = (n * losses.mean(axis=0) + 1.0) / (n + 1)
    passing = np.nonzero(adjusted <= alpha)[0]
    if passing.size == 0:
        raise PireconUserError(f"calibration: expected a scale with adjusted risk (n R + 1)/(n + 1) <= alpha={alpha:g}, "
                               f"found none (n={n}; the largest scale gives {adjusted[-1]:.4f})")
    # the risk is non-increasing in lambda: the first passing scale after which all pass
    failing_after = np.nonzero(adjusted > alpha)[0]
    k = int(failing_after[-1] + 1) if failing_after.size else 0
    return Calibration("crc", float(grid[k]), alpha, None, n, float(losses[:, k].mean()), float(adjusted[k]), None)


def check_disjoint(calibration_ids, test_ids, what: str = "images") -> None:
    """Refuse calibration and test sets that share an identifier (a file, volume or patient)."""
    shared = sorted(set(map(str, calibration_ids)) & set(map(str, test_ids)))
    if shared:
        raise PireconUserError(f"calibration and test {what}: expected disjoint sets, found {len(shared)} in both "
                               f"({', '.join(shared[:3])}{', ...' if len(shared) > 3 else ''})")


def group_splits(groups, calibration_fraction: float, splits: int, seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    """``splits`` random calibration/test splits of samples by their group (volume, patient): every sample of
    a group goes to the same side. Returns ``(calibration indices, test indices)`` pairs."""
    groups = np.asarray(groups)
    fraction = _check_level(calibration_fraction, "calibration_fraction")
    unique = np.unique(groups)
    if unique.size < 2:
        raise ArgumentError(f"groups: expected at least two groups to split, found {unique.size}")
    count = min(max(1, round(fraction * unique.size)), unique.size - 1)
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(int(splits)):
        chosen = rng.permutation(unique)[:count]
        in_calibration = np.isin(groups, chosen)
        out.append((np.nonzero(in_calibration)[0], np.nonzero(~in_calibration)[0]))
    return out
