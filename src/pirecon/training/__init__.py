"""Training: the Lightning module, losses, checkpoints, the prediction writer and the ``pirecon fit`` CLI."""

from .batch_physics import BatchPhysics, center_crop, measurement, target_and_prediction
from .checkpoints import AtomicCheckpointIO, load_checkpoint
from .datamodule import ReconstructionDataModule
from .losses import ReconstructionLoss
from ..models.registry import build_model
from ..metrics import nmse
from .module import ReconstructionModule, load_module
from .writer import ReconstructionWriter

__all__ = ["ReconstructionModule", "ReconstructionDataModule", "ReconstructionLoss", "BatchPhysics", "AtomicCheckpointIO", "ReconstructionWriter",
           "build_model", "load_checkpoint", "load_module", "measurement", "target_and_prediction", "center_crop",
           "nmse"]
