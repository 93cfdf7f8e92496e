"""Writing volumes as NIfTI-1 files (``.nii``, ``.nii.gz``) that :func:`pirecon.data.readers.read_nifti` reads back.

Axis conventions are those of :mod:`pirecon.data.readers`: a volume is indexed
``(d, h, w)`` = ``(slice, row, column)`` with row 0 at the top of the displayed
image, and an affine maps ``(d, h, w, 1)`` to NIfTI world coordinates (RAS+,
mm). The NIfTI array itself is stored in NIfTI's ``(i, j, k)`` order, i.e. the
volume transposed to ``(w, h, d)``, with the affine adjusted to match, so
``read_nifti(write_nifti(path, volume, affine=A))`` returns ``volume`` and ``A``
whenever ``A``'s axes are in the LPS order ``read_nifti`` produces (slices
along +S, rows along +P, columns along +L). An affine with other axes is
written as given; ``read_nifti`` then returns the volume reoriented to LPS and
the matching affine (the same voxels in the same places).

From a DICOM series read with :func:`~pirecon.data.readers.read_dicom_series`
(whose affine maps to LPS patient mm), pass ``np.diag([-1, -1, 1, 1]) @ affine``.
"""

from __future__ import annotations

import gzip
import json
import math
import os
import warnings
from pathlib import Path

import numpy as np

from .._atomic import atomic_path
from ..errors import ArgumentError, PireconUserError

__all__ = ["write_nifti", "NIFTI_XFORM_CODE"]

NIFTI_XFORM_CODE = 1
"""``qform_code`` and ``sform_code`` written with an affine: 1, NIFTI_XFORM_SCANNER_ANAT (the scanner's
patient coordinates, as DICOM's ImagePositionPatient / ImageOrientationPatient give them; what
``dcm2niix`` writes)."""

_SUFFIXES = (".nii", ".nii.gz")
# (w, h, d) <-> (d, h, w): reverses the three index axes
_SWAP = np.array([[0, 0, 1, 0], [0, 1, 0, 0], [1, 0, 0, 0], [0, 0, 0, 1]], dtype=np.float64)


def _as_volume(volume, name: str = "volume") -> np.ndarray:
    """``volume`` as a float64 NumPy array ``(D, H, W)``: a 2D ``(H, W)`` is one slice; real and finite.

    Accepts NumPy arrays, sequences and torch tensors (moved to the CPU) without importing torch.
    """
    if hasattr(volume, "detach") and hasattr(volume, "cpu"):  # a torch tensor, possibly on a GPU
        volume = volume.detach().cpu().numpy()
    array = np.asarray(volume)
    if array.dtype == bool or not (np.issubdtype(array.dtype, np.floating) or np.issubdtype(array.dtype, np.integer)):
        raise PireconUserError(f"{name}: expected a real (floating or integer) array, found dtype {array.dtype}")
    if array.ndim == 2:
        array = array[None]
    if array.ndim != 3 or 0 in array.shape:
        raise PireconUserError(f"{name}: expected a non-empty array of shape (D, H, W) or (H, W), "
                               f"found shape {tuple(np.shape(volume))}")
    array = array.astype(np.float64)
    bad = int(np.count_nonzero(~np.isfinite(array)))
    if bad:
        raise PireconUserError(f"{name}: expected finite values, found {bad} NaN or infinite values")
    return array


def _refuse_existing(path: Path, *, overwrite: bool, directory: bool) -> None:
    """Raise unless ``path`` is free, or ``overwrite`` and it is of the kind written (file or directory)."""
    if not os.path.lexists(path):
        return
    if directory:
        if not path.is_dir():
            raise PireconUserError(f"{path}: expected a new output directory, found an existing file")
        count = sum(1 for _ in path.iterdir())
        if count and not overwrite:
            raise PireconUserError(f"{path}: expected a new output path, found an existing directory with "
                                   f"{count} file{'s' if count != 1 else ''}; pass overwrite=True (--overwrite) "
                                   "to replace it")
        return
    if path.is_dir():
        raise PireconUserError(f"{path}: expected a new output file, found an existing directory")
    if not overwrite:
        raise PireconUserError(f"{path}: expected a new output path, found an existing file; "
                               "pass overwrite=True (--overwrite) to replace it")


def _nifti_suffix(path: Path) -> str:
    name = path.name.lower()
    for suffix in (".nii.gz", ".nii"):
        if name.endswith(suffix):
            return suffix
    found = "".join(path.suffixes[-2:]) or "none"
    raise ArgumentError(f"path {path}: expected a NIfTI suffix ({' or '.join(_SUFFIXES)}), found {found!r}")


def _check_affine(affine) -> np.ndarray:
    try:
        a = np.asarray(affine, dtype=np.float64)
    except (TypeError, ValueError):
        raise ArgumentError(f"affine: expected a 4x4 array of numbers, found {type(affine).__name__}") from None
    if a.shape != (4, 4):
        raise ArgumentError(f"affine: expected a 4x4 array, found shape {a.shape}")
    if not np.isfinite(a).all():
        raise ArgumentError(f"affine: expected finite numbers, found {a.tolist()}")
    if not np.array_equal(a[3], [0.0, 0.0, 0.0, 1.0]):
        raise ArgumentError(f"affine: expected the last row [0, 0, 0, 1], found {a[3].tolist()}")
    if abs(np.linalg.det(a[:3, :3])) < 1e-12:
        raise ArgumentError(f"affine: expected an invertible 3x3 part, found {a[:3, :3].tolist()}")
    return a


def _check_spacing(spacing) -> tuple[float, float, float]:
    try:
        values = tuple(float(s) for s in spacing)
    except (TypeError, ValueError):
        raise ArgumentError(f"spacing: expected (dz, dy, dx) in mm, found {spacing!r}") from None
    if len(values) != 3 or not all(math.isfinite(s) and s > 0 for s in values):
        raise ArgumentError(f"spacing: expected three positive finite numbers (dz, dy, dx) in mm, found {spacing!r}")
    return values


def write_nifti(path, volume, *, affine=None, spacing=None, overwrite: bool = False, description: str | None = None,
                provenance: dict | None = None, label_map: bool = False) -> Path:
    """Write ``volume`` as a NIfTI-1 file, float32 (``label_map``: uint8 labels), atomically; return the path.

    Parameters
    ----------
    path : path
        Ending in ``.nii`` or ``.nii.gz`` (gzip-compressed); any other suffix
        is an :class:`~pirecon.errors.ArgumentError`.
    volume : array ``(D, H, W)``, or ``(H, W)`` for one slice
        Real, finite values (NumPy array or CPU/GPU torch tensor), stored as
        float32 as they are (``scl_slope`` 1, ``scl_inter`` 0).
    affine : array ``(4, 4)``, optional
        Maps the volume's indices ``(d, h, w, 1)`` to RAS+ world mm, the
        convention :func:`~pirecon.data.readers.read_nifti` returns. Stored
        in both the sform and the qform with code
        :data:`NIFTI_XFORM_CODE` (1, scanner anatomical); the qform holds
        the nearest rotation and zooms (it cannot hold shears), the sform
        the affine itself, as float32 (about 3e-5 mm at 1000 mm from the
        origin). ``xyzt_units`` mm.
    description : str, optional
        The header's ``descrip`` (at most 79 ASCII characters; default ``"pirecon <version>"``).
    provenance : dict, optional
        JSON data stored in a header extension of code 6 (``comment``): how the volume was made.
    label_map : bool
        Store integer labels 0..255 as uint8 (a segmentation); other values are refused.
    spacing : (dz, dy, dx) in mm, optional
        Used only without ``affine`` (with it, it must agree with the
        affine's column lengths to 1e-4 relative): the voxel sizes are
        written to ``pixdim`` with ``qform_code = sform_code = 0`` (NIfTI's
        "no orientation" method), and a warning says that the file has no
        patient orientation. None is invented: the array is stored in
        the Analyze layout that nibabel and viewers assume for such files
        (``i`` along columns, ``j`` rows from the bottom up, ``k``
        slices), so a viewer shows row 0 at the top and ``read_nifti``
        returns ``volume`` unchanged.
    overwrite : bool
        Replace an existing file at ``path``; without it an existing file
        is refused (:class:`~pirecon.errors.PireconUserError`).

    The file is written to a temporary name beside ``path`` and renamed over
    it when complete, so ``path`` never holds a partial file.
    """
    import nibabel as nib

    from .._version import __version__

    path = Path(path)
    suffix = _nifti_suffix(path)
    values = _as_volume(volume)
    if np.abs(values).max() > np.finfo(np.float32).max:
        raise PireconUserError(f"volume: expected values within float32's range (|x| < 3.4e38), found "
                               f"values from {values.min():g} to {values.max():g}")
    data = values.astype(np.float32)
    if label_map:
        if not (np.all(values == np.round(values)) and values.min() >= 0 and values.max() <= 255):
            raise PireconUserError(f"volume: expected integer labels 0..255 for a label map, found values from "
                                   f"{values.min():g} to {values.max():g}")
        data = values.astype(np.uint8)
    if affine is None and spacing is None:
        raise ArgumentError("affine, spacing: expected an affine (index to RAS+ mm) or the voxel spacing "
                            "(dz, dy, dx) in mm, found neither")
    a = None if affine is None else _check_affine(affine)
    zooms = None if spacing is None else _check_spacing(spacing)
    if a is not None and zooms is not None:
        columns = tuple(float(np.linalg.norm(a[:3, k])) for k in range(3))
        if not np.allclose(columns, zooms, rtol=1e-4, atol=0):
            raise ArgumentError(f"spacing: expected the affine's voxel sizes (dz, dy, dx) = "
                                f"({', '.join(f'{c:g}' for c in columns)}) mm, found {zooms}")
    _refuse_existing(path, overwrite=overwrite, directory=False)

    header = nib.Nifti1Header()
    header["descrip"] = (description or f"pirecon {__version__}")[:79].encode("ascii", "replace")
    if a is not None:
        stored = np.ascontiguousarray(data.transpose(2, 1, 0))  # (i, j, k) = (w, h, d)
        image = nib.Nifti1Image(stored, None, header=header)
        world = a @ _SWAP
        image.set_sform(world, code=NIFTI_XFORM_CODE)
        image.set_qform(world, code=NIFTI_XFORM_CODE)
    else:
        dz, dy, dx = zooms
        stored = np.ascontiguousarray(data[:, ::-1, :].transpose(2, 1, 0))  # j from the bottom row up
        image = nib.Nifti1Image(stored, None, header=header)
        image.header.set_zooms((dx, dy, dz))
        image.set_sform(None, code=0)
        image.set_qform(None, code=0)
        warnings.warn(f"{path}: no affine given, so the NIfTI file has no patient orientation "
                      "(qform_code = sform_code = 0, voxel sizes only)", stacklevel=2)
    image.set_data_dtype(data.dtype)
    image.header.set_xyzt_units("mm")
    if provenance is not None:  # a JSON header extension (NIfTI-1 code 6, "comment")
        text = json.dumps(provenance, sort_keys=True, allow_nan=False)
        image.header.extensions.append(nib.nifti1.Nifti1Extension("comment", text.encode("utf-8")))
    payload = image.to_bytes()
    if suffix == ".nii.gz":
        payload = gzip.compress(payload, mtime=0)
    with atomic_path(path) as tmp:
        Path(tmp).write_bytes(payload)
    return path
