"""The one door from raw data to ``(y, Physics)``: a raw file, a slice range of it, or a training batch.

    acquisition = read_acquisition("train.h5")          # y, physics, ground truth: the file read once
    physics = physics_from_file("train.h5")             # the physics alone
    physics = BatchPhysics("ct", geometry)(batch)        # a batch's physics (training, prediction)
    y = measurement(batch)                               # a batch's raw data

Every reconstruction path (``pirecon reconstruct``, training, prediction, the main job, evaluation)
turns raw data into measurements and physics here, and nowhere else. Files are opened through the
spec (:func:`pirecon.data.validate.validate` runs inside the readers), so a bad file is refused
with one line naming the file, the key, what was expected and what was found.

Measurements are shaped as the operator expects them: CT sinograms ``(N, 1, angles, detectors)``
real; MRI k-space ``(N, coils, H, W)`` (Cartesian) or ``(N, coils, K)`` (non-Cartesian) complex.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..errors import PireconUserError
from ..physics import Physics
from .validate import SpecError

__all__ = ["Acquisition", "read_acquisition", "physics_from_file", "BatchPhysics", "measurement",
           "describe_physics", "check_same_physics", "PhysicsMismatchError"]


class PhysicsMismatchError(PireconUserError):
    """Data whose physics differs from the physics a model or a dataset expects; the message names both."""


@dataclass
class Acquisition:
    """Raw data of a file and their physics.

    Attributes
    ----------
    y : Tensor
        Measurements, ``(N, 1, angles, detectors)`` (CT) or ``(N, coils, H, W)`` / ``(N, coils, K)`` (MRI).
    physics : Physics
        The operator, noise model and metadata of these measurements (one physics for all ``N`` slices).
    ground_truth : Tensor or None
        ``(N, 1, H, W)``: real (CT) or complex (MRI), when the file has it.
    source : Path
        The file read.
    """

    y: torch.Tensor
    physics: Physics
    ground_truth: torch.Tensor | None
    source: Path

    def description(self) -> dict:
        """The physics as plain, comparable data (:func:`describe_physics`)."""
        return describe_physics(self.physics.modality, self.physics.metadata.get("geometry"), self.physics.noise)


def read_acquisition(path: str | Path, *, slices: slice | None = None, backend: str = "auto") -> Acquisition:
    """Read a raw CT or MRI file once (pirecon's spec or fastMRI) into measurements, physics and ground truth.

    ``slices`` selects slices (MRI maps and masks are per slice); ``backend`` is the CT ray transform's.
    """
    from .formats import read_ct_raw, read_mri_raw

    path = Path(path)
    selection = slices or slice(None)
    if _modality(path) == "ct":
        raw = read_ct_raw(path)
        physics = _ct_physics(raw.geometry, raw.noise, backend, path)
        y = torch.from_numpy(raw.sinogram[selection])[:, None]
    else:
        raw = read_mri_raw(path)
        physics = _mri_physics(raw, path, selection)
        y = torch.from_numpy(raw.kspace[selection])
    truth = None if raw.ground_truth is None else torch.from_numpy(raw.ground_truth[selection])[:, None]
    return Acquisition(y, physics, truth, path)


def physics_from_file(path: str | Path, *, backend: str = "auto", slices: slice | None = None) -> Physics:
    """The physics of a raw file, built from its own metadata.

    CT raw files give ``RayTransform(geometry, backend)`` and their noise model; reading them touches
    only their attributes. MRI files give a ``SenseOperator`` (Cartesian) or ``NUFFTOperator`` (with a
    trajectory) for their slices, using the stored coil maps, or maps estimated by ESPIRiT from the
    k-space's calibration region when the file has none (plain fastMRI files).
    """
    from .formats import read_ct_acquisition

    path = Path(path)
    if _modality(path) == "ct":
        return _ct_physics(*read_ct_acquisition(path), backend, path)
    return read_acquisition(path, slices=slices).physics


def _modality(path: Path) -> str:
    """``"ct"`` or ``"mri"`` for a raw file; :class:`SpecError` for any other file."""
    from .formats import file_kind

    kind = file_kind(path)
    if kind == "ct_raw":
        return "ct"
    if kind in ("mri_raw", "fastmri"):
        return "mri"
    raise SpecError(path, "attrs/pirecon_format", "a raw CT or MRI file", f"a {kind!r} file")


def _ct_physics(geometry, noise, backend: str, path: Path | None) -> Physics:
    from ..ct import RayTransform

    metadata: dict[str, Any] = {"geometry": geometry}
    if path is not None:
        metadata["file"] = str(path)
    return Physics(RayTransform(geometry, backend=backend), noise, "ct", metadata)


def _mri_physics(raw, path: Path, slices: slice) -> Physics:
    from ..mri import NUFFTOperator, SenseOperator, espirit_maps

    kspace = torch.from_numpy(raw.kspace[slices])
    mask = None if raw.mask is None else torch.from_numpy(raw.mask)
    if mask is not None and mask.ndim == 4 and mask.shape[0] == raw.kspace.shape[0]:
        mask = mask[slices]
    if raw.coil_maps is not None:
        maps = torch.from_numpy(raw.coil_maps)
        if maps.ndim == 4:  # per slice; a (coils, H, W) array is shared by every slice
            maps = maps[slices]
        source = "file"
    elif raw.trajectory is None:
        maps = espirit_maps(kspace)
        source = "espirit"
    else:
        raise SpecError(path, "coil_maps", "coil maps for non-Cartesian data", "none")
    metadata = {"coil_maps": maps, "coil_maps_source": source, "mask": mask, "file": str(path)}
    if raw.trajectory is not None:
        trajectory = torch.from_numpy(raw.trajectory)
        operator = NUFFTOperator(trajectory, maps.shape[-2:], coil_maps=maps)
        metadata["trajectory"] = trajectory
    else:
        operator = SenseOperator(maps, mask)
    return Physics(operator, raw.noise, "mri", metadata)


# --------------------------------------------------------------------------
# Batches
# --------------------------------------------------------------------------

def measurement(batch: dict) -> torch.Tensor:
    """The raw data of a batch: sinograms ``(B, 1, angles, detectors)`` or k-space ``(B, coils, H, W)``."""
    for key in ("sinogram", "kspace"):
        if key in batch:
            return batch[key]
    raise ValueError(f"batch: expected a 'sinogram' or 'kspace' entry, found keys {sorted(batch)}")


class BatchPhysics:
    """Builds the ``Physics`` of the batches of one dataset.

    CT batches share one geometry (of the files or the simulation), so one ``RayTransform`` serves
    every batch. MRI batches carry their own coil maps ``(B, coils, H, W)`` and masks ``(B, 1, 1, W)``,
    so each batch gets its own ``SenseOperator``; batches without maps (plain fastMRI) get ESPIRiT
    maps estimated from the batch's calibration region.

    Parameters
    ----------
    modality : {"ct", "mri"}
    geometry : CT geometry, required for CT
    noise : NoiseModel, optional
        Recorded in the physics (the data are already noisy).
    backend : str
        ``RayTransform`` backend for CT.
    missing_coil_maps : {"espirit", "uniform"}
        MRI batches without coil maps: ESPIRiT maps from the batch's calibration region, or uniform
        maps ``1 / sqrt(coils)`` (cheap; only for models that estimate their own maps, like VarNet,
        which use the physics' mask alone).
    """

    def __init__(self, modality: str, geometry=None, noise=None, backend: str = "auto",
                 missing_coil_maps: str = "espirit"):
        if modality not in ("ct", "mri"):
            raise ValueError(f"modality: expected 'ct' or 'mri', found {modality!r}")
        if missing_coil_maps not in ("espirit", "uniform"):
            raise ValueError(f"missing_coil_maps: expected 'espirit' or 'uniform', found {missing_coil_maps!r}")
        self.missing_coil_maps = missing_coil_maps
        if modality == "ct" and geometry is None:
            raise ValueError("geometry: expected a CT geometry for CT batches, found None")
        self.modality, self.geometry, self.noise, self.backend = modality, geometry, noise, backend
        self._ct: Physics | None = None

    def __call__(self, batch: dict) -> Physics:
        if self.modality == "ct":
            if self._ct is None:
                self._ct = _ct_physics(self.geometry, self.noise, self.backend, None)
            return self._ct
        return self._mri(batch)

    def description(self) -> dict:
        """``{"modality", "geometry", "noise"}`` as plain data (what a checkpoint stores)."""
        return describe_physics(self.modality, self.geometry, self.noise)

    def _mri(self, batch: dict) -> Physics:
        from ..mri import SenseOperator, espirit_maps

        if "trajectory" in batch:
            raise ValueError("batch: non-Cartesian k-space (a 'trajectory' entry) is not supported in training; "
                             "expected Cartesian k-space")
        kspace = batch["kspace"]
        maps = batch.get("coil_maps")
        source = "batch"
        if maps is None and self.missing_coil_maps == "uniform":
            maps = torch.full(kspace.shape[1:], kspace.shape[1] ** -0.5, dtype=kspace.dtype, device=kspace.device)
            source = "uniform"
        elif maps is None:
            with torch.no_grad():
                maps = espirit_maps(kspace.cpu()).to(kspace.device)
            source = "espirit"
        mask = batch.get("mask")
        return Physics(SenseOperator(maps, mask), self.noise, "mri",
                       {"coil_maps": maps, "mask": mask, "coil_maps_source": source})


# --------------------------------------------------------------------------
# Comparing physics (checkpoint against data)
# --------------------------------------------------------------------------

def describe_physics(modality: str, geometry=None, noise=None) -> dict:
    """The physics of a dataset as plain, comparable data: modality, geometry dict, noise dict."""
    return {"modality": modality,
            "geometry": None if geometry is None else geometry.to_dict(),
            "noise": None if noise is None else noise.to_dict()}


def check_same_physics(stored: dict, found: dict, *, stored_name: str, found_name: str) -> None:
    """Raise :class:`PhysicsMismatchError` naming both sides when two physics descriptions differ (modality,
    geometry or noise model)."""
    for key in ("modality", "geometry", "noise"):
        a, b = stored.get(key), found.get(key)
        if a != b:
            shown_a, shown_b = _shown(key, a), _shown(key, b)
            if shown_a == shown_b:  # the same summary: name the fields that differ
                fields = ", ".join(sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k)))
                shown_a, shown_b = f"{shown_a} (differs in {fields})", f"{shown_b} (differs in {fields})"
            raise PhysicsMismatchError(f"physics mismatch in {key}: {stored_name} has {shown_a}, {found_name} has {shown_b}")


def _shown(key: str, value) -> str:
    """A one-line summary of one entry of a physics description."""
    if value is None:
        return "none"
    if key == "geometry":
        from ..ct import geometry_from_dict

        return repr(geometry_from_dict(value))
    if key == "noise":
        from ..noise import noise_from_dict

        return repr(noise_from_dict(value))
    return repr(value)
