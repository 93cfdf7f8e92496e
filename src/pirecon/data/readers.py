"""Readers for the field's file formats: LoDoPaB-CT (HDF5), DICOM CT series, NIfTI, image directories.

Every reader validates at the boundary: a bad file raises with a message that
names the file (and the HDF5 key or DICOM tag), what was expected and what
was found. Arrays come back as NumPy ``float32`` in pirecon's axis order:
2D images ``(H, W)`` and volumes ``(D, H, W)`` with row 0 at the top of the
displayed image; spacings are in millimetres.

Conventions (and the facts they rest on)
----------------------------------------
LoDoPaB-CT (Leuschner et al. 2021, https://zenodo.org/record/3384092; read as
DIVal's ``LoDoPaBDataset`` does):

* files ``observation_{part}_{NNN}.hdf5`` and ``ground_truth_{part}_{NNN}.hdf5``
  (``.h5`` accepted too), ``part`` in train / validation / test, 128 samples
  per file (the last file shorter), one dataset ``data`` per file:
  ``(n, 1000, 513)`` float32 observations, ``(n, 362, 362)`` float32 images.
* geometry: ODL's ``parallel_beam_geometry`` for ``uniform_discr([-0.13,
  -0.13], [0.13, 0.13], (362, 362))`` (metres) with 1000 angles and 513
  detector pixels. In mm: pixel 260/362 mm, angles at the midpoints
  ``(k + 1/2) pi / 1000`` of 1000 equal cells of ``[0, pi)``, detector
  ``[-rho, rho]`` with ``rho = 130 sqrt(2)`` mm (the half diagonal), spacing
  ``2 rho / 513`` = 0.7168 mm. ODL's and ASTRA's (pirecon's) parallel
  geometries agree in world coordinates (detector axis ``(cos t, sin t)``,
  ascending detector index), so the stored sinograms need no reordering.
* ground truth: ``mu / MU_MAX`` with ``MU_MAX = 81.35858`` 1/m, the
  attenuation of 3071 HU (``MU_WATER = 20``, ``MU_AIR = 0.02`` 1/m, DIVal's
  ``constants.py``): values in ``[0, 1]``. ODL arrays are indexed
  ``[ix, iy]`` with y growing; pirecon's images have row 0 at the top and
  columns along x, so by default the image is returned as
  ``np.rot90(stored)`` (``orientation="pirecon"``), the array for which
  ``RayTransform(lodopab_geometry())`` reproduces the observations
  (checked against ODL in the tests). ``orientation="stored"`` returns the
  file's array as it is.
* observations: post-log ``-ln(N / N0) / MU_MAX`` with ``N0 = 4096`` photons
  per detector pixel and zero counts replaced by 0.1 photons, i.e. the line
  integral of the ground truth along the ray with path length in **metres**
  (plus noise). See ``LoDoPaBFiles`` ``units`` for mm-consistent scalings.

DICOM: CT slices in Hounsfield units from ``RescaleSlope`` / ``RescaleIntercept``
(required for Modality CT, where they are Type 1; other modalities use them
when present and slope 1 / intercept 0 otherwise, and are not HU). Attenuation
``mu = mu_water (1 + HU / 1000)`` in 1/mm, clipped at 0 (air and the padding
outside the scan circle would otherwise be negative); ``mu_water`` defaults to
0.0192 /mm, water's linear attenuation near 70 keV, roughly the effective
energy of a 120 kVp spectrum (NIST's mass attenuation coefficients of water
are 0.2059 cm^2/g at 60 keV and 0.1837 cm^2/g at 80 keV, density 1 g/cm^3).
Pass the value for your spectrum.
Slices are sorted by ``ImagePositionPatient`` projected on the slice normal
``row_cosines x column_cosines`` (ascending: for axial images, feet to head),
else by ``InstanceNumber``. Rows and columns stay as stored (row 0 at the
top), so an axial volume is indexed ``(z, y, x)`` in DICOM's LPS patient
coordinates. ``PixelSpacing`` is ``(row spacing, column spacing) = (dy, dx)``.

NIfTI: the voxel grid is reoriented (nibabel's ``io_orientation``, the
nearest axes for oblique affines) to LPS+ and indexed ``(z, y, x)``: slices
along +S (inferior to superior), rows along +P (anterior at the top), columns
along +L (the patient's right on the image's left, radiological display).
This is the same array a DICOM axial series gives, so a ``dcm2niix``
conversion reads back identical to its DICOM source.
"""

from __future__ import annotations

import math
import os
import re
import warnings
from pathlib import Path
from typing import Sequence

import numpy as np
import torch.utils.data

from .._validation import check_choice, check_positive
from ..ct.geometry import ParallelBeam2D
from ..errors import PireconUserError
from ._h5handles import LazyH5Handles

__all__ = [
    "LODOPAB_MU_MAX",
    "LODOPAB_MU_WATER",
    "LODOPAB_MU_AIR",
    "LODOPAB_PHOTONS_PER_PIXEL",
    "LODOPAB_MIN_PHOTON_COUNT",
    "MU_WATER_70KEV",
    "lodopab_geometry",
    "LoDoPaBFiles",
    "hu_to_attenuation",
    "read_dicom_series",
    "read_nifti",
    "read_image_directory",
]

# --------------------------------------------------------------------------- LoDoPaB-CT

LODOPAB_MU_WATER = 20.0  # 1/m, DIVal's dival/util/constants.py
LODOPAB_MU_AIR = 0.02  # 1/m
LODOPAB_MU_MAX = 3071 * (LODOPAB_MU_WATER - LODOPAB_MU_AIR) / 1000 + LODOPAB_MU_WATER  # 81.35858 1/m (3071 HU)
LODOPAB_PHOTONS_PER_PIXEL = 4096
LODOPAB_MIN_PHOTON_COUNT = 0.1  # replaces simulated zero counts before the log
LODOPAB_IMAGE_SHAPE = (362, 362)
LODOPAB_SINOGRAM_SHAPE = (1000, 513)
LODOPAB_EXTENT_MM = 260.0  # [-0.13, 0.13] m

MU_WATER_70KEV = 0.0192  # 1/mm

_PARTS = ("train", "validation", "test")
_UNITS = ("normalized", "mm", "attenuation")
_ORIENTATIONS = ("pirecon", "stored")


def lodopab_geometry() -> ParallelBeam2D:
    """The LoDoPaB-CT geometry in mm, as DIVal builds it with ODL.

    362 x 362 image on ``[-130, 130]^2`` mm (pixel 260/362 mm); 1000 angles at
    the midpoints ``(k + 1/2) pi / 1000`` of ``[0, pi)`` split into 1000
    cells (ODL's ``uniform_partition``); 513 detector pixels over
    ``[-rho, rho]``, ``rho = 130 sqrt(2)`` mm the image's half diagonal, so the
    spacing is ``2 rho / 513`` (about 0.7168 mm). Sinograms ``(1000, 513)``.
    """
    n_angles, n_det = LODOPAB_SINOGRAM_SHAPE
    pixel = LODOPAB_EXTENT_MM / LODOPAB_IMAGE_SHAPE[1]
    rho = 0.5 * math.hypot(LODOPAB_EXTENT_MM, LODOPAB_EXTENT_MM)
    angles = (np.arange(n_angles) + 0.5) * (math.pi / n_angles)
    return ParallelBeam2D(LODOPAB_IMAGE_SHAPE, pixel_size=pixel, angles=angles,
                          num_detectors=n_det, detector_spacing=2 * rho / n_det)


_CHUNK = re.compile(r"^(observation|ground_truth)_(train|validation|test)_(\d+)\.(hdf5|h5)$")


class LoDoPaBFiles(LazyH5Handles, torch.utils.data.Dataset):
    """One part of LoDoPaB-CT on disk: ``(observation, ground_truth)`` pairs read one sample at a time.

    Parameters
    ----------
    root : path
        Directory holding the unzipped ``observation_{part}_NNN.hdf5`` and
        ``ground_truth_{part}_NNN.hdf5`` files (``.h5`` accepted).
    part : {"train", "validation", "test"}
    units : {"normalized", "mm", "attenuation"}
        ``"normalized"`` (the file's numbers): ground truth ``mu / MU_MAX``
        in ``[0, 1]``; observation ``-ln(N/N0) / MU_MAX``, the line integral of
        the ground truth with path length in metres.
        ``"mm"``: observation times 1000, the line integral of the (same)
        ground truth in mm, i.e. ``RayTransform(lodopab_geometry())(gt)``
        plus noise, pirecon's convention.
        ``"attenuation"``: ground truth times ``MU_MAX / 1000``, the linear
        attenuation in 1/mm; observation times ``MU_MAX``, the dimensionless
        post-log data ``-ln(N/N0)`` = line integral of that attenuation in
        mm (plus noise). Also consistent with ``lodopab_geometry()``.
    orientation : {"pirecon", "stored"}
        ``"pirecon"``: ground truth as ``np.rot90(stored)`` (row 0 at the top,
        columns along x), the image that ``lodopab_geometry()`` maps to the
        observation. ``"stored"``: ODL's ``[ix, iy]`` array as in the file
        (and as DIVal returns it). Observations are never reordered.
    observation_shape, ground_truth_shape : tuple of int or None
        Expected per-sample shapes; ``None`` accepts any shape (consistent
        across the files of the part).

    ``len()`` is the total number of samples; ``ds[i]`` returns NumPy float32
    arrays ``(observation (1000, 513), ground_truth (362, 362))`` and reads only
    sample ``i``. Files are opened on first access in each process and
    dropped on pickling, so the dataset works in ``DataLoader`` workers;
    ``close()`` (or ``with``) releases them.
    """

    def __init__(self, root, part: str = "train", *, units: str = "normalized", orientation: str = "pirecon",
                 observation_shape: Sequence[int] | None = LODOPAB_SINOGRAM_SHAPE,
                 ground_truth_shape: Sequence[int] | None = LODOPAB_IMAGE_SHAPE):
        self.part = check_choice(part, "part", _PARTS)
        self.units = check_choice(units, "units", _UNITS)
        self.orientation = check_choice(orientation, "orientation", _ORIENTATIONS)
        self.root = Path(root)
        if not self.root.is_dir():
            found = "a file" if self.root.exists() else "nothing"
            raise FileNotFoundError(f"LoDoPaB root {self.root}: expected a directory, found {found}")
        chunks: dict[str, dict[int, Path]] = {"observation": {}, "ground_truth": {}}
        for path in sorted(self.root.iterdir()):
            m = _CHUNK.match(path.name)
            if m is None or m.group(2) != self.part:
                continue
            kind, index = m.group(1), int(m.group(3))
            if index in chunks[kind]:
                raise PireconUserError(f"LoDoPaB root {self.root}: expected one file for {kind} chunk {index:03d} "
                                 f"of part {self.part!r}, found {chunks[kind][index].name} and {path.name}")
            chunks[kind][index] = path
        obs, gt = chunks["observation"], chunks["ground_truth"]
        if not obs and not gt:
            raise FileNotFoundError(
                f"LoDoPaB root {self.root}: expected files observation_{self.part}_NNN.hdf5 and "
                f"ground_truth_{self.part}_NNN.hdf5, found none")
        for mine, other, other_kind in ((obs, gt, "ground_truth"), (gt, obs, "observation")):
            for index in sorted(mine):
                if index not in other:
                    raise FileNotFoundError(
                        f"{mine[index]}: expected a matching {other_kind}_{self.part}_{index:03d}.hdf5 "
                        f"in {self.root}, found none")
        indices = sorted(obs)
        missing = sorted(set(range(indices[-1] + 1)) - set(indices))
        if missing:
            raise FileNotFoundError(
                f"LoDoPaB root {self.root}: expected chunks 000 to {indices[-1]:03d} of part {self.part!r}, "
                f"found no chunk {', '.join(f'{k:03d}' for k in missing)}")
        obs_shape = None if observation_shape is None else tuple(int(s) for s in observation_shape)
        gt_shape = None if ground_truth_shape is None else tuple(int(s) for s in ground_truth_shape)
        self.files: list[tuple[Path, Path]] = []
        counts = []
        for index in indices:
            n_obs, obs_shape = _check_h5_data(obs[index], obs_shape)
            n_gt, gt_shape = _check_h5_data(gt[index], gt_shape)
            if n_gt != n_obs:
                raise PireconUserError(f"{gt[index]}['data']: expected {n_obs} samples as in {obs[index].name}, "
                                       f"found {n_gt}")
            self.files.append((obs[index], gt[index]))
            counts.append(n_obs)
        self.observation_shape, self.ground_truth_shape = obs_shape, gt_shape
        self._offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        self._reset_handles()

    def __len__(self) -> int:
        return int(self._offsets[-1])

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        n = len(self)
        if isinstance(index, bool) or not isinstance(index, (int, np.integer)):
            raise TypeError(f"index: expected an int, found {type(index).__name__}")
        if not -n <= index < n:
            raise IndexError(f"index: expected -{n} <= index < {n} for LoDoPaB part {self.part!r}, found {index}")
        index = int(index) % n
        chunk = int(np.searchsorted(self._offsets, index, side="right")) - 1
        local = index - int(self._offsets[chunk])
        obs_path, gt_path = self.files[chunk]
        observation = np.asarray(self._file(obs_path)["data"][local], dtype=np.float32)
        ground_truth = np.asarray(self._file(gt_path)["data"][local], dtype=np.float32)
        if self.orientation == "pirecon":
            ground_truth = np.ascontiguousarray(np.rot90(ground_truth))
        if self.units == "mm":
            observation *= np.float32(1000.0)
        elif self.units == "attenuation":
            observation *= np.float32(LODOPAB_MU_MAX)
            ground_truth *= np.float32(LODOPAB_MU_MAX / 1000.0)
        return observation, ground_truth

    def _file(self, path: Path):
        return self._h5(path, path)

    def __repr__(self) -> str:
        return (f"LoDoPaBFiles(root={str(self.root)!r}, part={self.part!r}, samples={len(self)}, "
                f"files={len(self.files)}, units={self.units!r}, orientation={self.orientation!r})")


def _check_h5_data(path: Path, sample_shape: tuple[int, ...] | None) -> tuple[int, tuple[int, ...]]:
    """Number of samples and sample shape of ``path['data']``; raises ``PireconUserError`` naming the file and key."""
    import h5py

    try:
        f = h5py.File(path, "r")
    except OSError as err:
        raise PireconUserError(f"{path}: expected an HDF5 file, could not open it ({err})") from None
    with f:
        try:
            ds = f["data"] if "data" in f else None
        except (KeyError, RuntimeError, OSError):  # a link that leads nowhere
            ds = None
        if not isinstance(ds, h5py.Dataset):
            raise PireconUserError(f"{path}: expected a dataset 'data', found keys {sorted(f.keys())}")
        if not np.issubdtype(ds.dtype, np.floating):
            raise PireconUserError(f"{path}['data']: expected a floating dtype (float32), found {ds.dtype}")
        ndim = 1 + (len(sample_shape) if sample_shape is not None else 2)
        if ds.shape is None or len(ds.shape) != ndim or \
                (sample_shape is not None and tuple(ds.shape[1:]) != sample_shape):
            want = "(n, " + ", ".join(map(str, sample_shape)) + ")" if sample_shape is not None else "(n, H, W)"
            raise PireconUserError(f"{path}['data']: expected shape {want}, found {ds.shape}")
        return int(ds.shape[0]), tuple(int(s) for s in ds.shape[1:])


# --------------------------------------------------------------------------- DICOM

_DICOMDIR_UID = "1.2.840.10008.1.3.10"


def hu_to_attenuation(hu, mu_water: float = MU_WATER_70KEV) -> np.ndarray:
    """Linear attenuation (1/mm, float32) from Hounsfield units: ``mu_water (1 + HU/1000)``, clipped at 0."""
    check_positive(mu_water, "mu_water")
    mu = float(mu_water) * (1.0 + np.asarray(hu, dtype=np.float64) / 1000.0)
    return np.maximum(mu, 0.0).astype(np.float32)


def _is_dicom_path(path: Path) -> bool:
    from pydicom.misc import is_dicom

    if path.suffix.lower() in (".dcm", ".dicom"):
        return True
    try:
        return is_dicom(path)
    except OSError:
        return False


def _read_dicom(path: Path):
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        return pydicom.dcmread(path)
    except (InvalidDicomError, OSError, EOFError, ValueError) as err:
        raise PireconUserError(f"{path}: expected a DICOM file, could not read it ({err})") from None


def _tag_float(ds, keyword: str, path: Path, default=None) -> float | None:
    value = ds.get(keyword)
    if value is None or value == "":
        return default
    try:
        return float(value)
    except (TypeError, ValueError):
        raise PireconUserError(f"{path}: expected a number in tag {keyword}, found {value!r}") from None


def _tag_floats(ds, keyword: str, path: Path, n: int) -> tuple[float, ...] | None:
    value = ds.get(keyword)
    if value is None or value == "":
        return None
    try:
        out = tuple(float(v) for v in value)
    except (TypeError, ValueError):
        out = ()
    if len(out) != n:
        raise PireconUserError(f"{path}: expected {n} numbers in tag {keyword}, found {value!r}")
    return out


def _dicom_pixels(ds, path: Path, *, attenuation: bool, mu_water: float) -> tuple[np.ndarray, dict]:
    """One 2D DICOM image in modality units (HU for CT) or attenuation; with its rescale facts."""
    modality = str(ds.get("Modality", "")).upper()
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    if frames != 1:
        raise PireconUserError(f"{path}: expected a single-frame image, found NumberOfFrames {frames} "
                         "(multi-frame DICOM is not supported)")
    slope = _tag_float(ds, "RescaleSlope", path)
    intercept = _tag_float(ds, "RescaleIntercept", path)
    if modality == "CT":
        for keyword, tag, value in (("RescaleSlope", "(0028,1053)", slope),
                                    ("RescaleIntercept", "(0028,1052)", intercept)):
            if value is None:
                raise PireconUserError(f"{path}: expected tag {keyword} {tag} for a CT image (Modality CT), found none")
    elif attenuation:
        raise PireconUserError(f"{path}: attenuation=True needs a CT image in Hounsfield units (Modality CT), "
                         f"found Modality {modality or 'none'!r}")
    slope = 1.0 if slope is None else slope
    intercept = 0.0 if intercept is None else intercept
    try:
        stored = ds.pixel_array
    except Exception as err:  # missing decoder plugins, truncated data, bad tags
        raise PireconUserError(f"{path}: could not decode the pixel data ({type(err).__name__}: {err})") from None
    if stored.ndim != 2:
        raise PireconUserError(f"{path}: expected a grayscale image (SamplesPerPixel 1), found pixel array "
                         f"of shape {stored.shape}")
    values = stored.astype(np.float64) * slope + intercept
    image = hu_to_attenuation(values, mu_water) if attenuation else values.astype(np.float32)
    return image, {"slope": slope, "intercept": intercept, "modality": modality}


def _dicom_sources(directory_or_files) -> tuple[str, list[Path]]:
    if isinstance(directory_or_files, (str, os.PathLike)):
        directory = Path(directory_or_files)
        if not directory.is_dir():
            found = "a file" if directory.exists() else "nothing"
            raise FileNotFoundError(f"DICOM series {directory}: expected a directory, found {found} "
                                    "(pass a list to read single files)")
        files = [p for p in sorted(directory.iterdir())
                 if p.is_file() and not p.name.startswith(".") and _is_dicom_path(p)]
        if not files:
            raise FileNotFoundError(f"DICOM series {directory}: expected DICOM files, found none")
        return str(directory), files
    files = [Path(p) for p in directory_or_files]
    if not files:
        raise FileNotFoundError("DICOM series: expected DICOM files, found an empty list")
    for p in files:
        if not p.is_file():
            raise FileNotFoundError(f"{p}: expected a DICOM file, found nothing")
    return f"{files[0].parent} ({len(files)} file{'s' if len(files) != 1 else ''})", files


def read_dicom_series(directory_or_files, *, attenuation: bool = False,
                      mu_water: float = MU_WATER_70KEV) -> tuple[np.ndarray, tuple[float, float, float], dict]:
    """Read one DICOM series (a directory, non-recursive, or a list of files) into a volume.

    Parameters
    ----------
    directory_or_files : path or sequence of paths
        A directory (files with a ``DICM`` preamble or a ``.dcm`` suffix are
        read; ``DICOMDIR`` and objects without pixel data are skipped), or the
        files themselves.
    attenuation : bool
        Return linear attenuation in 1/mm, ``mu_water (1 + HU/1000)`` clipped
        at 0, instead of Hounsfield units. Needs Modality CT.
    mu_water : float
        Water's attenuation in 1/mm (default 0.0192, ~70 keV).

    Returns
    -------
    volume : np.ndarray, float32, ``(D, H, W)``
        HU for CT (``stored * RescaleSlope + RescaleIntercept`` per slice),
        attenuation when asked; rows and columns as stored. Other modalities
        without rescale tags give stored values (``metadata["units"]``).
    spacing : (dz, dy, dx) in mm
        ``dz`` from the sorted slice positions (median step; a warning if the
        steps vary), else ``SpacingBetweenSlices`` / ``SliceThickness``, else
        NaN (one slice without either). ``(dy, dx) = PixelSpacing`` (NaN
        when absent outside CT).
    metadata : dict
        ``modality``, ``units`` (``"HU"``, ``"1/mm"``, or for other
        modalities ``"stored"`` / ``"rescaled"`` when rescale tags apply),
        ``series_instance_uid``, ``series_description``, ``files`` (sorted),
        ``slice_positions`` (mm along the normal, or None), ``sorted_by``,
        ``orientation`` (the six direction cosines), ``affine`` (4x4, index
        ``(d, h, w, 1)`` to LPS patient mm, or None), ``rescale_slope`` and
        ``rescale_intercept`` per slice, ``kvp``, ``mu_water`` (when
        attenuation), ``skipped`` (files without pixel data). No patient
        identifiers.
    """
    check_positive(mu_water, "mu_water")
    source, paths = _dicom_sources(directory_or_files)
    datasets, skipped = [], []
    for path in paths:
        ds = _read_dicom(path)
        sop_class = str(getattr(getattr(ds, "file_meta", None), "MediaStorageSOPClassUID", ""))
        if sop_class == _DICOMDIR_UID or "PixelData" not in ds:
            skipped.append(path)
            continue
        datasets.append((path, ds))
    if not datasets:
        raise PireconUserError(f"DICOM series {source}: expected DICOM images with pixel data, found none "
                         f"({len(skipped)} DICOM files without pixel data)")

    uids: dict[str, list[Path]] = {}
    for path, ds in datasets:
        uids.setdefault(str(ds.get("SeriesInstanceUID", "<none>")), []).append(path)
    if len(uids) > 1:
        listing = "; ".join(f"{uid} ({len(ps)} file{'s' if len(ps) != 1 else ''}, e.g. {ps[0].name})"
                            for uid, ps in uids.items())
        raise PireconUserError(f"DICOM series {source}: expected files of one series (one SeriesInstanceUID), "
                         f"found {len(uids)}: {listing}")

    for path, ds in datasets:
        for keyword, tag in (("Rows", "(0028,0010)"), ("Columns", "(0028,0011)")):
            if ds.get(keyword) is None:
                raise PireconUserError(f"{path}: expected tag {keyword} {tag} in an image with pixel data, found none")
    first_path, first = datasets[0]
    shape = (int(first.Rows), int(first.Columns))
    modality = str(first.get("Modality", "")).upper()
    spacing_yx = _tag_floats(first, "PixelSpacing", first_path, 2)
    orientation = _tag_floats(first, "ImageOrientationPatient", first_path, 6)
    for path, ds in datasets[1:]:
        found = (int(ds.Rows), int(ds.Columns))
        if found != shape:
            raise PireconUserError(f"{path}: expected (Rows, Columns) {shape} as in {first_path.name}, found {found}")
        other = _tag_floats(ds, "PixelSpacing", path, 2)
        if (other is None) != (spacing_yx is None) or (other is not None and not np.allclose(other, spacing_yx,
                                                                                             rtol=0, atol=1e-4)):
            raise PireconUserError(f"{path}: expected PixelSpacing {spacing_yx} as in {first_path.name}, found {other}")
        other = _tag_floats(ds, "ImageOrientationPatient", path, 6)
        if (other is None) != (orientation is None) or (other is not None and not np.allclose(other, orientation,
                                                                                              rtol=0, atol=1e-4)):
            raise PireconUserError(f"{path}: expected ImageOrientationPatient {orientation} as in {first_path.name}, "
                             f"found {other}")
    if spacing_yx is None:
        if modality == "CT":
            raise PireconUserError(f"{first_path}: expected tag PixelSpacing (0028,0030) for a CT image, found none")
        spacing_yx = (math.nan, math.nan)

    # order the slices
    positions = [_tag_floats(ds, "ImagePositionPatient", p, 3) for p, ds in datasets]
    numbers = [ds.get("InstanceNumber") for _, ds in datasets]
    normal = None
    slice_positions = None
    if orientation is not None and all(p is not None for p in positions):
        row, col = np.asarray(orientation[:3]), np.asarray(orientation[3:])
        normal = np.cross(row, col)
        keys = [float(np.dot(normal, p)) for p in positions]
        sorted_by = "ImagePositionPatient"
    elif all(n is not None and str(n) != "" for n in numbers):
        keys = [float(n) for n in numbers]
        sorted_by = "InstanceNumber"
    elif len(datasets) == 1:
        keys, sorted_by = [0.0], None
    else:
        raise PireconUserError(f"DICOM series {source}: expected ImagePositionPatient and ImageOrientationPatient, "
                         "or InstanceNumber, on every file to order the slices, found neither")
    order = sorted(range(len(datasets)), key=lambda i: keys[i])
    for a, b in zip(order, order[1:]):
        if abs(keys[b] - keys[a]) < 1e-3:
            raise PireconUserError(f"DICOM series {source}: expected one slice per position, found "
                             f"{datasets[a][0].name} and {datasets[b][0].name} at the same {sorted_by} "
                             f"({keys[a]:g})")
    datasets = [datasets[i] for i in order]
    if sorted_by == "ImagePositionPatient":
        slice_positions = [keys[i] for i in order]
    if slice_positions is not None and len(slice_positions) > 1:
        steps = np.diff(slice_positions)
        dz = float(np.median(steps))
        if np.max(np.abs(steps - dz)) > 1e-3 + 1e-2 * dz:
            warnings.warn(f"DICOM series {source}: slice positions are not equispaced (steps from "
                          f"{steps.min():g} to {steps.max():g} mm); spacing reports the median {dz:g} mm",
                          stacklevel=2)
    else:
        dz = _tag_float(first, "SpacingBetweenSlices", first_path) or _tag_float(first, "SliceThickness",
                                                                                 first_path) or math.nan

    slices, slopes, intercepts = [], [], []
    for path, ds in datasets:
        image, facts = _dicom_pixels(ds, path, attenuation=attenuation, mu_water=mu_water)
        slices.append(image)
        slopes.append(facts["slope"])
        intercepts.append(facts["intercept"])
    volume = np.stack(slices).astype(np.float32, copy=False)
    dy, dx = spacing_yx
    affine = None
    if normal is not None and not math.isnan(dz) and not math.isnan(dx):
        affine = np.eye(4)
        affine[:3, 0] = normal * dz
        affine[:3, 1] = np.asarray(orientation[3:]) * dy
        affine[:3, 2] = np.asarray(orientation[:3]) * dx
        affine[:3, 3] = _tag_floats(datasets[0][1], "ImagePositionPatient", datasets[0][0], 3)
    if attenuation:
        units = "1/mm"
    elif modality == "CT":
        units = "HU"
    else:
        units = "stored" if all(s == 1 and i == 0 for s, i in zip(slopes, intercepts)) else "rescaled"
    metadata = {
        "modality": modality,
        "units": units,
        "series_instance_uid": next(iter(uids)),
        "series_description": str(first.get("SeriesDescription", "")),
        "files": [p for p, _ in datasets],
        "sorted_by": sorted_by,
        "slice_positions": slice_positions,
        "orientation": orientation,
        "affine": affine,
        "rescale_slope": slopes,
        "rescale_intercept": intercepts,
        "kvp": _tag_float(first, "KVP", first_path),
        "skipped": skipped,
    }
    if attenuation:
        metadata["mu_water"] = float(mu_water)
    return volume, (float(dz), float(dy), float(dx)), metadata


# --------------------------------------------------------------------------- NIfTI

_UNIT_TO_MM = {"mm": 1.0, "meter": 1000.0, "micron": 1e-3, "unknown": 1.0}
_NIFTI_SUFFIXES = (".nii", ".nii.gz")


def _is_nifti_path(path: Path) -> bool:
    return path.name.lower().endswith(_NIFTI_SUFFIXES)


def read_nifti(path) -> tuple[np.ndarray, tuple[float, float, float], np.ndarray]:
    """Read a NIfTI-1/2 volume (``.nii``, ``.nii.gz``) into pirecon's ``(D, H, W)`` axis order.

    The voxel grid is reoriented (without resampling) to LPS+ and indexed
    ``(z, y, x)``: slices inferior to superior, rows anterior (top) to
    posterior, columns patient right (left of the image) to patient left,
    as a DICOM axial series. Oblique affines are reoriented to their
    nearest axes (nibabel's ``io_orientation``). 2D images give ``D = 1``;
    trailing singleton dimensions are dropped; real 4D data are refused.

    Returns
    -------
    volume : np.ndarray, float32, ``(D, H, W)``
        ``get_fdata`` values (``scl_slope`` / ``scl_inter`` applied).
    spacing : (dz, dy, dx) in mm
        Voxel sizes from the affine (``xyzt_units`` meter / micron converted;
        unknown units taken as mm).
    affine : np.ndarray ``(4, 4)``
        Maps the returned array's indices ``(d, h, w, 1)`` to NIfTI world
        coordinates (RAS+, mm): ``affine @ [d, h, w, 1]``.
    """
    import nibabel as nib
    from nibabel.orientations import apply_orientation, axcodes2ornt, inv_ornt_aff, io_orientation, ornt_transform

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: expected a NIfTI file, found nothing")
    try:
        img = nib.load(path)
    except Exception as err:  # nibabel raises ImageFileError, HeaderDataError, OSError, EOFError ...
        raise PireconUserError(f"{path}: expected a NIfTI file, could not read it ({type(err).__name__}: {err})") from None
    if not isinstance(img, (nib.Nifti1Image, nib.Nifti2Image)):
        raise PireconUserError(f"{path}: expected a NIfTI-1 or NIfTI-2 image, found {type(img).__name__}")
    shape = tuple(img.shape)
    if len(shape) > 3 and any(s != 1 for s in shape[3:]):
        raise PireconUserError(f"{path}: expected a 2D or 3D image (trailing dimensions of size 1 allowed), "
                         f"found shape {shape}")
    if len(shape) < 2:
        raise PireconUserError(f"{path}: expected a 2D or 3D image, found shape {shape}")
    data = np.asarray(img.get_fdata(dtype=np.float32))
    data = data.reshape(shape[:3] + (1,) * (3 - len(shape[:3])))
    space_unit = img.header.get_xyzt_units()[0]
    scale = _UNIT_TO_MM.get(space_unit, 1.0)
    affine = np.array(img.affine, dtype=np.float64)
    affine[:3, :] *= scale
    ornt = io_orientation(affine)
    if np.isnan(ornt).any():
        raise PireconUserError(f"{path}: expected an invertible voxel-to-world affine, found {img.affine.tolist()}")
    transform = ornt_transform(ornt, axcodes2ornt(("L", "P", "S")))
    data_lps = apply_orientation(data, transform)
    affine_lps = affine @ inv_ornt_aff(transform, data.shape)
    volume = np.ascontiguousarray(data_lps.transpose(2, 1, 0), dtype=np.float32)
    swap = np.array([[0, 0, 1, 0], [0, 1, 0, 0], [1, 0, 0, 0], [0, 0, 0, 1]], dtype=np.float64)
    affine_out = affine_lps @ swap
    spacing = tuple(float(np.linalg.norm(affine_out[:3, k])) for k in range(3))
    return volume, spacing, affine_out


# --------------------------------------------------------------------------- image directories


def _read_png(path: Path) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            mode = img.mode
            if mode in ("I;16", "I;16B", "I;16L", "I"):  # 16-bit grayscale PNG
                arr = np.asarray(img).astype(np.float64) / 65535.0
            else:
                arr = np.asarray(img.convert("L")).astype(np.float64) / 255.0
    except (UnidentifiedImageError, OSError, SyntaxError) as err:
        raise PireconUserError(f"{path}: expected a PNG image, could not read it ({err})") from None
    return arr.astype(np.float32)


def read_image_directory(directory, *, attenuation: bool = False,
                         mu_water: float = MU_WATER_70KEV) -> list[tuple[str, np.ndarray]]:
    """All 2D images of a directory (non-recursive), for ``images:DIR`` simulation input.

    Files are taken in order of their names (Python string order) and give:

    * ``*.png``: one image, grayscale (colour converted by ITU-R 601 luma,
      alpha ignored) scaled to ``[0, 1]`` by the bit depth (/255 or /65535);
      name: the file name.
    * DICOM (``.dcm`` or a ``DICM`` preamble): one image per file in modality
      units (HU for CT), or attenuation in 1/mm with ``attenuation=True``;
      name: the file name.
    * NIfTI (``.nii``, ``.nii.gz``): every slice of ``read_nifti``'s volume,
      named ``"{file}[{k}]"``.

    Values keep each format's units; normalise before mixing formats. Hidden
    files are ignored; other files are skipped with a warning.

    Returns
    -------
    list of (name, np.ndarray float32 ``(H, W)``)
    """
    check_positive(mu_water, "mu_water")
    directory = Path(directory)
    if not directory.is_dir():
        found = "a file" if directory.exists() else "nothing"
        raise FileNotFoundError(f"image directory {directory}: expected a directory, found {found}")
    out: list[tuple[str, np.ndarray]] = []
    skipped = []
    for path in sorted((p for p in directory.iterdir() if p.is_file() and not p.name.startswith(".")),
                       key=lambda p: p.name):
        if path.suffix.lower() == ".png":
            out.append((path.name, _read_png(path)))
        elif _is_nifti_path(path):
            volume, _, _ = read_nifti(path)
            out.extend((f"{path.name}[{k}]", volume[k]) for k in range(volume.shape[0]))
        elif _is_dicom_path(path):
            ds = _read_dicom(path)
            if "PixelData" not in ds:
                skipped.append(path.name)
                continue
            image, _ = _dicom_pixels(ds, path, attenuation=attenuation, mu_water=mu_water)
            out.append((path.name, image))
        else:
            skipped.append(path.name)
    if not out:
        found = f"{len(skipped)} other files ({', '.join(skipped[:5])}{', ...' if len(skipped) > 5 else ''})" \
            if skipped else "none"
        raise PireconUserError(f"image directory {directory}: expected PNG, DICOM or NIfTI images, found {found}")
    if skipped:
        warnings.warn(f"image directory {directory}: skipped {len(skipped)} files that are not PNG, DICOM or "
                      f"NIfTI images: {', '.join(skipped[:5])}{', ...' if len(skipped) > 5 else ''}",
                      stacklevel=2)
    return out
