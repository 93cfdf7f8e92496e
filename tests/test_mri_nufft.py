import math
import re

import pytest
import torch

from conftest import relative_error, requires_cuda
from pirecon import adjoint_test
from pirecon.metrics import psnr
from pirecon.mri import fft2c
from pirecon.mri.nufft import NUFFTOperator
from pirecon.mri.trajectories import radial_trajectory
from pirecon.phantoms import shepp_logan


def crandn(*shape, seed=0, dtype=torch.complex128):
    gen = torch.Generator().manual_seed(seed)
    return torch.complex(torch.randn(*shape, generator=gen, dtype=torch.float64),
                         torch.randn(*shape, generator=gen, dtype=torch.float64)).to(dtype)


def direct_nudft(x, traj):
    """The slow sum: y_k = (1 / sqrt(H W)) sum_n x[n] exp(-i k . (n - (H // 2, W // 2)))."""
    h, w = x.shape[-2:]
    n0 = torch.arange(h, dtype=torch.float64) - h // 2
    n1 = torch.arange(w, dtype=torch.float64) - w // 2
    phase = traj[0][:, None, None] * n0[None, :, None] + traj[1][:, None, None] * n1[None, None, :]
    kernel = torch.exp(-1j * phase) / math.sqrt(h * w)
    return torch.einsum("...hw,khw->...k", x.to(torch.complex128), kernel)


@pytest.mark.parametrize("shape", [(12, 10), (13, 11)])
def test_forward_agrees_with_a_direct_nudft(shape):
    gen = torch.Generator().manual_seed(1)
    traj = (torch.rand(2, 60, generator=gen, dtype=torch.float64) * 2 - 1) * math.pi
    x = crandn(2, 1, *shape)
    A = NUFFTOperator(traj, shape)
    assert relative_error(torch.view_as_real(A(x)), torch.view_as_real(direct_nudft(x, traj))) < 2e-3
    assert adjoint_test(A) < 1e-10


def test_on_cartesian_points_it_is_fft2c():
    h, w = 8, 6
    ky = (torch.arange(h, dtype=torch.float64) - h // 2) * (2 * math.pi / h)
    kx = (torch.arange(w, dtype=torch.float64) - w // 2) * (2 * math.pi / w)
    grid = torch.stack(torch.meshgrid(ky, kx, indexing="ij")).reshape(2, -1)
    x = crandn(1, 1, h, w, seed=2)
    y = NUFFTOperator(grid, (h, w), numpoints=8)(x)
    assert relative_error(torch.view_as_real(y.reshape(1, 1, h, w)), torch.view_as_real(fft2c(x))) < 2e-3


@pytest.mark.parametrize("with_maps", [False, True])
def test_adjoint(with_maps):
    traj = radial_trajectory(12, 16)[0]
    maps = crandn(3, 16, 16, seed=3) if with_maps else None
    A = NUFFTOperator(traj, (16, 16), coil_maps=maps)
    assert A.range_shape == ((3 if with_maps else 1), 12 * 16)
    assert adjoint_test(A) < 1e-10


def test_coil_maps_and_per_image_trajectories():
    traj = radial_trajectory(8, 16, golden_angle=True, batch_size=2, random_rotation=True, seed=4)
    maps = crandn(2, 3, 16, 16, seed=5)
    x = crandn(2, 1, 16, 16, seed=6)
    A = NUFFTOperator(traj, (16, 16), coil_maps=maps)
    y = A(x)
    for i in range(2):
        single = NUFFTOperator(traj[i], (16, 16), coil_maps=maps[i])
        torch.testing.assert_close(y[i], single(x[i][None])[0])
    assert adjoint_test(A) < 1e-10
    with pytest.raises(ValueError, match="NUFFTOperator: expected a batch of 2 to match the per-image trajectories, found 3"):
        A(crandn(3, 1, 16, 16))


def test_gradient_flows():
    A = NUFFTOperator(radial_trajectory(8, 16)[0], (16, 16))
    x = crandn(1, 1, 16, 16, seed=7).requires_grad_()
    assert torch.autograd.gradcheck(A, (x,), fast_mode=True)


def test_density_compensated_radial_reconstruction():
    n = 64
    traj = radial_trajectory(int(n * math.pi / 2), 2 * n)[0]  # Nyquist-sampled radial
    x = shepp_logan((n, n)).to(torch.complex64)
    A = NUFFTOperator(traj, (n, n))
    y = A(x)
    weights = A.density_compensation()
    assert weights.dtype == torch.float32 and weights.shape == (1, 1, traj.shape[-1])
    gridded = A.T(y * weights)
    inside = x.abs() > 0.5
    # the weights are scaled so that the gridding reconstruction keeps the image's intensity
    assert abs(float(gridded.abs()[inside].mean() / x.abs()[inside].mean()) - 1) < 0.1  # measured 0.94
    assert float(psnr(gridded.abs(), x.abs())) > 20
    plain = A.T(y)
    scale = lambda r: r.abs() * (x.abs().sum() / r.abs().sum())  # noqa: E731
    assert float(psnr(gridded.abs(), x.abs())) > float(psnr(scale(plain), x.abs())) + 5


class TestBadInput:
    def test_trajectory_outside_pi(self):
        traj = torch.tensor([[0.0, 3.5], [0.0, 0.0]])
        with pytest.raises(ValueError, match=re.escape("trajectory: expected k-space coordinates in [-pi, pi) radians")):
            NUFFTOperator(traj, (8, 8))

    def test_real_image(self):
        A = NUFFTOperator(radial_trajectory(4, 8)[0], (8, 8))
        with pytest.raises(TypeError, match="NUFFTOperator input: expected a complex floating tensor"):
            A(torch.zeros(1, 1, 8, 8))

    def test_maps_of_the_wrong_size(self):
        with pytest.raises(ValueError, match=re.escape("coil_maps: expected shape (coils, 8, 8) or (B, coils, 8, 8) to match image_shape, found (2, 8, 9)")):
            NUFFTOperator(radial_trajectory(4, 8)[0], (8, 8), coil_maps=crandn(2, 8, 9))
        with pytest.raises(ValueError, match="coil_maps: expected a batch of 3 like the trajectory, found 2"):
            NUFFTOperator(radial_trajectory(4, 8, batch_size=3), (8, 8), coil_maps=crandn(2, 2, 8, 8))

    def test_shapes(self):
        with pytest.raises(ValueError, match=re.escape("image_shape: expected (H, W), found (8,)")):
            NUFFTOperator(radial_trajectory(4, 8)[0], (8,))
        with pytest.raises(ValueError, match=re.escape("trajectory: expected shape (2, K) or (B, 2, K), found (1, 1, 2, 32)")):
            NUFFTOperator(radial_trajectory(4, 8)[None], (8, 8))

    def test_nan_kspace(self):
        A = NUFFTOperator(radial_trajectory(4, 8)[0], (8, 8))
        y = crandn(1, 1, 32, dtype=torch.complex64)
        y[0, 0, 3] = complex(float("nan"), 0.0)
        with pytest.raises(ValueError, match="NUFFTOperator adjoint input: expected finite values, found 1 NaN"):
            A.T(y)


@requires_cuda
def test_nufft_on_cuda_matches_cpu():
    traj = radial_trajectory(16, 32)[0]
    A = NUFFTOperator(traj, (32, 32))
    x = crandn(2, 1, 32, 32, dtype=torch.complex64)
    y = A(x.cuda())
    assert y.is_cuda
    assert relative_error(torch.view_as_real(y.cpu()), torch.view_as_real(A(x))) < 1e-4
