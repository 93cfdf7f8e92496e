"""Cartesian MRI forward operators: single-coil masked Fourier and multi-coil SENSE.

    SENSE:   y_c = M * fft2c(S_c * x),     A^H y = sum_c conj(S_c) * ifft2c(M * y_c)

with images ``x`` of shape ``(B, 1, H, W)``, coil maps ``S`` of shape
``(B, coils, H, W)`` or ``(coils, H, W)``, a real sampling mask ``M`` that
broadcasts to the k-space ``(B, coils, H, W)``, and fastMRI's centred
orthonormal FFT. For even ``H`` and ``W`` the FFT shifts are folded into the
maps and the mask once (``fft2c(z) = m * fft2(c * z)``, see
``pirecon.mri.fft``), so each application is one multiply, one FFT and one
multiply, with no shifted copies. For a line mask (whole phase-encoding columns, the same in every row
and coil, at most half of them sampled) only the sampled columns are transformed: the DFT along ``W``
onto them is a matrix product ``(.., W) @ (W, K)`` (a quarter of the output at 4x, no FFT over the
columns that are masked out anyway), the FFT along ``H`` runs over those ``K`` columns, and the adjoint
goes back the same way.
Intermediate coil-sized arrays go to
per-thread workspaces reused across calls: allocating fresh ones costs more
than the multiplies themselves (page faults on every large allocation).
"""

from __future__ import annotations

import threading

import torch

from .._validation import check_positive, check_tensor
from ..operators.base import LinearOperator
from .fft import fft2c, ifft2c, modulation

__all__ = ["SenseOperator", "FourierOperator"]


def _check_mask(mask, kspace_shape: tuple[int, ...]) -> torch.Tensor:
    """A real (or bool) mask of at most 4 dims whose trailing dims broadcast to ``kspace_shape`` (coils, H, W)."""
    if isinstance(mask, torch.Tensor) and mask.dtype == torch.bool:
        mask = mask.float()
    check_tensor(mask, "mask", kind="real")
    if mask.requires_grad:
        raise ValueError("mask: expected a fixed tensor, found one that requires grad (the operator treats it as a constant)")
    trailing = tuple(mask.shape[-len(kspace_shape):]) if mask.ndim >= len(kspace_shape) else tuple(mask.shape)
    padded = (1,) * (len(kspace_shape) - len(trailing)) + trailing
    if not 1 <= mask.ndim <= 4 or any(m not in (1, k) for m, k in zip(padded, kspace_shape)):
        raise ValueError(f"mask: expected 1 to 4 dims broadcasting to (B, {', '.join(map(str, kspace_shape))}), "
                         f"found {tuple(mask.shape)}")
    return mask


_workspaces = threading.local()


def _workspace(slot: str, shape, dtype, device) -> torch.Tensor | None:
    """A reusable CPU scratch tensor for this thread (``None`` on other devices, whose allocators cache).

    Its contents are overwritten by the caller; it is never returned to users.
    """
    if device.type != "cpu":
        return None
    cache = getattr(_workspaces, "tensors", None)
    if cache is None:
        cache = _workspaces.tensors = {}
    key = (slot, tuple(shape), dtype)
    tensor = cache.get(key)
    if tensor is None or (tensor.is_inference() and not torch.is_inference_mode_enabled()):
        if len(cache) >= 8:  # shapes changed many times: start over rather than hoard memory
            cache.clear()
        with torch.inference_mode(False):  # usable inside and outside inference mode
            tensor = cache[key] = torch.empty(shape, dtype=dtype, device=device)
    return tensor


class SenseOperator(LinearOperator):
    """Multi-coil Cartesian MRI: complex images ``(B, 1, H, W)`` to masked k-space ``(B, coils, H, W)``.

    Parameters
    ----------
    coil_maps : complex tensor ``(coils, H, W)`` or ``(B, coils, H, W)``
        Coil sensitivities, fixed (not differentiated); a batch dimension makes the operator specific
        to a batch of that size.
    mask : real or bool tensor, optional
        Sampling mask broadcastable to ``(B, coils, H, W)``, e.g. ``(B, 1, 1, W)`` for Cartesian lines.
        ``None`` samples everything.

    Maps and mask are read-only after construction (their folded copies are cached); build a new
    operator for new ones.
    """

    def __init__(self, coil_maps: torch.Tensor, mask: torch.Tensor | None = None):
        check_tensor(coil_maps, "coil_maps", kind="complex")
        if coil_maps.ndim not in (3, 4) or coil_maps.shape[-3] == 0:
            raise ValueError(f"coil_maps: expected shape (coils, H, W) or (B, coils, H, W), found {tuple(coil_maps.shape)}")
        if coil_maps.requires_grad:
            raise ValueError("coil_maps: expected fixed maps, found a tensor that requires grad "
                             "(the operator does not differentiate with respect to its maps)")
        num_coils, height, width = coil_maps.shape[-3:]
        self._setup(coil_maps, mask, num_coils, height, width)

    def _setup(self, coil_maps, mask, num_coils: int, height: int, width: int) -> None:
        LinearOperator.__init__(self, (1, height, width), (num_coils, height, width),
                                domain_kind="complex", range_kind="complex")
        self._coil_maps = coil_maps
        self._mask = None if mask is None else _check_mask(mask, self.range_shape)
        if coil_maps is not None and self._mask is not None and self._mask.ndim == 4 and coil_maps.ndim == 4 \
                and 1 not in (self._mask.shape[0], coil_maps.shape[0]) and self._mask.shape[0] != coil_maps.shape[0]:
            raise ValueError(f"mask: expected a batch of {coil_maps.shape[0]} like coil_maps, found {self._mask.shape[0]}")
        self._cache: dict[tuple, tuple] = {}

    @property
    def coil_maps(self) -> torch.Tensor | None:
        return self._coil_maps

    @property
    def mask(self) -> torch.Tensor | None:
        return self._mask

    @property
    def num_coils(self) -> int:
        return self.range_shape[0]

    def _factors(self, device, dtype) -> tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor | None, bool]:
        """Maps, their conjugate and the mask in ``dtype`` on ``device``, FFT shifts folded in for even sizes.

        When folded, maps and mask are never ``None`` (single coil: the checkerboard itself).
        """
        key = (device, dtype)
        if key not in self._cache:
            real = dtype.to_real()
            maps = None if self._coil_maps is None else self._coil_maps.to(device=device, dtype=dtype)
            mask = None if self._mask is None else self._mask.to(device=device, dtype=real)
            folded = modulation(self.range_shape[-2:], dtype=real, device=device)
            if folded is not None:
                checker, sign = folded
                maps = checker if maps is None else maps * checker
                mask = checker * sign if mask is None else mask * checker * sign
            conj_maps = None if maps is None else maps.conj().resolve_conj()
            self._cache[key] = (maps, conj_maps, mask, folded is not None)
        return self._cache[key]

    def _line_columns(self, device, dtype) -> list[tuple[torch.Tensor, torch.Tensor]] | None:
        """For a line mask ``(B or 1, 1, 1, W)`` sampling at most half the columns: per mask item, the sampled
        columns and the orthonormal DFT along ``W`` onto them, ``F[w, j] = exp(-2 pi i w c_j / W) / sqrt(W)``
        (``(W, K)``, computed in float64); ``None`` for other masks."""
        mask = self._mask
        if mask is None or mask.ndim != 4 or mask.shape[-3:-1] != (1, 1):
            return None
        key = ("columns", device, dtype)
        if key not in self._cache:
            sampled = mask[:, 0, 0] != 0  # (B or 1, W)
            width = sampled.shape[-1]
            groups = None
            if sampled.double().mean() <= 0.5:
                w = torch.arange(width, dtype=torch.float64)
                groups = []
                for row in sampled:
                    cols = torch.nonzero(row).flatten()
                    dft = torch.polar(torch.full((width, len(cols)), width ** -0.5, dtype=torch.float64),
                                      -2 * torch.pi * torch.outer(w, cols.double()) / width)
                    groups.append((cols.to(device), dft.to(device=device, dtype=dtype)))
            self._cache[key] = groups
        return self._cache[key]

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        maps, _, mask, folded = self._factors(x.device, x.dtype)
        columns = self._line_columns(x.device, x.dtype) if folded and x.ndim == 4 else None
        if columns is not None:
            return self._forward_columns(x, maps, mask, columns)
        if not folded:
            k = fft2c(x if maps is None else x * maps)
            return k if mask is None else k * mask
        images_shape = torch.broadcast_shapes(x.shape, maps.shape)
        coil_images = torch.mul(x, maps, out=_workspace("coil_images", images_shape, x.dtype, x.device))
        k = torch.fft.fft2(coil_images, norm="ortho")
        # in place unless the mask adds a batch dimension the image and maps lack
        return k.mul_(mask) if torch.broadcast_shapes(k.shape, mask.shape) == k.shape else k * mask

    def _forward_columns(self, x, maps, mask, columns) -> torch.Tensor:
        """``fft2(x * maps) * mask`` for a line mask: the DFT along ``W`` onto the sampled columns alone (a matrix
        product), then the FFT along ``H`` on those columns; the other columns are zero."""
        images_shape = torch.broadcast_shapes(x.shape, maps.shape)
        coil_images = torch.mul(x, maps, out=_workspace("coil_images", images_shape, x.dtype, x.device))
        k = coil_images.new_zeros(torch.broadcast_shapes(images_shape, mask.shape))
        for item, (cols, dft) in _column_groups(columns):
            if len(cols) == 0:  # nothing sampled for this item: its k-space stays zero
                continue
            sampled = torch.fft.fft(torch.matmul(_take(coil_images, item), dft), dim=-2, norm="ortho")
            _take(k, item).index_copy_(-1, cols, sampled.mul_(_take(mask, item).index_select(-1, cols)))
        return k

    def _adjoint_columns(self, y, conj_maps, mask, columns) -> torch.Tensor:
        """``sum_c conj(maps) * ifft2(mask * y)`` for a line mask: the inverse FFT along ``H`` on the sampled
        columns, then the inverse DFT along ``W`` from them (a matrix product), then the coil sum."""
        kspace_shape = torch.broadcast_shapes(y.shape, mask.shape)
        coil_images = _workspace("coil_images", kspace_shape, y.dtype, y.device)
        if coil_images is None:
            coil_images = y.new_empty(kspace_shape)
        for item, (cols, dft) in _column_groups(columns):
            target = _take(coil_images, item)
            if len(cols) == 0:
                target.zero_()
                continue
            sampled = _take(y, item).index_select(-1, cols).mul_(_take(mask, item).index_select(-1, cols))
            sampled = torch.fft.ifft(sampled, dim=-2, norm="ortho").expand(*target.shape[:-1], -1)
            torch.matmul(sampled, dft.mH, out=target)
        if torch.broadcast_shapes(kspace_shape, conj_maps.shape) == kspace_shape:
            return coil_images.mul_(conj_maps).sum(dim=-3, keepdim=True)
        return (coil_images * conj_maps).sum(dim=-3, keepdim=True)

    def _adjoint(self, y: torch.Tensor) -> torch.Tensor:
        _, conj_maps, mask, folded = self._factors(y.device, y.dtype)
        columns = self._line_columns(y.device, y.dtype) if folded and y.ndim == 4 else None
        if columns is not None:
            return self._adjoint_columns(y, conj_maps, mask, columns)
        if not folded:
            coil_images = ifft2c(y if mask is None else y * mask)
            return coil_images if conj_maps is None else (coil_images * conj_maps).sum(dim=-3, keepdim=True)
        kspace_shape = torch.broadcast_shapes(y.shape, mask.shape)
        masked = torch.mul(y, mask, out=_workspace("kspace", kspace_shape, y.dtype, y.device))
        coil_images = torch.fft.ifft2(masked, norm="ortho",
                                      out=_workspace("coil_images", kspace_shape, y.dtype, y.device))
        if torch.broadcast_shapes(kspace_shape, conj_maps.shape) == kspace_shape:
            return coil_images.mul_(conj_maps).sum(dim=-3, keepdim=True)
        return (coil_images * conj_maps).sum(dim=-3, keepdim=True)  # the maps add a batch dimension

    def __repr__(self) -> str:
        return f"{type(self).__name__}(coils={self.num_coils}, image_shape={self.domain_shape[-2:]})"


def _column_groups(columns: list):
    """``(item, group)`` pairs: ``item`` ``None`` (the whole batch) for a mask without a batch, else ``0..B-1``."""
    if len(columns) == 1:
        return [(None, columns[0])]
    return list(enumerate(columns))


def _take(t: torch.Tensor, item: int | None) -> torch.Tensor:
    """Batch item ``item`` of ``t`` as a view keeping the batch dimension (``t`` itself for ``None``; item 0 of a
    tensor without a batch of its own)."""
    if item is None:
        return t
    index = item if t.shape[0] > 1 else 0
    return t[index:index + 1]


class FourierOperator(SenseOperator):
    """Single-coil Cartesian MRI: complex images ``(B, 1, H, W)`` to masked k-space ``(B, 1, H, W)``.

    ``y = M * fft2c(x)``; ``mask`` broadcasts to ``(B, 1, H, W)``; ``image_shape`` is ``(H, W)``.
    """

    def __init__(self, mask: torch.Tensor | None, image_shape: tuple[int, int]):
        shape = tuple(image_shape) if isinstance(image_shape, (tuple, list, torch.Size)) else None
        if shape is None or len(shape) != 2:
            raise ValueError(f"image_shape: expected (H, W), found {image_shape!r}")
        height, width = (int(check_positive(s, "image_shape", integer=True)) for s in shape)
        self._setup(None, mask, 1, height, width)
