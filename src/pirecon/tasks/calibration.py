"""Calibrating a binary diagnostic task: temperature scaling, calibration error, conformal prediction sets.

Probabilities are those of the positive class, ``p = P(y = 1)``, one per case ``(N,)``; labels are 0/1.

* **Temperature scaling** (Guo et al. 2017): the probability of logit ``z`` becomes ``sigmoid(z / T)``, with
  ``T > 0`` minimising the negative log-likelihood on calibration cases (:func:`fit_temperature`). It changes
  the confidence, never the ranking, so AUC and the ROC curve are unchanged.
* **Platt scaling** (Platt 1999): ``sigmoid(z / T + b)``, a temperature and a bias fitted together by the
  likelihood of smoothed targets (:func:`fit_platt`): it also removes a shift of the logits (a model that says "lesion" too often
  on every case), which a temperature alone cannot. It keeps the ranking too (``T > 0``).
* **Calibration error**: :func:`reliability_curve` bins the confidence into equal-width bins of ``[0, 1]``
  and gives each bin's mean confidence and accuracy; :func:`expected_calibration_error` is
  ``sum_b (n_b / N) |accuracy_b - confidence_b|``. The confidence is that of the predicted class,
  ``max(p, 1 - p)``, and the accuracy whether the predicted class (1 when ``p > 0.5``) is the label
  (``confidence="positive"``: ``p`` itself against the label, as torchmetrics' ``BinaryCalibrationError``).
  On few cases even a calibrated model has a positive ECE; :func:`ece_sampling_floor` measures it by
  consistency resampling (Bröcker & Smith 2007): labels drawn from the probabilities themselves.
* **Split-conformal prediction sets** (Angelopoulos & Bates, "A gentle introduction to conformal prediction",
  2021): with the score ``s = 1 - p(true class)`` on ``n`` calibration cases, ``qhat`` is the
  ``ceil((n + 1)(1 - alpha))``-th smallest score (:func:`conformal_threshold`), and the set of a test case
  holds every class ``k`` with ``1 - p(k) <= qhat`` (:func:`prediction_sets`). Guarantee: if calibration and
  test cases are exchangeable, ``P(true label in set) >= 1 - alpha``, marginally over the calibration and test
  draws (not conditionally on a case, a class or one calibration set).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from scipy import optimize
from scipy.special import expit

from ..errors import ArgumentError, PireconUserError
from ._checks import binary_labels, choice, positive_int, probabilities_1d, scores_1d
from ._checks import level as check_level

__all__ = ["fit_temperature", "fit_platt", "expected_calibration_error", "ece_sampling_floor", "reliability_curve",
           "conformal_threshold",
           "prediction_sets", "conformal_coverage_over_splits", "CONFIDENCES"]

CONFIDENCES = ("predicted", "positive")
"""What :func:`reliability_curve` bins: the predicted class's confidence ``max(p, 1 - p)`` against whether
the prediction is right, or the positive class's probability ``p`` against the label."""

_LOG_T = (-10.0, 10.0)  # temperature scaling searches T in [e^-10, e^10]


# ---- temperature scaling ---------------------------------------------------------------------------------

def _nll(log_t: float, z: np.ndarray, y: np.ndarray) -> float:
    """Mean negative log-likelihood of ``sigmoid(z / T)``: ``mean(log(1 + exp(x)) - y x)``, ``x = z / T``."""
    x = z * math.exp(-log_t)
    return float(np.mean(np.logaddexp(0.0, x) - y * x))


def fit_temperature(logits, labels) -> float:
    """The temperature ``T > 0`` minimising the mean NLL of ``sigmoid(logits / T)`` against 0/1 ``labels``
    (both ``(N,)``): a bounded scalar search on ``log T`` in ``[e^-10, e^10]``.

    The NLL is convex in ``1 / T``, with a finite minimum unless the logits' signs already get every label right
    (the NLL falls as ``T -> 0``) or the logits rank the labels no better than chance (``T -> inf``, every
    probability 1/2): both are refused.
    """
    z = scores_1d(logits, "logits")
    y = binary_labels(labels, "labels", z.shape, "logits").astype(np.float64)
    wrong = int(np.sum(((z > 0) & (y == 0)) | ((z < 0) & (y == 1))))
    if wrong == 0:
        raise PireconUserError(f"logits: expected logits for which temperature scaling has a finite optimum, found "
                               f"the sign of every logit matching its label ({z.size} cases), so that the NLL "
                               "decreases as T goes to 0")
    if np.mean(z * (0.5 - y)) >= 0:  # the NLL's slope in 1 / T at 1 / T = 0
        raise PireconUserError("logits: expected logits for which temperature scaling has a finite optimum, found "
                               "logits that rank the labels no better than chance, so that the NLL decreases as T "
                               "goes to infinity")
    result = optimize.minimize_scalar(_nll, bounds=_LOG_T, args=(z, y), method="bounded",
                                      options={"xatol": 1e-6})
    log_t = float(result.x)
    if min(log_t - _LOG_T[0], _LOG_T[1] - log_t) < 1e-3:
        raise PireconUserError(f"logits: expected a temperature in [{math.exp(_LOG_T[0]):.3g}, "
                               f"{math.exp(_LOG_T[1]):.3g}], found the NLL smallest at its end {math.exp(log_t):.3g}")
    return math.exp(log_t)


def _platt_nll(params: np.ndarray, z: np.ndarray, y: np.ndarray) -> tuple[float, np.ndarray]:
    """Mean cross-entropy of ``sigmoid(a z + b)`` against targets ``y`` in ``[0, 1]`` and its gradient in
    ``(a, b)``; ``params = (a, b)``."""
    x = params[0] * z + params[1]
    residual = expit(x) - y
    return float(np.mean(np.logaddexp(0.0, x) - y * x)), np.array([np.mean(residual * z), np.mean(residual)])


def fit_platt(logits, labels) -> tuple[float, float]:
    """``(T, b)`` minimising the mean cross-entropy of ``sigmoid(logits / T + b)`` against Platt's smoothed
    targets (both ``(N,)``): ``(N+ + 1) / (N+ + 2)`` for the ``N+`` positive labels and ``1 / (N- + 2)`` for the
    ``N-`` negative ones, a logistic regression on the logit, convex in ``(1 / T, b)`` (L-BFGS from ``T = 1``,
    ``b = 0``).

    The smoothed targets keep the optimum finite when one threshold separates the labels (common on a few
    dozen cases), where the plain likelihood would send ``T`` to 0. Refused: labels of one class, and an optimum
    with ``1 / T <= 0`` (logits that rank the labels no better than chance).
    """
    z = scores_1d(logits, "logits")
    y = binary_labels(labels, "labels", z.shape, "logits")
    positives = int(y.sum())
    if positives in (0, y.size):
        raise PireconUserError(f"labels: expected both classes for Platt scaling, found only {int(y[0])} "
                               f"({y.size} cases), so that the NLL decreases as the bias goes to infinity")
    targets = np.where(y == 1, (positives + 1) / (positives + 2), 1 / (y.size - positives + 2))
    result = optimize.minimize(_platt_nll, np.array([1.0, 0.0]), args=(z, targets), jac=True, method="L-BFGS-B",
                               options={"gtol": 1e-10, "maxiter": 1000})
    slope, bias = (float(v) for v in result.x)
    if not slope > math.exp(-_LOG_T[1]):
        raise PireconUserError(f"logits: expected logits that rank the labels better than chance, found the Platt "
                               f"fit's slope 1/T = {slope:.3g} (T must be positive and at most "
                               f"{math.exp(_LOG_T[1]):.3g})")
    return 1.0 / slope, bias


# ---- calibration error -----------------------------------------------------------------------------------

def _confidence_accuracy(probabilities, labels, confidence: str) -> tuple[np.ndarray, np.ndarray]:
    p = probabilities_1d(probabilities, "probabilities")
    y = binary_labels(labels, "labels", p.shape, "probabilities")
    if choice(confidence, "confidence", CONFIDENCES) == "positive":
        return p, y.astype(np.float64)
    predicted = (p > 0.5).astype(np.int64)
    return np.where(predicted == 1, p, 1.0 - p), (predicted == y).astype(np.float64)


def reliability_curve(probabilities, labels, bins: int = 10,
                      confidence: str = "predicted") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(confidence, accuracy, counts)``, each ``(bins,)``: the mean confidence, the accuracy (fraction right)
    and the number of cases in each equal-width bin ``[k / bins, (k + 1) / bins)`` of ``[0, 1]`` (the last bin
    includes 1). Empty bins have NaN confidence and accuracy. ``probabilities`` ``(N,)`` are ``P(y = 1)``;
    ``confidence`` is one of :data:`CONFIDENCES`."""
    conf, correct = _confidence_accuracy(probabilities, labels, confidence)
    bins = positive_int(bins, "bins")
    edges = np.linspace(0.0, 1.0, bins + 1)
    index = np.minimum(np.searchsorted(edges, conf, side="right") - 1, bins - 1)
    counts = np.bincount(index, minlength=bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_confidence = np.bincount(index, weights=conf, minlength=bins) / counts
        accuracy = np.bincount(index, weights=correct, minlength=bins) / counts
    return mean_confidence, accuracy, counts


def expected_calibration_error(probabilities, labels, bins: int = 15, confidence: str = "predicted") -> float:
    """Expected calibration error of probabilities ``(N,)`` of the positive class against 0/1 labels:
    ``sum_b (n_b / N) |accuracy_b - confidence_b|`` over the equal-width bins of :func:`reliability_curve`
    (by default the confidence of the predicted class); 0 for perfect calibration."""
    conf, accuracy, counts = reliability_curve(probabilities, labels, bins, confidence)
    used = counts > 0
    return float(np.sum(counts[used] / counts.sum() * np.abs(accuracy[used] - conf[used])))


def ece_sampling_floor(probabilities, bins: int = 15, draws: int = 1000, seed: int = 0) -> dict:
    """The ECE a perfectly calibrated model with these probabilities ``(N,)`` shows on ``N`` cases: labels
    drawn ``y ~ Bernoulli(p)`` ``draws`` times (consistency resampling, Bröcker & Smith 2007), ECE as
    :func:`expected_calibration_error` with ``bins``. Returns ``{"mean", "p95"}``: a measured ECE below
    ``p95`` is within what sampling alone gives on this many cases."""
    p = probabilities_1d(probabilities, "probabilities")
    rng = np.random.default_rng(seed)
    values = [expected_calibration_error(p, (rng.random(p.shape) < p).astype(np.int64), bins)
              for _ in range(positive_int(draws, "draws"))]
    return {"mean": float(np.mean(values)), "p95": float(np.quantile(values, 0.95))}


# ---- split-conformal prediction sets -----------------------------------------------------------------------

def _class_scores(p: np.ndarray) -> np.ndarray:
    """``(N, 2)`` conformal scores ``1 - p(k)`` of classes 0 and 1 (one formula for calibration and test)."""
    return np.stack([1.0 - (1.0 - p), 1.0 - p], axis=1)


def _rank(n: int, alpha: float) -> int:
    """``ceil((n + 1)(1 - alpha))``, robust to the rounding of an exact integer product."""
    return math.ceil((n + 1) * (1.0 - alpha) - 1e-9)


def conformal_threshold(probabilities, labels, alpha: float) -> float:
    """``qhat``: the ``ceil((n + 1)(1 - alpha))``-th smallest score ``1 - p(true class)`` of ``n`` calibration
    cases (probabilities ``(n,)`` of the positive class, 0/1 labels), i.e. their empirical quantile at level
    ``ceil((n + 1)(1 - alpha)) / n``. Refuses ``n`` too small for ``alpha`` (``ceil((n + 1)(1 - alpha)) > n``,
    i.e. ``n < 1 / alpha - 1``), where only the set of both classes would keep the guarantee."""
    p = probabilities_1d(probabilities, "probabilities")
    y = binary_labels(labels, "labels", p.shape, "probabilities")
    alpha = check_level(alpha, "alpha")
    n = p.size
    k = _rank(n, alpha)
    if k > n:
        needed = n + 1
        while _rank(needed, alpha) > needed:
            needed += 1
        raise ArgumentError(f"probabilities: expected at least {needed} calibration cases for alpha={alpha:g} "
                            f"(so that ceil((n + 1)(1 - alpha)) <= n), found {n}")
    scores = _class_scores(p)[np.arange(n), y]
    return float(np.sort(scores)[k - 1])


def prediction_sets(probabilities, qhat: float) -> torch.Tensor:
    """``(N, 2)`` bool: column ``k`` is True where class ``k`` is in the case's set, ``1 - p(k) <= qhat``
    (probabilities ``(N,)`` of the positive class; ``qhat`` from :func:`conformal_threshold`). A set may hold
    both classes (an uncertain case) or none (a case unlike the calibration cases)."""
    p = probabilities_1d(probabilities, "probabilities")
    if isinstance(qhat, bool) or not isinstance(qhat, (int, float, np.integer, np.floating)) or not 0 <= qhat <= 1:
        raise ArgumentError(f"qhat: expected a number in [0, 1], found {qhat!r}")
    return torch.from_numpy(_class_scores(p) <= float(qhat))


def conformal_coverage_over_splits(probabilities, labels, alpha: float, splits: int = 100,
                                   calibration_fraction: float = 0.5, seed: int = 0) -> dict:
    """The coverage of split-conformal sets over ``splits`` random calibration/test splits of ``N`` cases.

    Each split calibrates :func:`conformal_threshold` on ``round(calibration_fraction * N)`` random cases and
    measures, on the others, the fraction whose label is in its set and the mean set size. Returns a dict:
    ``coverage`` and ``set_size`` (per split, ``(splits,)``), ``mean_coverage``, ``mean_set_size``, ``alpha``,
    ``n_calibration`` and ``n_test``. By the guarantee, ``mean_coverage`` is at least about ``1 - alpha``.
    """
    p = probabilities_1d(probabilities, "probabilities")
    y = binary_labels(labels, "labels", p.shape, "probabilities")
    alpha = check_level(alpha, "alpha")
    splits = positive_int(splits, "splits")
    fraction = check_level(calibration_fraction, "calibration_fraction")
    n = p.size
    if n < 2:
        raise ArgumentError(f"probabilities: expected at least 2 cases to split, found {n}")
    n_calibration = min(max(1, round(fraction * n)), n - 1)
    rng = np.random.default_rng(seed)
    coverage, set_size = np.empty(splits), np.empty(splits)
    for i in range(splits):
        order = rng.permutation(n)
        calibration, test = order[:n_calibration], order[n_calibration:]
        qhat = conformal_threshold(p[calibration], y[calibration], alpha)
        sets = prediction_sets(p[test], qhat).numpy()
        coverage[i] = sets[np.arange(test.size), y[test]].mean()
        set_size[i] = sets.sum(axis=1).mean()
    return {"coverage": coverage, "set_size": set_size, "mean_coverage": float(coverage.mean()),
            "mean_set_size": float(set_size.mean()), "alpha": alpha, "n_calibration": int(n_calibration),
            "n_test": int(n - n_calibration)}
