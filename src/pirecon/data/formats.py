"""pirecon's HDF5 files: CT raw data, MRI raw data (fastMRI-compatible) and reconstructions.

Three kinds of file, each specified in ``data_specs/`` (prose + JSON Schema):

* ``ct_raw`` (``data_specs/ct_raw.md``): sinograms ``(N, angles, detectors)``
  with their geometry and noise model, optional ground truth, segmentation
  and labels;
* ``mri_raw`` (``data_specs/mri_raw.md``): k-space in fastMRI's layout
  (``kspace``, ``mask``, ``reconstruction_rss``, ``ismrmrd_header``, root
  attributes) plus pirecon's optional additions (coil maps, complex ground
  truth, non-Cartesian trajectories, segmentation, labels); fastMRI's own
  loaders read these files, and :func:`read_mri_raw` reads plain fastMRI files;
* ``reconstruction`` (``data_specs/reconstruction.md``): reconstructed images
  with optional uncertainty maps, task outputs and provenance.

Every dataset is chunked one slice per chunk (gzip level 4 with the shuffle
filter), so a data loader reads slice ``i`` with ``f[name][i]`` without
touching the rest of the file. Writers validate their inputs (shapes, dtypes,
finite values, consistent slice counts) and raise ``ValueError`` naming the
argument; files appear atomically (temporary file renamed into place).
Readers check the file against its spec first and raise
:class:`pirecon.data.validate.SpecError` (a ``PireconUserError``, itself a ``ValueError``) naming the file,
the key, what was expected and what was found.

Array arguments may be NumPy arrays or torch tensors (any device); readers
return NumPy arrays.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import math
import numbers
import os
import re
import xml.etree.ElementTree as ElementTree
from pathlib import Path
from typing import Any, Mapping

import h5py
import numpy as np

from .._atomic import atomic_path
from ..ct.geometry import Geometry, geometry_from_dict
from ..noise import ComplexGaussianNoise, NoiseModel, noise_from_dict
from ._spec import FORMAT_VERSION, KINDS
from ._spec import decode_attr as _decode_attr
from ._spec import first_nonfinite as _first_nonfinite
from ._spec import fmt_index as _fmt_index
from ._spec import fmt_shape as _fmt_shape
from .validate import check_loaded, checked_file, file_kind, validate

__all__ = [
    "FORMAT_VERSION",
    "KINDS",
    "CTRaw",
    "MRIRaw",
    "ReconstructionFile",
    "write_ct_raw",
    "read_ct_raw",
    "write_mri_raw",
    "read_mri_raw",
    "read_mri_noise",
    "write_reconstruction",
    "read_reconstruction",
    "file_kind",
]

#: Root attributes each kind reserves for itself; everything else under ``attrs`` is the user's.
RESERVED_ATTRS = {
    "ct_raw": ("pirecon_format", "format_version", "pirecon_version", "geometry", "noise"),
    "mri_raw": ("pirecon_format", "format_version", "pirecon_version", "image_shape", "noise"),
    "reconstruction": ("pirecon_format", "format_version", "pirecon_version", "provenance"),
}

#: Per-slice chunks, gzip (readable by every HDF5 installation) with byte shuffling.
COMPRESSION = {"compression": "gzip", "compression_opts": 4, "shuffle": True}

_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_ISMRMRD_NS = "http://www.ismrm.org/ISMRMRD"


# --------------------------------------------------------------------------------------------------
# result types
# --------------------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True, eq=False)
class CTRaw:
    """Contents of a ``ct_raw`` file (see ``data_specs/ct_raw.md``).

    ``sinogram`` float32 ``(N, *geometry.sinogram_shape)`` line integrals (image units x mm);
    ``ground_truth`` float32 ``(N, *geometry.image_shape)``; ``segmentation`` uint8 of the image
    shape; ``labels`` int64 ``(N,)``; ``attrs`` the user's root attributes.
    """

    sinogram: np.ndarray
    geometry: Geometry
    noise: NoiseModel | None = None
    ground_truth: np.ndarray | None = None
    segmentation: np.ndarray | None = None
    labels: np.ndarray | None = None
    attrs: dict = dataclasses.field(default_factory=dict)

    @property
    def num_slices(self) -> int:
        return int(self.sinogram.shape[0])


@dataclasses.dataclass(frozen=True, eq=False)
class MRIRaw:
    """Contents of an ``mri_raw`` file or a plain fastMRI file (see ``data_specs/mri_raw.md``).

    ``kspace`` complex64: Cartesian ``(N, coils, H, W)`` (single-coil files come back as
    ``(N, 1, H, W)`` with ``single_coil=True``), non-Cartesian ``(N, coils, K)`` with
    ``trajectory`` float32 ``(2, K)`` or ``(N, 2, K)`` in radians per pixel. ``mask`` float32,
    broadcastable to ``kspace``: ``(N, 1, 1, W)`` for line masks, ``(N, 1, H, W)`` for 2D masks.
    ``coil_maps`` complex64 ``(N, coils, H, W)`` (maps stored once for every slice come back
    repeated per slice); ``ground_truth`` complex64 ``(N, H, W)``;
    ``reconstruction_rss`` float32 ``(N, h, w)`` (fastMRI's ``reconstruction_rss``, or
    ``reconstruction_esc`` of single-coil files); ``ismrmrd_header`` the XML text; ``noise`` the
    k-space noise model (:class:`pirecon.noise.ComplexGaussianNoise`, see :func:`read_mri_noise`) or
    ``None`` when unknown or noise-free.
    """

    kspace: np.ndarray
    mask: np.ndarray | None = None
    trajectory: np.ndarray | None = None
    coil_maps: np.ndarray | None = None
    ground_truth: np.ndarray | None = None
    reconstruction_rss: np.ndarray | None = None
    segmentation: np.ndarray | None = None
    labels: np.ndarray | None = None
    attrs: dict = dataclasses.field(default_factory=dict)
    single_coil: bool = False
    ismrmrd_header: str | None = None
    noise: NoiseModel | None = None

    @property
    def num_slices(self) -> int:
        return int(self.kspace.shape[0])

    @property
    def cartesian(self) -> bool:
        return self.trajectory is None


@dataclasses.dataclass(frozen=True, eq=False)
class ReconstructionFile:
    """Contents of a ``reconstruction`` file (see ``data_specs/reconstruction.md``).

    ``image`` float32 or complex64 ``(N, H, W)`` (or ``(N, D, H, W)``); ``uncertainty`` float32 of
    the same shape; ``interval`` the float32 ``(lower, upper)`` bounds of the same shape, or None; ``task``
    named arrays with ``N`` rows; ``provenance`` a JSON dict.
    """

    image: np.ndarray
    uncertainty: np.ndarray | None = None
    interval: tuple[np.ndarray, np.ndarray] | None = None
    task: dict = dataclasses.field(default_factory=dict)
    provenance: dict = dataclasses.field(default_factory=dict)

    @property
    def num_slices(self) -> int:
        return int(self.image.shape[0])


# --------------------------------------------------------------------------------------------------
# helpers of the writers
# --------------------------------------------------------------------------------------------------

def _pirecon_version() -> str:
    from .._version import __version__

    return str(__version__)


def _to_numpy(x, name: str) -> np.ndarray:
    """NumPy view of an array-like or torch tensor (detached, on the CPU), else ``ValueError``."""
    if hasattr(x, "detach") and hasattr(x, "cpu") and hasattr(x, "numpy"):
        import torch

        t = x.detach()
        if t.dtype == torch.bfloat16:
            t = t.float()
        return t.cpu().resolve_conj().resolve_neg().numpy()
    if isinstance(x, np.ndarray):
        return x
    if isinstance(x, (list, tuple, numbers.Number, np.generic)):
        try:
            a = np.asarray(x)
        except ValueError:
            a = None
        if a is not None and a.dtype.kind in "biufc":
            return a
    raise ValueError(f"{name}: expected a numpy array or torch tensor, found {type(x).__name__}")


def _check_finite(a: np.ndarray, name: str) -> None:
    bad = _first_nonfinite(a)
    if bad is not None:
        raise ValueError(f"{name}: expected finite values, found {bad[0]} at index {_fmt_index(bad[1])}")


def _real(x, name: str) -> np.ndarray:
    """float32 copy of real (floating or integer) data, finite."""
    a = _to_numpy(x, name)
    if a.dtype.kind not in "iuf":
        raise ValueError(f"{name}: expected real numbers (a floating or integer dtype), found dtype {a.dtype}")
    a = np.ascontiguousarray(a, dtype=np.float32)
    _check_finite(a, name)
    return a


def _complex(x, name: str, *, allow_real: bool = False) -> np.ndarray:
    """complex64 copy of complex (or, with ``allow_real``, real) data, finite."""
    a = _to_numpy(x, name)
    kinds = "iufc" if allow_real else "c"
    if a.dtype.kind not in kinds:
        what = "a complex or real dtype" if allow_real else "a complex dtype (complex64 or complex128)"
        raise ValueError(f"{name}: expected {what}, found dtype {a.dtype}")
    a = np.ascontiguousarray(a, dtype=np.complex64)
    _check_finite(a, name)
    return a


def _slices(a: np.ndarray, name: str, trailing: tuple, *, n: int | None, n_from: str,
            trailing_from: str) -> np.ndarray:
    """Check ``a`` is ``(N, *trailing)`` (a singleton channel ``(N, 1, *trailing)`` is squeezed)."""
    trailing = tuple(int(s) for s in trailing)
    if a.ndim == len(trailing) + 2 and a.shape[1] == 1 and tuple(a.shape[2:]) == trailing:
        a = a[:, 0]
    if a.ndim != len(trailing) + 1 or tuple(a.shape[1:]) != trailing:
        raise ValueError(f"{name}: expected shape {_fmt_shape(trailing, 'N')} ({trailing_from}), "
                         f"found {tuple(a.shape)}")
    if n is not None and a.shape[0] != n:
        raise ValueError(f"{name}: expected {n} slices (as {n_from}), found {a.shape[0]}")
    if a.shape[0] < 1:
        raise ValueError(f"{name}: expected at least 1 slice, found 0")
    return a


def _class_indices(x, name: str, *, dtype, maximum: int | None) -> np.ndarray:
    """Non-negative integer class indices (integral floats and booleans accepted) as ``dtype``."""
    a = _to_numpy(x, name)
    if a.dtype.kind not in "biuf":
        raise ValueError(f"{name}: expected integer class indices, found dtype {a.dtype}")
    if a.dtype.kind == "f":
        _check_finite(a, name)
        frac = a != np.round(a)
        if frac.any():
            index = np.unravel_index(int(np.argmax(frac)), a.shape)
            raise ValueError(f"{name}: expected integer class indices, found {a[index].item()!r} at index "
                             f"{_fmt_index(index)}")
    if a.size:
        low = a < 0
        if low.any():
            index = np.unravel_index(int(np.argmax(low)), a.shape)
            raise ValueError(f"{name}: expected class indices >= 0, found {a[index].item()} at index {_fmt_index(index)}")
        if maximum is not None and a.max() > maximum:
            index = np.unravel_index(int(np.argmax(a > maximum)), a.shape)
            raise ValueError(f"{name}: expected class indices in 0..{maximum}, found {a[index].item()} at index "
                             f"{_fmt_index(index)}")
    return np.ascontiguousarray(a, dtype=dtype)


def _num_classes(a: np.ndarray) -> int:
    """Declared class count: at least 2 (background and one class), else the largest index + 1."""
    return max(2, int(a.max()) + 1) if a.size else 2


def _segmentation(x, shapes: list[tuple], n: int, n_from: str, shape_from: str):
    a = _class_indices(x, "segmentation", dtype=np.uint8, maximum=255)
    for shape in shapes:
        if a.ndim == len(shape) + 2 and a.shape[1] == 1 and tuple(a.shape[2:]) == shape:
            a = a[:, 0]
        if a.ndim == len(shape) + 1 and tuple(a.shape[1:]) == shape:
            break
    else:
        expected = " or ".join(_fmt_shape(s, "N") for s in shapes)
        raise ValueError(f"segmentation: expected shape {expected} ({shape_from}), found {tuple(a.shape)}")
    if a.shape[0] != n:
        raise ValueError(f"segmentation: expected {n} slices (as {n_from}), found {a.shape[0]}")
    return a


def _labels(x, n: int, n_from: str) -> np.ndarray:
    a = _class_indices(x, "labels", dtype=np.int64, maximum=None)
    if a.ndim == 2 and a.shape[1] == 1:
        a = a[:, 0]
    if a.ndim != 1 or a.shape[0] != n:
        raise ValueError(f"labels: expected shape ({n},) (one class index per slice, as {n_from}), "
                         f"found {tuple(a.shape)}")
    return a


def _attr_value(value, name: str):
    """A user attribute as something h5py stores and :func:`_decode_attr` reads back unchanged."""
    if isinstance(value, (bool, np.bool_)):
        return np.bool_(value)
    if isinstance(value, str):
        return value
    if isinstance(value, numbers.Integral):
        return np.int64(value)
    if isinstance(value, numbers.Real):
        if not math.isfinite(float(value)):
            raise ValueError(f"{name}: expected a finite number, found {value!r}")
        return np.float64(value)
    if hasattr(value, "detach"):
        value = _to_numpy(value, name)
    if isinstance(value, (list, tuple, np.ndarray)):
        if isinstance(value, np.ndarray) and value.ndim != 1:
            raise ValueError(f"{name}: expected a 1-D sequence, found shape {value.shape}")
        items = value.tolist() if isinstance(value, np.ndarray) else list(value)
        if items and all(isinstance(v, str) for v in items):
            return np.array(items, dtype=h5py.string_dtype("utf-8"))
        if all(isinstance(v, (numbers.Real, np.bool_)) and not isinstance(v, (bool, np.bool_)) for v in items):
            a = np.asarray(items, dtype=np.int64 if all(isinstance(v, numbers.Integral) for v in items)
                           else np.float64)
            if a.dtype.kind == "f" and not np.isfinite(a).all():
                raise ValueError(f"{name}: expected finite numbers, found {items!r}")
            return a
        raise ValueError(f"{name}: expected a sequence of numbers or of strings, found {value!r}")
    raise ValueError(f"{name}: expected a string, number, boolean or 1-D sequence of numbers or strings, "
                     f"found {type(value).__name__}")


def _user_attrs(attrs: Mapping | None, reserved, *, allowed=()) -> dict:
    if attrs is None:
        return {}
    if not isinstance(attrs, Mapping):
        raise ValueError(f"attrs: expected a dict of attributes, found {type(attrs).__name__}")
    out = {}
    for key, value in attrs.items():
        if not isinstance(key, str) or not key or "/" in key:
            raise ValueError(f"attrs: expected non-empty string keys without '/', found {key!r}")
        if key in reserved and key not in allowed:
            raise ValueError(f"attrs[{key!r}]: expected a key other than the reserved "
                             f"{', '.join(repr(r) for r in reserved)}, found {key!r}")
        out[key] = _attr_value(value, f"attrs[{key!r}]")
    return out


#: fastMRI's root attributes and what its loaders expect of them (mri_raw.schema.json, $defs/fastmri_attributes).
_FASTMRI_ATTRS = {
    "acquisition": ("a string", lambda v: isinstance(v, str)),
    "patient_id": ("a string", lambda v: isinstance(v, str)),
    "max": ("a number", lambda v: isinstance(v, (np.floating, np.integer))),
    "norm": ("a number >= 0", lambda v: isinstance(v, (np.floating, np.integer)) and v >= 0),
    "acceleration": ("a number > 0", lambda v: isinstance(v, (np.floating, np.integer)) and v > 0),
    "num_low_frequency": ("an integer >= 0", lambda v: isinstance(v, np.integer) and v >= 0),
}


def _check_fastmri_attrs(user: dict, attrs: Mapping) -> None:
    for key, (what, ok) in _FASTMRI_ATTRS.items():
        if key in user and (isinstance(user[key], np.bool_) or not ok(user[key])):
            raise ValueError(f"attrs[{key!r}]: expected {what} (fastMRI's meaning), found {attrs[key]!r}")


def _put(group: h5py.Group, name: str, data: np.ndarray, **attrs) -> h5py.Dataset:
    """One dataset, chunked one slice (index of axis 0) per chunk and compressed when it has 2+ dims."""
    options = {}
    if data.ndim >= 2:
        options = {"chunks": (1, *data.shape[1:]), **COMPRESSION}
    ds = group.create_dataset(name, data=data, **options)
    for key, value in attrs.items():
        ds.attrs[key] = value
    return ds


def _put_task_labels(f: h5py.File, segmentation, labels) -> None:
    """Write the optional ``segmentation`` and ``labels`` datasets with their ``num_classes`` attribute."""
    for name, data in (("segmentation", segmentation), ("labels", labels)):
        if data is not None:
            _put(f, name, data, num_classes=np.int64(_num_classes(data)))


def _json_text(obj) -> str:
    return json.dumps(obj, sort_keys=True, allow_nan=False)


def _geometry_arg(geometry) -> Geometry:
    if isinstance(geometry, Geometry):
        return geometry
    if isinstance(geometry, Mapping):
        try:
            return geometry_from_dict(dict(geometry))
        except (ValueError, TypeError) as e:
            raise ValueError(f"geometry: expected a valid geometry dict, found one that fails: {e}") from None
    raise ValueError(f"geometry: expected a pirecon.ct Geometry or its to_dict(), found {type(geometry).__name__}")


def _noise_arg(noise) -> NoiseModel | None:
    if noise is None or isinstance(noise, NoiseModel):
        return noise
    if isinstance(noise, Mapping):
        try:
            return noise_from_dict(dict(noise))
        except (ValueError, TypeError) as e:
            raise ValueError(f"noise: expected a valid noise model dict, found one that fails: {e}") from None
    raise ValueError(f"noise: expected a pirecon.noise NoiseModel, its to_dict() or None, "
                     f"found {type(noise).__name__}")


# --------------------------------------------------------------------------------------------------
# CT raw data
# --------------------------------------------------------------------------------------------------

def write_ct_raw(path, sinogram, geometry, *, noise=None, ground_truth=None, segmentation=None, labels=None,
                 attrs=None) -> Path:
    """Write CT raw data (``data_specs/ct_raw.md``) atomically; return the path.

    Parameters
    ----------
    path : str or PathLike
    sinogram : array ``(N, *geometry.sinogram_shape)``
        Line integrals (image units x mm), stored float32. ``(N, 1, ...)`` is accepted.
    geometry : Geometry or dict
    noise : NoiseModel or dict, optional
        How the sinograms were (or are to be) corrupted.
    ground_truth : array ``(N, *geometry.image_shape)``, optional
        Images in their own units (e.g. attenuation in 1/mm), stored float32.
    segmentation : integer array of the image shape, optional
        Class index per pixel (0 = background), stored uint8 with attribute ``num_classes``.
    labels : integer array ``(N,)``, optional
        Class index per slice, stored int64 with attribute ``num_classes``.
    attrs : dict, optional
        Extra root attributes: strings, numbers, booleans or 1-D sequences of them.
    """
    geometry = _geometry_arg(geometry)
    noise = _noise_arg(noise)
    sino_shape, image_shape = tuple(geometry.sinogram_shape), tuple(geometry.image_shape)
    sino = _slices(_real(sinogram, "sinogram"), "sinogram", sino_shape, n=None, n_from="",
                   trailing_from="N slices of geometry.sinogram_shape")
    n = sino.shape[0]
    gt = seg = lab = None
    if ground_truth is not None:
        gt = _slices(_real(ground_truth, "ground_truth"), "ground_truth", image_shape, n=n, n_from="sinogram",
                     trailing_from="N slices of geometry.image_shape")
    if segmentation is not None:
        seg = _segmentation(segmentation, [image_shape], n, "sinogram", "N slices of geometry.image_shape")
    if labels is not None:
        lab = _labels(labels, n, "sinogram")
    user = _user_attrs(attrs, RESERVED_ATTRS["ct_raw"])

    path = Path(path)
    with atomic_path(path) as tmp:
        with h5py.File(tmp, "w") as f:
            f.attrs["pirecon_format"] = "ct_raw"
            f.attrs["format_version"] = np.int64(FORMAT_VERSION)
            f.attrs["pirecon_version"] = _pirecon_version()
            f.attrs["geometry"] = _json_text(geometry.to_dict())
            if noise is not None:
                f.attrs["noise"] = _json_text(noise.to_dict())
            for key, value in user.items():
                f.attrs[key] = value
            _put(f, "sinogram", sino)
            if gt is not None:
                _put(f, "ground_truth", gt)
            _put_task_labels(f, seg, lab)
    return path


def read_ct_acquisition(path) -> tuple[Geometry, NoiseModel | None]:
    """The geometry and noise model of a ``ct_raw`` file, from its attributes alone (no array is read)."""
    summary = validate(path, expect=("ct_raw",), values=False)
    noise = noise_from_dict(summary["noise"]) if summary.get("noise") is not None else None
    return geometry_from_dict(summary["geometry"]), noise


def read_ct_raw(path) -> CTRaw:
    """Read a ``ct_raw`` file whole; raises ``SpecError`` if it breaks its spec."""
    with checked_file(path, expect=("ct_raw",)) as (f, summary):
        sino = f["sinogram"][()]
        gt = f["ground_truth"][()] if "ground_truth" in f else None
        seg = f["segmentation"][()] if "segmentation" in f else None
        lab = f["labels"][()] if "labels" in f else None
        check_loaded(f, path, {"sinogram": sino, "ground_truth": gt, "segmentation": seg, "labels": lab})
        attrs = {k: _decode_attr(val) for k, val in f.attrs.items() if k not in RESERVED_ATTRS["ct_raw"]}
    geometry = geometry_from_dict(summary["geometry"])
    noise = noise_from_dict(summary["noise"]) if summary.get("noise") is not None else None
    return CTRaw(sinogram=sino, geometry=geometry, noise=noise, ground_truth=gt, segmentation=seg,
                 labels=lab, attrs=attrs)


# --------------------------------------------------------------------------------------------------
# MRI raw data
# --------------------------------------------------------------------------------------------------

def _default_ismrmrd_header(kspace_hw: tuple[int, int], recon_hw: tuple[int, int]) -> str:
    """The part of an ISMRMRD header that fastMRI's ``SliceDataset`` reads: matrix sizes, encoding limits."""
    (height, width), (h, w) = kspace_hw, recon_hw
    return (
        '<?xml version="1.0" encoding="utf-8"?>\n'
        f'<ismrmrdHeader xmlns="{_ISMRMRD_NS}">\n'
        "  <encoding>\n"
        f"    <encodedSpace><matrixSize><x>{height}</x><y>{width}</y><z>1</z></matrixSize></encodedSpace>\n"
        f"    <reconSpace><matrixSize><x>{h}</x><y>{w}</y><z>1</z></matrixSize></reconSpace>\n"
        "    <encodingLimits>\n"
        "      <kspace_encoding_step_1><minimum>0</minimum>"
        f"<maximum>{width - 1}</maximum><center>{width // 2}</center></kspace_encoding_step_1>\n"
        "    </encodingLimits>\n"
        "    <trajectory>cartesian</trajectory>\n"
        "  </encoding>\n"
        "</ismrmrdHeader>\n"
    )


def _mri_noise_arg(noise, num_coils: int) -> ComplexGaussianNoise | None:
    """The ``noise`` argument of :func:`write_mri_raw`: a k-space noise model matching the coils, or ``None``."""
    model = _noise_arg(noise)
    if model is None:
        return None
    if not isinstance(model, ComplexGaussianNoise):
        raise ValueError(f"noise: expected a ComplexGaussianNoise (complex k-space noise), its to_dict() or None, "
                         f"found {type(model).__name__}")
    if model.num_coils is not None and model.num_coils != num_coils:
        raise ValueError(f"noise: expected a covariance of {num_coils} coils (as kspace), "
                         f"found a {model.num_coils}x{model.num_coils} covariance")
    return model


def _put_mri_noise(f: h5py.File, model: ComplexGaussianNoise) -> None:
    """Root attribute ``noise`` (JSON, without the covariance) and, for correlated coils, ``noise_covariance``."""
    d = model.to_dict()
    d.pop("covariance", None)
    f.attrs["noise"] = _json_text(d)
    if model.covariance is not None:
        f.create_dataset("noise_covariance", data=model.covariance.numpy())  # (coils, coils) complex128


def _mri_noise_model(summary: dict, attrs: Mapping) -> NoiseModel | None:
    """The noise model of a checked MRI file: its ``noise`` (validate's summary, covariance included), else
    ``ComplexGaussianNoise(noise_sigma)`` from the ``noise_sigma`` attribute of older simulated files."""
    if summary.get("noise") is not None:
        return noise_from_dict(summary["noise"])
    sigma = attrs.get("noise_sigma") if summary.get("kind") == "mri_raw" else None
    if isinstance(sigma, (int, float)) and not isinstance(sigma, bool) and math.isfinite(sigma) and sigma > 0:
        return ComplexGaussianNoise(sigma)
    return None


def read_mri_noise(path) -> NoiseModel | None:
    """The k-space noise model of an ``mri_raw`` (or fastMRI) file, from its attributes and the small
    ``noise_covariance`` dataset (no k-space is read): a :class:`pirecon.noise.ComplexGaussianNoise`,
    or ``None`` when the file has none (noise-free, unknown, plain fastMRI files). Files written before
    the model was stored give ``ComplexGaussianNoise(noise_sigma)`` from their ``noise_sigma`` attribute
    (``None`` for 0)."""
    with checked_file(path, expect=("mri_raw", "fastmri")) as (f, summary):
        attrs = {"noise_sigma": _decode_attr(f.attrs["noise_sigma"])} if "noise_sigma" in f.attrs else {}
    return _mri_noise_model(summary, attrs)


def _mask_arg(mask, n: int, height: int, width: int) -> np.ndarray:
    """A mask broadcast to 4 dims ``(N or 1, 1, H or 1, W)``, float32, values in [0, 1]."""
    a = _to_numpy(mask, "mask")
    if a.dtype.kind not in "biuf":
        raise ValueError(f"mask: expected a real or boolean dtype, found dtype {a.dtype}")
    a = np.asarray(a, dtype=np.float32)
    if 1 <= a.ndim <= 4:
        a4 = a.reshape((1,) * (4 - a.ndim) + a.shape)
    else:
        a4 = None
    if (a4 is None or a4.shape[0] not in (1, n) or a4.shape[1] != 1 or a4.shape[2] not in (1, height)
            or a4.shape[3] != width):
        raise ValueError(f"mask: expected a shape broadcastable to kspace and shared by the coils: "
                         f"({n} or 1, 1, {height} or 1, {width}), or ({width},), found {tuple(a.shape)}")
    _check_finite(a4, "mask")
    outside = (a4 < 0) | (a4 > 1)
    if outside.any():
        index = np.unravel_index(int(np.argmax(outside)), a4.shape)
        raise ValueError(f"mask: expected values in [0, 1], found {a4[index].item()!r} at index {_fmt_index(index)}")
    return a4


def write_mri_raw(path, kspace, *, mask=None, trajectory=None, coil_maps=None, ground_truth=None,
                  reconstruction_rss=None, ismrmrd_header=None, segmentation=None, labels=None,
                  attrs=None, noise=None) -> Path:
    """Write MRI raw data in fastMRI's layout plus pirecon's additions (``data_specs/mri_raw.md``).

    Parameters
    ----------
    path : str or PathLike
    kspace : complex array
        Cartesian multi-coil ``(N, coils, H, W)``; single-coil ``(N, H, W)`` or ``(N, 1, H, W)``,
        stored as ``(N, H, W)`` as fastMRI's single-coil files; non-Cartesian ``(N, coils, K)``
        (or ``(N, K)``) together with ``trajectory``. fastMRI's centred orthonormal FFT convention;
        unsampled entries hold zeros.
    mask : array, optional
        Cartesian sampling mask broadcastable to ``kspace`` and shared by the coils: ``(W,)``,
        ``(N|1, 1, 1, W)`` line masks or ``(N|1, 1, H, W)`` 2D masks. A line mask shared by all
        slices is stored as fastMRI's ``mask`` ``(W,)``; others as ``sampling_mask``.
    trajectory : real array ``(2, K)`` or ``(N, 2, K)``, optional
        Non-Cartesian sample positions, radians per pixel in ``[-pi, pi]`` (row 0 along H).
    coil_maps : complex array ``(N, coils, H, W)`` or ``(coils, H, W)``, optional
        Coil sensitivities. Maps shared by every slice (given as ``(coils, H, W)``, or per slice
        but all equal) are stored once, as ``(coils, H, W)``; readers repeat them per slice.
    ground_truth : complex or real array ``(N, H, W)``, optional
        Coil-combined complex image, stored complex64.
    reconstruction_rss : real array ``(N, h, w)``, optional
        fastMRI's target (root-sum-of-squares, usually cropped to 320 x 320); single-coil files
        store it as ``reconstruction_esc``. Sets root attributes ``max`` and ``norm`` unless given.
    ismrmrd_header : str or bytes, optional
        ISMRMRD XML. Cartesian files without one get a minimal header carrying what fastMRI's
        loaders read (matrix sizes and encoding limits).
    segmentation : integer array ``(N, H, W)`` or ``(N, h, w)``, optional
    labels : integer array ``(N,)``, optional
    attrs : dict, optional
        Extra root attributes (fastMRI's ``acquisition``, ``patient_id``, ``acceleration``,
        ``num_low_frequency``, ...). ``image_shape`` ``(H, W)`` may be given for non-Cartesian
        data without coil maps or ground truth.
    noise : ComplexGaussianNoise or its dict, optional
        The k-space noise model, stored as the root attribute ``noise`` (JSON, without the
        covariance) and, for correlated coils, the dataset ``noise_covariance`` ``(coils, coils)``
        complex128. Read back by :func:`read_mri_noise` and ``read_mri_raw(...).noise``.
    """
    k = _to_numpy(kspace, "kspace")
    if k.dtype.kind != "c":
        raise ValueError(f"kspace: expected a complex dtype (complex64 or complex128), found dtype {k.dtype}")
    user = _user_attrs(attrs, RESERVED_ATTRS["mri_raw"], allowed=("image_shape",))
    _check_fastmri_attrs(user, attrs or {})
    given_shape = user.pop("image_shape", None)
    if given_shape is not None:
        given_shape = tuple(int(s) for s in np.asarray(given_shape).ravel())
        if len(given_shape) != 2 or min(given_shape) < 1:
            raise ValueError(f"attrs['image_shape']: expected (H, W) positive integers, found {given_shape}")

    traj = None
    if trajectory is None:
        if k.ndim == 3:
            k = k[:, None]
        if k.ndim != 4:
            raise ValueError(f"kspace: expected shape (N, coils, H, W) or single-coil (N, H, W) "
                             f"(non-Cartesian (N, coils, K) needs a trajectory), found {tuple(k.shape)}")
        n, num_coils, height, width = k.shape
        image_shape = (height, width)
        if given_shape is not None and given_shape != image_shape:
            raise ValueError(f"attrs['image_shape']: expected {image_shape} (the k-space grid), found {given_shape}")
    else:
        if mask is not None:
            raise ValueError("mask: expected None for non-Cartesian k-space (the trajectory lists the samples), "
                             "found an array")
        if k.ndim == 2:
            k = k[:, None]
        if k.ndim != 3:
            raise ValueError(f"kspace: expected non-Cartesian shape (N, coils, K) with a trajectory, "
                             f"found {tuple(k.shape)}")
        n, num_coils, num_samples = k.shape
        traj = _real(trajectory, "trajectory")
        if traj.ndim == 3 and traj.shape[0] != n:
            raise ValueError(f"trajectory: expected {n} slices (as kspace), found {traj.shape[0]}")
        if traj.ndim not in (2, 3) or traj.shape[-2:] != (2, num_samples):
            raise ValueError(f"trajectory: expected shape (2, {num_samples}) or ({n}, 2, {num_samples}) "
                             f"(kspace has {num_samples} samples), found {tuple(traj.shape)}")
        outside = np.abs(traj) > np.float32(math.pi)
        if outside.any():
            index = np.unravel_index(int(np.argmax(outside)), traj.shape)
            raise ValueError(f"trajectory: expected radians per pixel in [-pi, pi], found {traj[index].item()!r} at index "
                             f"{_fmt_index(index)}")
        image_shape = None
        for other_name, other in (("coil_maps", coil_maps), ("ground_truth", ground_truth)):
            if other is not None:
                shape = tuple(_to_numpy(other, other_name).shape[-2:])
                image_shape = shape if len(shape) == 2 else None
                break
        if given_shape is not None:
            if image_shape is not None and given_shape != image_shape:
                raise ValueError(f"attrs['image_shape']: expected {image_shape} (as coil_maps / ground_truth), "
                                 f"found {given_shape}")
            image_shape = given_shape
        if image_shape is None:
            raise ValueError("image_shape: expected the image grid (H, W) of non-Cartesian data from coil_maps, "
                             "ground_truth or attrs['image_shape'], found none of them")
        height, width = image_shape
    if n < 1 or num_coils < 1:
        raise ValueError(f"kspace: expected at least 1 slice and 1 coil, found shape {tuple(k.shape)}")
    single_coil = num_coils == 1
    k = np.ascontiguousarray(k, dtype=np.complex64)
    _check_finite(k, "kspace")

    mask_line = sampling_mask = None
    if mask is not None:
        m4 = _mask_arg(mask, n, height, width)
        if m4.shape[2] == 1 and (m4.shape[0] == 1 or (m4 == m4[:1]).all()):
            mask_line = np.ascontiguousarray(m4[0, 0, 0])
        else:
            sampling_mask = np.broadcast_to(m4, (n, 1, m4.shape[2], width)).copy()

    maps = gt = rss = seg = lab = None
    grid = f"the image grid {image_shape}"
    if coil_maps is not None:
        maps = _complex(coil_maps, "coil_maps")
        if maps.ndim not in (3, 4) or maps.shape[-3:] != (num_coils, height, width):
            raise ValueError(f"coil_maps: expected shape (N, {num_coils}, {height}, {width}) or "
                             f"({num_coils}, {height}, {width}) (coils of kspace, {grid}), found {tuple(maps.shape)}")
        if maps.ndim == 4 and maps.shape[0] != n:
            raise ValueError(f"coil_maps: expected {n} slices (as kspace), found {maps.shape[0]}")
        if maps.ndim == 4 and (maps == maps[:1]).all():
            maps = np.ascontiguousarray(maps[0])  # shared by every slice: stored once, (coils, H, W)
    noise_model = _mri_noise_arg(noise, num_coils)
    if ground_truth is not None:
        gt = _slices(_complex(ground_truth, "ground_truth", allow_real=True), "ground_truth", image_shape, n=n,
                     n_from="kspace", trailing_from=grid)
    if reconstruction_rss is not None:
        rss = _real(reconstruction_rss, "reconstruction_rss")
        if rss.ndim != 3:
            raise ValueError(f"reconstruction_rss: expected shape (N, h, w), found {tuple(rss.shape)}")
        if rss.shape[0] != n:
            raise ValueError(f"reconstruction_rss: expected {n} slices (as kspace), found {rss.shape[0]}")
    recon_hw = tuple(rss.shape[1:]) if rss is not None else image_shape
    if segmentation is not None:
        shapes = [image_shape] + ([recon_hw] if recon_hw != image_shape else [])
        seg = _segmentation(segmentation, shapes, n, "kspace", "the image grid or that of reconstruction_rss")
    if labels is not None:
        lab = _labels(labels, n, "kspace")

    header = None
    if ismrmrd_header is not None:
        if isinstance(ismrmrd_header, str):
            header = ismrmrd_header
        elif isinstance(ismrmrd_header, (bytes, bytearray)):
            header = bytes(ismrmrd_header).decode("utf-8", errors="strict")
        else:
            raise ValueError(f"ismrmrd_header: expected XML text (str or bytes), found {type(ismrmrd_header).__name__}")
        try:
            ElementTree.fromstring(header.encode())
        except ElementTree.ParseError as e:
            raise ValueError(f"ismrmrd_header: expected well-formed XML, found a parse error ({e})") from None
    elif traj is None:
        header = _default_ismrmrd_header(image_shape, recon_hw)

    root = {"pirecon_format": "mri_raw", "format_version": np.int64(FORMAT_VERSION),
            "pirecon_version": _pirecon_version(), "image_shape": np.asarray(image_shape, dtype=np.int64)}
    if rss is not None:  # fastMRI's transforms read attrs["max"] whenever a target is present
        root["max"] = np.float64(rss.max())
        root["norm"] = np.float64(np.linalg.norm(rss))
    root.update(user)

    path = Path(path)
    with atomic_path(path) as tmp:
        with h5py.File(tmp, "w") as f:
            for key, value in root.items():
                f.attrs[key] = value
            _put(f, "kspace", k[:, 0] if (single_coil and traj is None) else k)
            if header is not None:
                f.create_dataset("ismrmrd_header", data=header.encode(), dtype=h5py.string_dtype("utf-8"))
            if mask_line is not None:
                _put(f, "mask", mask_line)
            if sampling_mask is not None:
                _put(f, "sampling_mask", sampling_mask)
            if traj is not None:
                _put(f, "trajectory", traj)
            if rss is not None:
                _put(f, "reconstruction_esc" if single_coil else "reconstruction_rss", rss)
            if maps is not None and maps.ndim == 3:  # shared by every slice: read whole, one chunk
                f.create_dataset("coil_maps", data=maps, chunks=maps.shape, **COMPRESSION)
            elif maps is not None:
                _put(f, "coil_maps", maps)
            if noise_model is not None:
                _put_mri_noise(f, noise_model)
            if gt is not None:
                _put(f, "ground_truth", gt)
            _put_task_labels(f, seg, lab)
    return path


def read_mri_raw(path) -> MRIRaw:
    """Read an ``mri_raw`` file or a plain fastMRI file (single- or multi-coil) whole."""
    with checked_file(path, expect=("mri_raw", "fastmri")) as (f, summary):
        k = np.asarray(f["kspace"][()], dtype=np.complex64)
        get = {name: (f[name][()] if name in summary["checked"] else None)  # what the spec knows, checked
               for name in ("mask", "sampling_mask", "trajectory", "coil_maps", "ground_truth", "reconstruction_rss",
                            "reconstruction_esc", "segmentation", "labels")}
        header = f["ismrmrd_header"][()] if "ismrmrd_header" in f else None
        check_loaded(f, path, {"kspace": k, **get})
        reserved = RESERVED_ATTRS["mri_raw"] if summary["kind"] == "mri_raw" else ()
        attrs = {key: _decode_attr(val) for key, val in f.attrs.items() if key not in reserved}
    cartesian = get["trajectory"] is None
    single_coil = bool(summary["single_coil"])
    if cartesian and k.ndim == 3:
        k = k[:, None]
    n = k.shape[0]
    mask = None
    if get["mask"] is not None:
        line = np.asarray(get["mask"], dtype=np.float32).reshape(1, 1, 1, -1)
        mask = np.broadcast_to(line, (n, 1, 1, line.shape[-1])).copy()
    elif get["sampling_mask"] is not None:
        mask = np.asarray(get["sampling_mask"], dtype=np.float32)
    rss = get["reconstruction_rss"] if get["reconstruction_rss"] is not None else get["reconstruction_esc"]
    if isinstance(header, bytes):
        header = header.decode("utf-8", errors="replace")
    maps = get["coil_maps"]
    if maps is not None and maps.ndim == 3:  # stored once for every slice: a writable copy per slice
        maps = np.repeat(maps[None], n, axis=0)
    return MRIRaw(
        kspace=k,
        mask=mask,
        trajectory=get["trajectory"],
        coil_maps=maps,
        ground_truth=get["ground_truth"],
        reconstruction_rss=None if rss is None else np.asarray(rss, dtype=np.float32),
        segmentation=get["segmentation"],
        labels=get["labels"],
        attrs=attrs,
        single_coil=single_coil,
        ismrmrd_header=header,
        noise=_mri_noise_model(summary, attrs),
    )


# --------------------------------------------------------------------------------------------------
# reconstructions
# --------------------------------------------------------------------------------------------------

def _provenance(provenance: Mapping | None) -> dict:
    if provenance is None:
        provenance = {}
    if not isinstance(provenance, Mapping):
        raise ValueError(f"provenance: expected a dict, found {type(provenance).__name__}")
    out: dict[str, Any] = {}
    for key, value in provenance.items():
        if not isinstance(key, str):
            raise ValueError(f"provenance: expected string keys, found {key!r}")
        name = f"provenance[{key!r}]"
        if key == "geometry" and isinstance(value, Geometry):
            value = value.to_dict()
        elif key == "config" and isinstance(value, Mapping):
            value = _json_text(dict(value))
        elif key == "config" and not isinstance(value, str):
            raise ValueError(f"{name}: expected the configuration as JSON/YAML text or a dict, "
                             f"found {type(value).__name__}")
        elif key == "source_file" and isinstance(value, os.PathLike):
            value = os.fspath(value)
        elif key == "created" and isinstance(value, datetime.datetime):
            value = value.isoformat()
        if key == "checkpoint_sha256" and value is not None and \
                (not isinstance(value, str) or not _SHA256.match(value)):
            raise ValueError(f"{name}: expected 64 lower-case hex digits, found {value!r}")
        if key == "created":
            try:
                datetime.datetime.fromisoformat(value)
            except (TypeError, ValueError):
                raise ValueError(f"{name}: expected an ISO 8601 time, found {value!r}") from None
        if key in ("method", "source_file") and not isinstance(value, str):
            raise ValueError(f"{name}: expected a string, found {type(value).__name__}")
        if key == "geometry" and not isinstance(value, Mapping):
            raise ValueError(f"{name}: expected a geometry (or its to_dict()), found {type(value).__name__}")
        try:
            json.dumps(value, allow_nan=False)
        except (TypeError, ValueError) as e:
            raise ValueError(f"{name}: expected a JSON value, found {type(value).__name__} ({e})") from None
        out[key] = value
    out.setdefault("created", datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"))
    out["pirecon_version"] = _pirecon_version()
    return out


def _image(x, name: str) -> np.ndarray:
    a = _to_numpy(x, name)
    if a.dtype.kind == "c":
        a = np.ascontiguousarray(a, dtype=np.complex64)
    elif a.dtype.kind in "iuf":
        a = np.ascontiguousarray(a, dtype=np.float32)
    else:
        raise ValueError(f"{name}: expected a real or complex dtype, found dtype {a.dtype}")
    if a.ndim == 4 and a.shape[1] == 1:  # (B, 1, H, W) network output
        a = a[:, 0]
    if a.ndim not in (3, 4) or a.shape[0] < 1:
        raise ValueError(f"{name}: expected shape (N, H, W) or (N, D, H, W), found {tuple(a.shape)}")
    _check_finite(a, name)
    return a


def write_reconstruction(path, image, *, uncertainty=None, interval=None, task=None, provenance=None) -> Path:
    """Write reconstructions (``data_specs/reconstruction.md``) atomically; return the path.

    Parameters
    ----------
    image : array ``(N, H, W)`` or ``(N, D, H, W)``, real or complex
        Stored float32 or complex64, in the units of the ground truth. ``(N, 1, H, W)`` is squeezed.
    uncertainty : real array of the image's shape, optional
        Per-pixel uncertainty (e.g. a standard deviation or an interval half-width), >= 0.
    interval : (lower, upper) real arrays of the image's shape, optional
        Per-pixel interval bounds (of the magnitude for complex images), ``lower <= upper``.
    task : dict of name -> array ``(N, ...)``, optional
        Task-head outputs (logits, probabilities, segmentations), one row per slice; stored under
        the group ``task`` with their own dtype (bfloat16 as float32).
    provenance : dict, optional
        Keys ``method``, ``checkpoint_sha256``, ``config`` (JSON/YAML text or a dict),
        ``geometry`` (a Geometry or dict), ``source_file``, ``created`` (ISO time; default now,
        UTC), and any other JSON values. ``pirecon_version`` is added.
    """
    img = _image(image, "image")
    n = img.shape[0]
    unc = None
    if uncertainty is not None:
        unc = _real(uncertainty, "uncertainty")
        if unc.ndim == img.ndim + 1 and unc.shape[1] == 1:
            unc = unc[:, 0]
        if unc.shape != img.shape:
            raise ValueError(f"uncertainty: expected shape {tuple(img.shape)} (as image), found {tuple(unc.shape)}")
        negative = unc < 0
        if negative.any():
            index = np.unravel_index(int(np.argmax(negative)), unc.shape)
            raise ValueError(f"uncertainty: expected values >= 0, found {unc[index].item()!r} at index {_fmt_index(index)}")
    bounds = None
    if interval is not None:
        if not isinstance(interval, (tuple, list)) or len(interval) != 2:
            raise ValueError(f"interval: expected (lower, upper), found {type(interval).__name__}")
        bounds = []
        for name, value in zip(("interval_lower", "interval_upper"), interval):
            a = _real(value, name)
            if a.ndim == img.ndim + 1 and a.shape[1] == 1:
                a = a[:, 0]
            if a.shape != img.shape:
                raise ValueError(f"{name}: expected shape {tuple(img.shape)} (as image), found {tuple(a.shape)}")
            bounds.append(np.ascontiguousarray(a, dtype=np.float32))
        if bool((bounds[0] > bounds[1]).any()):
            raise ValueError(f"interval: expected lower <= upper, found lower > upper at "
                             f"{int((bounds[0] > bounds[1]).sum())} pixels")
    outputs: dict[str, np.ndarray] = {}
    if task is not None:
        if not isinstance(task, Mapping):
            raise ValueError(f"task: expected a dict of name -> array, found {type(task).__name__}")
        for key, value in task.items():
            if not isinstance(key, str) or not key or "/" in key or key in (".", ".."):
                raise ValueError(f"task: expected non-empty names without '/', found {key!r}")
            name = f"task[{key!r}]"
            a = _to_numpy(value, name)
            if a.dtype.kind not in "biufc":
                raise ValueError(f"{name}: expected a numeric or boolean dtype, found dtype {a.dtype}")
            if a.ndim < 1 or a.shape[0] != n:
                raise ValueError(f"{name}: expected shape ({n}, ...) (one row per image slice), "
                                 f"found {tuple(a.shape)}")
            _check_finite(a, name)
            outputs[key] = np.ascontiguousarray(a)
    prov = _provenance(provenance)

    path = Path(path)
    with atomic_path(path) as tmp:
        with h5py.File(tmp, "w") as f:
            f.attrs["pirecon_format"] = "reconstruction"
            f.attrs["format_version"] = np.int64(FORMAT_VERSION)
            f.attrs["pirecon_version"] = prov["pirecon_version"]
            f.attrs["provenance"] = _json_text(prov)
            _put(f, "image", img)
            if unc is not None:
                _put(f, "uncertainty", unc)
            if bounds is not None:
                _put(f, "interval_lower", bounds[0])
                _put(f, "interval_upper", bounds[1])
            group = f.create_group("task")
            for key, value in outputs.items():
                _put(group, key, value)
    return path


def read_reconstruction(path) -> ReconstructionFile:
    """Read a ``reconstruction`` file whole; raises ``SpecError`` if it breaks its spec."""
    with checked_file(path, expect=("reconstruction",)) as (f, summary):
        img = f["image"][()]
        unc = f["uncertainty"][()] if "uncertainty" in f else None
        interval = (f["interval_lower"][()], f["interval_upper"][()]) if "interval_lower" in f else None
        task = {key: ds[()] for key, ds in f["task"].items()} if "task" in f else {}
        bounds = {} if interval is None else {"interval_lower": interval[0], "interval_upper": interval[1]}
        check_loaded(f, path, {"image": img, "uncertainty": unc, **bounds, **{f"task/{k}": a for k, a in task.items()}})
    return ReconstructionFile(image=img, uncertainty=unc, interval=interval, task=task,
                              provenance=summary["provenance"])
