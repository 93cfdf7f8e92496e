"""Test images: the Shepp-Logan phantom, random ellipses, and lesions with labels.

Lesions go on random ellipses, on the Shepp-Logan phantom, or on given
background images (e.g. real anatomy scaled to ``[0, 1]``), inside the body
(:func:`body_mask`).

Coordinates
-----------
Phantoms live on the normalised square ``[-1, 1]^2`` (cube ``[-1, 1]^3``),
sampled at pixel centres. For an ``H x W`` image, pixel ``(r, c)`` sits at

    x_n = (2c + 1) / W - 1,        y_n = 1 - (2r + 1) / H,

so row 0 is the *top* of the image (largest ``y``) and column 0 its left edge
(smallest ``x``); ``matplotlib.pyplot.imshow(img[0, 0])`` shows the phantom
the right way up. In 3D, axis ``D`` is ``z`` with slice 0 at the smallest
``z``: ``z_n = (2d + 1) / D - 1``.

An ellipse with centre ``c``, half-axes ``a`` and rotation ``R`` is the set
``{p : sum_i ((R^T (p - c))_i / a_i)^2 <= 1}``. In 2D, ``R`` rotates
counter-clockwise by the angle ``theta`` in the ``(x, y)`` plane (``y`` up);
in 3D ``R = Rz(phi) Rx(theta) Rz(psi)`` (z-x-z Euler angles). A phantom is the
sum of ``value * indicator`` over its ellipses (overlaps add).

Units
-----
Values are in arbitrary units (the modified Shepp-Logan phantom up to 1,
random ellipses of order 1). For transmission CT with photon counts, give
them attenuation units, e.g. ``pirecon.noise.MU_WATER_PER_MM * phantom``
(value 1 = water, 0.02 / mm), as ``pirecon simulate --noise poisson:I0``
does: taken as 1/mm directly, a ray through 100 mm of value 1 would keep a
fraction ``exp(-100)`` of its photons.
"""

from __future__ import annotations

import math
import numbers

import torch

from ._validation import check_positive, sample_generators

__all__ = ["shepp_logan", "random_ellipses", "lesions", "body_mask"]


# --------------------------------------------------------------------------
# Parameter tables
# --------------------------------------------------------------------------

# Shepp & Logan (1974), original intensities; geometry on [-1, 1]^2.
# Columns: value, half-axis x, half-axis y, centre x, centre y, angle (degrees).
_SL_2D = (
    (2.00, 0.6900, 0.9200, 0.0000, 0.0000, 0.0),
    (-0.98, 0.6624, 0.8740, 0.0000, -0.0184, 0.0),
    (-0.02, 0.1100, 0.3100, 0.2200, 0.0000, -18.0),
    (-0.02, 0.1600, 0.4100, -0.2200, 0.0000, 18.0),
    (0.01, 0.2100, 0.2500, 0.0000, 0.3500, 0.0),
    (0.01, 0.0460, 0.0460, 0.0000, 0.1000, 0.0),
    (0.01, 0.0460, 0.0460, 0.0000, -0.1000, 0.0),
    (0.01, 0.0460, 0.0230, -0.0800, -0.6050, 0.0),
    (0.01, 0.0230, 0.0230, 0.0000, -0.6060, 0.0),
    (0.01, 0.0230, 0.0460, 0.0600, -0.6050, 0.0),
)

# Toft's "modified" (high-contrast) intensities, same geometry.
_SL_MODIFIED_VALUES = (1.0, -0.8, -0.2, -0.2, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1)

# Half-axes in z of the 3D extension (Kak & Slaney's ellipsoids as tabulated
# in the widely used phantom3d tables). All centres lie in the plane z = 0 and
# all rotations are about the z axis, so the central slice equals the 2D
# phantom.
_SL_3D_HALF_Z = (0.810, 0.780, 0.220, 0.280, 0.410, 0.050, 0.050, 0.050, 0.020, 0.020)


# --------------------------------------------------------------------------
# Validation helpers (local to this module)
# --------------------------------------------------------------------------

def _check_shape(shape) -> tuple[int, ...]:
    if isinstance(shape, (tuple, list, torch.Size)) and len(shape) in (2, 3):
        out = []
        for i, s in enumerate(shape):
            if isinstance(s, numbers.Integral) and not isinstance(s, bool):
                s = int(s)
            out.append(check_positive(s, f"shape[{i}]", integer=True))
        return tuple(out)
    raise ValueError(f"shape: expected a tuple of 2 or 3 positive ints, found {shape!r}")


def _check_dtype(dtype) -> torch.dtype:
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise TypeError(f"dtype: expected a real floating torch.dtype, found {dtype!r}")
    return dtype


def _work_dtype(dtype: torch.dtype) -> torch.dtype:
    """Dtype the geometry is evaluated in: float64 for float64 output, else float32."""
    return torch.float64 if dtype == torch.float64 else torch.float32


# --------------------------------------------------------------------------
# Rasterisation
# --------------------------------------------------------------------------

def _axis_coords(n: int, device, dtype, flip: bool = False) -> torch.Tensor:
    """Pixel-centre coordinates ``(2i + 1)/n - 1`` (or their negation when ``flip``)."""
    t = (2.0 * torch.arange(n, device=device, dtype=dtype) + 1.0) / n - 1.0
    return -t if flip else t


def _rotation_2d(theta: torch.Tensor) -> torch.Tensor:
    """Counter-clockwise rotation matrices ``(..., 2, 2)`` for angles ``theta`` (radians)."""
    c, s = torch.cos(theta), torch.sin(theta)
    return torch.stack([torch.stack([c, -s], -1), torch.stack([s, c], -1)], -2)


def _rotation_3d(angles: torch.Tensor) -> torch.Tensor:
    """``Rz(phi) Rx(theta) Rz(psi)`` for ``angles[..., :] = (phi, theta, psi)``; shape ``(..., 3, 3)``."""
    zero = torch.zeros_like(angles[..., 0])
    one = torch.ones_like(zero)

    def rz(a):
        c, s = torch.cos(a), torch.sin(a)
        return torch.stack([torch.stack([c, -s, zero], -1),
                            torch.stack([s, c, zero], -1),
                            torch.stack([zero, zero, one], -1)], -2)

    def rx(a):
        c, s = torch.cos(a), torch.sin(a)
        return torch.stack([torch.stack([one, zero, zero], -1),
                            torch.stack([zero, c, -s], -1),
                            torch.stack([zero, s, c], -1)], -2)

    return rz(angles[..., 0]) @ rx(angles[..., 1]) @ rz(angles[..., 2])


def _rasterise(values, centres, half_axes, rotations, shape, *, device, dtype) -> torch.Tensor:
    """Sum of ``value * indicator`` over ellipse slots, vectorised over the batch.

    ``values`` (B, K); ``centres``, ``half_axes`` (B, K, n); ``rotations``
    (B, K, n, n), ``n = len(shape)``. Padded slots carry value 0. Returns
    ``(B, 1, *shape)`` in ``dtype`` on ``device``.
    """
    work = _work_dtype(dtype)
    values, centres, half_axes, rotations = (
        t.to(device=device, dtype=work) for t in (values, centres, half_axes, rotations)
    )
    B, K = values.shape
    ndim = len(shape)
    out = torch.zeros((B, *shape), device=device, dtype=work)
    if ndim == 2:
        H, W = shape
        # physical axes: x along columns, y along rows (y decreases downwards)
        grid = (_axis_coords(W, device, work).view(1, 1, W),
                _axis_coords(H, device, work, flip=True).view(1, H, 1))
    else:
        D, H, W = shape
        grid = (_axis_coords(W, device, work).view(1, 1, 1, W),
                _axis_coords(H, device, work, flip=True).view(1, 1, H, 1),
                _axis_coords(D, device, work).view(1, D, 1, 1))
    bshape = (B,) + (1,) * ndim
    for k in range(K):
        diff = [g - centres[:, k, j].view(bshape) for j, g in enumerate(grid)]
        radius = None
        for i in range(ndim):
            # q_i = (R^T d)_i = sum_j R[j, i] d_j
            q = sum(rotations[:, k, j, i].view(bshape) * diff[j] for j in range(ndim))
            term = (q / half_axes[:, k, i].view(bshape)) ** 2
            radius = term if radius is None else radius + term
        out += values[:, k].view(bshape) * (radius <= 1.0)
    return out.unsqueeze(1).to(dtype)


# --------------------------------------------------------------------------
# Shepp-Logan
# --------------------------------------------------------------------------

def shepp_logan(shape, modified: bool = True, *, dtype: torch.dtype = torch.float32,
                device=None) -> torch.Tensor:
    """The Shepp-Logan phantom on ``[-1, 1]^2`` (or ``[-1, 1]^3``), sampled at pixel centres.

    Parameters
    ----------
    shape : tuple of int
        ``(H, W)`` for the 2D phantom, ``(D, H, W)`` for the 3D one.
    modified : bool
        ``True``: Toft's high-contrast intensities (1, -0.8, -0.2, -0.2,
        0.1, ...), values in ``[0, 1]``. ``False``: the original intensities
        (2, -0.98, -0.02, -0.02, 0.01, ...), values in ``[0, 2]``.
    dtype, device
        Of the result.

    Returns
    -------
    Tensor
        ``(1, 1, H, W)`` or ``(1, 1, D, H, W)``; row 0 is the top of the head
        (the three small ellipses are near the bottom rows). The image is
        ``sum_k v_k 1[p in E_k]`` over the 10 ellipses of Shepp & Logan (1974).
        The 3D phantom extends each ellipse to an ellipsoid (Kak & Slaney's
        z half-axes) centred in the plane ``z = 0`` and rotated about ``z``,
        so for odd ``D`` its central slice ``d = (D - 1) / 2`` equals the 2D
        phantom of shape ``(H, W)``.
    """
    shape = _check_shape(shape)
    if not isinstance(modified, bool):
        raise TypeError(f"modified: expected a bool, found {type(modified).__name__}")
    dtype = _check_dtype(dtype)
    table = torch.tensor(_SL_2D, dtype=torch.float64)
    values = torch.tensor(_SL_MODIFIED_VALUES, dtype=torch.float64) if modified else table[:, 0]
    angles = torch.deg2rad(table[:, 5])
    if len(shape) == 2:
        half_axes = table[:, 1:3]
        centres = table[:, 3:5]
        rotations = _rotation_2d(angles)
    else:
        zeros = torch.zeros_like(angles)
        half_axes = torch.cat([table[:, 1:3], torch.tensor(_SL_3D_HALF_Z, dtype=torch.float64)[:, None]], 1)
        centres = torch.cat([table[:, 3:5], zeros[:, None]], 1)
        rotations = _rotation_3d(torch.stack([angles, zeros, zeros], -1))
    # Geometry in float64; the intensities are multiples of 0.01, so rounding
    # the sums removes round-off such as 1 - 0.8 - 0.2 != 0 (no negative values).
    img = _rasterise(values[None], centres[None], half_axes[None], rotations[None], shape,
                     device=device, dtype=torch.float64)
    return torch.round(img, decimals=8).to(dtype)


# --------------------------------------------------------------------------
# Random ellipses (LPD-ellipses protocol)
# --------------------------------------------------------------------------

def _random_ellipse_params(ndim: int, batch_size: int, seed, num_ellipses: float, start_index: int):
    """Draw the ellipse parameters of ``batch_size`` images on the CPU (float64).

    Returns ``(values (B, K), centres (B, K, n), half_axes (B, K, n),
    angles (B, K, m), counts (B,))`` padded to ``K = max(counts)``; padded
    slots have value 0 and half-axes 1. ``m`` is 1 in 2D and 3 in 3D.
    """
    generators = sample_generators(seed, batch_size, start_index)
    n_angles = 1 if ndim == 2 else 3
    f64 = torch.float64
    per_image = []
    for i in range(batch_size):
        g = generators[i]
        n = int(torch.poisson(torch.tensor([float(num_ellipses)], dtype=f64), generator=g).item())
        u = torch.rand(n, dtype=f64, generator=g)
        scale = torch.empty(n, dtype=f64).exponential_(1.0, generator=g) * 0.4
        half = torch.empty(n, ndim, dtype=f64).exponential_(1.0, generator=g) * 0.2
        centre = 2.0 * torch.rand(n, ndim, dtype=f64, generator=g) - 1.0
        angle = 2.0 * math.pi * torch.rand(n, n_angles, dtype=f64, generator=g)
        per_image.append(((u - 0.5) * scale, centre, half, angle))
    counts = torch.tensor([p[0].numel() for p in per_image], dtype=torch.int64)
    K = int(counts.max()) if batch_size else 0
    values = torch.zeros(batch_size, K, dtype=f64)
    centres = torch.zeros(batch_size, K, ndim, dtype=f64)
    half_axes = torch.ones(batch_size, K, ndim, dtype=f64)
    angles = torch.zeros(batch_size, K, n_angles, dtype=f64)
    for i, (v, c, h, a) in enumerate(per_image):
        n = v.numel()
        values[i, :n], centres[i, :n], half_axes[i, :n], angles[i, :n] = v, c, h, a
    return values, centres, half_axes, angles, counts


def random_ellipses(shape, batch_size: int = 1, *, seed: int | torch.Generator | None = None,
                    num_ellipses: float = 50, dtype: torch.dtype = torch.float32, device=None,
                    start_index: int = 0) -> torch.Tensor:
    """Random-ellipse images of the LPD-ellipses protocol (Adler & Öktem 2018).

    Each image holds ``n ~ Poisson(num_ellipses)`` ellipses; each ellipse has
    value ``(U - 0.5) * Exp(scale 0.4)``, half-axes ``Exp(1) * 0.2`` each,
    centre ``U[-1, 1]^2`` (normalised coordinates) and angle ``U[0, 2 pi)``.
    The image is ``sum_k v_k 1[p in E_k]`` at pixel centres (overlaps add).
    A 3-tuple ``shape`` gives ellipsoids with three half-axes, centre
    ``U[-1, 1]^3`` and z-x-z Euler angles each ``U[0, 2 pi)``.

    Parameters
    ----------
    shape : tuple of int
        ``(H, W)`` or ``(D, H, W)``.
    batch_size : int
        Number of images ``B``.
    seed : int, torch.Generator or None
        Image ``i`` of the call depends only on ``(seed, start_index + i)``,
        whatever the batch size. A generator contributes one drawn int64 base
        seed (so successive calls differ); ``None`` draws fresh entropy.
    num_ellipses : float
        Poisson mean of the number of ellipses per image.
    dtype, device
        Of the result; parameters are drawn on the CPU, then rasterised on
        ``device``.
    start_index : int
        Index of the first image in the seeded stream.

    Returns
    -------
    Tensor
        ``(B, 1, H, W)`` or ``(B, 1, D, H, W)``.
    """
    shape = _check_shape(shape)
    batch_size = check_positive(batch_size, "batch_size", integer=True)
    num_ellipses = check_positive(num_ellipses, "num_ellipses")
    if isinstance(start_index, bool) or not isinstance(start_index, int) or start_index < 0:
        raise ValueError(f"start_index: expected a non-negative integer, found {start_index!r}")
    dtype = _check_dtype(dtype)
    ndim = len(shape)
    values, centres, half_axes, angles, _ = _random_ellipse_params(
        ndim, batch_size, seed, num_ellipses, start_index)
    rotations = _rotation_2d(angles[..., 0]) if ndim == 2 else _rotation_3d(angles)
    return _rasterise(values, centres, half_axes, rotations, shape, device=device, dtype=dtype)


# --------------------------------------------------------------------------
# Lesions (a diagnostic task with labels)
# --------------------------------------------------------------------------

# Stream tag keeping lesion draws independent of the background drawn with the
# same seed (the background of sample i is ``random_ellipses`` sample i).
# Fixed forever: changing it changes every lesion phantom.
_STREAM_LESIONS = 0x6C65736E  # "lesn"

_LESION_TRIES = 100  # placement attempts per lesion before it is given up


def _values_at(values, centres, half_axes, rotations, points) -> torch.Tensor:
    """The phantom ``sum_k v_k 1[p in E_k]`` of one image evaluated at ``points (P, 2)`` (float64, CPU)."""
    diff = points[:, None, :] - centres[None, :, :]  # (P, K, 2)
    q = torch.einsum("kji,pkj->pki", rotations, diff)  # R^T (p - c)
    inside = ((q / half_axes[None]) ** 2).sum(-1) <= 1.0
    return (inside.to(values.dtype) * values[None]).sum(-1)


_BODY_THRESHOLD = 0.05  # default body_threshold: 5 % of the [0, 1] range of a background image


def _mask_at(mask: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """``mask (h, w)`` (bool, CPU) at ``points (P, 2)`` (normalised ``(x, y)``, float64): nearest-pixel lookup.

    Pixel ``(r, c)`` covers ``x in [2c/w - 1, 2(c + 1)/w - 1]`` and ``y in [1 - 2(r + 1)/h, 1 - 2r/h]`` around
    its centre ``((2c + 1)/w - 1, 1 - (2r + 1)/h)`` (the ``_axis_coords`` convention), so the pixel whose
    square holds a point is the one with the nearest centre. Points on the image border (``|x| = 1``) belong
    to the outermost pixels.
    """
    h, w = mask.shape
    col = torch.floor((points[:, 0] + 1.0) * (w / 2.0)).long().clamp_(0, w - 1)
    row = torch.floor((1.0 - points[:, 1]) * (h / 2.0)).long().clamp_(0, h - 1)
    return mask[row, col]


def _check_threshold(value, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0 <= value < 1:
        raise ValueError(f"{name}: expected a number in [0, 1), found {value!r}")
    return float(value)


def _check_background_images(background, name: str = "background") -> torch.Tensor:
    """Check a tensor of background images ``(B, 1, H, W)``: real floating, finite, values in ``[0, 1]``."""
    if not isinstance(background, torch.Tensor) or background.ndim != 4 or background.shape[1] != 1 \
            or min(background.shape) < 1:
        found = f"shape {tuple(background.shape)}" if isinstance(background, torch.Tensor) else repr(background)
        raise ValueError(f"{name}: expected a tensor of background images (B, 1, H, W), found {found}")
    if not background.dtype.is_floating_point:
        raise ValueError(f"{name}: expected a real floating tensor, found dtype {background.dtype}")
    if not bool(torch.isfinite(background).all()):
        raise ValueError(f"{name}: expected finite values, found NaN or Inf")
    lo, hi = float(background.min()), float(background.max())
    if lo < 0 or hi > 1:
        raise ValueError(f"{name}: expected values in [0, 1], found values in [{lo:g}, {hi:g}]")
    return background


def _largest_component_masks(background: torch.Tensor, threshold: float) -> torch.Tensor:
    """``(B, H, W)`` bool (CPU): ``background > threshold`` restricted to its largest 4-connected component."""
    import numpy as np
    from scipy import ndimage

    above = (background.detach().to("cpu", torch.float64)[:, 0] > threshold).numpy()
    out = np.zeros_like(above)
    for b in range(above.shape[0]):
        labels, count = ndimage.label(above[b])  # edge neighbours only: diagonal contacts do not join
        if count:
            sizes = np.bincount(labels.ravel(), minlength=count + 1)[1:]
            out[b] = labels == 1 + int(np.argmax(sizes))  # among equals, the first in raster order
    return torch.from_numpy(out)


def body_mask(background: torch.Tensor, threshold: float = _BODY_THRESHOLD) -> torch.Tensor:
    """The body in background images: where :func:`lesions` may place lesions on them.

    The pixels with ``background > threshold`` are split into 4-connected
    components (:func:`scipy.ndimage.label`: pixels sharing an edge); only the
    largest one is kept (the first in raster order among equals). Air (below
    the threshold, inside the body or around it) and anything separate from
    the body (a table, a blob outside it) are thus left out.

    Parameters
    ----------
    background : Tensor
        ``(B, 1, H, W)`` real floating images with values in ``[0, 1]`` (e.g.
        scaled min-max, as ``pirecon simulate --phantom lesions:images:DIR`` does).
    threshold : float
        In ``[0, 1)``; default 0.05, i.e. 5 % of the ``[0, 1]`` range.

    Returns
    -------
    Tensor
        ``(B, 1, H, W)`` bool on the device of ``background``; all ``False``
        for an image with no pixel above the threshold.
    """
    _check_background_images(background)
    threshold = _check_threshold(threshold, "threshold")
    return _largest_component_masks(background, threshold)[:, None].to(background.device)


def _check_pair_range(value, name: str, *, integer: bool, lower: float, upper: float | None = None):
    ok = isinstance(value, (tuple, list)) and len(value) == 2
    if ok:
        kind = numbers.Integral if integer else numbers.Real
        ok = all(isinstance(v, kind) and not isinstance(v, bool) and math.isfinite(v) for v in value)
        ok = ok and lower <= value[0] <= value[1] and (upper is None or value[1] < upper)
    if not ok:
        what = "integers" if integer else "numbers"
        bound = f"{lower:g} <= low <= high" + (f" < {upper:g}" if upper is not None else "")
        raise ValueError(f"{name}: expected a pair (low, high) of {what} with {bound}, found {value!r}")
    return (int(value[0]), int(value[1])) if integer else (float(value[0]), float(value[1]))


def lesions(shape, batch_size: int = 1, *, seed: int | torch.Generator | None = None, start_index: int = 0,
            num_lesions=(1, 3), radius_range=(0.03, 0.08), contrast: float = 0.05,
            presence_probability: float = 0.5, background: str | torch.Tensor = "ellipses",
            body_threshold: float | None = None, body_mask: torch.Tensor | None = None,
            dtype: torch.dtype = torch.float32, device=None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Background images with, at random, a few small low-contrast circular lesions, and their labels.

    For each image, with probability ``presence_probability``, ``m`` lesions
    are drawn, ``m`` uniform in ``{num_lesions[0], ..., num_lesions[1]}``.
    Each lesion is a disc of radius ``U[radius_range]`` (normalised
    coordinates, the image is ``[-1, 1]^2``) that adds ``contrast`` to the
    background. Its centre is drawn uniformly with the disc inside the image
    and kept only if the disc lies *inside the object* at its centre, at 12
    points of the circle of half the radius and at 24 points of the rim, and
    the disc does not overlap an earlier lesion; after 100 rejected draws the
    lesion is left out. The label is 1 when at least one lesion was placed.

    *Inside the object* means: for the named backgrounds, the background
    (evaluated analytically) is positive at those 37 points (up to ellipses
    smaller than the gaps between them); for a tensor of background images,
    the 37 points fall in the body: the pixel holding each point (the nearest
    pixel centre, pixel ``(r, c)`` centred at ``x = (2c + 1)/W - 1``,
    ``y = 1 - (2r + 1)/H``) lies in :func:`body_mask` of the image, i.e. is
    above ``body_threshold`` and in the largest connected component of the
    pixels above it (not on the table, in air, or in a separate blob). An
    image without body (no pixel above the threshold) gets no lesion: label 0
    and an empty segmentation, as when every draw is rejected.

    Parameters
    ----------
    shape : (H, W)
        2D images only.
    batch_size : int
        Number of images ``B``.
    seed : int, torch.Generator or None
        Image ``i`` depends only on ``(seed, start_index + i)`` (and, for a
        tensor background, on its background image). With
        ``background="ellipses"`` its background is image ``i`` of
        ``random_ellipses(shape, seed=seed, start_index=start_index)``
        (a generator or ``None`` contributes one drawn int64 base seed first).
        Lesion parameters are continuous, so with a named background the
        same seed gives the same lesions at any resolution; a tensor
        background decides the placement on its pixels (see ``body_mask``).
    start_index : int
        Index of the first image in the seeded stream.
    num_lesions : (int, int)
        Inclusive range of the number of lesions of an image with lesions (``>= 1``).
    radius_range : (float, float)
        Range of the radii, in ``(0, 1)``. At ``H`` pixels a radius ``r``
        spans ``r H / 2`` pixels; radii below a pixel may cover no pixel
        centre, so the segmentation can be empty although the label is 1.
    contrast : float
        Intensity added inside each lesion (non-zero; negative for hypo-intense lesions).
    presence_probability : float
        Probability in ``[0, 1]`` that an image holds lesions.
    background : "ellipses", "shepp-logan" or Tensor
        Random ellipses of the LPD-ellipses protocol, the modified
        Shepp-Logan phantom (the same for every image), or background images
        ``(B, 1, H, W)`` (or ``(1, 1, H, W)``, one for every image), real
        floating with values in ``[0, 1]``, e.g. real anatomy scaled min-max.
        Image ``i`` is ``background[i]`` plus its lesions.
    body_threshold : float, optional
        Tensor backgrounds only: the body is where the background exceeds it
        (largest connected component, :func:`body_mask`); in ``[0, 1)``,
        default 0.05 (5 % of the ``[0, 1]`` range).
    body_mask : Tensor, optional
        Tensor backgrounds only, instead of ``body_threshold``: where lesions
        may go, bool ``(B, 1, h, w)`` or ``(1, 1, h, w)`` at any resolution
        (looked up at the nearest pixel centre in normalised coordinates),
        e.g. ``body_mask(coarse)`` of the reconstruction grid for a background
        rendered on a finer grid, so that both grids get the same lesions.
    dtype, device
        Of the images (default device: the background tensor's, else the CPU).

    Returns
    -------
    images : Tensor
        ``(B, 1, H, W)``: background plus lesions.
    segmentation : Tensor
        ``(B, 1, H, W)`` uint8: 1 at the pixel centres inside a lesion.
    present : Tensor
        ``(B,)`` int64: 1 if the image holds lesions, else 0.
    """
    shape = _check_shape(shape)
    if len(shape) != 2:
        raise ValueError(f"shape: expected (H, W) (lesion phantoms are 2D), found {shape!r}")
    batch_size = int(check_positive(batch_size, "batch_size", integer=True))
    if isinstance(start_index, bool) or not isinstance(start_index, numbers.Integral) or start_index < 0:
        raise ValueError(f"start_index: expected a non-negative integer, found {start_index!r}")
    start_index = int(start_index)
    count_lo, count_hi = _check_pair_range(num_lesions, "num_lesions", integer=True, lower=1)
    r_lo, r_hi = _check_pair_range(radius_range, "radius_range", integer=False, lower=0, upper=1)
    if r_lo <= 0:
        raise ValueError(f"radius_range: expected radii in (0, 1), found {radius_range!r}")
    if isinstance(contrast, bool) or not isinstance(contrast, numbers.Real) or not math.isfinite(contrast) \
            or contrast == 0:
        raise ValueError(f"contrast: expected a finite non-zero number, found {contrast!r}")
    if isinstance(presence_probability, bool) or not isinstance(presence_probability, numbers.Real) \
            or not 0 <= presence_probability <= 1:
        raise ValueError(f"presence_probability: expected a number in [0, 1], found {presence_probability!r}")
    given_images = isinstance(background, torch.Tensor)
    if given_images:
        H, W = shape
        _check_background_images(background)
        if background.shape[0] not in (1, batch_size) or tuple(background.shape[2:]) != shape:
            raise ValueError(f"background: expected shape ({batch_size}, 1, {H}, {W}) or (1, 1, {H}, {W}), "
                             f"found {tuple(background.shape)}")
        if body_threshold is not None and body_mask is not None:
            raise ValueError("body_threshold: expected either body_threshold or body_mask, found both")
        if body_mask is not None:
            if not isinstance(body_mask, torch.Tensor) or body_mask.dtype != torch.bool or body_mask.ndim != 4 \
                    or body_mask.shape[1] != 1 or min(body_mask.shape) < 1:
                found = (f"{body_mask.dtype} of shape {tuple(body_mask.shape)}" if isinstance(body_mask, torch.Tensor)
                         else repr(body_mask))
                raise ValueError(f"body_mask: expected a bool tensor (B, 1, h, w), found {found}")
            if body_mask.shape[0] not in (1, batch_size):
                raise ValueError(f"body_mask: expected shape ({batch_size}, 1, h, w) or (1, 1, h, w), "
                                 f"found {tuple(body_mask.shape)}")
            masks = body_mask.detach().cpu()[:, 0]
        else:
            threshold = _BODY_THRESHOLD if body_threshold is None else _check_threshold(body_threshold,
                                                                                        "body_threshold")
            masks = _largest_component_masks(background, threshold)
    else:
        if not isinstance(background, str) or background.lower().replace("_", "-") not in ("ellipses", "shepp-logan"):
            raise ValueError(f"background: expected 'ellipses', 'shepp-logan' or a tensor of background images "
                             f"(B, 1, H, W), found {background!r}")
        background = background.lower().replace("_", "-")
        for name, value in (("body_threshold", body_threshold), ("body_mask", body_mask)):
            if value is not None:
                raise ValueError(f"{name}: only applies to a tensor of background images, "
                                 f"found background {background!r}")
    dtype = _check_dtype(dtype)

    # One integer base seed for the background and the lesions alike.
    if isinstance(seed, numbers.Integral) and not isinstance(seed, bool):
        base = int(seed)
    else:
        from ._validation import make_generator

        gen = make_generator(seed)
        base = int(torch.randint(0, 2**63 - 1, (1,), generator=gen, device=gen.device).item())

    f64 = torch.float64
    if given_images:
        if device is None:
            device = background.device
        images = background.detach().to(device=device, dtype=dtype).expand(batch_size, -1, -1, -1).clone()
        has_body = [bool(m.any()) for m in masks]

        def inside(b: int, points: torch.Tensor) -> bool:
            return bool(_mask_at(masks[b if len(masks) > 1 else 0], points).all())
    else:
        if background == "ellipses":
            values, centres, half_axes, angles, _ = _random_ellipse_params(2, batch_size, base, 50, start_index)
            rotations = _rotation_2d(angles[..., 0])
            images = _rasterise(values, centres, half_axes, rotations, shape, device=device, dtype=dtype)
        else:
            table = torch.tensor(_SL_2D, dtype=f64)
            values = torch.tensor(_SL_MODIFIED_VALUES, dtype=f64)[None].expand(batch_size, -1)
            centres = table[None, :, 3:5].expand(batch_size, -1, -1)
            half_axes = table[None, :, 1:3].expand(batch_size, -1, -1)
            rotations = _rotation_2d(torch.deg2rad(table[:, 5]))[None].expand(batch_size, -1, -1, -1)
            images = shepp_logan(shape, dtype=dtype, device=device).expand(batch_size, -1, -1, -1).clone()
        has_body = [True]

        def inside(b: int, points: torch.Tensor) -> bool:
            return bool((_values_at(values[b], centres[b], half_axes[b], rotations[b], points) > 0).all())

    # test points of the unit disc: the centre, 12 points at half the radius, 24 on the rim
    rings = []
    for radius, count in ((0.5, 12), (1.0, 24)):
        t = torch.arange(count, dtype=f64) * (2 * math.pi / count)
        rings.append(radius * torch.stack([torch.cos(t), torch.sin(t)], -1))
    rim = torch.cat(rings)  # (36, 2)
    placed: list[list[tuple[float, float, float]]] = []
    for b, g in enumerate(sample_generators(base, batch_size, start_index, _STREAM_LESIONS)):
        lesions_b: list[tuple[float, float, float]] = []
        has = bool(torch.rand((), dtype=f64, generator=g) < presence_probability)
        # without body every draw would be rejected: skip them (they are this image's last draws)
        if has and has_body[b if len(has_body) > 1 else 0]:
            m = int(torch.randint(count_lo, count_hi + 1, (), generator=g))
            for _ in range(m):
                for _ in range(_LESION_TRIES):
                    r = r_lo + (r_hi - r_lo) * float(torch.rand((), dtype=f64, generator=g))
                    c = (2 * torch.rand(2, dtype=f64, generator=g) - 1) * (1 - r)
                    if any(math.hypot(c[0] - x, c[1] - y) <= r + s for x, y, s in lesions_b):
                        continue
                    if inside(b, torch.cat([c[None], c[None] + r * rim])):
                        lesions_b.append((float(c[0]), float(c[1]), r))
                        break
        placed.append(lesions_b)

    present = torch.tensor([1 if p else 0 for p in placed], dtype=torch.int64)
    K = max((len(p) for p in placed), default=0)
    segmentation = torch.zeros((batch_size, 1, *shape), dtype=torch.uint8, device=device)
    if K:
        l_values = torch.zeros(batch_size, K, dtype=f64)
        l_centres = torch.zeros(batch_size, K, 2, dtype=f64)
        l_axes = torch.ones(batch_size, K, 2, dtype=f64)
        for b, p in enumerate(placed):
            for k, (x, y, r) in enumerate(p):
                l_values[b, k] = 1.0
                l_centres[b, k] = torch.tensor([x, y], dtype=f64)
                l_axes[b, k] = r
        eye = torch.eye(2, dtype=f64).expand(batch_size, K, 2, 2)
        # lesions never overlap, so the indicator sum is 0 or 1
        mask = _rasterise(l_values, l_centres, l_axes, eye, shape, device=device, dtype=torch.float32)
        segmentation = (mask > 0.5).to(torch.uint8)
        images = images + (float(contrast) * mask).to(dtype)
    return images, segmentation, present.to(device)
