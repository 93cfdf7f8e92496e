"""The ``astra`` ray-transform backend: ASTRA Toolbox projectors fed torch tensors through DLPack.

CPU tensors use ASTRA's CPU projectors (``linear``, i.e. Joseph, for parallel
beams; ``line_fanflat`` for fan beams); their back-projection is the exact
transpose of the forward projection. CUDA tensors use ASTRA's CUDA projectors
on the tensor's own GPU memory (``astra.experimental.direct_FP2D`` /
``direct_FP3D`` accept DLPack objects), so nothing goes through the host;
ASTRA's CUDA back-projector is pixel-driven and only approximately the
transpose of its ray-driven forward projector (use ``sparse`` on CUDA where
exact adjoints matter). ASTRA computes in float32; float64 inputs are cast
and the result cast back.
"""

from __future__ import annotations

import torch

from .._validation import BackendUnavailableError
from .geometry import ConeBeam3D, ParallelBeam2D

__all__ = ["AstraBackend", "astra_cuda_available"]


def astra_cuda_available() -> bool:
    """True when both torch and ASTRA see a CUDA device."""
    if not torch.cuda.is_available():
        return False
    import astra

    return bool(astra.use_cuda())


class AstraBackend:
    """Apply ``A`` and ``A^T`` with ASTRA; one projector per device, created on first use."""

    name = "astra"

    def __init__(self, geometry):
        import astra  # noqa: F401  (fail early if ASTRA is missing)

        if isinstance(geometry, ConeBeam3D) and not astra_cuda_available():
            raise BackendUnavailableError(
                "ConeBeam3D: the cone-beam ray transform runs on ASTRA's CUDA projectors and needs a CUDA GPU; "
                "found none (torch.cuda.is_available() or astra.use_cuda() is False)"
            )
        self.geometry = geometry
        self._projectors: dict[torch.device, int] = {}

    def _projector(self, device: torch.device) -> int:
        import astra

        if device not in self._projectors:
            g = self.geometry
            if device.type == "cuda":
                if not astra_cuda_available():
                    raise BackendUnavailableError(
                        "astra backend: got a CUDA tensor but this ASTRA build or machine has no CUDA support"
                    )
                kind = "cuda3d" if isinstance(g, ConeBeam3D) else "cuda"
                pid = astra.create_projector(kind, g.astra_projection_geometry(), g.astra_volume_geometry(),
                                             options={"GPUIndex": device.index or 0})
            elif device.type == "cpu":
                if isinstance(g, ConeBeam3D):
                    raise BackendUnavailableError(
                        "ConeBeam3D: expected a CUDA tensor (ASTRA has no CPU cone-beam projector), found a CPU tensor"
                    )
                kind = "linear" if isinstance(g, ParallelBeam2D) else "line_fanflat"
                pid = astra.create_projector(kind, g.astra_projection_geometry(), g.astra_volume_geometry())
            else:
                raise BackendUnavailableError(f"astra backend: expected a CPU or CUDA tensor, found device {device}")
            self._projectors[device] = pid
        return self._projectors[device]

    def _run(self, x: torch.Tensor, in_shape, out_shape, adjoint: bool) -> torch.Tensor:
        if x.device.type == "cuda":
            with torch.cuda.device(x.device):
                torch.cuda.current_stream().synchronize()  # ASTRA runs on its own stream
                return self._run_on_device(x, in_shape, out_shape, adjoint)
        return self._run_on_device(x, in_shape, out_shape, adjoint)

    def _run_on_device(self, x: torch.Tensor, in_shape, out_shape, adjoint: bool) -> torch.Tensor:
        import astra
        import astra.experimental as ax

        pid = self._projector(x.device)
        if x.device.type == "cuda" and isinstance(self.geometry, ConeBeam3D):
            astra.set_gpu_index(x.device.index or 0)  # ASTRA's 3D calls use its global GPU setting
        batch = x.shape[: x.ndim - len(in_shape)]
        work = x.detach().reshape(-1, *in_shape).to(torch.float32).contiguous()
        cone = isinstance(self.geometry, ConeBeam3D)
        if cone:
            # ASTRA's 3D projection layout is (rows, angles, cols); ours is (angles, rows, cols).
            if adjoint:
                work = work.permute(0, 2, 1, 3).contiguous()
            else:
                out_shape = (out_shape[1], out_shape[0], out_shape[2])
        # NaN-filled: ASTRA overwrites the output, and a call that fails without raising leaves NaN behind
        out = torch.full((work.shape[0], *out_shape), float("nan"), dtype=torch.float32, device=x.device)
        for i in range(work.shape[0]):
            if cone:
                if adjoint:
                    ax.direct_BP3D(pid, out[i], work[i])
                else:
                    ax.direct_FP3D(pid, work[i], out[i])
            elif adjoint:
                ax.direct_BP2D(pid, out[i], work[i])
            else:
                ax.direct_FP2D(pid, work[i], out[i])
        if bool(torch.isnan(out).any()):
            raise RuntimeError(f"astra backend: ASTRA left part of the {'back-' if adjoint else ''}projection "
                               f"unwritten on {x.device} (a failed call, e.g. out of GPU memory, or NaN in the input)")
        if cone and not adjoint:
            out = out.permute(0, 2, 1, 3)
        return out.reshape(*batch, *out.shape[1:]).to(x.dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._run(x, self.geometry.image_shape, self.geometry.sinogram_shape, adjoint=False)

    def adjoint(self, y: torch.Tensor) -> torch.Tensor:
        return self._run(y, self.geometry.sinogram_shape, self.geometry.image_shape, adjoint=True)

    def __del__(self):
        try:
            import astra

            for pid in self._projectors.values():
                if isinstance(self.geometry, ConeBeam3D):
                    astra.projector3d.delete(pid)
                else:
                    astra.projector.delete(pid)
        except Exception:
            pass


