"""pirecon.tasks: task metrics against torchmetrics and known cases, bootstrap intervals, calibration, conformal."""

import re

import numpy as np
import pytest
import torch
from scipy import stats
from torchmetrics.functional.classification import (binary_auroc, binary_calibration_error, binary_f1_score,
                                                    multiclass_calibration_error)
from torchmetrics.functional.segmentation import dice_score

from pirecon.errors import ArgumentError, PireconUserError
from pirecon.tasks import (bootstrap_ci, conformal_coverage_over_splits, conformal_threshold, dice,
                           ece_sampling_floor, expected_calibration_error, fit_temperature, hausdorff95, operating_point,
                           paired_bootstrap, prediction_sets, reliability_curve, roc_auc, sensitivity_specificity)


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


# ---- Dice ------------------------------------------------------------------------------------------------

def test_dice_agrees_with_torchmetrics_on_random_masks():
    g = torch.Generator().manual_seed(0)
    probabilities = torch.rand(6, 1, 24, 24, generator=g)
    target = torch.rand(6, 1, 24, 24, generator=g) < 0.4
    ours = dice(probabilities, target)
    assert ours.shape == (6,) and ours.dtype == torch.float64
    f1 = binary_f1_score(probabilities, target.long(), threshold=0.5, multidim_average="samplewise")
    seg = dice_score((probabilities > 0.5).long(), target.long(), num_classes=1, average="none")[:, 0]
    torch.testing.assert_close(ours.float(), f1, rtol=0, atol=1e-6)
    torch.testing.assert_close(ours.float(), seg, rtol=0, atol=1e-6)
    # a 0/1 mask gives the Dice of the thresholded probabilities; the threshold is taken strictly
    torch.testing.assert_close(dice((probabilities > 0.7).to(torch.uint8), target), dice(probabilities, target, 0.7))


def test_dice_on_known_cases():
    mask = torch.zeros(4, 1, 8, 8, dtype=torch.bool)
    target = mask.clone()
    mask[0, 0, 2:5, 2:5] = target[0, 0, 2:5, 2:5] = True  # identical
    mask[1, 0, :2, :2], target[1, 0, 5:, 5:] = True, True  # disjoint
    mask[3, 0, 0, :4], target[3, 0, 0, :2] = True, True  # 2 * 2 / (4 + 2)
    # image 2: both empty, Dice 1 by convention
    assert dice(mask, target).tolist() == pytest.approx([1.0, 0.0, 1.0, 2 / 3])
    assert dice(torch.zeros(1, 1, 4, 4), torch.ones(1, 1, 4, 4)).item() == 0.0  # empty prediction, full target


# ---- HD95 ------------------------------------------------------------------------------------------------

def _square(half: int, size: int = 64) -> np.ndarray:
    mask = np.zeros((1, 1, size, size), dtype=bool)
    c = size // 2
    mask[0, 0, c - half:c + half + 1, c - half:c + half + 1] = True
    return mask


def test_hd95_of_concentric_squares_is_their_gap():
    """Squares of half-sides 20 and 22: the 160 inner surface pixels and the 164 pixels of the outer surface
    facing them are exactly 2 pixels from the other surface; only the 12 near the outer corners are farther
    (up to 2 sqrt 2), under 5% of the 336 distances."""
    inner, outer = _square(20), _square(22)
    assert hausdorff95(inner, outer).tolist() == [2.0]
    assert hausdorff95(outer, inner).tolist() == [2.0]  # symmetric
    assert hausdorff95(inner, outer, spacing=0.5).tolist() == [1.0]
    # a larger gap puts more than 5% of the distances at the corners: the value exceeds the gap
    assert 6.0 < hausdorff95(_square(10), _square(16)).item() < 6.0 * np.sqrt(2)


def test_hd95_of_single_pixels_and_anisotropic_spacing():
    a, b = np.zeros((1, 1, 32, 32), dtype=bool), np.zeros((1, 1, 32, 32), dtype=bool)
    a[0, 0, 10, 10], b[0, 0, 13, 14] = True, True
    assert hausdorff95(a, b).item() == pytest.approx(5.0)
    assert hausdorff95(a, b, spacing=(2.0, 1.0)).item() == pytest.approx(np.hypot(6.0, 4.0))


def _surface_points(mask: np.ndarray) -> np.ndarray:
    padded = np.pad(mask, 1)
    interior = padded[:-2, 1:-1] & padded[2:, 1:-1] & padded[1:-1, :-2] & padded[1:-1, 2:]
    return np.argwhere(mask & ~interior).astype(float)


def test_hd95_matches_the_brute_force_percentile_of_surface_distances():
    yy, xx = np.mgrid[:48, :48]
    a = (yy - 20) ** 2 + (xx - 22) ** 2 <= 12 ** 2  # a disc
    b = (np.abs(yy - 27) <= 9) & (np.abs(xx - 25) <= 14)  # a rectangle overlapping it
    pa, pb = _surface_points(a) * [1.5, 1.0], _surface_points(b) * [1.5, 1.0]
    d = np.sqrt(((pa[:, None, :] - pb[None, :, :]) ** 2).sum(-1))
    expected = np.percentile(np.concatenate([d.min(axis=1), d.min(axis=0)]), 95)
    assert hausdorff95(a[None, None], b[None, None], spacing=(1.5, 1.0)).item() == pytest.approx(expected, abs=1e-9)


def test_hd95_is_nan_when_a_mask_is_empty():
    full, empty = _square(5), np.zeros((1, 1, 64, 64), dtype=bool)
    both = np.concatenate([full, full, empty])
    out = hausdorff95(both, np.concatenate([full, empty, empty]))
    assert out[0].item() == 0.0 and torch.isnan(out[1:]).all()


# ---- ROC -------------------------------------------------------------------------------------------------

def test_auc_agrees_with_torchmetrics_and_mann_whitney():
    rng = np.random.default_rng(1)
    labels = (rng.random(400) < 0.3).astype(int)
    scores = rng.normal(size=400) + labels
    reference = binary_auroc(torch.tensor(scores), torch.tensor(labels)).item()
    assert roc_auc(scores, labels) == pytest.approx(reference, abs=1e-6)
    assert roc_auc(torch.tensor(scores), torch.tensor(labels, dtype=torch.bool)) == pytest.approx(reference, abs=1e-6)
    tied = np.round(scores)  # ties count one half
    u = stats.mannwhitneyu(tied[labels == 1], tied[labels == 0]).statistic
    assert roc_auc(tied, labels) == pytest.approx(u / (labels.sum() * (labels == 0).sum()), rel=1e-12)
    assert roc_auc([0.1, 0.2, 0.8, 0.9], [0, 0, 1, 1]) == 1.0 and roc_auc([0.1, 0.2, 0.8, 0.9], [1, 1, 0, 0]) == 0.0


def test_youden_threshold_on_a_separable_set_is_perfect():
    rng = np.random.default_rng(2)
    labels = np.repeat([0, 1], 50)
    scores = np.where(labels == 1, rng.uniform(0.6, 1.0, 100), rng.uniform(0.0, 0.4, 100))
    for rule in ("youden", "closest"):
        threshold = operating_point(scores, labels, rule)
        assert threshold == scores[labels == 1].min()  # the lowest threshold that calls every negative negative
        assert sensitivity_specificity(scores, labels, threshold) == (1.0, 1.0)
    assert sensitivity_specificity(scores, labels, 0.5) == (1.0, 1.0)
    assert sensitivity_specificity([0.1, 0.4, 0.6, 0.9], [0, 1, 0, 1], 0.5) == (0.5, 0.5)


def test_operating_point_on_overlapping_scores_maximises_youden():
    rng = np.random.default_rng(3)
    labels = (rng.random(300) < 0.5).astype(int)
    scores = rng.normal(size=300) + 1.5 * labels
    threshold = operating_point(scores, labels)
    best = max(sum(sensitivity_specificity(scores, labels, t)) for t in np.unique(scores))
    assert sum(sensitivity_specificity(scores, labels, threshold)) == best


# ---- bootstrap -------------------------------------------------------------------------------------------

def test_bootstrap_interval_contains_the_estimate_and_narrows_with_more_cases():
    rng = np.random.default_rng(4)
    values = rng.normal(1.0, 1.0, 800)
    estimate, low, high = bootstrap_ci(np.mean, values[:50])
    assert estimate == pytest.approx(values[:50].mean()) and low < estimate < high
    big_estimate, big_low, big_high = bootstrap_ci(np.mean, values)
    assert big_low < big_estimate < big_high
    # the width goes as 1 / sqrt(n): 16 times the cases, a quarter of the width
    assert (big_high - big_low) < 0.4 * (high - low)
    # about 2 * 1.96 standard errors
    assert (big_high - big_low) == pytest.approx(2 * 1.96 / np.sqrt(800), rel=0.15)
    # the same seed gives the same interval; rows of several arrays are resampled together
    assert bootstrap_ci(np.mean, values[:50]) == (estimate, low, high)
    _, lo_diff, hi_diff = bootstrap_ci(lambda a, b: float(np.mean(a - b)), values, values.copy())
    assert lo_diff == hi_diff == 0.0


def test_paired_bootstrap_of_identical_and_of_clearly_different_modes():
    rng = np.random.default_rng(5)
    labels = (rng.random(200) < 0.25).astype(int)
    good = labels + rng.normal(0, 0.5, 200)
    poor = labels + rng.normal(0, 2.0, 200)
    assert paired_bootstrap(roc_auc, (good, labels), (good, labels), n_resamples=500) == (0.0, 0.0, 0.0)
    difference, low, high = paired_bootstrap(roc_auc, (good, labels), (poor, labels), n_resamples=500,
                                             strata=labels)
    assert difference == pytest.approx(roc_auc(good, labels) - roc_auc(poor, labels))
    assert 0.0 < low < difference < high
    # the reverse order flips the sign
    back = paired_bootstrap(roc_auc, (poor, labels), (good, labels), n_resamples=500, strata=labels)
    assert back == pytest.approx((-difference, -high, -low))


def test_bootstrap_reports_a_resample_without_one_class():
    labels = np.zeros(40, dtype=int)
    labels[[10, 30, 39]] = 1  # a resample of 40 misses all three with probability (37/40)^40 = 4%
    scores = np.linspace(0, 1, 40)
    with pytest.raises(ArgumentError, match=r"^statistic: expected a value on bootstrap resample \d+, found an "
                                            r"error: labels: expected both classes"):
        bootstrap_ci(roc_auc, scores, labels, n_resamples=200)
    estimate, low, high = bootstrap_ci(roc_auc, scores, labels, n_resamples=200, strata=labels)
    assert low <= estimate <= high <= 1.0 and low < high


# ---- temperature scaling and calibration error ----------------------------------------------------------

def _simulated_logits(n: int, temperature: float, seed: int):
    rng = np.random.default_rng(seed)
    logits = rng.normal(0.0, 4.0, n)
    labels = (rng.random(n) < _sigmoid(logits / temperature)).astype(int)
    return logits, labels


def test_temperature_scaling_recovers_the_temperature_and_calibrates():
    logits, labels = _simulated_logits(20000, 2.5, seed=6)
    temperature = fit_temperature(logits[:10000], labels[:10000])
    assert temperature == pytest.approx(2.5, rel=0.1)
    held_out, held_labels = logits[10000:], labels[10000:]
    assert expected_calibration_error(_sigmoid(held_out), held_labels) > 0.1  # overconfident before
    assert expected_calibration_error(_sigmoid(held_out / temperature), held_labels) < 0.05
    # the NLL is smallest at the fitted temperature
    nll = [np.mean(np.logaddexp(0, logits / t) - labels * logits / t) for t in (0.9 * temperature, 1.1 * temperature)]
    at_fit = np.mean(np.logaddexp(0, logits / temperature) - labels * logits / temperature)
    assert at_fit < min(nll) + 1e-4


def test_temperature_scaling_refuses_logits_without_a_finite_optimum():
    with pytest.raises(PireconUserError) as err:
        fit_temperature([-2.0, -1.0, 1.0, 2.0], [0, 0, 1, 1])
    assert str(err.value) == ("logits: expected logits for which temperature scaling has a finite optimum, found "
                              "the sign of every logit matching its label (4 cases), so that the NLL decreases as T "
                              "goes to 0")
    with pytest.raises(PireconUserError, match=r"^logits: .*no better than chance, so that the NLL decreases as T "
                                               r"goes to infinity$"):
        fit_temperature([-2.0, -1.0, 1.0, 2.0], [1, 0, 1, 0])
    # one wrong sign is enough for a finite optimum
    assert 0 < fit_temperature([-2.0, -1.0, 1.0, 2.0, 0.5], [0, 0, 1, 1, 0]) < np.inf


def test_ece_matches_torchmetrics():
    rng = np.random.default_rng(7)
    probabilities = rng.random(2000).astype(np.float32)
    labels = (rng.random(2000) < probabilities ** 1.5).astype(int)
    p, y = torch.from_numpy(probabilities), torch.from_numpy(labels)
    top_label = multiclass_calibration_error(torch.stack([1 - p, p], dim=1), y, num_classes=2, n_bins=15, norm="l1")
    assert expected_calibration_error(probabilities, labels) == pytest.approx(top_label.item(), abs=1e-6)
    positive = binary_calibration_error(p, y, n_bins=15, norm="l1")
    assert expected_calibration_error(probabilities, labels, confidence="positive") == pytest.approx(
        positive.item(), abs=1e-6)
    assert expected_calibration_error(probabilities, labels) != pytest.approx(positive.item(), abs=1e-3)


def test_the_ece_sampling_floor_is_what_a_calibrated_model_shows_and_shrinks_with_the_cases():
    rng = np.random.default_rng(3)
    assert ece_sampling_floor(np.array([0.0, 1.0, 1.0, 0.0])) == {"mean": 0.0, "p95": 0.0}  # labels are certain
    few, many = (ece_sampling_floor(rng.random(n), draws=300) for n in (200, 2000))
    assert 0 < few["mean"] < few["p95"] and 0.2 < many["mean"] / few["mean"] < 0.5  # about 1 / sqrt(10)
    below = []
    for seed in range(40):  # a calibrated model's own ECE falls below p95 in about 95% of test sets
        p = np.random.default_rng(100 + seed).random(200)
        labels = (np.random.default_rng(200 + seed).random(200) < p).astype(int)
        below.append(expected_calibration_error(p, labels) < ece_sampling_floor(p, draws=200)["p95"])
    assert 0.8 <= np.mean(below) < 1
    p = rng.random(2000)
    overconfident = (rng.random(2000) < 0.5 + (p - 0.5) * 0.4).astype(int)  # the truth is far less sure
    assert expected_calibration_error(p, overconfident) > 3 * ece_sampling_floor(p, draws=200)["p95"]
    assert ece_sampling_floor(p, draws=50, seed=1) == ece_sampling_floor(p, draws=50, seed=1)


def test_reliability_curve_on_a_known_case():
    probabilities = np.array([0.05, 0.15, 0.15, 0.95, 1.0, 0.55])
    labels = np.array([0, 1, 0, 1, 1, 0])
    confidence, accuracy, counts = reliability_curve(probabilities, labels, bins=10, confidence="positive")
    assert counts.tolist() == [1, 2, 0, 0, 0, 1, 0, 0, 0, 2]  # 1.0 falls in the last bin
    np.testing.assert_allclose(confidence[[0, 1, 5, 9]], [0.05, 0.15, 0.55, 0.975])
    np.testing.assert_allclose(accuracy[[0, 1, 5, 9]], [0.0, 0.5, 0.0, 1.0])
    assert np.isnan(confidence[2]) and np.isnan(accuracy[2])
    # the predicted class: 0.05 -> class 0 at confidence 0.95, right
    confidence, accuracy, counts = reliability_curve(probabilities, labels, bins=10)
    assert counts.tolist() == [0, 0, 0, 0, 0, 1, 0, 0, 2, 3]
    np.testing.assert_allclose(accuracy[[5, 8, 9]], [0.0, 0.5, 1.0])


# ---- conformal prediction sets ---------------------------------------------------------------------------

def test_conformal_threshold_and_sets_on_a_known_case():
    probabilities = np.array([0.9, 0.8, 0.3, 0.1, 0.6, 0.7, 0.2, 0.95, 0.4])
    labels = np.array([1, 1, 0, 0, 0, 1, 1, 1, 0])
    # scores 1 - p(true): 0.1, 0.2, 0.3, 0.1, 0.6, 0.3, 0.8, 0.05, 0.4; n = 9, alpha = 0.1: the 9th smallest
    assert conformal_threshold(probabilities, labels, 0.1) == pytest.approx(0.8)
    # alpha = 0.3: ceil(10 * 0.7) = 7th smallest
    assert conformal_threshold(probabilities, labels, 0.3) == pytest.approx(0.4)
    # alpha = 0.25: ceil(10 * 0.75) = 8th smallest (ceil(9 * 0.75) = 7 would not carry the guarantee)
    assert conformal_threshold(probabilities, labels, 0.25) == pytest.approx(0.6)
    sets = prediction_sets(np.array([0.95, 0.5, 0.02, 0.65]), 0.5)  # class 1 when p >= 0.5, class 0 when p <= 0.5
    assert sets.dtype == torch.bool
    assert sets.tolist() == [[False, True], [True, True], [True, False], [False, True]]
    assert prediction_sets(np.array([0.5]), 0.3).tolist() == [[False, False]]


def test_conformal_coverage_over_random_splits():
    rng = np.random.default_rng(8)
    probabilities = _sigmoid(rng.normal(0.0, 2.0, 1000))
    labels = (rng.random(1000) < probabilities).astype(int)
    alpha = 0.1
    result = conformal_coverage_over_splits(probabilities, labels, alpha, splits=100)
    assert result["coverage"].shape == (100,) and result["n_calibration"] == result["n_test"] == 500
    assert result["mean_coverage"] == pytest.approx(result["coverage"].mean())
    assert result["mean_coverage"] >= 1 - alpha - 0.02
    # not trivially covered: the upper bound 1 - alpha + 1/(n + 1) for distinct scores, and sets of fewer than 2
    assert result["mean_coverage"] <= 1 - alpha + 1 / 501 + 0.02
    assert 1.0 < result["mean_set_size"] < 2.0


def test_conformal_refuses_a_too_small_calibration_set():
    probabilities, labels = np.full(8, 0.7), np.ones(8, dtype=int)
    with pytest.raises(ArgumentError) as err:
        conformal_threshold(probabilities, labels, 0.1)
    assert str(err.value) == ("probabilities: expected at least 9 calibration cases for alpha=0.1 (so that "
                              "ceil((n + 1)(1 - alpha)) <= n), found 8")
    assert conformal_threshold(np.full(9, 0.7), np.ones(9, dtype=int), 0.1) == pytest.approx(0.3)
    with pytest.raises(ArgumentError, match=r"^probabilities: expected at least 19 calibration cases for "
                                            r"alpha=0\.05 .*, found 18$"):
        conformal_threshold(np.full(18, 0.7), np.ones(18, dtype=int), 0.05)


# ---- bad input -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("call, message", [
    (lambda: roc_auc(np.zeros(5), np.array([0, 1, 0, 1])),
     "labels: expected the shape of scores (5,), found (4,)"),
    (lambda: roc_auc(np.arange(4.0), np.array([0, 1, 2, 1])),
     "labels: expected binary labels (0 or 1), found 1 other values (2)"),
    (lambda: roc_auc(np.array([0.1, np.nan, 0.3, np.nan]), np.array([0, 1, 0, 1])),
     "scores: expected finite values, found 2 NaN and 0 Inf entries"),
    (lambda: roc_auc(np.arange(4.0), np.ones(4)),
     "labels: expected both classes (0 and 1) for the ROC AUC, found only class 1 (4 labels)"),
    (lambda: roc_auc(np.zeros((4, 1)), np.zeros(4)),
     "scores: expected a 1-D array of N >= 1 values (one per case), found shape (4, 1)"),
    (lambda: dice(torch.rand(2, 1, 8, 8), torch.zeros(2, 1, 8, 9)),
     "probabilities_or_mask: expected the shape of target (2, 1, 8, 9), found (2, 1, 8, 8)"),
    (lambda: dice(torch.rand(2, 8, 8), torch.zeros(2, 8, 8)),
     "target: expected shape (B, 1, H, W) or (B, 1, D, H, W), found (2, 8, 8)"),
    (lambda: hausdorff95(np.full((1, 1, 4, 4), 0.5), np.ones((1, 1, 4, 4))),
     "mask: expected binary labels (0 or 1), found 16 other values (0.5)"),
    (lambda: operating_point(np.arange(4.0), [0, 1, 0, 1], rule="best"),
     "rule: expected one of 'youden', 'closest', found 'best'"),
    (lambda: expected_calibration_error(np.array([0.2, 1.5]), np.array([0, 1])),
     "probabilities: expected probabilities in [0, 1], found 1 outside (min 0.2, max 1.5)"),
    (lambda: bootstrap_ci(np.mean, np.zeros(5), np.zeros(6)),
     "arrays: expected the same number of cases (rows) in every array, found 5, 6"),
    (lambda: bootstrap_ci(np.mean, np.zeros(5), level=95),
     "level: expected a number in (0, 1), found 95"),
    (lambda: conformal_threshold(np.full(20, 0.5), np.ones(20), alpha=0),
     "alpha: expected a number in (0, 1), found 0"),
])
def test_bad_input_gets_a_message_naming_the_argument(call, message):
    with pytest.raises(ArgumentError, match="^" + re.escape(message) + "$"):
        call()
