"""``RayTransform``: the CT forward operator, line integrals in mm, with interchangeable backends."""

from __future__ import annotations

import logging

import torch

from .._validation import check_choice
from ..operators.base import LinearOperator
from .astra_backend import AstraBackend
from .geometry import ConeBeam3D, FanBeam2D, Geometry, ParallelBeam2D
from .odl_backend import OdlBackend
from .sparse_backend import SparseBackend, SparseBudgetError

__all__ = ["RayTransform", "BACKENDS"]

BACKENDS = ("auto", "sparse", "astra", "odl")
log = logging.getLogger(__name__)


class RayTransform(LinearOperator):
    """The ray transform ``A`` of a geometry: images ``(..., H, W)`` to sinograms ``(..., angles, detectors)``.

    ``(A x)[theta, s]`` approximates the integral of ``x`` along the ray at
    angle ``theta`` and detector position ``s``, in mm (image values times
    mm). Cone-beam volumes are ``(..., D, H, W)`` and sinograms
    ``(..., angles, rows, cols)``. ``A.T`` is the backend's back-projection,
    and autograd applies it in the backward pass: the exact transpose for
    ``sparse`` (CPU and CUDA) and for ``astra`` and ``odl`` on the CPU (up to
    float32 rounding); ASTRA's CUDA back-projector is only approximately the
    transpose of its forward projector.

    Parameters
    ----------
    geometry : ParallelBeam2D, FanBeam2D or ConeBeam3D
    backend : {"auto", "sparse", "astra", "odl"}
        ``sparse``: cached Joseph system matrix, torch CSR products, CPU and
        CUDA. ``astra``: ASTRA Toolbox projectors (CPU 2D; CUDA 2D/3D on
        the tensor's GPU memory). ``odl``: ODL's ``RayTransform``.
        ``auto``: ``sparse`` for 2D geometries within its memory budget,
        else ``astra``.
    max_bytes : int, optional
        Memory budget of the ``sparse`` backend (see ``SparseBackend``).
    """

    device_types = ("cpu", "cuda")

    def __init__(self, geometry: Geometry, backend: str = "auto", *, max_bytes: int | None = None):
        if not isinstance(geometry, (ParallelBeam2D, FanBeam2D, ConeBeam3D)):
            raise TypeError(
                f"geometry: expected ParallelBeam2D, FanBeam2D or ConeBeam3D, found {type(geometry).__name__}"
            )
        backend = check_choice(backend, "backend", BACKENDS)
        if isinstance(geometry, ConeBeam3D):
            if backend in ("sparse", "odl"):
                raise ValueError(f"backend: expected 'astra' or 'auto' for ConeBeam3D, found {backend!r}")
            backend = "astra"  # AstraBackend says clearly when CUDA is missing
        super().__init__(geometry.image_shape, geometry.sinogram_shape)
        self.geometry = geometry
        if backend == "auto":
            try:
                self.impl = SparseBackend(geometry, max_bytes=max_bytes)
            except SparseBudgetError as err:
                log.info("RayTransform: %s; falling back to the astra backend", err)
                self.impl = AstraBackend(geometry)
        elif backend == "sparse":
            self.impl = SparseBackend(geometry, max_bytes=max_bytes)
        elif backend == "astra":
            self.impl = AstraBackend(geometry)
        else:
            self.impl = OdlBackend(geometry)

    @property
    def backend(self) -> str:
        """Name of the backend in use: ``"sparse"``, ``"astra"`` or ``"odl"``."""
        return self.impl.name

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.impl.forward(x)

    def _adjoint(self, y: torch.Tensor) -> torch.Tensor:
        return self.impl.adjoint(y)

    def __repr__(self) -> str:
        return f"RayTransform({self.geometry!r}, backend={self.backend!r})"
