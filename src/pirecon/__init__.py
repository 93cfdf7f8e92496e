"""pirecon: physics-informed reconstruction for medical imaging.

Differentiable forward operators for CT and MRI, classical and learned reconstructions, all on torch
tensors. Downstream code starts with three names (:mod:`pirecon.inference`, imported on first use):

    model = pirecon.load("last.ckpt")            # a checkpoint of `pirecon fit` -> Reconstructor
    recon = model.reconstruct("scan.h5")         # -> Reconstruction(image, uncertainty, task, provenance)
    pirecon.save(recon, "scan.nii.gz")           # HDF5, NIfTI or DICOM
"""

from ._validation import BackendUnavailableError
from ._version import __version__
from .operators import LinearOperator, adjoint_test

__all__ = ["LinearOperator", "adjoint_test", "BackendUnavailableError", "__version__", "load", "reconstructor",
           "save"]


def load(path, map_location=None, device=None, *, models=None):
    """The trained model of a checkpoint, ready to reconstruct: :func:`pirecon.inference.load`."""
    from .inference import load as load_reconstructor

    return load_reconstructor(path, map_location, device, models=models)


def reconstructor(method: str, **params):
    """A classical method with the same interface: :func:`pirecon.inference.reconstructor`."""
    from .inference import reconstructor as classical

    return classical(method, **params)


def save(reconstruction, out, *, format=None, overwrite=False):
    """Write a reconstruction to HDF5, NIfTI or DICOM: :func:`pirecon.inference.save`."""
    from .inference import save as write

    return write(reconstruction, out, format=format, overwrite=overwrite)
