"""Checks shared by the task metrics and calibration: every failure is an :class:`~pirecon.errors.ArgumentError`
whose message names the argument, what was expected and what was found."""

from __future__ import annotations

import numpy as np
import torch

from .._validation import check_choice, check_positive
from ..errors import ArgumentError

__all__ = ["as_array", "scores_1d", "binary_labels", "both_classes", "probabilities_1d", "level", "choice",
           "positive_int"]


def as_array(x, name: str) -> np.ndarray:
    """``x`` (a tensor, an array or a sequence) as a NumPy array; tensors are detached and moved to the CPU."""
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu()
        if x.dtype in (torch.float16, torch.bfloat16):
            x = x.double()
        return x.numpy()
    try:
        out = np.asarray(x)
    except (TypeError, ValueError):
        raise ArgumentError(f"{name}: expected an array or a tensor, found {type(x).__name__}") from None
    if out.dtype == object:
        raise ArgumentError(f"{name}: expected a numeric array or tensor, found {type(x).__name__} of dtype object")
    return out


def _finite(values: np.ndarray, name: str) -> np.ndarray:
    if values.dtype.kind not in "biuf":
        raise ArgumentError(f"{name}: expected real numbers, found dtype {values.dtype}")
    values = values.astype(np.float64, copy=False)
    if values.size and not np.isfinite(values).all():
        n_nan, n_inf = int(np.isnan(values).sum()), int(np.isinf(values).sum())
        raise ArgumentError(f"{name}: expected finite values, found {n_nan} NaN and {n_inf} Inf entries")
    return values


def scores_1d(x, name: str = "scores") -> np.ndarray:
    """``(N,)`` finite float64 scores, ``N >= 1``."""
    values = as_array(x, name)
    if values.ndim != 1 or values.size == 0:
        raise ArgumentError(f"{name}: expected a 1-D array of N >= 1 values (one per case), found shape "
                            f"{values.shape}")
    return _finite(values, name)


def probabilities_1d(x, name: str = "probabilities") -> np.ndarray:
    """``(N,)`` float64 probabilities of the positive class, each in ``[0, 1]``."""
    values = scores_1d(x, name)
    outside = (values < 0) | (values > 1)
    if outside.any():
        raise ArgumentError(f"{name}: expected probabilities in [0, 1], found {int(outside.sum())} outside "
                            f"(min {values.min():g}, max {values.max():g})")
    return values


def binary_labels(x, name: str = "labels", shape: tuple[int, ...] | None = None, like: str = "scores") -> np.ndarray:
    """Labels of 0 and 1 (bool, integer or float) as an ``int64`` array, of ``shape`` (that of ``like``) if given."""
    values = as_array(x, name)
    if shape is not None and values.shape != tuple(shape):
        raise ArgumentError(f"{name}: expected the shape of {like} {tuple(shape)}, found {values.shape}")
    if values.dtype.kind not in "biuf":
        raise ArgumentError(f"{name}: expected binary labels (0 or 1), found dtype {values.dtype}")
    if values.dtype.kind == "b":
        return values.astype(np.int64)
    binary = (values == 0) | (values == 1)
    if not binary.all():
        others = np.unique(values[~binary])
        shown = ", ".join(f"{v:g}" for v in others[:3]) + (", ..." if others.size > 3 else "")
        raise ArgumentError(f"{name}: expected binary labels (0 or 1), found {int((~binary).sum())} other values "
                            f"({shown})")
    return values.astype(np.int64)


def both_classes(labels: np.ndarray, what: str, name: str = "labels") -> None:
    """Refuse labels of a single class where ``what`` needs positives and negatives."""
    positives = int(labels.sum())
    if positives == 0 or positives == labels.size:
        only = 1 if positives else 0
        raise ArgumentError(f"{name}: expected both classes (0 and 1) for {what}, found only class {only} "
                            f"({labels.size} labels)")


def level(value, name: str) -> float:
    """A number in the open interval ``(0, 1)`` (a level, a fraction, a miscoverage rate)."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)) or not 0 < value < 1:
        raise ArgumentError(f"{name}: expected a number in (0, 1), found {value!r}")
    return float(value)


def choice(value, name: str, choices) -> str:
    """``value`` lower-cased if it is one of ``choices``."""
    try:
        return check_choice(value, name, choices)
    except ValueError as err:
        raise ArgumentError(str(err)) from None


def positive_int(value, name: str) -> int:
    """A positive integer (NumPy integers count)."""
    try:
        return int(check_positive(value, name, integer=True))
    except ValueError as err:
        raise ArgumentError(str(err)) from None
