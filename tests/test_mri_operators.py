import re

import numpy as np
import pytest
import torch

from conftest import relative_error, requires_cuda
from pirecon import adjoint_test
from pirecon.mri import FourierOperator, SenseOperator, fft2c, fft3c, ifft2c, ifft3c
from pirecon.mri.baselines import rss, sense_adjoint, zero_filled
from pirecon.mri.fft import modulation


def crandn(*shape, dtype=torch.complex128, seed=0):
    gen = torch.Generator().manual_seed(seed)
    real = torch.randn(*shape, generator=gen, dtype=torch.float64)
    return torch.complex(real, torch.randn(*shape, generator=gen, dtype=torch.float64)).to(dtype)


def normalised_maps(coils, h, w, batch=None, seed=1):
    shape = (coils, h, w) if batch is None else (batch, coils, h, w)
    maps = crandn(*shape, seed=seed)
    return maps / torch.sqrt((maps.abs() ** 2).sum(dim=-3, keepdim=True))


class TestFFT:
    @pytest.mark.parametrize("shape", [(8, 6), (7, 8), (5, 9)])
    def test_matches_numpy_centred_orthonormal_fft(self, shape):
        x = crandn(2, 3, *shape)
        ref = np.fft.fftshift(np.fft.fft2(np.fft.ifftshift(x.numpy(), axes=(-2, -1)), norm="ortho"), axes=(-2, -1))
        torch.testing.assert_close(fft2c(x), torch.from_numpy(ref))
        torch.testing.assert_close(ifft2c(fft2c(x)), x)

    @pytest.mark.parametrize("shape", [(6, 4), (5, 3)])  # the cases of tests/data/make_fastmri_reference.py
    def test_matches_fastmri(self, fastmri_reference, shape):
        """fastMRI's ``fft2c`` / ``ifft2c`` on a fixed input (stored values; live where fastmri imports)."""
        key = f"{shape[0]}x{shape[1]}"
        x = torch.from_numpy(fastmri_reference[f"fft_input_{key}"].copy())
        torch.testing.assert_close(fft2c(x), torch.from_numpy(fastmri_reference[f"fft_fft2c_{key}"].copy()))
        torch.testing.assert_close(ifft2c(x), torch.from_numpy(fastmri_reference[f"fft_ifft2c_{key}"].copy()))

    def test_3d(self):
        x = crandn(2, 6, 5, 4)
        ref = np.fft.fftshift(np.fft.fftn(np.fft.ifftshift(x.numpy(), axes=(-3, -2, -1)), axes=(-3, -2, -1),
                                          norm="ortho"), axes=(-3, -2, -1))
        torch.testing.assert_close(fft3c(x), torch.from_numpy(ref))
        torch.testing.assert_close(ifft3c(fft3c(x)), x)

    def test_unitary(self):
        x = crandn(3, 10, 12)
        torch.testing.assert_close(torch.linalg.vector_norm(fft2c(x)), torch.linalg.vector_norm(x))

    @pytest.mark.parametrize("shape", [(8, 6), (10, 4), (6, 6), (4, 8)])
    def test_shift_is_a_modulation_for_even_sizes(self, shape):
        x = crandn(shape[0], shape[1])
        checker, sign = modulation(shape, dtype=torch.float64)
        torch.testing.assert_close(fft2c(x), sign * checker * torch.fft.fft2(checker * x, norm="ortho"))
        assert modulation((7, 8)) is None

    def test_real_input_is_refused(self):
        with pytest.raises(TypeError, match=re.escape("fft2c input: expected a complex floating tensor (complex64, complex128), found dtype float32")):
            fft2c(torch.zeros(4, 4))


class TestSense:
    def test_equals_sigpy_sense(self):
        sigpy_mri = pytest.importorskip("sigpy.mri")
        coils, h, w = 6, 24, 20
        maps = crandn(coils, h, w, seed=2)
        mask = (torch.rand(1, 1, w, generator=torch.Generator().manual_seed(3)) > 0.5).double()
        x = crandn(h, w, seed=4)
        # sigpy weights k-space by sqrt(weights): equal for a 0/1 mask
        weights = np.broadcast_to(mask.numpy()[0], (h, w)).copy()
        sense = sigpy_mri.linop.Sense(maps.numpy(), weights=weights)
        for dtype, tol in ((torch.complex128, 1e-12), (torch.complex64, 1e-5)):
            A = SenseOperator(maps.to(dtype), mask)
            ours = A(x.to(dtype)[None, None])[0]
            assert relative_error(ours.abs(), torch.from_numpy(np.abs(sense * x.numpy()))) < tol
            assert relative_error(torch.view_as_real(ours), torch.view_as_real(torch.from_numpy(sense * x.numpy()))) < tol
            y = crandn(coils, h, w, seed=5).to(dtype)
            ref_adjoint = torch.from_numpy(sense.H * y.numpy().astype(np.complex128))
            assert relative_error(torch.view_as_real(A.T(y[None])[0, 0]), torch.view_as_real(ref_adjoint)) < tol

    @pytest.mark.parametrize("shape", [(16, 12), (15, 13), (16, 13), (14, 10), (15, 12)])
    @pytest.mark.parametrize("mask_shape", [None, (2, 1, 1, -1), (1, 1, -2, -1), (-2, -1)])
    @pytest.mark.parametrize("dtype", [torch.complex128, torch.complex64])
    def test_adjoint_and_definition(self, shape, mask_shape, dtype):
        h, w = shape
        maps = normalised_maps(4, h, w, batch=2).to(dtype)
        mask = None
        if mask_shape is not None:
            size = tuple({-1: w, -2: h}.get(s, s) for s in mask_shape)
            mask = (torch.rand(size, generator=torch.Generator().manual_seed(6)) > 0.4).float()
        A = SenseOperator(maps, mask)
        x = crandn(2, 1, h, w, seed=7, dtype=dtype)
        expected = fft2c(maps * x)
        if mask is not None:
            expected = expected * mask
        tol = 1e-12 if dtype == torch.complex128 else 1e-5
        assert relative_error(torch.view_as_real(A(x)), torch.view_as_real(expected)) < tol
        assert adjoint_test(A, dtype=torch.float64 if dtype == torch.complex128 else torch.float32) < tol * 10

    @pytest.mark.parametrize("mask_batch", [1, 2])
    @pytest.mark.parametrize("maps_batch", [None, 2])
    @pytest.mark.parametrize("dtype", [torch.complex128, torch.complex64])
    def test_line_masks_transform_only_the_sampled_columns(self, mask_batch, maps_batch, dtype):
        """At most half the columns sampled: only those are transformed, with the same result."""
        h, w = 16, 20
        maps = normalised_maps(4, h, w, batch=maps_batch).to(dtype)
        weights = torch.rand(mask_batch, 1, 1, w, generator=torch.Generator().manual_seed(10))
        mask = torch.where(weights > 0.7, 0.5 + weights, torch.zeros(()))  # weighted lines, about 30% sampled
        A = SenseOperator(maps, mask)
        assert A._line_columns(torch.device("cpu"), dtype) is not None
        x = crandn(2, 1, h, w, seed=11, dtype=dtype)
        tol = 1e-12 if dtype == torch.complex128 else 1e-5
        assert relative_error(torch.view_as_real(A(x)), torch.view_as_real(mask * fft2c(maps * x))) < tol
        y = crandn(2, 4, h, w, seed=12, dtype=dtype)
        expected = (ifft2c(mask * y) * maps.conj()).sum(dim=-3, keepdim=True)
        assert relative_error(torch.view_as_real(A.T(y)), torch.view_as_real(expected)) < tol
        lhs, rhs = torch.vdot(A(x).flatten(), y.flatten()), torch.vdot(x.flatten(), A.T(y).flatten())
        assert abs(lhs - rhs) / abs(lhs) < tol

    def test_a_batch_item_without_sampled_lines_gives_zeros(self):
        mask = torch.zeros(2, 1, 1, 16)
        mask[0, ..., 3] = 1
        A = SenseOperator(normalised_maps(4, 16, 16), mask)
        x = crandn(2, 1, 16, 16, seed=13)
        k = A(x)
        assert torch.equal(k[1], torch.zeros_like(k[1])) and k[0].abs().sum() > 0
        assert torch.equal(A.T(k)[1], torch.zeros_like(x[1]))
        assert relative_error(torch.view_as_real(k), torch.view_as_real(mask * fft2c(A.coil_maps * x))) < 1e-5

    def test_dense_line_masks_keep_the_full_fft(self):
        A = SenseOperator(normalised_maps(4, 16, 20), torch.ones(1, 1, 1, 20))
        assert A._line_columns(torch.device("cpu"), torch.complex64) is None

    @pytest.mark.parametrize("shape", [(16, 12), (15, 13)], ids=["even", "odd"])
    def test_batched_mask_with_shared_maps(self, shape):
        h, w = shape
        maps = normalised_maps(4, h, w)
        mask = (torch.rand(3, 1, 1, w, generator=torch.Generator().manual_seed(8)) > 0.5).float()
        A = SenseOperator(maps, mask)
        x = crandn(1, 1, h, w, seed=9)
        y = A(x)
        assert y.shape == (3, 4, h, w)
        torch.testing.assert_close(y, mask * fft2c(maps * x))
        assert A.T(y).shape == (3, 1, h, w)
        torch.testing.assert_close(A.T(y), (ifft2c(mask * y) * maps.conj()).sum(1, keepdim=True))
        batched_maps = SenseOperator(normalised_maps(4, h, w, batch=3))
        assert batched_maps.T(crandn(4, h, w, seed=10)).shape == (3, 1, h, w)

    def test_inference_mode_then_training(self):
        A = SenseOperator(normalised_maps(3, 16, 12).to(torch.complex64), torch.ones(12))
        x = crandn(2, 1, 16, 12, dtype=torch.complex64)
        with torch.inference_mode():
            reference = A.T(A(x))
        x.requires_grad_()
        out = A.T(A(x))
        out.abs().sum().backward()
        torch.testing.assert_close(out.detach(), reference)
        assert x.grad is not None

    def test_conjugate_views_are_accepted(self):
        maps = normalised_maps(3, 8, 8)
        x = crandn(1, 1, 8, 8, seed=11)
        A = SenseOperator(maps.conj())
        torch.testing.assert_close(A(x.conj()), fft2c(maps.conj() * x.conj()))
        torch.testing.assert_close(fft2c(x.conj()), fft2c(x.conj().resolve_conj()))

    def test_fully_sampled_with_normalised_maps_is_an_isometry(self):
        A = SenseOperator(normalised_maps(5, 12, 10))
        x = crandn(3, 1, 12, 10, seed=8)
        torch.testing.assert_close(A.normal(x), x)
        assert abs(A.opnorm() - 1.0) < 1e-6

    @pytest.mark.parametrize("shape", [(6, 4), (5, 3)], ids=["even", "odd"])
    def test_gradients(self, shape):
        A = SenseOperator(normalised_maps(3, *shape), torch.tensor([1.0, 0.0, 1.0, 1.0][: shape[1]]))
        x = crandn(2, 1, *shape, seed=9).requires_grad_()
        assert torch.autograd.gradcheck(A, (x,), fast_mode=True)
        assert torch.autograd.gradgradcheck(A, (x,), fast_mode=True)

    @pytest.mark.parametrize("shape", [(8, 6), (7, 5)])
    def test_fourier_operator_without_mask(self, shape):
        F = FourierOperator(None, shape)
        x = crandn(2, 1, *shape, seed=12)
        torch.testing.assert_close(F(x), fft2c(x))
        torch.testing.assert_close(F.T(F(x)), x)

    def test_single_coil_fourier_operator(self):
        mask = torch.tensor([1.0, 0.0, 1.0, 1.0, 0.0, 1.0])
        F = FourierOperator(mask, (8, 6))
        x = crandn(2, 1, 8, 6, seed=10)
        torch.testing.assert_close(F(x), mask * fft2c(x))
        assert adjoint_test(F) < 1e-12
        assert F.range_shape == (1, 8, 6)

    def test_complex64_in_complex64_out(self):
        A = SenseOperator(normalised_maps(2, 8, 8).to(torch.complex64))
        assert A(crandn(1, 1, 8, 8, dtype=torch.complex64)).dtype == torch.complex64


class TestBaselines:
    def test_rss_and_zero_filled(self):
        images = crandn(2, 4, 8, 6)
        k = fft2c(images)
        torch.testing.assert_close(zero_filled(k), images)
        torch.testing.assert_close(rss(images), torch.sqrt((images.abs() ** 2).sum(1, keepdim=True)))
        assert rss(images).dtype == torch.float64 and rss(images).shape == (2, 1, 8, 6)

    def test_sense_adjoint_recovers_fully_sampled_image(self):
        maps = normalised_maps(6, 10, 8, batch=2)
        x = crandn(2, 1, 10, 8, seed=11)
        torch.testing.assert_close(sense_adjoint(fft2c(maps * x), maps), x)

    def test_coil_count_mismatch(self):
        maps = normalised_maps(6, 10, 8)
        with pytest.raises(ValueError, match="kspace: expected 6 coils to match coil_maps, found 4"):
            sense_adjoint(crandn(1, 4, 10, 8), maps)
        A = SenseOperator(maps)
        with pytest.raises(ValueError, match=re.escape("SenseOperator adjoint input: expected shape (..., 6, 10, 8), found (1, 4, 10, 8)")):
            A.T(crandn(1, 4, 10, 8))


class TestBadInput:
    def test_real_image(self):
        A = SenseOperator(normalised_maps(2, 8, 8))
        with pytest.raises(TypeError, match=re.escape("SenseOperator input: expected a complex floating tensor (complex64, complex128), found dtype float32")):
            A(torch.zeros(1, 1, 8, 8))

    def test_real_coil_maps(self):
        with pytest.raises(TypeError, match="coil_maps: expected a complex floating tensor"):
            SenseOperator(torch.ones(2, 8, 8))

    def test_mask_that_does_not_broadcast(self):
        with pytest.raises(ValueError, match=re.escape("mask: expected 1 to 4 dims broadcasting to (B, 2, 8, 8), found (1, 1, 8, 5)")):
            SenseOperator(normalised_maps(2, 8, 8), torch.ones(1, 1, 8, 5))
        with pytest.raises(ValueError, match=re.escape("mask: expected 1 to 4 dims broadcasting to (B, 1, 8, 6), found (7,)")):
            FourierOperator(torch.ones(7), (8, 6))
        with pytest.raises(ValueError, match=re.escape("mask: expected a batch of 2 like coil_maps, found 3")):
            SenseOperator(normalised_maps(2, 8, 8, batch=2), torch.ones(3, 1, 1, 8))

    def test_maps_and_image_shape(self):
        with pytest.raises(ValueError, match=re.escape("coil_maps: expected shape (coils, H, W) or (B, coils, H, W), found (1, 2, 2, 8, 8)")):
            SenseOperator(crandn(1, 2, 2, 8, 8))
        with pytest.raises(ValueError, match=re.escape("image_shape: expected (H, W), found (8,)")):
            FourierOperator(None, (8,))
        with pytest.raises(ValueError, match="image_shape: expected a positive integer, found 0"):
            FourierOperator(None, (0, 8))

    def test_differentiable_maps_or_mask_are_refused(self):
        with pytest.raises(ValueError, match="coil_maps: expected fixed maps, found a tensor that requires grad"):
            SenseOperator(normalised_maps(2, 8, 8).requires_grad_())
        with pytest.raises(ValueError, match="mask: expected a fixed tensor, found one that requires grad"):
            SenseOperator(normalised_maps(2, 8, 8), torch.ones(8, requires_grad=True))

    def test_maps_and_mask_are_read_only(self):
        A = SenseOperator(normalised_maps(2, 8, 8))
        with pytest.raises(AttributeError):
            A.mask = torch.ones(8)

    def test_nan_in_kspace_and_maps(self):
        A = SenseOperator(normalised_maps(2, 8, 8))
        y = crandn(1, 2, 8, 8)
        y[0, 1, 2, 3] = complex(float("nan"), 0)
        with pytest.raises(ValueError, match="SenseOperator adjoint input: expected finite values, found 1 NaN and 0 Inf entries"):
            A.T(y)
        maps = normalised_maps(2, 8, 8)
        maps[0, 0, 0] = complex(0, float("inf"))
        with pytest.raises(ValueError, match="coil_maps: expected finite values, found 0 NaN and 1 Inf entries"):
            SenseOperator(maps)


@requires_cuda
def test_sense_on_cuda_matches_cpu():
    maps = normalised_maps(4, 32, 32, batch=2).to(torch.complex64)
    mask = torch.rand(2, 1, 1, 32, generator=torch.Generator().manual_seed(0)) > 0.7  # sampled columns only
    A = SenseOperator(maps, mask)
    x = crandn(2, 1, 32, 32, dtype=torch.complex64)
    y = A(x.cuda())
    assert y.is_cuda
    assert relative_error(torch.view_as_real(y.cpu()), torch.view_as_real(A(x))) < 1e-5
    assert adjoint_test(A, device="cuda") < 1e-10


def test_outputs_are_not_overwritten_by_later_calls():
    """Intermediates live in reused workspaces; returned tensors must never be among them."""
    A = SenseOperator(normalised_maps(4, 16, 12, batch=2), torch.rand(2, 1, 1, 12) > 0.5)
    x1, x2 = crandn(2, 1, 16, 12, seed=20), crandn(2, 1, 16, 12, seed=21)
    y1 = A(x1)
    saved_y1 = y1.clone()
    b1 = A.T(y1)
    saved_b1 = b1.clone()
    A(x2), A.T(A(x2)), A.normal(x2)
    torch.testing.assert_close(y1, saved_y1, rtol=0, atol=0)
    torch.testing.assert_close(b1, saved_b1, rtol=0, atol=0)
    torch.testing.assert_close(A.T(A(x1)), saved_b1)
