"""The ``Physics`` of a training batch, its measurements and its target.

CT batches share one geometry (of the files or the simulation), so one ``RayTransform`` serves
every batch. MRI batches carry their own coil maps ``(B, coils, H, W)`` and masks ``(B, 1, 1, W)``,
so each batch gets its own ``SenseOperator``; files without maps (plain fastMRI) get ESPIRiT maps
estimated from the batch's calibration region.
"""

from __future__ import annotations

import torch

from ..physics import Physics

__all__ = ["BatchPhysics", "measurement", "target_and_prediction", "center_crop"]


def measurement(batch: dict) -> torch.Tensor:
    """The raw data of a batch: sinograms ``(B, 1, angles, detectors)`` or k-space ``(B, coils, H, W)``."""
    for key in ("sinogram", "kspace"):
        if key in batch:
            return batch[key]
    raise ValueError(f"batch: expected a 'sinogram' or 'kspace' entry, found keys {sorted(batch)}")


def center_crop(x: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
    """The central ``shape = (h, w)`` of the last two dimensions of ``x``."""
    height, width = x.shape[-2:]
    h, w = shape
    if h > height or w > width:
        raise ValueError(f"center_crop: expected a crop of at most {(height, width)}, found {(h, w)}")
    top, left = (height - h) // 2, (width - w) // 2
    return x[..., top:top + h, left:left + w]


def target_and_prediction(batch: dict, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(target, prediction)`` compared by losses and metrics, same shape ``(B, 1, h, w)``.

    The target is the batch's ``ground_truth`` (the prediction as it is: real for CT, complex for
    MRI); without one, fastMRI's ``reconstruction_rss`` (magnitude), compared with the magnitude of
    the reconstruction cropped to its size.
    """
    if "ground_truth" in batch:
        target = batch["ground_truth"]
        if target.is_complex() != image.is_complex():
            target = target.abs() if target.is_complex() else target
            image = image.abs() if image.is_complex() else image
        return target.to(image.dtype), image
    if "reconstruction_rss" in batch:
        target = batch["reconstruction_rss"]
        prediction = image.abs() if image.is_complex() else image
        return target.to(prediction.dtype), center_crop(prediction, tuple(target.shape[-2:]))
    raise ValueError(f"batch: expected a 'ground_truth' or 'reconstruction_rss' target, found keys {sorted(batch)}")


class BatchPhysics:
    """Builds ``Physics`` for batches of one dataset.

    Parameters
    ----------
    modality : {"ct", "mri"}
    geometry : CT geometry, required for CT
    noise : NoiseModel, optional
        Recorded in the CT physics (the data are already noisy).
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
                from ..ct import RayTransform

                self._ct = Physics(RayTransform(self.geometry, backend=self.backend), self.noise, "ct",
                                   {"geometry": self.geometry})
            return self._ct
        return self._mri(batch)

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
        return Physics(SenseOperator(maps, mask), None, "mri", {"coil_maps": maps, "mask": mask,
                                                                "coil_maps_source": source})
