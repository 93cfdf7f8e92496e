"""``ReconstructionModule``: any pirecon model, trained end to end from raw data with Lightning.

    module = ReconstructionModule({"class_path": "lpd", "init_args": {"iterations": 10}}, loss={"mse": 1.0})
    trainer.fit(module, datamodule=ReconstructionDataModule(...))

Each batch's physics comes from the data through :mod:`pirecon.data.acquisition` (``BatchPhysics``):
the CT geometry of the files or the simulation, the MRI coil maps and masks of the batch. A
checkpoint stores the physics it was trained with; resuming or testing on data whose physics
differs is an error naming both, unless ``physics_mismatch="use_data"`` (geometry-agnostic models).
Training minimises a weighted sum of MSE, L1 and 1 - SSIM, plus an uncertainty head's own loss
(``model.uncertainty_loss``: Gaussian NLL, pinball); a task-adapted model
(:class:`pirecon.models.TaskAdapted`) minimises ``(1 - C)`` times that plus ``C`` times its task loss on the
batch's ``segmentation`` and ``label``. Validation and test log PSNR, SSIM and NMSE (per image, averaged,
synchronised across DDP ranks), an uncertainty head's miscoverage and interval width, a task model's task loss,
Dice and label accuracy, and, on the first validation batch, a figure of ground
truth, classical input, reconstruction and error (PNG under the log directory, and to TensorBoard). Adam with a cosine
decay of the learning rate to zero over the run's steps (``schedule="cosine"``) or a constant rate.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from torch import nn

from .._validation import check_choice, check_positive
from ..errors import ConfigError
from ..metrics import nmse, psnr, ssim
from ..data.acquisition import BatchPhysics, check_same_physics, measurement
from ..models import accelerate
from .batch_physics import target_and_prediction
from .losses import ReconstructionLoss
from ..models.registry import build_model
from ..tasks import dice
from ..uncertainty import Interval, mean_width, miscoverage

__all__ = ["ReconstructionModule", "load_module", "learning_rate_factor", "SCHEDULES"]

SCHEDULES = ("cosine", "onecycle", "constant")
WARMUP_FRACTION = 0.1
"""Share of the run over which ``onecycle`` warms the learning rate up from ``lr / 25`` to ``lr``."""


def learning_rate_factor(schedule: str, step: int, total: int) -> float:
    """The learning rate at optimiser step ``step`` of ``total``, as a multiple of ``lr``.

    ``cosine``: ``(1 + cos(pi t)) / 2`` with ``t = step / total``; ``onecycle``: linear from 1/25 to 1 over
    the first 10% of the steps, then the cosine decay to 0 over the rest; ``constant``: 1.
    """
    t = min(step, total) / total
    if schedule == "constant":
        return 1.0
    if schedule == "onecycle":
        if t < WARMUP_FRACTION:
            return 1 / 25 + (1 - 1 / 25) * t / WARMUP_FRACTION
        t = (t - WARMUP_FRACTION) / (1 - WARMUP_FRACTION)
    return 0.5 * (1 + math.cos(math.pi * t))


def _magnitude(x: torch.Tensor) -> torch.Tensor:
    return x.abs() if x.is_complex() else x


class ReconstructionModule(pl.LightningModule):
    """Trains a reconstruction model ``model(y, physics) -> Reconstruction`` on raw data.

    Parameters
    ----------
    model : dict or nn.Module
        ``{"class_path": "lpd", "init_args": {...}}`` (see :mod:`pirecon.models.registry`), or a
        ready module (then ``load_from_checkpoint`` needs ``model=`` again: a module is not stored in
        the checkpoint's hyperparameters).
    loss : dict
        Weights ``{"mse": ..., "l1": ..., "ssim": ...}`` of :class:`ReconstructionLoss`.
    lr, betas, weight_decay : Adam's learning rate, betas and weight decay.
    schedule : {"cosine", "onecycle", "constant"}
        Cosine decay of the learning rate to 0 over the run's optimiser steps; the same after a linear
        warm-up from ``lr / 25`` over the first 10% (one-cycle); or constant
        (:func:`learning_rate_factor`).
    backend : str
        CT operator backend (``"auto"``, ``"sparse"``, ``"astra"``, ``"odl"``).
    missing_coil_maps : {"espirit", "uniform"}
        How MRI batches without coil maps get their physics (see :class:`BatchPhysics`).
    log_images_every_n_epochs : int
        Write the validation figure every this many epochs (0: never).
    num_logged_images : int
        Images in the validation figure.
    channels_last, compile : bool
        Training speed-ups applied when fitting starts (:func:`pirecon.models.accelerate`): NHWC
        convolution weights, and CNN blocks compiled with ``torch.compile``. Evaluation, prediction and
        :func:`load_module` run the plain model. Mixed precision is the trainer's
        ``precision="bf16-mixed"`` (CPU and GPU).
    physics_mismatch : {"error", "use_data"}
        When a checkpoint's stored physics (modality, CT geometry, noise model) differs from the data's
        on resume or test: refuse with an error naming both, or use the data's physics (for models that
        do not depend on one geometry).
    pretrained_reconstruction : str or None
        A checkpoint of a plain reconstruction run whose weights a task-adapted model's backbone starts from
        when fitting starts (sequential training freezes them there).
    reconstruction_lr : float or None
        Adam's learning rate for a task-adapted model's backbone (default ``lr``, the heads' rate): a
        trained backbone fine-tuned jointly keeps its image quality at a lower rate than heads learning from
        scratch need.
    balance_task_loss : bool
        Task-adapted models: train on ``(1 - C) l_rec / m_rec + C l_task / m_task``, each loss divided by
        its running mean (momentum 0.99, no gradient), so that C weighs the relative changes of the two
        losses. Without it, an MSE near 1e-4 beside a task loss near 0.5 gives the task most of the
        backbone's gradient at any C above about 1e-3.
    """

    def __init__(self, model: dict[str, Any] | nn.Module, loss: dict[str, float] | None = None, lr: float = 1e-3,
                 betas: tuple[float, float] = (0.9, 0.99), weight_decay: float = 0.0, schedule: str = "cosine",
                 backend: str = "auto", missing_coil_maps: str = "espirit", log_images_every_n_epochs: int = 1,
                 num_logged_images: int = 4, physics_mismatch: str = "error", channels_last: bool = False,
                 compile: bool = False, pretrained_reconstruction: str | None = None,
                 reconstruction_lr: float | None = None, balance_task_loss: bool = False):
        super().__init__()
        self.save_hyperparameters(ignore=["model"] if isinstance(model, nn.Module) else None)
        self.model = build_model(model)
        self.loss = ReconstructionLoss(**(loss if loss is not None else {"mse": 1.0}))
        self.lr = float(check_positive(lr, "lr"))
        if not (isinstance(betas, (tuple, list)) and len(betas) == 2 and all(0 <= b < 1 for b in betas)):
            raise ValueError(f"betas: expected two numbers in [0, 1), found {betas!r}")
        self.betas = tuple(float(b) for b in betas)
        if not weight_decay >= 0:
            raise ValueError(f"weight_decay: expected a non-negative number, found {weight_decay!r}")
        self.weight_decay = float(weight_decay)
        self.schedule = check_choice(schedule, "schedule", SCHEDULES)
        self.backend = backend
        self.missing_coil_maps = check_choice(missing_coil_maps, "missing_coil_maps", ("espirit", "uniform"))
        if isinstance(log_images_every_n_epochs, bool) or not isinstance(log_images_every_n_epochs, int) \
                or log_images_every_n_epochs < 0:
            raise ValueError(f"log_images_every_n_epochs: expected an integer >= 0, found {log_images_every_n_epochs!r}")
        self.log_images_every_n_epochs = log_images_every_n_epochs
        self.num_logged_images = int(check_positive(num_logged_images, "num_logged_images", integer=True))
        self.physics_mismatch = check_choice(physics_mismatch, "physics_mismatch", ("error", "use_data"))
        self.batch_physics: BatchPhysics | None = None
        self.channels_last, self.compile_blocks = bool(channels_last), bool(compile)
        if pretrained_reconstruction is not None and not hasattr(self.model, "load_reconstruction"):
            raise ValueError(f"pretrained_reconstruction: expected a task-adapted model (TaskAdapted), found "
                             f"{type(self.model).__name__}")
        self.pretrained_reconstruction = pretrained_reconstruction
        is_task_model = hasattr(self.model, "task_loss")
        for name, value in (("reconstruction_lr", reconstruction_lr), ("balance_task_loss", balance_task_loss)):
            if value not in (None, False) and not is_task_model:
                raise ValueError(f"{name}: expected a task-adapted model (TaskAdapted), found "
                                 f"{type(self.model).__name__}")
        self.reconstruction_lr = None if reconstruction_lr is None else \
            float(check_positive(reconstruction_lr, "reconstruction_lr"))
        self.balance_task_loss = bool(balance_task_loss)
        # running means of (l_rec, l_task) for balance_task_loss; 0 until the first step (saved, so resumes keep them)
        self.register_buffer("task_loss_means", torch.zeros(2), persistent=self.balance_task_loss)

    # ---- physics ---------------------------------------------------------

    def set_physics(self, modality: str, geometry=None, noise=None) -> None:
        """Fix the physics of the data this module reconstructs (the datamodule does this in ``setup``)."""
        self.batch_physics = BatchPhysics(modality, geometry, noise, backend=self.backend,
                                          missing_coil_maps=self.missing_coil_maps)

    def setup(self, stage: str) -> None:
        datamodule = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        if datamodule is not None and hasattr(datamodule, "physics_description"):
            modality, geometry, noise = datamodule.physics_description()
            self.set_physics(modality, geometry, noise)
        elif self.batch_physics is None:
            raise ValueError("ReconstructionModule: expected a ReconstructionDataModule or set_physics(...) to know "
                             "the data's physics, found neither")

    def on_fit_start(self) -> None:
        if self.pretrained_reconstruction is not None and self.global_step == 0:  # not again on resume
            from ..inference.checkpoint import read_checkpoint

            checkpoint, _ = read_checkpoint(self.pretrained_reconstruction, map_location="cpu")
            self.model.load_reconstruction(checkpoint["state_dict"])
        accelerate(self.model, channels_last=self.channels_last, compile=self.compile_blocks)

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        from ..inference.checkpoint import checkpoint_stamp

        checkpoint["pirecon"] = checkpoint_stamp()
        if self.batch_physics is not None:
            checkpoint["pirecon_physics"] = self.batch_physics.description()

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        description = checkpoint.get("pirecon_physics")
        if description is not None and self.batch_physics is not None:  # the data's, set in setup()
            if self.physics_mismatch == "use_data":
                return
            trainer = self._trainer
            source = getattr(trainer, "ckpt_path", None) if trainer is not None else None
            check_same_physics(description, self.batch_physics.description(),
                               stored_name=f"the checkpoint {source}" if source else "the checkpoint",
                               found_name="the data (set physics_mismatch='use_data' to use the data's physics)")
            return
        if description is not None:
            from ..ct import geometry_from_dict
            from ..noise import noise_from_dict

            geometry = None if description["geometry"] is None else geometry_from_dict(description["geometry"])
            noise = None if description["noise"] is None else noise_from_dict(description["noise"])
            self.set_physics(description["modality"], geometry, noise)

    @classmethod
    def load_from_checkpoint(cls, checkpoint_path, map_location=None, hparams_file=None, strict=None,
                             models: dict[str, type] | None = None, **kwargs) -> "ReconstructionModule":
        """Lightning's loader routed through :func:`load_module`: ``weights_only=True``, nothing the checkpoint
        names imported. ``hparams_file`` and overriding hyperparameters are not supported."""
        if hparams_file is not None or kwargs or strict is False:
            given = sorted(kwargs) + (["hparams_file"] if hparams_file is not None else []) + \
                (["strict=False"] if strict is False else [])
            raise ConfigError(f"load_from_checkpoint: expected only checkpoint_path, map_location and models, found "
                              f"{', '.join(given)}; the checkpoint defines the module")
        return load_module(checkpoint_path, map_location=map_location, models=models)

    # ---- steps -----------------------------------------------------------

    def forward(self, y: torch.Tensor, physics):
        """``model(y, physics)``: a :class:`pirecon.models.Reconstruction`."""
        return self.model(y, physics)

    def _reconstruct(self, batch: dict):
        if self.batch_physics is None:
            raise ValueError("ReconstructionModule: no physics; call set_physics(...) or train with a datamodule")
        physics = self.batch_physics(batch)
        y = measurement(batch)
        if getattr(self.model, "task_input", None) == "truth":  # the oracle's heads read the ground truth
            return physics, y, self.model(y, physics, truth=batch.get("ground_truth"))
        return physics, y, self.model(y, physics)

    def _task_loss(self, reconstruction, batch: dict) -> torch.Tensor:
        return self.model.task_loss(reconstruction, batch.get("segmentation"), batch.get("label"))

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        _, y, reconstruction = self._reconstruct(batch)
        target, prediction = target_and_prediction(batch, reconstruction.image)
        loss = self.loss(prediction, target)
        if hasattr(self.model, "uncertainty_loss"):  # an uncertainty head: its own loss beside the reconstruction's
            head_loss = self.model.uncertainty_loss(reconstruction, target)
            self.log("train/uncertainty_loss", head_loss, batch_size=y.shape[0])
            loss = loss + head_loss
        if hasattr(self.model, "task_loss"):  # task-adapted: (1 - C) l_rec + C l_task
            task_loss = self._task_loss(reconstruction, batch)
            self.log("train/task_loss", task_loss, batch_size=y.shape[0])
            if self.balance_task_loss:
                loss, task_loss = self._balanced(loss, task_loss)
            reconstruction_weight, task_weight = self.model.loss_weights()
            loss = reconstruction_weight * loss + task_weight * task_loss
        self.log("train/loss", loss, prog_bar=True, batch_size=y.shape[0])
        return loss

    def _balanced(self, reconstruction_loss: torch.Tensor, task_loss: torch.Tensor):
        """Both losses divided by their running means (updated here, momentum 0.99; the first step's values
        start them)."""
        current = torch.stack([reconstruction_loss.detach(), task_loss.detach()]).float()
        means = self.task_loss_means
        means.copy_(torch.where(means > 0, 0.99 * means + 0.01 * current, current))
        scale = means.clamp_min(torch.finfo(torch.float32).tiny)
        return reconstruction_loss / scale[0], task_loss / scale[1]

    def _evaluate(self, batch: dict, batch_idx: int, stage: str) -> None:
        physics, y, reconstruction = self._reconstruct(batch)
        target, prediction = target_and_prediction(batch, reconstruction.image)
        batch_size = y.shape[0]
        self.log(f"{stage}/loss", self.loss(prediction, target), batch_size=batch_size, sync_dist=True)
        magnitude, reference = _magnitude(prediction).float(), _magnitude(target).float()
        scores = {"psnr": psnr(magnitude, reference), "ssim": ssim(magnitude, reference),
                  "nmse": nmse(prediction, target)}
        interval = reconstruction.uncertainty
        if isinstance(interval, Interval) and interval.center.shape == reference.shape:
            scores["miscoverage"] = miscoverage(interval, reference)
            scores["interval_width"] = mean_width(interval)
        if hasattr(self.model, "task_loss"):
            self.log(f"{stage}/task_loss", self._task_loss(reconstruction, batch), batch_size=batch_size,
                     sync_dist=True)
            task = reconstruction.task
            if "segmentation" in task:
                scores["dice"] = dice(task["segmentation"].float(), batch["segmentation"]).float().to(y.device)
            if "label" in task:
                scores["label_accuracy"] = ((task["label"] > 0.5) == (batch["label"].reshape(-1) > 0)).float()
        for name, values in scores.items():
            self.log(f"{stage}/{name}", values.mean(), batch_size=batch_size, sync_dist=True,
                     prog_bar=(name == "psnr"))
        if stage == "val" and batch_idx == 0 and self._should_log_images():
            from ..models.physics_tools import initial_image
            from .figures import log_image_grid

            with torch.no_grad():
                start = target_and_prediction(batch, initial_image(y, physics))[1]
            log_image_grid(self, reference, _magnitude(start), magnitude, self.num_logged_images)

    def _should_log_images(self) -> bool:
        every = self.log_images_every_n_epochs
        return every > 0 and self.current_epoch % every == 0 and self.global_rank == 0 \
            and not self.trainer.sanity_checking

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        self._evaluate(batch, batch_idx, "val")

    def test_step(self, batch: dict, batch_idx: int) -> None:
        self._evaluate(batch, batch_idx, "test")

    def predict_step(self, batch: dict, batch_idx: int, dataloader_idx: int = 0) -> dict:
        _, _, reconstruction = self._reconstruct(batch)
        out = {"image": reconstruction.image.detach()}
        for key in ("file", "slice", "index"):
            if key in batch:
                out[key] = batch[key]
        return out

    # ---- optimisation ------------------------------------------------------

    def configure_optimizers(self):
        groups = [{"params": list(self.model.parameters())}]
        if self.reconstruction_lr is not None:  # the task-adapted backbone at its own rate, the heads at lr
            backbone = {id(p) for p in self.model.reconstruction.parameters()}
            groups = [{"params": [p for p in self.model.reconstruction.parameters()], "lr": self.reconstruction_lr},
                      {"params": [p for p in self.model.parameters() if id(p) not in backbone]}]
        optimizer = torch.optim.Adam(groups, lr=self.lr, betas=self.betas, weight_decay=self.weight_decay)
        if self.schedule == "constant":
            return optimizer
        total = self.trainer.estimated_stepping_batches
        if not math.isfinite(total) or total <= 0:
            raise ValueError(f"schedule: {self.schedule!r} needs a finite run; expected trainer.max_steps or "
                             f"max_epochs with a finite dataset, found {total} steps")
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda step: learning_rate_factor(self.schedule, step, total))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def log_directory(self) -> Path:
        """Where this run writes its figures: the first logger's directory, else the trainer's root."""
        trainer = self.trainer
        for logger in trainer.loggers:
            directory = getattr(logger, "log_dir", None)
            if directory:
                return Path(directory)
        return Path(trainer.default_root_dir)


def load_module(path, map_location=None, models: dict[str, type] | None = None) -> ReconstructionModule:
    """A trained :class:`ReconstructionModule` from a checkpoint, loaded with ``weights_only=True``.

    The model is rebuilt from the spec stored in the checkpoint's hyperparameters and the physics
    (CT geometry and noise) from the checkpoint, so ``module(y, module.batch_physics(batch))`` works
    without a datamodule. Nothing the checkpoint names is imported: its model must be one of
    pirecon's or a class passed in ``models`` (``{"mypackage.MyNet": MyNet}``).
    """
    from .checkpoints import load_checkpoint

    checkpoint = load_checkpoint(path, map_location=map_location)
    hparams = {k: v for k, v in checkpoint.get("hyper_parameters", {}).items() if not k.startswith("_")}
    if "model" not in hparams:
        raise ValueError(f"{path}: expected the model's class_path/init_args in the checkpoint's hyperparameters, "
                         "found none (the module was built from a ready nn.Module)")
    try:
        model = build_model(hparams["model"], allow_import=False, models=models)
    except ValueError as err:
        raise ConfigError(f"{path}: {err}") from None
    module = ReconstructionModule(**{**hparams, "model": model})
    module.hparams["model"] = hparams["model"]  # the spec, not the instance, goes into checkpoints saved again
    module.load_state_dict(checkpoint["state_dict"])
    module.on_load_checkpoint(checkpoint)
    return module.eval()
