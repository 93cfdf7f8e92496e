"""End-to-end variational network for Cartesian multi-coil MRI (Sriram et al. 2020, "End-to-End Variational
Networks for Accelerated MRI Reconstruction", MICCAI).

Coil sensitivities ``S`` are estimated from the fully sampled centre of k-space: the central block of
sampled columns is kept, each coil image ``ifft2c`` of it is refined by a U-Net, and the result is divided
by its root-sum-of-squares over coils. With ``E(x) = S x`` (expand), ``R(c) = sum_c conj(S_c) c_c``
(reduce), ``F = fft2c``, the mask ``M`` and the measured k-space ``y``, starting at ``k_0 = y``:

    k_{t+1} = k_t - eta_t M (k_t - y) + F(E(UNet_t(R(F^{-1} k_t))))

for ``t = 1..cascades``; the image is ``R(F^{-1} k)``. With ``identity_init`` the refinement is multiplied by
a learned ``gamma_t`` starting at 0 (not in the paper; it shortens training). The U-Nets see complex images
as 2 real channels, normalised per sample (mean per channel, one standard deviation) and rescaled
afterwards, so k-space of any scale works.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from .._validation import check_positive
from ..mri.fft import fft2c, ifft2c
from .layers import UNet, from_channels, to_channels
from .physics_tools import cartesian_mask, check_model_inputs
from .reconstruction import Reconstruction

__all__ = ["VarNet", "NormalizedUNet", "SensitivityNetwork", "calibration_mask"]


class NormalizedUNet(nn.Module):
    """A :class:`UNet` on complex images ``(N, 1, H, W)`` -> ``(N, 1, H, W)``, scale-equivariant per sample.

    ``x -> UNet((x - mean) / std) * std + mean`` on the 2 real channels, with the mean of each channel and
    one standard deviation over all channels and pixels of a sample; a constant sample is returned as it is
    (so zero maps to zero and ``f(c x) = c f(x)`` for every ``c > 0``).
    """

    def __init__(self, channels: int, depth: int):
        super().__init__()
        self.unet = UNet(2, 2, channels, depth)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = to_channels(x)
        mean = h.mean(dim=(2, 3), keepdim=True)
        variance = (h - mean).square().mean(dim=(1, 2, 3), keepdim=True)
        varies = variance > 0
        std = torch.where(varies, variance, torch.ones_like(variance)).sqrt()  # 1 where constant: no 0/0
        return from_channels(self.unet((h - mean) / std) * (std * varies) + mean, True)


def calibration_mask(mask: torch.Tensor, width: int) -> torch.Tensor:
    """The fully sampled centre of a Cartesian mask: ``mask`` kept on its central block of sampled columns.

    ``mask`` broadcasts to ``(B, coils, H, W)`` with ``W = width``. A column counts as sampled when the
    mask's centre row samples it for every coil; the block is the run of sampled columns through the
    zero frequency ``W // 2``, found per sample. Returns ``(Bm, Cm, Hm, W)`` (the mask's own broadcast
    dimensions); where the centre column is not sampled the whole mask is kept.
    """
    mask = mask.reshape((1,) * (4 - mask.ndim) + tuple(mask.shape))
    mask = mask.expand(*mask.shape[:-1], width)
    centre_row = mask[:, :, mask.shape[2] // 2]  # (Bm, Cm, W)
    sampled = (centre_row > 0).all(dim=1).long()  # (Bm, W)
    centre = width // 2
    right = sampled[:, centre:].cumprod(dim=-1).sum(dim=-1, keepdim=True)  # run from the centre, centre included
    left = sampled[:, :centre + 1].flip(-1).cumprod(dim=-1).sum(dim=-1, keepdim=True)
    columns = torch.arange(width, device=mask.device)
    block = (columns > centre - left) & (columns < centre + right)
    block = block | (sampled[:, centre:centre + 1] == 0)  # centre unsampled: keep the whole mask
    return mask * block[:, None, None, :].to(mask.dtype)


class SensitivityNetwork(nn.Module):
    """Coil maps ``(B, coils, H, W)`` from k-space ``(B, coils, H, W)`` and its mask, with unit root-sum-of-squares.

    ``S = U / rss(U)``, ``U_c = NormalizedUNet(ifft2c(C * y_c))`` for each coil (coils folded into the batch),
    ``C`` the :func:`calibration_mask`. Pixels where every coil is zero get zero maps.
    """

    def __init__(self, channels: int = 8, depth: int = 4):
        super().__init__()
        self.unet = NormalizedUNet(channels, depth)

    def forward(self, y: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        batch, coils, height, width = y.shape
        images = ifft2c(y * calibration_mask(mask, width))
        maps = self.unet(images.reshape(batch * coils, 1, height, width)).reshape(batch, coils, height, width)
        rss = torch.linalg.vector_norm(maps, dim=1, keepdim=True)
        nonzero = rss > 0
        return torch.where(nonzero, maps / torch.where(nonzero, rss, torch.ones_like(rss)), torch.zeros_like(maps))


class _Cascade(nn.Module):
    """One VarNet cascade: soft data consistency plus a U-Net refinement in image space."""

    def __init__(self, channels: int, depth: int, identity_init: bool = False):
        super().__init__()
        self.unet = NormalizedUNet(channels, depth)
        self.eta = nn.Parameter(torch.ones(()))
        # identity_init: the refinement is scaled by a learned gamma that starts at 0 (ReZero, Bachlechner et al. 2021)
        self.gamma = nn.Parameter(torch.zeros(())) if identity_init else None

    def forward(self, k: torch.Tensor, y: torch.Tensor, mask: torch.Tensor, maps: torch.Tensor) -> torch.Tensor:
        image = _reduce(k, maps)
        refinement = fft2c(maps * self.unet(image))
        if self.gamma is not None:
            refinement = self.gamma * refinement
        return k - self.eta * mask * (k - y) + refinement


def _reduce(k: torch.Tensor, maps: torch.Tensor) -> torch.Tensor:
    """``R(F^{-1} k) = sum_c conj(S_c) ifft2c(k_c)``: k-space ``(B, coils, H, W)`` -> image ``(B, 1, H, W)``."""
    return (maps.conj() * ifft2c(k)).sum(dim=1, keepdim=True)


class VarNet(nn.Module):
    """End-to-end VarNet: ``model(y, physics) -> Reconstruction`` with a complex image ``(B, 1, H, W)``.

    Needs Cartesian MRI physics (a ``SenseOperator``, whose mask it reads; its coil maps are not used,
    the network estimates its own). Any number of coils and any k-space scale.

    Parameters
    ----------
    cascades : int
        Unrolled cascades (12 in the paper).
    channels, depth : int
        Features at full resolution and poolings of each cascade's U-Net (18 and 4 in the paper).
    sens_channels, sens_depth : int
        The same for the sensitivity U-Net (8 and 4 in the paper).
    share_weights : bool
        One U-Net and one ``eta`` for all cascades instead of one per cascade.
    checkpointing : bool
        Recompute each cascade in the backward pass instead of storing its activations.
    identity_init : bool
        Multiply each cascade's refinement by a learned scale ``gamma_t`` that starts at 0, so the untrained
        network returns the coil-combined data ``R(F^{-1} y)`` instead of adding a random U-Net image per
        cascade to it. The paper has no such scale (``False``); ``True`` shortens training (README, "mri-v1").
    """

    def __init__(self, cascades: int = 12, channels: int = 18, sens_channels: int = 8, depth: int = 4,
                 sens_depth: int = 4, share_weights: bool = False, checkpointing: bool = False,
                 identity_init: bool = False):
        super().__init__()
        check_positive(cascades, "cascades", integer=True)
        self.num_cascades = cascades
        self.share_weights, self.checkpointing = bool(share_weights), bool(checkpointing)
        self.sensitivity = SensitivityNetwork(sens_channels, sens_depth)
        self.identity_init = bool(identity_init)
        self.cascades = nn.ModuleList(_Cascade(channels, depth, self.identity_init)
                                      for _ in range(1 if share_weights else cascades))

    def forward(self, y: torch.Tensor, physics) -> Reconstruction:
        from ..mri import SenseOperator

        check_model_inputs(y, physics, "VarNet")
        if not isinstance(physics.operator, SenseOperator):
            raise TypeError(f"VarNet: expected Cartesian MRI physics (a SenseOperator), "
                            f"found {type(physics.operator).__name__}")
        if y.ndim != 4:
            raise ValueError(f"VarNet: expected k-space of shape (B, coils, H, W), found {tuple(y.shape)}")
        mask = cartesian_mask(physics).to(device=y.device, dtype=y.real.dtype)
        maps = self.sensitivity(y, mask)
        k = y
        for t in range(self.num_cascades):
            cascade = self.cascades[0 if self.share_weights else t]
            if self.checkpointing and torch.is_grad_enabled():
                k = checkpoint(cascade, k, y, mask, maps, use_reentrant=False)
            else:
                k = cascade(k, y, mask, maps)
        return Reconstruction(_reduce(k, maps))
