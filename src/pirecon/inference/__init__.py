"""Downstream use of trained models: load a checkpoint, reconstruct raw files, write HDF5, DICOM or NIfTI.

    model = pirecon.load("last.ckpt")                       # any device it was trained on; nothing unpickled
    recon = model.reconstruct("scan.h5")                     # raw file, DICOM/NIfTI volume, or tensor + physics
    pirecon.save(recon, "scan.nii.gz")                       # .h5, .nii(.gz), or a DICOM series (format="dicom")

Lightning-free at import and at use.
"""

from .checkpoint import (CHECKPOINT_FORMAT, CheckpointDeviceError, CheckpointError, CheckpointVersionError,
                         file_sha256, load_checkpoint)
from .card import ModelCard, add_known_limits, update_card
from .classical import METHODS, ClassicalMethod
from .dicom import write_dicom_series
from .nifti import write_nifti
from .output import save
from .reconstructors import Reconstructor, load, reconstructor

__all__ = ["load", "reconstructor", "save", "Reconstructor", "ClassicalMethod", "METHODS", "ModelCard",
           "add_known_limits", "update_card", "write_dicom_series", "write_nifti", "load_checkpoint", "file_sha256",
           "CHECKPOINT_FORMAT", "CheckpointError", "CheckpointVersionError", "CheckpointDeviceError"]
