"""Check HDF5 files against the specs in ``data_specs/``.

``validate(path)`` applies the JSON Schema of the file's kind to its root
attributes (and the geometry / noise / provenance schemas to the JSON they
hold), then the checks a schema cannot express: required datasets, dtypes,
shapes against the geometry, one slice count ``N`` across datasets, finite
values (scanned a block of slices at a time, never the whole file at once),
label ranges, fastMRI's mask length. It stops at the first problem and raises
:class:`SpecError`, whose message names the file, the key, what was expected
and what was found::

    data/ct.h5: sinogram: expected shape (N, 30, 183) (geometry.sinogram_shape of attrs/geometry), found (4, 30, 180)

Keys are dataset paths (``sinogram``, ``task/logits``), ``attrs/<name>`` for
root attributes, ``attrs/<name>/<field>`` inside their JSON,
``<dataset>/attrs/<name>`` for dataset attributes and ``file`` for files that
cannot be opened (missing, truncated, not HDF5).
"""

from __future__ import annotations

import contextlib
import datetime
import functools
import json
import os
import re
import sys
import xml.etree.ElementTree as ElementTree
from pathlib import Path

import h5py
import numpy as np

from ..ct.geometry import geometry_from_dict
from ..errors import PireconUserError
from ..noise import noise_from_dict
from ._spec import FORMAT_VERSION, KINDS
from ._spec import decode_attr as _decode_attr
from ._spec import first_nonfinite as _first_nonfinite
from ._spec import fmt_index as _fmt_index
from ._spec import fmt_shape as _fmt_shape

__all__ = ["SpecError", "validate", "main_validate", "load_schema", "checked_file", "check_loaded", "file_kind"]

#: Bytes read at a time when scanning values.
_SCAN_BYTES = 64 << 20


class SpecError(PireconUserError):
    """A file breaks its spec: ``str(e) == f"{path}: {key}: expected {expected}, found {found}"``, one line
    (control characters in names taken from the file, such as a newline in an attribute name, are escaped)."""

    def __init__(self, path, key: str, expected: str, found: str):
        self.path = str(path)
        self.key, self.expected, self.found = _printable(key), _printable(expected), _printable(found)
        super().__init__(f"{_printable(self.path)}: {self.key}: expected {self.expected}, found {self.found}")

    def __reduce__(self):
        return (type(self), (self.path, self.key, self.expected, self.found))


def _printable(text) -> str:
    """``text`` with its control characters escaped (``\\n``, ``\\x00``), so that a message stays one line."""
    text = str(text)
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text)


# --------------------------------------------------------------------------------------------------
# schemas
# --------------------------------------------------------------------------------------------------

def _spec_dirs() -> list[Path]:
    dirs = []
    if os.environ.get("PIRECON_SPECS_DIR"):
        dirs.append(Path(os.environ["PIRECON_SPECS_DIR"]))
    dirs.append(Path(__file__).resolve().parent / "data_specs")  # if a wheel ships them with the package
    dirs.append(Path(__file__).resolve().parents[3] / "data_specs")  # source tree / editable install
    return dirs


#: The schemas in ``data_specs/``.
_SCHEMAS = ("ct_raw", "mri_raw", "reconstruction", "ct_geometry", "noise_model")


@functools.lru_cache(maxsize=None)
def load_schema(name: str) -> dict:
    """The JSON Schema ``data_specs/<name>.schema.json`` as a dict."""
    for directory in _spec_dirs():
        candidate = directory / f"{name}.schema.json"
        if candidate.is_file():
            return json.loads(candidate.read_text())
    raise FileNotFoundError(f"{name}.schema.json: expected in one of {[str(d) for d in _spec_dirs()]}, "
                            "found none (set PIRECON_SPECS_DIR to the data_specs folder)")


@functools.lru_cache(maxsize=None)
def _validator(name: str, definition: str | None = None):
    try:
        import jsonschema
    except ImportError:  # pragma: no cover - jsonschema is a dependency of the data layer
        raise ImportError("pirecon.data.validate needs the 'jsonschema' package (pip install jsonschema)") from None
    schema = load_schema(name)
    if definition is not None:
        schema = {"$schema": schema["$schema"], "$ref": f"#/$defs/{definition}", "$defs": schema["$defs"]}
    return jsonschema.Draft202012Validator(schema)


def _short(value, limit: int = 60) -> str:
    try:
        text = json.dumps(value)
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _json_type(value) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


def _check_schema(document, path, key: str, name: str, definition: str | None = None) -> None:
    """Apply a schema; turn its most relevant error into a ``SpecError`` under ``key``."""
    validator = _validator(name, definition)
    errors = sorted(validator.iter_errors(document),
                    key=lambda e: (e.validator != "required", [str(p) for p in e.absolute_path]))
    if not errors:
        return
    error = errors[0]
    while error.validator in ("oneOf", "anyOf") and error.context:
        error = _branch_error(error, path, key)
    where = "/".join([key, *(str(p) for p in error.absolute_path)])
    kind, value, instance = error.validator, error.validator_value, error.instance
    top = where == "attrs"
    if kind == "required":
        missing = next((k for k in value if k not in instance), value[0])
        what = "attribute" if top else "key"
        raise SpecError(path, f"{where}/{missing}", f"a required {what}", f"no such {what}")
    if kind == "additionalProperties" and value is False:
        allowed = set(error.schema.get("properties", {}))
        extra = sorted(k for k in instance if k not in allowed)
        raise SpecError(path, f"{where}/{extra[0]}" if extra else where,
                        f"only the keys {', '.join(sorted(allowed))}", "an unexpected key")
    found = f"{_json_type(instance)} {_short(instance)}"
    if kind == "const":
        expected = _short(value)
        found = _short(instance)
    elif kind == "enum":
        expected = "one of " + ", ".join(_short(v) for v in value)
        found = _short(instance)
    elif kind == "type":
        expected = " or ".join(_article(t) for t in (value if isinstance(value, list) else [value]))
    elif kind in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"):
        op = {"minimum": ">=", "maximum": "<=", "exclusiveMinimum": ">", "exclusiveMaximum": "<"}[kind]
        expected = f"a number {op} {value}"
        found = _short(instance)
    elif kind in ("minItems", "maxItems"):
        expected = f"{'at least' if kind == 'minItems' else 'at most'} {value} items"
        found = f"{len(instance)} items"
    elif kind == "pattern":
        expected = f"a string matching {value}"
        found = _short(instance)
    elif kind == "oneOf":
        expected = "exactly one of the alternative forms"
        found = f"{_short(instance)}, which matches several"
    else:
        expected = f"a value satisfying {kind} {_short(value, 40)}"
    raise SpecError(path, where, expected, found)


def _article(type_name: str) -> str:
    return ("an " if type_name[0] in "aeiou" else "a ") + type_name


def _branch_error(error, path, key: str):
    """The error to report from a failed ``oneOf`` / ``anyOf``: that of the branch the instance chose.

    A branch whose ``type`` constant differs from the instance's ``type`` is not the one meant; when no
    branch is left, the ``type`` itself is the problem. Branches that each lack one required key mean
    "one of these keys".
    """
    branches: dict[int, list] = {}
    for e in error.context:
        branches.setdefault(e.relative_schema_path[0], []).append(e)

    def discriminated_out(errs):
        return any(e.validator == "const" and list(e.relative_path) == ["type"] for e in errs)

    viable = [errs for _, errs in sorted(branches.items()) if not discriminated_out(errs)]
    where = "/".join([key, *(str(p) for p in error.absolute_path)])
    if not viable:
        consts = [b.get("properties", {}).get("type", {}).get("const") for b in error.validator_value]
        found = error.instance.get("type") if isinstance(error.instance, dict) else error.instance
        raise SpecError(path, f"{where}/type", "one of " + ", ".join(_short(c) for c in consts if c is not None),
                        _short(found))
    if all(len(errs) == 1 and errs[0].validator == "required" for errs in viable) and len(viable) > 1:
        keys = [k for errs in viable for k in errs[0].validator_value if k not in errs[0].instance]
        raise SpecError(path, where, "one of the keys " + ", ".join(repr(k) for k in keys), "none of them")
    return sorted(viable[0], key=lambda e: (e.validator != "required", [str(p) for p in e.absolute_path]))[0]


def _reject_constant(name):
    raise ValueError(f"{name} is not valid JSON")


def _json_attr(attrs: dict, name: str, path) -> dict:
    text = attrs[name]
    try:
        value = json.loads(text, parse_constant=_reject_constant)
    except json.JSONDecodeError as e:
        raise SpecError(path, f"attrs/{name}", "a JSON object", f"invalid JSON ({e.msg} at character {e.pos})") from None
    except ValueError as e:
        raise SpecError(path, f"attrs/{name}", "a JSON object", f"invalid JSON ({e})") from None
    if not isinstance(value, dict):
        raise SpecError(path, f"attrs/{name}", "a JSON object", f"a JSON {_json_type(value)}")
    return value


# --------------------------------------------------------------------------------------------------
# opening files
# --------------------------------------------------------------------------------------------------

def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return text[0] if text else type(e).__name__


def _open_problem(e: OSError) -> str:
    msg = str(e)
    m = re.search(r"truncated file: eof = (\d+).*?stored_eof = (\d+)", msg)
    if m:
        return f"a truncated file ({m.group(1)} of {m.group(2)} bytes)"
    if "file signature not found" in msg:
        return "no HDF5 signature (not an HDF5 file)"
    return f"an unreadable file ({_first_line(e)})"


@contextlib.contextmanager
def _open(path):
    """Open ``path`` read-only; every failure to open or read it becomes a ``SpecError``."""
    for name in _SCHEMAS:  # first, so that a missing schema (an installation problem) is not blamed on the file
        load_schema(name)
    p = Path(path)
    if not p.exists():
        raise SpecError(path, "file", "an HDF5 file", "no such file")
    if p.is_dir():
        raise SpecError(path, "file", "an HDF5 file", "a directory")
    try:
        f = h5py.File(p, "r")
    except OSError as e:
        raise SpecError(path, "file", "an HDF5 file", _open_problem(e)) from None
    try:
        yield f
    except (OSError, RuntimeError) as e:  # damaged object headers or chunks deeper in the file
        raise SpecError(path, "file", "a readable HDF5 file", f"a read error ({_first_line(e)})") from None
    finally:
        f.close()


def _root_attrs(f: h5py.File, path) -> dict:
    out = {}
    for key in f.attrs:
        try:
            out[key] = _decode_attr(f.attrs[key])
        except (OSError, TypeError, ValueError) as e:
            raise SpecError(path, f"attrs/{key}", "a readable attribute", f"an error ({_first_line(e)})") from None
    return out


def _kind(f: h5py.File, path) -> str:
    known = ", ".join(repr(k) for k in KINDS)
    if "pirecon_format" not in f.attrs:
        if "kspace" in f:
            return "fastmri"
        raise SpecError(path, "attrs/pirecon_format", f"one of {known} (or a fastMRI kspace dataset)",
                        "no such attribute and no kspace dataset")
    value = _decode_attr(f.attrs["pirecon_format"])
    if not isinstance(value, str) or value not in KINDS:  # (a compound value cannot even be compared)
        raise SpecError(path, "attrs/pirecon_format", f"one of {known}", repr(value))
    return value


# --------------------------------------------------------------------------------------------------
# datasets
# --------------------------------------------------------------------------------------------------

def _dtype_name(dt: np.dtype) -> str:
    if h5py.check_string_dtype(dt) is not None or dt.kind in "SU":
        return "string"
    return dt.name


def _get(f, path, name: str, expected: str = "a dataset"):
    """``f[name]``; a link that leads nowhere (dangling, to a missing file, in a loop) is a ``SpecError``."""
    try:
        return f[name]
    except (KeyError, RuntimeError, OSError) as e:
        raise SpecError(path, name, expected, f"a link that cannot be followed ({_first_line(e)})") from None


def _what(obj) -> str:
    if isinstance(obj, h5py.Group):
        return "a group"
    if isinstance(obj, h5py.Dataset):
        return "a dataset"
    return "a named datatype" if isinstance(obj, h5py.Datatype) else f"a {type(obj).__name__}"


def _dataset(f, path, name: str, *, required: bool = False, dtypes=None, kinds=None, what: str = ""):
    """The dataset ``name`` (or ``None`` if absent and optional), its dtype checked."""
    if name not in f:
        if required:
            raise SpecError(path, name, f"a {what} dataset".replace("a  ", "a "), "no such dataset")
        return None
    obj = _get(f, path, name)
    if not isinstance(obj, h5py.Dataset):
        raise SpecError(path, name, "a dataset", _what(obj))
    dt = _dtype_name(obj.dtype)
    if dtypes is not None and dt not in dtypes:
        raise SpecError(path, name, f"dtype {' or '.join(dtypes)}", f"dtype {dt}")
    if kinds is not None and (dt == "string" or obj.dtype.kind not in kinds):
        names = {"b": "boolean", "i": "integer", "u": "unsigned", "f": "floating", "c": "complex"}
        raise SpecError(path, name, f"a {' or '.join(names[k] for k in kinds)} dtype", f"dtype {dt}")
    return obj


def _matches(shape, trailing) -> bool:
    return len(shape) == len(trailing) and all(isinstance(t, str) or s == t for s, t in zip(shape, trailing))


def _check_shape(path, ds, trailing, *, n=None, n_from="", trailing_from="", alternatives=()) -> int:
    """``ds`` is ``(N, *trailing)`` (or ``(N, *alt)`` for an alternative); ``N == n`` when given."""
    shape = ds.shape if ds.shape is not None else ()
    options = [tuple(trailing), *[tuple(a) for a in alternatives]]
    if len(shape) < 1 or not any(_matches(shape[1:], t) for t in options):
        expected = " or ".join(_fmt_shape(t, "N") for t in options)
        raise SpecError(path, ds.name.lstrip("/"), f"shape {expected}" + (f" ({trailing_from})" if trailing_from else ""),
                        str(tuple(shape)))
    if n is not None and shape[0] != n:
        raise SpecError(path, ds.name.lstrip("/"), f"{n} slices (as {n_from})", str(shape[0]))
    if shape[0] < 1:
        raise SpecError(path, ds.name.lstrip("/"), "at least 1 slice", "0")
    return int(shape[0])


def _classes_attr(ds, path, *, maximum: int | None) -> int:
    key = f"{ds.name.lstrip('/')}/attrs/num_classes"
    if "num_classes" not in ds.attrs:
        raise SpecError(path, key, "a required attribute", "no such attribute")
    value = _decode_attr(ds.attrs["num_classes"])
    top = f" and <= {maximum}" if maximum is not None else ""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1 or (maximum is not None and value > maximum):
        raise SpecError(path, key, f"an integer >= 1{top}", repr(value))
    return value


# value checks: block -> (expected, description, index) or None ----------------------------------

def _finite(block):
    bad = _first_nonfinite(block)
    return None if bad is None else ("finite values", bad[0], bad[1])


def _where(condition, block):
    if not condition.any():
        return None
    index = np.unravel_index(int(np.argmax(condition)), block.shape)
    value = block[index]
    return (value.item() if hasattr(value, "item") else value), tuple(int(i) for i in index)


def _in_range(low, high, expected):
    def check(block):
        hit = _where((block < low) | (block > high), block)
        return None if hit is None else (expected, repr(hit[0]), hit[1])
    return check


def _class_range(num_classes: int, key: str):
    def check(block):
        hit = _where((block < 0) | (block >= num_classes), block)
        return None if hit is None else (f"values in 0..{num_classes - 1} ({key} = {num_classes})", repr(hit[0]), hit[1])
    return check


def _value_checks(f, path, name: str) -> list:
    """The value checks of dataset ``name`` (finite, ranges)."""
    if name in ("segmentation", "labels"):
        maximum = 256 if name == "segmentation" else None
        n_classes = _classes_attr(f[name], path, maximum=maximum)
        return [_class_range(n_classes, f"{name}/attrs/num_classes")]
    checks = [_finite]
    if name == "uncertainty":
        checks.append(_in_range(0, np.inf, "values >= 0"))
    elif name in ("mask", "sampling_mask"):
        checks.append(_in_range(0, 1, "values in [0, 1]"))
    elif name == "trajectory":
        checks.append(_in_range(-np.float32(np.pi), np.float32(np.pi), "radians per pixel in [-pi, pi]"))
    return checks


def _apply(checks, block, path, name, offset: int = 0):
    for check in checks:
        problem = check(block)
        if problem is not None:
            expected, what, index = problem
            if index:
                index = (index[0] + offset, *index[1:])
            raise SpecError(path, name, expected, f"{what} at index {_fmt_index(index)}")


def _scan(ds: h5py.Dataset, path, checks, progress=None) -> None:
    """Run ``checks`` over ``ds`` a block of slices at a time; ``progress(nbytes)`` (if callable) after each."""
    name = ds.name.lstrip("/")
    progress = progress if callable(progress) else None
    if ds.dtype.kind not in "biufc" or not checks:
        return
    if ds.ndim == 0 or ds.size == 0:
        _apply(checks, np.asarray(ds[()]), path, name)
        return
    per_index = ds.dtype.itemsize * int(np.prod(ds.shape[1:], dtype=np.int64))
    step = max(1, _SCAN_BYTES // max(per_index, 1))
    for start in range(0, ds.shape[0], step):
        stop = min(start + step, ds.shape[0])
        try:
            block = ds[start:stop]
        except (OSError, RuntimeError) as e:
            raise SpecError(path, name, "readable data", f"a read error in slices {start}..{stop - 1} "
                                                         f"({_first_line(e)})") from None
        _apply(checks, block, path, name, start)
        if progress is not None:
            progress(int(block.nbytes))


def check_loaded(f, path, arrays: dict) -> None:
    """The value checks of :func:`validate` (finite values, ranges) on arrays a reader has loaded whole from
    the open file ``f`` of :func:`checked_file`; raises :class:`SpecError` as :func:`validate` would."""
    for name, array in arrays.items():
        if array is not None and name in f:
            _apply(_value_checks(f, path, name), np.asarray(array), path, name)


def _value_bytes(found: dict) -> int:
    """Bytes (uncompressed) the value checks of ``found`` read."""
    return sum(int(ds.size or 0) * ds.dtype.itemsize for ds in found.values() if ds.dtype.kind in "biufc")


def _datasets(f) -> list[str]:
    names = []
    f.visititems(lambda name, obj: names.append(name) if isinstance(obj, h5py.Dataset) else None)
    return sorted(names)


# --------------------------------------------------------------------------------------------------
# the kinds
# --------------------------------------------------------------------------------------------------

def _check_version(attrs: dict, path) -> int:
    if "format_version" not in attrs:
        raise SpecError(path, "attrs/format_version", str(FORMAT_VERSION), "no such attribute")
    value = attrs["format_version"]
    if isinstance(value, bool) or not isinstance(value, int) or value != FORMAT_VERSION:
        raise SpecError(path, "attrs/format_version", str(FORMAT_VERSION), repr(value))
    return value


def _inspect_ct(f, path, attrs: dict, scan: bool) -> dict:
    geometry_dict = _json_attr(attrs, "geometry", path)
    _check_schema(geometry_dict, path, "attrs/geometry", "ct_geometry")
    try:
        geometry = geometry_from_dict(geometry_dict)
    except (ValueError, TypeError) as e:
        raise SpecError(path, "attrs/geometry", "a valid CT geometry", f"one that fails ({e})") from None
    noise_dict = None
    if "noise" in attrs:
        noise_dict = _json_attr(attrs, "noise", path)
        _check_schema(noise_dict, path, "attrs/noise", "noise_model")
        try:
            noise_from_dict(noise_dict)
        except (ValueError, TypeError) as e:
            raise SpecError(path, "attrs/noise", "a valid noise model", f"one that fails ({e})") from None
    sino_shape, image_shape = tuple(geometry.sinogram_shape), tuple(geometry.image_shape)
    sino = _dataset(f, path, "sinogram", required=True, dtypes=("float32",),
                    what=f"float32 {_fmt_shape(sino_shape, 'N')}")
    n = _check_shape(path, sino, sino_shape, trailing_from="geometry.sinogram_shape of attrs/geometry")
    found = {"sinogram": sino}
    for name, dtype in (("ground_truth", "float32"), ("segmentation", "uint8")):
        ds = _dataset(f, path, name, dtypes=(dtype,))
        if ds is not None:
            _check_shape(path, ds, image_shape, n=n, n_from="sinogram",
                         trailing_from="geometry.image_shape of attrs/geometry")
            found[name] = ds
    labels = _dataset(f, path, "labels", dtypes=("int64",))
    if labels is not None:
        _check_shape(path, labels, (), n=n, n_from="sinogram")
        found["labels"] = labels
    for name in ("segmentation", "labels"):
        if name in found:
            _classes_attr(found[name], path, maximum=256 if name == "segmentation" else None)
    if scan:
        for name, ds in found.items():
            _scan(ds, path, _value_checks(f, path, name), scan)
    return {"kind": "ct_raw", "format_version": attrs["format_version"], "num_slices": n,
            "geometry": geometry_dict, "noise": noise_dict, "sinogram_shape": sino_shape,
            "image_shape": image_shape, "datasets": _datasets(f), "checked": sorted(found),
            "value_bytes": _value_bytes(found)}


def _header_check(f, path, required: bool) -> bool:
    if "ismrmrd_header" not in f:
        if required:
            raise SpecError(path, "ismrmrd_header", "a dataset (ISMRMRD XML, read by fastMRI's loaders)",
                            "no such dataset")
        return False
    ds = _dataset(f, path, "ismrmrd_header")
    if _dtype_name(ds.dtype) != "string" and ds.dtype.kind not in "V":
        raise SpecError(path, "ismrmrd_header", "a string dataset (XML)", f"dtype {_dtype_name(ds.dtype)}")
    if ds.shape != ():
        raise SpecError(path, "ismrmrd_header", "a scalar dataset", f"shape {ds.shape}")
    text = ds[()]
    if isinstance(text, np.void):
        text = text.tobytes()
    if isinstance(text, str):
        text = text.encode()
    try:
        ElementTree.fromstring(bytes(text))
    except ElementTree.ParseError as e:
        raise SpecError(path, "ismrmrd_header", "well-formed XML", f"a parse error ({e})") from None
    return True


def _inspect_mri(f, path, attrs: dict, kind: str, scan: bool) -> dict:
    ours = kind == "mri_raw"
    if not ours:
        _check_schema(attrs, path, "attrs", "mri_raw", "fastmri_attributes")
    kspace = _dataset(f, path, "kspace", required=True,
                      dtypes=("complex64",) if ours else ("complex64", "complex128"),
                      what="complex64 (N, coils, H, W)" if ours else "complex (N, coils, H, W)")
    shape = kspace.shape if kspace.shape is not None else ()
    trajectory = _dataset(f, path, "trajectory", dtypes=("float32",)) if ours else None
    found = {"kspace": kspace}
    if trajectory is None:
        if len(shape) not in (3, 4):
            raise SpecError(path, "kspace", "shape (N, coils, H, W) or single-coil (N, H, W)", str(shape))
        single = len(shape) == 3
        n, coils, (height, width) = shape[0], (1 if single else shape[1]), shape[-2:]
        if ours and tuple(attrs["image_shape"]) != (height, width):
            raise SpecError(path, "attrs/image_shape", f"{[height, width]} (the kspace grid)",
                            str(attrs["image_shape"]))
    else:
        if len(shape) != 3:
            raise SpecError(path, "kspace", "non-Cartesian shape (N, coils, K) (the file has a trajectory)",
                            str(shape))
        n, coils, num_samples = shape
        single = coils == 1
        height, width = attrs["image_shape"]
        if trajectory.ndim == 3 and trajectory.shape[0] != n:
            raise SpecError(path, "trajectory", f"{n} slices (as kspace)", str(trajectory.shape[0]))
        if trajectory.ndim not in (2, 3) or trajectory.shape[-2:] != (2, num_samples):
            raise SpecError(path, "trajectory", f"shape (2, {num_samples}) or (N, 2, {num_samples}) "
                            f"(kspace has {num_samples} samples)", str(trajectory.shape))
        found["trajectory"] = trajectory
    if n < 1:
        raise SpecError(path, "kspace", "at least 1 slice", "0")
    image_shape = (height, width)

    mask = _dataset(f, path, "mask", kinds="biuf")
    if mask is not None:
        if trajectory is not None:
            raise SpecError(path, "mask", "no mask in a non-Cartesian file (the trajectory lists the samples)",
                            "a mask dataset")
        if mask.shape != (width,):
            raise SpecError(path, "mask", f"shape ({width},) (the kspace width W)", str(mask.shape))
        found["mask"] = mask
    if ours:
        sampling = _dataset(f, path, "sampling_mask", dtypes=("float32",))
        if sampling is not None:
            _check_shape(path, sampling, (1, 1, width), n=n, n_from="kspace", alternatives=[(1, height, width)],
                         trailing_from="broadcastable to kspace, shared by the coils")
            found["sampling_mask"] = sampling
        maps = _dataset(f, path, "coil_maps", dtypes=("complex64",))
        if maps is not None:
            if maps.ndim == 3:  # shared by every slice
                if maps.shape != (coils, height, width):
                    raise SpecError(path, "coil_maps", f"shape (N, {coils}, {height}, {width}) or ({coils}, {height}, "
                                    f"{width}) (shared by every slice) (coils of kspace, attrs/image_shape)",
                                    str(maps.shape))
            else:
                _check_shape(path, maps, (coils, height, width), n=n, n_from="kspace",
                             trailing_from="coils of kspace, attrs/image_shape")
            found["coil_maps"] = maps
        truth = _dataset(f, path, "ground_truth", dtypes=("complex64",))
        if truth is not None:
            _check_shape(path, truth, image_shape, n=n, n_from="kspace", trailing_from="attrs/image_shape")
            found["ground_truth"] = truth
    recon_shape = None
    for name in ("reconstruction_rss", "reconstruction_esc"):
        recon = _dataset(f, path, name, dtypes=("float32",) if ours else ("float32", "float64"))
        if recon is not None:
            _check_shape(path, recon, ("h", "w"), n=n, n_from="kspace")
            recon_shape = tuple(recon.shape[1:])
            found[name] = recon
    header = _header_check(f, path, required=ours and trajectory is None)
    if ours:
        seg = _dataset(f, path, "segmentation", dtypes=("uint8",))
        if seg is not None:
            alternatives = [recon_shape] if recon_shape not in (None, image_shape) else []
            _check_shape(path, seg, image_shape, n=n, n_from="kspace", alternatives=alternatives,
                         trailing_from="the image grid" + (" or that of the reconstruction" if alternatives else ""))
            _classes_attr(seg, path, maximum=256)
            found["segmentation"] = seg
        labels = _dataset(f, path, "labels", dtypes=("int64",))
        if labels is not None:
            _check_shape(path, labels, (), n=n, n_from="kspace")
            _classes_attr(labels, path, maximum=None)
            found["labels"] = labels
    noise = _mri_noise(f, path, attrs, coils) if ours else None
    if scan:
        for name, ds in found.items():
            _scan(ds, path, _value_checks(f, path, name), scan)
    return {"kind": kind, "format_version": attrs.get("format_version") if ours else None, "num_slices": int(n),
            "num_coils": int(coils), "single_coil": bool(single), "cartesian": trajectory is None,
            "kspace_shape": tuple(shape), "image_shape": image_shape, "ismrmrd_header": header,
            "noise": noise, "datasets": _datasets(f), "checked": sorted(found),
            "value_bytes": _value_bytes(found)}


def _mri_noise(f, path, attrs: dict, coils: int) -> dict | None:
    """The k-space noise model of an ``mri_raw`` file as a noise dict, checked: ``attrs/noise`` plus, for
    correlated coils, the covariance of the dataset ``noise_covariance``; ``None`` without ``attrs/noise``."""
    cov = _dataset(f, path, "noise_covariance", dtypes=("complex128",))
    if "noise" not in attrs:
        if cov is not None:
            raise SpecError(path, "noise_covariance", "no such dataset without attrs/noise", "a dataset")
        return None
    noise_dict = _json_attr(attrs, "noise", path)
    _check_schema(noise_dict, path, "attrs/noise", "noise_model")
    if noise_dict["type"] != "complex_gaussian":
        raise SpecError(path, "attrs/noise/type", "'complex_gaussian' (k-space noise)", repr(noise_dict["type"]))
    if "covariance" in noise_dict:
        raise SpecError(path, "attrs/noise/covariance", "no such key (the dataset noise_covariance holds it)",
                        "a covariance")
    if cov is not None:
        if cov.shape != (coils, coils):
            raise SpecError(path, "noise_covariance", f"shape ({coils}, {coils}) (coils of kspace)", str(cov.shape))
        c = np.asarray(cov[()])
        noise_dict = {**noise_dict, "covariance": np.stack([c.real, c.imag], axis=-1).tolist()}
    try:
        noise_from_dict(noise_dict)
    except (ValueError, TypeError) as e:
        key = "noise_covariance" if cov is not None else "attrs/noise"
        raise SpecError(path, key, "a valid noise model", f"one that fails ({e})") from None
    return noise_dict


def _inspect_reconstruction(f, path, attrs: dict, scan: bool) -> dict:
    provenance = _json_attr(attrs, "provenance", path)
    _check_schema(provenance, path, "attrs/provenance", "reconstruction", "provenance")
    try:
        datetime.datetime.fromisoformat(provenance["created"])
    except ValueError:
        raise SpecError(path, "attrs/provenance/created", "an ISO 8601 time",
                        _short(provenance["created"])) from None
    image = _dataset(f, path, "image", required=True, dtypes=("float32", "complex64"),
                     what="float32 or complex64 (N, H, W)")
    if image.ndim not in (3, 4):
        raise SpecError(path, "image", "shape (N, H, W) or (N, D, H, W)", str(image.shape))
    n = _check_shape(path, image, image.shape[1:])
    found = {"image": image}
    for name in ("uncertainty", "interval_lower", "interval_upper"):
        ds = _dataset(f, path, name, dtypes=("float32",))
        if ds is not None:
            _check_shape(path, ds, image.shape[1:], n=n, n_from="image", trailing_from="as image")
            found[name] = ds
    if ("interval_lower" in found) != ("interval_upper" in found):
        missing = "interval_upper" if "interval_lower" in found else "interval_lower"
        raise SpecError(path, missing, "both interval bounds (interval_lower and interval_upper)", "one")
    task = []
    if "task" in f:
        group = _get(f, path, "task", "a group of task outputs")
        if not isinstance(group, h5py.Group):
            raise SpecError(path, "task", "a group of task outputs", _what(group))
        for key in group:
            name = f"task/{key}"
            ds = _dataset(f, path, name, kinds="biufc")
            if ds.ndim < 1:
                raise SpecError(path, name, f"shape ({n}, ...) (one row per image slice)", "()")
            _check_shape(path, ds, ds.shape[1:], n=n, n_from="image")
            found[name] = ds
            task.append(key)
    if scan:
        for name, ds in found.items():
            _scan(ds, path, _value_checks(f, path, name), scan)
    return {"kind": "reconstruction", "format_version": attrs["format_version"], "num_slices": n,
            "image_shape": tuple(image.shape[1:]), "complex": image.dtype.kind == "c", "task": sorted(task),
            "provenance": provenance, "datasets": _datasets(f), "checked": sorted(found),
            "value_bytes": _value_bytes(found)}


def _inspect(f, path, *, scan_values: bool, expect=None) -> dict:
    kind = _kind(f, path)
    if expect is not None and kind not in expect:
        raise SpecError(path, "attrs/pirecon_format", " or ".join(repr(e) for e in expect),
                        "a plain fastMRI file" if kind == "fastmri" else repr(kind))
    attrs = _root_attrs(f, path)
    if kind == "fastmri":
        summary = _inspect_mri(f, path, attrs, kind, scan_values)
    else:
        _check_version(attrs, path)
        _check_schema(attrs, path, "attrs", kind)
        if kind == "ct_raw":
            summary = _inspect_ct(f, path, attrs, scan_values)
        elif kind == "mri_raw":
            summary = _inspect_mri(f, path, attrs, kind, scan_values)
        else:
            summary = _inspect_reconstruction(f, path, attrs, scan_values)
    return {"path": str(path), **summary}


def validate(path, *, expect=None, values: bool = True, progress=None) -> dict:
    """Check ``path`` against its spec; return a summary or raise :class:`SpecError` at the first problem.

    The summary holds ``kind`` (``"ct_raw"``, ``"mri_raw"``, ``"fastmri"``, ``"reconstruction"``),
    ``format_version`` (``None`` for plain fastMRI files), ``num_slices``, ``datasets`` (all of the
    file's), ``checked`` (those the spec knows, whose dtype, shape and values were checked),
    ``value_bytes`` (the uncompressed bytes the value checks read) and per-kind details (geometry,
    k-space shape and coils, image shape, task outputs, provenance, noise model).

    Parameters
    ----------
    expect : sequence of kinds, optional
        The kinds accepted (``("ct_raw",)``, ``("mri_raw", "fastmri")``); another kind raises
        ``SpecError`` under ``attrs/pirecon_format``.
    values : bool
        Also check the values (finite, in range), reading the datasets a block of slices at a time
        (at most 64 MiB at once). ``False`` checks attributes, dtypes and shapes only, reading no array.
    progress : callable, optional
        Called with the number of bytes read after each block of the value checks (e.g. a
        ``tqdm`` bar's ``update``).
    """
    with _open(path) as f:
        return _inspect(f, path, scan_values=(progress or True) if values else False, expect=expect)


@contextlib.contextmanager
def checked_file(path, *, expect=None):
    """Open ``path`` read-only and check its attributes, dtypes and shapes (no value is read); yield
    ``(h5py.File, summary)``. Read errors inside the block become :class:`SpecError`; check what the
    block loads with :func:`check_loaded`."""
    with _open(path) as f:
        yield f, _inspect(f, path, scan_values=False, expect=expect)


def file_kind(path) -> str:
    """``"ct_raw"``, ``"mri_raw"``, ``"reconstruction"`` or ``"fastmri"`` (a plain fastMRI file).

    Looks only at the root attribute ``pirecon_format`` (and, without it, for a ``kspace``
    dataset); raises ``SpecError`` for files that are none of these.
    """
    with _open(path) as f:
        return _kind(f, path)


def main_validate(path: str) -> int:
    """``pirecon validate FILE``: one line ``OK <path>: <kind>, <N> slices`` (stdout) and 0, or the
    ``SpecError`` text (stderr) and 2."""
    try:
        summary = validate(path)
    except SpecError as e:
        print(str(e), file=sys.stderr)
        return 2
    print(f"OK {path}: {summary['kind']}, {summary['num_slices']} slices")
    return 0
