"""How well a diagnostic task does on a reconstruction: segmentation overlap and distance, detection ROC, and
bootstrap confidence intervals over cases.

Segmentation, per image ``(B,)``: :func:`dice` (foreground overlap ``2 |P & T| / (|P| + |T|)``) and
:func:`hausdorff95` (the 95th percentile of the symmetric surface distances, in the units of ``spacing``).
Detection, over cases ``(N,)`` of scores and 0/1 labels: :func:`roc_auc` (the Mann-Whitney probability that a
positive outscores a negative), :func:`operating_point` (a threshold chosen on validation data) and
:func:`sensitivity_specificity` at a threshold. A case is called positive when ``score >= threshold``.
Uncertainty over cases: :func:`bootstrap_ci` (percentile bootstrap of any statistic, the rows of all arrays
resampled together) and :func:`paired_bootstrap` (the difference between two modes on the same cases, both
evaluated on the same resampled cases).
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import torch
from scipy import ndimage, stats

from ..errors import ArgumentError, PireconUserError
from ._checks import as_array, binary_labels, both_classes, choice, positive_int, scores_1d
from ._checks import level as check_level

__all__ = ["dice", "hausdorff95", "roc_auc", "operating_point", "sensitivity_specificity", "bootstrap_ci",
           "paired_bootstrap", "RULES"]

RULES = ("youden", "closest")
"""Rules of :func:`operating_point`: the largest Youden index ``sensitivity + specificity - 1``, or the point
of the ROC curve closest to its top-left corner ``(1 - specificity, sensitivity) = (0, 1)``."""


# ---- segmentation ----------------------------------------------------------------------------------------

def _mask_shape(values: np.ndarray, name: str) -> None:
    if values.ndim not in (4, 5) or values.shape[1] != 1:
        raise ArgumentError(f"{name}: expected shape (B, 1, H, W) or (B, 1, D, H, W), found {values.shape}")


def _masks(prediction, target, prediction_name: str) -> tuple[np.ndarray, np.ndarray]:
    target_values = as_array(target, "target")
    _mask_shape(target_values, "target")
    target_mask = binary_labels(target_values, "target").astype(bool)
    pred = as_array(prediction, prediction_name)
    if pred.shape != target_values.shape:
        raise ArgumentError(f"{prediction_name}: expected the shape of target {target_values.shape}, found "
                            f"{pred.shape}")
    return pred, target_mask


def dice(probabilities_or_mask, target, threshold: float = 0.5) -> torch.Tensor:
    """Foreground Dice of each image, ``(B,)`` float64: ``2 |P & T| / (|P| + |T|)`` over the pixels of the image.

    ``probabilities_or_mask`` and ``target`` are ``(B, 1, H, W)`` (or ``(B, 1, D, H, W)``). A floating input
    holds foreground probabilities in ``[0, 1]`` and ``P = probabilities > threshold`` (as torchmetrics'
    binary metrics threshold); a boolean or integer input is a 0/1 mask used as it is. ``target`` is a 0/1 mask.
    Convention: an image whose prediction and target are both empty has Dice 1 (nothing to find, nothing found).
    """
    pred, target_mask = _masks(probabilities_or_mask, target, "probabilities_or_mask")
    if pred.dtype.kind == "f":
        if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not 0 <= threshold < 1:
            raise ArgumentError(f"threshold: expected a number in [0, 1), found {threshold!r}")
        pred_mask = _probabilities(pred, "probabilities_or_mask") > threshold
    else:
        pred_mask = binary_labels(pred, "probabilities_or_mask").astype(bool)
    batch = pred_mask.shape[0]
    p, t = pred_mask.reshape(batch, -1), target_mask.reshape(batch, -1)
    overlap = (p & t).sum(axis=1).astype(np.float64)
    total = (p.sum(axis=1) + t.sum(axis=1)).astype(np.float64)
    out = np.where(total > 0, 2.0 * overlap / np.maximum(total, 1.0), 1.0)
    return torch.from_numpy(out)


def _probabilities(values: np.ndarray, name: str) -> np.ndarray:
    values = values.astype(np.float64, copy=False)
    bad = ~np.isfinite(values) | (values < 0) | (values > 1)
    if bad.any():
        raise ArgumentError(f"{name}: expected probabilities in [0, 1] (or a 0/1 mask), found {int(bad.sum())} "
                            "values outside (NaN, Inf or out of range)")
    return values


def _spacing(spacing, dims: int) -> tuple[float, ...]:
    try:
        values = np.atleast_1d(np.asarray(spacing, dtype=np.float64)) if not isinstance(spacing, bool) else None
    except (TypeError, ValueError):
        values = None
    if values is None or values.ndim != 1 or values.size not in (1, dims) or not np.all(np.isfinite(values)) or np.any(values <= 0):
        raise ArgumentError(f"spacing: expected a positive number or {dims} positive numbers (one per spatial "
                            f"axis), found {spacing!r}")
    return tuple(float(v) for v in np.broadcast_to(values, (dims,)))


def _boundary(mask: np.ndarray) -> np.ndarray:
    """The foreground pixels with a background neighbour (face connectivity; outside the image is background)."""
    structure = ndimage.generate_binary_structure(mask.ndim, 1)
    return mask & ~ndimage.binary_erosion(mask, structure=structure, border_value=0)


def hausdorff95(mask, target, spacing=1.0) -> torch.Tensor:
    """95th percentile Hausdorff distance of each image, ``(B,)`` float64, in pixels times ``spacing``.

    ``mask`` and ``target`` are 0/1 masks ``(B, 1, H, W)`` (or ``(B, 1, D, H, W)``); ``spacing`` is the pixel
    size, one number or one per spatial axis. The surface of a mask is its foreground pixels with a background
    neighbour; each surface pixel's distance to the other surface comes from a Euclidean distance transform
    (``scipy.ndimage.distance_transform_edt``), and the result is the 95th percentile (linear interpolation) of
    both directions' distances pooled (MedPy's ``hd95``). NaN for an image where either mask is empty.
    """
    pred, target_mask = _masks(mask, target, "mask")
    pred_mask = binary_labels(pred, "mask").astype(bool)
    sampling = _spacing(spacing, pred_mask.ndim - 2)
    out = np.full(pred_mask.shape[0], np.nan)
    for b in range(pred_mask.shape[0]):
        p, t = pred_mask[b, 0], target_mask[b, 0]
        if not p.any() or not t.any():
            continue
        surface_p, surface_t = _boundary(p), _boundary(t)
        to_t = ndimage.distance_transform_edt(~surface_t, sampling=sampling)[surface_p]
        to_p = ndimage.distance_transform_edt(~surface_p, sampling=sampling)[surface_t]
        out[b] = np.percentile(np.concatenate([to_t, to_p]), 95)
    return torch.from_numpy(out)


# ---- detection -------------------------------------------------------------------------------------------

def _scores_labels(scores, labels) -> tuple[np.ndarray, np.ndarray]:
    s = scores_1d(scores, "scores")
    return s, binary_labels(labels, "labels", s.shape, "scores")


def roc_auc(scores, labels) -> float:
    """Area under the ROC curve of scores ``(N,)`` against 0/1 labels ``(N,)``: the Mann-Whitney statistic
    ``(R_+ - n_+ (n_+ + 1) / 2) / (n_+ n_-)``, ``R_+`` the sum of the positives' ranks (ties get their mean
    rank, i.e. count one half). Needs both classes."""
    s, y = _scores_labels(scores, labels)
    both_classes(y, "the ROC AUC")
    positives = int(y.sum())
    negatives = y.size - positives
    ranks = stats.rankdata(s)
    return float((ranks[y == 1].sum() - positives * (positives + 1) / 2.0) / (positives * negatives))


def _rates(s: np.ndarray, y: np.ndarray, thresholds: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sensitivity and specificity at each threshold (positive when ``score >= threshold``)."""
    positives, negatives = np.sort(s[y == 1]), np.sort(s[y == 0])
    below_pos = np.searchsorted(positives, thresholds, side="left")  # positives called negative
    below_neg = np.searchsorted(negatives, thresholds, side="left")  # negatives called negative
    return 1.0 - below_pos / positives.size, below_neg / negatives.size


def operating_point(scores, labels, rule: str = "youden") -> float:
    """The threshold, one of the observed scores, that ``rule`` picks on validation data ``(N,)`` (see
    :data:`RULES`): ``"youden"`` maximises ``sensitivity + specificity - 1``, ``"closest"`` minimises
    ``(1 - sensitivity)^2 + (1 - specificity)^2``. Ties go to the lowest threshold (the most sensitive).
    Apply it to test data with :func:`sensitivity_specificity`; choosing it on the test data biases both."""
    s, y = _scores_labels(scores, labels)
    rule = choice(rule, "rule", RULES)
    both_classes(y, "an operating point")
    thresholds = np.unique(s)
    sensitivity, specificity = _rates(s, y, thresholds)
    if rule == "youden":
        k = int(np.argmax(sensitivity + specificity - 1.0))
    else:
        k = int(np.argmin((1.0 - sensitivity) ** 2 + (1.0 - specificity) ** 2))
    return float(thresholds[k])


def sensitivity_specificity(scores, labels, threshold: float) -> tuple[float, float]:
    """``(sensitivity, specificity)`` of scores ``(N,)`` against 0/1 labels ``(N,)`` when cases with
    ``score >= threshold`` are called positive: ``TP / (TP + FN)`` and ``TN / (TN + FP)``. Needs both classes."""
    s, y = _scores_labels(scores, labels)
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float, np.integer, np.floating)) \
            or not np.isfinite(threshold):
        raise ArgumentError(f"threshold: expected a finite number, found {threshold!r}")
    both_classes(y, "sensitivity and specificity")
    sensitivity, specificity = _rates(s, y, np.array([float(threshold)]))
    return float(sensitivity[0]), float(specificity[0])


# ---- bootstrap over cases --------------------------------------------------------------------------------

def _cases(arrays: Sequence, name: str) -> int:
    """The common number of rows (cases) of ``arrays``."""
    if len(arrays) == 0:
        raise ArgumentError(f"{name}: expected at least one array of cases, found none")
    counts = []
    for i, a in enumerate(arrays):
        shape = tuple(a.shape) if hasattr(a, "shape") else np.shape(a)
        if len(shape) == 0:
            raise ArgumentError(f"{name}[{i}]: expected an array with one row per case, found a scalar")
        counts.append(shape[0])
    if any(c != counts[0] for c in counts):
        raise ArgumentError(f"{name}: expected the same number of cases (rows) in every array, found "
                            f"{', '.join(map(str, counts))}")
    if counts[0] < 2:
        raise ArgumentError(f"{name}: expected at least 2 cases to resample, found {counts[0]}")
    return counts[0]


def _take(a, rows: np.ndarray):
    if isinstance(a, torch.Tensor):
        return a[torch.from_numpy(rows).to(a.device)]
    return np.asarray(a)[rows]


def _resamples(n: int, n_resamples: int, seed: int, strata) -> np.ndarray:
    """``(n_resamples, n)`` row indices drawn with replacement, within each stratum when ``strata`` is given."""
    rng = np.random.default_rng(seed)
    if strata is None:
        return rng.integers(0, n, size=(n_resamples, n))
    groups = as_array(strata, "strata")
    if groups.shape != (n,):
        raise ArgumentError(f"strata: expected one value per case, shape ({n},), found {groups.shape}")
    rows = np.empty((n_resamples, n), dtype=np.int64)
    start = 0
    for value in np.unique(groups):
        members = np.flatnonzero(groups == value)
        rows[:, start:start + members.size] = members[rng.integers(0, members.size, (n_resamples, members.size))]
        start += members.size
    return rows


def _value(statistic: Callable, arrays: Sequence, where: str) -> float:
    try:
        value = float(statistic(*arrays))
    except PireconUserError as err:
        raise ArgumentError(f"statistic: expected a value on {where}, found an error: {err} (with few cases of a "
                            "class, pass strata=labels to keep the class counts in every resample)") from None
    if not np.isfinite(value):
        raise ArgumentError(f"statistic: expected a finite number on {where}, found {value!r}")
    return value


def _bounds(values: np.ndarray, confidence: float) -> tuple[float, float]:
    tail = (1.0 - confidence) / 2.0
    low, high = np.quantile(values, [tail, 1.0 - tail])
    return float(low), float(high)


def bootstrap_ci(statistic: Callable, *arrays, n_resamples: int = 2000, level: float = 0.95, seed: int = 0,
                 strata=None) -> tuple[float, float, float]:
    """``(estimate, low, high)``: ``statistic(*arrays)`` and its percentile bootstrap interval at ``level``.

    Each array has one row per case (``N`` rows, any trailing shape; NumPy arrays, tensors or sequences); a
    resample draws ``N`` cases with replacement and takes the same rows of every array. ``low`` and ``high`` are
    the ``(1 - level) / 2`` and ``(1 + level) / 2`` quantiles of the statistic over ``n_resamples`` resamples.
    ``strata`` (one value per case, e.g. the labels) resamples within each stratum, keeping its count: needed
    when a statistic such as :func:`roc_auc` must see every class.
    """
    confidence = check_level(level, "level")
    n_resamples = positive_int(n_resamples, "n_resamples")
    n = _cases(arrays, "arrays")
    estimate = _value(statistic, arrays, "the cases")
    rows = _resamples(n, n_resamples, seed, strata)
    values = np.array([_value(statistic, [_take(a, r) for a in arrays], f"bootstrap resample {i}")
                       for i, r in enumerate(rows)])
    return (estimate, *_bounds(values, confidence))


def paired_bootstrap(statistic: Callable, a_arrays: Sequence, b_arrays: Sequence, n_resamples: int = 2000,
                     level: float = 0.95, seed: int = 0, strata=None) -> tuple[float, float, float]:
    """``(difference, low, high)``: ``statistic(*a_arrays) - statistic(*b_arrays)`` for two modes (models,
    reconstructions) evaluated on the same ``N`` cases, and its percentile bootstrap interval at ``level``.

    Every resample draws one set of case indices and applies it to both modes, so the interval reflects the
    paired design (identical modes give ``(0, 0, 0)``). An interval excluding 0 says mode A differs from B at
    level ``level``. ``a_arrays`` and ``b_arrays`` are sequences of arrays (a single array or tensor is taken
    as one); ``strata`` as in :func:`bootstrap_ci`.
    """
    confidence = check_level(level, "level")
    n_resamples = positive_int(n_resamples, "n_resamples")
    a_arrays, b_arrays = _sequence(a_arrays), _sequence(b_arrays)
    n_a, n_b = _cases(a_arrays, "a_arrays"), _cases(b_arrays, "b_arrays")
    if n_a != n_b:
        raise ArgumentError(f"b_arrays: expected the {n_a} cases of a_arrays (the same cases in both modes), "
                            f"found {n_b}")
    difference = _value(statistic, a_arrays, "the cases of a_arrays") - _value(statistic, b_arrays,
                                                                                "the cases of b_arrays")
    rows = _resamples(n_a, n_resamples, seed, strata)
    values = np.array([_value(statistic, [_take(a, r) for a in a_arrays], f"bootstrap resample {i} of a_arrays")
                       - _value(statistic, [_take(b, r) for b in b_arrays], f"bootstrap resample {i} of b_arrays")
                       for i, r in enumerate(rows)])
    return (difference, *_bounds(values, confidence))


def _sequence(arrays) -> list:
    return [arrays] if isinstance(arrays, (np.ndarray, torch.Tensor)) else list(arrays)
