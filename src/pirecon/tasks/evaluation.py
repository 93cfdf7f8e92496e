"""A binary lesion task measured on held-out cases, and its label calibrated: one definition for every report.

Outputs of a task model on ``N`` cases are a dict of arrays:

* ``segmentation`` ``(N, 1, H, W)`` lesion probabilities, ``true_segmentation`` ``(N, 1, H, W)`` 0/1;
* ``label_logit`` ``(N,)`` lesion-present logits, ``true_label`` ``(N,)`` 0/1.

Dice and HD95 are measured on the cases whose true segmentation is not empty (:func:`lesion_cases`): on a
case without lesions an empty prediction would score Dice 1, and a head that finds nothing would look half
right. The label's probability is ``sigmoid(logit / T + b)``: temperature ``T`` and bias ``b`` (0 for
temperature scaling, fitted with ``T`` by Platt scaling).
"""

from __future__ import annotations

import numpy as np
from scipy.special import expit

from ..errors import ArgumentError, PireconUserError
from ._checks import binary_labels, choice, scores_1d
from ._checks import level as check_level
from .calibration import (conformal_threshold, ece_sampling_floor, expected_calibration_error, fit_platt,
                          fit_temperature, prediction_sets)
from .metrics import bootstrap_ci, dice, hausdorff95, operating_point, roc_auc, sensitivity_specificity

__all__ = ["lesion_cases", "label_probability", "fit_label_calibration", "calibrate_label", "task_metrics",
           "spread_and_errors", "LABEL_CALIBRATIONS"]

LABEL_CALIBRATIONS = ("temperature", "platt")
"""How the label's logit is calibrated: temperature scaling ``sigmoid(z / T)`` or Platt scaling
``sigmoid(z / T + b)`` (see :mod:`pirecon.tasks.calibration`)."""


def lesion_cases(true_segmentation) -> np.ndarray:
    """``(N,)`` bool: the cases whose true segmentation ``(N, 1, ...)`` holds at least one lesion pixel."""
    mask = np.asarray(true_segmentation)
    return mask.reshape(mask.shape[0], -1).astype(bool).any(axis=1)


def label_probability(logits, temperature: float = 1.0, bias: float = 0.0) -> np.ndarray:
    """``sigmoid(logit / T + b)`` of logits ``(N,)``: the calibrated probability that a lesion is present
    (temperature scaling: ``b = 0``)."""
    z = scores_1d(logits, "logits")
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float, np.floating)) or \
            not np.isfinite(temperature) or temperature <= 0:
        raise ArgumentError(f"temperature: expected a positive number, found {temperature!r}")
    if isinstance(bias, bool) or not isinstance(bias, (int, float, np.floating)) or not np.isfinite(bias):
        raise ArgumentError(f"bias: expected a finite number, found {bias!r}")
    return expit(z / float(temperature) + float(bias))


def fit_label_calibration(logits, labels, method: str = "temperature") -> tuple[float, float, str | None]:
    """``(T, b, note)`` of the label's calibration ``sigmoid(logit / T + b)`` on logits and 0/1 labels
    ``(N,)``: ``method`` "temperature" fits ``T`` with ``b = 0`` (:func:`~pirecon.tasks.fit_temperature`),
    "platt" both (:func:`~pirecon.tasks.fit_platt`). When the likelihood has no finite optimum (perfectly
    separated, no better than chance), ``T = 1``, ``b = 0`` and ``note`` says why (None otherwise)."""
    method = choice(method, "label calibration", LABEL_CALIBRATIONS)  # a wrong name is an error, not a note
    try:
        if method == "platt":
            return (*fit_platt(logits, labels), None)
        return fit_temperature(logits, labels), 0.0, None
    except PireconUserError as err:
        return 1.0, 0.0, f"{method} scaling not applied (T = 1, b = 0): {err}"


def calibrate_label(logits, labels, alpha: float = 0.1, temperature_fraction: float = 0.5, seed: int = 0,
                    method: str = "temperature") -> dict:
    """Calibration map, operating point and conformal threshold of a lesion label from held-out cases.

    The ``N`` cases are split at random (``seed``): ``round(temperature_fraction N)`` fit the calibration
    ``sigmoid(logit / T + b)`` (``method`` one of :data:`LABEL_CALIBRATIONS`: temperature, ``b = 0``, or Platt)
    and the operating point (Youden, on the calibrated probabilities); the others, untouched by that fit,
    give ``qhat`` (:func:`~pirecon.tasks.conformal_threshold`), so the sets ``{k : 1 - p(k) <= qhat}`` cover
    the true label of an exchangeable new case with probability at least ``1 - alpha``. Returns
    ``{"temperature", "bias", "label_calibration", "threshold", "qhat", "alpha", "n_temperature",
    "n_conformal", "ece_before", "ece", "temperature_note"}`` (the ECEs on the conformal part, before and
    after calibration).

    Logits whose likelihood has no finite optimum on the fitting part (perfectly separated, or no better than
    chance) keep ``T = 1``, ``b = 0`` and ``temperature_note`` says why (None otherwise); the conformal
    guarantee holds for any fixed map.
    """
    z = scores_1d(logits, "logits")
    y = binary_labels(labels, "labels", z.shape, "logits")
    alpha = check_level(alpha, "alpha")
    fraction = check_level(temperature_fraction, "temperature_fraction")
    method = choice(method, "label calibration", LABEL_CALIBRATIONS)
    n = z.size
    n_temperature = round(fraction * n)
    if not 2 <= n_temperature <= n - 2:
        raise ArgumentError(f"logits: expected at least 2 cases for the temperature and 2 for the conformal "
                            f"threshold (temperature_fraction {fraction:g}), found {n} cases")
    order = np.random.default_rng(seed).permutation(n)
    fit, held = order[:n_temperature], order[n_temperature:]
    temperature, bias, note = fit_label_calibration(z[fit], y[fit], method)
    threshold = operating_point(label_probability(z[fit], temperature, bias), y[fit])
    probabilities = label_probability(z[held], temperature, bias)
    return {"temperature": temperature, "bias": bias, "label_calibration": method, "threshold": threshold,
            "qhat": conformal_threshold(probabilities, y[held], alpha), "alpha": alpha,
            "n_temperature": int(n_temperature), "n_conformal": int(n - n_temperature),
            "ece_before": expected_calibration_error(expit(z[held]), y[held]),
            "ece": expected_calibration_error(probabilities, y[held]), "temperature_note": note}


def task_metrics(outputs: dict, *, threshold: float, temperature: float = 1.0, bias: float = 0.0,
                 qhat: float | None = None, n_resamples: int = 2000) -> dict:
    """Segmentation and label metrics of ``outputs`` (see the module) with 95% bootstrap intervals over cases.

    Returns a dict: ``dice`` and ``hd95`` (pixels) as ``(estimate, low, high)`` over the lesion cases (NaN
    where no case qualifies; HD95 leaves out cases with an empty prediction), ``auc`` (resampled within each
    class), ``sensitivity`` and ``specificity`` at ``threshold`` (on the probability at ``temperature`` and ``bias``, a
    threshold chosen on other data), ``ece_before`` (``T = 1``, ``b = 0``) and ``ece``, ``ece_floor`` (what a calibrated
    model with these probabilities shows on this many cases, :func:`ece_sampling_floor`), with ``qhat`` the conformal
    sets' ``set_coverage`` and ``set_size`` on these cases, the counts ``cases`` and ``lesion_cases``, and
    ``per_case`` (``dice``, ``hd95`` of the lesion cases) for paired comparisons.
    """
    y = binary_labels(outputs["true_label"], "true_label")
    lesion = lesion_cases(outputs["true_segmentation"])
    segmentation = np.asarray(outputs["segmentation"])[lesion]
    truth = np.asarray(outputs["true_segmentation"])[lesion]
    per_case = {"dice": dice(segmentation, truth).numpy() if lesion.any() else np.zeros(0),
                "hd95": hausdorff95(segmentation > 0.5, truth).numpy() if lesion.any() else np.zeros(0)}
    result: dict = {}
    for name, values in per_case.items():
        finite = values[np.isfinite(values)]
        result[name] = bootstrap_ci(np.mean, finite, n_resamples=n_resamples) if finite.size else (float("nan"),) * 3
    probability = label_probability(outputs["label_logit"], temperature, bias)
    result["auc"] = bootstrap_ci(roc_auc, probability, y, strata=y, n_resamples=n_resamples)
    result["threshold"], result["temperature"], result["bias"] = float(threshold), float(temperature), float(bias)
    result["sensitivity"], result["specificity"] = sensitivity_specificity(probability, y, threshold)
    result["ece_before"] = expected_calibration_error(label_probability(outputs["label_logit"]), y)
    result["ece"] = expected_calibration_error(probability, y)
    result["ece_floor"] = ece_sampling_floor(probability)
    if qhat is not None:
        sets = prediction_sets(probability, qhat).numpy()
        result["set_coverage"] = float(sets[np.arange(y.size), y].mean())
        result["set_size"] = float(sets.sum(axis=1).mean())
    if "label_spread" in outputs:
        result.update(spread_and_errors(outputs["label_spread"], probability, y, threshold))
    result["cases"], result["lesion_cases"] = int(y.size), int(lesion.sum())
    result["per_case"] = {name: values.tolist() for name, values in per_case.items()}
    return result


def spread_and_errors(spread, probability, labels, threshold: float) -> dict:
    """How well the spread of the label over a backbone's samples ``(N,)`` points at the label's errors.

    Returns ``spread_spearman``, Spearman's rank correlation of the spread with the absolute error
    ``|p - y|``, and ``spread_error_auc``, the ROC AUC of the spread for telling the misclassified cases
    (``p >= threshold`` differs from ``y``) from the others (NaN when every case or none is misclassified);
    0.5 is no better than chance.
    """
    from scipy import stats

    s = scores_1d(spread, "spread")
    p = scores_1d(probability, "probability")
    y = binary_labels(labels, "labels", s.shape, "spread")
    wrong = ((p >= threshold).astype(int) != y).astype(int)
    rho = stats.spearmanr(s, np.abs(p - y)).statistic if np.ptp(s) > 0 else float("nan")
    return {"spread_spearman": float(rho),
            "spread_error_auc": roc_auc(s, wrong) if 0 < wrong.sum() < wrong.size else float("nan"),
            "misclassified": int(wrong.sum())}
