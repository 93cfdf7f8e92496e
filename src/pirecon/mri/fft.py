"""Centred, orthonormal Fourier transforms for complex torch tensors (fastMRI's convention).

    fft2c(x) = fftshift(fft2(ifftshift(x), norm="ortho"))

over the last two (``fft3c``: three) dimensions, so the zero frequency sits at
index ``n // 2`` of k-space and at the image centre, and ``ifft2c`` is both
the inverse and the adjoint.

For even sizes the shifts are a modulation: with the checkerboard
``c[m] = (-1)^(m_1 + m_2)`` and ``s = (-1)^((n_1 + n_2) / 2)``,

    fft2c(x) = s * c * fft2(c * x),

which lets operators fold ``c`` into fixed factors (coil maps, masks) and
skip the shifts altogether (see ``modulation``).
"""

from __future__ import annotations

import torch

from .._validation import check_tensor

__all__ = ["fft2c", "ifft2c", "fft3c", "ifft3c", "modulation"]


def _centred(x: torch.Tensor, ndim: int, inverse: bool, name: str) -> torch.Tensor:
    check_tensor(x, name, kind="complex", min_ndim=ndim)
    dims = tuple(range(-ndim, 0))
    transform = torch.fft.ifftn if inverse else torch.fft.fftn
    shifted = torch.fft.ifftshift(x, dim=dims)
    return torch.fft.fftshift(transform(shifted, dim=dims, norm="ortho"), dim=dims)


def fft2c(x: torch.Tensor) -> torch.Tensor:
    """Centred orthonormal 2D FFT over the last two dimensions: image ``(..., H, W)`` -> k-space."""
    return _centred(x, 2, False, "fft2c input")


def ifft2c(x: torch.Tensor) -> torch.Tensor:
    """Centred orthonormal inverse 2D FFT over the last two dimensions: k-space -> image."""
    return _centred(x, 2, True, "ifft2c input")


def fft3c(x: torch.Tensor) -> torch.Tensor:
    """Centred orthonormal 3D FFT over the last three dimensions."""
    return _centred(x, 3, False, "fft3c input")


def ifft3c(x: torch.Tensor) -> torch.Tensor:
    """Centred orthonormal inverse 3D FFT over the last three dimensions."""
    return _centred(x, 3, True, "ifft3c input")


def modulation(shape: tuple[int, ...], *, dtype=torch.float32, device=None) -> tuple[torch.Tensor, float] | None:
    """The checkerboard ``c`` and sign ``s`` with ``fft2c(x) = s * c * fft2(c * x)`` (``ortho``), for even sizes.

    ``c[m] = (-1)^(sum of indices)`` over ``shape``, ``s = (-1)^(sum(shape) / 2)``; ``None`` when a size
    is odd (then the shifts are not a modulation).
    """
    if any(n % 2 for n in shape):
        return None
    index_sum = sum(torch.meshgrid(*(torch.arange(n, device=device) for n in shape), indexing="ij"))
    checker = (1 - 2 * (index_sum % 2)).to(dtype)
    sign = -1.0 if (sum(shape) // 2) % 2 else 1.0
    return checker, sign
