"""Train a model on data simulated on the fly, in one call (the main job and the ablations use it).

    checkpoint = fit_on_simulation(out, val_file, model=spec, simulation={...}, steps=1200)
"""

from __future__ import annotations

from pathlib import Path

import pytorch_lightning as pl
from pytorch_lightning.callbacks import ModelCheckpoint
from pytorch_lightning.loggers import CSVLogger, TensorBoardLogger

from .checkpoints import use_atomic_checkpoints
from .datamodule import ReconstructionDataModule
from .module import ReconstructionModule

__all__ = ["fit_on_simulation"]


def fit_on_simulation(out: Path, val_file: Path, *, model: dict, simulation: dict, steps: int, lr: float,
                      batch_size: int = 2, seed: int = 0, progress: bool = True) -> Path:
    """Train ``model`` (a model spec) for ``steps`` steps on the stream of ``simulation`` (the options of
    :class:`pirecon.data.datasets.SimulationDataset`), validating on ``val_file`` every 200 steps; Adam
    (betas 0.9, 0.99) with cosine decay from ``lr``, gradient-norm clipping at 1, checkpoints every tenth
    of the run and CSV/TensorBoard logs under ``out/training``. Returns the last checkpoint."""
    pl.seed_everything(seed, verbose=False)
    root = Path(out) / "training"
    datamodule = ReconstructionDataModule(simulation=simulation, val=str(val_file), batch_size=batch_size)
    module = ReconstructionModule(model, lr=lr, betas=(0.9, 0.99), schedule="cosine")
    checkpoints = ModelCheckpoint(root / "checkpoints", save_last=True, every_n_train_steps=max(1, steps // 10))
    trainer = pl.Trainer(
        max_steps=steps, accelerator="auto", devices=1, gradient_clip_val=1.0, default_root_dir=root,
        val_check_interval=max(1, min(steps, 200)), check_val_every_n_epoch=None, limit_val_batches=2,
        logger=[CSVLogger(root, name="", version=""), TensorBoardLogger(root, name="", version="")],
        callbacks=[checkpoints], enable_progress_bar=progress, enable_model_summary=False)
    use_atomic_checkpoints(trainer)
    trainer.fit(module, datamodule=datamodule)
    return root / "checkpoints" / "last.ckpt"
