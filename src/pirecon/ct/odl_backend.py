"""The ``odl`` ray-transform backend: ODL 1.0's ``RayTransform`` on the same geometry.

pirecon images ``(H, W)`` have row 0 at the top and columns along x; ODL
arrays are indexed ``[ix, iy]`` with y growing. The backend converts between
the two (``odl = flip(image, rows).T``) so that its sinograms equal the other
backends'. ODL runs on NumPy through ASTRA (``astra_cpu`` by default,
``impl="astra_cuda"`` on request), so data pass through host memory. It is a
reference backend: with ``astra_cpu`` its adjoint is the exact transpose on
every machine.
"""

from __future__ import annotations

import numpy as np
import torch

from ..operators.odl_bridge import OdlOperator
from .geometry import FanBeam2D, ParallelBeam2D

__all__ = ["OdlBackend", "odl_ray_transform", "odl_fbp"]


def _angle_partition(angles):
    import odl

    a = np.asarray(angles)
    steps = np.diff(a)
    if a.size > 1 and np.allclose(steps, steps[0], rtol=0, atol=1e-12):
        return odl.uniform_partition(a[0] - steps[0] / 2, a[-1] + steps[0] / 2, a.size)
    return odl.nonuniform_partition(a)


def odl_ray_transform(geometry, impl: str = "astra_cpu"):
    """ODL's ``RayTransform`` for a pirecon 2D geometry, on ODL's axis convention."""
    import odl
    from odl.applications import tomo

    if not isinstance(geometry, (ParallelBeam2D, FanBeam2D)):
        raise ValueError(f"odl backend: expected ParallelBeam2D or FanBeam2D, found {type(geometry).__name__}")
    (height, width), (h, w) = geometry.image_shape, geometry.image_extent
    space = odl.uniform_discr([-w / 2, -h / 2], [w / 2, h / 2], (width, height), dtype="float32")
    n, s = geometry.num_detectors, geometry.detector_spacing
    apart = _angle_partition(geometry.angles)
    dpart = odl.uniform_partition(-n * s / 2, n * s / 2, n)
    if isinstance(geometry, ParallelBeam2D):
        odl_geometry = tomo.Parallel2dGeometry(apart, dpart)
    else:
        odl_geometry = tomo.FanBeamGeometry(apart, dpart, src_radius=geometry.source_distance,
                                            det_radius=geometry.detector_distance)
    return tomo.RayTransform(space, odl_geometry, impl=impl)


class OdlBackend:
    """Apply ``A`` and ``A^T`` through ODL's ``RayTransform``."""

    name = "odl"

    def __init__(self, geometry, impl: str = "astra_cpu"):
        self.geometry = geometry
        self.operator = OdlOperator(odl_ray_transform(geometry, impl))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.operator._forward(x.flip(-2).transpose(-2, -1))

    def adjoint(self, y: torch.Tensor) -> torch.Tensor:
        return self.operator._adjoint(y).transpose(-2, -1).flip(-2)


def odl_fbp(sinogram: torch.Tensor, geometry, filter: str = "ram-lak", frequency_scaling: float = 1.0) -> torch.Tensor:
    """ODL's ``fbp_op`` on a pirecon sinogram ``(..., angles, detectors)``, returned on pirecon's image axes.

    A reference for ``pirecon.ct.fbp``; runs item by item through NumPy in float32.
    """
    from odl.applications import tomo

    ray_trafo = odl_ray_transform(geometry)
    operator = tomo.fbp_op(ray_trafo, filter_type=filter, frequency_scaling=frequency_scaling)
    batch = sinogram.shape[:-2]
    items = sinogram.detach().reshape(-1, *geometry.sinogram_shape).cpu().numpy().astype(np.float32)
    images = [np.flip(np.asarray(operator(np.ascontiguousarray(item)).asarray()).T, 0) for item in items]
    out = torch.from_numpy(np.stack(images).copy()).to(device=sinogram.device, dtype=sinogram.dtype)
    return out.reshape(*batch, *geometry.image_shape)
