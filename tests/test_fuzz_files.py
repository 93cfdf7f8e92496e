"""Property-based fuzzing of the file checks: valid CT raw, MRI raw, fastMRI and reconstruction files, broken
at random (bytes cut, wrong dtypes and shapes, NaN / Inf and out-of-range values, missing and extra keys, junk
attributes, wrong versions), must either pass or raise the spec's ``SpecError`` — one line naming the file —
from ``validate``, from the matching reader and from ``H5SliceDataset``, and the three must agree.

The cases are derandomised (the same ones on every run); ``PIRECON_FUZZ_SCALE=10`` runs ten times as many
and ``PIRECON_FUZZ_RANDOM=1`` draws new ones on every run.
"""

import itertools
import json
import os

import h5py
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pirecon.ct import ParallelBeam2D
from pirecon.data.datasets import H5SliceDataset
from pirecon.data.formats import (
    read_ct_raw,
    read_mri_raw,
    read_reconstruction,
    write_ct_raw,
    write_mri_raw,
    write_reconstruction,
)
from pirecon.data.validate import SpecError, file_kind, validate
from pirecon.noise import ComplexGaussianNoise, GaussianNoise

SCALE = float(os.environ.get("PIRECON_FUZZ_SCALE", "1"))
RANDOM = os.environ.get("PIRECON_FUZZ_RANDOM", "") not in ("", "0")


def fuzz_settings(examples: int):
    return settings(max_examples=max(1, int(examples * SCALE)), deadline=None, derandomize=not RANDOM,
                    database=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


RAW = ("ct_raw", "mri_raw", "fastmri")
READERS = {"ct_raw": (read_ct_raw, ("ct_raw",)), "mri_raw": (read_mri_raw, ("mri_raw", "fastmri")),
           "fastmri": (read_mri_raw, ("mri_raw", "fastmri")),
           "reconstruction": (read_reconstruction, ("reconstruction",))}
N = 2

# --------------------------------------------------------------------------------------------------
# tiny valid files, written once per module
# --------------------------------------------------------------------------------------------------

HEADER = ('<?xml version="1.0" encoding="utf-8"?>\n<ismrmrdHeader xmlns="http://www.ismrm.org/ISMRMRD"><encoding>'
          "<encodedSpace><matrixSize><x>6</x><y>4</y><z>1</z></matrixSize></encodedSpace>"
          "<reconSpace><matrixSize><x>4</x><y>4</y><z>1</z></matrixSize></reconSpace>"
          "</encoding></ismrmrdHeader>")


def complex_normal(r, shape):
    return (r.standard_normal(shape) + 1j * r.standard_normal(shape)).astype(np.complex64)


def make_bases(folder):
    r = np.random.default_rng(0)
    geometry = ParallelBeam2D((6, 6), num_angles=3)
    ct = write_ct_raw(folder / "ct.h5", r.random((N, *geometry.sinogram_shape), dtype=np.float32), geometry,
                      noise=GaussianNoise(sigma=0.1), ground_truth=r.random((N, 6, 6), dtype=np.float32),
                      segmentation=r.integers(0, 3, (N, 6, 6)), labels=np.array([0, 1]),
                      attrs={"split": "train", "study": "fuzz", "window": [0.0, 1.0]})
    mask = np.array([1, 0, 1, 1], dtype=np.float32)
    covariance = np.array([[1.0, 0.2j], [-0.2j, 1.0]])
    mri = write_mri_raw(folder / "mri.h5", complex_normal(r, (N, 2, 6, 4)) * mask, mask=mask,
                        coil_maps=complex_normal(r, (N, 2, 6, 4)), ground_truth=complex_normal(r, (N, 6, 4)),
                        reconstruction_rss=r.random((N, 4, 4), dtype=np.float32),
                        segmentation=r.integers(0, 2, (N, 6, 4)), labels=np.array([1, 0]),
                        noise=ComplexGaussianNoise(0.05, covariance=covariance),
                        attrs={"acquisition": "CORPD_FBK", "split": "validation"})
    mri2d = write_mri_raw(folder / "mri2d.h5", complex_normal(r, (N, 1, 6, 4)),
                          mask=(r.random((N, 1, 6, 4)) > 0.5).astype(np.float32),
                          coil_maps=complex_normal(r, (1, 6, 4)))
    radial = write_mri_raw(folder / "radial.h5", complex_normal(r, (N, 2, 5)),
                           trajectory=r.uniform(-3, 3, (N, 2, 5)).astype(np.float32),
                           ground_truth=complex_normal(r, (N, 6, 4)))
    fastmri = folder / "fastmri.h5"
    with h5py.File(fastmri, "w") as f:
        f.create_dataset("kspace", data=complex_normal(r, (N, 2, 6, 4)).astype(np.complex128))
        f.create_dataset("ismrmrd_header", data=HEADER.encode(), dtype=h5py.string_dtype())
        f.create_dataset("mask", data=mask.astype(bool))
        f.create_dataset("reconstruction_rss", data=r.random((N, 4, 4)))
        f.attrs.update({"acquisition": "AXT2", "max": 1.0, "norm": 2.0, "acceleration": 4, "num_low_frequency": 2})
    recon = write_reconstruction(folder / "recon.h5", r.random((N, 6, 6), dtype=np.float32),
                                 uncertainty=r.random((N, 6, 6), dtype=np.float32),
                                 task={"logits": r.standard_normal((N, 3)).astype(np.float32),
                                       "lesions": r.integers(0, 2, (N, 6, 6)).astype(np.uint8)},
                                 provenance={"method": "fbp", "source_file": "ct.h5"})
    bases = {}
    for path in (ct, mri, mri2d, radial, fastmri, recon):
        summary = validate(path)  # valid to begin with
        bases[path.stem] = (summary["kind"], path.read_bytes())
    return bases


class Bases(dict):
    def __repr__(self):  # keeps hypothesis's report of a failing case short
        return f"Bases({sorted(self)})"


@pytest.fixture(scope="module")
def bases(tmp_path_factory):
    return Bases(make_bases(tmp_path_factory.mktemp("bases")))


@pytest.fixture(scope="module")
def scratch(tmp_path_factory):
    folder = tmp_path_factory.mktemp("cases")
    counter = itertools.count()
    return lambda: folder / f"case{next(counter)}.h5"  # a new name per case: no cache of a former case applies


# --------------------------------------------------------------------------------------------------
# corruptions
# --------------------------------------------------------------------------------------------------

KNOWN_DATASETS = ["sinogram", "kspace", "image", "ground_truth", "segmentation", "labels", "mask", "sampling_mask",
                  "trajectory", "coil_maps", "reconstruction_rss", "reconstruction_esc", "ismrmrd_header",
                  "noise_covariance", "uncertainty", "task", "task/logits", "task/extra", "data"]
KNOWN_ATTRS = ["pirecon_format", "format_version", "pirecon_version", "geometry", "noise", "provenance",
               "image_shape", "max", "norm", "acceleration", "num_low_frequency", "acquisition", "patient_id",
               "split", "num_classes"]
DTYPES = ["float16", "float32", "float64", "int8", "int32", "int64", "uint8", "uint16", "bool", "complex64",
          "complex128", "S8", "vlen-str"]

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12)

junk_values = st.one_of(
    st.integers(-2**63, 2**63 - 1), st.floats(), st.booleans(), st.text(max_size=40),
    st.sampled_from(["", "{", '{"type": ', "[1, 2", "NaN", "null", "1e400", '{"type": "parallel2d"}', "[]",
                     '"text"', "a\x00b", "x" * 200_000, "ct_raw", "mri_raw", "reconstruction", "test"]),
    json_values.map(json.dumps),
    st.sampled_from([b"\xff\xfe\x00junk", b"", b"{\"a\": 1}"]).map(np.bytes_),
    st.sampled_from([np.zeros(0), np.arange(6).reshape(2, 3), np.array([np.nan, 1.0]),
                     np.array(["a", "b"], dtype=h5py.string_dtype()),
                     np.array([1, 2, 3], dtype=np.uint8), np.array([True, False])]),
    st.sampled_from([h5py.Empty("f4"), h5py.Empty("S1")]),
    st.tuples(st.sampled_from(["compound", "enum", "vlen", "void"]), st.sampled_from([(2,), ()])).map(
        lambda args: exotic(*args)),
)


def exotic(name: str, shape):
    """Data of a type pirecon never writes: compound, enum, variable-length, opaque."""
    if name == "compound":
        return np.zeros(shape, dtype=[("re", "f4"), ("im", "f4")])
    if name == "enum":
        return np.zeros(shape, dtype=h5py.enum_dtype({"no": 0, "yes": 1}, basetype="i1"))
    if name == "vlen":
        data = np.empty(shape, dtype=h5py.vlen_dtype("i4"))
        for index in np.ndindex(shape):
            data[index] = np.arange(1 + sum(index), dtype="i4")
        return data
    return np.zeros(shape, dtype="V4")


def object_names(f):
    names = []
    f.visit(names.append)
    return names


def dataset_names(f):
    return [n for n in object_names(f) if isinstance(f[n], h5py.Dataset)]


def recreate(f, name, data, attrs=None):
    attrs = dict(f[name].attrs) if attrs is None and name in f else (attrs or {})
    if name in f:
        del f[name]
    if isinstance(data, h5py.Empty):
        ds = f.create_dataset(name, data=data)
    elif isinstance(data, str):
        ds = f.create_dataset(name, data=data, dtype=h5py.string_dtype())
    else:
        data = np.asarray(data)
        options = {"chunks": True, "compression": "gzip"} if data.ndim >= 1 and data.size else {}
        ds = f.create_dataset(name, data=data, **options)
    for key, value in attrs.items():
        ds.attrs[key] = value


def try_recreate(f, name, data) -> bool:
    """:func:`recreate`, unless HDF5 cannot store ``data`` (an object array from a null dataset...)."""
    try:
        recreate(f, name, data)
    except (TypeError, ValueError):
        return False
    return True


def cast(data, dtype: str):
    data = np.asarray(data)
    if dtype == "vlen-str":
        return np.asarray(data.astype(str).astype(object), dtype=h5py.string_dtype())
    if data.dtype.kind in "SUOV":
        return np.zeros(data.shape or (3,), dtype=dtype)
    if data.dtype.kind == "c" and np.dtype(dtype).kind != "c":
        data = data.real
    with np.errstate(all="ignore"):
        return data.astype(dtype)


def other_shape(draw, data):
    data = np.asarray(data)
    options = ["scalar", "add axis", "random"]
    if data.ndim >= 1 and data.size:
        options += ["drop first axis", "cut slices", "cut last axis", "grow last axis", "transpose", "empty"]
    how = draw(st.sampled_from(options))
    if how == "scalar":
        return data.reshape(-1)[0] if data.size else np.float32(0)
    if how == "add axis":
        return data[None] if draw(st.booleans()) else data[..., None]
    if how == "drop first axis":
        return data[0]
    if how == "cut slices":
        return data[: draw(st.integers(0, max(0, data.shape[0] - 1)))]
    if how == "cut last axis":
        return data[..., : draw(st.integers(0, max(0, data.shape[-1] - 1)))]
    if how == "grow last axis":
        return np.concatenate([data, data[..., :1]], axis=-1)
    if how == "transpose":
        return data.T
    if how == "empty":
        return data[:0]
    shape = tuple(draw(st.lists(st.integers(0, 7), max_size=5)))
    return np.zeros(shape, dtype=data.dtype if data.dtype.kind in "biufc" else np.float32)


def bad_value(draw, data):
    data = np.array(data)
    if data.dtype.kind not in "biufc" or data.size == 0:
        return data
    index = tuple(draw(st.integers(0, s - 1)) for s in data.shape)
    if data.dtype.kind in "fc":
        values = [np.nan, np.inf, -np.inf, -1.0, 2.0, 4.0, 1e30]
        if data.dtype.kind == "c":
            values += [complex(0, np.nan), complex(np.inf, 1)]
        with np.errstate(all="ignore"):
            data[index] = draw(st.sampled_from(values))
    elif data.dtype.kind == "b":
        data[index] = not data[index]
    else:
        info = np.iinfo(data.dtype)
        data[index] = draw(st.sampled_from([info.min, info.max, 0, 1, 3, 255 if info.max >= 255 else info.max]))
    return data


def mutate_json(draw, text):
    try:
        d = json.loads(text)
    except (TypeError, ValueError):
        return draw(junk_values)
    if not isinstance(d, dict) or not d:
        return json.dumps(draw(json_values))
    key = draw(st.sampled_from(sorted(d) + ["type", "format_version", "extra"]))
    how = draw(st.sampled_from(["set", "delete", "version", "number"]))
    if how == "delete":
        d.pop(key, None)
    elif how == "version":
        d["format_version"] = draw(st.sampled_from([0, 2, "1", 1.5, None, True]))
    elif how == "number":
        d[key] = draw(st.sampled_from([0, -1, 1e308, 2**64, 1.5, 10**9, [], [0.0] * 3, "x"]))
    else:
        d[key] = draw(json_values)
    return json.dumps(d)


def corrupt(draw, f):
    """One random corruption of the open file ``f``; returns a description."""
    datasets = dataset_names(f)
    kind = draw(st.sampled_from(["dtype", "shape", "value", "delete", "extra", "attribute", "json", "version",
                                 "dataset attribute", "link", "exotic"]))
    if kind in ("dtype", "shape", "value") and datasets:
        name = draw(st.sampled_from(datasets))
        data = f[name][()]
        if isinstance(data, h5py.Empty) or np.asarray(data).dtype.kind not in "biufc":
            data = np.zeros(f[name].shape or (), dtype=np.float32)  # strings, compound, enum, vlen, null: start afresh
        if kind == "dtype":
            new = cast(data, draw(st.sampled_from(DTYPES)))
        elif kind == "shape":
            new = other_shape(draw, data)
        else:
            new = bad_value(draw, data)
        if not try_recreate(f, name, new):
            return "nothing"
        return f"{kind} of {name}"
    if kind == "delete":
        targets = [(n, None) for n in object_names(f)] + [("", a) for a in f.attrs] + \
            [(n, a) for n in datasets for a in f[n].attrs]
        name, attr = draw(st.sampled_from(targets))
        if attr is None:
            if name in f:  # not already gone with its group
                del f[name]
            return f"delete {name}"
        del (f[name] if name else f).attrs[attr]
        return f"delete {name}/attrs/{attr}"
    if kind == "extra":
        name = draw(st.sampled_from(KNOWN_DATASETS) | st.text("abcxyz_/", min_size=1, max_size=6))
        name = name.strip("/") or "x"
        if draw(st.booleans()):
            if name not in f:
                try:
                    f.create_group(name)
                except ValueError:  # a dataset on the way
                    return "nothing"
            return f"group {name}"
        dtype = draw(st.sampled_from(DTYPES))
        shape = tuple(draw(st.lists(st.integers(0, 6), max_size=4)))
        data = cast(np.random.default_rng(0).random(shape) + 0.25, dtype)
        try:
            recreate(f, name, data, attrs={})
        except (ValueError, KeyError, TypeError):  # a dataset on the way of a path
            return "nothing"
        return f"extra {name} {dtype}{shape}"
    if kind in ("attribute", "json", "version"):
        if kind == "json":
            candidates = [a for a in ("geometry", "noise", "provenance") if a in f.attrs]
            if not candidates:
                return "nothing"
            name = draw(st.sampled_from(candidates))
            value = mutate_json(draw, f.attrs[name])
        elif kind == "version":
            name = "format_version"
            value = draw(st.sampled_from([0, 2, -1, 2**62, 1.0, "1", True]) | junk_values)
        else:
            name = draw(st.sampled_from(KNOWN_ATTRS + sorted(f.attrs)) | st.text(max_size=6))
            value = draw(junk_values)
        if not name or not set_attr(f, name, value):
            return "nothing"
        return f"attribute {name}"
    if kind == "link":
        name = draw(st.sampled_from(sorted(set(object_names(f)) | {"kspace", "sinogram", "image", "task", "mask",
                                                                  "coil_maps", "ismrmrd_header"})))
        targets = object_names(f)
        how = draw(st.sampled_from(["dangling", "loop", "soft", "hard", "external"]))
        if how in ("soft", "hard") and not targets:
            return "nothing"
        link = {"dangling": lambda: h5py.SoftLink("/nowhere"), "loop": lambda: h5py.SoftLink(f"/{name}"),
                "external": lambda: h5py.ExternalLink("missing.h5", "/data"),
                "soft": lambda: h5py.SoftLink("/" + draw(st.sampled_from(targets))),
                "hard": lambda: f[draw(st.sampled_from(targets))]}[how]()
        if name in f or name in f.keys():
            del f[name]
        try:
            f[name] = link
        except (KeyError, ValueError, OSError):  # a dataset on the way of the path
            return "nothing"
        return f"{how} link {name}"
    if kind == "exotic" and datasets:
        name = draw(st.sampled_from(datasets))
        shape = f[name].shape or ()
        how = draw(st.sampled_from(["compound", "enum", "vlen", "void", "null", "string"]))
        if how == "null":
            new = h5py.Empty("f4")
        elif how == "string":
            new = draw(st.sampled_from(["", "text", "<xml/>"]))
        else:
            new = exotic(how, shape)
        if not try_recreate(f, name, new):
            return "nothing"
        return f"{how} {name}"
    if kind == "dataset attribute" and datasets:
        name = draw(st.sampled_from(datasets))
        if not set_attr(f[name], draw(st.sampled_from(["num_classes", "x"])), draw(junk_values)):
            return "nothing"
        return f"attribute of {name}"
    return "nothing"


def set_attr(obj, name, value) -> bool:
    """Store an attribute, unless HDF5 cannot hold the value (a NUL inside a variable-length string...)."""
    try:
        obj.attrs[name] = value
    except (TypeError, ValueError, RuntimeError, KeyError, OSError, AttributeError):  # what HDF5 cannot store
        return False
    return True


def broken_file(draw, bases, path):
    base = draw(st.sampled_from(sorted(bases)))
    kind, data = bases[base]
    path.write_bytes(data)
    steps = [base]
    with h5py.File(path, "a") as f:
        for _ in range(draw(st.integers(1, 3))):
            steps.append(corrupt(draw, f))
    if draw(st.integers(0, 9)) == 0:  # bytes of a chunk overwritten
        with h5py.File(path, "r") as f:
            chunks = [f[n].id.get_chunk_info(0) for n in dataset_names(f)
                      if f[n].chunks is not None and f[n].id.get_num_chunks()]
        if chunks:
            chunk = draw(st.sampled_from(chunks))
            with open(path, "r+b") as fh:
                fh.seek(chunk.byte_offset + draw(st.integers(0, max(0, chunk.size - 1))))
                fh.write(draw(st.binary(min_size=1, max_size=16)))
            steps.append(f"chunk bytes at {chunk.byte_offset}")
    if draw(st.integers(0, 9)) == 0:  # bytes cut off the end or out of the middle
        data = path.read_bytes()
        a = draw(st.integers(0, len(data) - 1))
        b = draw(st.integers(a, len(data))) if draw(st.booleans()) else len(data)
        path.write_bytes(data[:a] + data[b:])
        steps.append(f"cut bytes {a}:{b}")
    return kind, steps


# --------------------------------------------------------------------------------------------------
# the properties
# --------------------------------------------------------------------------------------------------

def outcome(path, call, *args, **kwargs):
    """``None`` if ``call`` passes, else its ``SpecError`` (anything else fails the test)."""
    try:
        call(*args, **kwargs)
    except SpecError as e:
        text = str(e)
        assert "\n" not in text and text.startswith(f"{path}: "), text
        assert e.path == str(path) and text == f"{path}: {e.key}: expected {e.expected}, found {e.found}"
        return e
    return None


def check(path):
    error = outcome(path, validate, path)
    try:
        kind = file_kind(path)
    except SpecError:
        kind = None
    # the reader of the file's kind: fails exactly when validate does, with the same message
    for name, (reader, kinds) in READERS.items():
        if kind in kinds or (kind is None and name == "ct_raw"):
            read_error = outcome(path, reader, path)
            assert (read_error is None) == (error is None), (error, read_error)
            if error is not None and "read error" not in error.found + read_error.found:
                assert str(read_error) == str(error)  # a damaged chunk: read whole by one, by blocks by the other
    # the dataset: the error pirecon check gives, or items it can read
    dataset = None

    def build():
        nonlocal dataset
        dataset = H5SliceDataset(path, progress=False)

    dataset_error = outcome(path, build)
    if kind in RAW or kind is None:
        assert (dataset_error is None) == (error is None), (error, dataset_error)
        if error is not None:
            assert str(dataset_error) == str(error)
        else:
            for i in (0, len(dataset) - 1):
                item = dataset[i]
                assert item["slice"] == i
            dataset.close()
    else:
        assert dataset_error is not None and dataset_error.key == "attrs/pirecon_format"
    return error


@given(data=st.data())
@fuzz_settings(800)
def test_broken_files_end_in_spec_errors(bases, scratch, data):
    path = scratch()
    kind, steps = broken_file(data.draw, bases, path)
    data.draw(st.just(steps), label="steps")  # shown with a failing example
    check(path)
    path.unlink()


@given(data=st.data())
@fuzz_settings(100)
def test_cut_files_end_in_spec_errors(bases, scratch, data):
    path = scratch()
    base = data.draw(st.sampled_from(sorted(bases)))
    raw = bases[base][1]
    cut = data.draw(st.integers(0, len(raw) - 1))
    path.write_bytes(raw[:cut])
    error = check(path)
    assert error is not None and error.key == "file", error
    path.unlink()


def test_the_bases_pass(bases, tmp_path):
    for name, (kind, data) in bases.items():
        path = tmp_path / f"{name}.h5"
        path.write_bytes(data)
        assert check(path) is None and file_kind(path) == kind
