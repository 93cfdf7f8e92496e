"""The out-of-distribution flag: data consistency relative to the noise level, thresholds from in-distribution
slices, and the flag with every reconstructed slice."""

import numpy as np
import pytest
import torch

from pirecon.errors import ArgumentError
from pirecon.inference.ood import apply_ood, consistency, fit_ood


def test_the_truth_is_consistent_with_its_data_to_the_noise_level(tmp_path):
    from pirecon.data.acquisition import read_acquisition
    from pirecon.data.simulate import simulate

    for options in ({"modality": "ct", "image_size": 64, "num_angles": 20, "noise": "gaussian:0.05"},
                    {"modality": "ct", "image_size": 64, "num_angles": 20, "noise": "poisson:10000"},
                    {"modality": "mri", "image_size": 64, "coils": 4, "noise": "gaussian:0.01"}):
        path = simulate(tmp_path / f"{options['modality']}{len(options)}.h5", n=4, progress=False, split="test",
                        **options)
        acquisition = read_acquisition(path)
        with __import__("h5py").File(path, "r") as f:
            truth = torch.from_numpy(f["ground_truth"][()][:, None])
        physics = acquisition.physics
        y = acquisition.y
        ratio = consistency(y, physics, truth.to(torch.complex64) if y.is_complex() else truth)
        assert ratio.shape == (4,) and ratio.numpy() == pytest.approx(np.ones(4), rel=0.15), options
        blurred = consistency(y, physics, torch.zeros_like(truth, dtype=truth.dtype))
        assert (blurred > 10).all()  # an image that explains nothing of the data


def test_the_flag_raises_about_alpha_of_in_distribution_slices_and_catches_a_shift():
    rng = np.random.default_rng(0)
    thresholds = fit_ood({"consistency": rng.lognormal(0, 0.2, 2000), "width": rng.normal(1, 0.1, 2000)}, alpha=0.1)
    assert thresholds["n"] == 2000 and thresholds["consistency"][0] < 1 < thresholds["consistency"][1]
    fresh = {"consistency": rng.lognormal(0, 0.2, 4000), "width": rng.normal(1, 0.1, 4000)}
    assert 0.07 < apply_ood(fresh, thresholds).mean() < 0.12
    shifted = {"consistency": rng.lognormal(1.0, 0.2, 100), "width": rng.normal(1, 0.1, 100)}
    assert apply_ood(shifted, thresholds).mean() > 0.95
    wider = {"consistency": rng.lognormal(0, 0.2, 100), "width": rng.normal(1.5, 0.1, 100)}
    assert apply_ood(wider, thresholds).mean() > 0.95
    with pytest.raises(ArgumentError, match=r"^features: expected the consistency of at least 10 in-distribution "
                                            r"slices, found 3$"):
        fit_ood({"consistency": [1.0, 1.1, 0.9]})


def test_a_reconstructor_calibrated_for_ood_flags_every_slice(tmp_path):
    from pirecon.data.simulate import simulate
    from pirecon.inference import reconstructor

    options = {"modality": "ct", "image_size": 64, "num_angles": 20, "noise": "gaussian:0.05", "progress": False}
    calibration = simulate(tmp_path / "cal.h5", n=40, split="calibration", **options)
    same = simulate(tmp_path / "test.h5", n=20, split="test", **options)
    fewer = simulate(tmp_path / "fewer.h5", n=20, split="test", **{**options, "num_angles": 6})
    fbp = reconstructor("fbp")
    assert "flag" not in fbp.reconstruct(same, progress=False, ood=True).provenance["ood"]  # not calibrated yet
    thresholds = fbp.calibrate_ood(calibration, progress=False)
    assert fbp.ood_calibration == thresholds and thresholds["n"] == 40
    flags = fbp.reconstruct(same, progress=False).provenance["ood"]["flag"]
    assert len(flags) == 20 and sum(flags) <= 6
    shifted = fbp.reconstruct(fewer, progress=False, physics_mismatch="use_data").provenance["ood"]
    assert sum(shifted["flag"]) == 20 and shifted["thresholds"] == thresholds
