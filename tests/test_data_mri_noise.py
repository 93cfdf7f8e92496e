"""MRI raw files (data_specs/mri_raw.md): the stored k-space noise model (attribute ``noise`` and dataset
``noise_covariance``) and coil maps stored once when every slice shares them."""

import json

import h5py
import numpy as np
import pytest
import torch

from pirecon.data.formats import read_mri_noise, read_mri_raw, write_mri_raw
from pirecon.data.simulate import Simulator, simulate
from pirecon.data.validate import SpecError, validate
from pirecon.noise import ComplexGaussianNoise, GaussianNoise

N, COILS, H, W = 3, 4, 12, 10
MASK = np.array([1, 0, 0, 1, 1, 1, 0, 1, 0, 0], dtype=np.float32)


def complex_normal(shape, seed=0):
    r = np.random.default_rng(seed)
    return (r.standard_normal(shape) + 1j * r.standard_normal(shape)).astype(np.complex64)


def psi(coils=COILS, seed=0):
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(coils, coils, dtype=torch.complex128, generator=g)
    m = a @ a.mH / coils + 0.5 * torch.eye(coils, dtype=torch.complex128)
    return (m + m.mH) / 2


def write(path, **kwargs):
    options = dict(mask=MASK, coil_maps=complex_normal((N, COILS, H, W), 1))
    options.update(kwargs)
    return write_mri_raw(path, complex_normal((N, COILS, H, W)) * MASK, **options)


# --------------------------------------------------------------------------
# the noise model in the file
# --------------------------------------------------------------------------

@pytest.mark.parametrize("model", [ComplexGaussianNoise(0.05), ComplexGaussianNoise(0.5, covariance=psi())],
                         ids=["independent", "correlated"])
def test_noise_model_round_trip(tmp_path, model):
    path = write(tmp_path / "noisy.h5", noise=model)
    summary = validate(path)
    with h5py.File(path) as f:
        stored = json.loads(f.attrs["noise"])
        assert stored == {"type": "complex_gaussian", "format_version": 1, "sigma": model.sigma}  # no covariance
        if model.covariance is None:
            assert "noise_covariance" not in f
        else:
            ds = f["noise_covariance"]
            assert ds.shape == (COILS, COILS) and ds.dtype == np.complex128
            np.testing.assert_array_equal(ds[()], model.covariance.numpy())
    raw = read_mri_raw(path)
    assert raw.noise == model and read_mri_noise(path) == model
    assert "noise" not in raw.attrs  # reserved, not a user attribute
    if model.covariance is not None:
        assert torch.equal(raw.noise.covariance, model.covariance)  # exact
    assert summary["noise"] == model.to_dict()
    # the model given as its dict
    assert read_mri_noise(write(tmp_path / "dict.h5", noise=model.to_dict())) == model


def test_noise_absent_and_non_cartesian(tmp_path):
    path = write(tmp_path / "clean.h5")
    assert read_mri_raw(path).noise is None and read_mri_noise(path) is None and validate(path)["noise"] is None
    traj = np.random.default_rng(0).uniform(-3, 3, (2, 40)).astype(np.float32)
    path = write_mri_raw(tmp_path / "radial.h5", complex_normal((N, COILS, 40)), trajectory=traj,
                         coil_maps=complex_normal((COILS, H, W), 1), noise=ComplexGaussianNoise(1.0, covariance=psi()))
    assert read_mri_noise(path) == ComplexGaussianNoise(1.0, covariance=psi())


def test_files_with_only_noise_sigma_are_read_as_complex_gaussian(tmp_path):
    """Simulated files written before the noise model was stored carry a user attribute noise_sigma."""
    path = write(tmp_path / "old.h5", attrs={"noise_sigma": 0.02, "acceleration": 4.0})
    assert read_mri_raw(path).noise == ComplexGaussianNoise(0.02) and read_mri_noise(path) == ComplexGaussianNoise(0.02)
    assert read_mri_raw(path).attrs["noise_sigma"] == 0.02
    assert read_mri_noise(write(tmp_path / "old0.h5", attrs={"noise_sigma": 0.0})) is None


def test_writer_rejects_other_noise_models(tmp_path):
    with pytest.raises(ValueError, match=r"^noise: expected a ComplexGaussianNoise \(complex k-space noise\), its "
                                         r"to_dict\(\) or None, found GaussianNoise$"):
        write(tmp_path / "a.h5", noise=GaussianNoise(sigma=0.1))
    with pytest.raises(ValueError, match=r"^noise: expected a covariance of 4 coils \(as kspace\), found a 3x3 "
                                         r"covariance$"):
        write(tmp_path / "b.h5", noise=ComplexGaussianNoise(1.0, covariance=psi(3)))
    with pytest.raises(ValueError, match=r"^noise: expected a valid noise model dict, found one that fails"):
        write(tmp_path / "c.h5", noise={"type": "complex_gaussian", "sigma": -1.0})
    with pytest.raises(ValueError, match=r"^attrs\['noise'\]: expected a key other than the reserved"):
        write(tmp_path / "d.h5", attrs={"noise": "gaussian"})
    assert not any(tmp_path.iterdir())


def _break(path, edit):
    with h5py.File(path, "a") as f:
        edit(f)
    with pytest.raises(SpecError) as info:
        validate(path)
    with pytest.raises(SpecError):
        read_mri_raw(path)
    return str(info.value)


def test_broken_noise_in_files(tmp_path):
    def fresh(name):
        return write(tmp_path / name, noise=ComplexGaussianNoise(0.5, covariance=psi()))

    def two_coils(f):
        del f["noise_covariance"]
        f.create_dataset("noise_covariance", data=np.eye(2, dtype=np.complex128))

    path = fresh("a.h5")
    message = _break(path, two_coils)
    assert message == f"{path}: noise_covariance: expected shape (4, 4) (coils of kspace), found (2, 2)"

    path = fresh("b.h5")
    not_pd = np.diag([1.0, 1.0, 1.0, -1.0]).astype(np.complex128)
    message = _break(path, lambda f: f["noise_covariance"].write_direct(not_pd))
    assert message == (f"{path}: noise_covariance: expected a valid noise model, found one that fails (covariance: "
                       f"expected a positive definite matrix, found smallest eigenvalue -1)")

    path = fresh("c.h5")
    message = _break(path, lambda f: f.attrs.__setitem__("noise", json.dumps(GaussianNoise(sigma=1.0).to_dict())))
    assert message == f"{path}: attrs/noise/type: expected 'complex_gaussian' (k-space noise), found 'gaussian'"

    path = fresh("d.h5")
    message = _break(path, lambda f: f.attrs.__delitem__("noise"))
    assert message == f"{path}: noise_covariance: expected no such dataset without attrs/noise, found a dataset"

    path = fresh("e.h5")
    message = _break(path, lambda f: f.attrs.__setitem__("noise", json.dumps(
        ComplexGaussianNoise(0.5, covariance=psi()).to_dict())))
    assert message == (f"{path}: attrs/noise/covariance: expected no such key (the dataset noise_covariance holds it), "
                       f"found a covariance")

    path = fresh("f.h5")
    message = _break(path, lambda f: f["noise_covariance"].write_direct(np.ones((COILS, COILS), np.complex128) * 1j))
    assert message.startswith(f"{path}: noise_covariance: expected a valid noise model, found one that fails "
                              f"(covariance: expected a Hermitian matrix")

    path = fresh("g.h5")
    message = _break(path, lambda f: f.attrs.__setitem__("noise", "{not json"))
    assert message.startswith(f"{path}: attrs/noise: expected a JSON object, found invalid JSON")


# --------------------------------------------------------------------------
# coil maps shared by every slice
# --------------------------------------------------------------------------

def test_shared_coil_maps_are_stored_once(tmp_path):
    maps = complex_normal((COILS, H, W), 1)
    for given in (maps, np.broadcast_to(maps, (N, COILS, H, W))):  # (coils, H, W), or per slice but all equal
        path = write(tmp_path / "shared.h5", coil_maps=given)
        with h5py.File(path) as f:
            assert f["coil_maps"].shape == (COILS, H, W)
        assert validate(path)["num_slices"] == N
        raw = read_mri_raw(path)
        assert raw.coil_maps.shape == (N, COILS, H, W) and raw.coil_maps.flags.writeable
        for i in range(N):
            np.testing.assert_array_equal(raw.coil_maps[i], maps)
    one = read_mri_raw(write_mri_raw(tmp_path / "one.h5", complex_normal((1, COILS, H, W)), coil_maps=maps))
    assert one.coil_maps.shape == (1, COILS, H, W) and one.coil_maps.flags.writeable
    # maps that differ between slices stay per slice
    per_slice = complex_normal((N, COILS, H, W), 5)
    path = write(tmp_path / "per_slice.h5", coil_maps=per_slice)
    with h5py.File(path) as f:
        assert f["coil_maps"].shape == (N, COILS, H, W)
    np.testing.assert_array_equal(read_mri_raw(path).coil_maps, per_slice)


def test_shared_coil_maps_of_the_wrong_shape_are_refused(tmp_path):
    path = write(tmp_path / "bad.h5", coil_maps=complex_normal((COILS, H, W), 1))
    with h5py.File(path, "a") as f:
        del f["coil_maps"]
        f.create_dataset("coil_maps", data=complex_normal((COILS + 1, H, W)))
    with pytest.raises(SpecError) as info:
        validate(path)
    assert str(info.value) == (f"{path}: coil_maps: expected shape (N, 4, 12, 10) or (4, 12, 10) (shared by every "
                               f"slice) (coils of kspace, attrs/image_shape), found (5, 12, 10)")
    with pytest.raises(ValueError, match=r"^coil_maps: expected shape \(N, 4, 12, 10\) or \(4, 12, 10\)"):
        write(tmp_path / "w.h5", coil_maps=complex_normal((COILS, H, W + 1)))


def test_simulated_mri_file_stores_maps_once_and_its_noise_model(tmp_path):
    n = 6
    path = simulate(tmp_path / "sim.h5", modality="mri", n=n, seed=0, image_size=32, coils=4, noise="gaussian:0.02",
                    progress=False)
    validate(path)
    with h5py.File(path) as f:
        assert f["coil_maps"].shape == (4, 32, 32)
        maps_bytes = f["coil_maps"].id.get_storage_size()  # compressed
        assert json.loads(f.attrs["noise"]) == {"type": "complex_gaussian", "format_version": 1, "sigma": 0.02}
        assert "noise_sigma" not in f.attrs
    raw = read_mri_raw(path)
    assert raw.noise == ComplexGaussianNoise(0.02) and read_mri_noise(path) == ComplexGaussianNoise(0.02)
    maps = Simulator("mri", image_size=32, coils=4).coil_maps.numpy()
    assert raw.coil_maps.shape == (n, 4, 32, 32)
    for i in range(n):
        np.testing.assert_array_equal(raw.coil_maps[i], maps)
    # the same file with one copy of the maps per slice (the former layout): still valid and read the same, larger
    old = tmp_path / "per_slice.h5"
    with h5py.File(path) as src, h5py.File(old, "w") as dst:
        for key, value in src.attrs.items():
            dst.attrs[key] = value
        for name in src:
            data = src[name][()]
            if name == "coil_maps":
                data = np.broadcast_to(data, (n, *data.shape))
            chunks = (1, *data.shape[1:]) if np.ndim(data) >= 2 else None
            options = dict(chunks=chunks, compression="gzip", compression_opts=4, shuffle=True) if chunks else {}
            dst.create_dataset(name, data=data, **options)
    validate(old)
    np.testing.assert_array_equal(read_mri_raw(old).coil_maps, raw.coil_maps)
    with h5py.File(old) as f:
        per_slice_bytes = f["coil_maps"].id.get_storage_size()
    assert maps_bytes < 1.1 * per_slice_bytes / n  # one copy instead of n
    assert old.stat().st_size - path.stat().st_size > 0.9 * (per_slice_bytes - maps_bytes)
    # noise-free: no model
    clean = simulate(tmp_path / "clean.h5", modality="mri", n=2, seed=0, image_size=32, coils=4, progress=False)
    assert read_mri_noise(clean) is None
