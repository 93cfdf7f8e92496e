"""An out-of-distribution flag computed at inference, without ground truth.

Two features per slice, from what every reconstruction has:

* ``consistency``: the data-consistency residual relative to the noise level, ``mean |A x_hat - y|^2 / var``
  over the measured entries (nonzero ``y``: the sampled k-space lines of MRI), with the variance of the data's
  noise model (Gaussian ``std(y)^2``, transmission Poisson ``exp(y) / I0``, complex Gaussian ``sigma^2``):
  about 1 when the image explains the data to the noise level. Without a noise model, ``||A x_hat - y||^2 /
  ||y||^2``.
* ``width``: the mean width of the slice's interval, for models with an uncertainty head.

:func:`fit_ood` calibrates on in-distribution slices: a slice is flagged when its ``log consistency`` leaves the
central ``1 - alpha / k`` range of the calibration slices' or its width exceeds their ``1 - alpha / k`` quantile
(``k`` the number of features): by the union bound, at most about ``alpha`` of in-distribution slices are
flagged. :class:`pirecon.inference.Reconstructor` reports the features, and the flag once calibrated, in
``provenance["ood"]``.
"""

from __future__ import annotations

import numpy as np
import torch

from ..errors import ArgumentError

__all__ = ["noise_variance", "consistency", "fit_ood", "apply_ood", "OOD_ALPHA"]

OOD_ALPHA = 0.1
"""The default fraction of in-distribution slices the flag may raise."""


def noise_variance(noise, y: torch.Tensor) -> torch.Tensor | None:
    """Per-entry variance of ``noise`` (a :class:`pirecon.noise.NoiseModel`) at measurements ``y``, broadcastable
    to ``y``; None for no or an unknown noise model."""
    from ..noise import ComplexGaussianNoise, GaussianNoise, TransmissionPoisson

    if isinstance(noise, GaussianNoise):
        return noise.std(y) ** 2
    if isinstance(noise, TransmissionPoisson):
        return torch.exp(y.real.double()).to(y.real.dtype) / noise.photon_count
    if isinstance(noise, ComplexGaussianNoise):
        return torch.full((), noise.sigma ** 2, dtype=y.real.dtype, device=y.device)
    return None


def consistency(y: torch.Tensor, physics, image: torch.Tensor) -> torch.Tensor:
    """``(B,)`` data-consistency residual of ``image`` ``(B, 1, H, W)`` against ``y`` relative to the noise level
    (see the module)."""
    residual = (physics(image.to(y.dtype) if not y.is_complex() else image.to(torch.complex64)) - y).abs() ** 2
    measured = (y != 0).to(residual.dtype)
    dims = tuple(range(1, y.ndim))
    variance = noise_variance(physics.noise, y)
    if variance is None:
        return residual.sum(dim=dims) / (y.abs() ** 2).sum(dim=dims).clamp_min(1e-30)
    ratio = residual / variance.clamp_min(1e-30)
    return (ratio * measured).sum(dim=dims) / measured.sum(dim=dims).clamp_min(1)


def fit_ood(features: dict[str, np.ndarray], alpha: float = OOD_ALPHA) -> dict:
    """Thresholds from in-distribution ``features`` (``{"consistency": (N,), "width": (N,) optional}``):
    ``{"alpha", "n", "consistency": [low, high], "width": high}`` (see the module)."""
    if not 0 < alpha < 1:
        raise ArgumentError(f"alpha: expected a number in (0, 1), found {alpha!r}")
    values = {k: np.asarray(v, dtype=np.float64) for k, v in features.items() if v is not None}
    if "consistency" not in values or values["consistency"].size < 10:
        found = values["consistency"].size if "consistency" in values else 0
        raise ArgumentError(f"features: expected the consistency of at least 10 in-distribution slices, found {found}")
    share = alpha / len(values)
    log_c = np.log(np.clip(values["consistency"], 1e-30, None))
    low, high = np.quantile(log_c, [share / 2, 1 - share / 2])
    out = {"alpha": float(alpha), "n": int(log_c.size), "consistency": [float(np.exp(low)), float(np.exp(high))]}
    if "width" in values:
        out["width"] = float(np.quantile(values["width"], 1 - share))
    return out


def apply_ood(features: dict[str, np.ndarray], thresholds: dict) -> np.ndarray:
    """``(N,)`` bool: the slices whose features leave the calibrated ranges of ``thresholds`` (:func:`fit_ood`)."""
    c = np.asarray(features["consistency"], dtype=np.float64)
    low, high = thresholds["consistency"]
    flag = (c < low) | (c > high)
    if "width" in thresholds and features.get("width") is not None:
        flag |= np.asarray(features["width"], dtype=np.float64) > thresholds["width"]
    return flag
