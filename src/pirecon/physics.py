"""``Physics``: the one object that travels from raw data to every reconstructor.

A ``Physics`` bundles the forward operator ``A``, the noise model of the
acquisition and the metadata needed to rebuild both (geometry, coil maps,
mask). Every reconstructor, classical or learned, takes ``(y, physics)``.

    physics(x)                  A x, noise-free
    physics.simulate(x, seed)   noise(A x)
    Physics.from_file(path)     built from a raw file's own metadata
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from .noise import NoiseModel
from .operators.base import LinearOperator

__all__ = ["Physics"]


@dataclass
class Physics:
    """Forward operator, noise model and acquisition metadata.

    Attributes
    ----------
    operator : LinearOperator
        ``A``: images ``(B, C, H, W)`` to measurements (sinograms or k-space).
    noise : NoiseModel or None
        How measurements were (or are to be) corrupted; ``None`` for noise-free data.
    modality : {"ct", "mri"}
    metadata : dict
        What the operator was built from: ``geometry`` (CT), ``coil_maps`` / ``mask`` / ``trajectory`` (MRI),
        and the file it came from.
    """

    operator: LinearOperator
    noise: NoiseModel | None = None
    modality: str = "ct"
    metadata: dict[str, Any] = field(default_factory=dict)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """Noise-free measurements ``A x``."""
        return self.operator(x)

    def adjoint(self, y: torch.Tensor) -> torch.Tensor:
        """``A^H y``."""
        return self.operator.adjoint(y)

    def simulate(self, x: torch.Tensor, seed: int | torch.Generator | None = None) -> torch.Tensor:
        """Noisy measurements ``noise(A x)`` (``A x`` when the physics has no noise model)."""
        y = self.operator(x)
        return y if self.noise is None else self.noise(y, seed=seed)

    @classmethod
    def from_file(cls, path: str | Path, *, backend: str = "auto", slices: slice | None = None) -> "Physics":
        """Build the physics of a raw file from its own metadata.

        CT raw files give ``RayTransform(geometry, backend)`` and their noise model. MRI files give a
        ``SenseOperator`` (Cartesian) or ``NUFFTOperator`` (with a trajectory) for their slices, using the
        stored coil maps, or maps estimated by ESPIRiT from the k-space's calibration region when the
        file has none (plain fastMRI files). ``slices`` selects slices of an MRI file (maps and masks
        are per slice).
        """
        from .data.formats import file_kind, read_ct_acquisition, read_mri_raw

        path = Path(path)
        kind = file_kind(path)
        if kind == "ct_raw":
            from .ct import RayTransform

            geometry, noise = read_ct_acquisition(path)
            return cls(RayTransform(geometry, backend=backend), noise, "ct", {"geometry": geometry, "file": str(path)})
        if kind in ("mri_raw", "fastmri"):
            return cls._mri_from_raw(read_mri_raw(path), path, slices or slice(None))
        raise ValueError(f"{path}: expected a raw CT or MRI file, found a {kind!r} file")

    @classmethod
    def _mri_from_raw(cls, raw, path: Path, slices: slice) -> "Physics":
        from .mri import NUFFTOperator, SenseOperator, espirit_maps

        kspace = torch.from_numpy(raw.kspace[slices])
        mask = None if raw.mask is None else torch.from_numpy(raw.mask)
        if mask is not None and mask.ndim == 4 and mask.shape[0] == raw.kspace.shape[0]:
            mask = mask[slices]
        if raw.coil_maps is not None:
            maps = torch.from_numpy(raw.coil_maps[slices])
            source = "file"
        elif raw.trajectory is None:
            maps = espirit_maps(kspace)
            source = "espirit"
        else:
            raise ValueError(f"{path}: expected coil_maps for non-Cartesian data, found none")
        metadata = {"coil_maps": maps, "coil_maps_source": source, "mask": mask, "file": str(path)}
        if raw.trajectory is not None:
            trajectory = torch.from_numpy(raw.trajectory)
            operator = NUFFTOperator(trajectory, maps.shape[-2:], coil_maps=maps)
            metadata["trajectory"] = trajectory
        else:
            operator = SenseOperator(maps, mask)
        return cls(operator, None, "mri", metadata)
