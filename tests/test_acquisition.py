"""The one door from raw data to (y, Physics): files, slices and batches, and physics comparisons."""

import h5py
import numpy as np
import pytest
import torch

from conftest import relative_error
from pirecon.ct import RayTransform, fbp, lpd_ellipses_geometry
from pirecon.mri import NUFFTOperator, SenseOperator, birdcage_maps, fft2c, radial_trajectory
from pirecon.noise import GaussianNoise
from pirecon.phantoms import shepp_logan
from pirecon.data import acquisition, formats
from pirecon.data.acquisition import (BatchPhysics, PhysicsMismatchError, check_same_physics, describe_physics,
                                      physics_from_file, read_acquisition)
from pirecon.errors import PireconUserError


def test_ct_physics_from_file(tmp_path):
    g = lpd_ellipses_geometry()
    x = shepp_logan((128, 128))
    noise = GaussianNoise(relative=0.05)
    clean = RayTransform(g)(x)
    path = formats.write_ct_raw(tmp_path / "ct.h5", noise(clean, seed=0)[:, 0], g, noise=noise,
                                ground_truth=x[:, 0])
    physics = physics_from_file(path)
    assert physics.modality == "ct" and physics.metadata["geometry"] == g
    assert physics.noise == noise
    torch.testing.assert_close(physics(x), clean)
    y = torch.from_numpy(formats.read_ct_raw(path).sinogram)[:, None]
    assert relative_error(fbp(y, physics.operator, "hann"), fbp(clean, g, "hann")) < 0.2
    assert not torch.equal(physics.simulate(x, seed=1), physics.simulate(x, seed=2))
    torch.testing.assert_close(physics.simulate(x, seed=1), physics.simulate(x, seed=1))


def _complex_image(n):
    return shepp_logan((n, n)).to(torch.complex64)


def test_mri_physics_from_file_with_maps_and_mask(tmp_path):
    n = 32
    maps = birdcage_maps(4, (n, n))[None].expand(2, 4, n, n).contiguous()
    mask = torch.zeros(2, 1, 1, n)
    mask[..., ::2] = 1
    mask[..., n // 2 - 3:n // 2 + 3] = 1
    x = _complex_image(n).expand(2, 1, n, n)
    k = SenseOperator(maps, mask)(x)
    path = formats.write_mri_raw(tmp_path / "mri.h5", k, mask=mask, coil_maps=maps, ground_truth=x[:, 0])
    physics = physics_from_file(path)
    assert isinstance(physics.operator, SenseOperator) and physics.metadata["coil_maps_source"] == "file"
    torch.testing.assert_close(physics(x), k)
    one = physics_from_file(path, slices=slice(1, 2))
    torch.testing.assert_close(one(x[1:2]), k[1:2])


def test_plain_fastmri_file_gets_espirit_maps(tmp_path):
    n = 48
    maps = birdcage_maps(6, (n, n))
    x = _complex_image(n)
    k = fft2c(maps * x)  # fully sampled, (1, 6, n, n)
    with h5py.File(tmp_path / "file_brain.h5", "w") as f:
        f.create_dataset("kspace", data=k.numpy())
        f.create_dataset("reconstruction_rss", data=np.abs(x.numpy()[:, 0]).astype(np.float32))
        f.create_dataset("ismrmrd_header", data=np.bytes_(b"<ismrmrdHeader/>"))
        f.attrs["acquisition"] = "AXT2"
    physics = physics_from_file(tmp_path / "file_brain.h5")
    assert physics.metadata["coil_maps_source"] == "espirit"
    recon = physics.adjoint(k)
    inside = x.abs() > 0.1
    # the matched-filter combination with ESPIRiT maps recovers |x| inside the object
    assert relative_error(recon.abs()[inside], x.abs()[inside]) < 0.05


def test_non_cartesian_file(tmp_path):
    n = 32
    traj = radial_trajectory(24, 64)[0]
    maps = birdcage_maps(4, (n, n))[None]
    x = _complex_image(n)
    A = NUFFTOperator(traj, (n, n), coil_maps=maps)
    path = formats.write_mri_raw(tmp_path / "radial.h5", A(x), trajectory=traj, coil_maps=maps, ground_truth=x[:, 0])
    physics = physics_from_file(path)
    assert isinstance(physics.operator, NUFFTOperator)
    torch.testing.assert_close(physics(x), A(x))


def test_reconstruction_files_have_no_physics(tmp_path):
    path = formats.write_reconstruction(tmp_path / "rec.h5", np.zeros((1, 8, 8), np.float32), provenance={"method": "fbp"})
    with pytest.raises(ValueError, match="expected a raw CT or MRI file, found a 'reconstruction' file"):
        physics_from_file(path)


def test_read_acquisition_reads_an_mri_file_once_and_shapes_its_measurements(tmp_path, monkeypatch):
    n = 32
    maps = birdcage_maps(4, (n, n))[None].expand(3, 4, n, n).contiguous()
    x = _complex_image(n).expand(3, 1, n, n)
    k = SenseOperator(maps, None)(x)
    path = formats.write_mri_raw(tmp_path / "mri.h5", k, coil_maps=maps, ground_truth=x[:, 0])
    calls = []
    real = formats.read_mri_raw
    monkeypatch.setattr(formats, "read_mri_raw", lambda p: calls.append(p) or real(p))
    found = read_acquisition(path, slices=slice(1, 3))
    assert len(calls) == 1
    assert found.y.shape == (2, 4, n, n) and found.y.dtype == torch.complex64
    torch.testing.assert_close(found.y, k[1:3])
    torch.testing.assert_close(found.ground_truth, x[1:3])
    torch.testing.assert_close(found.physics(x[1:3]), k[1:3])
    assert found.source == path


def test_read_acquisition_of_a_ct_file_matches_the_file(tmp_path):
    g = lpd_ellipses_geometry()
    x = shepp_logan((128, 128)).expand(2, 1, 128, 128)
    noise = GaussianNoise(relative=0.05)
    y = noise(RayTransform(g)(x), seed=0)
    path = formats.write_ct_raw(tmp_path / "ct.h5", y[:, 0], g, noise=noise, ground_truth=x[:, 0])
    found = read_acquisition(path)
    torch.testing.assert_close(found.y, y)
    torch.testing.assert_close(found.ground_truth, x)
    assert found.physics.metadata["geometry"] == g and found.physics.noise == noise
    assert found.description() == describe_physics("ct", g, noise)


def test_batch_physics_is_the_files_physics():
    g = lpd_ellipses_geometry()
    noise = GaussianNoise(relative=0.05)
    builder = BatchPhysics("ct", g, noise)
    physics = builder({})
    assert physics is builder({"sinogram": torch.zeros(1)})  # one operator for every CT batch
    assert physics.metadata["geometry"] == g and physics.noise == noise
    assert builder.description() == describe_physics("ct", g, noise)
    assert acquisition.measurement({"sinogram": torch.ones(1)}).item() == 1
    with pytest.raises(ValueError, match=r"^batch: expected a 'sinogram' or 'kspace' entry, found keys \['x'\]$"):
        acquisition.measurement({"x": 1})


def test_a_physics_mismatch_names_both_sides():
    g = lpd_ellipses_geometry()
    other = type(g)((64, 64), pixel_size=2.0, num_angles=30)
    with pytest.raises(ValueError, match=r"^physics mismatch in geometry: the checkpoint a.ckpt has ParallelBeam2D\("
                                         r"image_shape=\(128, 128\), .*\), data.h5 has ParallelBeam2D\("
                                         r"image_shape=\(64, 64\), .*\)$"):
        check_same_physics(describe_physics("ct", g), describe_physics("ct", other),
                           stored_name="the checkpoint a.ckpt", found_name="data.h5")
    half = type(g)((128, 128), pixel_size=1.0, angles=[a / 2 for a in g.angles])
    with pytest.raises(ValueError, match=r"physics mismatch in geometry: .* \(differs in angles\), .* \(differs in "
                                         r"angles\)$"):
        check_same_physics(describe_physics("ct", g), describe_physics("ct", half), stored_name="a", found_name="b")
    with pytest.raises(ValueError, match=r"^physics mismatch in noise: a has GaussianNoise\(relative=0.05\), "
                                         r"b has none$"):
        check_same_physics(describe_physics("ct", g, GaussianNoise(relative=0.05)), describe_physics("ct", g),
                           stored_name="a", found_name="b")
    with pytest.raises(PhysicsMismatchError, match=r"^physics mismatch in modality: a has 'ct', b has 'mri'$") as err:
        check_same_physics(describe_physics("ct", g), describe_physics("mri"), stored_name="a", found_name="b")
    assert isinstance(err.value, PireconUserError)  # the command line prints it as one line, exit status 2
    check_same_physics(describe_physics("ct", g), describe_physics("ct", lpd_ellipses_geometry()),
                       stored_name="a", found_name="b")


def test_mri_physics_simulates_complex_noise_only_where_sampled(tmp_path):
    from pirecon.noise import ComplexGaussianNoise

    n, sigma = 32, 0.05
    maps = birdcage_maps(4, (n, n))[None]
    mask = torch.zeros(1, 1, 1, n)
    mask[..., ::2] = 1
    x = _complex_image(n)
    clean = SenseOperator(maps, mask)(x)
    path = formats.write_mri_raw(tmp_path / "mri.h5", clean, mask=mask, coil_maps=maps, ground_truth=x[:, 0],
                                 noise=ComplexGaussianNoise(sigma))
    physics = physics_from_file(path)
    assert physics.noise == ComplexGaussianNoise(sigma)
    noisy = physics.simulate(x, seed=0)
    residual = noisy - clean
    assert residual[..., 1::2].abs().max() == 0  # unsampled lines stay zero
    sampled = residual[..., ::2]
    assert abs(float(sampled.abs().pow(2).mean()) / sigma ** 2 - 1) < 0.05  # E|n|^2 = sigma^2
    torch.testing.assert_close(physics.simulate(x, seed=0), noisy)
