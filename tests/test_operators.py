import re

import odl
import pytest
import torch

from pirecon import LinearOperator, adjoint_test
from pirecon.operators import MatrixOperator
from pirecon.operators.odl_bridge import OdlOperator


def random_matrix(m, n, *, complex=False, seed=0):
    gen = torch.Generator().manual_seed(seed)
    real = torch.randn(m, n, generator=gen, dtype=torch.float64)
    if complex:
        return torch.complex(real, torch.randn(m, n, generator=gen, dtype=torch.float64))
    return real


@pytest.mark.parametrize("complex_", [False, True])
def test_matrix_operator_forward_adjoint_and_batching(complex_):
    M = random_matrix(4, 6, complex=complex_)
    A = MatrixOperator(M)
    x = torch.randn(2, 3, 6, dtype=M.dtype)
    y = torch.randn(2, 3, 4, dtype=M.dtype)
    torch.testing.assert_close(A(x), x @ M.T)
    torch.testing.assert_close(A.T(y), y @ M.conj())
    torch.testing.assert_close(A.adjoint(y), A.T(y))
    torch.testing.assert_close(A.normal(x), A.T(A(x)))
    assert A.T.T is A
    assert adjoint_test(A) < 1e-12


def test_algebra_matches_matrix_algebra():
    M1, M2, M3 = random_matrix(4, 6, seed=1), random_matrix(6, 5, seed=2), random_matrix(4, 6, seed=3)
    A, B, C = MatrixOperator(M1), MatrixOperator(M2), MatrixOperator(M3)
    x = torch.randn(3, 5, dtype=torch.float64)
    z = torch.randn(3, 6, dtype=torch.float64)
    torch.testing.assert_close((A @ B)(x), x @ (M1 @ M2).T)
    torch.testing.assert_close((A + C)(z), z @ (M1 + M3).T)
    torch.testing.assert_close((A - C)(z), z @ (M1 - M3).T)
    torch.testing.assert_close((2.5 * A)(z), z @ (2.5 * M1).T)
    torch.testing.assert_close((A / 4)(z), z @ (M1 / 4).T)
    torch.testing.assert_close((-A)(z), -(z @ M1.T))
    torch.testing.assert_close(A @ z, A(z))
    for op in (A @ B, A + C, A - C, 3 * A):
        assert adjoint_test(op) < 1e-12


def test_complex_scalar_adjoint_is_conjugated():
    A = MatrixOperator(random_matrix(3, 3, complex=True))
    assert adjoint_test((1 + 2j) * A) < 1e-12


def test_composition_shape_mismatch_message():
    A, B = MatrixOperator(random_matrix(4, 6)), MatrixOperator(random_matrix(5, 3))
    with pytest.raises(ValueError, match=re.escape("A @ B: expected B's range shape to equal A's domain shape (6,), found (5,)")):
        A @ B
    with pytest.raises(ValueError, match=re.escape("A + B: expected equal shapes")):
        A + B


def test_autograd_backward_is_the_adjoint():
    M = random_matrix(4, 6)
    A = MatrixOperator(M)
    x = torch.randn(2, 6, dtype=torch.float64, requires_grad=True)
    w = torch.randn(2, 4, dtype=torch.float64)
    (A(x) * w).sum().backward()
    torch.testing.assert_close(x.grad, A.T(w))


@pytest.mark.parametrize("complex_", [False, True])
def test_gradcheck_and_double_backward(complex_):
    A = MatrixOperator(random_matrix(3, 4, complex=complex_))
    x = torch.randn(2, 4, dtype=A.matrix.dtype, requires_grad=True)
    assert torch.autograd.gradcheck(A, (x,))
    assert torch.autograd.gradgradcheck(A, (x,))


def test_no_grad_mode_builds_no_graph():
    A = MatrixOperator(random_matrix(3, 4))
    x = torch.randn(4, dtype=torch.float64, requires_grad=True)
    with torch.no_grad():
        y = A(x)
    assert y.grad_fn is None and not y.requires_grad


def test_float32_in_float32_out():
    A = MatrixOperator(random_matrix(3, 4))
    assert A(torch.randn(2, 4)).dtype == torch.float32


def test_opnorm_is_the_largest_singular_value():
    M = random_matrix(20, 30, seed=4)
    A = MatrixOperator(M)
    expected = float(torch.linalg.svdvals(M)[0])
    assert abs(A.opnorm() - expected) / expected < 1e-4
    assert abs((3 * A).opnorm() - 3 * expected) / expected < 1e-3


def test_base_class_requires_implementations():
    op = LinearOperator((2,), (2,))
    with pytest.raises(NotImplementedError):
        op(torch.zeros(2))


class TestBadInput:
    A = MatrixOperator(random_matrix(4, 5))

    def test_not_a_tensor(self):
        with pytest.raises(TypeError, match="MatrixOperator input: expected a torch.Tensor, found list"):
            self.A([1.0] * 5)

    def test_integer_dtype(self):
        with pytest.raises(TypeError, match="MatrixOperator input: expected a real floating tensor .*found dtype int64"):
            self.A(torch.zeros(5, dtype=torch.int64))

    def test_complex_into_real_operator(self):
        with pytest.raises(TypeError, match="found dtype complex64"):
            self.A(torch.zeros(5, dtype=torch.complex64))

    def test_wrong_shape(self):
        with pytest.raises(ValueError, match=re.escape("MatrixOperator input: expected shape (..., 5), found (3, 4)")):
            self.A(torch.zeros(3, 4))

    def test_wrong_shape_adjoint(self):
        with pytest.raises(ValueError, match=re.escape("expected shape (..., 4), found (5,)")):
            self.A.T(torch.zeros(5))

    def test_nan_and_inf(self):
        x = torch.zeros(2, 5)
        x[0, 1] = float("nan")
        x[1, 2] = float("inf")
        with pytest.raises(ValueError, match="expected finite values, found 1 NaN and 1 Inf entries"):
            self.A(x)

    def test_adjoint_test_needs_an_operator(self):
        with pytest.raises(TypeError, match="op: expected a LinearOperator, found Tensor"):
            adjoint_test(torch.zeros(3))


class TestOdlOperator:
    def test_weighted_spaces_give_the_euclidean_adjoint(self):
        space = odl.uniform_discr([0, 0], [2, 3], (8, 6))  # cell volume 0.125
        for odl_op in (odl.Gradient(space), odl.Laplacian(space)):
            assert adjoint_test(OdlOperator(odl_op)) < 1e-12

    def test_values_and_batching(self):
        space = odl.uniform_discr([0, 0], [1, 1], (5, 4))
        grad = odl.Gradient(space)
        A = OdlOperator(grad)
        x = torch.randn(3, 5, 4, dtype=torch.float64)
        out = A(x)
        assert out.shape == (3, 2, 5, 4)
        import numpy as np

        expected = np.asarray(grad(x[1].numpy()).asarray())
        torch.testing.assert_close(out[1], torch.from_numpy(expected))

    def test_rejects_non_operators_and_nonlinear(self):
        with pytest.raises(TypeError, match="odl_op: expected an odl.Operator, found int"):
            OdlOperator(3)
        space = odl.rn(3)
        with pytest.raises(ValueError, match="expected a linear operator"):
            OdlOperator(odl.PowerOperator(space, 2))


class TestSparseMatrixOperator:
    def test_matches_scipy_and_is_adjoint(self):
        import numpy as np
        import scipy.sparse as sp

        from pirecon.operators import SparseMatrixOperator

        M = sp.random(12, 20, density=0.3, random_state=0, format="csr", dtype=np.float64)
        A = SparseMatrixOperator(M, (4, 5), (3, 4))
        x = torch.randn(2, 4, 5, dtype=torch.float64)
        expected = torch.from_numpy((M @ x.reshape(2, 20).numpy().T).T).reshape(2, 3, 4)
        torch.testing.assert_close(A(x), expected)
        assert adjoint_test(A) < 1e-13
        assert A(x.float()).dtype == torch.float32
        assert A(x.half()).dtype == torch.float16

    def test_shape_mismatch(self):
        import scipy.sparse as sp

        from pirecon.operators import SparseMatrixOperator

        with pytest.raises(ValueError, match=re.escape("matrix: expected shape (12, 20) for (4, 5) -> (3, 4), found (12, 21)")):
            SparseMatrixOperator(sp.csr_matrix((12, 21)), (4, 5), (3, 4))


class _RealToComplex(LinearOperator):
    """x -> c M x for real x; its adjoint on the real domain is Re(conj(c) M^T y)."""

    def __init__(self, matrix, c):
        super().__init__((matrix.shape[1],), (matrix.shape[0],), domain_kind="real", range_kind="complex")
        self.matrix, self.c = matrix, c

    def _forward(self, x):
        return self.c * (x @ self.matrix.T.to(x.dtype))

    def _adjoint(self, y):
        return (self.c.conjugate() * y @ self.matrix.to(y.dtype)).real


class TestKindsAndDevices:
    def test_real_to_complex_operator_adjoint_and_gradient(self):
        A = _RealToComplex(random_matrix(3, 5), 1 + 2j)
        assert adjoint_test(A) < 1e-12
        x = torch.randn(2, 5, dtype=torch.float64, requires_grad=True)
        out = A(x)
        assert out.is_complex()
        (out.abs() ** 2).sum().backward()
        assert x.grad.dtype == torch.float64
        assert torch.autograd.gradcheck(A, (x.detach().requires_grad_(),))

    def test_numpy_complex_scalar_is_not_truncated(self):
        import numpy as np

        M = random_matrix(3, 4, complex=True)
        A = MatrixOperator(M)
        x = torch.randn(4, dtype=torch.complex128)
        torch.testing.assert_close((A * np.complex128(1 + 2j))(x), (1 + 2j) * (x @ M.T))
        assert adjoint_test(np.complex64(2 - 1j) * A) < 1e-6

    def test_complex_scalar_on_real_operator_is_refused(self):
        with pytest.raises(ValueError, match=re.escape("c * A: expected a real scalar for an operator with a real range, found (1+1j)")):
            MatrixOperator(random_matrix(3, 4)) * (1 + 1j)

    def test_composition_checks_kinds(self):
        real, cplx = MatrixOperator(random_matrix(4, 4)), MatrixOperator(random_matrix(4, 4, complex=True))
        with pytest.raises(ValueError, match="A @ B: expected B's range to be real like A's domain, found complex"):
            real @ cplx
        with pytest.raises(ValueError, match="A \\+ B: expected equal kinds"):
            real + cplx

    def test_device_restrictions_combine(self):
        cpu_only = MatrixOperator(random_matrix(4, 4))
        cpu_only.device_types = ("cpu",)
        anywhere = MatrixOperator(random_matrix(4, 4))
        assert (anywhere @ cpu_only).device_types == ("cpu",)
        assert (cpu_only @ anywhere).device_types == ("cpu",)
        assert (anywhere + cpu_only).device_types == ("cpu",)
        assert (2 * cpu_only).T.device_types == ("cpu",)
        with pytest.raises(ValueError, match="MatrixOperator input: expected a tensor on a cpu device, found meta"):
            cpu_only(torch.empty(4, device="meta"))

    def test_odl_complex_operators(self):
        for odl_op in (odl.ScalingOperator(odl.cn(4), 1 + 2j), odl.ComplexEmbedding(odl.rn(4), scalar=1j)):
            A = OdlOperator(odl_op)
            assert adjoint_test(A) < 1e-12
            x = torch.randn(3, 4, dtype=torch.float64 if A.domain_kind == "real" else torch.complex128)
            assert A(x).dtype == torch.complex128
        embed = OdlOperator(odl.ComplexEmbedding(odl.rn(4), scalar=1j))
        x = torch.randn(4, dtype=torch.float32)
        torch.testing.assert_close(embed(x), 1j * x.to(torch.complex64))
