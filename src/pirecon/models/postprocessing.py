"""Post-processing U-Net, FBPConvNet (Jin, McCann, Froustey & Unser 2017, "Deep Convolutional Neural Network
for Inverse Problems in Imaging", IEEE TIP 26(9)).

A classical reconstruction ``x_0`` (filtered back-projection for CT, ``A^H y`` for MRI) is corrected by a
residual U-Net:

    x = x_0 + UNet(x_0)

Complex images enter the U-Net as 2 real channels.
"""

from __future__ import annotations

import torch
from torch import nn

from .._validation import check_choice
from ..ct.filtered_backprojection import FILTERS
from .layers import UNet, from_channels, to_channels
from .physics_tools import check_model_inputs, initial_image
from .reconstruction import Reconstruction

__all__ = ["PostProcessingUNet"]


class PostProcessingUNet(nn.Module):
    """FBPConvNet: ``model(y, physics) -> Reconstruction``.

    Parameters
    ----------
    channels : int
        Features of the U-Net at full resolution, doubled at each level (64 in the paper).
    depth : int
        Poolings of the U-Net (4 in the paper).
    filter : str
        FBP filter of the starting image for CT (``"ram-lak"``, ``"shepp-logan"``, ``"cosine"``,
        ``"hamming"``, ``"hann"``); unused for MRI.
    complex_data : bool
        ``True`` for complex images and measurements (MRI), ``False`` for real ones (CT).
    """

    def __init__(self, channels: int = 32, depth: int = 4, filter: str = "hann", complex_data: bool = False):
        super().__init__()
        self.filter = check_choice(filter, "filter", FILTERS)
        self.complex_data = bool(complex_data)
        width = 2 if complex_data else 1
        self.unet = UNet(width, width, channels, depth)

    def forward(self, y: torch.Tensor, physics) -> Reconstruction:
        check_model_inputs(y, physics, "PostProcessingUNet", self.complex_data)
        x0 = initial_image(y, physics, self.filter)
        if x0.is_complex() != self.complex_data:
            raise ValueError(f"PostProcessingUNet: expected {'complex' if self.complex_data else 'real'} images "
                             f"(complex_data={self.complex_data}), found {x0.dtype} from {physics.operator!r}")
        h = to_channels(x0)
        return Reconstruction(from_channels(h + self.unet(h), self.complex_data))
