"""Constants and small helpers of the file specs, shared by the writers (``formats``) and the checker
(``validate``). This module imports nothing else from ``pirecon.data``: ``formats`` imports ``validate``
and this module, ``validate`` imports only this module, so no import runs in a circle.
"""

from __future__ import annotations

import numpy as np

__all__ = ["FORMAT_VERSION", "KINDS", "decode_attr", "first_nonfinite", "fmt_index", "fmt_shape"]

#: Version of the three layouts (root attribute ``format_version``).
FORMAT_VERSION = 1

#: Values of the root attribute ``pirecon_format``.
KINDS = ("ct_raw", "mri_raw", "reconstruction")


def first_nonfinite(a: np.ndarray):
    """``("NaN" | "Inf", index)`` of the first non-finite entry of a numeric array, else ``None``."""
    if a.dtype.kind not in "fc" or a.size == 0:
        return None
    with np.errstate(over="ignore", invalid="ignore"):
        if np.isfinite(np.sum(a)):  # NaN and Inf propagate into the sum; an overflow only sends us on
            return None
    finite = np.isfinite(a)
    if finite.all():
        return None
    index = np.unravel_index(int(np.argmin(finite)), a.shape)
    what = "NaN" if np.isnan(a[index]) else "Inf"
    return what, tuple(int(i) for i in index)


def fmt_index(index) -> str:
    """``(2, 5, 7)``; a 1-tuple as ``(2,)``."""
    return "(" + ", ".join(str(int(i)) for i in index) + ("," if len(index) == 1 else "") + ")"


def fmt_shape(shape, leading: str | None = None) -> str:
    """``(4, 30, 183)``; with ``leading='N'``: ``(N, 30, 183)``."""
    dims = [s if isinstance(s, str) else str(int(s)) for s in shape]
    if leading is not None:
        dims = [leading] + dims
    return "(" + ", ".join(dims) + ("," if len(dims) == 1 else "") + ")"


def decode_attr(value):
    """An HDF5 attribute value as a plain Python / JSON value."""
    if isinstance(value, bytes):  # includes np.bytes_
        return value.decode("utf-8", errors="replace")
    if isinstance(value, str):
        return value
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return float(value)
    if isinstance(value, np.ndarray):
        if value.ndim == 0:
            return decode_attr(value[()])
        return [decode_attr(v) for v in value.ravel().tolist()] if value.dtype.kind in "SOU" \
            else value.tolist()
    return value
