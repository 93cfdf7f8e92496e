"""Reading checkpoints safely: ``torch.load(weights_only=True)``, one clear error per kind of problem.

A checkpoint written by ``pirecon fit`` holds tensors, numbers, strings and plain containers only: the
model is stored as its ``class_path``/``init_args`` spec, the physics as plain data. Nothing in it is
unpickled as an object and nothing it names is imported (:func:`pirecon.models.registry.build_model`
with ``allow_import=False``). The torch floor in ``pyproject.toml`` (2.6) is the first release whose
``weights_only`` loader is not known to be bypassable (CVE-2025-32434).

Errors (all :class:`~pirecon.errors.PireconUserError`, a ``ValueError``):

* :class:`CheckpointError`: a missing file, a corrupt or truncated file, a file that is not a checkpoint;
* :class:`CheckpointVersionError`: a checkpoint format newer than this pirecon reads;
* :class:`CheckpointDeviceError`: tensors saved on a device this machine lacks, loaded without ``map_location``.
"""

from __future__ import annotations

import hashlib
import io
import pickle
import re
import zipfile
from pathlib import Path
from typing import Any

import torch

from .._version import __version__
from ..errors import PireconUserError

__all__ = ["load_checkpoint", "read_checkpoint", "file_sha256", "checkpoint_stamp", "CHECKPOINT_FORMAT", "CheckpointError",
           "CheckpointVersionError", "CheckpointDeviceError"]

CHECKPOINT_FORMAT = 1
"""The checkpoint layout this pirecon writes and reads (``checkpoint["pirecon"]["checkpoint_format"]``):
``state_dict``, ``hyper_parameters["model"]`` (the model spec), ``pirecon_physics`` (the physics as plain
data) and, from ``pirecon fit``, ``pirecon_card`` (the model card). Checkpoints without the stamp are
format 1."""


class CheckpointError(PireconUserError):
    """A file that cannot be read as a pirecon checkpoint (missing, corrupt, truncated or foreign)."""


class CheckpointVersionError(CheckpointError):
    """A checkpoint written in a format newer than this pirecon reads."""


class CheckpointDeviceError(CheckpointError):
    """A checkpoint whose tensors were saved on a device this machine does not have."""


def checkpoint_stamp() -> dict[str, Any]:
    """``{"checkpoint_format", "pirecon_version", "torch_version"}``: what every checkpoint records of its writer."""
    return {"checkpoint_format": CHECKPOINT_FORMAT, "pirecon_version": __version__,
            "torch_version": str(torch.__version__)}


def _device_problem(message: str) -> bool:
    return "deserialize object on" in message or "CUDA" in message and "map_location" in message


_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_GLOBAL = re.compile(r"GLOBAL ([\w.]+)")


def load_checkpoint(path, map_location=None) -> dict[str, Any]:
    """``torch.load(path, map_location, weights_only=True)`` of a Lightning checkpoint, with one-line errors
    naming the file (:func:`read_checkpoint` without the hash)."""
    return read_checkpoint(path, map_location)[0]


def read_checkpoint(path, map_location=None) -> tuple[dict[str, Any], str]:
    """A Lightning checkpoint and the SHA-256 of the very bytes it was loaded from (a file replaced between
    two reads cannot give weights of one file and the hash of another).

    ``map_location`` as for ``torch.load`` (``"cpu"`` loads a checkpoint trained on a GPU on any machine).
    Raises :class:`CheckpointError`, :class:`CheckpointVersionError` or :class:`CheckpointDeviceError`.
    """
    path = Path(path)
    if not path.is_file():
        found = "a directory" if path.is_dir() else "no file"
        raise CheckpointError(f"checkpoint: expected an existing checkpoint file, found {found} at {str(path)!r}")
    data = path.read_bytes()
    sha256 = hashlib.sha256(data).hexdigest()
    expected = f"{path}: expected a PyTorch checkpoint (zip file of tensors), found a corrupt or truncated file"
    if not zipfile.is_zipfile(io.BytesIO(data)):
        raise CheckpointError(f"{expected} (not a readable zip archive)")
    try:
        checkpoint = torch.load(io.BytesIO(data), map_location=map_location, weights_only=True)
    except (pickle.UnpicklingError, zipfile.BadZipFile, EOFError, RuntimeError, ValueError, OSError) as err:
        text = _ANSI.sub("", str(err)).strip()
        if isinstance(err, RuntimeError) and _device_problem(text):
            available = "no CUDA device" if not torch.cuda.is_available() else \
                f"{torch.cuda.device_count()} CUDA device(s)"
            raise CheckpointDeviceError(
                f"{path}: expected tensors this machine can hold, found tensors saved on a GPU and {available} "
                f"here; load with map_location='cpu' (pirecon.load does unless map_location is given)") from None
        code = _GLOBAL.search(text)
        if isinstance(err, pickle.UnpicklingError) and code:
            raise CheckpointError(f"{path}: expected tensors and plain data, found pickled Python objects "
                                  f"({code.group(1)}); pirecon never unpickles code") from None
        reason = text.splitlines()[0] if text else type(err).__name__
        raise CheckpointError(f"{expected} ({reason[:200]})") from None
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        raise CheckpointError(f"{path}: expected a Lightning checkpoint with a 'state_dict', "
                              f"found {type(checkpoint).__name__} without one")
    stamp = checkpoint.get("pirecon", {})
    if not isinstance(stamp, dict):
        raise CheckpointError(f"{path}: expected the 'pirecon' entry to be a mapping (checkpoint_format, "
                              f"pirecon_version), found {type(stamp).__name__}")
    written = stamp.get("checkpoint_format", 1)
    if not isinstance(written, int) or isinstance(written, bool) or written > CHECKPOINT_FORMAT:
        raise CheckpointVersionError(
            f"{path}: expected checkpoint format {CHECKPOINT_FORMAT} or older (pirecon {__version__}), found format "
            f"{written!r} written by pirecon {stamp.get('pirecon_version', 'of an unknown version')}; upgrade "
            "pirecon to load it")
    return checkpoint, sha256


def file_sha256(path) -> str:
    """SHA-256 of a file's bytes, hex."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
