"""Learned reconstructions: every model is called as ``model(y, physics)`` and returns a ``Reconstruction``.

``MODELS`` maps short names to the model classes (``MODELS["lpd"](iterations=10)``).
"""

from .acceleration import accelerate, cnn_blocks, fast_training_options
from .layers import ConvBlock, UNet, from_channels, num_channels, to_channels
from .lgd import LearnedGradientDescent
from .lpd import LearnedPrimalDual
from .modl import MoDL, conjugate_gradient
from .physics_tools import cartesian_mask, check_model_inputs, initial_image, operator_scale
from .postprocessing import PostProcessingUNet
from .reconstruction import Reconstruction
from .task_heads import ClassicalReconstruction, ClassificationHead, SegmentationHead, TaskAdapted
from .uncertainty_heads import ConstantWidthHead, DeepEnsemble, GaussianHead, MCDropoutHead, QuantileHead
from .varnet import NormalizedUNet, SensitivityNetwork, VarNet, calibration_mask

MODELS = {
    "lpd": LearnedPrimalDual,
    "lgd": LearnedGradientDescent,
    "modl": MoDL,
    "varnet": VarNet,
    "unet": PostProcessingUNet,
    "gaussian_head": GaussianHead,
    "quantile_head": QuantileHead,
    "mc_dropout": MCDropoutHead,
    "constant_width": ConstantWidthHead,
    "ensemble": DeepEnsemble,
    "classical": ClassicalReconstruction,
    "task_adapted": TaskAdapted,
}

__all__ = ["Reconstruction", "MODELS",
           "LearnedPrimalDual", "LearnedGradientDescent", "MoDL", "VarNet", "PostProcessingUNet",
           "ConvBlock", "UNet", "NormalizedUNet", "SensitivityNetwork", "to_channels", "from_channels",
           "num_channels", "initial_image", "operator_scale", "check_model_inputs", "cartesian_mask",
           "calibration_mask", "conjugate_gradient", "accelerate", "cnn_blocks", "fast_training_options",
           "GaussianHead", "QuantileHead", "MCDropoutHead", "DeepEnsemble", "ConstantWidthHead",
           "TaskAdapted", "SegmentationHead", "ClassificationHead", "ClassicalReconstruction"]
