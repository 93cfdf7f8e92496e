import math
import re

import numpy as np
import pytest
import torch
from conftest import relative_error
from pirecon.ct import FILTERS, FanBeam2D, ParallelBeam2D, RayTransform, fbp, fbp_filter, lpd_ellipses_geometry
from pirecon.ct.odl_backend import odl_fbp
from pirecon.noise import GaussianNoise
from pirecon.phantoms import shepp_logan


def psnr(image, truth) -> float:
    image, truth = torch.as_tensor(image, dtype=torch.float64), torch.as_tensor(truth, dtype=torch.float64)
    return float(10 * torch.log10(truth.max() ** 2 / ((image - truth) ** 2).mean()))


@pytest.fixture(scope="module")
def lpd_data():
    g = lpd_ellipses_geometry()
    x = shepp_logan((128, 128), dtype=torch.float64)
    clean = RayTransform(g)(x)
    noisy = GaussianNoise(relative=0.05)(clean, seed=7)
    return g, x, {"noise-free": clean, "noisy": noisy}


@pytest.mark.parametrize("data", ["noise-free", "noisy"])
@pytest.mark.parametrize("filter", FILTERS)
def test_psnr_within_0_3_db_of_odl_fbp_op(lpd_data, data, filter):
    g, x, sinograms = lpd_data
    y = sinograms[data]
    ours = psnr(fbp(y, g, filter), x)
    theirs = psnr(odl_fbp(y, g, filter), x)
    assert abs(ours - theirs) < 0.3, (ours, theirs)


def test_odl_fbp_reference_follows_pirecon_axes():
    g = lpd_ellipses_geometry()
    x = shepp_logan((128, 128), dtype=torch.float64)
    y = RayTransform(g)(x)
    reference = odl_fbp(y, g, "hann")
    assert reference.shape == x.shape
    ours = fbp(y, g, "hann")
    assert relative_error(reference, ours) < 0.02
    assert relative_error(reference.flip(-2), ours) > 0.5  # a flipped image would not pass


@pytest.mark.parametrize("pixel_size", [0.5, 2.0])
@pytest.mark.parametrize("kind", ["parallel", "fan"])
def test_reproduces_intensity_scale_at_any_pixel_size(pixel_size, kind):
    if kind == "parallel":
        g = ParallelBeam2D((128, 128), pixel_size=pixel_size, num_angles=180)
    else:
        g = FanBeam2D((128, 128), pixel_size=pixel_size, num_angles=360, source_distance=300 * pixel_size,
                      detector_distance=200 * pixel_size)
    x = shepp_logan((128, 128), dtype=torch.float64)
    rec = fbp(RayTransform(g)(x), g, "ram-lak")
    assert abs(float(rec.mean() / x.mean()) - 1) < 0.005
    inner = (slice(None), slice(None), slice(32, 96), slice(32, 96))
    assert abs(float(rec[inner].mean() / x[inner].mean()) - 1) < 0.01
    assert psnr(rec, x) > 24


def test_more_angles_and_smoother_filters_behave_as_expected():
    x = shepp_logan((128, 128), dtype=torch.float64)
    results = {}
    for n in (30, 360):
        g = ParallelBeam2D((128, 128), num_angles=n)
        y = RayTransform(g)(x)
        results[n] = {f: psnr(fbp(y, g, f), x) for f in ("ram-lak", "hann")}
    assert results[360]["ram-lak"] > results[30]["ram-lak"] + 5
    # with few angles the streaks are high-frequency: the Hann window helps
    assert results[30]["hann"] > results[30]["ram-lak"]


def test_batched_equals_one_at_a_time():
    g = lpd_ellipses_geometry()
    y = torch.rand(2, 3, 30, 183, dtype=torch.float64)
    batched = fbp(y, g, "shepp-logan")
    assert batched.shape == (2, 3, 128, 128)
    torch.testing.assert_close(batched[1, 2], fbp(y[1, 2], g, "shepp-logan"))


@pytest.mark.parametrize("kind", ["parallel", "fan"])
def test_differentiable(kind):
    if kind == "parallel":
        g = ParallelBeam2D((6, 6), num_angles=5)
    else:
        g = FanBeam2D((6, 6), num_angles=8, source_distance=20.0, detector_distance=10.0)
    y = torch.rand(1, *g.sinogram_shape, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda s: fbp(s, g, "hann"), (y,))


def test_accepts_a_ray_transform_and_uses_its_backend():
    g = lpd_ellipses_geometry()
    y = torch.rand(1, 30, 183)
    ref = fbp(y, g)
    for backend in ("astra", "odl"):
        assert relative_error(fbp(y, RayTransform(g, backend=backend)), ref) < 1e-3  # float32 ASTRA


def test_dtype_follows_input():
    g = lpd_ellipses_geometry()
    assert fbp(torch.rand(30, 183), g).dtype == torch.float32
    assert fbp(torch.rand(30, 183, dtype=torch.float64), g).dtype == torch.float64


class TestFilter:
    def test_ram_lak_is_the_ramp(self):
        spacing = 0.8
        response = fbp_filter(100, spacing, "ram-lak", padded_length=256)
        nu = torch.fft.rfftfreq(256, d=spacing, dtype=torch.float64)
        # away from DC the sampled-kernel ramp is |nu| to within a few percent
        np.testing.assert_allclose(response[20:], nu[20:], rtol=0.05)
        # the DC term is positive (it is what keeps the mean of the image)
        assert response[0] > 0

    def test_windows_at_nyquist_and_cut_off(self):
        hann = fbp_filter(64, 1.0, "hann", padded_length=128)
        assert abs(float(hann[-1])) < 1e-12
        cut = fbp_filter(64, 1.0, "ram-lak", frequency_scaling=0.5, padded_length=128)
        f = torch.linspace(0, 1, 65, dtype=torch.float64)
        assert torch.all(cut[f > 0.5] == 0) and torch.all(cut[1:][f[1:] <= 0.5] > 0)

    def test_windows_are_ordered_by_smoothness(self):
        r = {f: fbp_filter(64, 1.0, f, padded_length=128) for f in FILTERS}
        mid = 48  # relative frequency 0.75
        assert r["ram-lak"][mid] > r["shepp-logan"][mid] > r["cosine"][mid] > r["hamming"][mid] > r["hann"][mid]


class TestBadInput:
    g = lpd_ellipses_geometry()

    def test_unknown_filter(self):
        with pytest.raises(ValueError, match="filter: expected one of 'ram-lak', 'shepp-logan', 'cosine', 'hamming', "
                                             "'hann', found 'butterworth'"):
            fbp(torch.zeros(30, 183), self.g, "butterworth")

    def test_sinogram_shape_mismatch(self):
        with pytest.raises(ValueError, match=re.escape("sinogram: expected shape (..., 30, 183), found (1, 183, 30)")):
            fbp(torch.zeros(1, 183, 30), self.g)

    def test_frequency_scaling(self):
        with pytest.raises(ValueError, match="frequency_scaling: expected a number in \\(0, 1\\], found 1.5"):
            fbp(torch.zeros(30, 183), self.g, frequency_scaling=1.5)
        with pytest.raises(ValueError, match="frequency_scaling: expected a positive number, found 0"):
            fbp(torch.zeros(30, 183), self.g, frequency_scaling=0)

    def test_inf_in_sinogram(self):
        y = torch.zeros(30, 183)
        y[0, 0] = math.inf
        with pytest.raises(ValueError, match="sinogram: expected finite values, found 0 NaN and 1 Inf entries"):
            fbp(y, self.g)

    def test_partial_or_uneven_scans(self):
        short = ParallelBeam2D((16, 16), num_angles=10, angles=np.linspace(0, 2, 10))
        with pytest.raises(ValueError, match=re.escape("fbp: expected equispaced angles covering [0, pi) or [0, 2 pi), "
                                                       "found 10 angles from 0 to 2 rad")):
            fbp(torch.zeros(short.sinogram_shape), short)
        uneven = ParallelBeam2D((16, 16), angles=[0.0, 0.1, 1.0, 2.0])
        with pytest.raises(ValueError, match="not equispaced"):
            fbp(torch.zeros(uneven.sinogram_shape), uneven)
        short_fan = FanBeam2D((16, 16), angles=np.linspace(0, math.pi, 20, endpoint=False), source_distance=50.0,
                              detector_distance=20.0)
        with pytest.raises(ValueError, match="short scans need Parker weights"):
            fbp(torch.zeros(short_fan.sinogram_shape), short_fan)

    def test_full_circle_parallel_scan_keeps_the_scale(self):
        g = ParallelBeam2D((64, 64), num_angles=120, angles=np.arange(120) * (2 * math.pi / 120))
        x = shepp_logan((64, 64), dtype=torch.float64)
        assert abs(float(fbp(RayTransform(g)(x), g).mean() / x.mean()) - 1) < 0.01

    def test_wrong_geometry_type(self):
        with pytest.raises(TypeError, match="geometry: expected ParallelBeam2D, FanBeam2D or a RayTransform, found str"):
            fbp(torch.zeros(30, 183), "parallel")
