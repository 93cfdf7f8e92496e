"""Diagnostic tasks on reconstructions: how well they are done, and how well their confidence is calibrated.

Lightning-free. :mod:`.metrics`: Dice and HD95 per image, ROC AUC, an operating point chosen on validation
data with its sensitivity and specificity, and (paired) bootstrap confidence intervals over cases;
:mod:`.calibration`: temperature and Platt scaling, expected calibration error and reliability curves, and
split-conformal prediction sets for a binary label with their coverage over random splits;
:mod:`.evaluation`: a lesion task's metrics with their intervals, and its label calibrated on held-out cases.
"""

from .calibration import (CONFIDENCES, conformal_coverage_over_splits, conformal_threshold,
                          ece_sampling_floor, expected_calibration_error, fit_platt, fit_temperature, prediction_sets,
                          reliability_curve)
from .evaluation import (LABEL_CALIBRATIONS, calibrate_label, fit_label_calibration, label_probability, lesion_cases,
                         task_metrics)
from .metrics import (RULES, bootstrap_ci, dice, hausdorff95, operating_point, paired_bootstrap, roc_auc,
                      sensitivity_specificity)

__all__ = ["dice", "hausdorff95", "roc_auc", "operating_point", "sensitivity_specificity", "bootstrap_ci",
           "paired_bootstrap", "RULES", "fit_temperature", "fit_platt", "expected_calibration_error", "ece_sampling_floor", "reliability_curve",
           "conformal_threshold", "prediction_sets", "conformal_coverage_over_splits", "CONFIDENCES",
           "lesion_cases", "label_probability", "calibrate_label", "task_metrics", "fit_label_calibration",
           "LABEL_CALIBRATIONS"]
