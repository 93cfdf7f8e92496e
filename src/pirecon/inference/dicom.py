"""Writing a volume as one DICOM series of derived single-frame images, with pydicom alone.

Axis conventions are those of :mod:`pirecon.data.readers`: a volume is
``(D, H, W)`` = ``(slice, row, column)`` with row 0 at the top of the image;
patient coordinates are DICOM's LPS in mm; ``PixelSpacing`` is ``(dy, dx)``
(row spacing, column spacing); ``ImageOrientationPatient`` is the direction
of increasing column index (along a row) followed by that of increasing row
index. :func:`~pirecon.data.readers.read_dicom_series` reads the series back
to the same volume (within half a rescale step) and the same affine.

SOP classes and the modules filled
----------------------------------
With patient geometry (``positions`` and ``orientation``, or taken from
``source_files`` when the volume has the source's shape), a **CT Image
Storage** (modality ``"CT"``) or **MR Image Storage** (``"MR"``) image per
slice, with these modules:

* Patient: PatientName, PatientID, PatientBirthDate, PatientSex (Type 2:
  from the source, else empty);
* General Study: StudyInstanceUID (the source's, else new), StudyDate,
  StudyTime (the source's, else now), ReferringPhysicianName, StudyID,
  AccessionNumber, StudyDescription (the source's, else empty);
* General Series: Modality, SeriesInstanceUID (new), SeriesNumber (1000
  plus the source's, else 1000), SeriesDescription, SeriesDate,
  SeriesTime, Laterality (Type 2C, required for paired body parts: the
  source's, else empty, i.e. unknown), BodyPartExamined (the source's, when
  present), PatientPosition (Type 2C: the source's, else empty);
* Frame of Reference: FrameOfReferenceUID (the source's, else new),
  PositionReferenceIndicator (the source's, else empty);
* General Equipment: Manufacturer and ManufacturerModelName ``pirecon``,
  SoftwareVersions ``pirecon <version>``;
* General Acquisition: no attributes (all Type 3);
* General Image: InstanceNumber (1 to D in volume order), ContentDate,
  ContentTime, ImageType ``DERIVED\\SECONDARY\\AXIAL`` for CT (the CT
  Image module's term for a cross-sectional image, not a localizer),
  ``DERIVED\\SECONDARY\\OTHER`` for MR (the MR Image module requires a
  third value; none of its defined terms, maps and subtractions, fits),
  ImageComments (the units when they are not HU, and why there is no
  geometry when there is none), BurnedInAnnotation ``NO``;
* General Reference: DerivationDescription (``derivation``, when given);
  with ``source_files`` of as many slices as the volume, a
  SourceImageSequence item per slice naming the source slice's SOP class
  and instance (purpose: DCM 121322 "Source image for image processing
  operation");
* Image Plane: PixelSpacing, ImageOrientationPatient, ImagePositionPatient,
  SliceThickness (Type 2: empty when unknown), SpacingBetweenSlices (the
  median step between the positions along the normal, else
  ``slice_thickness``), SliceLocation (the position projected on the slice
  normal, row cosines x column cosines);
* Image Pixel: MONOCHROME2, 16-bit signed (BitsStored 16), one sample;
* CT Image: ImageType, RescaleIntercept, RescaleSlope, RescaleType, KVP and
  AcquisitionNumber (Type 2; KVP the source's when it is a CT, else empty);
* MR Image: ImageType, ScanningSequence, SequenceVariant, ScanOptions,
  MRAcquisitionType, RepetitionTime, EchoTime, EchoTrainLength (the source's
  when it is an MR series, with InversionTime, FlipAngle and
  MagneticFieldStrength when present; otherwise ScanningSequence ``RM``,
  research mode, SequenceVariant ``NONE`` and the Type 2 ones empty). The
  MR Image IOD has no Modality LUT module: RescaleSlope and
  RescaleIntercept are written all the same (pixel values are quantised and
  need them; readers, pydicom and read_dicom_series included, apply them),
  RescaleType is not;
* VOI LUT: WindowCenter, WindowWidth, WindowCenterWidthExplanation (and
  VOILUTFunction ``LINEAR_EXACT`` when the width is below 1, where the
  default LINEAR function is not defined);
* SOP Common: SOPClassUID, SOPInstanceUID (new per slice),
  SpecificCharacterSet ``ISO_IR 192`` (UTF-8), InstanceCreationDate/Time.

Without patient geometry, a **Secondary Capture Image Storage** image per
slice: the same Patient, General Study, General Series (without
PatientPosition), General Equipment, General Image (with PatientOrientation
empty, Type 2C), General Reference, Image Pixel, VOI LUT and SOP Common
attributes, plus SC Equipment (ConversionType ``WSD``, workstation;
SecondaryCaptureDeviceManufacturer and ...SoftwareVersions), SC Image
(DateOfSecondaryCapture, TimeOfSecondaryCapture, PixelSpacing when known)
and Modality LUT (rescale). No Frame of Reference, ImagePositionPatient or
ImageOrientationPatient: none is invented; ImageComments says
``no patient geometry: <why>`` and a warning is issued. SliceThickness and
SpacingBetweenSlices are written when ``slice_thickness`` is given (not in
the SC IOD, but read_dicom_series takes the slice spacing from them).

Pixel values
------------
Stored as 16-bit signed integers with one RescaleSlope / RescaleIntercept
per series: ``value = stored * slope + intercept`` is within ``slope / 2`` of
the input. Units ``"HU"`` (CT only): slope 1, intercept -1024 (the usual CT
choice) when the values fit, RescaleType ``HU``, a soft-tissue window
(center 40, width 400). Other units (``"1/mm"``, ``"arbitrary"``, ...):
slope and intercept spread the value range over the 16 bits, RescaleType
``US`` (the standard's defined term for "unspecified"; the CT Image module
requires RescaleType when the values are not HU), the units spelled out in
ImageComments, and a window over the data range.

Files are ``IM_0001.dcm``, ``IM_0002.dcm``, ... (DICOM Part 10, Explicit VR
Little Endian).
"""

from __future__ import annotations

import copy
import math
import os
import secrets
import shutil
import warnings
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np

from .._atomic import _fsync_directory, atomic_path
from ..errors import ArgumentError, PireconUserError
from .nifti import _as_volume, _refuse_existing

__all__ = ["write_dicom_series", "geometry_from_affine", "CT_IMAGE_STORAGE", "MR_IMAGE_STORAGE",
           "SECONDARY_CAPTURE_IMAGE_STORAGE"]

CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
MR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.4"
SECONDARY_CAPTURE_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.7"
_EXPLICIT_VR_LITTLE_ENDIAN = "1.2.840.10008.1.2.1"
_SOP_CLASSES = {"CT": CT_IMAGE_STORAGE, "MR": MR_IMAGE_STORAGE}

_PATIENT_STUDY = ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyDate", "StudyTime", "StudyID",
                  "AccessionNumber", "ReferringPhysicianName", "StudyDescription")
_MR_TYPE_2 = ("ScanOptions", "MRAcquisitionType", "RepetitionTime", "EchoTime", "EchoTrainLength")
_MR_OPTIONAL = ("InversionTime", "FlipAngle", "MagneticFieldStrength")
_INT16 = (-32768, 32767)
_HU_INTERCEPT = -1024.0
_SOFT_TISSUE_WINDOW = (40.0, 400.0)  # HU: center, width
_TOLERANCE = 1e-3  # mm, and for unit direction cosines


def geometry_from_affine(affine, num_slices: int) -> dict:
    """The DICOM geometry of a volume from its affine: the arguments ``write_dicom_series`` takes.

    Parameters
    ----------
    affine : array ``(4, 4)``
        Maps indices ``(d, h, w, 1)`` to LPS patient mm (``metadata["affine"]`` of
        :func:`~pirecon.data.readers.read_dicom_series`; for a NIfTI RAS+ affine, pass
        ``np.diag([-1, -1, 1, 1]) @ affine``).
    num_slices : int
        ``D``.

    Returns
    -------
    dict with ``positions`` (``(D, 3)``, the centre of voxel ``(d, 0, 0)`` in mm),
    ``orientation`` (six direction cosines: columns' direction ``w``, then rows' ``h``) and
    ``pixel_spacing`` ``(dy, dx)`` in mm.
    """
    a = np.asarray(affine, dtype=np.float64)
    if a.shape != (4, 4) or not np.isfinite(a).all():
        raise ArgumentError(f"affine: expected a finite 4x4 array, found shape {a.shape}")
    if isinstance(num_slices, bool) or not isinstance(num_slices, (int, np.integer)) or num_slices < 1:
        raise ArgumentError(f"num_slices: expected a positive int, found {num_slices!r}")
    dy, dx = float(np.linalg.norm(a[:3, 1])), float(np.linalg.norm(a[:3, 2]))
    if dy == 0 or dx == 0:
        raise ArgumentError(f"affine: expected non-zero row and column steps, found {a[:3, 1:3].tolist()}")
    positions = a[:3, 3] + np.arange(num_slices)[:, None] * a[:3, 0]
    orientation = tuple(float(c) for c in np.concatenate([a[:3, 2] / dx, a[:3, 1] / dy]))
    return {"positions": positions, "orientation": orientation, "pixel_spacing": (dy, dx)}


# --------------------------------------------------------------------------- argument checks


def _numbers(value, name: str, n: int, what: str, *, positive: bool = False) -> tuple[float, ...] | None:
    if value is None:
        return None
    try:
        out = tuple(float(v) for v in np.asarray(value, dtype=np.float64).reshape(-1))
        shape = np.shape(value)
    except (TypeError, ValueError):
        raise ArgumentError(f"{name}: expected {what}, found {value!r}") from None
    if len(shape) != 1 or len(out) != n or not all(math.isfinite(v) and (v > 0 or not positive) for v in out):
        raise ArgumentError(f"{name}: expected {what}, found {value!r}")
    return out


def _check_text(value, name: str, limit: int, *, single_value: bool) -> str:
    if not isinstance(value, str):
        raise ArgumentError(f"{name}: expected a str, found {type(value).__name__}")
    if len(value) > limit:
        raise ArgumentError(f"{name}: expected at most {limit} characters (DICOM's limit), found {len(value)}")
    if single_value and "\\" in value:
        raise ArgumentError(f"{name}: expected text without a backslash (DICOM's value separator), found {value!r}")
    return value


def _check_positions(positions, depth: int) -> np.ndarray | None:
    if positions is None:
        return None
    try:
        p = np.asarray(positions, dtype=np.float64)
    except (TypeError, ValueError):
        raise ArgumentError(f"positions: expected an array ({depth}, 3) of ImagePositionPatient in LPS mm, "
                            f"found {type(positions).__name__}") from None
    if p.shape != (depth, 3):
        raise ArgumentError(f"positions: expected shape ({depth}, 3), one LPS position in mm per slice, "
                            f"found shape {p.shape}")
    if not np.isfinite(p).all():
        raise ArgumentError("positions: expected finite numbers, found NaN or infinite values")
    return p


def _check_orientation(orientation) -> tuple[float, ...] | None:
    o = _numbers(orientation, "orientation", 6, "six direction cosines (row direction, then column direction)")
    if o is None:
        return None
    row, col = np.asarray(o[:3]), np.asarray(o[3:])
    norms = (float(np.linalg.norm(row)), float(np.linalg.norm(col)))
    if max(abs(n - 1) for n in norms) > _TOLERANCE:
        raise ArgumentError(f"orientation: expected two unit vectors, found lengths {norms[0]:g} and {norms[1]:g}")
    if abs(float(row @ col)) > _TOLERANCE:
        raise ArgumentError(f"orientation: expected orthogonal row and column directions, found the dot "
                            f"product {float(row @ col):g}")
    return o


def _read_sources(source_files) -> list:
    import pydicom
    from pydicom.errors import InvalidDicomError

    if isinstance(source_files, (str, os.PathLike)):
        raise ArgumentError(f"source_files: expected a list of the source series' DICOM files, found one path "
                            f"{source_files!s}")
    paths = [Path(p) for p in source_files]
    if not paths:
        raise ArgumentError("source_files: expected the source series' DICOM files, found an empty list")
    sources = []
    for path in paths:
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True)
        except (InvalidDicomError, OSError, EOFError, ValueError) as err:
            raise PireconUserError(f"{path}: expected a DICOM file of the source series, could not read it "
                                   f"({err})") from None
        for keyword in ("SOPClassUID", "SOPInstanceUID", "StudyInstanceUID"):
            if not ds.get(keyword):
                raise PireconUserError(f"{path}: expected tag {keyword} in a source DICOM image, found none")
        sources.append(ds)
    studies = {str(ds.StudyInstanceUID) for ds in sources}
    if len(studies) > 1:
        raise PireconUserError(f"source_files: expected files of one study, found {len(studies)} "
                               "StudyInstanceUIDs")
    return sources


def _source_geometry(sources: list, shape: tuple[int, int, int]) -> tuple[dict | None, str]:
    """Positions, orientation, spacing and thickness of the source series when they fit ``shape``, else a reason."""
    found = (len(sources), int(sources[0].get("Rows") or 0), int(sources[0].get("Columns") or 0))
    if found != shape:
        return None, (f"the volume's shape {shape} differs from the source series' {found} "
                      "and no positions and orientation were given")
    if not all(ds.get("ImagePositionPatient") and ds.get("ImageOrientationPatient") for ds in sources):
        return None, "the source series has no ImagePositionPatient / ImageOrientationPatient"
    positions = np.array([[float(v) for v in ds.ImagePositionPatient] for ds in sources])
    geometry = {"positions": positions, "orientation": tuple(float(v) for v in sources[0].ImageOrientationPatient),
                "pixel_spacing": None, "slice_thickness": None}
    if sources[0].get("PixelSpacing"):
        geometry["pixel_spacing"] = tuple(float(v) for v in sources[0].PixelSpacing)
    if sources[0].get("SliceThickness") not in (None, ""):
        geometry["slice_thickness"] = float(sources[0].SliceThickness)
    return geometry, ""


# --------------------------------------------------------------------------- values


def _ds(x: float) -> str:
    """``x`` as a DICOM decimal string (at most 16 characters)."""
    from pydicom.valuerep import format_number_as_ds

    text = format_number_as_ds(float(x))
    return "0" if float(text) == 0 else text  # no "-0.0"


def _rescale(values: np.ndarray, hu: bool) -> tuple[np.ndarray, str, str]:
    """16-bit stored values and the slope and intercept (as written) that map them back within slope / 2."""
    low, high = float(values.min()), float(values.max())
    if hu and np.rint(low) - _HU_INTERCEPT >= _INT16[0] and np.rint(high) - _HU_INTERCEPT <= _INT16[1]:
        slope, intercept = "1", _ds(_HU_INTERCEPT)
    elif high == low:
        slope, intercept = "1", _ds(low)
    else:
        # 65533 steps over the range leave a step of margin on either side for the rounding of the strings
        slope = _ds((high - low) / 65533 * (1 + 1e-9))
        intercept = _ds(0.5 * (low + high))
    s, b = float(slope), float(intercept)
    stored = np.rint((values - b) / s)
    if stored.min() < _INT16[0] or stored.max() > _INT16[1] or \
            np.max(np.abs(stored * s + b - values)) > 0.5 * s * (1 + 1e-6):
        raise PireconUserError(f"volume: expected values whose range can be stored in 16 bits with a DICOM rescale "
                               f"(slope and intercept as 16-character decimals), found values from {low!r} to "
                               f"{high!r}")
    return stored.astype("<i2"), slope, intercept


def _window(values: np.ndarray, hu: bool, slope: float) -> tuple[str, str, str, bool]:
    """WindowCenter, WindowWidth, their explanation, and whether LINEAR_EXACT is needed (width below 1)."""
    if hu:
        center, width = _SOFT_TISSUE_WINDOW
        return _ds(center), _ds(width), "SOFT TISSUE", False
    low, high = float(values.min()), float(values.max())
    width = max(high - low, slope)
    return _ds(0.5 * (low + high)), _ds(width), "DATA RANGE", width < 1


# --------------------------------------------------------------------------- writing


def _save(ds, path: Path) -> None:
    """Write ``ds`` as a DICOM Part 10 file (preamble, ``DICM``, group 2 meta)."""
    import pydicom

    if int(pydicom.__version__.split(".")[0]) >= 3:
        ds.save_as(path, enforce_file_format=True)
    else:  # pydicom 2.x
        ds.is_little_endian, ds.is_implicit_VR = True, False
        ds.save_as(path, write_like_original=False)


def _new_sibling(path: Path, kind: str) -> Path:
    """A new, empty directory next to ``path`` (hidden, named after it); created with the usual permissions."""
    for _ in range(100):
        candidate = path.parent / f".{path.name}.{secrets.token_hex(8)}.{kind}"
        try:
            candidate.mkdir()
        except FileExistsError:
            continue
        return candidate
    raise FileExistsError(f"{path.parent}: expected a free temporary name for {path.name!r}, found 100 names taken")


def _publish(tmp: Path, directory: Path, *, overwrite: bool) -> None:
    """Move the complete series ``tmp`` to ``directory``, replacing what is there (an empty or old series)."""
    if os.path.lexists(directory):
        _refuse_existing(directory, overwrite=overwrite, directory=True)  # again: it may have changed meanwhile
        old = _new_sibling(directory, "old")
        old.rmdir()  # keep only the fresh random name: Windows renames no directory onto an existing one
        os.replace(directory, old)
        try:
            os.replace(tmp, directory)
        except BaseException:
            os.replace(old, directory)
            raise
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, directory)
    _fsync_directory(directory.parent)


def _carry(ds, source, keywords, *, empty: bool) -> None:
    """Copy ``keywords`` from ``source`` (person names as text, re-encoded as UTF-8); absent ones empty if ``empty``."""
    for keyword in keywords:
        value = None if source is None else source.get(keyword)
        if value is None or value == "":
            if empty:
                setattr(ds, keyword, None)
            continue
        if keyword.endswith("Name") and source[keyword].VR == "PN":
            value = str(value)
        setattr(ds, keyword, value)


@dataclass
class _Geometry:
    """Where the slices are: all of it for CT / MR Image Storage, or ``missing`` says why there is none."""

    positions: np.ndarray | None  # (D, 3) ImagePositionPatient, LPS mm
    orientation: tuple[float, ...] | None  # six direction cosines: along a row, then down a column
    pixel_spacing: tuple[float, float] | None  # (dy, dx) mm, also known without patient geometry
    slice_thickness: float | None  # mm
    missing: str = ""

    @property
    def normal(self) -> np.ndarray:
        return np.cross(self.orientation[:3], self.orientation[3:])

    @property
    def spacing_between(self) -> float | None:
        """The median step between the positions along the normal, else the slice thickness."""
        if self.positions is None or len(self.positions) < 2:
            return self.slice_thickness
        return float(np.median(np.abs(np.diff(self.positions @ self.normal))))


def _resolve_geometry(positions, orientation, pixel_spacing, slice_thickness, sources, shape) -> _Geometry:
    """The checked arguments' geometry, else the source series' when it fits ``shape``, else none (and why)."""
    missing = ""
    if positions is None:
        if sources is None:
            missing = "no positions and orientation were given"
        else:
            found, missing = _source_geometry(sources, shape)
            if found is not None:
                positions, orientation = found["positions"], found["orientation"]
                pixel_spacing = pixel_spacing or found["pixel_spacing"]
                slice_thickness = found["slice_thickness"] if slice_thickness is None else slice_thickness
    geometry = _Geometry(positions, orientation, pixel_spacing, slice_thickness, missing)
    if positions is None:
        return geometry
    if pixel_spacing is None:
        raise ArgumentError("pixel_spacing: expected (dy, dx) in mm with patient geometry (the Image Plane "
                            "module requires PixelSpacing), found None")
    along = positions @ geometry.normal
    steps = np.abs(np.diff(along))
    if len(steps) and steps.min() < _TOLERANCE:
        k = int(np.argmin(steps))
        raise ArgumentError(f"positions: expected distinct slice positions along the normal "
                            f"{geometry.normal.round(6).tolist()}, found slices {k} and {k + 1} at {along[k]:g} "
                            f"and {along[k + 1]:g} mm")
    return geometry


def _series_dataset(values: np.ndarray, *, modality: str, units: str, slope: str, intercept: str,
                    geometry: _Geometry, source, series_description: str, derivation: str):
    """The attributes all images of the series share (see the module docstring), by module."""
    from pydicom.dataset import Dataset
    from pydicom.uid import generate_uid

    from .._version import __version__

    hu = units.upper() == "HU"
    placed = geometry.positions is not None
    same_modality = source is not None and str(source.get("Modality", "")).upper() == modality
    now = datetime.now()
    date, time = now.strftime("%Y%m%d"), now.strftime("%H%M%S.%f")
    software = f"pirecon {__version__}"
    ds = Dataset()
    # SOP Common
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.InstanceCreationDate, ds.InstanceCreationTime = date, time
    ds.SOPClassUID = _SOP_CLASSES[modality] if placed else SECONDARY_CAPTURE_IMAGE_STORAGE
    # Patient, General Study
    _carry(ds, source, _PATIENT_STUDY, empty=True)
    ds.StudyInstanceUID = str(source.StudyInstanceUID) if source is not None else generate_uid()
    if source is None:
        ds.StudyDate, ds.StudyTime = date, time
    # General Series
    ds.Modality = modality
    ds.SeriesInstanceUID = generate_uid()
    source_number = str(source.get("SeriesNumber", "")).strip() if source is not None else ""
    ds.SeriesNumber = 1000 + (int(source_number) if source_number.lstrip("-").isdigit() else 0)
    ds.SeriesDate, ds.SeriesTime = date, time
    ds.SeriesDescription = series_description
    _carry(ds, source, ["Laterality"], empty=True)  # Type 2C: required for paired body parts, unknown here
    _carry(ds, source, ["BodyPartExamined"], empty=False)
    if placed:
        _carry(ds, source, ["PatientPosition"], empty=True)
        # Frame of Reference
        has_frame = source is not None and source.get("FrameOfReferenceUID")
        ds.FrameOfReferenceUID = str(source.FrameOfReferenceUID) if has_frame else generate_uid()
        _carry(ds, source, ["PositionReferenceIndicator"], empty=True)
    # General Equipment
    ds.Manufacturer = "pirecon"
    ds.ManufacturerModelName = "pirecon"
    ds.SoftwareVersions = software
    if not placed:
        # SC Equipment
        ds.ConversionType = "WSD"
        ds.SecondaryCaptureDeviceManufacturer = "pirecon"
        ds.SecondaryCaptureDeviceSoftwareVersions = software
    # General Image
    ds.ContentDate, ds.ContentTime = date, time
    ds.ImageType = ["DERIVED", "SECONDARY"] + ([{"CT": "AXIAL", "MR": "OTHER"}[modality]] if placed else [])
    if not placed:
        ds.PatientOrientation = None
        # SC Image
        ds.DateOfSecondaryCapture, ds.TimeOfSecondaryCapture = date, time
    comments = ([] if hu else [f"pixel values (after rescale) in {units}"]) + \
        ([f"no patient geometry: {geometry.missing}"] if geometry.missing else [])
    if comments:
        ds.ImageComments = "; ".join(comments)
    ds.BurnedInAnnotation = "NO"
    # General Reference
    if derivation:
        ds.DerivationDescription = derivation
    # Image Plane (or, without patient geometry, the spacings that are known)
    if geometry.pixel_spacing is not None:
        ds.PixelSpacing = [_ds(v) for v in geometry.pixel_spacing]
    if placed:
        ds.ImageOrientationPatient = [_ds(v) for v in geometry.orientation]
    if placed or geometry.slice_thickness is not None:
        ds.SliceThickness = None if geometry.slice_thickness is None else _ds(geometry.slice_thickness)
    if geometry.spacing_between is not None:
        ds.SpacingBetweenSlices = _ds(geometry.spacing_between)
    # CT Image / MR Image
    if placed and modality == "CT":
        _carry(ds, source if same_modality else None, ["KVP"], empty=True)
        ds.AcquisitionNumber = None
    if placed and modality == "MR":
        if same_modality and source.get("ScanningSequence") and source.get("SequenceVariant"):
            _carry(ds, source, ["ScanningSequence", "SequenceVariant"], empty=False)
            _carry(ds, source, _MR_TYPE_2, empty=True)
            _carry(ds, source, _MR_OPTIONAL, empty=False)
        else:
            ds.ScanningSequence, ds.SequenceVariant = "RM", "NONE"
            _carry(ds, None, _MR_TYPE_2, empty=True)
    # Image Pixel
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = values.shape[1:]
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 16, 15
    ds.PixelRepresentation = 1
    # Modality LUT (the CT Image module's rescale for CT; not in the MR Image IOD, written all the same)
    ds.RescaleIntercept, ds.RescaleSlope = intercept, slope
    if not (placed and modality == "MR"):
        ds.RescaleType = "HU" if hu else "US"
    # VOI LUT
    center, width, explanation, exact = _window(values, hu, float(slope))
    ds.WindowCenter, ds.WindowWidth = center, width
    ds.WindowCenterWidthExplanation = explanation
    if exact:
        ds.VOILUTFunction = "LINEAR_EXACT"
    return ds


def _slice_dataset(template, d: int, stored: np.ndarray, geometry: _Geometry, source):
    """Image ``d`` (0-based): the series' attributes and its own (UID, number, position, source, pixels)."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import generate_uid

    ds = copy.deepcopy(template)
    ds.SOPInstanceUID = generate_uid()
    ds.InstanceNumber = d + 1
    if geometry.positions is not None:
        ds.ImagePositionPatient = [_ds(v) for v in geometry.positions[d]]
        ds.SliceLocation = _ds(float(geometry.positions[d] @ geometry.normal))
    if source is not None:
        item = Dataset()
        item.ReferencedSOPClassUID = str(source.SOPClassUID)
        item.ReferencedSOPInstanceUID = str(source.SOPInstanceUID)
        purpose = Dataset()
        purpose.CodeValue, purpose.CodingSchemeDesignator = "121322", "DCM"
        purpose.CodeMeaning = "Source image for image processing operation"
        item.PurposeOfReferenceCodeSequence = [purpose]
        ds.SourceImageSequence = [item]
    ds.PixelData = stored.tobytes()
    ds["PixelData"].VR = "OW"
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = _EXPLICIT_VR_LITTLE_ENDIAN
    ds.file_meta = meta
    return ds


def write_dicom_series(directory, volume, *, modality: str, units: str, pixel_spacing=None, slice_thickness=None,
                       positions=None, orientation=None, source_files=None,
                       series_description: str = "pirecon reconstruction", derivation: str = "",
                       slice_comments=None, overwrite: bool = False) -> list[Path]:
    """Write ``volume`` as one new DICOM series of derived images, one file per slice; return the files.

    Parameters
    ----------
    directory : path
        Created with ``IM_0001.dcm`` ... ``IM_<D>.dcm`` (slice ``d`` of the volume is instance ``d + 1``).
        The series is written into a temporary directory beside it and renamed into place when complete,
        so ``directory`` never holds a partial series. An existing non-empty directory is refused unless
        ``overwrite``, which replaces it (the old series is deleted only after the new one is in place).
    volume : array ``(D, H, W)``, or ``(H, W)`` for one slice
        Real, finite values in ``units`` (NumPy array or torch tensor).
    modality : {"CT", "MR"}
        The SOP class with patient geometry (CT or MR Image Storage) and the Modality tag.
    units : str
        ``"HU"`` (CT only) or any other units of the values (``"1/mm"``, ``"arbitrary"``); see the
        module docstring for the rescale and window chosen.
    pixel_spacing : (dy, dx) in mm, optional
        Row spacing, column spacing (PixelSpacing). Needed with patient geometry.
    slice_thickness : float, optional
        Nominal slice thickness in mm (SliceThickness).
    positions : array ``(D, 3)``, optional
        ImagePositionPatient of each slice (the centre of its first voxel), LPS mm. With ``orientation``.
    orientation : six floats, optional
        ImageOrientationPatient: the unit direction of increasing column index, then of increasing row
        index (LPS). With ``positions``.
    source_files : list of paths, optional
        The source series' DICOM files in read order (``metadata["files"]`` of
        :func:`~pirecon.data.readers.read_dicom_series`). The new series joins the source's study
        (StudyInstanceUID, patient and study tags) and frame of reference, and when the volume has as
        many slices, each image names its source slice (SourceImageSequence). When the volume also has
        the source's rows and columns and ``positions`` / ``orientation`` are not given, the geometry
        (positions, orientation, pixel spacing and slice thickness unless given) is the source's.
    series_description : str
        SeriesDescription (at most 64 characters).
    derivation : str
        DerivationDescription, e.g. ``"pirecon 0.1.0 LearnedPrimalDual, checkpoint sha256 <hex>"``.
    slice_comments : list of D str, optional
        Added to each image's ImageComments (e.g. a task model's lesion probability for that slice).
    overwrite : bool
        Replace an existing non-empty ``directory``.

    Without patient geometry the images are Secondary Capture, ImageComments says why, and a warning is
    issued. Bad arguments raise :class:`~pirecon.errors.ArgumentError` (a
    :class:`~pirecon.errors.PireconUserError`) naming the argument, what was expected and what was found.
    """
    directory = Path(directory)
    values = _as_volume(volume)
    depth, rows, columns = values.shape
    if rows > 65535 or columns > 65535:
        raise PireconUserError(f"volume: expected at most 65535 rows and columns (DICOM's limit), found {rows} x "
                               f"{columns}")
    if not isinstance(modality, str) or modality.upper() not in _SOP_CLASSES:
        raise ArgumentError(f"modality: expected one of {', '.join(map(repr, _SOP_CLASSES))}, found {modality!r}")
    modality = modality.upper()
    units = _check_text(units, "units", 64, single_value=True).strip()
    if not units:
        raise ArgumentError("units: expected the units of the values ('HU', '1/mm', 'arbitrary', ...), found ''")
    hu = units.upper() == "HU"
    if hu and modality != "CT":
        raise ArgumentError(f"units: expected units other than HU for modality {modality} (Hounsfield units are "
                            "CT's), found 'HU'")
    pixel_spacing = _numbers(pixel_spacing, "pixel_spacing", 2, "(dy, dx), two positive numbers in mm",
                             positive=True)
    if slice_thickness is not None:
        if isinstance(slice_thickness, (bool, str)) or not isinstance(slice_thickness, (int, float, np.number)) \
                or not math.isfinite(slice_thickness) or slice_thickness <= 0:
            raise ArgumentError(f"slice_thickness: expected a positive number of mm, found {slice_thickness!r}")
        slice_thickness = float(slice_thickness)
    positions = _check_positions(positions, depth)
    orientation = _check_orientation(orientation)
    if (positions is None) != (orientation is None):
        given, missing = ("positions", "orientation") if orientation is None else ("orientation", "positions")
        raise ArgumentError(f"{missing}: expected it with {given} (patient geometry needs both), found None")
    series_description = _check_text(series_description, "series_description", 64, single_value=True)
    derivation = _check_text(derivation, "derivation", 1024, single_value=False)
    sources = None if source_files is None else _read_sources(source_files)
    if slice_comments is not None:
        if isinstance(slice_comments, str) or len(slice_comments) != depth:
            raise ArgumentError(f"slice_comments: expected a list of {depth} strings (one per slice), found "
                                f"{slice_comments!r:.80}")
        slice_comments = [_check_text(c, "slice_comments", 10240, single_value=False) for c in slice_comments]

    geometry = _resolve_geometry(positions, orientation, pixel_spacing, slice_thickness, sources,
                                 (depth, rows, columns))
    stored, slope, intercept = _rescale(values, hu)
    _refuse_existing(directory, overwrite=overwrite, directory=True)
    if geometry.missing:
        warnings.warn(f"DICOM series {directory}: no patient geometry ({geometry.missing}); writing Secondary "
                      "Capture images without position or orientation", stacklevel=2)
    template = _series_dataset(values, modality=modality, units=units, slope=slope, intercept=intercept,
                               geometry=geometry, source=None if sources is None else sources[0],
                               series_description=series_description, derivation=derivation)
    refer = sources is not None and len(sources) == depth
    digits = max(4, len(str(depth)))
    names = [f"IM_{d + 1:0{digits}d}.dcm" for d in range(depth)]
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = _new_sibling(directory, "tmp")
    try:
        for d, name in enumerate(names):
            ds = _slice_dataset(template, d, stored[d], geometry, sources[d] if refer else None)
            if slice_comments is not None and slice_comments[d]:
                ds.ImageComments = "; ".join(filter(None, (ds.get("ImageComments"), slice_comments[d])))
            with atomic_path(tmp / name) as path:
                _save(ds, path)
        _publish(tmp, directory, overwrite=overwrite)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return [directory / name for name in names]
