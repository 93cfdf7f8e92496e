"""Cartesian undersampling masks and radial trajectories (pirecon.mri.masks, pirecon.mri.trajectories).

The line masks are checked twice: against the documented formulas, and
against fastMRI's own mask functions (values stored in ``tests/data`` by
``make_fastmri_reference.py``; computed live where ``fastmri`` imports). Every
statistical check uses fixed seeds, so it is deterministic; the tolerances
are several standard deviations wide regardless.
"""

from __future__ import annotations

import math
import re

import numpy as np
import pytest
import torch

from pirecon.mri.masks import EquispacedMask, MaskSample, RandomMask, VariableDensityMask
from pirecon.mri.trajectories import GOLDEN_ANGLE, check_trajectory, radial_trajectory

PI32 = float(torch.tensor(math.pi, dtype=torch.float32))  # float32 pi, slightly above math.pi


def _lines(sample: MaskSample) -> torch.Tensor:
    """``(B, W)`` bool of a line mask."""
    return sample.mask[:, 0, 0, :].bool()


def _centre(width: int, num_low: int) -> torch.Tensor:
    """The documented centre block: ``num_low`` lines from ``(W - num_low + 1) // 2``."""
    c = torch.zeros(width, dtype=torch.bool)
    pad = (width - num_low + 1) // 2
    c[pad:pad + num_low] = True
    return c


def _fraction_lines(width: int, num_low: int, accel: float, offset: int) -> torch.Tensor:
    """Outer lines of the fraction-matched equispaced rule, from its documented formula."""
    spacing = accel * (width - num_low) / (width - num_low * accel)
    out = torch.zeros(width, dtype=torch.bool)
    k = 0
    while offset + k * spacing < width - 1:
        out[int(np.round(offset + k * spacing))] = True  # numpy rounds half to even
        k += 1
    return out


# --------------------------------------------------------------------------
# Line masks: formulas
# --------------------------------------------------------------------------

@pytest.mark.parametrize("cls", [RandomMask, EquispacedMask])
def test_line_mask_output_types(cls):
    s = cls([0.08], [4])((2, 640, 368), batch_size=3, seed=0)
    assert isinstance(s, MaskSample)
    assert s.mask.shape == (3, 1, 1, 368) and s.mask.dtype == torch.float32
    assert set(s.mask.unique().tolist()) <= {0.0, 1.0}
    assert s.num_low_frequencies.shape == (3,) and s.num_low_frequencies.dtype == torch.int64
    assert s.acceleration.shape == (3,) and s.acceleration.dtype == torch.float32
    kspace = torch.ones(3, 4, 640, 368, dtype=torch.complex64)
    assert (kspace * s.mask).shape == kspace.shape


@pytest.mark.parametrize("width, fraction, num_low, first", [
    (10, 0.2, 2, 4),    # even W, even num_low
    (10, 0.3, 3, 4),    # even W, odd num_low
    (11, 0.2, 2, 5),    # odd W, even num_low: one more line right of W // 2
    (11, 0.3, 3, 4),    # odd W, odd num_low: symmetric about W // 2
    (368, 0.08, 29, 170),
    (368, 0.04, 15, 177),
    (372, 0.08, 30, 171),  # round(29.76)
    (20, 0.125, 2, 9),  # round(2.5) = 2 (half to even, as Python's round)
])
@pytest.mark.parametrize("cls", [RandomMask, EquispacedMask])
def test_centre_block_count_and_position(cls, width, fraction, num_low, first):
    assert round(width * fraction) == num_low
    assert (width - num_low + 1) // 2 == first
    s = cls([fraction], [2])((1, 8, width), batch_size=20, seed=3)
    assert s.num_low_frequencies.tolist() == [num_low] * 20
    lines = _lines(s)
    assert lines[:, first:first + num_low].all()
    assert lines[:, width // 2].all()  # the zero frequency is always sampled
    assert torch.equal(cls.center_mask(width, num_low), _centre(width, num_low))


@pytest.mark.parametrize("cls", [RandomMask, EquispacedMask])
def test_centre_alone_reaches_the_fraction(cls):
    # round(100 * 0.25) * 4 == 100: the centre is the whole budget, nothing else is sampled
    s = cls([0.25], [4])((8, 100), batch_size=10, seed=0)
    assert (_lines(s) == _centre(100, 25)).all()


def test_random_mask_line_probability():
    width, fraction, accel = 368, 0.08, 4
    s = RandomMask([fraction], [accel])((640, width), batch_size=400, seed=11)
    num_low = round(width * fraction)
    prob = (width / accel - num_low) / (width - num_low)
    assert RandomMask.probability(width, num_low, accel) == pytest.approx(prob)
    lines = _lines(s)
    centre = _centre(width, num_low)
    assert lines[:, centre].all()
    outer = lines[:, ~centre].double()
    n = outer.numel()
    assert abs(outer.mean().item() - prob) < 6 * math.sqrt(prob * (1 - prob) / n)  # 6 sigma ~ 0.009
    # every outer column is sampled at about the same rate (no positional bias)
    per_col = outer.mean(0)
    assert (per_col - prob).abs().max() < 6 * math.sqrt(prob * (1 - prob) / 400)
    # expected total W / acceleration
    assert abs(lines.sum(1).double().mean().item() - width / accel) < 2.0
    # independent draws: different samples differ
    assert not (lines[0] == lines[1]).all()


@pytest.mark.parametrize("width, fraction, accel", [(368, 0.08, 4), (372, 0.04, 8), (101, 0.1, 3.5), (64, 0.25, 4)])
def test_equispaced_fraction_mask_follows_formula(width, fraction, accel):
    s = EquispacedMask([fraction], [accel])((width,) and (1, width), batch_size=60, seed=5)
    num_low = round(width * fraction)
    centre = _centre(width, num_low)
    lines = _lines(s)
    if num_low * accel == width:
        assert (lines == centre).all()
        return
    spacing = EquispacedMask.adjusted_acceleration(width, num_low, accel)
    assert spacing == pytest.approx(accel * (width - num_low) / (width - num_low * accel))
    candidates = [centre | _fraction_lines(width, num_low, accel, o) for o in range(round(spacing))]
    seen = set()
    for row in lines:
        hits = [o for o, c in enumerate(candidates) if (c == row).all()]
        assert hits, "mask is not centre + equispaced lines from any offset"
        seen.update(hits)
    assert seen == set(range(round(spacing)))  # every offset occurs over 60 seeded draws
    # overall fraction close to 1 / acceleration (the rule drops at most a line or two at the edge)
    assert abs(lines.sum(1).double().mean().item() - width / accel) <= 2.5


@pytest.mark.parametrize("width, fraction, accel", [(368, 0.08, 4), (369, 0.04, 8), (30, 0.1, 3)])
def test_equispaced_integer_mask_follows_formula(width, fraction, accel):
    s = EquispacedMask([fraction], [accel], exact_fraction=False)((4, width), batch_size=40, seed=2)
    centre = _centre(width, round(width * fraction))
    seen = set()
    for row in _lines(s):
        hits = []
        for o in range(accel):
            cand = centre.clone()
            cand[o::accel] = True
            if (cand == row).all():
                hits.append(o)
        assert hits
        seen.update(hits)
    assert seen == set(range(accel))


def test_pairs_are_chosen_per_sample():
    width = 368
    mask_fn = RandomMask([0.08, 0.04], [4, 8])
    s = mask_fn((640, width), batch_size=300, seed=0)
    low = s.num_low_frequencies.tolist()
    acc = s.acceleration.tolist()
    assert set(zip(low, acc)) == {(29, 4.0), (15, 8.0)}  # both pairs, never crossed
    n4 = acc.count(4.0)
    assert 90 < n4 < 210  # uniform over the index: 150 +- 8.7 (std)
    lines = _lines(s)
    for i in range(300):
        assert lines[i, _centre(width, low[i])].all()
    # the sampled amount follows the chosen acceleration
    accs = torch.tensor(acc)
    assert lines[accs == 4].sum(1).double().mean() > 1.5 * lines[accs == 8].sum(1).double().mean()


def test_equispaced_pairs_are_chosen_per_sample():
    s = EquispacedMask([0.08, 0.04], [4, 8])((640, 368), batch_size=50, seed=1)
    assert set(zip(s.num_low_frequencies.tolist(), s.acceleration.tolist())) == {(29, 4.0), (15, 8.0)}


@pytest.mark.parametrize("mask_fn", [
    RandomMask([0.08, 0.04], [4, 8]),
    EquispacedMask([0.08, 0.04], [4, 8]),
    EquispacedMask([0.08], [4], exact_fraction=False),
    VariableDensityMask(4, calibration_size=(8, 8)),
])
def test_reproducibility(mask_fn):
    shape = (2, 48, 64)
    a = mask_fn(shape, batch_size=6, seed=123)
    b = mask_fn(shape, batch_size=6, seed=123)
    for x, y in zip(a, b):
        assert torch.equal(x, y)
    c = mask_fn(shape, batch_size=6, seed=124)
    assert not torch.equal(a.mask, c.mask)
    # sample i depends on (seed, start_index + i) only
    for i in range(6):
        alone = mask_fn(shape, batch_size=1, seed=123, start_index=i)
        assert torch.equal(alone.mask[0], a.mask[i])
        assert alone.num_low_frequencies[0] == a.num_low_frequencies[i]
        assert alone.acceleration[0] == a.acceleration[i]
    tail = mask_fn(shape, batch_size=3, seed=123, start_index=3)
    assert torch.equal(tail.mask, a.mask[3:])
    # samples of one batch differ
    assert not all(torch.equal(a.mask[0], a.mask[i]) for i in range(1, 6))
    # generators: same state, same masks; successive calls differ
    g1, g2 = torch.Generator().manual_seed(7), torch.Generator().manual_seed(7)
    assert torch.equal(mask_fn(shape, batch_size=2, seed=g1).mask, mask_fn(shape, batch_size=2, seed=g2).mask)
    assert not torch.equal(mask_fn(shape, batch_size=8, seed=g1).mask, mask_fn(shape, batch_size=8, seed=g1).mask)
    assert mask_fn(shape, batch_size=2, seed=None, device="cpu").mask.shape[0] == 2


def test_seeded_masks_are_fixed_forever():
    """Regression values: the same seed must give the same mask on every machine and version."""
    s = RandomMask([0.08, 0.04], [4, 8])((640, 368), batch_size=3, seed=0)
    assert s.num_low_frequencies.tolist() == [15, 15, 29]
    assert _lines(s).sum(1).tolist() == [44, 47, 97]


def test_acceleration_one_is_fully_sampled():
    for fn in (RandomMask([0.5], [1]), EquispacedMask([0.5], [1]), EquispacedMask([0.5], [1], exact_fraction=False),
               VariableDensityMask(1)):
        s = fn((32, 33), batch_size=2, seed=0)
        assert s.mask.all()
        assert s.acceleration.tolist() == [1.0, 1.0]


# --------------------------------------------------------------------------
# Line masks: fastMRI's own mask functions (stored values, and live where fastmri imports)
# --------------------------------------------------------------------------

FM_WIDTHS = (368, 369, 372, 320, 15, 16, 20)  # the cases of tests/data/make_fastmri_reference.py
FM_FRACTIONS = (0.08, 0.04, 0.125, 0.1)


@pytest.mark.parametrize("width", FM_WIDTHS)
@pytest.mark.parametrize("fraction", FM_FRACTIONS)
def test_num_low_and_centre_equal_fastmri(fastmri_reference, width, fraction):
    # fastMRI: RandomMaskFunc([fraction], [4])((1, 640, width, 2), seed=0) and its calculate_center_mask
    fm_low = int(fastmri_reference[f"centre_{width}_{fraction:g}_num_low"])
    fm_centre = torch.from_numpy(fastmri_reference[f"centre_{width}_{fraction:g}_mask"].copy())
    ours = RandomMask([fraction], [4])((1, 640, width), seed=0)
    assert ours.num_low_frequencies.tolist() == [fm_low]
    assert torch.equal(RandomMask.center_mask(width, fm_low), fm_centre)
    assert _lines(ours)[0, fm_centre].all()


def _fastmri_masks(fastmri_reference, key: str) -> list[torch.Tensor]:
    return [torch.from_numpy(m.copy()) for m in fastmri_reference[key]]


@pytest.mark.parametrize("width, fraction, accel", [(368, 0.08, 4), (372, 0.04, 8), (101, 0.1, 3), (64, 0.2, 4)])
def test_equispaced_fraction_mask_equals_fastmri(fastmri_reference, width, fraction, accel):
    # fastMRI: EquispacedMaskFractionFunc([fraction], [accel])((1, 640, width, 2), offset=o, seed=0), every offset
    fm_masks = _fastmri_masks(fastmri_reference, f"equispaced_fraction_{width}_{fraction:g}_{accel}")
    num_low = round(width * fraction)
    spacing = (accel * (num_low - width)) / (num_low * accel - width)
    assert len(fm_masks) == round(spacing)
    ours = _lines(EquispacedMask([fraction], [accel])((640, width), batch_size=200, seed=9))
    seen = set()
    for row in ours:
        hits = [o for o, m in enumerate(fm_masks) if torch.equal(m, row)]
        assert hits
        seen.update(hits)
    assert seen == set(range(len(fm_masks)))


@pytest.mark.parametrize("width, fraction, accel", [(368, 0.08, 4), (369, 0.04, 8)])
def test_equispaced_integer_mask_equals_fastmri(fastmri_reference, width, fraction, accel):
    # fastMRI: EquiSpacedMaskFunc([fraction], [accel])((1, 640, width, 2), offset=o, seed=0), o < accel
    fm_masks = _fastmri_masks(fastmri_reference, f"equispaced_integer_{width}_{fraction:g}_{accel}")
    assert len(fm_masks) == accel
    ours = _lines(EquispacedMask([fraction], [accel], exact_fraction=False)((640, width), batch_size=40, seed=4))
    seen = set()
    for row in ours:
        hits = [o for o, m in enumerate(fm_masks) if torch.equal(m, row)]
        assert hits
        seen.update(hits)
    assert seen == set(range(accel))


def test_random_mask_statistics_equal_fastmri(fastmri_reference):
    # fastMRI: RandomMaskFunc([0.08, 0.04], [4, 8])((1, 640, 368, 2), seed=s) for s < 300; per number of
    # centre lines, the rate of sampled lines outside its centre block and whether that block is sampled
    width, n = 368, 300
    fm_lows = fastmri_reference["random_num_low"].tolist()
    fm_rate = dict(zip(fastmri_reference["random_distinct_num_low"].tolist(),
                       fastmri_reference["random_outer_rate"].tolist()))
    fm_centre_sampled = dict(zip(fastmri_reference["random_distinct_num_low"].tolist(),
                                 fastmri_reference["random_centre_sampled"].tolist()))
    ours = RandomMask([0.08, 0.04], [4, 8])((640, width), batch_size=n, seed=21)
    assert len(fm_lows) == n
    assert set(fm_lows) == set(ours.num_low_frequencies.tolist()) == {29, 15}
    ours_lines = _lines(ours)
    for low, accel in ((29, 4), (15, 8)):
        prob = (width / accel - low) / (width - low)
        centre = _centre(width, low)
        sel_ours = ours.num_low_frequencies == low
        assert fm_centre_sampled[low] and ours_lines[sel_ours][:, centre].all()
        p_ours = ours_lines[sel_ours][:, ~centre].double().mean().item()
        # each rate is an average of > 90 * 339 Bernoulli draws: std < 0.0025
        assert abs(fm_rate[low] - prob) < 0.015 and abs(p_ours - prob) < 0.015


# --------------------------------------------------------------------------
# Variable-density mask
# --------------------------------------------------------------------------

@pytest.mark.parametrize("shape, accel, box", [((64, 64), 4, (24, 24)), ((63, 47), 3.3, (10, 7)),
                                                ((320, 320), 8, (24, 24)), ((16, 16), 2, (0, 0)),
                                                ((33, 32), 5, 6)])
def test_variable_density_exact_count_and_box(shape, accel, box):
    fn = VariableDensityMask(accel, calibration_size=box)
    s = fn((3,) + shape, batch_size=4, seed=0)
    H, W = shape
    ch, cw = (box, box) if isinstance(box, int) else box
    assert s.mask.shape == (4, 1, H, W) and s.mask.dtype == torch.float32
    assert s.mask.sum((1, 2, 3)).tolist() == [round(H * W / accel)] * 4
    r0, c0 = (H - ch + 1) // 2, (W - cw + 1) // 2
    assert s.mask[:, 0, r0:r0 + ch, c0:c0 + cw].all()
    if ch and cw:
        assert s.mask[:, 0, H // 2, W // 2].all()
    assert s.num_low_frequencies.tolist() == [cw] * 4
    assert s.acceleration.tolist() == [pytest.approx(accel)] * 4


def test_variable_density_narrow_density_does_not_underflow():
    # exp(-r^2 / (2 * 0.01^2)) underflows to 0 far out; the draw works in the log domain
    fn = VariableDensityMask(2, calibration_size=(4, 4), std=0.01)
    assert fn.density(64, 64)[0, 0] == 0.0
    s = fn((64, 64), batch_size=2, seed=0)
    assert s.mask.sum((1, 2, 3)).tolist() == [2048.0, 2048.0]
    assert torch.equal(s.mask, fn((64, 64), batch_size=2, seed=0).mask)


def test_variable_density_decreases_with_radius():
    H = W = 64
    fn = VariableDensityMask(4, calibration_size=(8, 8), std=0.3)
    s = fn((H, W), batch_size=100, seed=0)
    rate = s.mask[:, 0].double().mean(0)
    y = (torch.arange(H) - H // 2) / (H / 2)
    x = (torch.arange(W) - W // 2) / (W / 2)
    r = torch.sqrt(y[:, None] ** 2 + x[None, :] ** 2)
    outside = ~fn.calibration_mask(H, W)
    edges = [0.2, 0.35, 0.5, 0.65, 0.8, 1.0, 1.5]
    means = [rate[outside & (r >= a) & (r < b)].mean().item() for a, b in zip(edges[:-1], edges[1:])]
    assert all(m1 > m2 + 0.02 for m1, m2 in zip(means, means[1:])), means
    assert fn.density(H, W)[H // 2, W // 2] == 1.0
    # no two samples at the same point: the count is exact and values are 0/1
    assert set(s.mask.unique().tolist()) == {0.0, 1.0}


# --------------------------------------------------------------------------
# Radial trajectories
# --------------------------------------------------------------------------

def test_radial_shape_range_and_layout():
    S, n = 12, 32
    t = radial_trajectory(S, n, batch_size=3)
    assert t.shape == (3, 2, S * n) and t.dtype == torch.float32
    assert check_trajectory(t) is t
    assert t.min() >= -PI32 and t.max() < PI32
    assert torch.equal(t[0], t[1]) and torch.equal(t[0], t[2])  # no rotation: all equal
    spokes = t[0].reshape(2, S, n).double()
    k = math.pi * (2 * torch.arange(n, dtype=torch.float64) - n) / n
    for s in range(S):
        theta = math.pi * s / S
        # row 0 = ky (along H) = k sin(theta), row 1 = kx (along W) = k cos(theta)
        assert torch.allclose(spokes[0, s], k * math.sin(theta), atol=1e-6)
        assert torch.allclose(spokes[1, s], k * math.cos(theta), atol=1e-6)
        assert spokes[0, s, n // 2] == 0 and spokes[1, s, n // 2] == 0  # through the centre
    # spoke 0 lies along kx (the W axis)
    assert (spokes[0, 0] == 0).all() and spokes[1, 0, 0] == -PI32


def test_radial_odd_samples_contain_centre():
    t = radial_trajectory(5, 7)
    spokes = t[0].reshape(2, 5, 7)
    assert (spokes[:, :, 3] == 0).all()
    radius = torch.linalg.vector_norm(spokes.double(), dim=0)
    assert torch.allclose(radius[0], 2 * math.pi * (torch.arange(7) - 3).abs().double() / 7, atol=1e-6)
    check_trajectory(t)


def _spoke_angles(t: torch.Tensor, n: int) -> torch.Tensor:
    """Angle in [0, pi) of each spoke, from its last sample (k > 0)."""
    last = t.double().reshape(t.shape[0], 2, -1, n)[..., -1]
    return torch.remainder(torch.atan2(last[:, 0], last[:, 1]), math.pi)


def test_radial_golden_angle_increments():
    assert math.degrees(GOLDEN_ANGLE) == pytest.approx(111.246, abs=1e-3)
    n = 16
    t = radial_trajectory(50, n, golden_angle=True)
    check_trajectory(t)
    theta = _spoke_angles(t, n)[0]
    assert theta[0] == pytest.approx(0.0, abs=1e-6)
    diff = torch.remainder(theta[1:] - theta[:-1], math.pi)
    assert torch.allclose(diff, torch.full_like(diff, GOLDEN_ANGLE), atol=1e-5)


def test_radial_random_rotation_is_seeded():
    n = 8
    a = radial_trajectory(10, n, batch_size=4, seed=5, random_rotation=True)
    b = radial_trajectory(10, n, batch_size=4, seed=5, random_rotation=True)
    assert torch.equal(a, b)
    check_trajectory(a)
    assert not torch.equal(a, radial_trajectory(10, n, batch_size=4, seed=6, random_rotation=True))
    assert not torch.equal(a[0], a[1])
    for i in range(4):
        assert torch.equal(radial_trajectory(10, n, seed=5, start_index=i, random_rotation=True)[0], a[i])
    # a rotation keeps the spoke spacing: angles are the unrotated ones plus one offset (mod pi)
    theta = _spoke_angles(a, n)
    base = _spoke_angles(radial_trajectory(10, n), n)[0]
    shift = torch.remainder(theta - base, math.pi)
    shift = torch.where(shift > math.pi - 1e-5, shift - math.pi, shift)
    assert torch.allclose(shift, shift[:, :1].expand_as(shift), atol=1e-5)
    # without random_rotation the seed is irrelevant
    assert torch.equal(radial_trajectory(10, n, seed=1), radial_trajectory(10, n, seed=2))


def test_radial_many_spokes_stay_below_pi():
    # spokes near theta = pi put kx = -k cos(theta) within float32 rounding of +pi
    t = radial_trajectory(20000, 2)
    check_trajectory(t)
    assert t.max() < PI32 and t.min() >= -PI32


def test_radial_matches_torchkbnufft_axes():
    tkbn = pytest.importorskip("torchkbnufft")
    H, W = 12, 10
    gen = torch.Generator().manual_seed(0)
    image = torch.randn(1, 1, H, W, dtype=torch.complex64, generator=gen)
    traj = radial_trajectory(6, 16, golden_angle=True, random_rotation=True, seed=1)
    y = tkbn.KbNufft(im_size=(H, W))(image, traj)[0, 0]
    h = (torch.arange(H) - H // 2).double()
    w = (torch.arange(W) - W // 2).double()

    def dft(ky, kx):
        phase = ky[:, None, None] * h[None, :, None] + kx[:, None, None] * w[None, None, :]
        return (image[0, 0].to(torch.complex128)[None] * torch.exp(-1j * phase)).sum((1, 2))

    ky, kx = traj[0].double()
    ref = dft(ky, kx)
    err = (torch.linalg.vector_norm(y.to(torch.complex128) - ref) / torch.linalg.vector_norm(ref)).item()
    assert err < 2e-2
    swapped = dft(kx, ky)
    assert (torch.linalg.vector_norm(y.to(torch.complex128) - swapped) / torch.linalg.vector_norm(ref)).item() > 0.3


# --------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------

@pytest.mark.parametrize("args, exc, message", [
    (([], []), ValueError, "center_fractions: expected a non-empty sequence of numbers, found an empty sequence"),
    (([0.08], []), ValueError, "accelerations: expected a non-empty sequence of numbers, found an empty sequence"),
    (([0.08, 0.04], [4]), ValueError,
     "center_fractions, accelerations: expected sequences of the same length (one acceleration per center "
     "fraction), found lengths 2 and 1"),
    (([0.0], [4]), ValueError, "center_fractions[0]: expected a number in (0, 1), found 0.0"),
    (([0.08, 1.0], [4, 8]), ValueError, "center_fractions[1]: expected a number in (0, 1), found 1.0"),
    (([-0.1], [4]), ValueError, "center_fractions[0]: expected a number in (0, 1), found -0.1"),
    (([0.08], [0.5]), ValueError, "accelerations[0]: expected a number >= 1 (1 = fully sampled), found 0.5"),
    (([0.08, 0.04], [4, 0]), ValueError, "accelerations[1]: expected a number >= 1 (1 = fully sampled), found 0"),
    (([0.08], [float("inf")]), ValueError, "accelerations[0]: expected a finite number, found inf"),
    (([float("nan")], [4]), ValueError, "center_fractions[0]: expected a finite number, found nan"),
    (([0.08], ["4"]), ValueError, "accelerations[0]: expected a finite number, found '4'"),
    (("0.08", [4]), TypeError, "center_fractions: expected a number or a sequence of numbers, found str"),
    (([0.08], None), TypeError, "accelerations: expected a number or a sequence of numbers, found NoneType"),
    (([0.3], [4]), ValueError,
     "center_fractions[0]: center fraction 0.3 is too large for acceleration 4: the centre alone would sample "
     "more than 1/acceleration of the lines; expected at most 1/acceleration = 0.25"),
])
@pytest.mark.parametrize("cls", [RandomMask, EquispacedMask])
def test_line_mask_constructor_errors(cls, args, exc, message):
    with pytest.raises(exc, match=re.escape(message)):
        cls(*args)


def test_line_mask_scalar_arguments():
    fn = RandomMask(0.08, 4)
    assert fn.center_fractions == (0.08,) and fn.accelerations == (4,)
    assert repr(fn) == "RandomMask(center_fractions=[0.08], accelerations=[4])"


def test_equispaced_specific_errors():
    with pytest.raises(ValueError, match=re.escape(
            "accelerations[1]: expected an integer acceleration when exact_fraction=False (every acceleration-th "
            "line is sampled), found 2.5")):
        EquispacedMask([0.08, 0.04], [4, 2.5], exact_fraction=False)
    with pytest.raises(TypeError, match=re.escape("exact_fraction: expected a bool, found str")):
        EquispacedMask([0.08], [4], exact_fraction="yes")
    assert EquispacedMask([0.08], [4.0], exact_fraction=False).accelerations == (4,)


@pytest.mark.parametrize("fn", [RandomMask([0.08], [4]), EquispacedMask([0.08], [4]), VariableDensityMask(4, 4)])
@pytest.mark.parametrize("kwargs, exc, message", [
    (dict(shape=(368,)), ValueError,
     "shape: expected the k-space shape (..., H, W) with at least 2 dimensions and positive H, W, found (368,)"),
    (dict(shape=(64, 0)), ValueError,
     "shape: expected the k-space shape (..., H, W) with at least 2 dimensions and positive H, W, found (64, 0)"),
    (dict(shape=(64, 64.0)), ValueError,
     "shape: expected the k-space shape (..., H, W) with at least 2 dimensions and positive H, W, found (64, 64.0)"),
    (dict(shape=64), ValueError,
     "shape: expected the k-space shape (..., H, W) with at least 2 dimensions and positive H, W, found 64"),
    (dict(shape=(64, 64), batch_size=0), ValueError, "batch_size: expected a positive integer, found 0"),
    (dict(shape=(64, 64), start_index=-1), ValueError, "start_index: expected a non-negative integer, found -1"),
    (dict(shape=(64, 64), seed="1"), TypeError, "seed: expected an int, a torch.Generator or None, found str"),
    (dict(shape=(64, 64), seed=1.5), TypeError, "seed: expected an int, a torch.Generator or None, found float"),
])
def test_mask_call_errors(fn, kwargs, exc, message):
    kwargs = dict(kwargs)
    shape = kwargs.pop("shape")
    with pytest.raises(exc, match=re.escape(message)):
        fn(shape, **kwargs)


@pytest.mark.parametrize("cls", [RandomMask, EquispacedMask])
def test_centre_too_large_for_this_width(cls):
    # 0.25 * 4 = 1 passes the constructor, but round(6 * 0.25) = 2 lines exceed 6 / 4 = 1.5
    fn = cls([0.08, 0.25], [4, 4])
    with pytest.raises(ValueError, match=re.escape(
            "shape: center fraction 0.25 gives 2 low-frequency lines for W = 6, more than W / acceleration = 1.5 "
            "lines for acceleration 4 (pair 1); expected a larger W or a smaller center fraction")):
        fn((8, 6), seed=0)
    assert fn((8, 8), seed=0).mask.shape == (1, 1, 1, 8)  # 2 lines of 8 = exactly 1 / 4


@pytest.mark.parametrize("kwargs, exc, message", [
    (dict(acceleration=0.5), ValueError, "acceleration: expected a number >= 1 (1 = fully sampled), found 0.5"),
    (dict(acceleration=True), ValueError, "acceleration: expected a number >= 1 (1 = fully sampled), found True"),
    (dict(acceleration=4, calibration_size=(24,)), ValueError,
     "calibration_size: expected a non-negative int or a pair of non-negative ints (rows, columns), found (24,)"),
    (dict(acceleration=4, calibration_size=(-1, 4)), ValueError,
     "calibration_size: expected a non-negative int or a pair of non-negative ints (rows, columns), found (-1, 4)"),
    (dict(acceleration=4, std=0), ValueError, "std: expected a positive number, found 0"),
    (dict(acceleration=4, std=float("nan")), ValueError, "std: expected a positive number, found nan"),
])
def test_variable_density_constructor_errors(kwargs, exc, message):
    with pytest.raises(exc, match=re.escape(message)):
        VariableDensityMask(**kwargs)


def test_variable_density_call_errors():
    with pytest.raises(ValueError, match=re.escape(
            "calibration_size: expected a box within the 16x20 k-space, found 24x24")):
        VariableDensityMask(2)((16, 20))
    with pytest.raises(ValueError, match=re.escape(
            "calibration_size: the 24x24 calibration box holds 576 samples, more than the 512 samples of "
            "acceleration 8 on a 64x64 grid; expected a smaller box or a lower acceleration")):
        VariableDensityMask(8)((64, 64))


@pytest.mark.parametrize("args, kwargs, exc, message", [
    ((0, 16), {}, ValueError, "num_spokes: expected a positive integer, found 0"),
    ((8, 2.5), {}, ValueError, "num_samples: expected a positive integer, found 2.5"),
    ((8, 16), dict(golden_angle=1), TypeError, "golden_angle: expected a bool, found int"),
    ((8, 16), dict(random_rotation="no"), TypeError, "random_rotation: expected a bool, found str"),
    ((8, 16), dict(batch_size=-2), ValueError, "batch_size: expected a positive integer, found -2"),
    ((8, 16), dict(start_index=1.0), ValueError, "start_index: expected a non-negative integer, found 1.0"),
    ((8, 16), dict(random_rotation=True, seed="x"), TypeError,
     "seed: expected an int, a torch.Generator or None, found str"),
])
def test_radial_errors(args, kwargs, exc, message):
    with pytest.raises(exc, match=re.escape(message)):
        radial_trajectory(*args, **kwargs)


@pytest.mark.parametrize("traj, exc, message", [
    (torch.tensor([[0.0, 3.2], [-1.0, 0.5]]), ValueError,
     "ktraj: expected k-space coordinates in [-pi, pi) radians, found values in [-1, 3.2]"),
    (torch.tensor([[0.0, math.pi], [-1.0, 0.5]], dtype=torch.float64), ValueError,
     "ktraj: expected k-space coordinates in [-pi, pi) radians, found values in [-1, 3.1415927]"),
    (torch.tensor([[0.0, 1.0], [-4.0, 0.5]]), ValueError,
     "ktraj: expected k-space coordinates in [-pi, pi) radians, found values in [-4, 1]"),
    (torch.tensor([[0.0, float("nan")], [0.0, 0.5]]), ValueError,
     "ktraj: expected finite values, found 1 NaN and 0 Inf entries"),
    (torch.tensor([[0.0, float("inf")], [0.0, 0.5]]), ValueError,
     "ktraj: expected finite values, found 0 NaN and 1 Inf entries"),
    (torch.zeros(3, 5), ValueError, "ktraj: expected shape (..., 2, K) with K >= 1, found (3, 5)"),
    (torch.zeros(2), ValueError, "ktraj: expected shape (..., 2, K) with K >= 1, found (2,)"),
    (torch.zeros(1, 2, 0), ValueError, "ktraj: expected shape (..., 2, K) with K >= 1, found (1, 2, 0)"),
    (torch.zeros(2, 4, dtype=torch.int64), TypeError,
     "ktraj: expected a real floating tensor (float16, bfloat16, float32, float64), found dtype int64"),
    (torch.zeros(2, 4, dtype=torch.complex64), TypeError,
     "ktraj: expected a real floating tensor (float16, bfloat16, float32, float64), found dtype complex64"),
    (np.zeros((2, 4)), TypeError, "ktraj: expected a torch.Tensor, found ndarray"),
])
def test_check_trajectory_errors(traj, exc, message):
    with pytest.raises(exc, match=re.escape(message)):
        check_trajectory(traj, "ktraj")


def test_check_trajectory_default_name_and_edges():
    with pytest.raises(ValueError, match=re.escape("trajectory: expected k-space coordinates in [-pi, pi)")):
        check_trajectory(torch.full((2, 3), 4.0))
    # -pi is inside, in the tensor's own precision
    for dtype in (torch.float32, torch.float64):
        edge = torch.tensor([[-math.pi, 0.0], [0.0, 0.0]], dtype=dtype)
        assert check_trajectory(edge) is edge
