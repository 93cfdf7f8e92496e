"""``save(reconstruction, out)``: a :class:`~pirecon.models.Reconstruction` to HDF5, NIfTI or a DICOM series.

The format follows from ``out``: ``.h5`` / ``.hdf5`` (``data_specs/reconstruction.md``, with uncertainty,
task outputs and the provenance), ``.nii`` / ``.nii.gz`` (:mod:`pirecon.inference.nifti`), or a directory
with ``format="dicom"`` (:mod:`pirecon.inference.dicom`). Every write is atomic and an existing output is
replaced only with ``overwrite=True``.

HDF5 keeps the model's units and the provenance as an attribute; NIfTI holds the provenance as JSON in a
header extension (code 6, ``comment``), DICOM in ``DerivationDescription`` (model, checkpoint SHA-256).
DICOM and NIfTI hold the magnitude of the image in the source's units when the image was simulated from a
DICOM or NIfTI volume (Hounsfield units for CT in HU: the map recorded in ``provenance["intensity"]`` is
undone), in the model's units otherwise. Patient geometry comes from the
source volume (``provenance["affine_lps"]``); raw files have none, and the writers say so (a tag, a
warning) rather than invent an orientation.

An interval (``reconstruction.uncertainty``, a :class:`pirecon.uncertainty.Interval`) goes with the image:
HDF5 holds ``interval_lower`` / ``interval_upper`` (and ``uncertainty``, the std, where the head has one);
NIfTI and DICOM write its bounds beside the image, in the same units and geometry, as
``<name>_interval_lower`` and ``<name>_interval_upper`` (``scan.nii.gz`` -> ``scan_interval_lower.nii.gz``;
the DICOM series ``out/`` -> ``out_interval_lower/``, a series of the same study and frame of reference),
with the interval's kind and calibration (lambda-hat, alpha, delta) in their provenance.

Task outputs (``reconstruction.task``, :class:`pirecon.models.TaskAdapted`): HDF5 holds every one under
``task/`` (a calibrated label's ``label_set`` and ``label_decision`` too). The segmentation (1 where the lesion
probability exceeds 0.5): a DICOM series with patient geometry gets a DICOM SEG beside it
(``out_segmentation.dcm``, :mod:`pirecon.inference.dicom_seg`, with highdicom installed); otherwise NIfTI and
DICOM outputs get a NIfTI label map (``<name>_segmentation.nii.gz``, uint8, the image's geometry). The
per-slice label (probability; calibrated: conformal set and decision, :func:`label_metadata`) goes into the
NIfTI provenance (``task``) and each DICOM image's ImageComments.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import ArgumentError, PireconUserError

__all__ = ["save", "FORMATS", "output_format", "check_output", "check_writable", "refuse_existing", "label_metadata"]

FORMATS = ("h5", "nifti", "dicom")


def _suffix_format(out) -> str | None:
    name = str(out).lower()
    if name.endswith((".h5", ".hdf5")):
        return "h5"
    if name.endswith((".nii", ".nii.gz")):
        return "nifti"
    return None


def output_format(out, format: str | None = None) -> str:
    """``"h5"``, ``"nifti"`` or ``"dicom"`` for an output path (and an explicit ``format``, which must agree
    with the suffix: a DICOM series is a directory without one)."""
    implied = _suffix_format(out)
    if format is not None:
        if format not in FORMATS:
            raise ArgumentError(f"format: expected one of {', '.join(FORMATS)}, found {format!r}")
        if implied != (None if format == "dicom" else format):
            expected = {"h5": "a path ending in .h5 or .hdf5", "nifti": "a path ending in .nii or .nii.gz",
                        "dicom": "a directory path without a .h5 or .nii suffix"}[format]
            raise ArgumentError(f"out: expected {expected} for format {format!r}, found {str(out)!r}")
        return format
    if implied is None:
        raise ArgumentError(f"out: expected a path ending in .h5, .nii or .nii.gz, or a directory with "
                            f"format='dicom' (--format dicom), found {str(out)!r}")
    return implied


def check_output(out, format: str | None = None, *, overwrite: bool = False) -> str:
    """Check ``out`` before any work: its format, and that it is new unless ``overwrite``; returns the format."""
    kind = output_format(out, format)
    out = Path(out)
    if kind == "dicom" and out.exists() and not out.is_dir():
        raise PireconUserError(f"{out}: expected a directory for a DICOM series, found a file")
    if kind != "dicom" and out.is_dir():
        raise PireconUserError(f"{out}: expected a file path for {kind}, found a directory")
    if not (kind == "dicom" and out.is_dir() and not any(out.iterdir())):  # an empty directory takes a series
        refuse_existing(out, overwrite=overwrite)
    return kind


def refuse_existing(out, *, overwrite: bool) -> None:
    """Refuse an existing output unless ``overwrite``: one line naming it (outputs, checkpoints, reports)."""
    out = Path(out)
    if out.exists() and not overwrite:
        what = "a directory" if out.is_dir() else "a file"
        raise PireconUserError(f"{out}: expected a new output path, found {what} that exists; pass overwrite=True "
                               "(--overwrite) to replace it")


def check_writable(facts: dict, kind: str, out) -> None:
    """Refuse, before any work, an output the source cannot give: NIfTI needs a pixel size (an MRI raw file
    has none)."""
    if kind == "nifti" and facts.get("affine_lps") is None and facts.get("pixel_spacing_mm") is None:
        raise PireconUserError(f"{out}: expected a source with a pixel size to write NIfTI, found none (raw MRI "
                               "files carry none); write .h5 instead")


INTERVAL_PARTS = ("interval_lower", "interval_upper")
"""The names the bounds of an interval take beside the image in NIfTI and DICOM outputs."""


def _source_values(image, provenance: dict) -> np.ndarray:
    """``(N, H, W)`` float32 magnitude of ``image (N, 1, H, W)`` in the source's units."""
    image = (image.abs() if image.is_complex() else image).float().numpy()[:, 0]
    intensity = provenance.get("intensity")
    if intensity:
        image = image * np.float32(intensity["scale"]) + np.float32(intensity["offset"])
    return image.astype(np.float32, copy=False)


def _companion(out: Path, part: str) -> Path:
    """``scan.nii.gz`` -> ``scan_<part>.nii.gz``; a DICOM directory ``out`` -> ``out_<part>``."""
    name = out.name
    for suffix in (".nii.gz", ".nii"):
        if name.lower().endswith(suffix):
            return out.with_name(f"{name[:-len(suffix)]}_{part}{name[-len(suffix):]}")
    return out.with_name(f"{name}_{part}")


def _volumes(reconstruction, provenance: dict, out: Path) -> dict[Path, tuple[np.ndarray, dict]]:
    """Each file or series to write (the image, then an interval's bounds) with its values in the source's
    units and its provenance."""
    from ..uncertainty import Interval

    volumes = {out: (_source_values(reconstruction.image, provenance), provenance)}
    interval = reconstruction.uncertainty
    if isinstance(interval, Interval):
        bounds = [_source_values(bound, provenance) for bound in (interval.lower, interval.upper)]
        if (provenance.get("intensity") or {}).get("scale", 1.0) < 0:  # a decreasing map swaps the bounds
            bounds.reverse()
        for part, values in zip(INTERVAL_PARTS, bounds):
            volumes[_companion(out, part)] = (values, {**provenance, "part": part, "interval": interval.describe()})
    return volumes


def _derivation(provenance: dict) -> str:
    text = f"pirecon {provenance.get('pirecon_version', '')} reconstruction by {provenance.get('model', 'unknown')}"
    if provenance.get("checkpoint_sha256"):
        text += f", checkpoint sha256 {provenance['checkpoint_sha256']}"
    return text


def save(reconstruction, out, *, format: str | None = None, overwrite: bool = False):
    """Write ``reconstruction`` to ``out`` (format from the suffix, or ``format="dicom"`` for a directory).

    Returns the path written (HDF5, NIfTI) or the list of DICOM files.
    """
    kind = check_output(out, format, overwrite=overwrite)
    provenance = dict(reconstruction.provenance)
    out = Path(out)
    if kind == "h5":
        from ..data.formats import write_reconstruction

        from ..uncertainty import Interval

        image, uncertainty, interval = reconstruction.image, reconstruction.uncertainty, None
        if isinstance(uncertainty, Interval):
            interval = (uncertainty.lower.numpy(), uncertainty.upper.numpy())
            uncertainty = None if uncertainty.std is None else uncertainty.std.numpy()
        elif uncertainty is not None:
            uncertainty = uncertainty.numpy()
        return write_reconstruction(out, image.numpy(), uncertainty=uncertainty, interval=interval,
                                    task={k: v.numpy() for k, v in reconstruction.task.items()} or None,
                                    provenance=provenance)
    task = reconstruction.task
    if "label" in task:
        provenance["task"] = label_metadata(task)
    volumes = _volumes(reconstruction, provenance, out)
    segmentation = None
    if "segmentation" in task:
        segmentation = _segmentation_path(out, kind, provenance)
        if segmentation.suffix != ".dcm":
            check_writable(provenance, "nifti", segmentation)
    for path in [*list(volumes)[1:], *([segmentation] if segmentation else [])]:
        # the image's path was checked above; nothing is written before all are
        if path.suffix == ".dcm":
            refuse_existing(path, overwrite=overwrite)
        else:
            check_output(path, "nifti" if path == segmentation else format, overwrite=overwrite)
    written = _write_nifti(volumes, out, provenance, overwrite) if kind == "nifti" else \
        _write_dicom(volumes, out, provenance, overwrite)
    if segmentation is not None:
        labels = (task["segmentation"][:, 0] > 0.5).numpy().astype(np.uint8)
        if segmentation.suffix == ".dcm":
            from .dicom_seg import write_dicom_seg

            write_dicom_seg(segmentation, labels, written, model=provenance.get("model", ""),
                            version=provenance.get("pirecon_version", ""), overwrite=overwrite)
        else:
            from .nifti import write_nifti

            write_nifti(segmentation, labels, label_map=True, overwrite=overwrite, **_nifti_geometry(provenance),
                        description="pirecon segmentation (lesion probability > 0.5)",
                        provenance={**provenance, "part": "segmentation", "threshold": 0.5})
    return written


def label_metadata(task: dict) -> dict:
    """The per-slice lesion label of task outputs as JSON values: ``label_probability``, and for a calibrated
    label (``pirecon calibrate --task``) ``label_set`` (the classes in each slice's conformal set, of
    ``"absent"`` and ``"present"``) and ``label_decision`` (0/1 at the operating point)."""
    out = {"label_probability": [round(float(p), 6) for p in task["label"].reshape(-1)]}
    if "label_set" in task:
        out["label_set"] = [[name for name, kept in zip(("absent", "present"), row) if kept]
                            for row in task["label_set"].reshape(-1, 2).tolist()]
    if "label_decision" in task:
        out["label_decision"] = [int(v) for v in task["label_decision"].reshape(-1)]
    return out


def _segmentation_path(out: Path, kind: str, provenance: dict) -> Path:
    """Where the segmentation goes: a DICOM SEG ``out_segmentation.dcm`` beside a DICOM series with patient
    geometry when highdicom is installed, else a NIfTI label map (``scan_segmentation.nii.gz``,
    ``out_segmentation.nii.gz``)."""
    if kind == "dicom":
        from .dicom_seg import highdicom_available

        if provenance.get("affine_lps") is not None and highdicom_available():
            return out.with_name(f"{out.name}_segmentation.dcm")
        return _companion(out.with_name(f"{out.name}.nii.gz"), "segmentation")
    return _companion(out, "segmentation")


def _label_comments(provenance: dict) -> list[str] | None:
    """Per slice, the task's lesion label in words for ImageComments (None without a task label)."""
    task = provenance.get("task")
    if not task:
        return None
    sets, decisions = task.get("label_set"), task.get("label_decision")
    comments = []
    for k, probability in enumerate(task["label_probability"]):
        text = f"pirecon lesion probability {probability:.4f}"
        if sets is not None:
            alpha = (provenance.get("task_calibration") or {}).get("alpha")
            text += f"; conformal set {{{', '.join(sets[k])}}}" + (f" (alpha {alpha:g})" if alpha is not None else "")
        if decisions is not None:
            text += f"; decision {'present' if decisions[k] else 'absent'}"
        comments.append(text)
    return comments


def _nifti_geometry(provenance: dict) -> dict:
    """``affine`` (RAS+) from the source's patient geometry, else the ``spacing`` of independent slices."""
    from .sources import LPS_TO_RAS

    affine = provenance.get("affine_lps")
    if affine is not None:
        return {"affine": LPS_TO_RAS @ np.asarray(affine)}
    spacing = provenance.get("pixel_spacing_mm")
    return {"spacing": (provenance.get("slice_thickness_mm", spacing[0]), *spacing)}


def _write_nifti(volumes: dict, out: Path, provenance: dict, overwrite: bool = False) -> Path:
    from .nifti import write_nifti

    check_writable(provenance, "nifti", out)
    short = f"pirecon {provenance.get('pirecon_version', '')} {provenance.get('model', '')}"
    if provenance.get("checkpoint_sha256"):
        short += f" sha256:{provenance['checkpoint_sha256'][:16]}"  # all of it in the extension
    written = [write_nifti(path, volume, overwrite=overwrite, provenance=part_provenance, **_nifti_geometry(provenance),
                           description=short if path == out else f"{short} {part_provenance['part']}"[:79])
               for path, (volume, part_provenance) in volumes.items()]
    return written[0]


def _write_dicom(volumes: dict, out: Path, provenance: dict, overwrite: bool = False) -> list[Path]:
    from .dicom import geometry_from_affine, write_dicom_series

    affine = provenance.get("affine_lps")
    spacing = provenance.get("pixel_spacing_mm")
    modality = "CT" if (provenance.get("physics") or {}).get("modality", "ct") == "ct" else "MR"
    units = (provenance.get("intensity") or {}).get("units")
    geometry: dict = {"pixel_spacing": None if spacing is None else tuple(spacing)}
    if affine is not None:
        geometry = geometry_from_affine(affine, len(volumes[out][0]))
        geometry["slice_thickness"] = provenance.get("slice_thickness_mm",
                                                     float(np.linalg.norm(np.asarray(affine)[:3, 0])))
    written = []
    for path, (volume, part_provenance) in volumes.items():
        description = "pirecon reconstruction" if path == out else \
            f"pirecon {part_provenance['part'].replace('_', ' ')}"
        derivation = _derivation(provenance)
        if path != out:
            calibration = part_provenance["interval"].get("calibration") or {}
            derivation += (f"; {part_provenance['part'].replace('_', ' ')} of a {part_provenance['interval']['kind']}"
                           " interval" + (f", calibrated lambda {calibration['lambda_hat']:.4g} (alpha "
                                          f"{calibration.get('alpha')}, delta {calibration.get('delta')})"
                                          if calibration.get("lambda_hat") is not None else ", uncalibrated"))
        # the bounds join the source's study, or the reconstruction's when the source was no DICOM series
        sources = provenance.get("source_files") or (written[0] if written else None)
        written.append(write_dicom_series(path, volume, modality=modality, units="HU" if units == "HU" else "arbitrary",
                                          source_files=sources, derivation=derivation,
                                          series_description=description, overwrite=overwrite,
                                          slice_comments=_label_comments(provenance) if path == out else None,
                                          **geometry))
    return written[0]
