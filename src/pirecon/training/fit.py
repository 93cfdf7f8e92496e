"""Train a model on data simulated on the fly, in one call (the main job and the ablations use it).

    checkpoint = fit_on_simulation(out, val_file, model=spec, simulation={...}, steps=1200)
"""

from __future__ import annotations

import logging
import time
import warnings
from contextlib import contextmanager
from pathlib import Path

import pytorch_lightning as pl
from pytorch_lightning.callbacks import ModelCheckpoint
from pytorch_lightning.loggers import CSVLogger, TensorBoardLogger

from .._progress import bar_enabled
from .card import ModelCardWriter
from .checkpoints import use_atomic_checkpoints
from .datamodule import ReconstructionDataModule
from .module import ReconstructionModule

__all__ = ["fit_on_simulation", "quiet_lightning", "StepLines"]


@contextmanager
def quiet_lightning():
    """Lightning without its start-up notices (accelerator lines, logger adverts) and without the
    deprecation warnings its own code triggers in torch; warnings and errors still show."""
    logger = logging.getLogger("pytorch_lightning")
    level = logger.level
    logger.setLevel(logging.WARNING)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=r".*LeafSpec.*")
            yield
    finally:
        logger.setLevel(level)


class StepLines(pl.Callback):
    """One line per tenth of the run (step, training loss, last validation PSNR, seconds) and the final
    validation PSNR: the progress report for logs, where a progress bar would write a line per update."""

    def __init__(self, steps: int, parts: int = 10):
        self.every = max(1, steps // parts)
        self.steps = steps
        self.start = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        step = trainer.global_step
        if step % self.every and step != self.steps:
            return
        self._line(trainer)

    def on_train_end(self, trainer, pl_module) -> None:
        if "val/psnr" in trainer.callback_metrics:  # the last validation runs after the last step's line
            print(f"  final validation PSNR {float(trainer.callback_metrics['val/psnr']):.2f} dB", flush=True)

    def _line(self, trainer) -> None:
        step = trainer.global_step
        metrics = trainer.callback_metrics
        parts = [f"step {step}/{self.steps}"]
        if "train/loss" in metrics:
            parts.append(f"loss {float(metrics['train/loss']):.3e}")
        if "val/psnr" in metrics:
            parts.append(f"validation PSNR {float(metrics['val/psnr']):.2f} dB")
        parts.append(f"{time.perf_counter() - self.start:.0f} s")
        print("  " + ", ".join(parts), flush=True)


def fit_on_simulation(out: Path, val_file: Path, *, model: dict, simulation: dict, steps: int, lr: float,
                      batch_size: int = 2, seed: int = 0, progress: bool = True, precision: str = "32-true",
                      channels_last: bool = False, compile: bool = False, schedule: str = "cosine",
                      pretrained_reconstruction: str | Path | None = None, resume: bool = False,
                      reconstruction_lr: float | None = None, balance_task_loss: bool = False) -> Path:
    """Train ``model`` (a model spec) for ``steps`` steps on the stream of ``simulation`` (the options of
    :class:`pirecon.data.datasets.SimulationDataset`), validating on ``val_file`` every 200 steps; Adam
    (betas 0.9, 0.99) with ``schedule`` (cosine decay from ``lr`` by default), gradient-norm clipping at 1,
    checkpoints every tenth of the run and CSV/TensorBoard logs under ``out/training``. ``precision`` is Lightning's,
    ``channels_last`` and ``compile`` those of :func:`pirecon.models.accelerate`
    (:func:`pirecon.models.fast_training_options` gives the fastest this machine supports);
    ``pretrained_reconstruction`` the checkpoint a task-adapted model's backbone starts from
    (:class:`ReconstructionModule`, as are ``reconstruction_lr`` and ``balance_task_loss``). With ``resume``, a run killed before its last step continues from its
    ``last.ckpt`` (a finished run returns at once). Returns the last checkpoint."""
    with quiet_lightning():
        pl.seed_everything(seed, verbose=False)
        root = Path(out) / "training"
        datamodule = ReconstructionDataModule(simulation=simulation, val=str(val_file), batch_size=batch_size)
        module = ReconstructionModule(model, lr=lr, betas=(0.9, 0.99), schedule=schedule,
                                      channels_last=channels_last, compile=compile,
                                      pretrained_reconstruction=None if pretrained_reconstruction is None
                                      else str(pretrained_reconstruction),
                                      reconstruction_lr=reconstruction_lr, balance_task_loss=balance_task_loss)
        checkpoints = ModelCheckpoint(root / "checkpoints", save_last=True, every_n_train_steps=max(1, steps // 10))
        trainer = pl.Trainer(
            max_steps=steps, accelerator="auto", precision=precision, devices=1, gradient_clip_val=1.0,
            default_root_dir=root, val_check_interval=max(1, min(steps, 200)), check_val_every_n_epoch=None,
            limit_val_batches=2,
            logger=[CSVLogger(root, name="", version=""), TensorBoardLogger(root, name="", version="")],
            callbacks=[checkpoints, ModelCardWriter()]
            + ([] if bar_enabled(progress) or not progress else [StepLines(steps)]),
            enable_progress_bar=bar_enabled(progress), enable_model_summary=False)
        use_atomic_checkpoints(trainer)
        last = root / "checkpoints" / "last.ckpt"
        trainer.fit(module, datamodule=datamodule, ckpt_path=str(last) if resume and last.is_file() else None)
        return last
