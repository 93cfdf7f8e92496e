"""Non-Cartesian k-space trajectories in torchkbnufft's convention.

A trajectory is a float tensor ``(..., 2, K)`` of k-space coordinates in
radians per pixel, every value in ``[-pi, pi)`` (``pi`` taken in the
tensor's own dtype). For images ``(B, 1, H, W)`` and
``torchkbnufft.KbNufft(im_size=(H, W))``:

* row 0 is ``ky``, the frequency along ``H`` (image rows, dimension -2);
* row 1 is ``kx``, the frequency along ``W`` (image columns, dimension -1);

so the NUFFT of an image ``x`` at column ``k`` of the trajectory is

    y_k = sum_{h, w} x[h, w] exp(-i (ky_k (h - H // 2) + kx_k (w - W // 2))),

and ``(ky, kx) = (0, 0)`` is the zero frequency. On the Cartesian grid of
``fft2c`` the point ``(ky, kx)`` lies at index
``(H // 2 + ky H / (2 pi), W // 2 + kx W / (2 pi))``.

A batch ``(B, 2, K)`` gives one trajectory per image (torchkbnufft accepts a
batched ``omega`` whose first dimension matches the image batch).
"""

from __future__ import annotations

import math

import torch

from .._validation import check_positive, check_tensor
from .._validation import sample_generators
from .masks import _STREAM_TRAJECTORY, _check_batch_args

__all__ = ["GOLDEN_ANGLE", "radial_trajectory", "check_trajectory"]

#: The golden angle for diametral spokes, ``pi * (sqrt(5) - 1) / 2`` radians (about 111.246 degrees).
GOLDEN_ANGLE = math.pi * (math.sqrt(5.0) - 1.0) / 2.0


def _wrap(values: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Float64 coordinates mapped into ``[-pi, pi)`` of ``dtype`` (a shift by 2 pi is the same frequency)."""
    outside = (values < -math.pi) | (values >= math.pi)
    values = torch.where(outside, torch.remainder(values + math.pi, 2 * math.pi) - math.pi, values)
    out = values.to(dtype)
    pi = torch.tensor(math.pi, dtype=dtype)
    # Rounding to ``dtype`` may land on +pi; that frequency is -pi.
    return torch.where(out >= pi, out - 2 * pi, out)


def radial_trajectory(num_spokes: int, num_samples: int, *, golden_angle: bool = False, batch_size: int = 1,
                      seed: int | torch.Generator | None = None, start_index: int = 0,
                      random_rotation: bool = False, device=None) -> torch.Tensor:
    """A 2D radial (projection) trajectory of diametral spokes through the k-space centre.

    Spoke ``s`` has angle ``theta_s`` in ``[0, pi)``, measured from the ``kx``
    axis (along ``W``) towards ``ky`` (along ``H``), and carries the samples

        k_j = 2 pi (j - n // 2) / n,   j = 0, ..., n - 1  (n = num_samples),

    at ``(ky, kx) = (k_j sin theta_s, k_j cos theta_s)``: the centred DFT
    frequencies of ``n`` points, ``pi (2 j - n) / n`` for even ``n``. Sample
    ``j = n // 2`` is the k-space centre, and every value lies in ``[-pi, pi)``
    (for even ``n`` the first sample is ``-pi``; a coordinate that float32
    rounding would put at ``+pi`` is stored as the same frequency ``-pi``).

    Parameters
    ----------
    num_spokes : int
        Number of spokes ``S``.
    num_samples : int
        Samples per spoke ``n``.
    golden_angle : bool
        ``False``: ``theta_s = pi s / S`` (equispaced over ``[0, pi)``).
        ``True``: ``theta_s = s * GOLDEN_ANGLE mod pi`` with
        ``GOLDEN_ANGLE = pi (sqrt(5) - 1) / 2`` (about 111.25 degrees).
    batch_size : int
        Number of trajectories ``B``.
    seed : int, torch.Generator or None
        Used only with ``random_rotation``: trajectory ``i`` depends only on
        ``(seed, start_index + i)`` (the seeding of :mod:`pirecon.mri.masks`).
    start_index : int
        Index of the first trajectory in the seeded stream.
    random_rotation : bool
        Rotate all spokes of trajectory ``i`` by an angle ``phi_i`` uniform in
        ``[0, pi)``: ``theta_s -> (theta_s + phi_i) mod pi``. Without it all
        ``B`` trajectories are equal.
    device : torch.device or str, optional
        Where the result lives (computed on the CPU in float64, then moved).

    Returns
    -------
    Tensor
        ``(B, 2, S * n)`` float32, spoke-major (column ``s * n + j`` is sample
        ``j`` of spoke ``s``); row 0 is ``ky`` (along ``H``), row 1 ``kx``
        (along ``W``), the order of ``im_size = (H, W)`` in torchkbnufft.
    """
    num_spokes = int(check_positive(num_spokes, "num_spokes", integer=True))
    num_samples = int(check_positive(num_samples, "num_samples", integer=True))
    for name, flag in (("golden_angle", golden_angle), ("random_rotation", random_rotation)):
        if not isinstance(flag, bool):
            raise TypeError(f"{name}: expected a bool, found {type(flag).__name__}")
    batch_size, start_index = _check_batch_args(batch_size, start_index)
    f64 = torch.float64
    spokes = torch.arange(num_spokes, dtype=f64)
    if golden_angle:
        theta = torch.remainder(spokes * GOLDEN_ANGLE, math.pi)
    else:
        theta = spokes * (math.pi / num_spokes)
    theta = theta.expand(batch_size, num_spokes)
    if random_rotation:
        gens = sample_generators(seed, batch_size, start_index, _STREAM_TRAJECTORY)
        phi = torch.cat([torch.rand(1, dtype=f64, generator=g) for g in gens]) * math.pi
        theta = torch.remainder(theta + phi[:, None], math.pi)
    k = 2.0 * math.pi * (torch.arange(num_samples, dtype=f64) - num_samples // 2) / num_samples
    ky = torch.sin(theta)[:, :, None] * k  # (B, S, n)
    kx = torch.cos(theta)[:, :, None] * k
    traj = torch.stack([ky, kx], dim=1).reshape(batch_size, 2, num_spokes * num_samples)
    return _wrap(traj, torch.float32).to(device)


def check_trajectory(traj, name: str = "trajectory") -> torch.Tensor:
    """Validate a trajectory ``(..., 2, K)`` of real floats in ``[-pi, pi)`` and return it unchanged.

    ``pi`` is compared in the tensor's dtype (float32 ``-pi`` rounds below the
    exact ``-pi`` and is accepted). Raises ``TypeError`` for a non-tensor or
    non-real-float dtype and ``ValueError`` for a wrong shape, NaN / Inf or
    values out of range.
    """
    check_tensor(traj, name, kind="real", finite=False)
    if traj.ndim < 2 or traj.shape[-2] != 2 or traj.shape[-1] < 1:
        raise ValueError(f"{name}: expected shape (..., 2, K) with K >= 1, found {tuple(traj.shape)}")
    check_tensor(traj, name, kind="real")
    pi = torch.tensor(math.pi, dtype=traj.dtype, device=traj.device)
    lo, hi = traj.min(), traj.max()
    # -pi stored in float32 lies 9e-8 below the exact value; allow it after a cast to float64
    if bool(lo < -pi - 1e-6) or bool(hi >= pi):
        raise ValueError(
            f"{name}: expected k-space coordinates in [-pi, pi) radians, "
            f"found values in [{float(lo):.8g}, {float(hi):.8g}]")
    return traj
