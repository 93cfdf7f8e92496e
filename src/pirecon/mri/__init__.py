"""Magnetic resonance imaging: centred FFTs, sampling, coil sensitivities, SENSE and NUFFT operators."""

from .baselines import rss, sense_adjoint, zero_filled
from .coils import birdcage_maps, espirit_maps
from .fft import fft2c, fft3c, ifft2c, ifft3c
from .masks import EquispacedMask, MaskSample, RandomMask, VariableDensityMask
from .nufft import NUFFTOperator
from .operators import FourierOperator, SenseOperator
from .trajectories import GOLDEN_ANGLE, check_trajectory, radial_trajectory

__all__ = [
    "fft2c", "ifft2c", "fft3c", "ifft3c",
    "RandomMask", "EquispacedMask", "VariableDensityMask", "MaskSample",
    "radial_trajectory", "check_trajectory", "GOLDEN_ANGLE",
    "birdcage_maps", "espirit_maps",
    "FourierOperator", "SenseOperator", "NUFFTOperator",
    "zero_filled", "rss", "sense_adjoint",
]
