"""``ReconstructionWriter``: ``pirecon predict`` writes one reconstruction file per raw input file.

Slices arrive batch by batch; when every slice of an input file has been reconstructed, the
images are written (``data_specs/reconstruction.md``, atomically) as ``OUT/<input stem>_<model>.h5``
with provenance: the method, the source file, the checkpoint's SHA-256 and the geometry.
"""

from __future__ import annotations

from pathlib import Path

import torch
from pytorch_lightning.callbacks import BasePredictionWriter

__all__ = ["ReconstructionWriter"]


class ReconstructionWriter(BasePredictionWriter):
    """Writes the predictions of a file dataset (:class:`pirecon.data.H5SliceDataset`) to ``output_dir``."""

    def __init__(self, output_dir: str = "reconstructions"):
        super().__init__(write_interval="batch")
        self.output_dir = Path(output_dir)
        self._buffers: dict[int, dict[int, torch.Tensor]] = {}

    def on_predict_start(self, trainer, pl_module) -> None:
        if trainer.world_size > 1:
            raise ValueError(f"predict: expected one device (each file is written whole by one process), "
                             f"found {trainer.world_size} processes; run predict with --trainer.devices 1")
        self._buffers = {}

    def _dataset(self, trainer, dataloader_idx: int):
        from ..data.datasets import H5SliceDataset

        loaders = trainer.predict_dataloaders
        loader = loaders[dataloader_idx] if isinstance(loaders, (list, tuple)) else loaders
        dataset = loader.dataset
        if not isinstance(dataset, H5SliceDataset):
            raise ValueError(f"predict: expected raw files to reconstruct (data.predict), found {type(dataset).__name__}")
        return dataset

    def write_on_batch_end(self, trainer, pl_module, prediction, batch_indices, batch, batch_idx, dataloader_idx):
        dataset = self._dataset(trainer, dataloader_idx)
        images = prediction["image"].cpu()
        for image, file_index, slice_index in zip(images, prediction["file"].tolist(), prediction["slice"].tolist()):
            buffer = self._buffers.setdefault(file_index, {})
            buffer[slice_index] = image
            if len(buffer) == dataset.num_slices[file_index]:
                self._write(trainer, pl_module, dataset.paths[file_index], buffer)
                del self._buffers[file_index]

    def _write(self, trainer, pl_module, source: Path, buffer: dict[int, torch.Tensor]) -> None:
        from ..data.formats import write_reconstruction
        from .checkpoints import file_sha256

        images = torch.stack([buffer[i] for i in sorted(buffer)])
        method = type(pl_module.model).__name__
        provenance = {"method": method, "source_file": str(source)}
        ckpt = trainer.ckpt_path
        if ckpt:
            provenance["checkpoint_sha256"] = file_sha256(ckpt)
            provenance["checkpoint"] = str(ckpt)
        description = getattr(pl_module, "_physics_description", None) or {}
        if description.get("geometry") is not None:
            provenance["geometry"] = description["geometry"]
        out = write_reconstruction(self.output_dir / f"{source.stem}_{method}.h5", images.numpy(), provenance=provenance)
        print(f"wrote {out} ({len(images)} slices of {source})", flush=True)

    def on_predict_epoch_end(self, trainer, pl_module) -> None:
        if self._buffers:
            missing = {k: len(v) for k, v in self._buffers.items()}
            raise ValueError(f"predict: expected every slice of each file, found files with slices missing "
                             f"(file index: slices seen) {missing}")
