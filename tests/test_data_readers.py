"""Readers for LoDoPaB-CT, DICOM, NIfTI and image directories, on small files written here in each format's layout."""

from __future__ import annotations

import contextlib
import math
import pickle
import random

import h5py
import numpy as np
import pytest
import torch

from pirecon.data.readers import (
    LODOPAB_MU_MAX,
    LoDoPaBFiles,
    hu_to_attenuation,
    lodopab_geometry,
    read_dicom_series,
    read_image_directory,
    read_nifti,
)
from pirecon.errors import PireconUserError

nib = pytest.importorskip("nibabel")
pydicom = pytest.importorskip("pydicom")
Image = pytest.importorskip("PIL.Image")


@contextlib.contextmanager
def raises_exactly(exc_type, message):
    with pytest.raises(exc_type) as info:
        yield info
    assert str(info.value) == message


# --------------------------------------------------------------------------- LoDoPaB-CT


def write_lodopab(root, part, counts, *, obs_shape=(1000, 513), gt_shape=(362, 362), ext="hdf5", seed=0):
    """Chunk files ``observation_{part}_NNN.{ext}`` / ``ground_truth_{part}_NNN.{ext}`` with dataset ``data``."""
    rng = np.random.default_rng(seed)
    obs_all, gt_all = [], []
    for k, n in enumerate(counts):
        obs = rng.random((n, *obs_shape), dtype=np.float32)
        gt = rng.random((n, *gt_shape), dtype=np.float32)
        with h5py.File(root / f"observation_{part}_{k:03d}.{ext}", "w") as f:
            f.create_dataset("data", data=obs)
        with h5py.File(root / f"ground_truth_{part}_{k:03d}.{ext}", "w") as f:
            f.create_dataset("data", data=gt)
        obs_all.append(obs)
        gt_all.append(gt)
    return np.concatenate(obs_all), np.concatenate(gt_all)


@pytest.fixture(scope="module")
def lodopab_root(tmp_path_factory):
    """Real per-sample shapes, 3 chunks of 2, 2 and 1 samples (the last shorter, as in the dataset)."""
    root = tmp_path_factory.mktemp("lodopab")
    obs, gt = write_lodopab(root, "train", [2, 2, 1])
    write_lodopab(root, "test", [1], obs_shape=(3, 4), gt_shape=(2, 2), seed=1)  # another part, ignored
    return root, obs, gt


def test_lodopab_geometry_facts():
    g = lodopab_geometry()
    assert g.sinogram_shape == (1000, 513)
    assert g.image_shape == (362, 362)
    assert g.pixel_size == pytest.approx(260 / 362)
    assert g.image_extent == pytest.approx((260.0, 260.0))
    diagonal = 260 * math.sqrt(2)
    assert g.num_detectors * g.detector_spacing == pytest.approx(diagonal)
    assert g.detector_spacing == pytest.approx(0.716755, abs=1e-6)
    angles = np.asarray(g.angles)
    assert angles[0] == pytest.approx(math.pi / 2000)
    assert angles[-1] == pytest.approx(math.pi - math.pi / 2000)
    np.testing.assert_allclose(np.diff(angles), math.pi / 1000, rtol=1e-12)


def test_lodopab_geometry_equals_divals_odl_geometry():
    odl = pytest.importorskip("odl")
    from odl.applications import tomo

    space = odl.uniform_discr([-0.13, -0.13], [0.13, 0.13], (362, 362), dtype="float32")
    ref = tomo.parallel_beam_geometry(space, num_angles=1000, det_shape=(513,))
    g = lodopab_geometry()
    np.testing.assert_allclose(np.asarray(g.angles), ref.angles, rtol=0, atol=1e-12)
    det = ref.det_partition
    assert 1000 * det.min_pt[0] == pytest.approx(-g.num_detectors * g.detector_spacing / 2)
    assert 1000 * det.max_pt[0] == pytest.approx(g.num_detectors * g.detector_spacing / 2)
    assert 1000 * det.cell_sides[0] == pytest.approx(g.detector_spacing)


def test_lodopab_orientation_and_mm_units_match_odl_projection(tmp_path):
    """A LoDoPaB-style file simulated with ODL in metres (as DIVal) reads back consistent with pirecon's operator."""
    odl = pytest.importorskip("odl")
    pytest.importorskip("astra")
    from odl.applications import tomo

    from pirecon.ct import ParallelBeam2D, RayTransform

    n, half, n_angles, n_det = 40, 0.013, 30, 61  # a small analogue of LoDoPaB's construction
    space = odl.uniform_discr([-half, -half], [half, half], (n, n), dtype="float32")
    ref = tomo.RayTransform(space, tomo.parallel_beam_geometry(space, num_angles=n_angles, det_shape=(n_det,)),
                            impl="astra_cpu")
    stored = np.zeros((n, n), np.float32)  # ODL's [ix, iy] array, asymmetric
    stored[5:12, 20:35] = 1.0
    stored[30:33, 3:8] = 0.5
    obs = ref(stored).asarray()[None].astype(np.float32)
    with h5py.File(tmp_path / "observation_validation_000.hdf5", "w") as f:
        f["data"] = obs
    with h5py.File(tmp_path / "ground_truth_validation_000.hdf5", "w") as f:
        f["data"] = stored[None]

    rho = 1000 * half * math.sqrt(2)
    angles = (np.arange(n_angles) + 0.5) * math.pi / n_angles
    geometry = ParallelBeam2D((n, n), pixel_size=2000 * half / n, angles=angles,
                              num_detectors=n_det, detector_spacing=2 * rho / n_det)
    data = LoDoPaBFiles(tmp_path, "validation", units="mm", observation_shape=None, ground_truth_shape=None)
    y_mm, image = data[0]
    sino = RayTransform(geometry, backend="astra")(torch.from_numpy(image)).numpy()
    assert np.linalg.norm(sino - y_mm) / np.linalg.norm(y_mm) < 1e-4
    stored_back = LoDoPaBFiles(tmp_path, "validation", orientation="stored",
                               observation_shape=None, ground_truth_shape=None)[0][1]
    np.testing.assert_array_equal(stored_back, stored)
    wrong = RayTransform(geometry, backend="astra")(torch.from_numpy(stored_back)).numpy()
    assert np.linalg.norm(wrong - y_mm) / np.linalg.norm(y_mm) > 0.5


def test_lodopab_files_reads_samples_in_order(lodopab_root):
    root, obs, gt = lodopab_root
    data = LoDoPaBFiles(root, "train")
    assert len(data) == 5
    assert [(o.name, g.name) for o, g in data.files] == [
        (f"observation_train_{k:03d}.hdf5", f"ground_truth_train_{k:03d}.hdf5") for k in range(3)]
    assert data._handles == {}  # nothing opened before the first access
    for i in range(5):
        y, x = data[i]
        assert y.dtype == np.float32 and x.dtype == np.float32
        assert y.shape == (1000, 513) and x.shape == (362, 362)
        np.testing.assert_array_equal(y, obs[i])
        np.testing.assert_array_equal(x, np.rot90(gt[i]))
    np.testing.assert_array_equal(data[-1][0], obs[4])
    stored = LoDoPaBFiles(root, "train", orientation="stored")
    np.testing.assert_array_equal(stored[3][1], gt[3])
    with raises_exactly(IndexError, "index: expected -5 <= index < 5 for LoDoPaB part 'train', found 5"):
        data[5]
    clone = pickle.loads(pickle.dumps(data))  # open h5py files are dropped, not pickled
    np.testing.assert_array_equal(clone[2][0], obs[2])
    data.close()
    clone.close()


def test_lodopab_units(lodopab_root):
    root, obs, gt = lodopab_root
    y, x = LoDoPaBFiles(root, "train", units="mm")[1]
    np.testing.assert_array_equal(y, obs[1] * np.float32(1000))
    np.testing.assert_array_equal(x, np.rot90(gt[1]))
    y, x = LoDoPaBFiles(root, "train", units="attenuation")[1]
    np.testing.assert_array_equal(y, obs[1] * np.float32(LODOPAB_MU_MAX))
    np.testing.assert_array_equal(x, np.rot90(gt[1]) * np.float32(LODOPAB_MU_MAX / 1000))
    assert LODOPAB_MU_MAX == pytest.approx(81.35858)


def test_lodopab_files_in_dataloader_workers(lodopab_root):
    root, obs, gt = lodopab_root
    data = LoDoPaBFiles(root, "train")
    data[0]  # open a file in the parent first: forked workers must not reuse its handle
    loader = torch.utils.data.DataLoader(data, batch_size=2, num_workers=2, shuffle=False)
    ys, xs = zip(*loader)
    assert ys[0].shape == (2, 1000, 513) and xs[0].shape == (2, 362, 362)
    np.testing.assert_array_equal(torch.cat(ys).numpy(), obs)
    np.testing.assert_array_equal(torch.cat(xs).numpy(), np.rot90(gt, axes=(1, 2)))
    data.close()


def test_lodopab_h5_suffix_and_any_shape(tmp_path):
    obs, gt = write_lodopab(tmp_path, "test", [3, 1], obs_shape=(6, 5), gt_shape=(4, 4), ext="h5")
    data = LoDoPaBFiles(tmp_path, "test", observation_shape=None, ground_truth_shape=None)
    assert len(data) == 4 and data.observation_shape == (6, 5) and data.ground_truth_shape == (4, 4)
    np.testing.assert_array_equal(data[3][0], obs[3])


def test_lodopab_errors(tmp_path):
    missing = tmp_path / "nope"
    with raises_exactly(FileNotFoundError, f"LoDoPaB root {missing}: expected a directory, found nothing"):
        LoDoPaBFiles(missing)
    (tmp_path / "afile").write_text("x")
    with raises_exactly(FileNotFoundError, f"LoDoPaB root {tmp_path / 'afile'}: expected a directory, found a file"):
        LoDoPaBFiles(tmp_path / "afile")
    with raises_exactly(ValueError, "part: expected one of 'train', 'validation', 'test', found 'val'"):
        LoDoPaBFiles(tmp_path, "val")
    with raises_exactly(FileNotFoundError, f"LoDoPaB root {tmp_path}: expected files observation_train_NNN.hdf5 "
                                           "and ground_truth_train_NNN.hdf5, found none"):
        LoDoPaBFiles(tmp_path)

    small = dict(obs_shape=(3, 4), gt_shape=(2, 2))
    shapes = dict(observation_shape=(3, 4), ground_truth_shape=(2, 2))

    d = tmp_path / "unpaired"
    d.mkdir()
    write_lodopab(d, "train", [2, 1], **small)
    (d / "ground_truth_train_001.hdf5").unlink()
    with raises_exactly(FileNotFoundError, f"{d / 'observation_train_001.hdf5'}: expected a matching "
                                           f"ground_truth_train_001.hdf5 in {d}, found none"):
        LoDoPaBFiles(d, **shapes)

    d = tmp_path / "gap"
    d.mkdir()
    write_lodopab(d, "train", [2, 2, 1], **small)
    (d / "ground_truth_train_001.hdf5").unlink()
    (d / "observation_train_001.hdf5").unlink()
    with raises_exactly(FileNotFoundError, f"LoDoPaB root {d}: expected chunks 000 to 002 of part 'train', "
                                           "found no chunk 001"):
        LoDoPaBFiles(d, **shapes)

    d = tmp_path / "counts"
    d.mkdir()
    write_lodopab(d, "train", [2], **small)
    with h5py.File(d / "ground_truth_train_000.hdf5", "w") as f:
        f["data"] = np.zeros((3, 2, 2), np.float32)
    with raises_exactly(ValueError, f"{d / 'ground_truth_train_000.hdf5'}['data']: expected 2 samples as in "
                                    "observation_train_000.hdf5, found 3"):
        LoDoPaBFiles(d, **shapes)

    d = tmp_path / "shape"
    d.mkdir()
    write_lodopab(d, "train", [1], obs_shape=(1000, 512), gt_shape=(362, 362))
    with raises_exactly(ValueError, f"{d / 'observation_train_000.hdf5'}['data']: expected shape (n, 1000, 513), "
                                    "found (1, 1000, 512)"):
        LoDoPaBFiles(d)

    d = tmp_path / "key"
    d.mkdir()
    write_lodopab(d, "train", [1], **small)
    with h5py.File(d / "ground_truth_train_000.hdf5", "w") as f:
        f["images"] = np.zeros((1, 2, 2), np.float32)
    with raises_exactly(ValueError, f"{d / 'ground_truth_train_000.hdf5'}: expected a dataset 'data', "
                                    "found keys ['images']"):
        LoDoPaBFiles(d, **shapes)

    d = tmp_path / "dtype"
    d.mkdir()
    write_lodopab(d, "train", [1], **small)
    with h5py.File(d / "observation_train_000.hdf5", "w") as f:
        f["data"] = np.zeros((1, 3, 4), np.int16)
    with raises_exactly(ValueError, f"{d / 'observation_train_000.hdf5'}['data']: expected a floating dtype "
                                    "(float32), found int16"):
        LoDoPaBFiles(d, **shapes)

    d = tmp_path / "twice"
    d.mkdir()
    write_lodopab(d, "train", [1], **small)
    write_lodopab(d, "train", [1], ext="h5", **small)
    with raises_exactly(ValueError, f"LoDoPaB root {d}: expected one file for ground_truth chunk 000 of part "
                                    "'train', found ground_truth_train_000.h5 and ground_truth_train_000.hdf5"):
        LoDoPaBFiles(d, **shapes)

    d = tmp_path / "corrupt"
    d.mkdir()
    write_lodopab(d, "train", [1], **small)
    (d / "observation_train_000.hdf5").write_bytes(b"not hdf5")
    with pytest.raises(ValueError) as info:
        LoDoPaBFiles(d, **shapes)
    assert str(info.value).startswith(f"{d / 'observation_train_000.hdf5'}: expected an HDF5 file, could not open it (")


# --------------------------------------------------------------------------- DICOM

CT_ORIENTATION = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)


def write_dicom(path, pixels, *, series_uid, position=None, orientation=CT_ORIENTATION, spacing=(0.7, 0.8),
                slope=1.0, intercept=-1024.0, instance=1, modality="CT", rescale=True, thickness=2.5):
    """One single-frame image, CT Image Storage (or MR), explicit VR little endian, with the DICM preamble."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, MRImageStorage, generate_uid

    sop_class = CTImageStorage if modality == "CT" else MRImageStorage
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID = "1.2.826.0.1.3680043.8.498.1"
    ds.SeriesInstanceUID = series_uid
    ds.Modality = modality
    ds.PatientName = "Phantom^Test"
    ds.PatientID = "0"
    ds.SeriesDescription = "test series"
    ds.KVP = 120
    ds.InstanceNumber = instance
    if position is not None:
        ds.ImagePositionPatient = list(position)
        ds.ImageOrientationPatient = list(orientation)
    ds.PixelSpacing = list(spacing)
    ds.SliceThickness = thickness
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 1
    if rescale:
        ds.RescaleSlope = slope
        ds.RescaleIntercept = intercept
        ds.RescaleType = "HU"
    ds.PixelData = np.ascontiguousarray(pixels, dtype="<i2").tobytes()
    try:
        ds.save_as(path, enforce_file_format=True)  # pydicom >= 3: preamble, DICM prefix, group 2 meta
    except TypeError:
        ds.is_little_endian, ds.is_implicit_VR = True, False
        ds.save_as(path, write_like_original=False)  # pydicom 2.x


SERIES = "1.2.826.0.1.3680043.8.498.2"
STORED = np.array(  # (4 slices, 3 rows, 5 columns), signed 16-bit stored values
    [[[-1000, 0, 24, 1024, 2024], [10, 20, 30, 40, 50], [-3000, -1024, 500, 0, 7]],
     [[1, 2, 3, 4, 5], [6, 7, 8, 9, 10], [11, 12, 13, 14, 15]],
     [[-12, 0, 12, 512, -512], [100, 200, 300, 400, 500], [0, 0, 0, 0, 1]],
     [[1024, 1024, 1024, 24, 24], [5, 4, 3, 2, 1], [30000, -30000, 0, 1, -1]]], dtype=np.int16)
SLOPES = [1.0, 2.0, 1.0, 0.5]
INTERCEPTS = [-1024.0, -1000.0, -1024.0, 0.0]
Z = [-12.5, -10.0, -7.5, -5.0]


def expected_hu():
    return np.stack([STORED[k] * SLOPES[k] + INTERCEPTS[k] for k in range(4)]).astype(np.float32)


@pytest.fixture
def ct_series(tmp_path):
    """Four axial slices in shuffled files (names without suffix), InstanceNumber reversed against position."""
    d = tmp_path / "series"
    d.mkdir()
    names = [f"IM{k:04d}" for k in random.Random(3).sample(range(100), 4)]
    random.Random(4).shuffle(names)
    for k in range(4):
        write_dicom(d / names[k], STORED[k], series_uid=SERIES, position=(-40.0, -30.0, Z[k]),
                    slope=SLOPES[k], intercept=INTERCEPTS[k], instance=4 - k)
    (d / "README.txt").write_text("not DICOM")
    return d, names


def test_dicom_series_hu_sorted_by_position(ct_series):
    d, names = ct_series
    volume, spacing, meta = read_dicom_series(d)
    assert volume.dtype == np.float32 and volume.shape == (4, 3, 5)
    np.testing.assert_array_equal(volume, expected_hu())
    assert volume[0, 0, 0] == -2024 and volume[1, 0, 0] == -998 and volume[3, 2, 0] == 15000
    assert spacing == pytest.approx((2.5, 0.7, 0.8))
    assert [p.name for p in meta["files"]] == names
    assert meta["sorted_by"] == "ImagePositionPatient"
    assert meta["slice_positions"] == pytest.approx(Z)
    assert meta["units"] == "HU" and meta["modality"] == "CT" and meta["series_instance_uid"] == SERIES
    assert meta["rescale_slope"] == SLOPES and meta["rescale_intercept"] == INTERCEPTS
    assert "PatientName" not in meta and "patient_name" not in meta
    # index (d, h, w) -> LPS mm: columns along x by 0.8, rows along y by 0.7, slices along z by 2.5
    np.testing.assert_allclose(meta["affine"] @ [3, 2, 4, 1], [-40 + 4 * 0.8, -30 + 2 * 0.7, -5.0, 1])
    # a list of files gives the same
    volume2, spacing2, _ = read_dicom_series([d / n for n in reversed(names)])
    np.testing.assert_array_equal(volume2, volume)
    assert spacing2 == spacing


def test_dicom_attenuation_exact(ct_series):
    d, _ = ct_series
    hu = expected_hu()
    mu, spacing, meta = read_dicom_series(d, attenuation=True)
    assert meta["units"] == "1/mm" and meta["mu_water"] == 0.0192
    expected = np.maximum(0.0192 * (1 + hu.astype(np.float64) / 1000), 0).astype(np.float32)
    np.testing.assert_array_equal(mu, expected)
    np.testing.assert_array_equal(mu, hu_to_attenuation(hu))
    # HU -1000 -> 0 (air), 0 -> mu_water, 1000 -> 2 mu_water; below -1000 clipped at 0
    assert mu[0, 0, 2] == 0.0 and hu[0, 0, 2] == -1000
    assert mu[3, 2, 2] == np.float32(0.0192) and hu[3, 2, 2] == 0
    assert mu[0, 0, 4] == np.float32(0.0384) and hu[0, 0, 4] == 1000
    assert mu[0, 0, 0] == 0.0 and hu[0, 0, 0] == -2024
    mu2, _, _ = read_dicom_series(d, attenuation=True, mu_water=0.02)
    assert mu2[0, 0, 4] == np.float32(0.04)


def test_dicom_sorted_along_the_slice_normal(tmp_path):
    """Coronal slices: z is constant, the order comes from the position projected on row x column cosines."""
    orientation = (1.0, 0.0, 0.0, 0.0, 0.0, -1.0)  # normal (0, 1, 0)
    ys = [4.0, -2.0, 1.0]
    for k, y in enumerate(ys):
        write_dicom(tmp_path / f"s{k}.dcm", np.full((2, 3), k, np.int16), series_uid=SERIES,
                    position=(0.0, y, 50.0), orientation=orientation, instance=k + 1, intercept=0.0)
    volume, spacing, meta = read_dicom_series(tmp_path)
    assert volume[:, 0, 0].tolist() == [1.0, 2.0, 0.0]
    assert spacing == pytest.approx((3.0, 0.7, 0.8))
    assert meta["slice_positions"] == pytest.approx([-2.0, 1.0, 4.0])


def test_dicom_instance_number_fallback_and_non_ct(tmp_path):
    for k, n in enumerate([3, 1, 2]):
        write_dicom(tmp_path / f"mr{k}.dcm", np.full((2, 2), 10 * n, np.int16), series_uid=SERIES,
                    modality="MR", rescale=False, instance=n, thickness=4.0)
    volume, spacing, meta = read_dicom_series(tmp_path)
    assert volume[:, 0, 0].tolist() == [10.0, 20.0, 30.0]
    assert spacing == pytest.approx((4.0, 0.7, 0.8))
    assert meta["sorted_by"] == "InstanceNumber" and meta["units"] == "stored" and meta["affine"] is None
    with raises_exactly(ValueError, f"{tmp_path / 'mr1.dcm'}: attenuation=True needs a CT image in Hounsfield "
                                    "units (Modality CT), found Modality 'MR'"):
        read_dicom_series(tmp_path, attenuation=True)


def test_dicom_uneven_spacing_warns(tmp_path):
    for k, z in enumerate([0.0, 1.0, 3.0]):
        write_dicom(tmp_path / f"s{k}.dcm", np.zeros((2, 2), np.int16), series_uid=SERIES, position=(0, 0, z))
    with pytest.warns(UserWarning, match="not equispaced"):
        _, spacing, _ = read_dicom_series(tmp_path)
    assert spacing[0] == pytest.approx(1.5)


def test_dicom_errors(tmp_path):
    missing = tmp_path / "none"
    with raises_exactly(FileNotFoundError, f"DICOM series {missing}: expected a directory, found nothing "
                                           "(pass a list to read single files)"):
        read_dicom_series(missing)
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("hello")
    with raises_exactly(FileNotFoundError, f"DICOM series {empty}: expected DICOM files, found none"):
        read_dicom_series(empty)
    with raises_exactly(FileNotFoundError, "DICOM series: expected DICOM files, found an empty list"):
        read_dicom_series([])
    with raises_exactly(ValueError, "mu_water: expected a positive number, found -1"):
        read_dicom_series(empty, mu_water=-1)

    mixed = tmp_path / "mixed"
    mixed.mkdir()
    write_dicom(mixed / "a.dcm", np.zeros((2, 2), np.int16), series_uid="1.2.3", position=(0, 0, 0))
    write_dicom(mixed / "b.dcm", np.zeros((2, 2), np.int16), series_uid="1.2.3", position=(0, 0, 1))
    write_dicom(mixed / "c.dcm", np.zeros((2, 2), np.int16), series_uid="1.2.4", position=(0, 0, 2))
    with raises_exactly(ValueError, f"DICOM series {mixed}: expected files of one series (one SeriesInstanceUID), "
                                    "found 2: 1.2.3 (2 files, e.g. a.dcm); 1.2.4 (1 file, e.g. c.dcm)"):
        read_dicom_series(mixed)

    shapes = tmp_path / "shapes"
    shapes.mkdir()
    write_dicom(shapes / "a.dcm", np.zeros((2, 2), np.int16), series_uid=SERIES, position=(0, 0, 0))
    write_dicom(shapes / "b.dcm", np.zeros((2, 3), np.int16), series_uid=SERIES, position=(0, 0, 1))
    with raises_exactly(ValueError, f"{shapes / 'b.dcm'}: expected (Rows, Columns) (2, 2) as in a.dcm, found (2, 3)"):
        read_dicom_series(shapes)

    norescale = tmp_path / "norescale"
    norescale.mkdir()
    write_dicom(norescale / "a.dcm", np.zeros((2, 2), np.int16), series_uid=SERIES, position=(0, 0, 0), rescale=False)
    with raises_exactly(ValueError, f"{norescale / 'a.dcm'}: expected tag RescaleSlope (0028,1053) for a CT image "
                                    "(Modality CT), found none"):
        read_dicom_series(norescale)

    same = tmp_path / "same"
    same.mkdir()
    write_dicom(same / "a.dcm", np.zeros((2, 2), np.int16), series_uid=SERIES, position=(0, 0, 5))
    write_dicom(same / "b.dcm", np.zeros((2, 2), np.int16), series_uid=SERIES, position=(0, 0, 5))
    with raises_exactly(ValueError, f"DICOM series {same}: expected one slice per position, found a.dcm and b.dcm "
                                    "at the same ImagePositionPatient (5)"):
        read_dicom_series(same)

    spacing = tmp_path / "spacing"
    spacing.mkdir()
    write_dicom(spacing / "a.dcm", np.zeros((2, 2), np.int16), series_uid=SERIES, position=(0, 0, 0))
    write_dicom(spacing / "b.dcm", np.zeros((2, 2), np.int16), series_uid=SERIES, position=(0, 0, 1),
                spacing=(0.5, 0.5))
    with raises_exactly(ValueError, f"{spacing / 'b.dcm'}: expected PixelSpacing (0.7, 0.8) as in a.dcm, "
                                    "found (0.5, 0.5)"):
        read_dicom_series(spacing)

    bad = tmp_path / "notes.dcm"
    bad.write_text("not a DICOM file at all")
    with pytest.raises(PireconUserError) as info:  # a user error: one line on the command line
        read_dicom_series([bad])
    assert str(info.value).startswith(f"{bad}: expected a DICOM file, could not read it (")

    nopixels = tmp_path / "nopixels"
    nopixels.mkdir()
    write_dicom(nopixels / "a.dcm", np.zeros((2, 2), np.int16), series_uid=SERIES, position=(0, 0, 0))
    ds = pydicom.dcmread(nopixels / "a.dcm")
    del ds.PixelData
    ds.save_as(nopixels / "a.dcm")
    with raises_exactly(ValueError, f"DICOM series {nopixels}: expected DICOM images with pixel data, found none "
                                    "(1 DICOM files without pixel data)"):
        read_dicom_series(nopixels)


# --------------------------------------------------------------------------- NIfTI


def test_nifti_reoriented_to_pirecon_axes(tmp_path):
    """Voxel axes i -> +A (anterior), j -> +S, k -> -R (patient left); spacings 0.8, 2.5, 1.5 mm."""
    shape = (4, 3, 5)
    data = np.arange(np.prod(shape), dtype=np.float32).reshape(shape)
    affine = np.array([[0.0, 0.0, -1.5, 30.0],
                       [0.8, 0.0, 0.0, 12.0],
                       [0.0, 2.5, 0.0, -7.0],
                       [0.0, 0.0, 0.0, 1.0]])
    path = tmp_path / "vol.nii.gz"
    nib.save(nib.Nifti1Image(data, affine), path)
    volume, spacing, out_affine = read_nifti(path)
    assert volume.dtype == np.float32 and volume.shape == (3, 4, 5)  # (S: j, P/A: i, L/R: k)
    assert spacing == pytest.approx((2.5, 0.8, 1.5))
    # directions of (d, h, w) in RAS+: +S, +P (-A), +L (-R)
    np.testing.assert_allclose(out_affine[:3, :3], [[0, 0, -1.5], [0, -0.8, 0], [2.5, 0, 0]], atol=1e-12)
    # every voxel keeps its world position
    for d, h, w in np.ndindex(volume.shape):
        i, j, k = np.unravel_index(int(volume[d, h, w]), shape)
        np.testing.assert_allclose(out_affine @ [d, h, w, 1], affine @ [i, j, k, 1], atol=1e-9)
    # j (superior) becomes the slices, i (anterior) the rows flipped to run posterior, k (left) the columns
    np.testing.assert_array_equal(volume, data.transpose(1, 0, 2)[:, ::-1, :])


def test_nifti_equals_dicom_series(tmp_path, ct_series):
    """A dcm2niix-style NIfTI (LPS voxel grid, RAS affine) of the series reads back identical."""
    d, _ = ct_series
    hu, spacing, meta = read_dicom_series(d)
    dz, dy, dx = spacing
    lps = np.array([[dx, 0, 0, -40.0], [0, dy, 0, -30.0], [0, 0, dz, Z[0]], [0, 0, 0, 1]])
    affine = np.diag([-1.0, -1.0, 1.0, 1.0]) @ lps
    path = tmp_path / "series.nii"
    nib.save(nib.Nifti1Image(hu.transpose(2, 1, 0), affine), path)
    volume, spacing_nii, out_affine = read_nifti(path)
    np.testing.assert_array_equal(volume, hu)
    assert spacing_nii == pytest.approx(spacing)
    np.testing.assert_allclose(np.diag([-1.0, -1.0, 1.0, 1.0]) @ out_affine, meta["affine"], atol=1e-9)


def test_nifti_2d_units_and_errors(tmp_path):
    img = nib.Nifti1Image(np.arange(6, dtype=np.int16).reshape(3, 2), np.diag([0.5, 0.5, 1.0, 1.0]))
    img.header.set_xyzt_units("meter")
    nib.save(img, tmp_path / "flat.nii")
    volume, spacing, _ = read_nifti(tmp_path / "flat.nii")
    assert volume.shape == (1, 2, 3)
    assert spacing == pytest.approx((1000.0, 500.0, 500.0))
    # RAS (i, j) -> rows along -j, columns along -i
    np.testing.assert_array_equal(volume[0], np.arange(6).reshape(3, 2)[::-1, ::-1].T)

    nib.save(nib.Nifti1Image(np.zeros((2, 2, 2, 3), np.float32), np.eye(4)), tmp_path / "time.nii")
    with raises_exactly(ValueError, f"{tmp_path / 'time.nii'}: expected a 2D or 3D image (trailing dimensions of "
                                    "size 1 allowed), found shape (2, 2, 2, 3)"):
        read_nifti(tmp_path / "time.nii")
    nib.save(nib.Nifti1Image(np.ones((2, 2, 2, 1), np.float32), np.eye(4)), tmp_path / "single.nii")
    assert read_nifti(tmp_path / "single.nii")[0].shape == (2, 2, 2)
    with raises_exactly(FileNotFoundError, f"{tmp_path / 'gone.nii'}: expected a NIfTI file, found nothing"):
        read_nifti(tmp_path / "gone.nii")
    (tmp_path / "junk.nii").write_bytes(b"junk" * 10)
    with pytest.raises(PireconUserError) as info:
        read_nifti(tmp_path / "junk.nii")
    assert str(info.value).startswith(f"{tmp_path / 'junk.nii'}: expected a NIfTI file, could not read it (")


# --------------------------------------------------------------------------- image directories


def test_read_image_directory(tmp_path):
    gray = np.array([[0, 51, 255], [7, 128, 200]], np.uint8)
    Image.fromarray(gray).save(tmp_path / "a_gray.png")
    deep = np.array([[0, 65535, 1000], [30000, 2, 40000]], np.uint16)
    Image.fromarray(deep).save(tmp_path / "b_deep.png")
    rgb = np.zeros((2, 3, 3), np.uint8)
    rgb[..., 0], rgb[..., 1], rgb[..., 2] = 255, 100, 10
    Image.fromarray(rgb).save(tmp_path / "c_rgb.png")
    write_dicom(tmp_path / "d_slice.dcm", STORED[1], series_uid=SERIES, position=(0, 0, 0),
                slope=2.0, intercept=-1000.0)
    vol = np.arange(2 * 2 * 3, dtype=np.float32).reshape(3, 2, 2)  # (x, y, z) with z = 2 slices
    nib.save(nib.Nifti1Image(vol, np.diag([-1.0, -1.0, 1.0, 1.0])), tmp_path / "e_vol.nii.gz")
    (tmp_path / "notes.txt").write_text("skip me")
    (tmp_path / ".hidden.png").write_bytes(b"ignored")

    with pytest.warns(UserWarning, match="skipped 1 files .*: notes.txt"):
        items = read_image_directory(tmp_path)
    names = [n for n, _ in items]
    assert names == ["a_gray.png", "b_deep.png", "c_rgb.png", "d_slice.dcm", "e_vol.nii.gz[0]", "e_vol.nii.gz[1]"]
    arrays = dict(items)
    assert all(a.dtype == np.float32 and a.ndim == 2 for a in arrays.values())
    np.testing.assert_array_equal(arrays["a_gray.png"], (gray / 255.0).astype(np.float32))
    np.testing.assert_array_equal(arrays["b_deep.png"], (deep / 65535.0).astype(np.float32))
    luma = np.asarray(Image.fromarray(rgb).convert("L"))
    np.testing.assert_array_equal(arrays["c_rgb.png"], (luma / 255.0).astype(np.float32))
    assert arrays["c_rgb.png"].min() >= 0 and arrays["c_rgb.png"].max() <= 1
    np.testing.assert_array_equal(arrays["d_slice.dcm"], (STORED[1] * 2.0 - 1000.0).astype(np.float32))
    # LPS affine already: slice k of the pirecon volume is vol[:, :, k].T
    np.testing.assert_array_equal(arrays["e_vol.nii.gz[1]"], vol[:, :, 1].T)


def test_read_image_directory_attenuation_and_errors(tmp_path):
    write_dicom(tmp_path / "ct.dcm", np.array([[0, 1000, 2000]], np.int16), series_uid=SERIES,
                position=(0, 0, 0), intercept=-1000.0)
    [(name, mu)] = read_image_directory(tmp_path, attenuation=True)
    assert name == "ct.dcm"
    assert mu.tolist() == [[0.0, np.float32(0.0192), np.float32(0.0384)]]

    empty = tmp_path / "empty"
    empty.mkdir()
    with raises_exactly(ValueError, f"image directory {empty}: expected PNG, DICOM or NIfTI images, found none"):
        read_image_directory(empty)
    (empty / "a.txt").write_text("x")
    (empty / "b.csv").write_text("y")
    with raises_exactly(ValueError, f"image directory {empty}: expected PNG, DICOM or NIfTI images, found 2 other "
                                    "files (a.txt, b.csv)"):
        read_image_directory(empty)
    with raises_exactly(FileNotFoundError, f"image directory {tmp_path / 'x'}: expected a directory, found nothing"):
        read_image_directory(tmp_path / "x")
