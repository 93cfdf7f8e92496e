"""The model card of a training run (:mod:`pirecon.inference.card`), kept by a Lightning callback.

:class:`ModelCardWriter` (added to every ``pirecon fit`` run and to
:func:`pirecon.training.fit.fit_on_simulation`):

* every checkpoint carries the card as it stands when the checkpoint is saved, as plain data in
  ``checkpoint["pirecon_card"]`` (it loads with ``torch.load(weights_only=True)``);
* when fitting ends, rank 0 writes ``model_card.md`` and ``model_card.json`` into the checkpoint directory
  (:func:`card_directory`), with the names and SHA-256 of the best and last checkpoints;
* when a test ends (``pirecon test --ckpt_path ...``), the test metrics are added to the card beside the tested
  checkpoint (else in the checkpoint directory), if there is one.

A resumed run keeps the start time and adds the training time of the checkpoint it resumes from.
"""

from __future__ import annotations

import inspect
import platform
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.utilities import rank_zero_warn

from ..errors import PireconUserError
from ..inference.card import (CARD_FORMAT, CARD_JSON, METRIC_NAMES, ModelCard, describe_physics_line,
                              describe_simulation_line, plain_data, update_card)
from ..inference.checkpoint import checkpoint_stamp, file_sha256

__all__ = ["ModelCardWriter", "build_card", "card_directory"]

_DATASET_ONLY = ("length", "block_size", "rank", "world_size", "transform")
"""Options of the simulation dict that shape the loader, not the samples (kept out of the protocol)."""

_digests: dict[tuple[str, int, int], str] = {}


def _sha256(path: Path) -> str:
    """SHA-256 of a file, computed once per process for each (path, size, modification time)."""
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if key not in _digests:
        _digests[key] = file_sha256(path)
    return _digests[key]


def _utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _stage_metrics(metrics: dict, stage: str) -> dict[str, float]:
    """``{"psnr", "ssim", "nmse", "loss"}`` of ``stage`` ("val" or "test") among the logged metrics, as floats."""
    return {name: float(metrics[f"{stage}/{name}"]) for name in METRIC_NAMES if f"{stage}/{name}" in metrics}


def card_directory(trainer: "pl.Trainer") -> Path:
    """Where the card of ``trainer``'s run goes: its checkpoint directory
    (``trainer.checkpoint_callback.dirpath``), else ``trainer.default_root_dir``."""
    callback = trainer.checkpoint_callback
    directory = getattr(callback, "dirpath", None) if callback is not None else None
    return Path(directory if directory else trainer.default_root_dir)


# ---------------------------------------------------------------------------------------------------
# the card's sections
# ---------------------------------------------------------------------------------------------------

def _model_section(module) -> dict[str, Any]:
    from torch import nn

    network = getattr(module, "model", module)
    spec = module.hparams.get("model") if hasattr(module, "hparams") else None
    parameters = list(network.parameters())
    return {"class": type(network).__name__,
            "spec": None if spec is None or isinstance(spec, nn.Module) else plain_data(spec),
            "parameters": sum(p.numel() for p in parameters),
            "trainable_parameters": sum(p.numel() for p in parameters if p.requires_grad)}


def _physics_section(module) -> dict[str, Any]:
    builder = getattr(module, "batch_physics", None)
    description = plain_data(builder.description()) if builder is not None else \
        {"modality": None, "geometry": None, "noise": None}
    return {**description, "description": describe_physics_line(description) if builder is not None
            else "not known (the module had no physics)"}


def _file_entries(paths, checksums: bool) -> list[dict[str, Any]]:
    entries = []
    for path in paths:
        entry: dict[str, Any] = {"path": str(path)}
        if checksums:
            entry["sha256"] = _sha256(Path(path))
        entries.append(entry)
    return entries


def _simulation_protocol(simulation: dict) -> dict[str, Any]:
    """The simulation dict with ``modality``, ``phantom`` and ``seed`` filled in from
    :class:`SimulationDataset`'s defaults, without the loader options."""
    from ..data.datasets import SimulationDataset

    defaults = inspect.signature(SimulationDataset.__init__).parameters
    protocol = {key: defaults[key].default for key in ("modality", "phantom", "seed")}
    protocol.update({k: v for k, v in simulation.items() if k not in _DATASET_ONLY})
    return plain_data(protocol)


def _validation_data(datamodule, checksums: bool) -> dict[str, Any] | None:
    from .datamodule import resolve_files

    files = []
    if datamodule.val_files is not None:
        files += resolve_files(datamodule.val_files, "val")
    simulation = None
    if datamodule.val_simulation is not None:
        out = Path(datamodule.val_simulation["out"])
        if out.is_file():
            files.append(out)
        simulation = {k: v for k, v in datamodule._val_simulation_arguments().items() if k not in ("out", "progress")}
    if files:
        section: dict[str, Any] = {"files": _file_entries(files, checksums)}
        if simulation is not None:
            section["simulation"] = plain_data(simulation)
        return section
    if datamodule.lodopab is not None:
        return {"root": str(datamodule.lodopab["root"]), "part": "validation",
                "units": datamodule.lodopab.get("units", "mm")}
    return None


def _training_data_section(datamodule, checksums: bool) -> dict[str, Any]:
    from .datamodule import ReconstructionDataModule, resolve_files

    if not isinstance(datamodule, ReconstructionDataModule):
        name = "no data module" if datamodule is None else f"the data of {type(datamodule).__name__}"
        return {"source": "other", "description": name, "train": None, "validation": None}
    if datamodule.train_files is not None:
        files = resolve_files(datamodule.train_files, "train")
        noun = "file" if len(files) == 1 else "files"
        source, description = "files", f"{len(files)} raw training {noun} (first {Path(files[0]).name})"
        train: dict[str, Any] = {"files": _file_entries(files, checksums)}
    elif datamodule.simulation is not None:
        protocol = _simulation_protocol(datamodule.simulation)
        source, description = "simulation", describe_simulation_line(protocol)
        train = {"stream": True, "protocol": protocol, "samples_per_epoch": datamodule.simulation.get("length")}
    elif datamodule.lodopab is not None:
        source, description = "lodopab", "LoDoPaB-CT (train part)"
        train = {"root": str(datamodule.lodopab["root"]), "part": "train",
                 "units": datamodule.lodopab.get("units", "mm")}
    else:
        source, description, train = "other", "no training data", None
    return {"source": source, "description": description, "train": train,
            "validation": _validation_data(datamodule, checksums)}


def _schedule_section(trainer, module) -> dict[str, Any]:
    datamodule = trainer.datamodule
    loss = getattr(getattr(module, "loss", None), "weights", None)
    max_steps = trainer.max_steps if trainer.max_steps is not None and trainer.max_steps >= 0 else None
    max_epochs = trainer.max_epochs if trainer.max_epochs is not None and trainer.max_epochs >= 0 else None
    return plain_data({
        "optimizer": "Adam", "lr": getattr(module, "lr", None), "betas": getattr(module, "betas", None),
        "weight_decay": getattr(module, "weight_decay", None), "schedule": getattr(module, "schedule", None),
        "loss": loss, "max_steps": max_steps, "max_epochs": max_epochs,
        "batch_size": getattr(datamodule, "batch_size", None), "precision": str(trainer.precision),
        "accumulate_grad_batches": trainer.accumulate_grad_batches, "gradient_clip_val": trainer.gradient_clip_val,
    })


def _checkpoints_section(trainer, checksums: bool) -> dict[str, Any]:
    best = last = None
    for callback in trainer.checkpoint_callbacks:
        if best is None and callback.monitor is not None and callback.best_model_path:
            path = Path(callback.best_model_path)
            score = callback.best_model_score
            best = {"file": path.name, "monitor": callback.monitor, "mode": callback.mode,
                    "score": None if score is None else float(score)}
            if checksums and path.is_file():
                best["sha256"] = _sha256(path)
        if last is None and callback.last_model_path:
            path = Path(callback.last_model_path)
            last = {"file": path.name}
            if checksums and path.is_file():
                last["sha256"] = _sha256(path)
    return plain_data({"best": best, "last": last})


def build_card(trainer: "pl.Trainer", module: "pl.LightningModule", *, checksums: bool = True) -> dict[str, Any]:
    """The model card of ``trainer``'s run of ``module`` now, as plain JSON data (keys in
    :mod:`pirecon.inference.card`).

    Training times, the start time and the step of the last validation come from the trainer's
    :class:`ModelCardWriter` (without one: no times, and the last logged ``val/*`` metrics).
    ``checksums=False`` leaves out the files' SHA-256 (the card a checkpoint carries).
    """
    writer = next((c for c in trainer.callbacks if isinstance(c, ModelCardWriter)), None)
    if writer is not None and writer.validation is not None:
        validation, validation_step = writer.validation, writer.validation_step
    else:
        validation, validation_step = _stage_metrics(trainer.callback_metrics, "val"), None
    stamp = checkpoint_stamp()
    ckpt_path = getattr(trainer, "ckpt_path", None)
    training = {"steps": trainer.global_step, "epochs": trainer.current_epoch,
                "seconds": None if writer is None else round(writer.training_seconds(), 3),
                "started": None if writer is None else writer.started,
                "finished": None if writer is None else writer.finished,
                "resumed_from": None if writer is None else writer.resumed_from,
                "accelerator": type(trainer.accelerator).__name__.replace("Accelerator", "").lower() or None,
                "devices": trainer.num_devices}
    if writer is None and ckpt_path:
        training["resumed_from"] = Path(ckpt_path).name
    return plain_data({
        "card_format": CARD_FORMAT,
        "model": _model_section(module),
        "physics": _physics_section(module),
        "training_data": _training_data_section(trainer.datamodule, checksums),
        "schedule": _schedule_section(trainer, module),
        "training": training,
        "metrics": {"validation": validation, "validation_step": validation_step},
        "versions": {"pirecon": stamp["pirecon_version"], "torch": stamp["torch_version"],
                     "lightning": pl.__version__, "python": platform.python_version()},
        "checkpoints": _checkpoints_section(trainer, checksums),
        "known_limits": [],
    })


class ModelCardWriter(pl.Callback):
    """Keeps the model card of a run: in every checkpoint (``checkpoint["pirecon_card"]``), as
    ``model_card.md`` / ``model_card.json`` in the checkpoint directory when fitting ends, and with the test
    metrics once a test ends. Only rank 0 writes files."""

    def __init__(self):
        self._reset()

    def _reset(self) -> None:
        self.started: str | None = None
        """UTC ISO time training began (the first session's, for a resumed run)."""
        self.finished: str | None = None
        self.resumed_from: str | None = None
        self.validation: dict[str, float] | None = None
        """The last validation's metrics (``psnr`` in dB, ``ssim``, ``nmse``, ``loss``), ``None`` before one."""
        self.validation_step: int | None = None
        self._previous_seconds = 0.0
        self._clock: float | None = None
        self._seconds: float | None = None

    def training_seconds(self) -> float:
        """Wall-clock seconds of training so far (this session's, plus those of the run it resumed)."""
        if self._seconds is not None:
            return self._seconds
        running = 0.0 if self._clock is None else time.perf_counter() - self._clock
        return self._previous_seconds + running

    # ---- hooks -------------------------------------------------------------------------------------------

    def setup(self, trainer, pl_module, stage: str) -> None:
        if stage == "fit":
            self._reset()

    def on_load_checkpoint(self, trainer, pl_module, checkpoint: dict) -> None:
        card = checkpoint.get("pirecon_card")
        path = getattr(trainer, "ckpt_path", None)
        self.resumed_from = Path(path).name if path else None
        if not isinstance(card, dict):
            return
        training = card.get("training") or {}
        seconds = training.get("seconds")
        if isinstance(seconds, (int, float)) and not isinstance(seconds, bool):
            self._previous_seconds = float(seconds)
        self.started = training.get("started") or self.started
        metrics = card.get("metrics") or {}
        if isinstance(metrics.get("validation"), dict) and metrics["validation"]:
            self.validation, self.validation_step = dict(metrics["validation"]), metrics.get("validation_step")

    def on_train_start(self, trainer, pl_module) -> None:
        self._clock = time.perf_counter()
        self._seconds = None
        if self.started is None:
            self.started = _utc_now()

    def on_train_end(self, trainer, pl_module) -> None:
        self._seconds = self.training_seconds()
        self.finished = _utc_now()

    def on_validation_end(self, trainer, pl_module) -> None:
        if trainer.sanity_checking:
            return
        values = _stage_metrics(trainer.callback_metrics, "val")
        if values:
            self.validation, self.validation_step = values, trainer.global_step

    def on_save_checkpoint(self, trainer, pl_module, checkpoint: dict) -> None:
        checkpoint["pirecon_card"] = build_card(trainer, pl_module, checksums=False)

    def on_fit_end(self, trainer, pl_module) -> None:
        if trainer.is_global_zero:
            ModelCard(build_card(trainer, pl_module)).write(card_directory(trainer))

    def on_test_end(self, trainer, pl_module) -> None:
        if not trainer.is_global_zero:
            return
        values = _stage_metrics(trainer.callback_metrics, "test")
        if not values:
            return
        tested = getattr(trainer, "ckpt_path", None)
        candidates = ([Path(tested).parent] if tested else []) + [card_directory(trainer)]
        directory = next((d for d in candidates if (d / CARD_JSON).is_file()), None)
        if directory is None:
            return
        try:
            update_card(directory, metrics={"test": values, "test_checkpoint": Path(tested).name if tested else None})
        except PireconUserError as err:  # a card someone broke: the test results stand, the card is left alone
            rank_zero_warn(f"model card not updated with the test metrics: {err}")
