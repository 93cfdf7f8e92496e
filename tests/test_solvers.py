"""Classical solvers: CGLS, Landweber, SIRT, TV-PDHG (and agreement with ODL 1.0's pdhg)."""

import numpy as np
import pytest
import torch

from conftest import requires_cuda
from pirecon.ct import RayTransform, ParallelBeam2D, fbp, lpd_ellipses_geometry
from pirecon.metrics import psnr
from pirecon.mri import RandomMask, SenseOperator, birdcage_maps
from pirecon.operators.base import MatrixOperator
from pirecon.phantoms import shepp_logan
from pirecon.solvers import SolverResult, cgls, gradient, gradient_adjoint, landweber, sirt, tv_norm, tv_pdhg


# --------------------------------------------------------------------------
# fixtures
# --------------------------------------------------------------------------

@pytest.fixture(scope="module")
def matrix_problem():
    gen = torch.Generator().manual_seed(0)
    M = torch.randn(40, 12, generator=gen, dtype=torch.float64)
    y = torch.randn(3, 40, generator=gen, dtype=torch.float64)
    return M, y


@pytest.fixture(scope="module")
def small_ct():
    geometry = ParallelBeam2D((32, 32), num_angles=20)
    A = RayTransform(geometry)
    x = shepp_logan((32, 32))
    return A, x, A(x)


@pytest.fixture(scope="module")
def lpd_problem():
    """LPD-ellipses protocol: modified Shepp-Logan, operator scaled by its norm, 5% Gaussian noise."""
    geometry = lpd_ellipses_geometry()
    ray = RayTransform(geometry)
    norm = ray.opnorm()
    A = ray * (1.0 / norm)
    x = shepp_logan((128, 128))
    clean = A(x)
    gen = torch.Generator().manual_seed(0)
    y = clean + 0.05 * clean.abs().mean() * torch.randn(clean.shape, generator=gen)
    return geometry, ray, norm, A, x, clean, y


@pytest.fixture(scope="module")
def mri_problem():
    n = 64
    truth = shepp_logan((n, n)).to(torch.complex64)
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, n), torch.linspace(-1, 1, n), indexing="ij")
    truth = truth * torch.exp(1j * 0.5 * (xx + yy))  # smooth phase
    maps = birdcage_maps(4, (n, n))
    mask = RandomMask([0.08], [4])((4, n, n), seed=0).mask
    A = SenseOperator(maps, mask)
    clean = A(truth)
    gen = torch.Generator().manual_seed(1)
    noise = torch.complex(torch.randn(clean.shape, generator=gen), torch.randn(clean.shape, generator=gen))
    y = (clean + 0.02 * clean.abs().mean() * noise) * mask
    return A, truth, y


# --------------------------------------------------------------------------
# CGLS
# --------------------------------------------------------------------------

def test_cgls_matches_lstsq(matrix_problem):
    M, y = matrix_problem
    res = cgls(y, MatrixOperator(M), iterations=50, tol=1e-12)
    assert isinstance(res, SolverResult)
    ref = torch.linalg.lstsq(M, y.T).solution.T
    assert torch.allclose(res.image, ref, atol=1e-8, rtol=0)
    assert res.image.dtype == torch.float64 and res.image.shape == (3, 12)
    assert len(res.history) == res.iterations <= 50


def test_cgls_tikhonov_closed_form(matrix_problem):
    M, y = matrix_problem
    lam = 0.7
    res = cgls(y, MatrixOperator(M), iterations=50, tikhonov=lam, tol=1e-12)
    ref = torch.linalg.solve(M.T @ M + lam * torch.eye(12, dtype=M.dtype), (y @ M).T).T
    assert torch.allclose(res.image, ref, atol=1e-8, rtol=0)


def test_cgls_batch_items_independent():
    gen = torch.Generator().manual_seed(3)
    # ill-conditioned matrix: the items converge at different rates
    U, _ = torch.linalg.qr(torch.randn(30, 30, generator=gen, dtype=torch.float64))
    V, _ = torch.linalg.qr(torch.randn(15, 15, generator=gen, dtype=torch.float64))
    M = U[:, :15] @ torch.diag(torch.logspace(0, -1, 15, dtype=torch.float64)) @ V.T
    A = MatrixOperator(M)
    y = torch.randn(2, 3, 30, generator=gen, dtype=torch.float64)
    y[0, 1] *= 1000.0
    batched = cgls(y, A, iterations=8, tol=0)
    for i in range(2):
        for j in range(3):
            single = cgls(y[i, j], A, iterations=8, tol=0)
            assert torch.allclose(batched.image[i, j], single.image, rtol=1e-9, atol=1e-9)


def test_cgls_complex_sense_converges():
    """Complex SENSE least squares (16x16, 4 coils, every other line) vs the dense complex lstsq."""
    n = 16
    maps = birdcage_maps(4, (n, n), dtype=torch.complex128)
    mask = torch.zeros(1, 1, 1, n)
    mask[..., ::2] = 1
    mask[..., n // 2 - 2:n // 2 + 2] = 1
    A = SenseOperator(maps, mask)
    gen = torch.Generator().manual_seed(0)
    y = torch.complex(torch.randn(2, 4, n, n, generator=gen, dtype=torch.float64),
                      torch.randn(2, 4, n, n, generator=gen, dtype=torch.float64)) * mask
    res = cgls(y, A, iterations=300, tol=1e-12)
    assert res.image.dtype == torch.complex128 and res.image.shape == (2, 1, n, n)
    dense = A(torch.eye(n * n, dtype=torch.complex128).reshape(n * n, 1, n, n)).reshape(n * n, -1).T
    ref = torch.linalg.lstsq(dense, y.reshape(2, -1).T).solution.T.reshape(2, 1, n, n)
    assert torch.allclose(res.image, ref, atol=1e-8, rtol=0)
    assert res.iterations < 300 and res.history[-1] < 1e-10 * res.history[0]
    single = cgls(y.to(torch.complex64), A, iterations=50)
    assert single.image.dtype == torch.complex64


def test_cgls_tol_stops_early(matrix_problem):
    M, y = matrix_problem
    A = MatrixOperator(M)
    loose = cgls(y, A, iterations=200, tol=1e-2)
    assert loose.iterations < 12 and len(loose.history) == loose.iterations
    s0 = torch.linalg.vector_norm(y @ M, dim=-1)
    s = torch.linalg.vector_norm((y - loose.image @ M.T) @ M, dim=-1)
    assert bool((s <= 1e-2 * s0).all())
    full = cgls(y, A, iterations=5, tol=0)
    assert full.iterations == 5


def test_cgls_x0_and_callback(matrix_problem):
    M, y = matrix_problem
    calls = []
    res = cgls(y, MatrixOperator(M), iterations=3, tol=0, x0=torch.ones(12, dtype=torch.float64),
               callback=lambda k, x: calls.append((k, x.shape)))
    assert calls == [(0, (3, 12)), (1, (3, 12)), (2, (3, 12))]
    assert res.iterations == 3


# --------------------------------------------------------------------------
# Landweber / SIRT
# --------------------------------------------------------------------------

def test_landweber_monotone_and_nonnegative(small_ct):
    A, x, y = small_ct
    res = landweber(y, A, iterations=40, nonnegative=True)
    h = np.array(res.history)
    assert len(h) == 40 and np.all(np.diff(h) <= 1e-6 * h[0])
    assert h[-1] < 0.5 * np.linalg.norm(y.numpy())
    assert float(res.image.min()) >= 0
    free = landweber(y, A, iterations=40, step=1.0 / A.opnorm() ** 2)
    assert np.all(np.diff(free.history) <= 1e-6 * free.history[0])


def test_sirt_monotone_and_nonnegative(small_ct):
    A, x, y = small_ct
    res = sirt(y, A, iterations=40)
    h = np.array(res.history)
    assert len(h) == 40 and np.all(np.diff(h) <= 1e-6 * h[0])
    assert float(res.image.min()) >= 0
    unconstrained = sirt(y, A, iterations=40, nonnegative=False)
    assert np.all(np.diff(unconstrained.history) <= 1e-6 * unconstrained.history[0])


def test_sirt_beats_fbp_on_lpd_geometry():
    geometry = lpd_ellipses_geometry()
    A = RayTransform(geometry)
    x = shepp_logan((128, 128))
    y = A(x)
    res = sirt(y, A, iterations=200)
    p_sirt, p_fbp = float(psnr(res.image, x)), float(psnr(fbp(y, geometry), x))
    assert p_sirt > p_fbp + 3, (p_sirt, p_fbp)


def test_sirt_rejects_complex_operator(mri_problem):
    A, _, y = mri_problem
    with pytest.raises(ValueError, match=r"^operator: expected a real operator for SIRT"):
        sirt(y, A)


# --------------------------------------------------------------------------
# TV-PDHG
# --------------------------------------------------------------------------

def test_gradient_adjoint_and_neumann():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2, 5, 7, generator=gen, dtype=torch.float64)
    g = torch.randn(2, 2, 5, 7, generator=gen, dtype=torch.float64)
    lhs = (gradient(x) * g).sum()
    rhs = (x * gradient_adjoint(g)).sum()
    assert torch.allclose(lhs, rhs)
    gx = gradient(x)
    assert torch.all(gx[0][..., -1, :] == 0) and torch.all(gx[1][..., :, -1] == 0)
    assert torch.allclose(tv_norm(torch.ones(3, 4, 4)), torch.zeros(3))


def test_tv_gradient_matches_odl():
    """ODL's Gradient with pad_mode='symmetric' is pirecon's forward differences with Neumann boundary."""
    odl = pytest.importorskip("odl")
    space = odl.uniform_discr([-4, -3], [4, 3], (8, 6))  # 1 mm cells: weights 1
    arr = np.random.default_rng(0).standard_normal((8, 6))
    ours = gradient(torch.from_numpy(arr))
    theirs = odl.Gradient(space, pad_mode="symmetric")(space.element(arr))
    for c in range(2):
        np.testing.assert_allclose(np.asarray(theirs[c].asarray()), ours[c].numpy(), atol=1e-12)


def test_tv_pdhg_agrees_with_odl(lpd_problem):
    """The same TV problem, the same steps and iteration count: pirecon's image against ODL 1.0's ``pdhg``.

    ODL indexes an image ``a[i, j]`` with ``i`` along x and ``j`` along y upwards; pirecon's row 0 is the
    top. Handing ODL the flipped image ``flip(x, 0).T`` would pair forward differences along x with
    backward ones along y, a different discretisation of isotropic TV (the two results are then 2%
    apart after 300 iterations). So ODL's primal variable here is pirecon's image transposed, whose
    forward differences are pirecon's, and the flip to ODL's y axis goes inside the forward operator.
    """
    odl = pytest.importorskip("odl")
    import odl.functionals as F

    from pirecon.ct.odl_backend import odl_ray_transform

    class FlipY(odl.Operator):
        """Reverse the second axis (y): linear and its own adjoint."""

        def __init__(self, space):
            super().__init__(space, space, linear=True)

        def _call(self, v):
            return self.range.element(np.flip(v.asarray(), 1).copy())

        @property
        def adjoint(self):
            return self

    geometry, _, _, A, x, _, y = lpd_problem
    lam, niter = 3e-4, 300
    ray = odl_ray_transform(geometry)
    op = (1.0 / odl.power_method_opnorm(ray, maxiter=100)) * ray
    assert op.domain.weighting.const == 1.0 and op.range.weighting.const == 1.0
    grad = odl.Gradient(op.domain, pad_mode="symmetric")
    L = odl.BroadcastOperator(op * FlipY(op.domain), grad)
    data = op.range.element(y[0, 0].numpy())  # ODL sinograms are indexed as pirecon's
    g = F.SeparableSum(0.5 * F.L2NormSquared(op.range).translated(data), lam * F.GroupL1Norm(grad.range))
    f = F.IndicatorNonnegativity(op.domain)
    knorm = odl.power_method_opnorm(L, maxiter=100)  # ||[A; grad]||, from a random start
    xo = op.domain.zero()
    odl.solvers.pdhg(xo, f, g, L, niter, tau=1.0 / knorm, sigma=1.0 / knorm)
    odl_image = torch.from_numpy(np.asarray(xo.asarray()).T.copy())[None, None].float()

    ours = tv_pdhg(y, A, lam=lam, iterations=niter, nonnegative=True, opnorm=knorm)  # ODL's steps
    assert ours.iterations == niter and float(ours.image.min()) >= 0
    difference = float(torch.linalg.vector_norm(ours.image - odl_image) / torch.linalg.vector_norm(odl_image))
    print(f"TV-PDHG LPD-ellipses, {niter} it, lam={lam}: ||pirecon - ODL|| / ||ODL|| = {difference:.2e}")
    # Measured 4.1e-5 in every run (torch 2.13 CPU, ODL 1.0, ASTRA 2.5; the `sparse` backend against
    # ODL's ASTRA CPU projector, whose sinograms differ by about 1e-5 relative, in float32). With
    # pirecon's own estimate of ||K|| instead of ODL's the steps differ slightly: 0.5e-4 to 1.5e-4.
    assert difference < 2e-4, difference
    assert float(psnr(ours.image, x)) > float(psnr(fbp(y * A.scalar ** -1, geometry, filter="hann"), x))


def test_tv_pdhg_objective_decreases_and_batched(small_ct):
    A, x, y = small_ct
    yb = torch.stack([y, 2 * y])  # (2, 1, 1, angles, det)
    res = tv_pdhg(yb, A, lam=0.5, iterations=100)
    assert res.image.shape == (2, 1, 1, 32, 32)
    h = np.array(res.history)
    assert h[-1] < 0.01 * 0.5 * float((yb ** 2).sum())
    assert np.all(np.diff(h[-20:]) <= 0)
    single = tv_pdhg(2 * y, A, lam=0.5, iterations=100, opnorm=None)
    assert torch.allclose(res.image[1], single.image, atol=1e-4)


def test_tv_pdhg_complex_mri_beats_zero_filled(mri_problem):
    A, truth, y = mri_problem
    zero_filled = A.T(y)
    res = tv_pdhg(y, A, lam=0.02, iterations=200)
    assert res.image.dtype == torch.complex64
    p_tv, p_zf = float(psnr(res.image.abs(), truth.abs())), float(psnr(zero_filled.abs(), truth.abs()))
    assert p_tv > p_zf + 3, (p_tv, p_zf)
    with pytest.raises(ValueError, match=r"^nonnegative: expected False for SenseOperator"):
        tv_pdhg(y, A, lam=0.02, nonnegative=True)


# --------------------------------------------------------------------------
# bad input, progress, CUDA
# --------------------------------------------------------------------------

def test_bad_input_messages(small_ct):
    A, _, y = small_ct
    with pytest.raises(ValueError, match=r"^y: expected shape \(\.\.\., 20, 47\), found \(1, 1, 20, 46\)$"):
        cgls(y[..., :46], A)
    with pytest.raises(TypeError, match=r"^y: expected real data for the real operator RayTransform, "
                                        r"found dtype complex64$"):
        landweber(y.to(torch.complex64), A)
    for bad in (0, -1.0):
        with pytest.raises(ValueError, match=rf"^lam: expected a positive number, found {bad!r}$"):
            tv_pdhg(y, A, lam=bad)
    for solver in (cgls, landweber, sirt):
        with pytest.raises(ValueError, match=r"^iterations: expected a positive integer, found 0$"):
            solver(y, A, iterations=0)
    with pytest.raises(ValueError, match=r"^iterations: expected a positive integer, found -3$"):
        tv_pdhg(y, A, lam=1.0, iterations=-3)
    with pytest.raises(ValueError, match=r"^x0: expected shape \(1, 1, 32, 32\)"):
        cgls(y, A, x0=torch.zeros(2, 1, 32, 32))
    with pytest.raises(ValueError, match=r"^tikhonov: expected a number >= 0, found -1$"):
        cgls(y, A, tikhonov=-1)
    with pytest.raises(TypeError, match=r"^operator: expected a pirecon LinearOperator, found Tensor$"):
        cgls(y, torch.eye(3))


def test_progress_bar_runs(small_ct, capsys):
    A, _, y = small_ct
    res = sirt(y, A, iterations=3, progress=True)
    assert res.iterations == 3
    leaf = y.clone().requires_grad_(True)
    for solver in (cgls, landweber, sirt):
        assert not solver(leaf, A, iterations=2).image.requires_grad
    assert not tv_pdhg(leaf, A, lam=1.0, iterations=2).image.requires_grad


@requires_cuda
def test_solvers_on_cuda(small_ct):
    A, x, y = small_ct
    yc = y.cuda()
    for res in (cgls(yc, A, iterations=5), landweber(yc, A, iterations=5), sirt(yc, A, iterations=5),
                tv_pdhg(yc, A, lam=0.5, iterations=5)):
        assert res.image.device.type == "cuda"
    cpu = sirt(y, A, iterations=5).image
    assert torch.allclose(sirt(yc, A, iterations=5).image.cpu(), cpu, atol=1e-4)
