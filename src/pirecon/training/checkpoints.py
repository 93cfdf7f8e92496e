"""Checkpoint files: written atomically; read by :func:`pirecon.inference.checkpoint.load_checkpoint`.

Lightning's ``TorchCheckpointIO`` writes in place, so a job killed while saving leaves a truncated
``last.ckpt`` that looks whole; :class:`AtomicCheckpointIO` writes a temporary file and renames
it. Loading never unpickles arbitrary objects: checkpoints hold tensors, numbers, strings and
plain containers only (the model is stored as its ``class_path``/``init_args`` spec).
"""

from __future__ import annotations

import os
from typing import Any

import torch
from lightning_fabric.plugins.io.torch_io import TorchCheckpointIO

from .._atomic import atomic_path
from ..inference.checkpoint import file_sha256, load_checkpoint

__all__ = ["AtomicCheckpointIO", "use_atomic_checkpoints", "load_checkpoint", "file_sha256"]


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
