"""Checkpoint files: written atomically, read with ``weights_only=True``, clear errors for bad files.

Lightning's ``TorchCheckpointIO`` writes in place, so a job killed while saving leaves a truncated
``last.ckpt`` that looks whole; :class:`AtomicCheckpointIO` writes a temporary file and renames
it. Loading never unpickles arbitrary objects: checkpoints hold tensors, numbers, strings and
plain containers only (the model is stored as its ``class_path``/``init_args`` spec).
"""

from __future__ import annotations

import hashlib
import os
import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch
from lightning_fabric.plugins.io.torch_io import TorchCheckpointIO

from .._atomic import atomic_path
from ..errors import PireconUserError

__all__ = ["AtomicCheckpointIO", "use_atomic_checkpoints", "load_checkpoint", "file_sha256"]


def load_checkpoint(path, map_location=None) -> dict[str, Any]:
    """``torch.load(path, weights_only=True)`` with one-line errors naming the file.

    A missing, corrupt or foreign file raises :class:`~pirecon.errors.PireconUserError` (a ``ValueError``).
    """
    path = Path(path)
    if not path.is_file():
        raise PireconUserError(f"checkpoint: expected an existing checkpoint file, found no file at {str(path)!r}")
    expected = f"{path}: expected a PyTorch checkpoint (zip file of tensors), found a corrupt or truncated file"
    if not zipfile.is_zipfile(path):
        raise PireconUserError(f"{expected} (not a readable zip archive)")
    try:
        checkpoint = torch.load(path, map_location=map_location, weights_only=True)
    except (pickle.UnpicklingError, zipfile.BadZipFile, EOFError, RuntimeError, ValueError, OSError) as err:
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise PireconUserError(f"{expected} ({reason[:200]})") from None
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        raise PireconUserError(f"{path}: expected a Lightning checkpoint with a 'state_dict', "
                               f"found {type(checkpoint).__name__} without one")
    return checkpoint


def file_sha256(path) -> str:
    """SHA-256 of a file's bytes, hex."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning checkpoint I/O with atomic saves and safe, clearly failing loads."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options: Any | None = None) -> None:
        if storage_options is not None:
            raise TypeError(f"AtomicCheckpointIO.save_checkpoint: expected no storage_options, found {storage_options!r}")
        with atomic_path(path) as tmp:
            torch.save(checkpoint, tmp)

    def load_checkpoint(self, path, map_location: Any | None = None, weights_only: bool | None = None) -> dict:
        return load_checkpoint(os.fspath(path), map_location=map_location or (lambda storage, loc: storage))


def use_atomic_checkpoints(trainer) -> None:
    """Give ``trainer`` :class:`AtomicCheckpointIO` unless it was configured with a checkpoint I/O of its own."""
    if type(trainer.strategy.checkpoint_io) is TorchCheckpointIO:
        trainer.strategy.checkpoint_io = AtomicCheckpointIO()
