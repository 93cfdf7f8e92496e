"""Data: specified file formats, validation, readers of the field's formats, simulation, datasets."""

from .acquisition import Acquisition, physics_from_file, read_acquisition
from .formats import (
    CTRaw,
    MRIRaw,
    ReconstructionFile,
    file_kind,
    read_ct_raw,
    read_mri_raw,
    read_reconstruction,
    write_ct_raw,
    write_mri_raw,
    write_reconstruction,
)
from .validate import SpecError, validate

__all__ = [
    "Acquisition", "read_acquisition", "physics_from_file",
    "CTRaw", "MRIRaw", "ReconstructionFile", "file_kind",
    "read_ct_raw", "write_ct_raw", "read_mri_raw", "write_mri_raw", "read_reconstruction", "write_reconstruction",
    "SpecError", "validate",
]
