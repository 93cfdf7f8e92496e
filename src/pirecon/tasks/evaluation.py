"""A binary lesion task measured on held-out cases, and its label calibrated: one definition for every report.

Outputs of a task model on ``N`` cases are a dict of arrays:

* ``segmentation`` ``(N, 1, H, W)`` lesion probabilities, ``true_segmentation`` ``(N, 1, H, W)`` 0/1;
* ``label_logit`` ``(N,)`` lesion-present logits, ``true_label`` ``(N,)`` 0/1.

Dice and HD95 are measured on the cases whose true segmentation is not empty (:func:`lesion_cases`): on a
case without lesions an empty prediction would score Dice 1, and a head that finds nothing would look half
right. The label's probability is ``sigmoid(logit / T)`` at temperature ``T``.
"""

from __future__ import annotations

import numpy as np
from scipy.special import expit

from ..errors import ArgumentError, PireconUserError
from ._checks import binary_labels, scores_1d
from ._checks import level as check_level
from .calibration import (conformal_threshold, ece_sampling_floor, expected_calibration_error, fit_temperature,
                          prediction_sets)
from .metrics import bootstrap_ci, dice, hausdorff95, operating_point, roc_auc, sensitivity_specificity

__all__ = ["lesion_cases", "label_probability", "temperature_or_one", "calibrate_label", "task_metrics",
           "spread_and_errors"]


def lesion_cases(true_segmentation) -> np.ndarray:
    """``(N,)`` bool: the cases whose true segmentation ``(N, 1, ...)`` holds at least one lesion pixel."""
    mask = np.asarray(true_segmentation)
    return mask.reshape(mask.shape[0], -1).astype(bool).any(axis=1)


def label_probability(logits, temperature: float = 1.0) -> np.ndarray:
    """``sigmoid(logit / T)`` of logits ``(N,)``: the temperature-scaled probability that a lesion is present."""
    z = scores_1d(logits, "logits")
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float, np.floating)) or \
            not np.isfinite(temperature) or temperature <= 0:
        raise ArgumentError(f"temperature: expected a positive number, found {temperature!r}")
    return expit(z / float(temperature))


def temperature_or_one(logits, labels) -> tuple[float, str | None]:
    """``(T, note)``: :func:`~pirecon.tasks.fit_temperature` of the logits, or ``T = 1`` with the reason when
    their NLL has no finite optimum (perfectly separated, or no better than chance)."""
    try:
        return fit_temperature(logits, labels), None
    except PireconUserError as err:
        return 1.0, f"temperature kept at 1: {err}"


def calibrate_label(logits, labels, alpha: float = 0.1, temperature_fraction: float = 0.5, seed: int = 0) -> dict:
    """Temperature, operating point and conformal threshold of a lesion label from held-out calibration cases.

    The ``N`` cases are split at random (``seed``): ``round(temperature_fraction N)`` fit the temperature
    (:func:`~pirecon.tasks.fit_temperature`) and the operating point (Youden, on the scaled probabilities); the
    others, untouched by that fit, give ``qhat`` (:func:`~pirecon.tasks.conformal_threshold`), so the sets
    ``{k : 1 - p_T(k) <= qhat}`` cover the true label of an exchangeable new case with probability at least
    ``1 - alpha``. Returns ``{"temperature", "threshold", "qhat", "alpha", "n_temperature", "n_conformal",
    "ece_before", "ece", "temperature_note"}`` (the ECEs on the conformal part, before and after scaling).

    Logits whose NLL has no finite optimum on the temperature part (perfectly separated, or no better than
    chance) keep ``T = 1`` and ``temperature_note`` says why (None otherwise); the conformal guarantee holds
    for any fixed ``T``.
    """
    z = scores_1d(logits, "logits")
    y = binary_labels(labels, "labels", z.shape, "logits")
    alpha = check_level(alpha, "alpha")
    fraction = check_level(temperature_fraction, "temperature_fraction")
    n = z.size
    n_temperature = round(fraction * n)
    if not 2 <= n_temperature <= n - 2:
        raise ArgumentError(f"logits: expected at least 2 cases for the temperature and 2 for the conformal "
                            f"threshold (temperature_fraction {fraction:g}), found {n} cases")
    order = np.random.default_rng(seed).permutation(n)
    fit, held = order[:n_temperature], order[n_temperature:]
    temperature, note = temperature_or_one(z[fit], y[fit])
    threshold = operating_point(label_probability(z[fit], temperature), y[fit])
    probabilities = label_probability(z[held], temperature)
    return {"temperature": temperature, "threshold": threshold,
            "qhat": conformal_threshold(probabilities, y[held], alpha), "alpha": alpha,
            "n_temperature": int(n_temperature), "n_conformal": int(n - n_temperature),
            "ece_before": expected_calibration_error(expit(z[held]), y[held]),
            "ece": expected_calibration_error(probabilities, y[held]), "temperature_note": note}


def task_metrics(outputs: dict, *, threshold: float, temperature: float = 1.0, qhat: float | None = None,
                 n_resamples: int = 2000) -> dict:
    """Segmentation and label metrics of ``outputs`` (see the module) with 95% bootstrap intervals over cases.

    Returns a dict: ``dice`` and ``hd95`` (pixels) as ``(estimate, low, high)`` over the lesion cases (NaN
    where no case qualifies; HD95 leaves out cases with an empty prediction), ``auc`` (resampled within each
    class), ``sensitivity`` and ``specificity`` at ``threshold`` (on the probability at ``temperature``, a
    threshold chosen on other data), ``ece_before`` (``T = 1``) and ``ece``, ``ece_floor`` (what a calibrated
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
    probability = label_probability(outputs["label_logit"], temperature)
    result["auc"] = bootstrap_ci(roc_auc, probability, y, strata=y, n_resamples=n_resamples)
    result["threshold"], result["temperature"] = float(threshold), float(temperature)
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
