"""pirecon.uncertainty: the bounds, calibration with its guarantee, and the metrics of intervals."""

import math

import numpy as np
import pytest
import torch
from scipy import stats

from pirecon.errors import PireconUserError
from pirecon.uncertainty import (Interval, ause, check_disjoint, conformal_risk_control, coverage, group_splits,
                                 hb_p_value, hb_upper_bound, mean_width, minimum_calibration_size, miscoverage,
                                 miscoverage_curves, rcps, risk_by_width_quartile, sparsification, spearman, uce,
                                 wsr_upper_bound)
from pirecon.uncertainty.bounds import bentkus_p_value, hoeffding_p_value

# ---- bounds ---------------------------------------------------------------------------------------------


def test_the_p_values_are_hoeffdings_and_bentkus_formulas():
    n, r, risk = 100, 0.05, 0.1
    kl = r * math.log(r / risk) + (1 - r) * math.log((1 - r) / (1 - risk))
    assert hoeffding_p_value(r, n, risk) == pytest.approx(math.exp(-n * kl), rel=1e-12)
    assert bentkus_p_value(r, n, risk) == pytest.approx(math.e * stats.binom.cdf(5, n, risk), rel=1e-12)
    assert hb_p_value(r, n, risk) == pytest.approx(0.1565102, abs=1e-6)  # Bentkus is the smaller here
    assert hoeffding_p_value(0.2, n, 0.1) == 1.0  # an empirical risk above the hypothesis rejects nothing


def test_the_upper_bound_inverts_the_p_value_and_the_minimum_calibration_size():
    ucb = hb_upper_bound(0.05, 100, 0.1)
    assert hb_p_value(0.05, 100, ucb - 1e-5) >= 0.1 > hb_p_value(0.05, 100, ucb + 1e-5)
    # (1 - alpha)^n < delta: n > log(0.1) / log(0.9) = 21.85
    assert minimum_calibration_size(0.1, 0.1) == 22 == math.ceil(math.log(0.1) / math.log(0.9))
    assert minimum_calibration_size(0.1, 0.1, "wsr") > 1
    assert wsr_upper_bound(np.zeros(minimum_calibration_size(0.1, 0.1, "wsr")), 0.1) < 0.1


@pytest.mark.parametrize("bound", ["hb", "wsr"])
def test_the_upper_bounds_hold_with_probability_one_minus_delta(bound):
    """Over 400 draws of 50 Bernoulli(0.3) losses, the bound falls below the true risk in at most delta of them
    (with three binomial standard deviations of slack)."""
    rng = np.random.default_rng(0)
    risk, delta, draws = 0.3, 0.1, 400
    misses = 0
    for _ in range(draws):
        losses = (rng.random(50) < risk).astype(float)
        ucb = hb_upper_bound(losses.mean(), 50, delta) if bound == "hb" else wsr_upper_bound(losses, delta)
        misses += ucb < risk
    assert misses / draws <= delta + 3 * math.sqrt(delta * (1 - delta) / draws)


# ---- intervals and their losses ------------------------------------------------------------------------

def _interval(batch=4, size=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    center = torch.randn(batch, 1, size, size, generator=g, dtype=torch.float64)
    below, above = torch.rand(center.shape, generator=g, dtype=torch.float64), torch.rand(center.shape, generator=g,
                                                                                         dtype=torch.float64)
    truth = center + 1.5 * torch.randn(center.shape, generator=g, dtype=torch.float64)
    return Interval(center - below, center + above, center, "quantile"), truth


def test_the_miscoverage_curves_are_the_scaled_intervals_miscoverage():
    interval, truth = _interval()
    lambdas = np.linspace(0, 5, 26)
    curves = miscoverage_curves(interval, truth, lambdas)
    brute = np.stack([miscoverage(interval.scaled(lam), truth).numpy() for lam in lambdas], axis=1)
    np.testing.assert_allclose(curves, brute, atol=1e-12)
    assert np.all(np.diff(curves, axis=1) <= 0)  # wider intervals miss fewer pixels


def test_interval_checks_its_values():
    interval, _ = _interval()
    with pytest.raises(ValueError, match=r"^interval: expected lower <= center <= upper, found lower > center at 1 "):
        bad = interval.lower.clone()
        bad[0, 0, 0, 0] = interval.center[0, 0, 0, 0] + 1
        Interval(bad, interval.upper, interval.center, "quantile")
    nan = interval.upper.clone()
    nan[1, 0, 2, 2] = float("nan")
    with pytest.raises(ValueError, match=r"^upper: expected finite values, found 1 NaN or Inf$"):
        Interval(interval.lower, nan, interval.center, "quantile")
    with pytest.raises(ValueError, match=r"^interval: expected lower, upper and center of one shape, found "):
        Interval(interval.lower[:2], interval.upper, interval.center, "quantile")
    with pytest.raises(ValueError, match=r"^kind: expected one of gaussian, quantile, mc-dropout, ensemble, constant"):
        Interval(interval.lower, interval.upper, interval.center, "bayes")
    scaled = interval.scaled(2.0)
    torch.testing.assert_close(scaled.width, 2 * interval.width)


# ---- calibration and its guarantee -----------------------------------------------------------------------

def _heteroscedastic(images: int, size: int = 12, seed: int = 1):
    """Truth = prediction + sigma * noise with a per-pixel sigma; the predicted interval is +-sigma/2 (too narrow:
    calibration has to widen it by about 3.3 for 10% miscoverage)."""
    g = torch.Generator().manual_seed(seed)
    center = torch.rand(images, 1, size, size, generator=g, dtype=torch.float64)
    sigma = 0.05 + 0.2 * torch.rand(center.shape, generator=g, dtype=torch.float64)
    truth = center + sigma * torch.randn(center.shape, generator=g, dtype=torch.float64)
    return Interval(center - sigma / 2, center + sigma / 2, center, "gaussian", std=sigma / 2), truth


def test_rcps_controls_the_risk_over_100_random_splits():
    """Over 100 random calibration/test splits of 300 held-out images, the test risk of the calibrated
    intervals exceeds alpha in at most delta of the splits (binomial slack of three standard deviations)."""
    interval, truth = _heteroscedastic(300)
    lambdas = np.linspace(0, 6, 241)
    losses = miscoverage_curves(interval, truth, lambdas)
    alpha, delta, splits = 0.1, 0.1, 100
    violations, risks, crc_risks = 0, [], []
    for calibration, test in group_splits(np.arange(300), 0.5, splits, seed=0):
        check_disjoint(calibration, test)
        result = rcps(losses[calibration], lambdas, alpha, delta)
        k = int(np.searchsorted(lambdas, result.lambda_hat))
        risk = losses[test, k].mean()
        violations += risk > alpha
        risks.append(risk)
        crc = conformal_risk_control(losses[calibration], lambdas, alpha)
        crc_risks.append(losses[test, int(np.searchsorted(lambdas, crc.lambda_hat))].mean())
    assert violations / splits <= delta + 3 * math.sqrt(delta * (1 - delta) / splits)
    assert 0.05 < np.mean(risks) < alpha  # controlled, and not vacuous
    assert np.mean(crc_risks) <= alpha + 3 * np.std(crc_risks) / math.sqrt(splits)  # in expectation


def test_calibration_refuses_what_cannot_give_the_guarantee():
    interval, truth = _heteroscedastic(30)
    lambdas = np.linspace(0, 6, 61)
    losses = miscoverage_curves(interval, truth, lambdas)
    with pytest.raises(PireconUserError) as info:
        rcps(losses[:21], lambdas, 0.1, 0.1)
    assert str(info.value) == ("calibration: expected at least 22 calibration images for alpha=0.1, delta=0.1 with "
                               "the HB bound, found 21")
    with pytest.raises(PireconUserError, match=r"^calibration: expected a scale on the grid whose risk bound is below "
                                                r"alpha=0.1, found none \(the largest, 0.5, has empirical risk"):
        rcps(miscoverage_curves(interval, truth, [0.0, 0.5]), [0.0, 0.5], 0.1, 0.1)
    with pytest.raises(PireconUserError) as info:
        check_disjoint(["a.h5", "b.h5"], ["b.h5", "c.h5"], "files")
    assert str(info.value) == "calibration and test files: expected disjoint sets, found 1 in both (b.h5)"
    with pytest.raises(ValueError) as info:
        rcps(losses[:, :10], lambdas)
    assert str(info.value) == "losses: expected shape (n, 61) (one loss per image and scale), found (30, 10)"


def test_splits_keep_a_volume_on_one_side():
    volumes = np.repeat(np.arange(10), 5)  # 10 volumes of 5 slices
    for calibration, test in group_splits(volumes, 0.3, 20, seed=3):
        assert not set(volumes[calibration]) & set(volumes[test])
        assert len(set(volumes[calibration])) == 3


# ---- metrics -------------------------------------------------------------------------------------------------

def test_interval_metrics_on_a_known_case():
    width = torch.arange(1.0, 9.0, dtype=torch.float64).view(1, 1, 2, 4)  # widths 1..8, one per pixel
    center = torch.zeros_like(width)
    interval = Interval(center - width / 2, center + width / 2, center, "quantile")
    # outside: widths 1 and 2 (the narrowest quartile) and 3; inside: the rest
    truth = torch.tensor([1.0, -1.5, 2.0, 0.0, 0.0, 0.0, 3.0, -3.0], dtype=torch.float64).view(1, 1, 2, 4)
    assert miscoverage(interval, truth).tolist() == [3 / 8] and coverage(interval, truth).tolist() == [5 / 8]
    assert mean_width(interval).tolist() == [4.5]
    np.testing.assert_allclose(risk_by_width_quartile(interval, truth), [1.0, 0.5, 0.0, 0.0])


def test_ranking_metrics():
    rng = np.random.default_rng(0)
    error = torch.from_numpy(rng.normal(size=(4, 1, 16, 16)))
    assert spearman(error.abs(), error) == pytest.approx(1.0)
    assert abs(spearman(torch.from_numpy(rng.random((4, 1, 16, 16))), error)) < 0.15
    assert ause(error.abs(), error) == pytest.approx(0.0, abs=1e-12)
    assert ause(torch.from_numpy(rng.random((4, 1, 16, 16))), error) > 0.2
    fractions, curve, oracle = sparsification(error.abs(), error, steps=10)
    assert fractions[0] == 0 and curve[0] == pytest.approx(1.0) and np.all(np.diff(oracle) <= 1e-12)


def test_uce_is_zero_for_a_variance_that_is_the_squared_error():
    std = torch.linspace(0.1, 2.0, 1000, dtype=torch.float64)
    assert uce(std, std) == pytest.approx(0.0, abs=1e-12)
    assert uce(std, 2 * std) > 0.5


# ---- heads ---------------------------------------------------------------------------------------------------

TINY_LPD = {"class_path": "lpd", "init_args": {"iterations": 2, "hidden": 8}}


@pytest.fixture(scope="module")
def ct_batch():
    from pirecon.ct import ParallelBeam2D, RayTransform
    from pirecon.noise import GaussianNoise
    from pirecon.phantoms import random_ellipses
    from pirecon.physics import Physics

    geometry = ParallelBeam2D((32, 32), pixel_size=1.0, num_angles=10)
    physics = Physics(RayTransform(geometry), GaussianNoise(relative=0.05), "ct", {"geometry": geometry})
    x = random_ellipses((32, 32), 3, seed=0)
    return x, physics.simulate(x, seed=1), physics


@pytest.mark.parametrize("name, kind", [("gaussian_head", "gaussian"), ("quantile_head", "quantile"),
                                        ("mc_dropout", "mc-dropout"), ("constant_width", "constant")])
def test_each_head_gives_an_interval_and_its_loss_has_gradients(ct_batch, name, kind):
    from pirecon.models.registry import build_model

    x, y, physics = ct_batch
    head = build_model({"class_path": name, "init_args": {"backbone": TINY_LPD}})
    head.eval()
    with torch.no_grad():
        result = head(y, physics)
    interval = result.uncertainty
    assert isinstance(interval, Interval) and interval.kind == kind
    assert interval.lower.shape == interval.upper.shape == (3, 1, 32, 32)
    assert bool((interval.lower <= interval.center).all() and (interval.center <= interval.upper).all())
    if name == "mc_dropout":
        assert float(interval.std.mean()) > 0  # the passes differ
    head.train()
    if hasattr(head, "uncertainty_loss"):
        loss = head.uncertainty_loss(head(y, physics), x)
        loss.backward()
        assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in head.net.parameters())


def test_the_head_losses_are_minimised_by_what_they_claim():
    from pirecon.models.uncertainty_heads import gaussian_nll, pinball_loss

    samples = torch.randn(20000, dtype=torch.float64) * 2.0 + 1.0
    grid = torch.linspace(-6, 8, 1401, dtype=torch.float64)
    best = grid[torch.stack([pinball_loss(q, samples, 0.95) for q in grid]).argmin()]
    assert float(best) == pytest.approx(float(torch.quantile(samples, 0.95)), abs=0.02)
    log_variances = torch.linspace(-2, 4, 601, dtype=torch.float64)
    mean = torch.full_like(samples, 1.0)
    best = log_variances[torch.stack([gaussian_nll(mean, torch.full_like(samples, float(v)), samples)
                                      for v in log_variances]).argmin()]
    assert float(best.exp()) == pytest.approx(float(samples.var()), rel=0.02)


def test_a_trained_head_loads_and_its_interval_is_written(ct_batch, tmp_path):
    import pirecon
    from pirecon.data import read_reconstruction
    from pirecon.training import ReconstructionModule

    _, y, physics = ct_batch
    module = ReconstructionModule({"class_path": "quantile_head", "init_args": {"backbone": TINY_LPD}})
    module.set_physics("ct", physics.metadata["geometry"], physics.noise)
    checkpoint = {"state_dict": module.state_dict(), "hyper_parameters": dict(module.hparams)}
    module.on_save_checkpoint(checkpoint)
    torch.save(checkpoint, tmp_path / "head.ckpt")
    model = pirecon.load(tmp_path / "head.ckpt")
    recon = model.reconstruct(y, physics=physics, batch_size=2, progress=False)
    assert isinstance(recon.uncertainty, Interval) and recon.uncertainty.lower.shape == (3, 1, 32, 32)
    assert recon.provenance["uncertainty"] == {"kind": "quantile", "calibration": None}
    written = read_reconstruction(pirecon.save(recon, tmp_path / "r.h5"))
    np.testing.assert_array_equal(written.interval[0], recon.uncertainty.lower[:, 0].numpy())
    np.testing.assert_array_equal(written.interval[1], recon.uncertainty.upper[:, 0].numpy())


def test_fit_trains_a_head_with_its_loss_and_validates_its_interval(tmp_path):
    import pytorch_lightning as pl

    from pirecon.data.simulate import simulate
    from pirecon.training import ReconstructionDataModule, ReconstructionModule

    options = {"modality": "ct", "phantom": "ellipses", "image_size": 32, "num_angles": 10, "seed": 0}
    train = simulate(tmp_path / "train.h5", n=8, progress=False, **options)
    val = simulate(tmp_path / "val.h5", n=4, progress=False, split="validation", **options)
    pl.seed_everything(0, verbose=False)
    module = ReconstructionModule({"class_path": "gaussian_head", "init_args": {"backbone": TINY_LPD, "beta": 0.5}},
                                  lr=3e-3, schedule="constant", log_images_every_n_epochs=0)
    trainer = pl.Trainer(accelerator="cpu", max_steps=20, logger=False, enable_progress_bar=False,
                         enable_model_summary=False, enable_checkpointing=False, default_root_dir=tmp_path,
                         num_sanity_val_steps=0, val_check_interval=20, check_val_every_n_epoch=None)
    data = ReconstructionDataModule(train=str(train), val=str(val), batch_size=4)
    head_weights = [p.detach().clone() for p in module.model.net.parameters()]
    trainer.fit(module, datamodule=data)
    metrics = trainer.callback_metrics
    assert {"train/uncertainty_loss", "val/miscoverage", "val/interval_width"} <= set(metrics)
    assert 0 <= float(metrics["val/miscoverage"]) <= 1 and float(metrics["val/interval_width"]) > 0
    assert all(not torch.equal(a, b) for a, b in zip(head_weights, module.model.net.parameters()))  # it trained


# ---- pirecon calibrate ------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def head_checkpoint(tmp_path_factory):
    from pirecon.data.simulate import simulate
    from pirecon.data.acquisition import read_acquisition
    from pirecon.training import ReconstructionModule

    root = tmp_path_factory.mktemp("calibrate")
    options = {"modality": "ct", "phantom": "ellipses", "image_size": 32, "num_angles": 10, "seed": 0}
    files = {split: simulate(root / f"{split}.h5", n=n, progress=False, split=split, **options)
             for split, n in (("calibration", 30), ("test", 12), ("train", 4))}
    physics = read_acquisition(files["test"]).physics
    module = ReconstructionModule({"class_path": "constant_width", "init_args": {"backbone": TINY_LPD,
                                                                                "width": 0.1}})
    module.set_physics("ct", physics.metadata["geometry"], physics.noise)
    checkpoint = {"state_dict": module.state_dict(), "hyper_parameters": dict(module.hparams)}
    module.on_save_checkpoint(checkpoint)
    torch.save(checkpoint, root / "head.ckpt")
    return root / "head.ckpt", files


def test_calibrate_writes_a_checkpoint_whose_intervals_are_calibrated(head_checkpoint, tmp_path, capsys):
    import pirecon
    from pirecon.cli import main

    path, files = head_checkpoint
    out = tmp_path / "calibrated.ckpt"
    assert main(["calibrate", "--checkpoint", str(path), "--data", str(files["calibration"]), "--out", str(out),
                 "--quiet"]) == 0
    printed = capsys.readouterr().out.strip()
    assert printed.startswith(f"wrote {out}: lambda-hat ") and "(RCPS, HB, 30 calibration images" in printed
    model = pirecon.load(out)
    calibration = model.calibration
    assert calibration["method"] == "rcps" and calibration["n"] == 30 and calibration["lambda_hat"] > 0
    recon = model.reconstruct(files["test"], progress=False)
    interval = recon.uncertainty
    assert interval.calibration == calibration and recon.provenance["uncertainty"]["calibration"] == calibration
    torch.testing.assert_close(interval.width, torch.full_like(interval.width, 0.1 * calibration["lambda_hat"]))
    uncalibrated = pirecon.load(path).reconstruct(files["test"], progress=False).uncertainty
    torch.testing.assert_close(interval.center, uncalibrated.center)


@pytest.mark.filterwarnings("ignore:.*no patient:UserWarning")
def test_calibrated_bounds_are_written_beside_the_image_in_nifti_and_dicom(head_checkpoint, tmp_path):
    import json

    import nibabel
    import pydicom

    import pirecon
    from pirecon.data.readers import read_dicom_series, read_nifti
    from pirecon.inference.calibrate import calibrate

    path, files = head_checkpoint
    calibrate(path, files["calibration"], tmp_path / "c.ckpt", progress=False)
    recon = pirecon.load(tmp_path / "c.ckpt").reconstruct(files["test"], progress=False)
    interval, lambda_hat = recon.uncertainty, recon.uncertainty.calibration["lambda_hat"]
    out = pirecon.save(recon, tmp_path / "r.nii.gz")
    for part, bound in (("lower", interval.lower), ("upper", interval.upper)):
        written = tmp_path / f"r_interval_{part}.nii.gz"
        np.testing.assert_allclose(read_nifti(written)[0], bound[:, 0].numpy(), atol=1e-6)
        stored = json.loads(nibabel.load(written).header.extensions[0].get_content())
        assert stored["part"] == f"interval_{part}" and stored["interval"]["calibration"]["lambda_hat"] == lambda_hat
    np.testing.assert_allclose(read_nifti(out)[0], recon.image[:, 0].numpy(), atol=1e-6)
    series = pirecon.save(recon, tmp_path / "dicom", format="dicom")
    for part, bound in (("lower", interval.lower), ("upper", interval.upper)):
        volume, _, _ = read_dicom_series(tmp_path / f"dicom_interval_{part}")
        first = pydicom.dcmread(sorted((tmp_path / f"dicom_interval_{part}").iterdir())[0])
        assert np.abs(volume - bound[:, 0].numpy()).max() <= 0.5 * float(first.RescaleSlope) + 1e-6
        assert first.SeriesDescription == f"pirecon interval {part}"
        assert f"interval {part} of a constant interval, calibrated lambda {lambda_hat:.4g} (alpha 0.1, delta 0.1)" \
            in first.DerivationDescription
        assert first.StudyInstanceUID == pydicom.dcmread(series[0]).StudyInstanceUID
    (tmp_path / "again_interval_upper.nii.gz").write_bytes(b"kept")
    with pytest.raises(PireconUserError, match=r"again_interval_upper.nii.gz: expected a new output path, found a "
                                                r"file that exists; pass overwrite=True"):
        pirecon.save(recon, tmp_path / "again.nii.gz")
    assert not (tmp_path / "again.nii.gz").exists() and not (tmp_path / "again_interval_lower.nii.gz").exists()
    assert (tmp_path / "again_interval_upper.nii.gz").read_bytes() == b"kept"


def test_calibrate_refuses_training_data_small_sets_and_models_without_a_head(head_checkpoint, tmp_path):
    from pirecon.inference.calibrate import calibrate

    path, files = head_checkpoint
    with pytest.raises(PireconUserError) as info:
        calibrate(path, files["train"], tmp_path / "a.ckpt", progress=False)
    assert str(info.value) == (f"{files['train']}: expected held-out calibration data (split 'calibration'), found "
                               "split 'train', a stream training runs read")
    with pytest.raises(PireconUserError, match=r"^calibration: expected at least 22 calibration images for "
                                                r"alpha=0.1, delta=0.1 with the HB bound, found 12$"):
        calibrate(path, files["test"], tmp_path / "b.ckpt", progress=False)
    assert not (tmp_path / "a.ckpt").exists() and not (tmp_path / "b.ckpt").exists()
    from pirecon.training import ReconstructionModule

    plain = ReconstructionModule(TINY_LPD)  # no head; the physics of the head's checkpoint
    physics = torch.load(path, weights_only=True)["pirecon_physics"]
    torch.save({"state_dict": plain.state_dict(), "hyper_parameters": dict(plain.hparams),
                "pirecon_physics": physics}, tmp_path / "plain.ckpt")
    with pytest.raises(PireconUserError) as info:
        calibrate(tmp_path / "plain.ckpt", files["calibration"], tmp_path / "c.ckpt", progress=False)
    assert str(info.value) == (f"{tmp_path / 'plain.ckpt'}: expected a model with an uncertainty head (gaussian_head, "
                               "quantile_head, mc_dropout, constant_width), found LearnedPrimalDual")


def test_calibration_units_are_volumes_for_files_that_are_not_simulated(head_checkpoint, tmp_path):
    """A raw file without a simulation record is one volume: one calibration unit (its slices' mean loss),
    kept whole on one side of every split."""
    import pirecon
    from pirecon.data.formats import read_ct_raw, write_ct_raw
    from pirecon.inference.calibrate import _unit_curves, calibrate

    path, files = head_checkpoint
    raw = read_ct_raw(files["calibration"])
    volumes = [write_ct_raw(tmp_path / f"volume_{k:02d}.h5", raw.sinogram[k:k + 2], raw.geometry, noise=raw.noise,
                            ground_truth=raw.ground_truth[k:k + 2], attrs={"split": "calibration"})
               for k in range(0, 28, 2)] + \
        [write_ct_raw(tmp_path / f"volume_{k:02d}.h5", raw.sinogram[k:k + 2], raw.geometry, noise=raw.noise,
                      ground_truth=raw.ground_truth[k:k + 2]) for k in range(28, 30, 2)]
    model = pirecon.load(path)
    curves, widths, _, units = _unit_curves(model, volumes, path, 8, False, keep=False)
    assert curves.shape == (15, len(curves[0])) and units == [1] * 15
    slices, _, _, slice_units = _unit_curves(model, [files["calibration"]], path, 8, False, keep=False)
    np.testing.assert_allclose(curves[0], slices[:2].mean(axis=0))  # a volume's loss: its slices' mean
    assert slice_units == [30]
    with pytest.raises(PireconUserError, match=r"^calibration: expected at least 22 calibration images .* found 15$"):
        calibrate(path, volumes, tmp_path / "v.ckpt", progress=False)
    with pytest.raises(PireconUserError, match=r"^--data: expected distinct calibration files, found the same file "
                                                r"twice$"):
        calibrate(path, [files["calibration"], files["calibration"]], tmp_path / "w.ckpt", progress=False)
    result = calibrate(path, [files["calibration"], *volumes], tmp_path / "x.ckpt", progress=False)
    stored = torch.load(tmp_path / "x.ckpt", weights_only=True)["pirecon_calibration"]
    assert result.n == 45 and stored["unit"] == "volumes" and [f["units"] for f in stored["files"]] == [30] + [1] * 15


def test_calibrate_measures_the_intervals_on_a_test_file_and_draws_them(head_checkpoint, tmp_path):
    from pirecon.inference.calibrate import calibrate

    path, files = head_checkpoint
    report = tmp_path / "report"
    result = calibrate(path, files["calibration"], tmp_path / "c.ckpt", test=files["test"], report=report,
                       progress=False)
    text = (report / "report.md").read_text()
    assert text.startswith(f"# Calibrated intervals: RCPS, alpha 0.1, delta 0.1\n\nlambda-hat {result.lambda_hat:.3f}")
    assert "| splits with test risk > alpha (100 random splits, calibration and test pooled) |" in text
    for figure in ("risk_violin.png", "reliability.png", "sparsification.png", "examples.png"):
        assert (report / figure).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ValueError, match=r"^--test, --report: expected both"):
        calibrate(path, files["calibration"], tmp_path / "d.ckpt", test=files["test"], progress=False)


def test_split_statistics_count_splits_that_certify_nothing():
    from pirecon.uncertainty.report import split_statistics

    interval, truth = _heteroscedastic(60)
    lambdas = np.linspace(0, 6, 61)
    losses = miscoverage_curves(interval, truth, lambdas)
    stats = split_statistics(losses, mean_width(interval).numpy(), lambdas, splits=10, calibration_fraction=0.5)
    assert stats["abstentions"] == 0 and len(stats["risks"]) == 10 and 0 <= stats["violation_fraction"] <= 1
    tight = split_statistics(losses, mean_width(interval).numpy(), lambdas[:3], splits=5)  # scales up to 0.2
    assert tight["abstentions"] == 5 and np.isnan(tight["mean_risk"])


def test_batched_mc_dropout_passes_draw_like_the_loop(ct_batch):
    """The T passes as one batch give the same distribution as T separate passes (same mean, similar spread)."""
    from pirecon.models.registry import build_model

    _, y, physics = ct_batch
    spec = {"class_path": "mc_dropout", "init_args": {"backbone": TINY_LPD, "samples": 64, "p": 0.2}}
    torch.manual_seed(0)
    batched = build_model(spec).eval()
    looped = build_model({**spec, "init_args": {**spec["init_args"], "batched": False}}).eval()
    looped.load_state_dict(batched.state_dict())
    torch.manual_seed(1)  # the dropout masks
    with torch.no_grad():
        a, b = batched(y, physics).uncertainty, looped(y, physics).uncertainty
    assert float((a.center - b.center).abs().mean()) < 0.25 * float(a.std.mean())
    assert float(a.std.mean()) == pytest.approx(float(b.std.mean()), rel=0.15)


def test_an_ensemble_of_gaussian_heads_splits_its_uncertainty(ct_batch, tmp_path, capsys):
    import pirecon
    from pirecon.cli import main
    from pirecon.training import ReconstructionModule

    _, y, physics = ct_batch
    paths, images = [], []
    for seed in (0, 1, 2):
        torch.manual_seed(seed)
        module = ReconstructionModule({"class_path": "gaussian_head", "init_args": {"backbone": TINY_LPD}})
        module.set_physics("ct", physics.metadata["geometry"], physics.noise)
        checkpoint = {"state_dict": module.state_dict(), "hyper_parameters": dict(module.hparams)}
        module.on_save_checkpoint(checkpoint)
        paths.append(tmp_path / f"member{seed}.ckpt")
        torch.save(checkpoint, paths[-1])
        with torch.no_grad():
            images.append(module.eval()(y, physics).image)
    out = tmp_path / "ensemble.ckpt"
    assert main(["ensemble", "--checkpoints", *map(str, paths), "--out", str(out)]) == 0
    assert capsys.readouterr().out.strip() == f"wrote {out}: a deep ensemble of 3 members"
    recon = pirecon.load(out).reconstruct(y, physics=physics, progress=False)
    interval = recon.uncertainty
    assert interval.kind == "ensemble" and set(interval.parts) == {"aleatoric_std", "epistemic_std"}
    torch.testing.assert_close(recon.image, torch.stack(images).mean(dim=0))
    torch.testing.assert_close(interval.parts["epistemic_std"] ** 2, torch.stack(images).var(dim=0, unbiased=False))
    torch.testing.assert_close(interval.std ** 2, interval.parts["aleatoric_std"] ** 2 +
                               interval.parts["epistemic_std"] ** 2)
    assert float(interval.parts["epistemic_std"].mean()) > 0
    assert main(["ensemble", "--checkpoints", str(paths[0]), "--out", str(tmp_path / "one.ckpt")]) == 2
    assert capsys.readouterr().err.strip() == ("pirecon ensemble: error: --checkpoints: expected at least 2 "
                                               "checkpoints, found 1")


def test_the_model_card_states_the_calibration_and_its_guarantee():
    from pirecon.inference.card import ModelCard

    calibration = {"method": "rcps", "lambda_hat": 1.37, "alpha": 0.1, "delta": 0.1, "n": 200, "risk_hat": 0.061,
                   "upper_bound": 0.0993, "bound": "hb", "unit": "images",
                   "files": [{"path": "cal.h5", "sha256": "ab" * 32, "units": 200}]}
    text = ModelCard({"model": {"class_path": "quantile_head"},
                      "metrics": {"validation": {"psnr": 30.0}, "calibration": calibration}}).to_markdown()
    assert ("RCPS (HB bound): intervals scaled by lambda-hat 1.37 on 200 held-out calibration images (empirical "
            "risk 0.061, bound 0.0993). Guarantee: the expected fraction of pixels outside the interval is at most "
            "0.1 with probability at least 0.9 over the calibration set, for test data exchangeable with the "
            "calibration data.") in text
    assert "- `cal.h5` (sha256 `abababababababab`, 200 units)" in text
    assert "| Calibration" not in text  # not a column of the metrics table
