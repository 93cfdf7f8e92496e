"""Tests of pirecon.noise: additive Gaussian and transmission Poisson noise."""

import json
import math
import re

import numpy as np
import pytest
import torch

from pirecon.noise import GaussianNoise, NoiseModel, TransmissionPoisson, noise_from_dict

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
    I0, zero = 500.0, 0.1
    m = TransmissionPoisson(I0, zero_count=zero)
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
    out2 = TransmissionPoisson(I0, zero_count=1.0)(y, seed=0)
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
    with pytest.raises(ValueError, match=re.escape("noise type: expected one of 'gaussian', 'transmission_poisson', found 'laplace'")):
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
