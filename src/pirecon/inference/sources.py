"""What ``Reconstructor.reconstruct`` reads: raw files, image volumes to simulate from, tensors, in batches.

Every source becomes a :class:`Source`: its slice count, the description of its physics (compared with
the model's), facts for the outputs (pixel spacing, patient geometry, intensity units) and an iterator
of batches ``(start, y, physics, ground truth or None)`` that reads at most ``batch_size`` slices at a
time. Raw files go through :class:`pirecon.data.H5SliceDataset` and
:class:`pirecon.data.acquisition.BatchPhysics`, the one road from a raw file to ``(y, physics)``.

Image volumes (a DICOM series, a NIfTI file) are simulated with the given physics, slice ``k`` with
noise seed ``seed + k`` (so the data do not depend on the batch size):

* each slice is padded to a square with its minimum and resampled (bilinear, antialiased) to the
  physics' image grid; the patient geometry follows the resampling (:func:`_resampled_affine`);
* CT in Hounsfield units is mapped to LoDoPaB-CT's normalised attenuation ``mu / mu(3071 HU)``,
  ``x = (1 + HU/1000) mu_water / mu_max`` clipped at 0 (``mu_water = 20``, ``mu_max = 81.36`` 1/m), values
  in ``[0, 1]`` as the training phantoms; other images are scaled min-max to ``[0, 1]``. The map back to
  the source's units (``value = scale * x + offset``) is recorded, and the writers apply it;
* the simulation takes the physics' pixels as they are (square, of its pixel size): a source whose pixels
  are not square is stretched in the simulation, and the recorded pixel spacing is the source's;
* a volume is read whole (it is an image the size of its reconstruction); raw files are read a batch of
  slices at a time. A NIfTI file without qform and sform (codes 0) has no patient geometry.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch

from ..errors import ArgumentError, PireconUserError

__all__ = ["Source", "open_source"]

Batch = tuple[int, torch.Tensor, Any, "torch.Tensor | None"]

LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])
"""Flips x and y: patient LPS+ coordinates to RAS+ (NIfTI's) and back."""

_LODOPAB = re.compile(r"^observation_(train|validation|test)_(\d+)\.(hdf5|h5)$")


@dataclass
class Source:
    """A source of measurements, read batch by batch.

    Attributes
    ----------
    name : str
        The file or directory (or ``"tensor"``).
    kind : {"ct_raw", "mri_raw", "fastmri", "lodopab", "dicom", "nifti", "tensor"}
    num_slices : int
    description : dict
        ``{"modality", "geometry", "noise"}`` of the data's physics (:func:`describe_physics`).
    batches : callable ``(batch_size) -> iterator of (start, y, physics, truth or None)``
    physics_mismatch, metrics : str, bool
        How the source was opened (:meth:`pirecon.inference.Reconstructor.open`): the physics check, and
        whether the ground truth is read for metrics.
    facts : dict
        For outputs and provenance (JSON data): ``pixel_spacing_mm`` ``(dy, dx)``,
        ``affine_lps`` (index ``(d, h, w, 1)`` to LPS patient mm, or None: no patient geometry),
        ``intensity`` (``{"units", "scale", "offset"}``: source value = scale * image + offset),
        ``source_files`` (DICOM files of the source series).
    """

    name: str
    kind: str
    num_slices: int
    description: dict
    batches: Callable[[int], Iterator[Batch]]
    facts: dict = field(default_factory=dict)
    physics_mismatch: str = "error"
    metrics: bool = False


def open_source(source, *, physics=None, model_physics=None, ct_physics: Callable | None = None,
                missing_coil_maps: str = "espirit", seed: int = 0, progress: bool = True,
                ground_truth: bool = True, lodopab_units: str = "mm") -> Source:
    """The :class:`Source` of ``source``: a path (raw HDF5, LoDoPaB observation file, DICOM series directory
    or file, NIfTI file), a list of DICOM files, or a tensor of measurements (with ``physics``).

    ``physics``: the physics of tensor measurements, or the physics to simulate image volumes with;
    ``model_physics``: the model's own, used when ``physics`` is None; ``ct_physics(geometry, noise)``: the
    CT physics of raw files (a cache: building a ray transform is the slow part of a small file);
    ``ground_truth``: read the ground truth of raw files (else the batches carry None); ``lodopab_units``: the
    units a model was trained on LoDoPaB-CT in (``LoDoPaBFiles``' ``units``). Files are
    checked here (their spec, shapes, values) before any reconstruction starts.
    """
    if ct_physics is None:
        from ..data.acquisition import BatchPhysics

        def ct_physics(geometry, noise):
            return BatchPhysics("ct", geometry, noise)({})

    chosen = physics if physics is not None else model_physics
    if isinstance(source, torch.Tensor):
        return _tensor_source(source, chosen)
    if isinstance(source, (list, tuple)) and source and all(isinstance(s, (str, Path)) for s in source):
        return _image_source(source, "dicom", chosen, seed)
    if not isinstance(source, (str, Path)):
        raise ArgumentError(f"source: expected a file or directory path, a list of DICOM files or a tensor of "
                            f"measurements, found {type(source).__name__}")
    path = Path(source)
    if not path.exists():
        raise FileNotFoundError(f"source: expected an existing file or directory, found nothing at {str(path)!r}")
    from ..data.readers import _is_dicom_path, _is_nifti_path

    if path.is_dir():
        return _image_source(path, "dicom", chosen, seed)
    if _is_nifti_path(path):
        return _image_source(path, "nifti", chosen, seed)
    if _is_dicom_path(path):
        return _image_source([path], "dicom", chosen, seed)
    if physics is not None:
        raise ArgumentError(f"physics: expected none for the raw file {path} (its physics comes from the file), "
                            "found one")
    if _LODOPAB.match(path.name):
        return _lodopab_source(path, ct_physics, lodopab_units)
    return _raw_source(path, ct_physics, missing_coil_maps, progress, ground_truth)


# ---- raw files ------------------------------------------------------------------------

_NOT_MEASUREMENTS = ("ground_truth", "reconstruction_rss", "segmentation", "label")


def _raw_source(path: Path, ct_physics: Callable, missing_coil_maps: str, progress: bool,
                ground_truth: bool) -> Source:
    from ..data.acquisition import BatchPhysics, describe_physics, measurement
    from ..data.datasets import H5SliceDataset
    from ..data.validate import file_kind

    kind = file_kind(path)
    if kind not in ("ct_raw", "mri_raw", "fastmri"):
        raise PireconUserError(f"{path}: expected a raw CT or MRI file (ct_raw, mri_raw or fastMRI), a LoDoPaB-CT "
                               f"observation file, DICOM or NIfTI, found a {kind!r} file")
    dataset = H5SliceDataset([path], role="predict", progress=progress)
    if dataset.kind == "ct":
        geometry, noise = dataset.geometry(0), dataset.noise(0)
        shared = ct_physics(geometry, noise)

        def batch_physics(batch):
            return shared

        description = describe_physics("ct", geometry, noise)
        facts = {"pixel_spacing_mm": [geometry.pixel_size] * 2} if hasattr(geometry, "pixel_size") else {}
    else:
        batch_physics = BatchPhysics("mri", missing_coil_maps=missing_coil_maps)
        description = describe_physics("mri")
        facts = {}
    facts["affine_lps"] = None

    def batches(batch_size: int) -> Iterator[Batch]:
        for start in range(0, len(dataset), batch_size):
            batch = dataset.read_slices(0, start, min(start + batch_size, len(dataset)),
                                        skip=() if ground_truth else _NOT_MEASUREMENTS)
            yield start, measurement(batch), batch_physics(batch), batch.get("ground_truth")

    return Source(str(path), kind, len(dataset), description, batches, facts)


def _lodopab_source(path: Path, ct_physics: Callable, units: str) -> Source:
    """A LoDoPaB-CT observation file in the ``units`` of :class:`pirecon.data.readers.LoDoPaBFiles` (``"mm"``:
    line integrals in mm, pirecon's convention; ``"normalized"``: the file's numbers; ``"attenuation"``:
    dimensionless post-log data)."""
    import h5py

    from .._validation import check_choice
    from ..data.acquisition import describe_physics
    from ..data.readers import LODOPAB_MU_MAX, LODOPAB_SINOGRAM_SHAPE, _check_h5_data, lodopab_geometry

    scale = {"normalized": 1.0, "mm": 1000.0, "attenuation": LODOPAB_MU_MAX}[
        check_choice(units, "lodopab_units", ("normalized", "mm", "attenuation"))]
    count, _ = _check_h5_data(path, LODOPAB_SINOGRAM_SHAPE)
    geometry = lodopab_geometry()
    physics = ct_physics(geometry, None)

    def batches(batch_size: int) -> Iterator[Batch]:
        with h5py.File(path, "r") as f:
            data = f["data"]
            for start in range(0, count, batch_size):
                block = np.asarray(data[start:start + batch_size], dtype=np.float32) * np.float32(scale)
                yield start, torch.from_numpy(block)[:, None], physics, None

    return Source(str(path), "lodopab", count, describe_physics("ct", geometry, None), batches,
                  {"pixel_spacing_mm": [geometry.pixel_size] * 2, "affine_lps": None, "lodopab_units": units})


# ---- tensors --------------------------------------------------------------------------

def _tensor_source(y: torch.Tensor, physics) -> Source:
    if physics is None:
        raise ArgumentError("physics: expected the physics of the measurements (a pirecon.physics.Physics), found "
                            "None, and the model has no physics of its own")
    if y.ndim < 3 or y.shape[0] == 0:
        raise ArgumentError(f"source: expected measurements (N, 1, angles, detectors) or (N, coils, H, W) with "
                            f"N >= 1, found shape {tuple(y.shape)}")
    geometry, description = _described(physics)
    n = y.shape[0]

    def batches(batch_size: int) -> Iterator[Batch]:
        for start in range(0, n, batch_size):
            stop = min(start + batch_size, n)
            yield start, y[start:stop], _rows(physics, start, stop, n), None

    facts = {"affine_lps": None}
    if geometry is not None and hasattr(geometry, "pixel_size"):
        facts["pixel_spacing_mm"] = [geometry.pixel_size] * 2
    return Source(str(physics.metadata.get("file", "tensor")), "tensor", n, description, batches, facts)


def _described(physics) -> tuple[Any, dict]:
    """The CT geometry of ``physics`` (or None) and its description; MRI physics is described by its modality
    alone (coil maps and masks change from slice to slice)."""
    from ..data.acquisition import describe_physics

    if physics.modality != "ct":
        return None, describe_physics(physics.modality)
    geometry = physics.metadata.get("geometry", getattr(physics.operator, "geometry", None))
    return geometry, describe_physics("ct", geometry, physics.noise)


def _rows(physics, start: int, stop: int, n: int):
    """The physics of rows ``start:stop`` of ``n`` measurements: the same object unless its MRI coil maps or
    mask have one entry per row."""
    from ..mri import SenseOperator
    from ..physics import Physics

    operator = physics.operator
    if not isinstance(operator, SenseOperator) or (start, stop) == (0, n):
        return physics
    maps, mask = operator.coil_maps, operator.mask
    batched = maps is not None and maps.ndim == 4 and maps.shape[0] == n
    batched_mask = mask is not None and mask.ndim == 4 and mask.shape[0] == n and n > 1
    if not (batched or batched_mask):
        return physics
    maps = maps[start:stop] if batched else maps
    mask = mask[start:stop] if batched_mask else mask
    metadata = {**physics.metadata, "coil_maps": maps, "mask": mask}
    return Physics(SenseOperator(maps, mask), physics.noise, physics.modality, metadata)


# ---- image volumes (simulated) ----------------------------------------------------------------

def _image_source(path, kind: str, physics, seed: int) -> Source:
    from ..data.readers import LODOPAB_MU_MAX, LODOPAB_MU_WATER, read_dicom_series, read_nifti

    name = str(path if not isinstance(path, list) else (path[0] if len(path) == 1 else Path(path[0]).parent))
    if physics is None:
        raise ArgumentError(f"physics: expected the physics to simulate measurements of {name} with, found None "
                            f"(the model has no physics of its own; pass physics=)")
    facts: dict[str, Any] = {}
    thickness = None
    if kind == "dicom":
        import pydicom

        volume, spacing, metadata = read_dicom_series(path)
        affine = metadata["affine"]
        facts["source_files"] = [str(p) for p in metadata["files"]]
        units = metadata["units"]
        tag = pydicom.dcmread(metadata["files"][0], stop_before_pixels=True).get("SliceThickness")
        thickness = float(tag) if tag not in (None, "") else None
    else:
        import nibabel

        volume, spacing, affine_ras = read_nifti(path)
        header = nibabel.load(path).header
        oriented = int(header["qform_code"]) > 0 or int(header["sform_code"]) > 0
        # no qform or sform: nibabel's fallback affine is no patient orientation, only voxel sizes
        affine = LPS_TO_RAS @ affine_ras if oriented else None  # (the map is its own inverse)
        units = "stored"
    if units == "HU":
        scale = 1000.0 * LODOPAB_MU_MAX / LODOPAB_MU_WATER
        offset = -1000.0
        normalised = np.clip((volume - offset) / scale, 0.0, None)
    else:
        low, high = float(volume.min()), float(volume.max())
        scale, offset = (high - low) or 1.0, low
        normalised = (volume - offset) / scale
    facts["intensity"] = {"units": units, "scale": scale, "offset": offset}
    facts["simulated"] = {"seed": seed, "noise": None if physics.noise is None else physics.noise.to_dict()}
    shape = tuple(physics.operator.domain_shape[-2:])
    square, transform = _square_transform(volume.shape[1:], shape)
    facts["affine_lps"] = None if affine is None else (affine @ transform).tolist()
    dy, dx = spacing[1:]
    if np.isfinite(dy) and np.isfinite(dx):
        facts["pixel_spacing_mm"] = [float(dy * transform[1, 1]), float(dx * transform[2, 2])]
    if thickness is not None or np.isfinite(spacing[0]):
        facts["slice_thickness_mm"] = thickness if thickness is not None else float(spacing[0])
    complex_domain = physics.operator.domain_kind == "complex"

    def batches(batch_size: int) -> Iterator[Batch]:
        for start in range(0, len(normalised), batch_size):
            block = torch.from_numpy(np.ascontiguousarray(normalised[start:start + batch_size], dtype=np.float32))
            x = _to_grid(block[:, None], square, shape)
            if complex_domain:
                x = x.to(torch.complex64)
            with torch.no_grad():
                y = torch.cat([physics.simulate(x[k:k + 1], seed=seed + start + k) for k in range(len(x))])
            yield start, y, physics, x

    _, description = _described(physics)
    return Source(name, kind, len(normalised), description, batches, facts)


def _square_transform(hw: tuple[int, int], shape: tuple[int, int]) -> tuple[int, np.ndarray]:
    """The square side ``S = max(h, w)`` the slices are padded to, and the 4x4 map from an output index
    ``(d, h', w', 1)`` on the ``shape`` grid to the source index ``(d, h, w, 1)``.

    Padding puts the ``h x w`` slice at ``(top, left) = ((S - h) // 2, (S - w) // 2)``; resampling ``S`` pixels
    to ``n`` makes output pixel ``i`` cover source pixels ``[i S/n, (i + 1) S/n)``, centred at
    ``(i + 1/2) S/n - 1/2``.
    """
    h, w = hw
    side = max(h, w)
    top, left = (side - h) // 2, (side - w) // 2
    transform = np.eye(4)
    for axis, (n, pad) in enumerate(((shape[0], top), (shape[1], left)), start=1):
        step = side / n
        transform[axis, axis] = step
        transform[axis, 3] = 0.5 * step - 0.5 - pad
    return side, transform


def _to_grid(x: torch.Tensor, side: int, shape: tuple[int, int]) -> torch.Tensor:
    """``(B, 1, h, w)`` padded (with each slice's minimum) to ``side x side`` and resampled to ``shape``."""
    h, w = x.shape[-2:]
    if (h, w) != (side, side):
        top, left = (side - h) // 2, (side - w) // 2
        low = x.amin(dim=(-2, -1), keepdim=True)
        padded = low.expand(-1, -1, side, side).clone()
        padded[..., top:top + h, left:left + w] = x
        x = padded
    if tuple(shape) == (side, side):
        return x
    return torch.nn.functional.interpolate(x, size=tuple(shape), mode="bilinear", align_corners=False,
                                           antialias=side > min(shape))
