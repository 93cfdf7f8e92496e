"""HDF5 file formats (data_specs/ct_raw.md, mri_raw.md, reconstruction.md): round trips, fastMRI
compatibility, chunking, atomic writes, and the validator's exact messages for broken files."""

import json
import math
import pickle
import re
import shutil
from pathlib import Path

import h5py
import jsonschema
import numpy as np
import pytest
import torch

from pirecon.ct import ConeBeam3D, FanBeam2D, ParallelBeam2D
from pirecon.data import formats
from pirecon.data._spec import decode_attr
from pirecon.data.formats import (
    FORMAT_VERSION,
    file_kind,
    read_ct_raw,
    read_mri_raw,
    read_reconstruction,
    write_ct_raw,
    write_mri_raw,
    write_reconstruction,
)
from pirecon.data.validate import SpecError, check_loaded, checked_file, main_validate, validate
from pirecon.errors import PireconUserError
from pirecon.noise import GaussianNoise, TransmissionPoisson

SPECS = Path(__file__).resolve().parents[1] / "data_specs"

GEOMETRY = ParallelBeam2D((16, 16), num_angles=8)  # sinogram (8, 25)
N = 3


def rng(seed=0):
    return np.random.default_rng(seed)


def complex_normal(shape, seed=0):
    r = rng(seed)
    return (r.standard_normal(shape) + 1j * r.standard_normal(shape)).astype(np.complex64)


def ct_file(path, **overrides):
    r = rng(1)
    sinogram = overrides.pop("sinogram", r.random((N, *GEOMETRY.sinogram_shape), dtype=np.float32))
    kwargs = dict(
        noise=GaussianNoise(relative=0.05),
        ground_truth=r.random((N, 16, 16), dtype=np.float32),
        segmentation=np.tile(np.arange(3, dtype=np.uint8), (N, 16, 6))[:, :, :16],
        labels=np.array([0, 1, 0]),
        attrs={"study": "unit-test", "dose": 0.25, "phantom": True, "window": [0.0, 0.5]},
    )
    kwargs.update(overrides)
    return write_ct_raw(path, sinogram, GEOMETRY, **kwargs)


LINE_MASK = np.array([1, 0, 0, 1, 1, 1, 0, 1, 0, 0], dtype=np.float32)  # W = 10


def mri_file(path, **overrides):
    kspace = complex_normal((N, 4, 12, 10)) * LINE_MASK
    kwargs = dict(mask=LINE_MASK, coil_maps=complex_normal((N, 4, 12, 10), 1),
                  ground_truth=complex_normal((N, 12, 10), 2),
                  reconstruction_rss=rng(3).random((N, 8, 8), dtype=np.float32),
                  labels=np.array([1, 0, 1]), attrs={"acquisition": "CORPD_FBK", "patient_id": "p1"})
    kwargs.update(overrides)
    return write_mri_raw(path, kwargs.pop("kspace", kspace), **kwargs)


def recon_file(path):
    r = rng(4)
    return write_reconstruction(path, r.random((N, 16, 16), dtype=np.float32),
                                uncertainty=r.random((N, 16, 16), dtype=np.float32),
                                task={"logits": r.standard_normal((N, 2)).astype(np.float32),
                                      "lesion_mask": np.zeros((N, 16, 16), dtype=np.uint8)},
                                provenance={"method": "fbp", "source_file": "ct.h5"})


FASTMRI_HEADER = (
    '<?xml version="1.0" encoding="utf-8"?>\n<ismrmrdHeader xmlns="http://www.ismrm.org/ISMRMRD"><encoding>'
    "<encodedSpace><matrixSize><x>12</x><y>10</y><z>1</z></matrixSize></encodedSpace>"
    "<reconSpace><matrixSize><x>8</x><y>8</y><z>1</z></matrixSize></reconSpace>"
    "<encodingLimits><kspace_encoding_step_1><minimum>0</minimum><maximum>9</maximum><center>5</center>"
    "</kspace_encoding_step_1></encodingLimits><trajectory>cartesian</trajectory></encoding></ismrmrdHeader>"
)


def fastmri_file(path, *, single_coil=False, test_file=False):
    """A file laid out like the public fastMRI data, written directly with h5py."""
    shape = (N, 12, 10) if single_coil else (N, 4, 12, 10)
    with h5py.File(path, "w") as f:
        f.create_dataset("kspace", data=complex_normal(shape, 5))
        f.create_dataset("ismrmrd_header", data=FASTMRI_HEADER.encode(), dtype=h5py.string_dtype())
        if test_file:
            f.create_dataset("mask", data=LINE_MASK.astype(bool))
            f.attrs["acceleration"] = 4
            f.attrs["num_low_frequency"] = 2
        else:
            key = "reconstruction_esc" if single_coil else "reconstruction_rss"
            f.create_dataset(key, data=rng(6).random((N, 8, 8), dtype=np.float32))
            f.attrs["max"] = 1.0
            f.attrs["norm"] = 4.0
        f.attrs["acquisition"] = "CORPD_FBK"
        f.attrs["patient_id"] = "abc123"
    return Path(path)


# --------------------------------------------------------------------------------------------------
# round trips
# --------------------------------------------------------------------------------------------------

def test_ct_round_trip_with_torch_inputs(tmp_path):
    r = rng(7)
    sino = torch.from_numpy(r.random((N, 1, *GEOMETRY.sinogram_shape), dtype=np.float32))  # (B, C, A, D)
    truth = torch.from_numpy(r.random((N, 16, 16))).requires_grad_()  # float64 with grad
    seg = torch.zeros(N, 16, 16, dtype=torch.int64)
    seg[1, 4:8, 4:8] = 1
    path = write_ct_raw(tmp_path / "ct.h5", sino, GEOMETRY.to_dict(), noise=TransmissionPoisson(1e4).to_dict(),
                        ground_truth=truth, segmentation=seg, labels=torch.tensor([0, 1, 0]),
                        attrs={"study": "x", "n": 3, "ok": False, "window": (1, 2), "names": ["a", "b"]})
    raw = read_ct_raw(path)
    assert raw.geometry == GEOMETRY and raw.noise == TransmissionPoisson(1e4)
    assert raw.sinogram.dtype == np.float32 and raw.sinogram.shape == (N, 8, 25)
    np.testing.assert_array_equal(raw.sinogram, sino[:, 0].numpy())
    np.testing.assert_array_equal(raw.ground_truth, truth.detach().numpy().astype(np.float32))
    assert raw.segmentation.dtype == np.uint8 and raw.segmentation[1, 5, 5] == 1
    assert raw.labels.dtype == np.int64 and raw.labels.tolist() == [0, 1, 0]
    assert raw.attrs == {"study": "x", "n": 3, "ok": False, "window": [1, 2], "names": ["a", "b"]}
    assert raw.num_slices == N
    summary = validate(path)
    assert summary["kind"] == "ct_raw" and summary["format_version"] == FORMAT_VERSION == 1
    assert summary["num_slices"] == N and summary["sinogram_shape"] == (8, 25)
    assert file_kind(path) == "ct_raw"
    with h5py.File(path) as f:
        assert f["segmentation"].attrs["num_classes"] == 2 and f["labels"].attrs["num_classes"] == 2
        jsonschema.validate(json.loads(f.attrs["geometry"]), schema("ct_geometry"))


@pytest.mark.parametrize("geometry", [
    FanBeam2D((12, 12), num_angles=6, source_distance=50.0, detector_distance=20.0),
    ConeBeam3D((4, 6, 6), num_angles=5, detector_shape=(3, 7), detector_spacing=1.5, source_distance=40.0,
               detector_distance=10.0),
], ids=lambda g: g.kind)
def test_ct_round_trip_other_geometries(tmp_path, geometry):
    sino = rng().random((2, *geometry.sinogram_shape), dtype=np.float32)
    truth = rng().random((2, *geometry.image_shape), dtype=np.float32)
    raw = read_ct_raw(write_ct_raw(tmp_path / "ct.h5", sino, geometry, ground_truth=truth))
    assert raw.geometry == geometry and raw.noise is None and raw.segmentation is None and raw.attrs == {}
    np.testing.assert_array_equal(raw.ground_truth, truth)


def test_mri_multicoil_round_trip_with_torch_inputs(tmp_path):
    kspace = torch.from_numpy(complex_normal((N, 4, 12, 10))) * torch.from_numpy(LINE_MASK)
    maps = torch.from_numpy(complex_normal((4, 12, 10), 1))  # shared by all slices
    truth = torch.from_numpy(complex_normal((N, 1, 12, 10), 2)).conj()  # (B, 1, H, W), a conjugate view
    rss = torch.rand(N, 8, 8)
    path = write_mri_raw(tmp_path / "mc.h5", kspace, mask=torch.from_numpy(LINE_MASK).reshape(1, 1, 1, 10),
                         coil_maps=maps, ground_truth=truth, reconstruction_rss=rss,
                         segmentation=np.ones((N, 8, 8), dtype=np.uint8), labels=[1, 0, 1],
                         attrs={"acquisition": "CORPD_FBK"})
    raw = read_mri_raw(path)
    assert not raw.single_coil and raw.cartesian and raw.num_slices == N
    assert raw.kspace.dtype == np.complex64 and raw.kspace.shape == (N, 4, 12, 10)
    np.testing.assert_array_equal(raw.kspace, kspace.numpy())
    assert raw.mask.dtype == np.float32 and raw.mask.shape == (N, 1, 1, 10)
    np.testing.assert_array_equal(raw.mask[2, 0, 0], LINE_MASK)
    np.testing.assert_array_equal(raw.coil_maps, np.broadcast_to(maps.numpy(), (N, 4, 12, 10)))
    np.testing.assert_array_equal(raw.ground_truth, truth[:, 0].resolve_conj().numpy())
    np.testing.assert_array_equal(raw.reconstruction_rss, rss.numpy())
    assert raw.segmentation.shape == (N, 8, 8) and raw.labels.tolist() == [1, 0, 1]
    assert raw.attrs["acquisition"] == "CORPD_FBK"
    assert raw.attrs["max"] == pytest.approx(float(rss.max()))
    assert raw.attrs["norm"] == pytest.approx(float(torch.linalg.vector_norm(rss)))
    assert "<encodedSpace><matrixSize><x>12</x><y>10</y>" in raw.ismrmrd_header
    with h5py.File(path) as f:  # fastMRI's layout
        assert f["kspace"].shape == (N, 4, 12, 10) and f["mask"].shape == (10,)
        assert "reconstruction_rss" in f and isinstance(f["ismrmrd_header"][()], bytes)
    assert validate(path)["num_coils"] == 4 and file_kind(path) == "mri_raw"


def test_mri_single_coil_and_2d_masks(tmp_path):
    kspace = complex_normal((N, 12, 10))
    masks = (rng(8).random((N, 1, 12, 10)) > 0.5).astype(np.float32)  # a 2D mask per slice
    path = write_mri_raw(tmp_path / "sc.h5", kspace * masks[:, 0], mask=masks,
                         reconstruction_rss=np.abs(kspace))
    with h5py.File(path) as f:  # fastMRI's single-coil layout: (N, H, W) and reconstruction_esc
        assert f["kspace"].shape == (N, 12, 10) and "reconstruction_esc" in f and "mask" not in f
        assert f["sampling_mask"].shape == (N, 1, 12, 10)
    raw = read_mri_raw(path)
    assert raw.single_coil and raw.kspace.shape == (N, 1, 12, 10)
    np.testing.assert_array_equal(raw.kspace[:, 0], kspace * masks[:, 0])
    np.testing.assert_array_equal(raw.mask, masks)
    np.testing.assert_allclose(raw.reconstruction_rss, np.abs(kspace))
    # line masks that differ between slices are per-slice too
    lines = np.stack([LINE_MASK, LINE_MASK[::-1], LINE_MASK]).reshape(N, 1, 1, 10)
    raw = read_mri_raw(write_mri_raw(tmp_path / "lines.h5", complex_normal((N, 1, 12, 10)), mask=lines))
    assert raw.single_coil and raw.mask.shape == (N, 1, 1, 10)
    np.testing.assert_array_equal(raw.mask, lines)


def test_mri_non_cartesian_round_trip(tmp_path):
    spokes = torch.linspace(-math.pi, math.pi * 0.99, 40)
    trajectory = torch.stack([spokes, spokes.flip(0) * 0.5])  # (2, K)
    kspace = torch.from_numpy(complex_normal((N, 2, 40)))
    path = write_mri_raw(tmp_path / "radial.h5", kspace, trajectory=trajectory,
                         coil_maps=complex_normal((N, 2, 12, 10)))
    raw = read_mri_raw(path)
    assert not raw.cartesian and raw.kspace.shape == (N, 2, 40) and raw.mask is None
    np.testing.assert_array_equal(raw.trajectory, trajectory.numpy())
    assert validate(path)["image_shape"] == (12, 10)
    # single-coil, one trajectory per slice, image grid from attrs
    per_slice = np.stack([trajectory.numpy()] * N)
    raw = read_mri_raw(write_mri_raw(tmp_path / "radial1.h5", complex_normal((N, 40)), trajectory=per_slice,
                                     attrs={"image_shape": [12, 10]}))
    assert raw.single_coil and raw.kspace.shape == (N, 1, 40) and raw.trajectory.shape == (N, 2, 40)
    with pytest.raises(ValueError, match=r"^image_shape: expected the image grid"):
        write_mri_raw(tmp_path / "x.h5", complex_normal((N, 40)), trajectory=trajectory)


@pytest.mark.parametrize("single_coil", [False, True], ids=["multicoil", "singlecoil"])
def test_plain_fastmri_files_are_read(tmp_path, single_coil):
    path = fastmri_file(tmp_path / "file1000001.h5", single_coil=single_coil)
    assert file_kind(path) == "fastmri"
    summary = validate(path)
    assert summary["kind"] == "fastmri" and summary["format_version"] is None
    assert summary["single_coil"] is single_coil and summary["num_slices"] == N
    raw = read_mri_raw(path)
    assert raw.single_coil is single_coil and raw.kspace.shape == (N, 1 if single_coil else 4, 12, 10)
    assert raw.reconstruction_rss.shape == (N, 8, 8) and raw.mask is None
    assert raw.attrs == {"acquisition": "CORPD_FBK", "patient_id": "abc123", "max": 1.0, "norm": 4.0}
    assert raw.ismrmrd_header == FASTMRI_HEADER


def test_plain_fastmri_test_file_mask(tmp_path):
    raw = read_mri_raw(fastmri_file(tmp_path / "test.h5", test_file=True))
    assert raw.mask.dtype == np.float32 and raw.mask.shape == (N, 1, 1, 10)
    np.testing.assert_array_equal(raw.mask[0, 0, 0], LINE_MASK)
    assert raw.attrs["acceleration"] == 4 and raw.attrs["num_low_frequency"] == 2


def test_fastmri_loaders_read_pirecon_files(tmp_path, fastmri_reference_script):
    """fastMRI's SliceDataset (and VarNetDataTransform) read the files pirecon writes.

    Where ``fastmri`` imports, it reads them here. Without it, what fastmri 0.3.0 returned for them is
    taken from ``tests/data/fastmri_loader_reference.json`` (``make_fastmri_reference.py``), and the
    files pirecon writes now must have the layout fastMRI read then (datasets, ISMRMRD header, attributes).
    """
    from conftest import installed_fastmri_version

    reference = fastmri_reference_script
    stored = reference.load_loader_values()
    paths = reference.write_loader_files(tmp_path / "stored")
    assert {kind: reference.fastmri_layout(path) for kind, path in paths.items()} == stored["layout"]
    found = stored
    installed = installed_fastmri_version()
    if installed is not None:
        found = reference.fastmri_loader_values(tmp_path / "live")
        if installed == reference.FASTMRI_VERSION:
            assert found == stored
    multi, single = found["multicoil"], found["singlecoil"]
    assert multi["num_slices"] == reference.LOADER_SLICES
    assert multi["masked_kspace_shape"] == [4, 12, 10, 2]
    assert multi["mask"] == [bool(v) for v in reference.LOADER_LINE_MASK]
    assert multi["target_shape"] == [8, 8] and multi["crop_size"] == [8, 8]
    assert single["kspace_shape"] == [12, 10] and single["mask"] is None and single["target_shape"] == [8, 8]
    assert single["recon_size"] == [8, 8, 1] and single["padding_right"] == 10


def test_reconstruction_round_trip(tmp_path):
    image = torch.from_numpy(complex_normal((N, 1, 16, 16)))  # (B, 1, H, W) complex network output
    std = torch.rand(N, 1, 16, 16)
    task = {"logits": torch.randn(N, 3), "label": torch.tensor([0, 2, 1]), "present": np.array([True, False, True])}
    config = "model:\n  name: lpd\n  iterations: 10\n"
    sha = "ab" * 32
    path = write_reconstruction(tmp_path / "rec.h5", image, uncertainty=std, task=task, provenance={
        "method": "lpd", "checkpoint_sha256": sha, "config": config, "geometry": GEOMETRY,
        "source_file": tmp_path / "ct.h5", "seed": 7})
    rec = read_reconstruction(path)
    assert rec.image.dtype == np.complex64 and rec.image.shape == (N, 16, 16) and rec.num_slices == N
    np.testing.assert_array_equal(rec.image, image[:, 0].numpy())
    np.testing.assert_array_equal(rec.uncertainty, std[:, 0].numpy())
    assert sorted(rec.task) == ["label", "logits", "present"]
    np.testing.assert_array_equal(rec.task["logits"], task["logits"].numpy())
    assert rec.task["label"].dtype == np.int64 and rec.task["present"].dtype == np.bool_
    prov = rec.provenance
    from pirecon import __version__
    assert prov["pirecon_version"] == __version__ and prov["method"] == "lpd" and prov["seed"] == 7
    assert prov["checkpoint_sha256"] == sha and prov["config"] == config
    assert prov["geometry"] == GEOMETRY.to_dict() and prov["source_file"] == str(tmp_path / "ct.h5")
    assert re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+00:00$", prov["created"])
    assert validate(path)["task"] == ["label", "logits", "present"] and file_kind(path) == "reconstruction"
    with h5py.File(path) as f:
        assert f.attrs["pirecon_version"] == __version__
    # minimal: real image only
    rec = read_reconstruction(write_reconstruction(tmp_path / "min.h5", np.ones((2, 4, 4))))
    assert rec.image.dtype == np.float32 and rec.uncertainty is None and rec.task == {}
    assert set(rec.provenance) == {"pirecon_version", "created"}


# --------------------------------------------------------------------------------------------------
# storage: chunking, atomicity, writer checks
# --------------------------------------------------------------------------------------------------

def test_datasets_are_chunked_per_slice_for_streaming(tmp_path):
    paths = [ct_file(tmp_path / "ct.h5"), mri_file(tmp_path / "mri.h5"), recon_file(tmp_path / "rec.h5")]
    checked = 0
    for path in paths:
        with h5py.File(path) as f:
            def check(name, obj):
                nonlocal checked
                if isinstance(obj, h5py.Dataset) and obj.ndim >= 2:
                    assert obj.chunks == (1, *obj.shape[1:]), name
                    assert obj.compression == "gzip" and obj.shuffle, name
                    checked += 1
            f.visititems(check)
    assert checked == 11  # ct: 3, mri: 4, reconstruction: 4
    with h5py.File(paths[1]) as f:  # one slice, without reading the rest
        assert f["kspace"][1].shape == (4, 12, 10)


def test_writes_are_atomic(tmp_path, monkeypatch):
    target = tmp_path / "ct.h5"
    ct_file(target)
    before = target.read_bytes()
    real_put, calls = formats._put, []

    def failing_put(*args, **kwargs):
        calls.append(args[1])
        if len(calls) == 2:
            raise OSError("disk full")
        return real_put(*args, **kwargs)

    monkeypatch.setattr(formats, "_put", failing_put)
    with pytest.raises(OSError, match="disk full"):
        ct_file(target)  # overwriting fails midway: the old file stays whole
    assert target.read_bytes() == before
    calls.clear()
    with pytest.raises(OSError, match="disk full"):
        mri_file(tmp_path / "new.h5")  # a new file fails midway: nothing appears
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ct.h5"]  # no temporary files left


@pytest.mark.parametrize("call, message", [
    (lambda p: write_ct_raw(p, np.zeros((2, 8, 24)), GEOMETRY),
     "sinogram: expected shape (N, 8, 25) (N slices of geometry.sinogram_shape), found (2, 8, 24)"),
    (lambda p: write_ct_raw(p, np.zeros((2, 8, 25)), GEOMETRY, ground_truth=np.zeros((3, 16, 16))),
     "ground_truth: expected 2 slices (as sinogram), found 3"),
    (lambda p: write_ct_raw(p, np.full((2, 8, 25), np.nan), GEOMETRY),
     "sinogram: expected finite values, found NaN at index (0, 0, 0)"),
    (lambda p: write_ct_raw(p, np.zeros((2, 8, 25), dtype=np.complex64), GEOMETRY),
     "sinogram: expected real numbers (a floating or integer dtype), found dtype complex64"),
    (lambda p: write_ct_raw(p, np.zeros((2, 8, 25)), GEOMETRY, segmentation=np.full((2, 16, 16), 300)),
     "segmentation: expected class indices in 0..255, found 300 at index (0, 0, 0)"),
    (lambda p: write_ct_raw(p, np.zeros((2, 8, 25)), GEOMETRY, labels=[0, -1]),
     "labels: expected class indices >= 0, found -1 at index (1,)"),
    (lambda p: write_ct_raw(p, np.zeros((2, 8, 25)), GEOMETRY, attrs={"geometry": "x"}),
     "attrs['geometry']: expected a key other than the reserved"),
    (lambda p: write_ct_raw(p, np.zeros((2, 8, 25)), "parallel"),
     "geometry: expected a pirecon.ct Geometry or its to_dict(), found str"),
    (lambda p: write_mri_raw(p, np.zeros((2, 12, 10), dtype=np.float32)),
     "kspace: expected a complex dtype (complex64 or complex128), found dtype float32"),
    (lambda p: write_mri_raw(p, complex_normal((2, 4, 12, 10)), mask=np.ones(8)),
     "mask: expected a shape broadcastable to kspace and shared by the coils: (2 or 1, 1, 12 or 1, 10), "
     "or (10,), found (8,)"),
    (lambda p: write_mri_raw(p, complex_normal((2, 4, 12, 10)), coil_maps=complex_normal((2, 3, 12, 10))),
     "coil_maps: expected shape (N, 4, 12, 10) or (4, 12, 10)"),
    (lambda p: write_mri_raw(p, complex_normal((2, 4, 40)), trajectory=np.full((2, 40), 4.0),
                             attrs={"image_shape": [8, 8]}),
     "trajectory: expected radians per pixel in [-pi, pi], found 4.0 at index (0, 0)"),
    (lambda p: write_mri_raw(p, complex_normal((2, 12, 10)), attrs={"max": "high"}),
     "attrs['max']: expected a number (fastMRI's meaning), found 'high'"),
    (lambda p: write_reconstruction(p, np.zeros((2, 4, 4)), uncertainty=-np.ones((2, 4, 4))),
     "uncertainty: expected values >= 0, found -1.0 at index (0, 0, 0)"),
    (lambda p: write_reconstruction(p, np.zeros((2, 4, 4)), task={"logits": np.zeros((3, 2))}),
     "task['logits']: expected shape (2, ...) (one row per image slice), found (3, 2)"),
    (lambda p: write_reconstruction(p, np.zeros((2, 4, 4)), provenance={"checkpoint_sha256": "abc"}),
     "provenance['checkpoint_sha256']: expected 64 lower-case hex digits, found 'abc'"),
])
def test_writers_reject_bad_arguments(tmp_path, call, message):
    with pytest.raises(ValueError) as info:
        call(tmp_path / "out.h5")
    assert str(info.value).startswith(message)
    assert not (tmp_path / "out.h5").exists()


# --------------------------------------------------------------------------------------------------
# validation: deliberate breakages, each with its exact message
# --------------------------------------------------------------------------------------------------

def replace(f, name, data, **kwargs):
    attrs = dict(f[name].attrs)
    del f[name]
    ds = f.create_dataset(name, data=data, **kwargs)
    ds.attrs.update(attrs)


def set_in(name, index, value):
    def edit(f):
        data = f[name][()]
        data[index] = value
        f[name][...] = data
    return edit


def edit_json(attr, **changes):
    def edit(f):
        d = json.loads(f.attrs[attr])
        d.update(changes)
        f.attrs[attr] = json.dumps(d)
    return edit


BREAKAGES = {
    # name: (file maker, edit with h5py, expected "key: expected ..., found ...")
    "missing dataset": (ct_file, lambda f: f.__delitem__("sinogram"),
                        "sinogram: expected a float32 (N, 8, 25) dataset, found no such dataset"),
    "missing attribute": (ct_file, lambda f: f.attrs.__delitem__("geometry"),
                          "attrs/geometry: expected a required attribute, found no such attribute"),
    "wrong dtype": (ct_file, lambda f: replace(f, "sinogram", f["sinogram"][()].astype(np.float64)),
                    "sinogram: expected dtype float32, found dtype float64"),
    "wrong shape": (ct_file, lambda f: replace(f, "sinogram", f["sinogram"][0]),
                    "sinogram: expected shape (N, 8, 25) (geometry.sinogram_shape of attrs/geometry), found (8, 25)"),
    "NaN": (ct_file, set_in("sinogram", (2, 5, 7), np.nan),
            "sinogram: expected finite values, found NaN at index (2, 5, 7)"),
    "Inf": (mri_file, set_in("kspace", (1, 3, 4, 5), complex(np.inf, 0)),
            "kspace: expected finite values, found Inf at index (1, 3, 4, 5)"),
    "geometry inconsistent with sinogram": (
        ct_file, edit_json("geometry", num_detectors=24),
        "sinogram: expected shape (N, 8, 24) (geometry.sinogram_shape of attrs/geometry), found (3, 8, 25)"),
    "ground truth shape mismatch": (
        ct_file, lambda f: replace(f, "ground_truth", np.zeros((N, 16, 15), dtype=np.float32)),
        "ground_truth: expected shape (N, 16, 16) (geometry.image_shape of attrs/geometry), found (3, 16, 15)"),
    "wrong format_version": (ct_file, lambda f: f.attrs.__setitem__("format_version", 2),
                             "attrs/format_version: expected 1, found 2"),
    "unknown pirecon_format": (
        recon_file, lambda f: f.attrs.__setitem__("pirecon_format", "ct_rawx"),
        "attrs/pirecon_format: expected one of 'ct_raw', 'mri_raw', 'reconstruction', found 'ct_rawx'"),
    "corrupt geometry JSON": (
        ct_file, lambda f: f.attrs.__setitem__("geometry", '{"type": "parallel2d", "angles": [0.0,'),
        "attrs/geometry: expected a JSON object, found invalid JSON (Expecting value at character 38)"),
    "geometry breaks its schema": (ct_file, edit_json("geometry", pixel_size=-1.0),
                                   "attrs/geometry/pixel_size: expected a number > 0, found -1.0"),
    "noise breaks its schema": (ct_file, lambda f: f.attrs.__setitem__("noise", '{"type": "gaussian", '
                                                                                  '"format_version": 1}'),
                                "attrs/noise: expected one of the keys 'sigma', 'relative', found none of them"),
    "segmentation outside the label range": (
        ct_file, set_in("segmentation", (1, 2, 3), 7),
        "segmentation: expected values in 0..2 (segmentation/attrs/num_classes = 3), found 7 at index (1, 2, 3)"),
    "label without num_classes": (ct_file, lambda f: f["labels"].attrs.__delitem__("num_classes"),
                                  "labels/attrs/num_classes: expected a required attribute, found no such attribute"),
    "N mismatch between datasets": (ct_file, lambda f: replace(f, "labels", np.array([0, 1])),
                                    "labels: expected 3 slices (as sinogram), found 2"),
    "coil maps N mismatch": (mri_file, lambda f: replace(f, "coil_maps", f["coil_maps"][:2]),
                             "coil_maps: expected 3 slices (as kspace), found 2"),
    "fastMRI mask length": (lambda p: fastmri_file(p, test_file=True),
                            lambda f: replace(f, "mask", np.ones(8, dtype=bool)),
                            "mask: expected shape (10,) (the kspace width W), found (8,)"),
    "fastMRI real kspace": (fastmri_file, lambda f: replace(f, "kspace", np.zeros((N, 4, 12, 10), np.float32)),
                            "kspace: expected dtype complex64 or complex128, found dtype float32"),
    "pirecon MRI without header": (mri_file, lambda f: f.__delitem__("ismrmrd_header"),
                                   "ismrmrd_header: expected a dataset (ISMRMRD XML, read by fastMRI's loaders), "
                                   "found no such dataset"),
    "image_shape inconsistent with kspace": (mri_file, lambda f: f.attrs.__setitem__("image_shape", [12, 12]),
                                             "attrs/image_shape: expected [12, 10] (the kspace grid), found [12, 12]"),
    "negative uncertainty": (recon_file, set_in("uncertainty", (0, 1, 2), -0.5),
                             "uncertainty: expected values >= 0, found -0.5 at index (0, 1, 2)"),
    "task output N mismatch": (recon_file, lambda f: replace(f, "task/logits", np.zeros((2, 2), np.float32)),
                               "task/logits: expected 3 slices (as image), found 2"),
    "provenance without created": (recon_file, lambda f: f.attrs.__setitem__("provenance", '{"pirecon_version": "0"}'),
                                   "attrs/provenance/created: expected a required key, found no such key"),
}


@pytest.mark.parametrize("name", list(BREAKAGES))
def test_breakage_gives_exact_message(tmp_path, name):
    make, edit, message = BREAKAGES[name]
    path = tmp_path / "broken.h5"
    make(path)
    validate(path)  # valid before the edit
    with h5py.File(path, "a") as f:
        edit(f)
    with pytest.raises(SpecError) as info:
        validate(path)
    assert str(info.value) == f"{path}: {message}"
    key, rest = message.split(": expected ", 1)
    assert (info.value.path, info.value.key) == (str(path), key)
    assert f"{info.value.expected}, found {info.value.found}" == rest


def test_truncated_file(tmp_path):
    path = ct_file(tmp_path / "ct.h5")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    message = f"{path}: file: expected an HDF5 file, found a truncated file ({len(data) // 2} of {len(data)} bytes)"
    with pytest.raises(SpecError) as info:
        validate(path)
    assert str(info.value) == message
    with pytest.raises(SpecError, match=re.escape(message)):
        read_ct_raw(path)


def test_non_hdf5_and_missing_files(tmp_path):
    text = tmp_path / "notes.h5"
    text.write_text("not an HDF5 file\n" * 20)
    with pytest.raises(SpecError) as info:
        validate(text)
    assert str(info.value) == f"{text}: file: expected an HDF5 file, found no HDF5 signature (not an HDF5 file)"
    with pytest.raises(SpecError) as info:
        file_kind(tmp_path / "absent.h5")
    assert str(info.value) == f"{tmp_path / 'absent.h5'}: file: expected an HDF5 file, found no such file"
    empty = tmp_path / "empty.h5"
    h5py.File(empty, "w").close()
    with pytest.raises(SpecError) as info:
        file_kind(empty)
    assert info.value.key == "attrs/pirecon_format" and info.value.found == "no such attribute and no kspace dataset"


def test_corrupt_chunk(tmp_path):
    path = ct_file(tmp_path / "ct.h5")
    with h5py.File(path) as f:
        chunk = f["sinogram"].id.get_chunk_info(1)
    with open(path, "r+b") as fh:
        fh.seek(chunk.byte_offset)
        fh.write(b"\xff" * chunk.size)
    with pytest.raises(SpecError) as info:
        validate(path)
    assert info.value.key == "sinogram" and info.value.expected == "readable data"
    assert info.value.found.startswith("a read error in slices 0..2 (")


def test_readers_check_the_file(tmp_path):
    ct, mri = ct_file(tmp_path / "ct.h5"), mri_file(tmp_path / "mri.h5")
    with pytest.raises(SpecError) as info:
        read_ct_raw(mri)
    assert str(info.value) == f"{mri}: attrs/pirecon_format: expected 'ct_raw', found 'mri_raw'"
    with pytest.raises(SpecError) as info:
        read_mri_raw(ct)
    assert str(info.value) == f"{ct}: attrs/pirecon_format: expected 'mri_raw' or 'fastmri', found 'ct_raw'"
    with h5py.File(ct, "a") as f:
        set_in("ground_truth", (0, 1, 2), np.inf)(f)
    with pytest.raises(SpecError) as info:
        read_ct_raw(ct)
    assert str(info.value) == f"{ct}: ground_truth: expected finite values, found Inf at index (0, 1, 2)"


def test_spec_error_pickles():
    error = SpecError("a.h5", "sinogram", "float32", "float64")
    again = pickle.loads(pickle.dumps(error))
    assert str(again) == "a.h5: sinogram: expected float32, found float64" and again.key == "sinogram"
    assert isinstance(again, ValueError)
    assert isinstance(again, PireconUserError)


def test_validate_options_and_the_readers_door(tmp_path):
    path = ct_file(tmp_path / "ct.h5")
    seen = []
    summary = validate(path, progress=seen.append)
    assert sum(seen) == summary["value_bytes"] > 0
    assert summary["checked"] == ["ground_truth", "labels", "segmentation", "sinogram"]
    with pytest.raises(SpecError) as info:
        validate(path, expect=("mri_raw", "fastmri"))
    assert str(info.value) == f"{path}: attrs/pirecon_format: expected 'mri_raw' or 'fastmri', found 'ct_raw'"
    with h5py.File(path, "a") as f:
        set_in("sinogram", (1, 2, 3), np.nan)(f)
    assert validate(path, values=False)["num_slices"] == N  # attributes, dtypes and shapes only
    with checked_file(path) as (f, summary):
        sinogram = f["sinogram"][()]
        with pytest.raises(SpecError) as info:
            check_loaded(f, path, {"sinogram": sinogram})
    assert str(info.value) == f"{path}: sinogram: expected finite values, found NaN at index (1, 2, 3)"


def test_links_that_lead_nowhere(tmp_path):
    path = mri_file(tmp_path / "mri.h5")
    with h5py.File(path, "a") as f:
        del f["coil_maps"]
        f["coil_maps"] = h5py.SoftLink("/nowhere")
    for call in (validate, read_mri_raw):
        with pytest.raises(SpecError) as info:
            call(path)
        assert (info.value.key, info.value.expected) == ("coil_maps", "a dataset")
        assert info.value.found.startswith("a link that cannot be followed (")


def test_main_validate_prints_one_line(tmp_path, capsys):
    good = ct_file(tmp_path / "good.h5")
    assert main_validate(str(good)) == 0
    out, err = capsys.readouterr()
    assert out == f"OK {good}: ct_raw, 3 slices\n" and err == ""
    fastmri = fastmri_file(tmp_path / "fm.h5")
    assert main_validate(str(fastmri)) == 0
    assert capsys.readouterr().out == f"OK {fastmri}: fastmri, 3 slices\n"

    bad = tmp_path / "bad.h5"
    shutil.copy(good, bad)
    with h5py.File(bad, "a") as f:
        f.attrs["format_version"] = 7
    junk = tmp_path / "junk.h5"
    junk.write_bytes(good.read_bytes()[:700])
    for path, line in [(bad, f"{bad}: attrs/format_version: expected 1, found 7"),
                       (junk, f"{junk}: file: expected an HDF5 file, found a truncated file "
                              f"(700 of {good.stat().st_size} bytes)")]:
        assert main_validate(str(path)) == 2
        out, err = capsys.readouterr()
        assert out == "" and err == line + "\n"


# --------------------------------------------------------------------------------------------------
# the schemas themselves
# --------------------------------------------------------------------------------------------------

def schema(name):
    return json.loads((SPECS / f"{name}.schema.json").read_text())


def test_schemas_are_valid_and_their_references_resolve():
    from referencing import Registry, Resource

    names = ["ct_geometry", "noise_model", "ct_raw", "mri_raw", "reconstruction"]
    resources = [(schema(n)["$id"], Resource.from_contents(schema(n))) for n in names]
    registry = Registry().with_resources(resources)
    for name in names:
        jsonschema.Draft202012Validator.check_schema(schema(name))
        resolver = registry.resolver(base_uri=schema(name)["$id"])
        for prop in schema(name).get("properties", {}).values():
            if "contentSchema" in prop:
                target = resolver.lookup(prop["contentSchema"]["$ref"]).contents
                assert target.get("type") == "object"


def test_schemas_accept_written_attributes_and_reject_broken_ones(tmp_path):
    docs = {}
    for name, make in [("ct_raw", ct_file), ("mri_raw", mri_file), ("reconstruction", recon_file)]:
        with h5py.File(make(tmp_path / f"{name}.h5")) as f:
            docs[name] = {k: decode_attr(v) for k, v in f.attrs.items()}
        jsonschema.validate(docs[name], schema(name))
    for name, change in [("ct_raw", {"format_version": 2}), ("ct_raw", {"geometry": 3}),
                         ("ct_raw", {"extra": {"nested": 1}}), ("mri_raw", {"image_shape": [0, 4]}),
                         ("mri_raw", {"max": "high"}), ("reconstruction", {"pirecon_format": "ct_raw"})]:
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate({**docs[name], **change}, schema(name))
    provenance = json.loads(docs["reconstruction"]["provenance"])
    sub = {"$ref": "#/$defs/provenance", "$defs": schema("reconstruction")["$defs"]}
    jsonschema.validate(provenance, sub)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({**provenance, "checkpoint_sha256": "XYZ"}, sub)


def test_a_missing_schema_is_not_blamed_on_the_file(tmp_path, monkeypatch):
    import importlib

    validate_module = importlib.import_module("pirecon.data.validate")  # pirecon.data.validate is also the function
    path = ct_file(tmp_path / "ct.h5")
    monkeypatch.setattr(validate_module, "_spec_dirs", lambda: [tmp_path / "nowhere"])
    validate_module.load_schema.cache_clear()
    try:
        with pytest.raises(FileNotFoundError, match="^ct_raw.schema.json: expected in one of"):
            validate(path)
    finally:
        validate_module.load_schema.cache_clear()


def test_names_from_the_file_cannot_break_the_line(tmp_path):
    path = ct_file(tmp_path / "ct.h5")
    with h5py.File(path, "a") as f:
        f.attrs["two\nlines"] = np.zeros((2, 2))
    with pytest.raises(SpecError) as info:
        validate(path)
    assert str(info.value) == (f"{path}: attrs/two\\nlines: expected a string or a number or a boolean, "
                               "found array [[0.0, 0.0], [0.0, 0.0]]")
