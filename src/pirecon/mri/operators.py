"""Cartesian MRI forward operators: single-coil masked Fourier and multi-coil SENSE.

    SENSE:   y_c = M * fft2c(S_c * x),     A^H y = sum_c conj(S_c) * ifft2c(M * y_c)

with images ``x`` of shape ``(B, 1, H, W)``, coil maps ``S`` of shape
``(B, coils, H, W)`` or ``(coils, H, W)``, a real sampling mask ``M`` that
broadcasts to the k-space ``(B, coils, H, W)``, and fastMRI's centred
orthonormal FFT. For even ``H`` and ``W`` the FFT shifts are folded into the
maps and the mask once (``fft2c(z) = m * fft2(c * z)``, see
``pirecon.mri.fft``), so each application is one multiply, one FFT and one
multiply, with no shifted copies. Intermediate coil-sized arrays go to
per-thread workspaces reused across calls: allocating fresh ones costs more
than the multiplies themselves (page faults on every large allocation).
"""

from __future__ import annotations

import threading

import torch

from .._validation import check_tensor
from ..operators.base import LinearOperator
from .fft import fft2c, ifft2c, modulation

__all__ = ["SenseOperator", "FourierOperator"]


def _check_mask(mask, kspace_shape: tuple[int, ...]) -> torch.Tensor:
    """A real mask whose trailing dimensions broadcast to ``kspace_shape`` (coils, H, W)."""
    if isinstance(mask, torch.Tensor) and mask.dtype == torch.bool:
        mask = mask.float()
    check_tensor(mask, "mask", kind="real")
    trailing = tuple(mask.shape[-len(kspace_shape):]) if mask.ndim >= len(kspace_shape) else tuple(mask.shape)
    padded = (1,) * (len(kspace_shape) - len(trailing)) + trailing
    if mask.ndim == 0 or any(m not in (1, k) for m, k in zip(padded, kspace_shape)):
        raise ValueError(f"mask: expected a shape that broadcasts to (..., {', '.join(map(str, kspace_shape))}), "
                         f"found {tuple(mask.shape)}")
    return mask


_workspaces = threading.local()


def _workspace(slot: str, shape, dtype, device) -> torch.Tensor:
    """A reusable scratch tensor for this thread; its contents are overwritten by the caller."""
    cache = getattr(_workspaces, "tensors", None)
    if cache is None:
        cache = _workspaces.tensors = {}
    key = (slot, tuple(shape), dtype, device)
    if key not in cache:
        if len(cache) >= 8:  # shapes changed many times: start over rather than hoard memory
            cache.clear()
        cache[key] = torch.empty(shape, dtype=dtype, device=device)
    return cache[key]


class SenseOperator(LinearOperator):
    """Multi-coil Cartesian MRI: complex images ``(B, 1, H, W)`` to masked k-space ``(B, coils, H, W)``.

    Parameters
    ----------
    coil_maps : complex tensor ``(coils, H, W)`` or ``(B, coils, H, W)``
        Coil sensitivities; a batch dimension makes the operator specific to a batch of that size.
    mask : real or bool tensor, optional
        Sampling mask broadcastable to ``(B, coils, H, W)``, e.g. ``(B, 1, 1, W)`` for Cartesian lines.
        ``None`` samples everything.
    """

    def __init__(self, coil_maps: torch.Tensor, mask: torch.Tensor | None = None):
        check_tensor(coil_maps, "coil_maps", kind="complex", min_ndim=3)
        num_coils, height, width = coil_maps.shape[-3:]
        super().__init__((1, height, width), (num_coils, height, width),
                         domain_kind="complex", range_kind="complex")
        self.coil_maps = coil_maps
        self.mask = None if mask is None else _check_mask(mask, self.range_shape)
        self._cache: dict[tuple, tuple] = {}

    @property
    def num_coils(self) -> int:
        return self.range_shape[0]

    def _factors(self, device, dtype) -> tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor | None, bool]:
        """Maps, their conjugate and the mask in ``dtype`` on ``device``, FFT shifts folded in for even sizes.

        When folded, maps are never ``None`` (single-coil: the checkerboard itself).
        """
        key = (device, dtype)
        if key not in self._cache:
            real = dtype.to_real()
            maps = None if self.coil_maps is None else self.coil_maps.to(device=device, dtype=dtype)
            mask = None if self.mask is None else self.mask.to(device=device, dtype=real)
            m = modulation(self.range_shape[-2:], dtype=real, device=device)
            if m is not None:
                sign = float(m[0, 0])  # s; the checkerboard c is m * s
                checker = m * sign
                maps = checker if maps is None else maps * checker
                mask = m if mask is None else mask * m
            conj_maps = None if maps is None else maps.conj().resolve_conj()
            self._cache[key] = (maps, conj_maps, mask, m is not None)
        return self._cache[key]

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        maps, _, mask, folded = self._factors(x.device, x.dtype)
        if not folded:
            k = fft2c(x if maps is None else x * maps)
            return k if mask is None else k * mask
        shape = torch.broadcast_shapes(x.shape, maps.shape)
        coil_images = torch.mul(x, maps, out=_workspace("coil_images", shape, x.dtype, x.device))
        return torch.fft.fft2(coil_images, norm="ortho").mul_(mask)

    def _adjoint(self, y: torch.Tensor) -> torch.Tensor:
        _, conj_maps, mask, folded = self._factors(y.device, y.dtype)
        if not folded:
            coil_images = ifft2c(y if mask is None else y * mask)
            return coil_images if conj_maps is None else (coil_images * conj_maps).sum(dim=-3, keepdim=True)
        shape = torch.broadcast_shapes(y.shape, mask.shape)
        masked = torch.mul(y, mask, out=_workspace("kspace", shape, y.dtype, y.device))
        coil_images = torch.fft.ifft2(masked, norm="ortho", out=_workspace("coil_images", shape, y.dtype, y.device))
        return coil_images.mul_(conj_maps).sum(dim=-3, keepdim=True)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(coils={self.num_coils}, image_shape={self.domain_shape[-2:]})"


class FourierOperator(SenseOperator):
    """Single-coil Cartesian MRI: complex images ``(B, 1, H, W)`` to masked k-space ``(B, 1, H, W)``.

    ``y = M * fft2c(x)``; ``mask`` broadcasts to ``(B, 1, H, W)``; ``image_shape`` is ``(H, W)``.
    """

    def __init__(self, mask: torch.Tensor | None, image_shape: tuple[int, int]):
        height, width = (int(s) for s in image_shape)
        LinearOperator.__init__(self, (1, height, width), (1, height, width),
                                domain_kind="complex", range_kind="complex")
        self.coil_maps = None
        self.mask = None if mask is None else _check_mask(mask, self.range_shape)
        self._cache = {}
