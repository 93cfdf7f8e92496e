"""Tests of pirecon.noise: additive Gaussian, transmission Poisson and complex (MRI) Gaussian noise."""

import json
import math
import re

import numpy as np
import pytest
import torch

from pirecon.noise import (MAX_ZERO_COUNT_FRACTION, MU_WATER_PER_MM, ComplexGaussianNoise, GaussianNoise, NoiseModel,
                           TransmissionPoisson, noise_from_dict)

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


def _scaled_data(scales=(0.5, 3.0, 40.0), shape=(1, 128, 256), seed=0):
    g = torch.Generator().manual_seed(seed)
    y = torch.rand((len(scales), *shape), generator=g, dtype=torch.float64) + 0.2
    return y * torch.tensor(scales, dtype=torch.float64).view(-1, 1, 1, 1)


# --------------------------------------------------------------------------
# Gaussian
# --------------------------------------------------------------------------

def test_gaussian_relative_std_is_per_sample():
    """LPD-ellipses: std = 5% of mean |y|, computed separately for each sample."""
    y = _scaled_data()
    model = GaussianNoise(relative=0.05)
    noisy = model(y, seed=0)
    resid = noisy - y
    target = 0.05 * y.abs().mean(dim=(1, 2, 3))
    torch.testing.assert_close(resid.std(dim=(1, 2, 3)) / target,
                               torch.ones(3, dtype=torch.float64), rtol=0, atol=0.02)
    assert resid.mean(dim=(1, 2, 3)).abs().max() < 0.02 * target.max()
    std = model.std(y)
    assert std.shape == (3, 1, 1, 1)
    torch.testing.assert_close(std.flatten(), target)


def test_gaussian_relative_uses_absolute_values():
    y = torch.tensor([[1.0, -3.0], [2.0, 2.0]], dtype=torch.float64)
    torch.testing.assert_close(GaussianNoise(relative=0.1).std(y).flatten(),
                               torch.tensor([0.2, 0.2], dtype=torch.float64))


def test_gaussian_absolute_sigma():
    y = torch.zeros(4, 1, 100, 100) + 7.0
    resid = GaussianNoise(sigma=0.3)(y, seed=1) - y
    assert resid.std().item() == pytest.approx(0.3, rel=0.01)
    assert abs(resid.mean().item()) < 0.005
    # independent of the data scale
    resid2 = GaussianNoise(sigma=0.3)(100 * y, seed=1) - 100 * y
    assert resid2.std().item() == pytest.approx(0.3, rel=0.01)


def test_gaussian_draws_on_cpu_from_seed():
    """noise = y + sigma * randn from a CPU generator seeded with the int seed."""
    y = torch.randn(2, 3, 5)
    expected = y + 0.5 * torch.randn(y.shape, generator=torch.Generator().manual_seed(42))
    torch.testing.assert_close(GaussianNoise(sigma=0.5).noise(y, seed=42), expected, rtol=0, atol=0)


def test_gaussian_seeds_and_generators():
    y = torch.randn(2, 1, 16, 16)
    m = GaussianNoise(relative=0.05)
    assert torch.equal(m(y, seed=3), m(y, seed=3))
    assert not torch.equal(m(y, seed=3), m(y, seed=4))
    g1, g2 = torch.Generator().manual_seed(8), torch.Generator().manual_seed(8)
    a = m(y, seed=g1)
    assert torch.equal(a, m(y, seed=g2))
    assert not torch.equal(a, m(y, seed=g1))  # the generator advanced
    assert not torch.equal(m(y), m(y))  # fresh entropy


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_gaussian_keeps_shape_and_dtype(dtype):
    for shape in [(), (5,), (2, 3), (2, 1, 4, 6, 3)]:
        y = torch.ones(shape, dtype=dtype)
        out = GaussianNoise(relative=0.05)(y, seed=0)
        assert out.shape == y.shape and out.dtype == dtype and out.device == y.device
    assert GaussianNoise(relative=0.1).std(torch.tensor(-3.0)).item() == pytest.approx(0.3)


@pytest.mark.parametrize("model", [GaussianNoise(sigma=0.1), GaussianNoise(relative=0.05)])
def test_gaussian_is_differentiable_in_y(model):
    y = torch.randn(2, 8, requires_grad=True)
    model(y, seed=0).sum().backward()
    torch.testing.assert_close(y.grad, torch.ones_like(y))


# --------------------------------------------------------------------------
# Transmission Poisson
# --------------------------------------------------------------------------

def test_poisson_counts_mean_and_variance():
    I0 = 1000.0
    levels = torch.tensor([0.0, 0.5, 1.0, 2.0, 4.0], dtype=torch.float64)
    y = levels.view(-1, 1).expand(5, 20000).contiguous()
    counts = TransmissionPoisson(I0).counts(y, seed=0)
    assert counts.dtype == torch.float64 and counts.shape == y.shape
    assert torch.equal(counts, counts.round()) and counts.min() >= 0
    expected = I0 * torch.exp(-levels)
    torch.testing.assert_close(counts.mean(1), expected, rtol=0.01, atol=0)
    torch.testing.assert_close(counts.var(1), expected, rtol=0.05, atol=0)  # Poisson


def test_poisson_zero_counts_give_the_cap():
    """The zero-count rule, on deliberately starved rays (refused unless allowed, see below)."""
    I0, zero = 500.0, 0.1
    m = TransmissionPoisson(I0, zero_count=zero, allow_photon_starvation=True)
    y = torch.tensor([[1000.0, 0.0, 50.0, 1.0]], dtype=torch.float64)
    counts = m.counts(y, seed=0)
    out = m(y, seed=0)
    cap = math.log(I0 / zero)
    assert counts[0, 0] == 0 and counts[0, 2] == 0
    assert out[0, 0].item() == pytest.approx(cap, rel=1e-14)
    assert out[0, 2].item() == pytest.approx(cap, rel=1e-14)
    assert (out[0, [1, 3]] < cap).all()
    assert out.max().item() <= cap + 1e-12
    # float32: exactly the float32 value of log(I0 / zero_count)
    out32 = m(torch.full((3, 7), 1e3), seed=1)
    assert out32.dtype == torch.float32
    assert torch.equal(out32, torch.full((3, 7), cap, dtype=torch.float32))
    # a different zero_count moves the cap
    out2 = TransmissionPoisson(I0, zero_count=1.0, allow_photon_starvation=True)(y, seed=0)
    assert out2[0, 0].item() == pytest.approx(math.log(I0), rel=1e-14)


def test_poisson_post_log_is_consistent_with_counts():
    m = TransmissionPoisson(200.0)
    y = torch.rand(3, 1, 10, 12) * 3
    counts = m.counts(y, seed=5)
    expected = -torch.log(counts.double().clamp_min(0.1) / 200.0)
    torch.testing.assert_close(m(y, seed=5), expected.float())
    torch.testing.assert_close(m.post_log(counts), expected.float())


def test_poisson_post_log_unbiased_at_high_dose():
    levels = torch.tensor([0.1, 1.0, 3.0], dtype=torch.float64)
    y = levels.view(-1, 1).expand(3, 10000).contiguous()
    out = TransmissionPoisson(1e6)(y, seed=2)
    torch.testing.assert_close(out.mean(1), levels, rtol=0, atol=1e-3)
    # post-log std ~ 1 / sqrt(I0 exp(-y))
    torch.testing.assert_close(out.std(1), 1 / torch.sqrt(1e6 * torch.exp(-levels)), rtol=0.05, atol=0)


def test_poisson_seeds():
    m = TransmissionPoisson(100.0)
    y = torch.rand(2, 50)
    assert torch.equal(m(y, seed=1), m(y, seed=1))
    assert not torch.equal(m(y, seed=1), m(y, seed=2))
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    assert torch.equal(m.counts(y, seed=g1), m.counts(y, seed=g2))
    expected = torch.poisson(100.0 * torch.exp(-y.double()), generator=torch.Generator().manual_seed(9))
    torch.testing.assert_close(m.counts(y, seed=9), expected.float(), rtol=0, atol=0)


# --------------------------------------------------------------------------
# Transmission Poisson: physical units, photon starvation
# --------------------------------------------------------------------------

STARVED = re.escape("y: TransmissionPoisson: ")


def test_poisson_refuses_photon_starvation_unless_allowed():
    m = TransmissionPoisson(500.0)
    y = torch.tensor([[1000.0, 0.0, 50.0, 1.0]], dtype=torch.float64)
    expected = ("y: TransmissionPoisson: 66.7% of the 3 rays through the object would get zero photons at I0 = 500 "
                "(line integrals up to 1000.0), expected at most 1%; expected attenuation in 1/mm (water about "
                "0.02 / mm) - scale the image (intensity_scale) or raise I0 (allow_photon_starvation=True accepts "
                "such data)")
    for draw in (m, m.counts, m.noise):
        with pytest.raises(ValueError) as err:
            draw(y, seed=0)
        assert str(err.value) == expected
    allowed = TransmissionPoisson(500.0, allow_photon_starvation=True)
    assert allowed(y, seed=0)[0, 0].item() == pytest.approx(math.log(500.0 / 0.1))
    # rays outside the object (y <= 0) do not count; data without such rays pass
    assert torch.isfinite(m(torch.zeros(2, 5), seed=0)).all()
    assert m.zero_count_fraction(torch.zeros(2, 5)) == 0.0


def test_poisson_zero_count_fraction_is_the_expected_fraction_over_rays_through_the_object():
    m = TransmissionPoisson(100.0)
    y = torch.tensor([-1.0, 0.0, 3.0, 5.0, 7.0], dtype=torch.float64)
    p = torch.exp(-100.0 * torch.exp(-y[2:]))
    assert m.zero_count_fraction(y) == pytest.approx(float(p.mean()), rel=1e-12)
    # the threshold: just below 1 % passes, just above is refused
    level = -math.log(-math.log(0.5 * MAX_ZERO_COUNT_FRACTION) / 100.0)  # P(0) = 0.5 %
    assert torch.isfinite(m(torch.full((1, 100), level), seed=0)).all()
    level = -math.log(-math.log(2 * MAX_ZERO_COUNT_FRACTION) / 100.0)  # P(0) = 2 %
    with pytest.raises(ValueError, match=STARVED + r"2\.0% of the 100 rays"):
        m(torch.full((1, 100), level), seed=0)


def test_poisson_allow_photon_starvation_round_trip():
    m = TransmissionPoisson(1e3, allow_photon_starvation=True)
    d = m.to_dict()
    assert d == {"type": "transmission_poisson", "format_version": 1, "photon_count": 1e3, "zero_count": 0.1,
                 "allow_photon_starvation": True}
    assert noise_from_dict(json.loads(json.dumps(d))) == m
    assert noise_from_dict({**d, "allow_photon_starvation": np.bool_(True)}) == m
    assert m != TransmissionPoisson(1e3)
    assert "allow_photon_starvation" not in TransmissionPoisson(1e3).to_dict()
    with pytest.raises(ValueError, match=re.escape("allow_photon_starvation: expected True or False, found 'yes'")):
        TransmissionPoisson(1e3, allow_photon_starvation="yes")


def test_mu_water_constant():
    assert MU_WATER_PER_MM == 0.02  # 20 / m, the LoDoPaB-CT / DIVal value


@pytest.fixture(scope="module")
def real_sized_slice():
    """A 512 x 512 Shepp-Logan slice at 0.7 mm (a 36 cm field), 360 parallel-beam angles, ASTRA on the CPU."""
    pytest.importorskip("astra")
    from pirecon.ct import ParallelBeam2D, RayTransform
    from pirecon.phantoms import shepp_logan

    geometry = ParallelBeam2D((512, 512), pixel_size=0.7, num_angles=360)
    line_integrals = RayTransform(geometry, backend="astra")(shepp_logan((512, 512)))  # phantom units x mm
    return line_integrals.to(torch.float64)


def test_poisson_on_a_real_sized_slice_in_water_units(real_sized_slice):
    """Phantom value 1 = water (0.02 / mm): at I0 = 1e4 every ray through the object detects photons, and the
    post-log variance of a ray is 1 / (I0 exp(-p))."""
    I0 = 1e4
    p = MU_WATER_PER_MM * real_sized_slice
    through = p > 0
    assert 0.5 < float(p.max()) < 5  # a head-sized object in water units
    model = TransmissionPoisson(I0)
    assert model.zero_count_fraction(p) < 1e-20
    counts = model.counts(p, seed=0)
    assert int((counts[through] == 0).sum()) == 0 and float(counts[through].min()) > 500
    # one sinogram: residuals over all rays, each scaled by its predicted std, have unit variance
    noisy = model(p, seed=1)
    z = ((noisy - p) * torch.sqrt(I0 * torch.exp(-p)))[through]
    assert z.numel() > 100_000
    assert abs(float(z.var()) - 1) < 0.02 and abs(float(z.mean())) < 0.02
    # the most attenuating ray, drawn 20000 times: its variance within 5 % (4 standard errors)
    worst = float(p.max())
    samples = model(torch.full((20000,), worst, dtype=torch.float64), seed=2)
    assert float(samples.var()) == pytest.approx(1 / (I0 * math.exp(-worst)), rel=0.05)
    assert float(samples.mean()) == pytest.approx(worst, abs=4 * math.sqrt(1 / (I0 * math.exp(-worst) * 20000)) + 1e-3)


def test_poisson_on_a_real_sized_slice_in_phantom_units_is_refused(real_sized_slice):
    p = real_sized_slice  # Shepp-Logan values up to 1 taken as 1/mm: line integrals near 100
    with pytest.raises(ValueError) as err:
        TransmissionPoisson(1e4)(p, seed=0)
    message = str(err.value)
    assert re.fullmatch(r"y: TransmissionPoisson: 99\.\d% of the \d+ rays through the object would get zero photons "
                        r"at I0 = 10000 \(line integrals up to 9\d\.\d\), expected at most 1%; expected attenuation "
                        r"in 1/mm \(water about 0\.02 / mm\) - scale the image \(intensity_scale\) or raise I0 "
                        r"\(allow_photon_starvation=True accepts such data\)", message), message
    counts = TransmissionPoisson(1e4, allow_photon_starvation=True).counts(p, seed=0)
    assert float((counts[p > 0] == 0).double().mean()) > 0.98


# --------------------------------------------------------------------------
# Complex Gaussian (MRI k-space)
# --------------------------------------------------------------------------

def _psi(coils=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(coils, coils, dtype=torch.complex128, generator=g)
    psi = a @ a.mH / coils + 0.5 * torch.eye(coils, dtype=torch.complex128)
    psi = (psi + psi.mH) / 2  # exactly Hermitian
    return psi / psi.diagonal().real.mean()


def test_complex_gaussian_statistics_independent_coils():
    sigma = 0.3
    y = torch.full((8, 4, 64, 64), 2.0 - 1.0j, dtype=torch.complex128)
    n = (ComplexGaussianNoise(sigma)(y, seed=0) - y).flatten()
    assert abs(complex(n.mean())) < 0.005
    assert float(n.real.var()) == pytest.approx(sigma ** 2 / 2, rel=0.02)
    assert float(n.imag.var()) == pytest.approx(sigma ** 2 / 2, rel=0.02)
    assert float((n.abs() ** 2).mean()) == pytest.approx(sigma ** 2, rel=0.02)
    assert abs(float((n.real * n.imag).mean())) < 0.01 * sigma ** 2  # circular: parts uncorrelated
    # coils independent
    per_coil = (ComplexGaussianNoise(sigma)(y, seed=1) - y).transpose(0, 1).reshape(4, -1)
    cov = per_coil @ per_coil.mH / per_coil.shape[1]
    torch.testing.assert_close(cov, sigma ** 2 * torch.eye(4, dtype=torch.complex128), rtol=0, atol=0.02 * sigma ** 2)


@pytest.mark.parametrize("shape", [(20, 4, 32, 32), (20, 4, 1024)], ids=["cartesian", "non-cartesian"])
def test_complex_gaussian_recovers_the_coil_covariance(shape):
    sigma, psi = 0.5, _psi(4)
    model = ComplexGaussianNoise(sigma, covariance=psi)
    y = torch.zeros(shape, dtype=torch.complex128)
    n = model(y, seed=3).transpose(0, 1).reshape(4, -1)  # (coils, samples)
    m = n.shape[1]
    cov = n @ n.mH / m
    torch.testing.assert_close(cov, sigma ** 2 * psi, rtol=0, atol=6 * sigma ** 2 / math.sqrt(m))  # 5 standard errors
    pseudo = n @ n.T / m  # circular noise: E[n n^T] = 0
    assert float(pseudo.abs().max()) < 10 * sigma ** 2 / math.sqrt(m)
    assert model.num_coils == 4 and torch.equal(model.covariance, psi)


def test_complex_gaussian_draws_on_cpu_from_seed():
    """Documented draw order: real parts of the whole y, then imaginary parts, in y's real precision."""
    y = torch.randn(2, 3, 5, dtype=torch.complex128)
    g = torch.Generator().manual_seed(42)
    re, im = torch.randn(y.shape, generator=g, dtype=torch.float64), torch.randn(y.shape, generator=g, dtype=torch.float64)
    expected = y + (0.5 / math.sqrt(2)) * torch.complex(re, im)
    torch.testing.assert_close(ComplexGaussianNoise(0.5)(y, seed=42), expected, rtol=0, atol=0)
    y32 = y.to(torch.complex64)
    g = torch.Generator().manual_seed(42)
    re, im = torch.randn(y.shape, generator=g), torch.randn(y.shape, generator=g)
    torch.testing.assert_close(ComplexGaussianNoise(0.5)(y32, seed=42),
                               y32 + (0.5 / math.sqrt(2)) * torch.complex(re, im), rtol=0, atol=0)
    # with a covariance: sigma L z, L the Cholesky factor
    psi = _psi(3)
    g = torch.Generator().manual_seed(42)
    z = torch.complex(torch.randn(y.shape, generator=g, dtype=torch.float64),
                      torch.randn(y.shape, generator=g, dtype=torch.float64))
    expected = y + (0.5 / math.sqrt(2)) * torch.einsum("cd,bdk->bck", torch.linalg.cholesky(psi), z)
    torch.testing.assert_close(ComplexGaussianNoise(0.5, covariance=psi)(y, seed=42), expected, rtol=1e-12, atol=1e-12)


def test_complex_gaussian_seeds_dtypes_and_shapes():
    m = ComplexGaussianNoise(0.1, covariance=_psi(2))
    y = torch.randn(3, 2, 8, 8, dtype=torch.complex64)
    assert torch.equal(m(y, seed=3), m(y, seed=3))
    assert not torch.equal(m(y, seed=3), m(y, seed=4))
    g1, g2 = torch.Generator().manual_seed(8), torch.Generator().manual_seed(8)
    a = m(y, seed=g1)
    assert torch.equal(a, m(y, seed=g2)) and not torch.equal(a, m(y, seed=g1))
    assert not torch.equal(m(y), m(y))
    for shape in [(3, 2, 8, 8), (3, 2, 100)]:
        for dtype in (torch.complex64, torch.complex128):
            out = m(torch.zeros(shape, dtype=dtype), seed=0)
            assert out.shape == shape and out.dtype == dtype
    # without a covariance any shape (any number of coils)
    assert ComplexGaussianNoise(0.1)(torch.zeros(5, dtype=torch.complex64), seed=0).shape == (5,)
    assert ComplexGaussianNoise(0.1)(torch.zeros(1, 7, 4, 4, dtype=torch.complex64), seed=0).shape == (1, 7, 4, 4)


def test_complex_gaussian_is_additive_in_autograd():
    y = torch.randn(2, 3, 4, dtype=torch.complex128, requires_grad=True)
    out = ComplexGaussianNoise(0.2, covariance=_psi(3))(y, seed=0)
    (out.real.sum() + 2 * out.imag.sum()).backward()
    torch.testing.assert_close(y.grad, torch.full_like(y, 1 + 2j))


@pytest.mark.parametrize("model", [ComplexGaussianNoise(0.05), ComplexGaussianNoise(2, covariance=_psi(3))])
def test_complex_gaussian_dict_round_trip(model):
    d = model.to_dict()
    assert d["type"] == "complex_gaussian" and d["format_version"] == 1 and d["sigma"] == model.sigma
    assert ("covariance" in d) == (model.covariance is not None)
    back = noise_from_dict(json.loads(json.dumps(d)))
    assert type(back) is ComplexGaussianNoise and back == model and hash(back) == hash(model)
    if model.covariance is not None:
        assert torch.equal(back.covariance, model.covariance)  # exact: float64 through JSON
        assert np.asarray(d["covariance"]).shape == (3, 3, 2)
        # HDF5-style values: a NumPy array of pairs
        assert noise_from_dict({**d, "covariance": np.asarray(d["covariance"])}) == model
    y = torch.randn(2, 3, 6, dtype=torch.complex64)
    assert torch.equal(back(y, seed=0), model(y, seed=0))
    assert ComplexGaussianNoise(0.05) != ComplexGaussianNoise(0.05, covariance=torch.eye(2))


def test_complex_gaussian_accepts_real_and_numpy_covariances():
    psi = np.array([[2.0, 0.5], [0.5, 1.0]])
    m = ComplexGaussianNoise(1.0, covariance=psi)
    assert m.covariance.dtype == torch.complex128
    torch.testing.assert_close(m.covariance.real, torch.from_numpy(psi))
    assert ComplexGaussianNoise(1.0, covariance=psi.tolist()) == m
    assert ComplexGaussianNoise(1.0, covariance=torch.from_numpy(psi).to(torch.complex64)) == m
    # float32 rounding of a measured covariance is accepted, and made exactly Hermitian
    noisy = _psi(4).to(torch.complex64)
    noisy[0, 1] += 1e-8
    assert torch.equal(ComplexGaussianNoise(1.0, covariance=noisy).covariance,
                       ComplexGaussianNoise(1.0, covariance=noisy).covariance.mH)


def test_complex_gaussian_repr():
    assert repr(ComplexGaussianNoise(0.1)) == "ComplexGaussianNoise(sigma=0.1)"
    assert repr(ComplexGaussianNoise(1, covariance=torch.eye(3))) == \
        "ComplexGaussianNoise(sigma=1.0, covariance=<3x3 matrix>)"


def test_complex_gaussian_errors():
    with pytest.raises(ValueError, match=re.escape(
            "y: expected complex k-space (complex64 or complex128) for ComplexGaussianNoise, found dtype float32 "
            "(real data take GaussianNoise)")):
        ComplexGaussianNoise(0.1)(torch.ones(2, 3))
    with pytest.raises(ValueError, match=re.escape("sigma: expected a positive number, found 0")):
        ComplexGaussianNoise(0)
    with pytest.raises(ValueError, match=re.escape("covariance: expected a square (coils, coils) matrix, found shape (3, 4)")):
        ComplexGaussianNoise(1, covariance=torch.ones(3, 4))
    with pytest.raises(ValueError, match=re.escape("covariance: expected a square (coils, coils) matrix, found shape (2, 2, 2)")):
        ComplexGaussianNoise(1, covariance=torch.ones(2, 2, 2))
    with pytest.raises(ValueError, match=re.escape(
            "covariance: expected a Hermitian matrix (covariance[i, j] = conj(covariance[j, i])), found "
            "|covariance - covariance^H| = 1 at index (0, 1) (largest |entry| 2)")):
        ComplexGaussianNoise(1, covariance=torch.tensor([[2.0, 1.0], [0.0, 2.0]]))
    with pytest.raises(ValueError, match=re.escape(
            "covariance: expected a Hermitian matrix (covariance[i, j] = conj(covariance[j, i])), found "
            "|covariance - covariance^H| = 1 at index (0, 0)")):
        ComplexGaussianNoise(1, covariance=torch.tensor([[1 + 0.5j, 0], [0, 1]]))  # complex diagonal
    with pytest.raises(ValueError, match=re.escape(
            "covariance: expected a positive definite matrix, found smallest eigenvalue -1")):
        ComplexGaussianNoise(1, covariance=torch.tensor([[1.0, 2.0], [2.0, 1.0]]))
    with pytest.raises(ValueError, match=re.escape("covariance: expected a positive definite matrix, found smallest eigenvalue 0")):
        ComplexGaussianNoise(1, covariance=torch.zeros(2, 2))
    with pytest.raises(ValueError, match=re.escape("covariance: expected finite values, found NaN or Inf")):
        ComplexGaussianNoise(1, covariance=torch.tensor([[1.0, float("nan")], [float("nan"), 1.0]]))
    with pytest.raises(ValueError, match=re.escape("covariance: expected a (coils, coils) complex matrix")):
        ComplexGaussianNoise(1, covariance="identity")
    with pytest.raises(ValueError, match=re.escape(
            "y: expected 3 coils along dimension 1 ((B, 3, H, W) or (B, 3, K)) to match the 3x3 covariance, "
            "found shape (2, 4, 8, 8)")):
        ComplexGaussianNoise(1, covariance=torch.eye(3))(torch.zeros(2, 4, 8, 8, dtype=torch.complex64))
    with pytest.raises(ValueError, match=re.escape("y: expected finite values, found 1 NaN and 0 Inf entries")):
        ComplexGaussianNoise(1)(torch.tensor([1.0, complex(float("nan"), 0)], dtype=torch.complex64))
    with pytest.raises(TypeError, match=re.escape("seed: expected an int, a torch.Generator or None, found float")):
        ComplexGaussianNoise(1)(torch.zeros(2, dtype=torch.complex64), seed=0.5)
    with pytest.raises(ValueError, match=re.escape(
            "noise dict: expected 'covariance' as (coils, coils, 2) [real, imag] pairs, found shape (2, 2)")):
        noise_from_dict({"type": "complex_gaussian", "sigma": 1.0, "covariance": [[1.0, 0.0], [0.0, 1.0]]})
    with pytest.raises(ValueError, match=re.escape("noise dict: expected keys among 'sigma', 'covariance', found unknown 'relative'")):
        noise_from_dict({"type": "complex_gaussian", "sigma": 1.0, "relative": 0.1})


# --------------------------------------------------------------------------
# Serialisation and repr
# --------------------------------------------------------------------------

@pytest.mark.parametrize("model, expected", [
    (GaussianNoise(relative=0.05), {"type": "gaussian", "format_version": 1, "relative": 0.05}),
    (GaussianNoise(sigma=2), {"type": "gaussian", "format_version": 1, "sigma": 2.0}),
    (TransmissionPoisson(1e4), {"type": "transmission_poisson", "format_version": 1, "photon_count": 1e4,
                                "zero_count": 0.1}),
])
def test_dict_round_trip(model, expected):
    d = model.to_dict()
    assert d == expected
    assert json.loads(json.dumps(d)) == d
    back = noise_from_dict(d)
    assert type(back) is type(model) and back == model
    assert type(model).from_dict(d) == model
    y = torch.rand(2, 30)
    assert torch.equal(back(y, seed=0), model(y, seed=0))


def test_from_dict_accepts_hdf5_style_values():
    d = {"type": b"transmission_poisson", "photon_count": np.int64(5000), "zero_count": np.float32(0.5)}
    assert noise_from_dict(d) == TransmissionPoisson(5000, zero_count=0.5)
    assert noise_from_dict({"type": np.str_("gaussian"), "sigma": np.float64(0.1)}) == GaussianNoise(sigma=0.1)


def test_wrong_format_version():
    with pytest.raises(ValueError, match="noise dict: expected format_version 1, found 2"):
        noise_from_dict({"type": "gaussian", "format_version": 2, "sigma": 1.0})


def test_repr():
    assert repr(GaussianNoise(relative=0.05)) == "GaussianNoise(relative=0.05)"
    assert repr(GaussianNoise(sigma=1.5)) == "GaussianNoise(sigma=1.5)"
    assert repr(TransmissionPoisson(1e4)) == "TransmissionPoisson(photon_count=10000.0, zero_count=0.1)"
    assert isinstance(GaussianNoise(sigma=1), NoiseModel)
    assert GaussianNoise(sigma=1) != GaussianNoise(relative=1)


# --------------------------------------------------------------------------
# Validation
# --------------------------------------------------------------------------

def test_gaussian_bad_parameters():
    with pytest.raises(ValueError, match=re.escape("GaussianNoise: expected exactly one of sigma and relative, found both")):
        GaussianNoise(sigma=1.0, relative=0.05)
    with pytest.raises(ValueError, match=re.escape("GaussianNoise: expected exactly one of sigma and relative, found neither")):
        GaussianNoise()
    with pytest.raises(ValueError, match=re.escape("sigma: expected a positive number, found -1")):
        GaussianNoise(sigma=-1)
    with pytest.raises(ValueError, match=re.escape("relative: expected a positive number, found 0")):
        GaussianNoise(relative=0)
    with pytest.raises(ValueError, match=re.escape("relative: expected a positive number, found '5%'")):
        GaussianNoise(relative="5%")


def test_poisson_bad_parameters():
    with pytest.raises(ValueError, match=re.escape("photon_count: expected a positive number, found 0")):
        TransmissionPoisson(0)
    with pytest.raises(ValueError, match=re.escape("zero_count: expected a positive number, found -0.1")):
        TransmissionPoisson(1e4, zero_count=-0.1)
    with pytest.raises(ValueError, match=re.escape("y: expected line integrals with finite photon_count*exp(-y), found min(y) = -1000")):
        TransmissionPoisson(1e4)(torch.tensor([1.0, -1000.0]))


@pytest.mark.parametrize("model", [GaussianNoise(sigma=0.1), TransmissionPoisson(1e3)])
def test_bad_data(model):
    with pytest.raises(ValueError, match=re.escape("y: expected finite values, found 1 NaN and 0 Inf entries")):
        model(torch.tensor([[1.0, float("nan")]]))
    with pytest.raises(ValueError, match=re.escape("y: expected finite values, found 0 NaN and 2 Inf entries")):
        model(torch.tensor([[float("inf"), -float("inf")]]))
    with pytest.raises(TypeError, match=re.escape("y: expected a real floating tensor")):
        model(torch.ones(2, 3, dtype=torch.int64))
    with pytest.raises(TypeError, match=re.escape("found dtype complex64")):
        model(torch.ones(2, 3, dtype=torch.complex64))
    with pytest.raises(TypeError, match=re.escape("y: expected a torch.Tensor, found ndarray")):
        model(np.ones((2, 3)))
    with pytest.raises(TypeError, match=re.escape("seed: expected an int, a torch.Generator or None, found float")):
        model(torch.ones(2, 3), seed=1.5)


def test_bad_dicts():
    with pytest.raises(ValueError, match=re.escape("noise type: expected one of 'gaussian', 'transmission_poisson', 'complex_gaussian', found 'laplace'")):
        noise_from_dict({"type": "laplace", "scale": 1.0})
    with pytest.raises(ValueError, match=re.escape("noise dict: expected a 'type' key, found keys ['sigma']")):
        noise_from_dict({"sigma": 1.0})
    with pytest.raises(TypeError, match=re.escape("noise dict: expected a dict, found list")):
        noise_from_dict([("type", "gaussian")])
    with pytest.raises(ValueError, match=re.escape("noise dict: expected keys among 'sigma', 'relative', found unknown 'mean'")):
        noise_from_dict({"type": "gaussian", "sigma": 1.0, "mean": 0.0})
    with pytest.raises(ValueError, match=re.escape("noise dict: expected type 'gaussian', found 'transmission_poisson'")):
        GaussianNoise.from_dict(TransmissionPoisson(10).to_dict())
    with pytest.raises(ValueError, match=re.escape("GaussianNoise: expected exactly one of sigma and relative, found neither")):
        noise_from_dict({"type": "gaussian"})


# --------------------------------------------------------------------------
# Devices
# --------------------------------------------------------------------------

@cuda
def test_cuda_same_draws_as_cpu():
    y = torch.rand(2, 1, 8, 8)
    for model in (GaussianNoise(relative=0.05), TransmissionPoisson(1e3)):
        out = model(y.cuda(), seed=4)
        assert out.device.type == "cuda" and out.dtype == y.dtype
        torch.testing.assert_close(out.cpu(), model(y, seed=4))
    k = torch.randn(2, 3, 8, 8, dtype=torch.complex64)
    for model in (ComplexGaussianNoise(0.1), ComplexGaussianNoise(0.1, covariance=_psi(3))):
        out = model(k.cuda(), seed=4)
        assert out.device.type == "cuda" and out.dtype == k.dtype
        torch.testing.assert_close(out.cpu(), model(k, seed=4))
