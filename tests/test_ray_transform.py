import os
import re

import astra
import numpy as np
import pytest
import torch

from conftest import relative_error, requires_cuda
from pirecon import BackendUnavailableError, adjoint_test
from pirecon.ct import ConeBeam3D, FanBeam2D, ParallelBeam2D, RayTransform, fbp, lpd_ellipses_geometry
from pirecon.ct import sparse_backend
from pirecon.ct.joseph import joseph_matrix
from pirecon.ct.sparse_backend import SparseBudgetError
from pirecon.phantoms import shepp_logan

BACKENDS = ("sparse", "astra", "odl")
PARALLEL = ParallelBeam2D((96, 96), pixel_size=1.0, num_angles=45)
FAN = FanBeam2D((256, 256), pixel_size=0.5, num_angles=90, source_distance=400.0, detector_distance=200.0)


def disc_image(geometry, centre, radius, supersample=8):
    """A unit-valued disc (mm), supersampled, and its exact ray sums."""
    h, w = geometry.image_shape
    px = geometry.pixel_size
    offsets = (torch.arange(supersample, dtype=torch.float64) + 0.5) / supersample - 0.5
    cols = (torch.arange(w, dtype=torch.float64) - (w - 1) / 2)[None, :, None, None]
    rows = ((h - 1) / 2 - torch.arange(h, dtype=torch.float64))[:, None, None, None]
    x = (cols + offsets[None, None, :, None]) * px
    y = (rows + offsets[None, None, None, :]) * px
    inside = ((x - centre[0]) ** 2 + (y - centre[1]) ** 2) <= radius**2
    return inside.double().mean(dim=(2, 3))


def exact_disc_sinogram(geometry, centre, radius):
    from pirecon.ct.joseph import _rays

    points, direction = _rays(geometry)
    dist = np.abs((centre[0] - points[:, 0]) * direction[:, 1] - (centre[1] - points[:, 1]) * direction[:, 0])
    chord = 2 * np.sqrt(np.clip(radius**2 - dist**2, 0, None))
    return torch.from_numpy(chord.reshape(geometry.sinogram_shape))


@pytest.fixture(scope="module")
def phantom96():
    return shepp_logan((96, 96), dtype=torch.float64)


@pytest.fixture(scope="module")
def phantom256():
    return shepp_logan((256, 256), dtype=torch.float64)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("geometry", [PARALLEL, FanBeam2D((64, 64), num_angles=30, source_distance=200.0,
                                                         detector_distance=100.0)], ids=["parallel", "fan"])
def test_adjoint_error_in_float64(backend, geometry):
    A = RayTransform(geometry, backend=backend)
    # ASTRA and ODL compute in float32 internally; the sparse backend is exact in float64.
    bound = 1e-12 if backend == "sparse" else 1e-5
    assert adjoint_test(A, dtype=torch.float64) < bound


def test_backends_agree_on_parallel_beam(phantom96):
    ops = {b: RayTransform(PARALLEL, backend=b) for b in BACKENDS}
    sinos = {b: op(phantom96) for b, op in ops.items()}
    y = sinos["sparse"]
    backs = {b: op.T(y) for b, op in ops.items()}
    for b in ("astra", "odl"):
        assert relative_error(sinos[b], sinos["sparse"]) < 1e-4
        assert relative_error(backs[b], backs["sparse"]) < 1e-4


def test_backends_agree_on_fan_beam(phantom256):
    ops = {b: RayTransform(FAN, backend=b) for b in BACKENDS}
    sinos = {b: op(phantom256) for b, op in ops.items()}
    y = sinos["sparse"]
    backs = {b: op.T(y) for b, op in ops.items()}
    # ASTRA's CPU fan projector is the line-intersection model, ours is Joseph's:
    # both discretise the same integrals; their transposes differ in the fine
    # aliasing pattern of the back-projection (measured 1.7% here).
    for b in ("astra", "odl"):
        assert relative_error(sinos[b], sinos["sparse"]) < 0.01
        assert relative_error(backs[b], backs["sparse"]) < 0.025


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("pixel_size", [0.5, 2.0])
@pytest.mark.parametrize("kind", ["parallel", "fan"])
def test_values_are_line_integrals_in_mm(backend, pixel_size, kind):
    if kind == "parallel":
        g = ParallelBeam2D((96, 96), pixel_size=pixel_size, num_angles=24)
    else:
        g = FanBeam2D((96, 96), pixel_size=pixel_size, num_angles=24, source_distance=150 * pixel_size,
                      detector_distance=100 * pixel_size)
    centre, radius = (10 * pixel_size, -6 * pixel_size), 25 * pixel_size
    y = RayTransform(g, backend=backend)(disc_image(g, centre, radius))
    assert relative_error(y, exact_disc_sinogram(g, centre, radius)) < 0.02


def test_sparse_matrix_equals_astras_linear_projector_matrix():
    g = ParallelBeam2D((40, 56), pixel_size=0.75, num_angles=17)
    pid = astra.create_projector("linear", g.astra_projection_geometry(), g.astra_volume_geometry())
    try:
        ref = astra.matrix.get(astra.projector.matrix(pid))
    finally:
        astra.projector.delete(pid)
    ours = joseph_matrix(g)
    assert ours.shape == ref.shape
    assert abs(ours - ref).max() < 1e-4 * abs(ref).max()


@pytest.mark.parametrize("backend", BACKENDS)
def test_autograd_gradient_is_the_adjoint(backend):
    A = RayTransform(lpd_ellipses_geometry(), backend=backend)
    x = torch.rand(2, 1, 128, 128, requires_grad=True)
    w = torch.randn(2, 1, 30, 183)
    (A(x) * w).sum().backward()
    assert relative_error(x.grad, A.T(w)) < 1e-6


def test_gradcheck_sparse_float64():
    A = RayTransform(ParallelBeam2D((6, 5), num_angles=4), backend="sparse")
    x = torch.rand(2, 6, 5, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(A, (x,))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_dtype_and_batch_shape_follow_the_input(backend, dtype):
    A = RayTransform(PARALLEL, backend=backend)
    x = torch.rand(2, 3, 96, 96, dtype=dtype)
    y = A(x)
    assert y.dtype == dtype and y.shape == (2, 3, 45, PARALLEL.num_detectors)
    torch.testing.assert_close(y[1, 2], A(x[1, 2]), rtol=1e-5, atol=1e-4)
    with torch.no_grad():
        assert A.T(y).shape == x.shape


def test_opnorm_agrees_between_backends():
    norms = [RayTransform(lpd_ellipses_geometry(), backend=b).opnorm(iterations=30) for b in ("sparse", "astra")]
    assert abs(norms[0] - norms[1]) / norms[0] < 1e-3


class TestSparseCache:
    def test_matrix_is_cached_on_disk_and_reloaded(self, monkeypatch):
        g = ParallelBeam2D((20, 20), num_angles=7)
        first = RayTransform(g, backend="sparse")
        cached = [f for f in os.listdir(os.environ["PIRECON_CACHE_DIR"])
                  if g.fingerprint()[:24] in f and f.endswith(".npz")]
        assert len(cached) == 1
        sparse_backend.system_matrix.cache_clear()
        monkeypatch.setattr(sparse_backend, "joseph_matrix", lambda geometry: pytest.fail("matrix was rebuilt"))
        second = RayTransform(g, backend="sparse")
        x = torch.rand(20, 20)
        torch.testing.assert_close(first(x), second(x))

    def test_corrupt_cache_file_is_rebuilt(self, tmp_path, monkeypatch):
        monkeypatch.setenv("PIRECON_CACHE_DIR", str(tmp_path))
        g = ParallelBeam2D((12, 12), num_angles=5)
        RayTransform(g, backend="sparse")
        (path,) = list(tmp_path.glob("*.npz"))
        path.write_bytes(path.read_bytes()[:100])  # truncate
        sparse_backend.system_matrix.cache_clear()
        with pytest.warns(UserWarning, match="ignoring unreadable system-matrix cache"):
            A = RayTransform(g, backend="sparse")
        assert adjoint_test(A) < 1e-12
        assert path.stat().st_size > 100  # rewritten whole

    def test_editing_the_builder_changes_the_cache_key(self, monkeypatch):
        g = ParallelBeam2D((10, 10), num_angles=3)
        RayTransform(g, backend="sparse")
        sparse_backend.system_matrix.cache_clear()
        monkeypatch.setattr(sparse_backend, "_builder_version", lambda: "edited")
        built = []
        monkeypatch.setattr(sparse_backend, "joseph_matrix", lambda geometry: built.append(1) or joseph_matrix(geometry))
        RayTransform(g, backend="sparse")
        assert built == [1]
        sparse_backend.system_matrix.cache_clear()

    def test_concurrent_builders_build_once(self, tmp_path):
        import threading
        import time

        from pirecon.ct.matrix_cache import cached_matrix

        g = ParallelBeam2D((10, 10), num_angles=3)
        builds = []

        def build():
            builds.append(1)
            time.sleep(0.3)
            return joseph_matrix(g)

        shape = (3 * g.num_detectors, 100)
        results = []
        threads = [threading.Thread(target=lambda: results.append(cached_matrix("test-kind", g, build, shape, str(tmp_path))))
                   for _ in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert len(builds) == 1 and len(results) == 3
        assert all((r != results[0]).nnz == 0 for r in results)

    def test_budget_refuses_and_auto_falls_back(self):
        with pytest.raises(SparseBudgetError, match=r"sparse backend: the system matrix of ParallelBeam2D\(.*\) needs up to "
                                                    r"18\.1 MiB, above the budget of 1000 B; raise max_bytes"):
            RayTransform(PARALLEL, backend="sparse", max_bytes=1000)
        A = RayTransform(PARALLEL, backend="auto", max_bytes=1000)
        assert A.backend == "astra"
        assert RayTransform(PARALLEL).backend == "sparse"

    def test_budget_from_environment(self, monkeypatch):
        monkeypatch.setenv("PIRECON_SPARSE_MAX_BYTES", "1e3")
        assert RayTransform(PARALLEL).backend == "astra"
        for value in ("lots", "inf"):
            monkeypatch.setenv("PIRECON_SPARSE_MAX_BYTES", value)
            with pytest.raises(ValueError, match=f"PIRECON_SPARSE_MAX_BYTES: expected a finite number of bytes, found '{value}'"):
                RayTransform(PARALLEL, backend="sparse")


class TestBadInput:
    A = None

    @classmethod
    def setup_class(cls):
        cls.A = RayTransform(lpd_ellipses_geometry(), backend="sparse")

    def test_unknown_backend(self):
        with pytest.raises(ValueError, match="backend: expected one of 'auto', 'sparse', 'astra', 'odl', found 'cuda'"):
            RayTransform(PARALLEL, backend="cuda")

    def test_not_a_geometry(self):
        with pytest.raises(TypeError, match="geometry: expected ParallelBeam2D, FanBeam2D or ConeBeam3D, found dict"):
            RayTransform({"type": "parallel2d"})

    def test_wrong_image_shape(self):
        with pytest.raises(ValueError, match=re.escape("RayTransform input: expected shape (..., 128, 128), found (1, 1, 64, 64)")):
            self.A(torch.zeros(1, 1, 64, 64))

    def test_sinogram_that_does_not_match_the_geometry(self):
        with pytest.raises(ValueError, match=re.escape("RayTransform adjoint input: expected shape (..., 30, 183), found (1, 30, 182)")):
            self.A.T(torch.zeros(1, 30, 182))

    def test_integer_dtype(self):
        with pytest.raises(TypeError, match="RayTransform input: expected a real floating tensor .* found dtype uint8"):
            self.A(torch.zeros(128, 128, dtype=torch.uint8))

    def test_unsupported_device(self):
        with pytest.raises(ValueError, match="RayTransform input: expected a tensor on a cpu or cuda device, found meta"):
            self.A(torch.empty(1, 128, 128, device="meta"))
        with pytest.raises(ValueError, match="RayTransform adjoint input: expected a tensor on a cpu or cuda device, found meta"):
            self.A.T(torch.empty(30, 183, device="meta"))

    def test_nan(self):
        x = torch.zeros(128, 128)
        x[3, 4] = float("nan")
        with pytest.raises(ValueError, match="RayTransform input: expected finite values, found 1 NaN and 0 Inf entries"):
            self.A(x)

    @pytest.mark.skipif(torch.cuda.is_available(), reason="machine has CUDA")
    def test_cone_beam_without_cuda(self):
        g = ConeBeam3D((8, 8, 8), num_angles=4, detector_shape=(8, 12), detector_spacing=1.5,
                       source_distance=50.0, detector_distance=50.0)
        with pytest.raises(BackendUnavailableError, match="ConeBeam3D: the cone-beam ray transform runs on ASTRA's CUDA "
                                                          "projectors and needs a CUDA GPU; found none"):
            RayTransform(g)
        assert issubclass(BackendUnavailableError, ValueError)

    def test_cone_beam_with_a_cpu_only_backend(self):
        g = ConeBeam3D((8, 8, 8), num_angles=4, detector_shape=(8, 12), detector_spacing=1.5,
                       source_distance=50.0, detector_distance=50.0)
        with pytest.raises(ValueError, match="backend: expected 'astra' or 'auto' for ConeBeam3D, found 'sparse'"):
            RayTransform(g, backend="sparse")

    @pytest.mark.skipif(torch.cuda.is_available(), reason="machine has CUDA")
    def test_cuda_tensor_for_astra_without_cuda(self):
        from pirecon.ct.astra_backend import AstraBackend

        backend = AstraBackend(PARALLEL)
        with pytest.raises(BackendUnavailableError, match="astra backend: got a CUDA tensor but this ASTRA build or machine has no CUDA support"):
            backend._projector(torch.device("cuda", 0))


def smooth_inner_products(A, x):
    """<A x, y> and <x, A^T y> for a smooth image x and its own sinogram y: a check of back-projectors
    that are not the exact transpose (ASTRA's CUDA back-projector is pixel-driven)."""
    y = A(x)
    return float((A(x) * y).sum()), float((x * A.T(y)).sum())


def asymmetric_image(shape, device="cpu"):
    """Shepp-Logan (top-bottom asymmetric) plus an off-centre disc (left-right asymmetric)."""
    x = shepp_logan(shape).clone()
    h, w = shape
    rows, cols = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    x[0, 0][((rows - h // 3) ** 2 + (cols - w // 5) ** 2) < (h // 10) ** 2] += 0.5
    return x.to(device)


@requires_cuda
class TestCuda:
    def test_sparse_on_cuda_matches_cpu(self, phantom96):
        A = RayTransform(PARALLEL, backend="sparse")
        x = phantom96.float()
        y_gpu = A(x.cuda())
        assert y_gpu.is_cuda
        assert relative_error(y_gpu.cpu(), A(x)) < 1e-5
        assert relative_error(A.T(y_gpu).cpu(), A.T(y_gpu.cpu())) < 1e-5
        assert adjoint_test(A, device="cuda") < 1e-10

    @pytest.mark.parametrize("geometry", [PARALLEL, FAN], ids=["parallel", "fan"])
    def test_astra_cuda_matches_sparse(self, geometry):
        x = asymmetric_image(geometry.image_shape, "cuda")
        A = RayTransform(geometry, backend="astra")
        sparse = RayTransform(geometry, backend="sparse")
        y = A(x)
        assert y.is_cuda
        ref = sparse(x)
        assert relative_error(y, ref) < 0.01
        assert relative_error(A.T(ref), sparse.T(ref)) < 0.02
        lhs, rhs = smooth_inner_products(A, x)
        assert abs(lhs - rhs) / abs(lhs) < 1e-2

    def test_astra_cuda_gradient_flows(self):
        A = RayTransform(lpd_ellipses_geometry(), backend="astra")
        x = torch.rand(2, 1, 128, 128, device="cuda", requires_grad=True)
        A(x).square().sum().backward()
        assert x.grad.is_cuda and torch.isfinite(x.grad).all()

    def test_cone_beam_scale_orientation_and_adjoint(self):
        R, D = 1000.0, 500.0
        image = asymmetric_image((64, 64))
        volume = image[:, :, None].expand(1, 1, 8, 64, 64).contiguous()  # the same slice at every z
        g = ConeBeam3D((8, 64, 64), voxel_size=1.0, num_angles=36, detector_shape=(8, 150),
                       detector_spacing=1.5, source_distance=R, detector_distance=D)
        A = RayTransform(g)
        y = A(volume.cuda())
        assert y.shape == (1, 1, 36, 8, 150)
        # near the central plane a cone beam with a small cone angle is the fan beam of one slice,
        # with ASTRA's angle, detector and (x, y) conventions: a mirrored axis would not match
        fan = FanBeam2D((64, 64), num_angles=36, num_detectors=150, detector_spacing=1.5,
                        source_distance=R, detector_distance=D)
        reference = RayTransform(fan, backend="sparse")(image)
        assert relative_error(y[:, :, :, 3:5].mean(dim=3).cpu(), reference) < 0.05
        lhs, rhs = smooth_inner_products(A, volume.cuda())
        assert abs(lhs - rhs) / abs(lhs) < 1e-2

    def test_fbp_on_cuda(self):
        g = lpd_ellipses_geometry()
        x = shepp_logan((128, 128)).cuda()
        for backend in ("sparse", "astra"):
            A = RayTransform(g, backend=backend)
            rec = fbp(A(x), A, "hann")
            assert rec.is_cuda
            assert relative_error(rec.cpu(), fbp(A(x).cpu(), g, "hann")) < 0.02

    def test_fan_fbp_on_cuda(self):
        x = shepp_logan((128, 128)).cuda()
        g = FanBeam2D((128, 128), num_angles=360, source_distance=300.0, detector_distance=200.0)
        y = RayTransform(g)(x)
        assert relative_error(fbp(y, g).cpu(), fbp(y.cpu(), g)) < 1e-4
