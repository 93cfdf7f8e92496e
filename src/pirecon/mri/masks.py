"""Cartesian undersampling masks for MRI k-space.

Layout
------
Multi-coil k-space is ``(B, coils, H, W)`` with the readout along ``H`` and the
phase-encoding (undersampled) direction along ``W``, the last dimension. The
zero frequency sits at index ``n // 2`` (``fft2c``'s convention).

* :class:`RandomMask` and :class:`EquispacedMask` sample whole phase-encoding
  lines (columns of k-space) and return masks of shape ``(B, 1, 1, W)``,
  which broadcast against ``(B, coils, H, W)``. For fastMRI's real-view
  k-space ``(..., H, W, 2)`` use ``mask[..., None]``.
* :class:`VariableDensityMask` samples individual k-space points and returns
  ``(B, 1, H, W)``.

Every mask function is called as::

    sample = mask_fn(shape, batch_size=B, seed=seed, start_index=0, device=None)

and returns a :class:`MaskSample` ``(mask, num_low_frequencies, acceleration)``.

fastMRI semantics
-----------------
The 1D masks follow fastMRI's ``RandomMaskFunc``, ``EquispacedMaskFractionFunc``
and ``EquiSpacedMaskFunc`` (fastmri 0.3): for each sample one index ``i`` of
the ``(center_fractions[i], accelerations[i])`` pairs is chosen uniformly, the
centre holds ``num_low = round(W * center_fraction)`` lines (Python's ``round``,
half to even) starting at column ``pad = (W - num_low + 1) // 2``, and the other
lines are sampled as documented in each class. The random draws themselves
differ from fastMRI's (NumPy ``RandomState``); the distributions are the same.

Acceleration 1 means a fully sampled k-space for every mask here (fastMRI's
fraction-matched equispaced formula would leave the last column out).

Seeding
-------
Sample ``i`` of a call is determined by ``(seed, start_index + i)`` alone,
whatever the batch size: each sample draws from its own CPU generator seeded
through ``numpy.random.SeedSequence(base, spawn_key=(start_index + i, stream))``,
the pattern of :mod:`pirecon.phantoms` with an extra stream tag, so a mask and
a phantom drawn with the same integer seed are independent. A
``torch.Generator`` contributes one drawn base seed (successive calls differ);
``None`` draws fresh entropy. Everything is drawn on the CPU, so the same seed
gives the same masks on every machine, then moved to ``device``.
"""

from __future__ import annotations

import math
import numbers
from typing import NamedTuple, Sequence

import numpy as np
import torch

from .._validation import check_positive, sample_generators

__all__ = ["MaskSample", "RandomMask", "EquispacedMask", "VariableDensityMask"]


class MaskSample(NamedTuple):
    """A batch of sampling masks.

    Attributes
    ----------
    mask : Tensor
        float32 tensor of 0 and 1, broadcastable to the k-space
        ``(B, coils, H, W)``: ``(B, 1, 1, W)`` for line masks,
        ``(B, 1, H, W)`` for 2D masks.
    num_low_frequencies : Tensor
        ``(B,)`` int64: for line masks the number of fully sampled central
        columns; for 2D masks the width along ``W`` of the fully sampled
        calibration box, whose columns are sampled only inside the box.
    acceleration : Tensor
        ``(B,)`` float32: the nominal acceleration chosen for each sample.
    """

    mask: torch.Tensor
    num_low_frequencies: torch.Tensor
    acceleration: torch.Tensor


# --------------------------------------------------------------------------
# Seeding (same pattern as pirecon.phantoms: sample i <- (seed, start_index + i))
# --------------------------------------------------------------------------

# Stream tags keep mask / trajectory draws independent of phantom draws made
# with the same integer seed. Fixed forever: changing them changes every mask.
_STREAM_MASK = 0x6D61736B  # "mask"
_STREAM_TRAJECTORY = 0x7472616A  # "traj"


# --------------------------------------------------------------------------
# Argument checks (local to the MRI sampling modules)
# --------------------------------------------------------------------------

def _is_real(value) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _check_batch_args(batch_size, start_index) -> tuple[int, int]:
    batch_size = int(check_positive(batch_size, "batch_size", integer=True))
    if isinstance(start_index, bool) or not isinstance(start_index, numbers.Integral) or start_index < 0:
        raise ValueError(f"start_index: expected a non-negative integer, found {start_index!r}")
    return batch_size, int(start_index)


def _check_kspace_shape(shape) -> tuple[int, int]:
    """``(H, W)`` from a k-space shape ``(..., H, W)``."""
    ok = isinstance(shape, (tuple, list, torch.Size)) and len(shape) >= 2 and all(
        isinstance(s, numbers.Integral) and not isinstance(s, bool) and s > 0 for s in shape[-2:])
    if not ok:
        raise ValueError(
            f"shape: expected the k-space shape (..., H, W) with at least 2 dimensions and positive H, W, "
            f"found {shape!r}")
    return int(shape[-2]), int(shape[-1])


def _as_list(values, name: str) -> list:
    if _is_real(values):
        return [values]
    if isinstance(values, (str, bytes)) or not isinstance(values, (Sequence, np.ndarray, torch.Tensor)):
        raise TypeError(f"{name}: expected a number or a sequence of numbers, found {type(values).__name__}")
    values = values.tolist() if isinstance(values, (np.ndarray, torch.Tensor)) else list(values)
    if not values:
        raise ValueError(f"{name}: expected a non-empty sequence of numbers, found an empty sequence")
    for i, v in enumerate(values):
        if not _is_real(v) or not math.isfinite(v):
            raise ValueError(f"{name}[{i}]: expected a finite number, found {v!r}")
    return values


def _check_acceleration(value, name: str) -> float:
    if not _is_real(value) or not math.isfinite(value) or value < 1:
        raise ValueError(f"{name}: expected a number >= 1 (1 = fully sampled), found {value!r}")
    return value


def _fmt(x: float) -> str:
    return f"{x:.6g}"


# --------------------------------------------------------------------------
# Line masks (fastMRI semantics)
# --------------------------------------------------------------------------

class _LineMask:
    """Shared machinery of the 1D (phase-encoding line) masks."""

    def __init__(self, center_fractions, accelerations):
        fractions = _as_list(center_fractions, "center_fractions")
        accels = _as_list(accelerations, "accelerations")
        if len(fractions) != len(accels):
            raise ValueError(
                f"center_fractions, accelerations: expected sequences of the same length (one acceleration per "
                f"center fraction), found lengths {len(fractions)} and {len(accels)}")
        for i, (f, a) in enumerate(zip(fractions, accels)):
            if not 0 < f < 1:
                raise ValueError(f"center_fractions[{i}]: expected a number in (0, 1), found {f!r}")
            _check_acceleration(a, f"accelerations[{i}]")
            if f * a > 1:
                raise ValueError(
                    f"center_fractions[{i}]: center fraction {f!r} is too large for acceleration {a!r}: the centre "
                    f"alone would sample more than 1/acceleration of the lines; expected at most "
                    f"1/acceleration = {_fmt(1 / a)}")
        self.center_fractions = tuple(fractions)
        self.accelerations = tuple(accels)

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(center_fractions={list(self.center_fractions)}, "
                f"accelerations={list(self.accelerations)}{self._extra_repr()})")

    def _extra_repr(self) -> str:
        return ""

    @staticmethod
    def num_low_frequencies(num_cols: int, center_fraction: float) -> int:
        """fastMRI's count of central lines: ``round(num_cols * center_fraction)`` (half to even)."""
        return round(num_cols * center_fraction)

    @staticmethod
    def center_mask(num_cols: int, num_low: int) -> torch.Tensor:
        """Bool ``(num_cols,)``: ``num_low`` lines from ``pad = (num_cols - num_low + 1) // 2``."""
        mask = torch.zeros(num_cols, dtype=torch.bool)
        pad = (num_cols - num_low + 1) // 2
        mask[pad:pad + num_low] = True
        return mask

    def _outer_lines(self, num_cols: int, num_low: int, acceleration: float,
                     gen: torch.Generator) -> torch.Tensor:
        """Bool ``(num_cols,)`` of the lines sampled besides the centre (may overlap it)."""
        raise NotImplementedError

    def __call__(self, shape, *, batch_size: int = 1, seed: int | torch.Generator | None = None,
                 start_index: int = 0, device=None) -> MaskSample:
        """Draw ``batch_size`` line masks for k-space of shape ``(..., H, W)``.

        Parameters
        ----------
        shape : sequence of int
            The k-space shape; only the last two entries ``(H, W)`` are used.
        batch_size : int
            Number of masks ``B``.
        seed : int, torch.Generator or None
            Mask ``i`` depends only on ``(seed, start_index + i)``.
        start_index : int
            Index of the first mask in the seeded stream.
        device : torch.device or str, optional
            Where the result lives (drawn on the CPU, then moved).

        Returns
        -------
        MaskSample
            ``mask (B, 1, 1, W)`` float32, ``num_low_frequencies (B,)`` int64,
            ``acceleration (B,)`` float32.
        """
        _, num_cols = _check_kspace_shape(shape)
        batch_size, start_index = _check_batch_args(batch_size, start_index)
        # Check every pair against this W before drawing, so an error does not depend on the seed.
        lows = [self.num_low_frequencies(num_cols, f) for f in self.center_fractions]
        for i, (f, a, n) in enumerate(zip(self.center_fractions, self.accelerations, lows)):
            if n * a > num_cols:
                raise ValueError(
                    f"shape: center fraction {f!r} gives {n} low-frequency lines for W = {num_cols}, more than "
                    f"W / acceleration = {_fmt(num_cols / a)} lines for acceleration {a!r} (pair {i}); expected a "
                    f"larger W or a smaller center fraction")
        gens = sample_generators(seed, batch_size, start_index, _STREAM_MASK)
        masks = torch.zeros(batch_size, num_cols, dtype=torch.float32)
        num_low = torch.zeros(batch_size, dtype=torch.int64)
        accel = torch.zeros(batch_size, dtype=torch.float32)
        n_pairs = len(self.center_fractions)
        for b, gen in enumerate(gens):
            choice = int(torch.randint(n_pairs, (1,), generator=gen).item())
            n, a = lows[choice], self.accelerations[choice]
            if a == 1:
                lines = torch.ones(num_cols, dtype=torch.bool)
            else:
                lines = self.center_mask(num_cols, n) | self._outer_lines(num_cols, n, a, gen)
            masks[b] = lines.float()
            num_low[b] = n
            accel[b] = a
        return MaskSample(masks.view(batch_size, 1, 1, num_cols).to(device),
                          num_low.to(device), accel.to(device))


class RandomMask(_LineMask):
    """Random phase-encoding lines with a fully sampled centre (fastMRI's ``RandomMaskFunc``).

    For ``W`` columns, a chosen pair ``(center_fraction, acceleration)`` gives
    ``num_low = round(W * center_fraction)`` central lines from column
    ``(W - num_low + 1) // 2``; every other line is sampled independently with
    probability ``(W / acceleration - num_low) / (W - num_low)``, so that
    ``W / acceleration`` lines are sampled on average.

    Parameters
    ----------
    center_fractions : float or sequence of float
        Fractions in ``(0, 1)`` of the columns in the fully sampled centre.
    accelerations : float or sequence of float
        Accelerations ``>= 1``, one per center fraction (1 = fully sampled).
        ``center_fraction * acceleration <= 1`` is required (otherwise the
        probability above would be negative); at call time also
        ``num_low * acceleration <= W``.

    For each sample one index of the pairs is chosen uniformly at random.
    """

    @staticmethod
    def probability(num_cols: int, num_low: int, acceleration: float) -> float:
        """Probability of each non-central line: ``(W / acceleration - num_low) / (W - num_low)``."""
        return (num_cols / acceleration - num_low) / (num_cols - num_low)

    def _outer_lines(self, num_cols, num_low, acceleration, gen):
        prob = self.probability(num_cols, num_low, acceleration)
        return torch.rand(num_cols, dtype=torch.float64, generator=gen) < prob


class EquispacedMask(_LineMask):
    """Equispaced phase-encoding lines with a fully sampled centre.

    The centre is as in :class:`RandomMask`. The other lines:

    * ``exact_fraction=True`` (fastMRI's ``EquispacedMaskFractionFunc``):
      spacing ``a' = acceleration * (W - num_low) / (W - num_low * acceleration)``
      chosen so that about ``W / acceleration`` lines are sampled in total,
      a random offset ``o`` uniform in ``{0, ..., round(a') - 1}``, and the
      lines ``round_half_even(o + k a')`` for ``o + k a' < W - 1``. As in
      fastMRI, the rounded positions need not be exactly equispaced. When
      ``num_low * acceleration == W`` the centre alone gives the fraction and
      no other line is sampled.
    * ``exact_fraction=False`` (fastMRI's ``EquiSpacedMaskFunc``): every
      ``acceleration``-th line from a random offset ``o`` uniform in
      ``{0, ..., acceleration - 1}``; with the centre added, the true
      acceleration is below the nominal one. The accelerations must be
      integers here.

    Parameters
    ----------
    center_fractions, accelerations
        As for :class:`RandomMask`.
    exact_fraction : bool
        Which of the two rules above.
    """

    def __init__(self, center_fractions, accelerations, exact_fraction: bool = True):
        super().__init__(center_fractions, accelerations)
        if not isinstance(exact_fraction, bool):
            raise TypeError(f"exact_fraction: expected a bool, found {type(exact_fraction).__name__}")
        if not exact_fraction:
            for i, a in enumerate(self.accelerations):
                if float(a) != int(a):
                    raise ValueError(
                        f"accelerations[{i}]: expected an integer acceleration when exact_fraction=False "
                        f"(every acceleration-th line is sampled), found {a!r}")
            self.accelerations = tuple(int(a) for a in self.accelerations)
        self.exact_fraction = exact_fraction

    def _extra_repr(self) -> str:
        return f", exact_fraction={self.exact_fraction}"

    @staticmethod
    def adjusted_acceleration(num_cols: int, num_low: int, acceleration: float) -> float:
        """fastMRI's line spacing ``acceleration * (num_low - W) / (num_low * acceleration - W)``."""
        return acceleration * (num_low - num_cols) / (num_low * acceleration - num_cols)

    def _outer_lines(self, num_cols, num_low, acceleration, gen):
        lines = torch.zeros(num_cols, dtype=torch.bool)
        if not self.exact_fraction:
            offset = int(torch.randint(acceleration, (1,), generator=gen).item())
            lines[offset::acceleration] = True
            return lines
        if num_low * acceleration == num_cols:
            return lines
        spacing = self.adjusted_acceleration(num_cols, num_low, acceleration)
        high = min(round(spacing), 2**62)  # capped only in near-degenerate cases, where no line is drawn anyway
        offset = int(torch.randint(high, (1,), generator=gen).item())
        # Positions o + k * spacing below W - 1, rounded half to even (float64 arithmetic of numpy.arange).
        positions = np.around(np.arange(offset, num_cols - 1, spacing)).astype(np.int64)
        lines[torch.from_numpy(positions)] = True
        return lines


# --------------------------------------------------------------------------
# 2D variable-density mask
# --------------------------------------------------------------------------

class VariableDensityMask:
    """Random 2D k-space points with a Gaussian density and a fully sampled calibration box.

    The density at k-space index ``(r, c)`` is

        p(r, c) ∝ exp(-(y^2 + x^2) / (2 std^2)),   y = (r - H // 2) / (H / 2),   x = (c - W // 2) / (W / 2),

    a Gaussian centred on the zero frequency with ``std`` relative to the
    k-space half-widths. The ``ch x cw`` calibration box is fully sampled; it
    starts at row ``(H - ch + 1) // 2`` and column ``(W - cw + 1) // 2``
    (fastMRI's placement of the central lines). The remaining
    ``round(H * W / acceleration) - ch * cw`` points are drawn outside the box
    without replacement, each draw with probability proportional to ``p``
    among the points not yet taken (Efraimidis-Spirakis keys). Every mask
    holds exactly ``round(H * W / acceleration)`` samples (Python's ``round``).

    Parameters
    ----------
    acceleration : float
        ``>= 1`` (1 = fully sampled).
    calibration_size : int or (int, int)
        ``(ch, cw)`` of the calibration box (rows along ``H``, columns along
        ``W``); an int gives a square box; 0 means no box.
    std : float
        Standard deviation of the Gaussian relative to the half-width.

    Calling it returns a :class:`MaskSample` with ``mask (B, 1, H, W)``,
    ``num_low_frequencies`` = ``cw`` and ``acceleration`` the nominal value.
    """

    def __init__(self, acceleration: float, calibration_size=(24, 24), std: float = 0.3):
        self.acceleration = _check_acceleration(acceleration, "acceleration")
        if isinstance(calibration_size, numbers.Integral) and not isinstance(calibration_size, bool):
            calibration_size = (calibration_size, calibration_size)
        if not (isinstance(calibration_size, (tuple, list)) and len(calibration_size) == 2 and all(
                isinstance(s, numbers.Integral) and not isinstance(s, bool) and s >= 0 for s in calibration_size)):
            raise ValueError(
                f"calibration_size: expected a non-negative int or a pair of non-negative ints (rows, columns), "
                f"found {calibration_size!r}")
        self.calibration_size = (int(calibration_size[0]), int(calibration_size[1]))
        self.std = check_positive(std, "std")

    def __repr__(self) -> str:
        return (f"VariableDensityMask(acceleration={self.acceleration!r}, "
                f"calibration_size={self.calibration_size}, std={self.std!r})")

    def density(self, height: int, width: int) -> torch.Tensor:
        """The unnormalised density ``p`` as a float64 ``(H, W)`` tensor (calibration box included)."""
        return torch.exp(-self._radius2(height, width) / (2 * self.std ** 2))

    @staticmethod
    def _radius2(height: int, width: int) -> torch.Tensor:
        y = (torch.arange(height, dtype=torch.float64) - height // 2) / (height / 2)
        x = (torch.arange(width, dtype=torch.float64) - width // 2) / (width / 2)
        return y[:, None] ** 2 + x[None, :] ** 2

    def calibration_mask(self, height: int, width: int) -> torch.Tensor:
        """Bool ``(H, W)``: the fully sampled calibration box."""
        ch, cw = self.calibration_size
        box = torch.zeros(height, width, dtype=torch.bool)
        r0, c0 = (height - ch + 1) // 2, (width - cw + 1) // 2
        box[r0:r0 + ch, c0:c0 + cw] = True
        return box

    def num_samples(self, height: int, width: int) -> int:
        """Samples per mask: ``round(H * W / acceleration)``."""
        return round(height * width / self.acceleration)

    def __call__(self, shape, *, batch_size: int = 1, seed: int | torch.Generator | None = None,
                 start_index: int = 0, device=None) -> MaskSample:
        """Draw ``batch_size`` masks ``(B, 1, H, W)`` for k-space of shape ``(..., H, W)``.

        Arguments as for :meth:`RandomMask.__call__`.
        """
        height, width = _check_kspace_shape(shape)
        batch_size, start_index = _check_batch_args(batch_size, start_index)
        ch, cw = self.calibration_size
        if ch > height or cw > width:
            raise ValueError(
                f"calibration_size: expected a box within the {height}x{width} k-space, found {ch}x{cw}")
        total = self.num_samples(height, width)
        if ch * cw > total:
            raise ValueError(
                f"calibration_size: the {ch}x{cw} calibration box holds {ch * cw} samples, more than the {total} "
                f"samples of acceleration {self.acceleration!r} on a {height}x{width} grid; expected a smaller "
                f"box or a lower acceleration")
        box = self.calibration_mask(height, width).flatten()
        outside = torch.nonzero(~box).flatten()
        # log of the Efraimidis-Spirakis key E / p (smallest first), computed in the log domain so
        # that tiny densities never underflow.
        log_inv_density = (self._radius2(height, width).flatten()[outside]) / (2 * self.std ** 2)
        extra = total - ch * cw
        gens = sample_generators(seed, batch_size, start_index, _STREAM_MASK)
        masks = torch.zeros(batch_size, height * width, dtype=torch.float32)
        for b, gen in enumerate(gens):
            masks[b, box] = 1.0
            if extra:
                expo = torch.empty(outside.numel(), dtype=torch.float64).exponential_(1.0, generator=gen)
                keys = torch.log(expo) + log_inv_density
                chosen = torch.argsort(keys, stable=True)[:extra]
                masks[b, outside[chosen]] = 1.0
        num_low = torch.full((batch_size,), cw, dtype=torch.int64)
        accel = torch.full((batch_size,), float(self.acceleration), dtype=torch.float32)
        return MaskSample(masks.view(batch_size, 1, height, width).to(device), num_low.to(device),
                          accel.to(device))
