"""Coil sensitivity maps: simulated birdcage coils and ESPIRiT estimation from k-space.

Layouts
-------
Coil maps are complex tensors ``(B, coils, H, W)``, or ``(coils, H, W)`` when
one set of maps is shared by a whole batch. Multi-coil k-space is
``(B, coils, H, W)`` in fastMRI's centred orthonormal convention,
``kspace = fft2c(maps * image)`` (see :mod:`pirecon.mri.fft`).

Coordinates
-----------
Simulated maps use the image coordinates of :mod:`pirecon.phantoms`: pixel
``(r, c)`` of an ``H x W`` image sits at

    x = (2c + 1) / W - 1,        y = 1 - (2r + 1) / H,

on the normalised field of view ``[-1, 1]^2`` with ``y`` pointing up (row 0 is
the top of the image).
"""

from __future__ import annotations

import math
import numbers

import torch

from .._validation import check_positive, check_tensor

__all__ = ["birdcage_maps", "espirit_maps"]


# --------------------------------------------------------------------------
# Argument checks (local to this module)
# --------------------------------------------------------------------------

def _check_int(value, name: str) -> int:
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        value = int(value)
    return check_positive(value, name, integer=True)


def _check_pair(value, name: str) -> tuple[int, int]:
    """A positive int, or a pair of them, as ``(rows, columns)``."""
    if isinstance(value, (tuple, list, torch.Size)):
        if len(value) != 2:
            raise ValueError(f"{name}: expected a positive int or a pair of them, found {tuple(value)!r}")
        return _check_int(value[0], f"{name}[0]"), _check_int(value[1], f"{name}[1]")
    value = _check_int(value, name)
    return value, value


def _check_fraction(value, name: str, *, upper_open: bool) -> float:
    """A real number in ``[0, 1)`` (``upper_open``) or ``[0, 1]``."""
    ok = (isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)
          and value >= 0 and (value < 1 if upper_open else value <= 1))
    if not ok:
        interval = "[0, 1)" if upper_open else "[0, 1]"
        raise ValueError(f"{name}: expected a number in {interval}, found {value!r}")
    return float(value)


def _real_dtype(dtype: torch.dtype) -> torch.dtype:
    """The real dtype matching a complex one."""
    return torch.float64 if dtype == torch.complex128 else torch.float32


def _check_complex_dtype(dtype) -> torch.dtype:
    if dtype not in (torch.complex64, torch.complex128):
        raise TypeError(f"dtype: expected torch.complex64 or torch.complex128, found {dtype!r}")
    return dtype


# --------------------------------------------------------------------------
# Birdcage coils
# --------------------------------------------------------------------------

def birdcage_maps(num_coils: int, image_shape, *, radius: float = 1.5,
                  dtype: torch.dtype = torch.complex64, device=None) -> torch.Tensor:
    """Simulated sensitivities of a birdcage coil array, ``(num_coils, H, W)``.

    Coil ``j`` sits at angle ``theta_j = 2 pi j / num_coils`` (counter-clockwise
    from the ``+x`` axis, ``y`` up) on a circle of radius ``radius`` around the
    image centre, in units of the half field of view (the image is
    ``[-1, 1]^2``). With ``(dx, dy)`` the offset of a pixel from the coil,

        S_j = exp(i (atan2(dx, -dy) - theta_j)) / sqrt(dx^2 + dy^2),

    i.e. the magnitude falls off as one over the distance and the phase turns
    once around each coil; finally all coils are divided by the
    root-sum-of-squares so that ``sum_j |S_j|^2 = 1`` at every pixel.

    This is the model of ``sigpy.mri.birdcage_maps``. sigpy samples its maps
    at ``x = 2 i / n - 1`` with ``y`` growing with the row index; here pixels
    are sampled at their centres with row 0 at the top, so
    ``birdcage_maps(nc, (H, W))`` equals
    ``sigpy.mri.birdcage_maps((nc, 2H, 2W))[:, 1::2, 1::2][:, ::-1, :]``.

    Parameters
    ----------
    num_coils : int
        Number of coils.
    image_shape : tuple of int
        ``(H, W)``.
    radius : float
        Radius of the coil circle relative to the half field of view; the
        default 1.5 puts every coil outside the image square. A pixel that
        falls exactly on a coil gets that coil alone (magnitude 1).
    dtype : torch.complex64 or torch.complex128
    device : torch.device, optional

    Returns
    -------
    Tensor
        ``(num_coils, H, W)``, normalised to unit root-sum-of-squares.
    """
    num_coils = _check_int(num_coils, "num_coils")
    if not isinstance(image_shape, (tuple, list, torch.Size)) or len(image_shape) != 2:
        raise ValueError(f"image_shape: expected a pair (H, W) of positive ints, found {image_shape!r}")
    H = _check_int(image_shape[0], "image_shape[0]")
    W = _check_int(image_shape[1], "image_shape[1]")
    radius = float(check_positive(radius, "radius"))
    dtype = _check_complex_dtype(dtype)

    work = torch.float64
    x = ((2.0 * torch.arange(W, device=device, dtype=work) + 1.0) / W - 1.0).view(1, 1, W)
    y = (1.0 - (2.0 * torch.arange(H, device=device, dtype=work) + 1.0) / H).view(1, H, 1)
    theta = (2.0 * math.pi / num_coils) * torch.arange(num_coils, device=device, dtype=work).view(-1, 1, 1)
    dx = x - radius * torch.cos(theta)
    dy = y - radius * torch.sin(theta)
    distance = torch.sqrt(dx * dx + dy * dy)
    phase = torch.atan2(dx, -dy) - theta
    # 1 / distance, kept finite on a coil: there the coil dominates after normalisation
    magnitude = 1.0 / distance.clamp_min(1e-150)
    rss = torch.sqrt((magnitude * magnitude).sum(0, keepdim=True))
    maps = torch.polar(magnitude / rss, phase)
    return maps.to(dtype)


# --------------------------------------------------------------------------
# ESPIRiT
# --------------------------------------------------------------------------

def espirit_maps(kspace: torch.Tensor, *, calibration_width=24, kernel_width=6,
                 threshold: float = 0.02, crop: float = 0.95, max_iterations: int | None = None,
                 return_eigenvalues: bool = False):
    """Coil sensitivity maps estimated from fully sampled k-space centre by ESPIRiT.

    ESPIRiT (Uecker et al., MRM 71:990-1001, 2014), one set of maps:

    1. take the centred ``calibration_width`` square of k-space (the zero
       frequency at index ``n // 2``, as for ``fft2c``);
    2. form the calibration matrix whose rows are all
       ``kernel_width x kernel_width`` patches, over all coils;
    3. the right singular vectors of that matrix with singular value above
       ``threshold * largest`` span the signal subspace of the patches;
    4. the projection onto that subspace, applied patch-wise and averaged, is
       a convolution; in image space it is a ``coils x coils`` Hermitian matrix
       ``G(x)`` at each pixel: ``sqrt(H W) / kernel_width^2`` times the
       centred inverse FFT (``ifft2c``) of the projector's ``(2k-1)^2``
       correlation taps (computed as one unshifted FFT of pre-modulated taps);
    5. the sensitivities are the eigenvector of ``G(x)`` with eigenvalue
       (close to) 1: take the dominant eigenvector at each pixel, zero it
       where its eigenvalue is not above ``crop``, and rotate its phase so
       that the first coil is real and non-negative.

    Inside the kept region ``sum_coils |S|^2 = 1``; outside it the maps are 0.

    Parameters
    ----------
    kspace : Tensor
        ``(B, coils, H, W)`` or ``(coils, H, W)``, complex64/128, centred
        orthonormal convention (``kspace = fft2c(coil images)``); only the
        calibration region is used, and it must be fully sampled.
    calibration_width : int or (int, int)
        Size of the centred calibration region; at most ``(H, W)``.
    kernel_width : int or (int, int)
        Size of the k-space kernels; at most ``calibration_width``.
    threshold : float in [0, 1)
        Relative singular-value threshold for the signal subspace.
    crop : float in [0, 1]
        Maps are kept where the dominant eigenvalue exceeds ``crop``.
    max_iterations : int, optional
        ``None`` (default): exact per-pixel eigendecomposition
        (``torch.linalg.eigh``). An int: that many power iterations from the
        all-ones vector instead (as sigpy's ``EspiritCalib``, whose default is
        100).
    return_eigenvalues : bool
        Also return the dominant eigenvalue per pixel, ``(B, H, W)`` (or
        ``(H, W)``), real.

    Returns
    -------
    Tensor, or (Tensor, Tensor)
        Maps with the layout, dtype and device of ``kspace``.

    Notes
    -----
    Batched throughout, with no Python loop over the batch: the right
    singular vectors of the ``B`` calibration matrices come from one batched
    ``torch.linalg.eigh`` of their Gram matrices ``A^H A`` (double precision,
    so that the threshold on ``s^2`` is resolved reliably; several times
    faster than ``torch.linalg.svd`` on the CPU), and the per-pixel
    eigenproblems are one batched call. Memory is dominated by the
    ``(B, H, W, coils, coils)`` matrix field (a few copies of it).
    """
    check_tensor(kspace, "kspace", kind="complex")
    if kspace.ndim not in (3, 4):
        raise ValueError(f"kspace: expected shape (B, coils, H, W) or (coils, H, W), found {tuple(kspace.shape)}")
    if any(s == 0 for s in kspace.shape):
        raise ValueError(f"kspace: expected non-empty dimensions, found shape {tuple(kspace.shape)}")
    unbatched = kspace.ndim == 3
    k = kspace.unsqueeze(0) if unbatched else kspace
    B, C, H, W = k.shape

    ch, cw = _check_pair(calibration_width, "calibration_width")
    if ch > H or cw > W:
        raise ValueError(
            f"calibration_width: expected at most the k-space size (H, W) = ({H}, {W}), found ({ch}, {cw})"
        )
    kh, kw = _check_pair(kernel_width, "kernel_width")
    if kh > ch or kw > cw:
        raise ValueError(
            f"kernel_width: expected at most calibration_width ({ch}, {cw}), found ({kh}, {kw})"
        )
    threshold = _check_fraction(threshold, "threshold", upper_open=True)
    crop = _check_fraction(crop, "crop", upper_open=False)
    if max_iterations is not None:
        max_iterations = _check_int(max_iterations, "max_iterations")
    if not isinstance(return_eigenvalues, bool):
        raise TypeError(f"return_eigenvalues: expected a bool, found {type(return_eigenvalues).__name__}")

    dtype, device = k.dtype, k.device

    # 1-2. calibration region and its matrix of patches: rows = patch positions,
    #      columns = (coil, kernel row, kernel column)
    r0, c0 = H // 2 - ch // 2, W // 2 - cw // 2
    calib = k[:, :, r0:r0 + ch, c0:c0 + cw].to(torch.complex128)
    patches = calib.unfold(2, kh, 1).unfold(3, kw, 1)          # (B, C, ph, pw, kh, kw)
    n = C * kh * kw
    A = patches.permute(0, 2, 3, 1, 4, 5).reshape(B, -1, n)

    # 3. signal subspace: right singular vectors v_k of A with s_k > threshold * s_max, found as
    #    eigenvectors of the Gram matrix A^H A (eigenvalues s_k^2; double precision resolves
    #    threshold^2 comfortably). A row of A is a patch x^T with x in span{conj(v_k)}, so the
    #    projector onto the patch signal subspace is P = sum_k conj(v_k) v_k^T = conj(V_par V_par^H).
    s2, V = torch.linalg.eigh(A.mH @ A)                       # ascending eigenvalues
    top = s2[:, -1:]
    keep = ((s2 > (threshold * threshold) * top) & (s2 > 0)).to(s2.dtype)
    P = ((V * keep.unsqueeze(-2)) @ V.mH).conj()              # (B, n, n), Hermitian

    # 4. averaging P over all patch positions is a convolution; its taps are
    #    P_cc'[d] = sum_{m - m' = d} P[(c, m), (c', m')] for offsets |d| < kernel_width, and in image
    #    space it is G(x) = (1 / kernel_width^2) sum_d P[d] exp(2 pi i d . x): in the convention of
    #    ``ifft2c`` that is sqrt(H W) / kernel_width^2 * ifft2c(taps placed at index n//2 + d).
    #    Done here without the two shifts: taps sit at index d (mod size), pre-modulated by
    #    exp(-2 pi i (n//2) d / n), then one unnormalised inverse FFT.
    P = P.to(dtype).reshape(B, C, kh, kw, C, kh, kw).permute(0, 1, 4, 2, 3, 5, 6).reshape(B, C, C, -1)
    dr = (torch.arange(kh, device=device).view(kh, 1, 1, 1) - torch.arange(kh, device=device).view(1, 1, kh, 1))
    dc = (torch.arange(kw, device=device).view(1, kw, 1, 1) - torch.arange(kw, device=device).view(1, 1, 1, kw))
    dr, dc = dr.expand(kh, kw, kh, kw).reshape(-1), dc.expand(kh, kw, kh, kw).reshape(-1)
    angle = (-2.0 * math.pi) * ((H // 2) * dr.to(torch.float64) / H + (W // 2) * dc.to(torch.float64) / W)
    modulation = torch.polar(torch.ones_like(angle), angle).to(dtype)
    index = (dr % H) * W + (dc % W)
    taps = torch.zeros(B, C, C, H * W, dtype=dtype, device=device).index_add_(-1, index, P * modulation)
    G = torch.fft.ifft2(taps.view(B, C, C, H, W), norm="forward") * (1.0 / (kh * kw))
    G = G.permute(0, 3, 4, 1, 2).contiguous()                 # (B, H, W, C, C), Hermitian

    # 5. dominant eigenpair per pixel
    if max_iterations is None:
        values, vectors = torch.linalg.eigh(G)
        eigenvalue = values[..., -1]
        maps = vectors[..., -1]
    else:
        maps = torch.ones(B, H, W, C, dtype=dtype, device=device)
        eigenvalue = torch.zeros(B, H, W, dtype=_real_dtype(dtype), device=device)
        for _ in range(max_iterations):
            y = (G @ maps.unsqueeze(-1)).squeeze(-1)
            eigenvalue = torch.view_as_real(y).square().sum((-2, -1)).sqrt()  # |y|, faster than complex norm
            maps = y / torch.where(eigenvalue > 0, eigenvalue, torch.ones_like(eigenvalue)).unsqueeze(-1)

    # phase relative to the first coil (left alone where that coil is exactly 0)
    ref = maps[..., :1]
    mag = ref.abs()
    phase = torch.where(mag > 0, ref.conj() / torch.where(mag > 0, mag, torch.ones_like(mag)),
                        torch.ones_like(ref))
    maps = maps * phase * (eigenvalue > crop).unsqueeze(-1)
    maps = maps.permute(0, 3, 1, 2).contiguous()               # (B, C, H, W)

    if unbatched:
        maps, eigenvalue = maps[0], eigenvalue[0]
    return (maps, eigenvalue) if return_eigenvalues else maps
