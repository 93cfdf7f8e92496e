"""Filtered back-projection for parallel and flat-detector fan beams.

Parallel beam, angles covering ``[0, pi)``:

    f(x) = (pi / N) sum_theta q_theta(x . u_theta),   q = F^-1[ |nu| W(nu) F p ],

with ``nu`` in cycles/mm along the detector and ``W`` the chosen window. The
sum over angles is the ray transform's adjoint scaled by
``(pi / N) d / pixel_size^2`` (``d`` the detector spacing), as in ODL's
``fbp_op``; it runs on the ray transform's backend.
Fan beam (flat detector, angles covering ``[0, 2 pi)``): the data are moved
to a virtual detector through the rotation centre (coordinate ``s``),
weighted by ``R / sqrt(R^2 + s^2)``, ramp filtered, and back-projected with
the distance weight ``1 / U^2`` (Kak & Slaney, ch. 3.4):

    f(x) = (1/2) (2 pi / N) sum_beta U(x, beta)^-2 q_beta(s(x, beta)).

The fan-beam back-projection is pixel-driven with linear interpolation
along the detector, batched and differentiable (autograd through indexing).
"""

from __future__ import annotations

import functools
import math

import numpy as np
import torch

from .._validation import check_choice, check_positive, check_tensor
from .geometry import FanBeam2D, ParallelBeam2D
from .ray_transform import RayTransform

__all__ = ["fbp", "fbp_filter", "FILTERS"]

FILTERS = ("ram-lak", "shepp-logan", "cosine", "hamming", "hann")
_GATHER_ELEMENTS = 1 << 22  # batch x angles x pixels per chunk (about ten such temporaries live at once)


def fbp_filter(num_detectors: int, spacing: float, filter: str = "ram-lak", frequency_scaling: float = 1.0,
               *, padded_length: int | None = None, dtype=torch.float64, device=None) -> torch.Tensor:
    """Frequency response of the FBP filter on the ``rfft`` grid of the zero-padded detector.

    The ramp is the DFT of the sampled band-limited ramp kernel (Kak & Slaney
    eq. 3.61: ``h[0] = 1 / (4 d^2)``, ``h[k] = -1 / (pi k d)^2`` for odd ``k``,
    0 for even ``k``; ``d`` the detector spacing in mm), which is ``~|nu|``
    but keeps the right DC term, so reconstructions keep the image's mean.
    It is multiplied by a window of the relative frequency ``f = nu / nu_max``
    stretched to ``c = frequency_scaling`` and cut above it: Ram-Lak 1,
    Shepp-Logan ``sinc(f / 2c)``, cosine ``cos(pi f / 2c)``, Hamming
    ``0.54 + 0.46 cos(pi f / c)``, Hann ``cos^2(pi f / 2c)``.
    Shape ``(n_pad // 2 + 1,)``; units 1/mm.
    """
    filter = check_choice(filter, "filter", FILTERS)
    c = float(check_positive(frequency_scaling, "frequency_scaling"))
    if c > 1:
        raise ValueError(f"frequency_scaling: expected a number in (0, 1], found {frequency_scaling!r}")
    n_pad = padded_length or 2 ** math.ceil(math.log2(2 * num_detectors - 1))
    k = torch.arange(n_pad, dtype=torch.float64)
    k = torch.where(k > n_pad // 2, k - n_pad, k)
    kernel = torch.zeros(n_pad, dtype=torch.float64)
    kernel[0] = 1 / (4 * spacing**2)
    odd = k.remainder(2) == 1
    kernel[odd] = -1 / (math.pi * k[odd] * spacing) ** 2
    ramp = torch.fft.rfft(kernel).real * spacing
    f = torch.linspace(0, 1, n_pad // 2 + 1, dtype=torch.float64)
    g = f / c
    window = {
        "ram-lak": torch.ones_like(g),
        "shepp-logan": torch.sinc(g / 2),
        "cosine": torch.cos(math.pi * g / 2),
        "hamming": 0.54 + 0.46 * torch.cos(math.pi * g),
        "hann": torch.cos(math.pi * g / 2) ** 2,
    }[filter]
    return (ramp * window * (f <= c)).to(dtype=dtype, device=device)


def _filter(sino: torch.Tensor, spacing: float, filter: str, frequency_scaling: float) -> torch.Tensor:
    n = sino.shape[-1]
    n_pad = 2 ** math.ceil(math.log2(2 * n - 1))
    response = fbp_filter(n, spacing, filter, frequency_scaling, padded_length=n_pad,
                          dtype=sino.dtype, device=sino.device)
    spectrum = torch.fft.rfft(sino, n=n_pad, dim=-1)
    return torch.fft.irfft(spectrum * response, n=n_pad, dim=-1)[..., :n]


def _fan_backproject(q: torch.Tensor, geometry: FanBeam2D, spacing: float) -> torch.Tensor:
    """``sum_beta (R / depth)^2 q[..., beta, s(x, beta)]``: pixel-driven, linear in ``s``, zero off the detector.

    ``q``: ``(B, angles, n)`` filtered data on the virtual detector of pitch ``spacing``.
    Returns ``(B, H, W)``. Angles are processed in chunks to bound memory.
    """
    batch, num_angles, n = q.shape
    height, width = geometry.image_shape
    dtype, device = q.dtype, q.device
    px, R = geometry.pixel_size, geometry.source_distance
    x = ((torch.arange(width, dtype=dtype, device=device) - (width - 1) / 2) * px).repeat(height)
    y = (((height - 1) / 2 - torch.arange(height, dtype=dtype, device=device)) * px).repeat_interleave(width)
    angles = torch.as_tensor(np.asarray(geometry.angles), dtype=dtype, device=device)
    flat = torch.nn.functional.pad(q, (1, 1)).reshape(batch, -1)  # detector index -1 and n read as zero
    out = q.new_zeros(batch, height * width)
    chunk = max(1, _GATHER_ELEMENTS // max(1, batch * height * width))
    for start in range(0, num_angles, chunk):
        beta = angles[start:start + chunk, None]
        cos, sin = torch.cos(beta), torch.sin(beta)
        depth = R - x * sin + y * cos                         # source to pixel, along the central ray
        position = R * (x * cos + y * sin) / depth / spacing + (n - 1) / 2
        weight = (R / depth) ** 2
        lower = torch.floor(position)
        frac = position - lower
        index = lower.long() + 1                               # into the padded detector
        offset = (torch.arange(start, start + beta.shape[0], device=device) * (n + 2))[:, None]
        i0 = (index.clamp(0, n + 1) + offset).reshape(-1)
        i1 = ((index + 1).clamp(0, n + 1) + offset).reshape(-1)
        w0 = ((1 - frac) * weight).reshape(-1)
        w1 = (frac * weight).reshape(-1)
        values = flat[:, i0] * w0 + flat[:, i1] * w1           # (B, chunk * H * W)
        out = out + values.reshape(batch, beta.shape[0], -1).sum(dim=1)
    return out.reshape(batch, height, width)


def _check_full_scan(geometry) -> None:
    """FBP's weights assume equispaced angles over a full scan: ``[0, pi)`` or ``[0, 2 pi)`` (fan: ``[0, 2 pi)``)."""
    angles = np.asarray(geometry.angles)
    n = angles.size
    parallel = isinstance(geometry, ParallelBeam2D)
    arcs = (math.pi, 2 * math.pi) if parallel else (2 * math.pi,)
    step = (angles[-1] - angles[0]) / (n - 1) if n > 1 else 0.0
    equispaced = n > 1 and np.allclose(np.diff(angles), step, rtol=1e-6, atol=1e-9)
    if not (equispaced and any(abs(n * step - arc) <= 1e-6 * arc for arc in arcs)):
        expected = "[0, pi) or [0, 2 pi)" if parallel else "[0, 2 pi) (short scans need Parker weights, not supported)"
        raise ValueError(
            f"fbp: expected equispaced angles covering {expected}, found {n} angles from {angles[0]:.4g} "
            f"to {angles[-1]:.4g} rad{'' if equispaced else ', not equispaced'}"
        )


@functools.lru_cache(maxsize=4)
def _default_ray_transform(geometry: ParallelBeam2D) -> RayTransform:
    return RayTransform(geometry)


def fbp(sinogram: torch.Tensor, geometry, filter: str = "ram-lak", frequency_scaling: float = 1.0) -> torch.Tensor:
    """Filtered back-projection of ``sinogram`` ``(..., angles, detectors)`` to images ``(..., H, W)``.

    Parameters
    ----------
    sinogram : torch.Tensor
        Line integrals in mm, real float32/float64, on any device.
    geometry : ParallelBeam2D, FanBeam2D, or a RayTransform
        Parallel angles must cover ``[0, pi)``, fan angles ``[0, 2 pi)``, equispaced.
        A parallel-beam ``RayTransform`` back-projects with its own backend;
        a bare geometry uses ``RayTransform(geometry, backend="auto")``.
    filter : {"ram-lak", "shepp-logan", "cosine", "hamming", "hann"}
    frequency_scaling : float in (0, 1]
        Relative cut-off frequency; the window is stretched to it.

    The result has the intensity scale of the image: ``fbp(A(x)) ~ x``.
    """
    operator = geometry if isinstance(geometry, RayTransform) else None
    geometry = getattr(geometry, "geometry", geometry)
    if not isinstance(geometry, (ParallelBeam2D, FanBeam2D)):
        raise TypeError(f"geometry: expected ParallelBeam2D, FanBeam2D or a RayTransform, "
                        f"found {type(geometry).__name__}")
    check_tensor(sinogram, "sinogram", trailing_shape=geometry.sinogram_shape)
    filter = check_choice(filter, "filter", FILTERS)
    _check_full_scan(geometry)
    work_dtype = torch.float64 if sinogram.dtype == torch.float64 else torch.float32
    batch = sinogram.shape[:-2]
    sino = sinogram.to(work_dtype).reshape(-1, *geometry.sinogram_shape)
    device = sino.device

    if isinstance(geometry, ParallelBeam2D):
        operator = operator or _default_ray_transform(geometry)
        q = _filter(sino, geometry.detector_spacing, filter, frequency_scaling)
        scale = (math.pi / geometry.num_angles) * geometry.detector_spacing / geometry.pixel_size**2
        image = operator.adjoint(q) * scale
    else:
        R, D = geometry.source_distance, geometry.detector_distance
        spacing = geometry.detector_spacing * R / (R + D)  # on the virtual detector through the centre
        s = torch.as_tensor(geometry.detector_positions(), dtype=work_dtype, device=device) * spacing
        q = _filter(sino * (R / torch.sqrt(R**2 + s**2)), spacing, filter, frequency_scaling)
        image = _fan_backproject(q, geometry, spacing) * (math.pi / geometry.num_angles)
    return image.reshape(*batch, *geometry.image_shape).to(sinogram.dtype)
