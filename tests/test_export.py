"""The DICOM and NIfTI writers of pirecon.inference: read back with pydicom, nibabel and pirecon's own readers."""

import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

pydicom = pytest.importorskip("pydicom")
nib = pytest.importorskip("nibabel")

from pirecon.data.readers import read_dicom_series, read_nifti  # noqa: E402
from pirecon.errors import ArgumentError, PireconUserError  # noqa: E402
from pirecon.inference import dicom as dicom_module  # noqa: E402
from pirecon.inference.dicom import (CT_IMAGE_STORAGE, MR_IMAGE_STORAGE, SECONDARY_CAPTURE_IMAGE_STORAGE,  # noqa: E402
                                     geometry_from_affine, write_dicom_series)
from pirecon.inference.nifti import write_nifti  # noqa: E402

EXPLICIT_VR_LITTLE_ENDIAN = "1.2.840.10008.1.2.1"
THETA = 0.3  # in-plane rotation of the test geometry (radians)
ORIENTATION = (np.cos(THETA), np.sin(THETA), 0.0, -np.sin(THETA), np.cos(THETA), 0.0)
SPACING_YX = (0.8, 0.7)
PATIENT = {"PatientName": "Müller^Jürgen", "PatientID": "P-0042", "PatientBirthDate": "19700101", "PatientSex": "F",
           "StudyDate": "20240102", "StudyTime": "101500", "StudyID": "S17", "AccessionNumber": "A123",
           "ReferringPhysicianName": "Who^Doctor", "StudyDescription": "CT THORAX"}


def positions_along_normal(z_values, origin=(-12.0, -30.0, 0.0)):
    """ImagePositionPatient of slices at ``z_values`` mm along the normal of ORIENTATION."""
    normal = np.cross(ORIENTATION[:3], ORIENTATION[3:])
    return np.array(origin) + np.asarray(z_values, dtype=float)[:, None] * normal


def expected_affine(positions):
    """The affine read_dicom_series builds: index (d, h, w, 1) to LPS mm."""
    a = np.eye(4)
    normal = np.cross(ORIENTATION[:3], ORIENTATION[3:])
    a[:3, 0] = normal * float((positions[1] - positions[0]) @ normal)
    a[:3, 1] = np.asarray(ORIENTATION[3:]) * SPACING_YX[0]
    a[:3, 2] = np.asarray(ORIENTATION[:3]) * SPACING_YX[1]
    a[:3, 3] = positions[0]
    return a


def read_series(files):
    return [pydicom.dcmread(f) for f in files]


def rescaled(ds):
    """The modality values of one image: stored * slope + intercept (what pydicom's apply_rescale gives)."""
    return ds.pixel_array.astype(np.float64) * float(ds.RescaleSlope) + float(ds.RescaleIntercept)


def assert_within_half_step(datasets, volume):
    for d, ds in enumerate(datasets):
        step = float(ds.RescaleSlope)
        error = np.abs(rescaled(ds) - volume[d]).max()
        assert error <= 0.5 * step * (1 + 1e-6), (d, error, step)


def hidden_leftovers(directory: Path):
    return sorted(p.name for p in directory.iterdir() if p.name.startswith("."))


def make_ct_source(directory: Path, hu: np.ndarray, positions, modality: str = "CT") -> list[Path]:
    """A small CT Image Storage series in HU (slope 1, intercept -1024) with patient and study tags (Latin-1).

    ``modality="MR"``: an MR Image Storage series of the same values, a spin-echo sequence.
    """
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import generate_uid

    directory.mkdir()
    study, series, frame = generate_uid(), generate_uid(), generate_uid()
    files = []
    for d in range(hu.shape[0]):
        ds = Dataset()
        ds.SOPClassUID = CT_IMAGE_STORAGE if modality == "CT" else MR_IMAGE_STORAGE
        ds.SOPInstanceUID = generate_uid()
        ds.SpecificCharacterSet = "ISO_IR 100"
        for keyword, value in PATIENT.items():
            setattr(ds, keyword, value)
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study, series, frame
        ds.Modality, ds.SeriesNumber, ds.InstanceNumber = modality, 3, d + 1
        ds.PatientPosition = "HFS"
        if modality == "CT":
            ds.KVP = 120
            ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        else:
            ds.ImageType = ["ORIGINAL", "PRIMARY", "OTHER"]
            ds.ScanningSequence, ds.SequenceVariant, ds.ScanOptions = "SE", "NONE", ""
            ds.MRAcquisitionType, ds.RepetitionTime, ds.EchoTime, ds.EchoTrainLength = "2D", 500, 20, 1
            ds.MagneticFieldStrength = 3
        ds.ImagePositionPatient = [float(v) for v in positions[d]]
        ds.ImageOrientationPatient = [float(v) for v in ORIENTATION]
        ds.PixelSpacing = list(SPACING_YX)
        ds.SliceThickness = 2.5
        ds.Rows, ds.Columns = hu.shape[1:]
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ds.RescaleSlope, ds.RescaleIntercept, ds.RescaleType = 1, -1024, "HU"
        ds.PixelData = (hu[d] + 1024).astype("<i2").tobytes()
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = ds.SOPClassUID, ds.SOPInstanceUID
        meta.TransferSyntaxUID = EXPLICIT_VR_LITTLE_ENDIAN
        ds.file_meta = meta
        path = directory / f"src_{d}.dcm"
        dicom_module._save(ds, path)
        files.append(path)
    return files


@pytest.fixture
def hu_volume():
    return np.random.default_rng(0).uniform(-1000.0, 2000.0, size=(3, 6, 5))


# --------------------------------------------------------------------------- DICOM


def test_ct_series_values_geometry_and_tags(tmp_path, hu_volume):
    positions = positions_along_normal([-5.0, -2.5, 0.0])
    derivation = "pirecon 0.1.0 LearnedPrimalDual, checkpoint sha256 " + "ab" * 32
    files = write_dicom_series(tmp_path / "out", hu_volume, modality="CT", units="HU", pixel_spacing=SPACING_YX,
                               slice_thickness=2.5, positions=positions, orientation=ORIENTATION,
                               derivation=derivation, series_description="test recon")
    assert [f.name for f in files] == ["IM_0001.dcm", "IM_0002.dcm", "IM_0003.dcm"]
    datasets = read_series(files)
    assert_within_half_step(datasets, hu_volume)
    for d, ds in enumerate(datasets):
        assert ds.SOPClassUID == CT_IMAGE_STORAGE == ds.file_meta.MediaStorageSOPClassUID
        assert ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
        assert ds.file_meta.TransferSyntaxUID == EXPLICIT_VR_LITTLE_ENDIAN
        assert list(ds.ImageType) == ["DERIVED", "SECONDARY", "AXIAL"]
        assert ds.DerivationDescription == derivation
        assert ds.SeriesDescription == "test recon"
        assert ds.Modality == "CT" and ds.Manufacturer == "pirecon"
        assert ds.SoftwareVersions.startswith("pirecon ")
        assert ds.InstanceNumber == d + 1 and ds.ContentDate and ds.ContentTime
        assert (float(ds.RescaleSlope), float(ds.RescaleIntercept), ds.RescaleType) == (1.0, -1024.0, "HU")
        assert (float(ds.WindowCenter), float(ds.WindowWidth)) == (40.0, 400.0)
        assert ds.BitsAllocated == 16 and ds.PixelRepresentation == 1
        # Type 2 attributes of the CT Image and patient/study modules: present, empty when unknown
        for keyword in ("KVP", "AcquisitionNumber", "PatientName", "PatientID", "PatientPosition", "SliceThickness"):
            assert keyword in ds
        assert ds.KVP in (None, "")
        np.testing.assert_allclose([float(v) for v in ds.PixelSpacing], SPACING_YX)
        np.testing.assert_allclose(float(ds.SliceThickness), 2.5)
        np.testing.assert_allclose(float(ds.SpacingBetweenSlices), 2.5)
        np.testing.assert_allclose([float(v) for v in ds.ImageOrientationPatient], ORIENTATION, atol=1e-12)
        np.testing.assert_allclose([float(v) for v in ds.ImagePositionPatient], positions[d], atol=1e-9)
        np.testing.assert_allclose(float(ds.SliceLocation), -5.0 + 2.5 * d, atol=1e-9)

    uids = [(ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID, ds.SOPInstanceUID)
            for ds in datasets]
    for uid in {u for row in uids for u in row}:
        assert pydicom.uid.UID(uid).is_valid
    assert len({row[0] for row in uids}) == len({row[1] for row in uids}) == len({row[2] for row in uids}) == 1
    assert len({row[3] for row in uids}) == 3
    assert len(set(uids[0][:3])) == 3
    again = pydicom.dcmread(write_dicom_series(tmp_path / "again", hu_volume, modality="CT", units="HU",
                                               pixel_spacing=SPACING_YX, positions=positions,
                                               orientation=ORIENTATION)[0])
    assert again.StudyInstanceUID != uids[0][0] and again.SeriesInstanceUID != uids[0][1]
    assert again.SOPInstanceUID not in {row[3] for row in uids}
    assert "DerivationDescription" not in again

    volume, spacing, metadata = read_dicom_series(tmp_path / "out")
    assert np.abs(volume - hu_volume).max() <= 0.5 + 1e-3
    np.testing.assert_allclose(spacing, (2.5, *SPACING_YX))
    np.testing.assert_allclose(metadata["affine"], expected_affine(positions), atol=1e-6)


def test_hu_outside_the_default_intercept_range_gets_a_computed_rescale(tmp_path):
    volume = np.linspace(-2000.0, 60000.0, 2 * 4 * 4).reshape(2, 4, 4)
    files = write_dicom_series(tmp_path / "out", volume, modality="CT", units="HU", pixel_spacing=SPACING_YX,
                               positions=positions_along_normal([0.0, 1.0]), orientation=ORIENTATION)
    datasets = read_series(files)
    assert float(datasets[0].RescaleSlope) > 0.9 and datasets[0].RescaleType == "HU"
    assert_within_half_step(datasets, volume)


def test_attenuation_values_use_the_16_bits(tmp_path):
    volume = np.random.default_rng(1).uniform(0.0, 0.04, size=(2, 5, 4))
    files = write_dicom_series(tmp_path / "out", volume, modality="CT", units="1/mm", pixel_spacing=SPACING_YX,
                               positions=positions_along_normal([0.0, 3.0]), orientation=ORIENTATION)
    datasets = read_series(files)
    slope = float(datasets[0].RescaleSlope)
    assert slope < 0.04 / 60000
    assert_within_half_step(datasets, volume)
    ds = datasets[0]
    assert ds.RescaleType == "US" and "1/mm" in ds.ImageComments
    assert ds.VOILUTFunction == "LINEAR_EXACT"
    np.testing.assert_allclose(float(ds.WindowCenter), 0.5 * (volume.min() + volume.max()), rtol=1e-6)
    np.testing.assert_allclose(float(ds.WindowWidth), volume.max() - volume.min(), rtol=1e-6)
    try:
        from pydicom.pixels import apply_rescale
    except ImportError:  # pydicom 2.x
        return
    np.testing.assert_allclose(apply_rescale(ds.pixel_array, ds), volume[0], rtol=0, atol=0.5 * slope * 1.000001)


def test_constant_and_2d_volumes(tmp_path):
    files = write_dicom_series(tmp_path / "out", np.full((3, 4), 7.25), modality="MR", units="arbitrary",
                               pixel_spacing=SPACING_YX, positions=[[0.0, 0.0, 0.0]], orientation=ORIENTATION)
    (ds,) = read_series(files)
    assert rescaled(ds).shape == (3, 4)
    assert np.abs(rescaled(ds) - 7.25).max() <= 0.5 * float(ds.RescaleSlope)


def test_mr_series(tmp_path):
    volume = np.random.default_rng(2).uniform(0.0, 3.0, size=(2, 4, 6))
    files = write_dicom_series(tmp_path / "out", volume, modality="MR", units="arbitrary", pixel_spacing=SPACING_YX,
                               slice_thickness=4.0, positions=positions_along_normal([0.0, 4.0]),
                               orientation=ORIENTATION)
    datasets = read_series(files)
    assert_within_half_step(datasets, volume)
    ds = datasets[0]
    assert ds.SOPClassUID == MR_IMAGE_STORAGE and ds.Modality == "MR"
    assert list(ds.ImageType) == ["DERIVED", "SECONDARY", "OTHER"]
    assert ds.ScanningSequence == "RM" and ds.SequenceVariant == "NONE"
    for keyword in ("ScanOptions", "MRAcquisitionType", "RepetitionTime", "EchoTime", "EchoTrainLength"):
        assert keyword in ds and ds[keyword].value in (None, "")
    assert "RescaleType" not in ds and "arbitrary" in ds.ImageComments


def test_no_geometry_is_secondary_capture_and_says_so(tmp_path, hu_volume):
    with pytest.warns(UserWarning, match="no patient geometry"):
        files = write_dicom_series(tmp_path / "out", hu_volume, modality="CT", units="HU", pixel_spacing=SPACING_YX,
                                   slice_thickness=2.0)
    datasets = read_series(files)
    assert_within_half_step(datasets, hu_volume)
    for d, ds in enumerate(datasets):
        assert ds.SOPClassUID == SECONDARY_CAPTURE_IMAGE_STORAGE == ds.file_meta.MediaStorageSOPClassUID
        assert ds.ConversionType == "WSD"
        assert list(ds.ImageType) == ["DERIVED", "SECONDARY"]
        assert "no patient geometry" in ds.ImageComments
        for keyword in ("ImagePositionPatient", "ImageOrientationPatient", "FrameOfReferenceUID", "SliceLocation"):
            assert keyword not in ds
        assert "PatientOrientation" in ds and ds.PatientOrientation in (None, "")
        np.testing.assert_allclose([float(v) for v in ds.PixelSpacing], SPACING_YX)
        assert ds.RescaleType == "HU" and ds.InstanceNumber == d + 1
    volume, spacing, metadata = read_dicom_series(tmp_path / "out")
    assert metadata["affine"] is None and metadata["sorted_by"] == "InstanceNumber"
    np.testing.assert_allclose(spacing, (2.0, *SPACING_YX))
    assert np.abs(volume - hu_volume).max() <= 0.5 + 1e-3


def test_derived_from_a_dicom_source_series(tmp_path):
    hu = np.random.default_rng(3).integers(-1000, 1500, size=(3, 6, 5)).astype(np.float64)
    source_positions = positions_along_normal([10.0, 12.5, 15.0])
    make_ct_source(tmp_path / "source", hu, source_positions)
    source_volume, source_spacing, metadata = read_dicom_series(tmp_path / "source")
    sources = read_series(metadata["files"])
    recon = source_volume + np.random.default_rng(4).normal(0.0, 5.0, size=source_volume.shape)

    geometry = geometry_from_affine(metadata["affine"], recon.shape[0])
    files = write_dicom_series(tmp_path / "derived", recon, modality="CT", units="HU",
                               pixel_spacing=geometry["pixel_spacing"], positions=geometry["positions"],
                               orientation=geometry["orientation"], source_files=metadata["files"],
                               derivation="pirecon test")
    datasets = read_series(files)
    for d, ds in enumerate(datasets):
        assert ds.SOPClassUID == CT_IMAGE_STORAGE
        assert ds.StudyInstanceUID == sources[0].StudyInstanceUID
        assert ds.FrameOfReferenceUID == sources[0].FrameOfReferenceUID
        assert ds.SeriesInstanceUID != sources[0].SeriesInstanceUID
        assert ds.SOPInstanceUID not in {s.SOPInstanceUID for s in sources}
        for keyword, value in PATIENT.items():
            assert str(ds[keyword].value) == value, keyword
        assert ds.SpecificCharacterSet == "ISO_IR 192"  # the Latin-1 name re-encoded as UTF-8
        assert ds.PatientPosition == "HFS" and float(ds.KVP) == 120.0
        (item,) = ds.SourceImageSequence
        assert item.ReferencedSOPClassUID == sources[d].SOPClassUID
        assert item.ReferencedSOPInstanceUID == sources[d].SOPInstanceUID
    volume, spacing, derived = read_dicom_series(tmp_path / "derived")
    assert np.abs(volume - recon).max() <= 0.5 + 1e-3
    np.testing.assert_allclose(spacing, source_spacing, atol=1e-6)
    np.testing.assert_allclose(derived["affine"], metadata["affine"], atol=1e-6)
    np.testing.assert_allclose(derived["affine"], expected_affine(source_positions), atol=1e-6)

    # without positions and orientation, a volume of the source's shape takes the source's geometry
    files = write_dicom_series(tmp_path / "implicit", recon, modality="CT", units="HU",
                               source_files=metadata["files"])
    ds = pydicom.dcmread(files[0])
    assert ds.SOPClassUID == CT_IMAGE_STORAGE and float(ds.SliceThickness) == 2.5
    _, _, implicit = read_dicom_series(tmp_path / "implicit")
    np.testing.assert_allclose(implicit["affine"], metadata["affine"], atol=1e-6)

    # a volume on another grid: the source's study, no invented geometry
    with pytest.warns(UserWarning, match="no patient geometry"):
        files = write_dicom_series(tmp_path / "other", recon[:, :4], modality="CT", units="HU",
                                   source_files=metadata["files"])
    ds = pydicom.dcmread(files[0])
    assert ds.SOPClassUID == SECONDARY_CAPTURE_IMAGE_STORAGE and "ImagePositionPatient" not in ds
    assert ds.StudyInstanceUID == sources[0].StudyInstanceUID and str(ds.PatientName) == PATIENT["PatientName"]
    assert "differs from the source" in ds.ImageComments
    assert ds.SourceImageSequence[0].ReferencedSOPInstanceUID == sources[0].SOPInstanceUID


def test_derived_from_an_mr_source_keeps_its_sequence(tmp_path):
    values = np.random.default_rng(6).integers(0, 900, size=(2, 4, 3)).astype(np.float64)
    make_ct_source(tmp_path / "source", values, positions_along_normal([0.0, 5.0]), modality="MR")
    volume, _, metadata = read_dicom_series(tmp_path / "source")
    files = write_dicom_series(tmp_path / "derived", volume / 900, modality="MR", units="arbitrary",
                               source_files=metadata["files"])
    ds = pydicom.dcmread(files[0])
    assert ds.SOPClassUID == MR_IMAGE_STORAGE and list(ds.ImageType) == ["DERIVED", "SECONDARY", "OTHER"]
    assert (ds.ScanningSequence, ds.SequenceVariant, ds.MRAcquisitionType) == ("SE", "NONE", "2D")
    assert (float(ds.RepetitionTime), float(ds.EchoTime), float(ds.MagneticFieldStrength)) == (500, 20, 3)
    assert ds.SeriesNumber == 1003 and ds.SpacingBetweenSlices == 5.0
    _, _, derived = read_dicom_series(tmp_path / "derived")
    np.testing.assert_allclose(derived["affine"], metadata["affine"], atol=1e-6)


def test_geometry_from_affine_inverts_the_readers_affine():
    positions = positions_along_normal([1.0, 3.0, 5.0])
    geometry = geometry_from_affine(expected_affine(positions), 3)
    np.testing.assert_allclose(geometry["positions"], positions, atol=1e-12)
    np.testing.assert_allclose(geometry["orientation"], ORIENTATION, atol=1e-12)
    np.testing.assert_allclose(geometry["pixel_spacing"], SPACING_YX)


GOOD = dict(modality="CT", units="HU", pixel_spacing=SPACING_YX, positions=positions_along_normal([0.0, 1.0]),
            orientation=ORIENTATION)


@pytest.mark.parametrize("change, error, message", [
    ({"volume": np.full((2, 3, 4), np.nan)}, PireconUserError, r"volume: expected finite values, found 24 NaN"),
    ({"volume": np.zeros((1, 2, 3, 4))}, PireconUserError, r"volume: expected .*\(D, H, W\) or \(H, W\), found shape "
                                                         r"\(1, 2, 3, 4\)"),
    ({"volume": np.zeros((2, 3, 4), complex)}, PireconUserError, r"volume: expected a real .* found dtype complex"),
    ({"positions": np.zeros((3, 3))}, ArgumentError, r"positions: expected shape \(2, 3\).* found shape \(3, 3\)"),
    ({"positions": np.zeros((2, 3))}, ArgumentError, r"positions: expected distinct slice positions"),
    ({"orientation": (1, 0, 0, 0, 1)}, ArgumentError, r"orientation: expected six direction cosines"),
    ({"orientation": (1, 0, 0, 0, 2, 0)}, ArgumentError, r"orientation: expected two unit vectors, found lengths 1 "
                                                          r"and 2"),
    ({"orientation": (1, 0, 0, 1, 0, 0)}, ArgumentError, r"orientation: expected orthogonal"),
    ({"orientation": None}, ArgumentError, r"orientation: expected it with positions"),
    ({"pixel_spacing": None}, ArgumentError, r"pixel_spacing: expected \(dy, dx\) in mm with patient geometry"),
    ({"pixel_spacing": (0.5, -1)}, ArgumentError, r"pixel_spacing: expected \(dy, dx\), two positive numbers"),
    ({"slice_thickness": 0}, ArgumentError, r"slice_thickness: expected a positive number of mm, found 0"),
    ({"modality": "PT"}, ArgumentError, r"modality: expected one of 'CT', 'MR', found 'PT'"),
    ({"modality": "MR"}, ArgumentError, r"units: expected units other than HU for modality MR"),
    ({"units": ""}, ArgumentError, r"units: expected the units"),
    ({"series_description": "x" * 65}, ArgumentError, r"series_description: expected at most 64 characters"),
    ({"volume": np.linspace(1e12, 1e12 + 1e-3, 24).reshape(2, 3, 4), "units": "1/mm"}, PireconUserError,
     r"volume: expected values whose range can be stored in 16 bits"),
])
def test_bad_dicom_arguments_are_named(tmp_path, change, error, message):
    kwargs = {**GOOD, "volume": np.zeros((2, 3, 4)), **change}
    volume = kwargs.pop("volume")
    with pytest.raises(error, match=message):
        write_dicom_series(tmp_path / "out", volume, **kwargs)
    assert list(tmp_path.iterdir()) == []


def test_dicom_overwrite_only_when_asked(tmp_path, hu_volume):
    out = tmp_path / "out"
    first = write_dicom_series(out, hu_volume, **GOOD | {"positions": positions_along_normal([0.0, 1.0, 2.0])})
    old_series = pydicom.dcmread(first[0]).SeriesInstanceUID
    with pytest.raises(PireconUserError, match=r"out: expected a new output path, found an existing directory with "
                                               r"3 files; pass overwrite=True \(--overwrite\) to replace it"):
        write_dicom_series(out, hu_volume[:2], **GOOD)
    assert sorted(p.name for p in out.iterdir()) == ["IM_0001.dcm", "IM_0002.dcm", "IM_0003.dcm"]
    files = write_dicom_series(out, hu_volume[:2], **GOOD, overwrite=True)
    assert sorted(p.name for p in out.iterdir()) == ["IM_0001.dcm", "IM_0002.dcm"] == [f.name for f in files]
    assert pydicom.dcmread(files[0]).SeriesInstanceUID != old_series
    assert hidden_leftovers(tmp_path) == []

    empty = tmp_path / "empty"
    empty.mkdir()
    assert len(write_dicom_series(empty, hu_volume[:2], **GOOD)) == 2
    (tmp_path / "file").write_text("x")
    with pytest.raises(PireconUserError, match="file: expected a new output directory, found an existing file"):
        write_dicom_series(tmp_path / "file", hu_volume[:2], **GOOD, overwrite=True)


def test_a_dicom_write_failing_midway_leaves_nothing(tmp_path, monkeypatch, hu_volume):
    save = dicom_module._save
    calls = []

    def failing_save(ds, path):
        calls.append(path)
        if len(calls) == 2:
            raise OSError("disk full")
        save(ds, path)

    monkeypatch.setattr(dicom_module, "_save", failing_save)
    with pytest.raises(OSError, match="disk full"):
        write_dicom_series(tmp_path / "out", hu_volume[:2], **GOOD)
    assert list(tmp_path.iterdir()) == []

    monkeypatch.setattr(dicom_module, "_save", save)
    old = write_dicom_series(tmp_path / "out", hu_volume[:2], **GOOD)
    old_uid = pydicom.dcmread(old[0]).SOPInstanceUID
    monkeypatch.setattr(dicom_module, "_save", failing_save)
    calls.clear()
    with pytest.raises(OSError, match="disk full"):
        write_dicom_series(tmp_path / "out", hu_volume[:2], **GOOD, overwrite=True)
    assert pydicom.dcmread(old[0]).SOPInstanceUID == old_uid
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


@pytest.mark.skipif(shutil.which("dciodvfy") is None, reason="needs dciodvfy (Debian's dicom3tools)")
def test_dciodvfy_reports_no_errors(tmp_path, hu_volume):
    hu = np.rint(hu_volume)
    positions = positions_along_normal([0.0, 2.5, 5.0])
    make_ct_source(tmp_path / "source", hu, positions)
    _, _, metadata = read_dicom_series(tmp_path / "source")
    written = {
        "CT": write_dicom_series(tmp_path / "ct", hu, modality="CT", units="HU", source_files=metadata["files"],
                                 derivation="pirecon test")[0],
        "CT 1/mm": write_dicom_series(tmp_path / "ct_mu", hu_volume * 1e-5 + 0.02, **GOOD | {
            "units": "1/mm", "positions": positions})[0],
        "MR": write_dicom_series(tmp_path / "mr", hu_volume, modality="MR", units="arbitrary",
                                 pixel_spacing=SPACING_YX, positions=positions, orientation=ORIENTATION)[0],
    }
    make_ct_source(tmp_path / "mr_source", hu, positions, modality="MR")
    _, _, metadata = read_dicom_series(tmp_path / "mr_source")
    written["MR from MR"] = write_dicom_series(tmp_path / "mr2", hu, modality="MR", units="arbitrary",
                                               source_files=metadata["files"])[0]
    with pytest.warns(UserWarning, match="no patient geometry"):
        written["SC"] = write_dicom_series(tmp_path / "sc", hu_volume, modality="CT", units="HU",
                                           pixel_spacing=SPACING_YX)[0]
    for case, path in written.items():
        done = subprocess.run(["dciodvfy", os.fspath(path)], capture_output=True, text=True, timeout=60)
        report = done.stdout + done.stderr
        assert not [line for line in report.splitlines() if line.startswith("Error")], (case, report)


# --------------------------------------------------------------------------- NIfTI

# index (d, h, w) to RAS+ mm with read_nifti's LPS axis order (slices +S, rows +P, columns +L), rotated in plane
RAS_AFFINE = np.diag([-1.0, -1.0, 1.0, 1.0]) @ expected_affine(positions_along_normal([-40.0, -37.5]))


@pytest.mark.parametrize("suffix", [".nii", ".nii.gz"])
def test_nifti_round_trip(tmp_path, suffix):
    volume = np.random.default_rng(5).normal(size=(2, 6, 5)).astype(np.float32)
    path = write_nifti(tmp_path / f"recon{suffix}", volume, affine=RAS_AFFINE)
    assert path == tmp_path / f"recon{suffix}"
    assert (path.read_bytes()[:2] == b"\x1f\x8b") == (suffix == ".nii.gz")
    back, spacing, affine = read_nifti(path)
    assert back.dtype == np.float32 and np.array_equal(back, volume)
    np.testing.assert_allclose(affine, RAS_AFFINE, rtol=0, atol=1e-4)
    np.testing.assert_allclose(spacing, (2.5, *SPACING_YX), rtol=1e-6)
    img = nib.load(path)
    assert img.get_data_dtype() == np.float32 and img.shape == (5, 6, 2)
    assert (int(img.header["qform_code"]), int(img.header["sform_code"])) == (1, 1)
    assert img.header.get_xyzt_units()[0] == "mm"
    np.testing.assert_allclose(img.get_qform(), img.get_sform(), atol=1e-4)
    np.testing.assert_array_equal(np.asarray(img.dataobj), volume.transpose(2, 1, 0))
    assert hidden_leftovers(tmp_path) == []


def test_nifti_of_a_dicom_series_reads_back_like_it(tmp_path, hu_volume):
    write_dicom_series(tmp_path / "dcm", hu_volume, **GOOD | {"positions": positions_along_normal([0.0, 2.5, 5.0])})
    volume, spacing, metadata = read_dicom_series(tmp_path / "dcm")
    path = write_nifti(tmp_path / "v.nii.gz", volume, affine=np.diag([-1.0, -1.0, 1.0, 1.0]) @ metadata["affine"],
                       spacing=spacing)
    back, back_spacing, affine = read_nifti(path)
    assert np.array_equal(back, volume)
    np.testing.assert_allclose(np.diag([-1.0, -1.0, 1.0, 1.0]) @ affine, metadata["affine"], atol=1e-4)
    np.testing.assert_allclose(back_spacing, spacing, rtol=1e-6)


def test_nifti_without_affine_has_no_orientation(tmp_path):
    volume = np.arange(2 * 3 * 4, dtype=np.float32).reshape(2, 3, 4)
    with pytest.warns(UserWarning, match="no patient orientation"):
        path = write_nifti(tmp_path / "v.nii", volume, spacing=(2.0, 0.5, 0.25))
    img = nib.load(path)
    assert (int(img.header["qform_code"]), int(img.header["sform_code"])) == (0, 0)
    np.testing.assert_allclose(img.header.get_zooms(), (0.25, 0.5, 2.0))
    back, spacing, _ = read_nifti(path)
    assert np.array_equal(back, volume)
    np.testing.assert_allclose(spacing, (2.0, 0.5, 0.25))
    # a 2D image is one slice
    with pytest.warns(UserWarning, match="no patient orientation"):
        back, _, _ = read_nifti(write_nifti(tmp_path / "im.nii", volume[0], spacing=(1.0, 1.0, 1.0)))
    assert np.array_equal(back, volume[:1])


@pytest.mark.parametrize("name, kwargs, error, message", [
    ("v.img", {"spacing": (1, 1, 1)}, ArgumentError, r"expected a NIfTI suffix \(\.nii or \.nii\.gz\), found '\.img'"),
    ("v.nii.zip", {"spacing": (1, 1, 1)}, ArgumentError, r"found '\.nii\.zip'"),
    ("v.nii", {}, ArgumentError, r"affine, spacing: expected an affine .* found neither"),
    ("v.nii", {"affine": np.eye(3)}, ArgumentError, r"affine: expected a 4x4 array, found shape \(3, 3\)"),
    ("v.nii", {"affine": np.diag([1.0, 1.0, 0.0, 1.0])}, ArgumentError, r"affine: expected an invertible"),
    ("v.nii", {"affine": np.eye(4), "spacing": (2, 1, 1)}, ArgumentError, r"spacing: expected the affine's voxel"),
    ("v.nii", {"spacing": (1, 0, 1)}, ArgumentError, r"spacing: expected three positive finite numbers"),
    ("v.nii", {"spacing": (1, 1, 1), "volume": np.array([[[np.inf]]])}, PireconUserError,
     r"volume: expected finite values, found 1 NaN or infinite"),
    ("v.nii", {"spacing": (1, 1, 1), "volume": np.array([[[1e39]]])}, PireconUserError,
     r"volume: expected values within float32's range"),
])
def test_bad_nifti_arguments_are_named(tmp_path, name, kwargs, error, message):
    volume = kwargs.pop("volume", np.zeros((2, 2, 2)))
    with pytest.raises(error, match=message):
        write_nifti(tmp_path / name, volume, **kwargs)
    assert list(tmp_path.iterdir()) == []


def test_nifti_overwrite_only_when_asked(tmp_path):
    path = tmp_path / "v.nii.gz"
    write_nifti(path, np.zeros((2, 2, 2)), affine=RAS_AFFINE)
    with pytest.raises(PireconUserError) as info:
        write_nifti(path, np.ones((2, 2, 2)), affine=RAS_AFFINE)
    assert str(info.value) == (f"{path}: expected a new output path, found an existing file; pass overwrite=True "
                               "(--overwrite) to replace it")
    assert read_nifti(path)[0].max() == 0
    write_nifti(path, np.ones((2, 2, 2)), affine=RAS_AFFINE, overwrite=True)
    assert read_nifti(path)[0].min() == 1
    assert [p.name for p in tmp_path.iterdir()] == ["v.nii.gz"]


def test_a_nifti_write_failing_midway_leaves_nothing(tmp_path, monkeypatch):
    def failing_write(self, data):
        with open(self, "wb") as f:
            f.write(data[: len(data) // 2])
        raise OSError("disk full")

    monkeypatch.setattr(Path, "write_bytes", failing_write)
    with pytest.raises(OSError, match="disk full"):
        write_nifti(tmp_path / "v.nii", np.ones((2, 2, 2)), affine=RAS_AFFINE)
    assert list(tmp_path.iterdir()) == []
    monkeypatch.undo()

    path = write_nifti(tmp_path / "v.nii", np.zeros((2, 2, 2)), affine=RAS_AFFINE)
    monkeypatch.setattr(Path, "write_bytes", failing_write)
    with pytest.raises(OSError, match="disk full"):
        write_nifti(path, np.ones((2, 2, 2)), affine=RAS_AFFINE, overwrite=True)
    monkeypatch.undo()
    assert [p.name for p in tmp_path.iterdir()] == ["v.nii"]
    assert read_nifti(path)[0].max() == 0
