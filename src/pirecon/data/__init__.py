"""Data: specified file formats, validation, readers of the field's formats, simulation, datasets."""

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
    "CTRaw", "MRIRaw", "ReconstructionFile", "file_kind",
    "read_ct_raw", "write_ct_raw", "read_mri_raw", "write_mri_raw", "read_reconstruction", "write_reconstruction",
    "SpecError", "validate",
]
