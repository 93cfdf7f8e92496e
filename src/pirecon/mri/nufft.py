"""Non-Cartesian MRI: the non-uniform FFT as a linear operator, on torchkbnufft.

    y_c(k_j) = (1 / sqrt(H W)) sum_n S_c(n) x(n) exp(-i k_j . (n - n_0)),   n_0 = (H // 2, W // 2),

with ``k_j`` in radians per pixel in ``[-pi, pi)`` (row 0 along H, row 1 along
W). The scaling makes the operator agree with ``fft2c`` on Cartesian grid
points. torchkbnufft evaluates it with Kaiser-Bessel interpolation on an
oversampled grid; its adjoint is the exact transpose of that interpolation.
"""

from __future__ import annotations

import math

import torch

from .._validation import check_positive, check_tensor
from ..operators.base import LinearOperator
from .trajectories import check_trajectory

__all__ = ["NUFFTOperator"]


class NUFFTOperator(LinearOperator):
    """Images ``(B, 1, H, W)`` to non-Cartesian samples ``(B, coils, K)``.

    Parameters
    ----------
    trajectory : real tensor ``(2, K)`` or ``(B, 2, K)``
        Sample positions in radians, in ``[-pi, pi)``; a batch dimension gives each image its own trajectory.
    image_shape : (H, W)
    coil_maps : complex tensor ``(coils, H, W)`` or ``(B, coils, H, W)``, optional
        Without maps the operator is single-coil (``coils = 1``).
    numpoints : int
        Interpolation neighbours per dimension (accuracy about 1e-3 at the default 6).
    oversampling : float
        Grid oversampling factor.
    """

    def __init__(self, trajectory: torch.Tensor, image_shape, coil_maps: torch.Tensor | None = None, *,
                 numpoints: int = 6, oversampling: float = 2.0):
        check_trajectory(trajectory, "trajectory")
        height, width = (int(check_positive(s, "image_shape", integer=True)) for s in image_shape)
        num_coils = 1
        if coil_maps is not None:
            check_tensor(coil_maps, "coil_maps", kind="complex", min_ndim=3)
            if tuple(coil_maps.shape[-2:]) != (height, width):
                raise ValueError(f"coil_maps: expected shape (..., coils, {height}, {width}) to match image_shape, "
                                 f"found {tuple(coil_maps.shape)}")
            num_coils = coil_maps.shape[-3]
        super().__init__((1, height, width), (num_coils, trajectory.shape[-1]),
                         domain_kind="complex", range_kind="complex")
        self.trajectory = trajectory
        self.coil_maps = coil_maps
        self.numpoints = int(check_positive(numpoints, "numpoints", integer=True))
        self.oversampling = float(check_positive(oversampling, "oversampling"))
        self.scale = 1.0 / math.sqrt(height * width)
        self._cache: dict[tuple, tuple] = {}

    def _parts(self, device, dtype):
        """torchkbnufft forward and adjoint modules, trajectory and maps for ``dtype`` on ``device``."""
        key = (device, dtype)
        if key not in self._cache:
            import torchkbnufft as tkbn

            im_size = self.domain_shape[-2:]
            grid = tuple(int(math.ceil(self.oversampling * n)) for n in im_size)
            options = dict(im_size=im_size, grid_size=grid, numpoints=self.numpoints, dtype=dtype, device=device)
            maps = None if self.coil_maps is None else self.coil_maps.to(device=device, dtype=dtype)
            self._cache[key] = (tkbn.KbNufft(**options), tkbn.KbNufftAdjoint(**options),
                                self.trajectory.to(device=device, dtype=dtype.to_real()), maps)
        return self._cache[key]

    def _batched(self, tensor: torch.Tensor, trailing: int):
        batch = tensor.shape[: tensor.ndim - trailing]
        flat = tensor.reshape(-1, *tensor.shape[tensor.ndim - trailing:])
        if self.trajectory.ndim == 3 and flat.shape[0] != self.trajectory.shape[0]:
            raise ValueError(f"{type(self).__name__}: expected a batch of {self.trajectory.shape[0]} to match the "
                             f"per-image trajectories, found {flat.shape[0]}")
        return batch, flat

    def _maps_for(self, maps, n):
        if maps is None:
            return None
        return maps.expand(n, *maps.shape[-3:]) if maps.ndim == 3 else maps

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        forward, _, traj, maps = self._parts(x.device, x.dtype)
        batch, flat = self._batched(x.detach(), 3)
        y = forward(flat, traj, smaps=self._maps_for(maps, flat.shape[0]))
        return (y * self.scale).reshape(*batch, *self.range_shape)

    def _adjoint(self, y: torch.Tensor) -> torch.Tensor:
        _, adjoint, traj, maps = self._parts(y.device, y.dtype)
        batch, flat = self._batched(y.detach(), 2)
        x = adjoint(flat, traj, smaps=self._maps_for(maps, flat.shape[0]))
        return (x * self.scale).reshape(*batch, *self.domain_shape)

    def density_compensation(self) -> torch.Tensor:
        """Pipe-Menon density-compensation weights ``(1, 1, K)`` (``(B, 1, K)`` for per-image trajectories).

        ``A^H (w * y)`` is the density-compensated gridding reconstruction.
        """
        import torchkbnufft as tkbn

        return tkbn.calc_density_compensation_function(ktraj=self.trajectory, im_size=self.domain_shape[-2:])

    def __repr__(self) -> str:
        return (f"NUFFTOperator(samples={self.range_shape[-1]}, coils={self.range_shape[0]}, "
                f"image_shape={self.domain_shape[-2:]})")
