"""``__version__``: the installed distribution's version (``0.0.0`` in a source tree without installation).

Modules inside the package import it from here, not from the root package, so that no layer reaches the
root's convenience functions (``pirecon.load`` and friends) and, through them, the layers above it.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("pirecon")
except PackageNotFoundError:  # running from a source tree without installation
    __version__ = "0.0.0"
