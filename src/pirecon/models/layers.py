"""Network building blocks: complex <-> real channels, CNN blocks of any spatial dimension, a U-Net.

Complex tensors enter networks as 2 real channels: ``(B, C, *S)`` complex becomes
``(B, 2C, *S)`` real with the ``C`` real parts first, then the ``C`` imaginary parts.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from .._validation import check_positive

__all__ = ["to_channels", "from_channels", "num_channels", "ConvBlock", "UNet"]

_CONV = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}


def to_channels(x: torch.Tensor) -> torch.Tensor:
    """Real view of ``x`` for a network: complex ``(B, C, *S)`` -> real ``(B, 2C, *S)``; real tensors unchanged."""
    return torch.cat([x.real, x.imag], dim=1) if x.is_complex() else x


def from_channels(h: torch.Tensor, complex_: bool) -> torch.Tensor:
    """Inverse of :func:`to_channels`: real ``(B, 2C, *S)`` -> complex ``(B, C, *S)`` when ``complex_``."""
    if not complex_:
        return h
    real, imag = h.chunk(2, dim=1)
    return torch.complex(real.contiguous(), imag.contiguous())


def num_channels(x: torch.Tensor) -> int:
    """Real channels of ``x`` as a network sees it (twice the channels when complex)."""
    return x.shape[1] * (2 if x.is_complex() else 1)


class ConvBlock(nn.Module):
    """``layers`` convolutions (kernel 3, same padding) with PReLU between them: ``(B, in, *S) -> (B, out, *S)``.

    The block of Learned Primal-Dual (3 layers, 32 hidden channels). ``dim`` is the number of
    spatial dimensions (1, 2 or 3). Weights start Xavier-uniform, biases at zero (as in the paper);
    with ``zero_output=True`` the last convolution's weights start at zero too, so the block starts
    as the zero map (a residual update ``x + block(x)`` that starts as the identity).
    """

    def __init__(self, in_channels: int, out_channels: int, hidden: int = 32, layers: int = 3, dim: int = 2,
                 zero_output: bool = False):
        super().__init__()
        for name, value in (("in_channels", in_channels), ("out_channels", out_channels), ("hidden", hidden)):
            check_positive(value, name, integer=True)
        check_positive(layers, "layers", integer=True)
        if dim not in _CONV:
            raise ValueError(f"dim: expected 1, 2 or 3 spatial dimensions, found {dim!r}")
        conv = _CONV[dim]
        widths = [in_channels] + [hidden] * (layers - 1) + [out_channels]
        modules: list[nn.Module] = []
        for i in range(layers):
            modules.append(conv(widths[i], widths[i + 1], kernel_size=3, padding=1))
            if i < layers - 1:
                modules.append(nn.PReLU(widths[i + 1]))
        for module in modules:
            if isinstance(module, conv):
                nn.init.xavier_uniform_(module.weight)
                nn.init.zeros_(module.bias)
        if zero_output:
            nn.init.zeros_(modules[-1].weight)
        self.net = nn.Sequential(*modules)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def _double_conv(in_channels: int, out_channels: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False), nn.InstanceNorm2d(out_channels),
        nn.LeakyReLU(0.2, inplace=True),
        nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False), nn.InstanceNorm2d(out_channels),
        nn.LeakyReLU(0.2, inplace=True),
    )


class UNet(nn.Module):
    """2D U-Net (Ronneberger et al. 2015, fastMRI variant): ``(B, in, H, W) -> (B, out, H, W)``.

    ``depth`` poolings (average, factor 2); ``channels`` features at full resolution, doubled at
    each level; instance norm and leaky ReLU; transposed-convolution upsampling; a 1x1 output
    convolution. Any ``H, W`` works: the input is padded to a multiple of ``2**depth`` and the
    output cropped back.
    """

    def __init__(self, in_channels: int, out_channels: int, channels: int = 32, depth: int = 4):
        super().__init__()
        for name, value in (("in_channels", in_channels), ("out_channels", out_channels),
                            ("channels", channels), ("depth", depth)):
            check_positive(value, name, integer=True)
        self.depth = depth
        widths = [channels * 2**i for i in range(depth + 1)]
        self.down = nn.ModuleList([_double_conv(in_channels, widths[0])])
        self.down.extend(_double_conv(widths[i], widths[i + 1]) for i in range(depth))
        self.up_transpose = nn.ModuleList(
            nn.Sequential(nn.ConvTranspose2d(widths[i + 1], widths[i], 2, stride=2, bias=False),
                          nn.InstanceNorm2d(widths[i]), nn.LeakyReLU(0.2, inplace=True))
            for i in reversed(range(depth)))
        self.up = nn.ModuleList(_double_conv(2 * widths[i], widths[i]) for i in reversed(range(depth)))
        self.out = nn.Conv2d(widths[0], out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        height, width = x.shape[-2:]
        multiple = 2**self.depth
        pad_h, pad_w = (-height) % multiple, (-width) % multiple
        if pad_h or pad_w:
            x = F.pad(x, (pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2))
        skips = []
        h = x
        for i, block in enumerate(self.down):
            h = block(h if i == 0 else F.avg_pool2d(h, 2))
            skips.append(h)
        skips.pop()
        for transpose, block in zip(self.up_transpose, self.up):
            h = block(torch.cat([transpose(h), skips.pop()], dim=1))
        h = self.out(h)
        return h[..., pad_h // 2:pad_h // 2 + height, pad_w // 2:pad_w // 2 + width]
