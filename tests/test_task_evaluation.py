"""pirecon.tasks.evaluation: the lesion task's metrics on known cases, and a label calibrated on held-out cases."""

import numpy as np
import pytest

from pirecon.errors import ArgumentError
from pirecon.tasks import prediction_sets
from pirecon.tasks.evaluation import calibrate_label, label_probability, lesion_cases, task_metrics


def _disc(size: int, centre: tuple[int, int], radius: float) -> np.ndarray:
    rows, cols = np.mgrid[:size, :size]
    return ((rows - centre[0]) ** 2 + (cols - centre[1]) ** 2 <= radius ** 2).astype(np.uint8)


def _outputs(n: int = 40, seed: int = 0) -> dict:
    """Half the cases hold a disc; the prediction finds the disc of every lesion case but the first (empty)."""
    rng = np.random.default_rng(seed)
    truth = np.zeros((n, 1, 16, 16), np.uint8)
    labels = np.arange(n) % 2
    for k in np.flatnonzero(labels):
        truth[k, 0] = _disc(16, tuple(rng.integers(5, 11, 2)), 3)
    prediction = truth.astype(np.float32) * 0.9
    prediction[1] = 0.0  # the first lesion case: nothing found
    logits = np.where(labels == 1, 2.0, -2.0) + rng.normal(0, 1.5, n)
    return {"segmentation": prediction, "true_segmentation": truth, "label_logit": logits, "true_label": labels}


def test_dice_is_measured_on_the_lesion_cases_only():
    outputs = _outputs()
    assert lesion_cases(outputs["true_segmentation"]).tolist() == [bool(k % 2) for k in range(40)]
    result = task_metrics(outputs, threshold=0.5, n_resamples=200)
    # 20 lesion cases: 19 found exactly (Dice 1), one missed (Dice 0); the 20 empty cases are left out
    assert result["dice"][0] == pytest.approx(19 / 20)
    assert result["dice"][1] <= result["dice"][0] <= result["dice"][2]
    assert result["cases"] == 40 and result["lesion_cases"] == 20 and len(result["per_case"]["dice"]) == 20
    assert result["hd95"][0] == pytest.approx(0.0)  # the missed case has no HD95 and is left out
    assert "set_coverage" not in result


def test_label_metrics_follow_the_threshold_and_temperature():
    outputs = _outputs()
    p = label_probability(outputs["label_logit"], 2.0)
    np.testing.assert_allclose(p, 1 / (1 + np.exp(-outputs["label_logit"] / 2.0)))
    at_half = task_metrics(outputs, threshold=0.5, temperature=2.0, qhat=0.6, n_resamples=200)
    y = outputs["true_label"]
    assert at_half["sensitivity"] == pytest.approx(np.mean(p[y == 1] >= 0.5))
    assert at_half["specificity"] == pytest.approx(np.mean(p[y == 0] < 0.5))
    sets = prediction_sets(p, 0.6).numpy()
    assert at_half["set_coverage"] == pytest.approx(sets[np.arange(40), y].mean())
    assert at_half["set_size"] == pytest.approx(sets.sum(axis=1).mean())
    # temperature changes confidence, never the ranking
    assert at_half["auc"][0] == pytest.approx(task_metrics(outputs, threshold=0.5, n_resamples=200)["auc"][0])


def test_calibrate_label_recovers_the_temperature_and_covers_new_cases():
    rng = np.random.default_rng(3)
    logits = rng.normal(0.0, 4.0, 6000)
    labels = (rng.random(6000) < 1 / (1 + np.exp(-logits / 2.5))).astype(int)
    fitted = calibrate_label(logits[:4000], labels[:4000], alpha=0.1)
    assert fitted["temperature"] == pytest.approx(2.5, rel=0.15)
    assert fitted["n_temperature"] == 2000 and fitted["n_conformal"] == 2000
    assert fitted["ece"] < 0.03 < fitted["ece_before"]
    held = label_probability(logits[4000:], fitted["temperature"])
    sets = prediction_sets(held, fitted["qhat"]).numpy()
    assert sets[np.arange(2000), labels[4000:]].mean() >= 0.9 - 0.02


def test_calibrate_label_refuses_too_few_cases_and_bad_temperatures():
    with pytest.raises(ArgumentError) as err:
        calibrate_label([1.0, -1.0, 0.5], [1, 0, 0])
    assert str(err.value) == ("logits: expected at least 2 cases for the temperature and 2 for the conformal "
                              "threshold (temperature_fraction 0.5), found 3 cases")
    with pytest.raises(ArgumentError, match=r"^temperature: expected a positive number, found -1.0$"):
        label_probability([0.0], -1.0)


def test_separated_logits_keep_temperature_one_and_say_why():
    logits = np.array([-3.0, -2.0, -1.5, -1.0, 1.0, 1.5, 2.0, 3.0] * 5)
    labels = (logits > 0).astype(int)
    fitted = calibrate_label(logits, labels, alpha=0.2)
    assert fitted["temperature"] == 1.0
    assert fitted["temperature_note"].startswith("temperature scaling not applied (T = 1, b = 0): logits: expected "
                                                 "logits for which temperature scaling has a finite optimum, found "
                                                 "the sign of every")
    platt = calibrate_label(logits, labels, alpha=0.2, method="platt")  # smoothed targets: a finite fit
    assert platt["temperature_note"] is None and 0 < platt["temperature"] < 1
    p = label_probability(logits, platt["temperature"], platt["bias"])
    assert np.all((p > 0.5) == (logits > 0)) and p.max() < 0.999 and p.min() > 0.001
    assert calibrate_label(*_simulated(), alpha=0.1)["temperature_note"] is None


def _shifted(n: int, seed: int):
    """Logits ``3 z + 6`` of a model whose true log-odds are ``z``: too confident and shifted towards 1."""
    rng = np.random.default_rng(seed)
    z = rng.normal(-0.5, 2.0, n)
    labels = (rng.random(n) < 1 / (1 + np.exp(-z))).astype(int)
    return 3.0 * z + 6.0, labels


def test_platt_scaling_recovers_slope_and_bias_and_removes_a_shift_that_temperature_cannot():
    from pirecon.tasks import fit_platt

    logits, labels = _shifted(20000, 4)
    temperature, bias = fit_platt(logits, labels)
    assert 1 / temperature == pytest.approx(1 / 3, rel=0.05) and bias == pytest.approx(-2.0, abs=0.1)
    np.testing.assert_allclose(label_probability(logits, temperature, bias),
                               1 / (1 + np.exp(-(logits / temperature + bias))))
    platt = calibrate_label(logits, labels, method="platt")
    scaled = calibrate_label(logits, labels)
    assert platt["label_calibration"] == "platt" and scaled["label_calibration"] == "temperature"
    assert scaled["bias"] == 0.0 and platt["bias"] == pytest.approx(-2.0, abs=0.15)
    assert platt["ece"] < 0.02 < 0.05 < scaled["ece"]


def test_platt_scaling_refuses_what_has_no_finite_fit():
    from pirecon.errors import PireconUserError
    from pirecon.tasks import fit_platt

    with pytest.raises(PireconUserError) as err:
        fit_platt([0.1, 0.2, 0.3], [1, 1, 1])
    assert str(err.value) == ("labels: expected both classes for Platt scaling, found only 1 (3 cases), so that "
                              "the NLL decreases as the bias goes to infinity")
    # separated at 0.6, not at 0: a bias would make the plain likelihood perfect; Platt's targets keep T finite
    temperature, bias = fit_platt([-1.0, 0.5, 0.7, 2.0], [0, 0, 1, 1])
    assert 0 < temperature < 10 and np.isfinite(bias)
    p = label_probability([-1.0, 0.5, 0.7, 2.0], temperature, bias)  # ordered, and no surer than the targets
    assert np.all(np.diff(p) > 0) and p[1] < 0.5 < p[2] and 0.2 < p.min() and p.max() < 0.8
    logits, labels = _shifted(2000, 5)
    with pytest.raises(PireconUserError, match=r"^logits: expected logits that rank the labels better than chance, "
                                               r"found the Platt fit's slope 1/T = -"):
        fit_platt(-logits, labels)
    with pytest.raises(ArgumentError, match=r"^bias: expected a finite number, found nan$"):
        label_probability([0.0], 1.0, float("nan"))
    from pirecon.tasks import fit_label_calibration

    for call in (calibrate_label, fit_label_calibration):
        with pytest.raises(ArgumentError, match=r"^label calibration: expected one of"):
            call(logits, labels, method="isotonic")


def _simulated():
    rng = np.random.default_rng(1)
    logits = rng.normal(0.0, 3.0, 200)
    return logits, (rng.random(200) < 1 / (1 + np.exp(-logits))).astype(int)


def test_the_spread_of_the_label_against_its_errors():
    from pirecon.tasks.evaluation import spread_and_errors

    p = np.array([0.9, 0.8, 0.2, 0.1, 0.6, 0.4])
    y = np.array([1, 1, 0, 0, 0, 1])  # the last two are misclassified at 0.5
    spread = np.array([0.01, 0.02, 0.03, 0.01, 0.2, 0.3])  # and have the largest spread
    out = spread_and_errors(spread, p, y, 0.5)
    assert out["spread_error_auc"] == 1.0 and out["misclassified"] == 2
    assert out["spread_spearman"] > 0.8
    assert np.isnan(spread_and_errors(spread, y.astype(float), y, 0.5)["spread_error_auc"])  # nothing wrong
