"""pirecon: physics-informed reconstruction for medical imaging.

Differentiable forward operators for CT (and, later, MRI), classical and
learned reconstructions, all on torch tensors.
"""

from importlib.metadata import PackageNotFoundError, version

from ._validation import BackendUnavailableError
from .operators import LinearOperator, adjoint_test

try:
    __version__ = version("pirecon")
except PackageNotFoundError:  # running from a source tree without installation
    __version__ = "0.0.0"

__all__ = ["LinearOperator", "adjoint_test", "BackendUnavailableError", "__version__"]
