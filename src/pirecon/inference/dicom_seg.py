"""A lesion segmentation as a DICOM Segmentation object (SEG) referencing the reconstruction's DICOM series.

    write_dicom_seg("out_segmentation.dcm", mask, image_files, model="TaskAdapted", version="0.1.0")

One binary segment, "lesion" (SNOMED CT: category Morphologically abnormal structure, type Lesion), found by
an automatic algorithm (family Artificial Intelligence, named by the model and pirecon's version), one
frame per image slice, written with ``highdicom`` (the optional extra ``pip install pirecon[dicom-seg]``).
A SEG needs images with a frame of reference (patient geometry): a series written as Secondary Capture
(a raw file's reconstruction has no patient position) cannot carry a multi-frame SEG, and callers fall back
to a NIfTI label map (:func:`seg_supported`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import ArgumentError

__all__ = ["highdicom_available", "seg_supported", "write_dicom_seg"]


def highdicom_available() -> bool:
    """Whether ``highdicom`` imports here."""
    try:
        import highdicom  # noqa: F401
    except ImportError:
        return False
    return True


def seg_supported(image_files) -> bool:
    """Whether a SEG can reference these DICOM images: highdicom is installed and the images have a frame of
    reference (``FrameOfReferenceUID``; a Secondary Capture series without patient geometry has none)."""
    import pydicom

    if not highdicom_available() or not image_files:
        return False
    first = pydicom.dcmread(image_files[0], stop_before_pixels=True)
    return bool(first.get("FrameOfReferenceUID"))


def write_dicom_seg(path, mask, image_files, *, model: str, version: str, description: str = "pirecon lesion "
                    "segmentation", overwrite: bool = False) -> Path:
    """Write the binary ``mask`` ``(D, H, W)`` (one slice per image of ``image_files``, in order) as a SEG.

    The SEG joins the images' study and frame of reference and references each source image; it is written
    atomically, and an existing ``path`` is refused unless ``overwrite``. Returns ``path``.
    """
    import highdicom as hd
    import pydicom
    from pydicom.sr.codedict import codes

    from .._atomic import atomic_path
    from .output import refuse_existing

    path = Path(path)
    values = np.asarray(mask)
    sources = [pydicom.dcmread(f) for f in image_files]
    if values.ndim != 3 or values.shape[0] != len(sources):
        raise ArgumentError(f"mask: expected (D, H, W) with one slice per image ({len(sources)}), found shape "
                            f"{values.shape}")
    if values.shape[1:] != (int(sources[0].Rows), int(sources[0].Columns)):
        raise ArgumentError(f"mask: expected slices of the images' {sources[0].Rows} x {sources[0].Columns} pixels, "
                            f"found {values.shape[1]} x {values.shape[2]}")
    refuse_existing(path, overwrite=overwrite)
    segment = hd.seg.SegmentDescription(
        segment_number=1, segment_label="lesion",
        segmented_property_category=codes.SCT.MorphologicallyAbnormalStructure,
        segmented_property_type=codes.SCT.Lesion, algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
        algorithm_identification=hd.AlgorithmIdentificationSequence(
            name=f"pirecon {model}"[:64], version=str(version)[:64], family=codes.cid7162.ArtificialIntelligence))
    seg = hd.seg.Segmentation(
        source_images=sources, pixel_array=values.astype(bool),
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY, segment_descriptions=[segment],
        series_instance_uid=hd.UID(), series_number=int(sources[0].get("SeriesNumber") or 0) + 100,
        sop_instance_uid=hd.UID(), instance_number=1, manufacturer="pirecon", manufacturer_model_name=str(model)[:64],
        software_versions=str(version), device_serial_number="none", series_description=description[:64],
        omit_empty_frames=False)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        seg.save_as(tmp)
    return path
