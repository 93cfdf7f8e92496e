"""Simulated raw data: phantoms (or images) through the CT or MRI physics, written as one raw HDF5 file.

    simulate("train.h5", modality="ct", phantom="ellipses", n=1000, seed=0)

Every sample is seeded by ``(seed, index)`` alone (NumPy ``SeedSequence``
spawn keys, as in :mod:`pirecon.phantoms`), with separate streams for the
phantom, the lesions, the noise, the MRI phase and the MRI mask. Hence

* the same seed gives byte-identical arrays on every machine, whatever the
  chunk size;
* sample ``i`` of ``simulate(..., seed=s)`` equals sample ``i`` of the
  :class:`Simulator` stream ``Simulator(...).simulate(s, i, 1)``, which the
  on-the-fly :class:`pirecon.data.datasets.SimulationDataset` also draws from.

Phantoms
--------
``"ellipses"`` (LPD-ellipses random ellipses), ``"shepp-logan"``,
``"lesions"`` (:func:`pirecon.phantoms.lesions` on ellipses or Shepp-Logan,
with ``segmentation`` and ``labels``), ``"images:DIR"`` (the images of a
directory) and ``"lesions:images:DIR"``: lesions inserted into the images of
a directory (real anatomy), inside the body (:func:`pirecon.phantoms.body_mask`:
above ``body_threshold``, largest connected component), also with
``segmentation`` and ``labels``. Images are scaled to ``[0, 1]`` (min-max),
padded to a square with their minimum and resized. Sample ``i`` uses image
``i % len(images)``; with ``lesions:images:DIR`` ``n`` may exceed the number
of images, each pass over them drawing new lesions (seeded by ``(seed, i)``).

CT
--
Images (phantom values, times ``intensity_scale``) are projected by
``RayTransform(geometry)`` (line integrals in mm) and corrupted by a noise
model: ``"gaussian:R"`` is additive Gaussian noise with std ``R`` times the
mean ``|data|`` of each sample (the LPD-ellipses protocol uses 0.05),
``"poisson:I0"`` the transmission Poisson model with ``I0`` photons per
detector pixel (post-log data), ``"none"`` none. Transmission data need
attenuation in 1/mm: with ``"poisson:I0"`` and no ``intensity_scale``, phantom
value 1 is water, ``intensity_scale = MU_WATER_PER_MM = 0.02`` (1/mm per
phantom unit; :mod:`pirecon.noise`); the stored ground truth is then in 1/mm
too. Other noise models keep ``intensity_scale = 1`` (phantom units). The default geometry at
``image_size=128`` is the LPD-ellipses one (30 angles, 183 detectors, 1 mm
pixels); at other sizes ``ParallelBeam2D((s, s), pixel_size, num_angles)``
with 1 mm pixels and 30 angles unless given.

MRI
---
Complex images ``phantom * exp(i phi)`` with a smooth random phase ``phi``
(a random quadratic polynomial of the normalised coordinates), birdcage coil
maps (unit root-sum-of-squares), fastMRI-style line masks
(``RandomMask``/``EquispacedMask``). The fully sampled k-space is
``SenseOperator(maps)(x)`` plus optional complex Gaussian noise
(``"gaussian:SIGMA"``: :class:`pirecon.noise.ComplexGaussianNoise` with
``sigma = SIGMA``, std ``SIGMA`` per complex entry, ``SIGMA/sqrt(2)`` per real
and imaginary part, i.e. ``SIGMA`` per coil-image pixel as the FFT is
orthonormal; independent coils), drawn on every entry and then masked: the
stored k-space is the masked noisy one (zeros where not sampled), and
``reconstruction_rss`` the root-sum-of-squares of the fully sampled (noisy)
coil images, as in fastMRI. The file stores the noise model (``noise``
attribute) and the coil maps once (``(coils, H, W)``, shared by every slice).

Inverse crime
-------------
``oversample=k > 1`` renders the phantom on a ``k``-times finer grid and
applies a matching fine operator: for CT the same detector and angles with
``pixel_size / k``; for MRI the fine k-space cropped to the central
``H x W`` frequencies (scaled and phase-corrected to the coarse pixel
grid). The stored ground truth is the phantom rendered on the
reconstruction grid.
"""

from __future__ import annotations

import argparse
import json
import math
import numbers
import os
import re
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .._validation import SPLITS, sample_generators, split_seed
from ..errors import ArgumentError

__all__ = ["simulate", "Simulator", "parse_noise", "add_simulate_arguments", "simulate_main", "PHANTOMS"]

PHANTOMS = ("ellipses", "shepp-logan", "lesions", "images:DIR", "lesions:images:DIR")
MODALITIES = ("ct", "mri")
MASKS = ("random", "equispaced")

# Stream tags: independent draws under one seed. Fixed forever.
_STREAM_NOISE = 0x6E6F6973  # "nois"
_STREAM_PHASE = 0x70686173  # "phas"

_CT_ONLY = ("geometry", "num_angles", "num_detectors", "pixel_size", "intensity_scale")
_MRI_ONLY = ("coils", "acceleration", "center_fraction", "mask")


# --------------------------------------------------------------------------
# Argument parsing helpers
# --------------------------------------------------------------------------

def _is_int(value) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _positive_int(value, name: str) -> int:
    if not _is_int(value) or value <= 0:
        raise ArgumentError(f"{name}: expected a positive integer, found {value!r}")
    return int(value)


def _positive_float(value, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value) or value <= 0:
        raise ArgumentError(f"{name}: expected a positive number, found {value!r}")
    return float(value)


def parse_noise(text: str | None, modality: str):
    """The noise model of a noise string: ``"none"``, ``"gaussian:LEVEL"`` or (CT) ``"poisson:I0"``.

    A :class:`pirecon.noise.NoiseModel` or ``None`` (no noise). CT: ``GaussianNoise(relative=LEVEL)``
    or ``TransmissionPoisson(I0)``; MRI: ``ComplexGaussianNoise(sigma=LEVEL)`` (complex std).
    """
    from ..noise import ComplexGaussianNoise, GaussianNoise, TransmissionPoisson

    expected = ("'none', 'gaussian:LEVEL' or 'poisson:I0'" if modality == "ct"
                else "'none' or 'gaussian:SIGMA'")
    if text is None:
        text = "gaussian:0.05" if modality == "ct" else "none"
    if not isinstance(text, str):
        raise ArgumentError(f"noise: expected {expected}, found {text!r}")
    spec = text.strip().lower()
    if spec in ("none", "0", ""):
        return None
    match = re.fullmatch(r"(gaussian|poisson):(.+)", spec)
    if match is None or (match.group(1) == "poisson" and modality != "ct"):
        raise ArgumentError(f"noise: expected {expected}, found {text!r}")
    try:
        level = float(match.group(2))
    except ValueError:
        level = float("nan")
    if not math.isfinite(level) or level <= 0:
        raise ArgumentError(f"noise: expected a positive finite level after {match.group(1)!r}:, found {text!r}")
    if modality == "mri":
        return ComplexGaussianNoise(level)
    return GaussianNoise(relative=level) if match.group(1) == "gaussian" else TransmissionPoisson(level)


def _check_phantom(phantom) -> tuple[str, Path | None]:
    """``(kind, directory)``: kind ``"ellipses"``, ``"shepp-logan"``, ``"lesions"``, ``"images"`` or
    ``"lesions:images"``, the directory for the last two."""
    if isinstance(phantom, str):
        key = phantom.strip()
        for prefix in ("images:", "lesions:images:"):
            if key.lower().startswith(prefix):
                if not key[len(prefix):]:
                    raise ArgumentError(f"phantom: expected '{prefix}DIR' with a directory, found {phantom!r}")
                directory = Path(key[len(prefix):]).expanduser()
                if not directory.is_dir():
                    raise ArgumentError(f"phantom: expected an existing image directory after {prefix!r}, "
                                     f"found no directory at {str(directory)!r}")
                return prefix[:-1], directory
        key = key.lower().replace("_", "-")
        if key in ("ellipses", "shepp-logan", "lesions"):
            return key, None
    raise ArgumentError(f"phantom: expected one of 'ellipses', 'shepp-logan', 'lesions', 'images:DIR' or "
                        f"'lesions:images:DIR', found {phantom!r}")


def _load_images(directory: Path) -> list[tuple[str, np.ndarray]]:
    from .readers import read_image_directory

    images = read_image_directory(directory)
    if not images:
        raise ArgumentError(f"phantom: expected images (PNG, DICOM or NIfTI) in {str(directory)!r}, found none")
    return [(str(name), np.asarray(img, dtype=np.float32)) for name, img in images]


def _prepare_image(img: np.ndarray) -> torch.Tensor:
    """Scale to ``[0, 1]`` (min-max) and pad to a square with the minimum: ``(1, 1, S, S)`` float64."""
    x = torch.from_numpy(np.ascontiguousarray(img, dtype=np.float64))
    if x.ndim != 2:
        raise ArgumentError(f"phantom: expected 2D images, found an image of shape {tuple(x.shape)}")
    if not bool(torch.isfinite(x).all()):
        raise ArgumentError("phantom: expected finite image values, found NaN or Inf")
    lo, hi = float(x.min()), float(x.max())
    x = (x - lo) / (hi - lo) if hi > lo else torch.zeros_like(x)
    h, w = x.shape
    s = max(h, w)
    if h != w:
        top, left = (s - h) // 2, (s - w) // 2
        x = torch.nn.functional.pad(x, (left, s - w - left, top, s - h - top), value=0.0)
    return x[None, None]


def _resize(x: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
    if tuple(x.shape[-2:]) == tuple(shape):
        return x.clone()
    down = x.shape[-2] > shape[0] or x.shape[-1] > shape[1]
    y = torch.nn.functional.interpolate(x, size=shape, mode="bilinear", align_corners=False, antialias=down)
    return y.clamp_(0.0, 1.0)


def _pixel_coords(n: int, dtype=torch.float64) -> torch.Tensor:
    """Normalised pixel-centre coordinates ``(2i + 1)/n - 1`` (as :mod:`pirecon.phantoms`)."""
    return (2.0 * torch.arange(n, dtype=dtype) + 1.0) / n - 1.0


# --------------------------------------------------------------------------
# The simulator
# --------------------------------------------------------------------------

class Simulator:
    """Simulates samples ``start, ..., start + count - 1`` of a seeded stream (CT or MRI).

    Arguments are those of :func:`simulate` without ``out``, ``n``, ``seed``,
    ``chunk_size`` and ``progress``. Options of the other modality must be
    left at ``None``. Operators are built lazily in each process and are not
    pickled, so a simulator can be sent to DataLoader workers.

    :meth:`simulate` returns a dict of NumPy arrays with the sample axis first:

    * CT: ``sinogram (n, angles, detectors)`` float32, ``ground_truth (n, H, W)`` float32;
    * MRI: ``kspace (n, coils, H, W)`` complex64 (masked), ``mask (n, 1, 1, W)`` float32,
      ``ground_truth (n, H, W)`` complex64, ``reconstruction_rss (n, H, W)`` float32,
      and ``coil_maps (coils, H, W)`` complex64 (the same for every sample: :attr:`coil_maps`);
    * lesions (``lesions`` and ``lesions:images:DIR``), both modalities: ``segmentation (n, H, W)`` uint8
      and ``labels (n,)`` int64.

    With ``images:DIR`` and ``lesions:images:DIR`` sample ``i`` is (the lesions of sample ``i`` on) image
    ``i % len(images)`` (an endless stream cycles through them; the lesions differ from pass to pass).
    """

    def __init__(self, modality: str = "ct", phantom: str = "ellipses", *, image_size: int | None = None,
                 geometry=None, num_angles: int | None = None, num_detectors: int | None = None,
                 pixel_size: float | None = None, noise: str | None = None, intensity_scale: float | None = None,
                 coils: int | None = None, acceleration: float | None = None, center_fraction: float | None = None,
                 mask: str | None = None, oversample: int = 1, lesion_options: dict | None = None):
        if not isinstance(modality, str) or modality.lower() not in MODALITIES:
            raise ArgumentError(f"modality: expected 'ct' or 'mri', found {modality!r}")
        self.modality = modality = modality.lower()
        given = dict(geometry=geometry, num_angles=num_angles, num_detectors=num_detectors, pixel_size=pixel_size,
                     intensity_scale=intensity_scale, coils=coils, acceleration=acceleration,
                     center_fraction=center_fraction, mask=mask)
        other = _MRI_ONLY if modality == "ct" else _CT_ONLY
        for name in other:
            if given[name] is not None:
                owner = "mri" if modality == "ct" else "ct"
                raise ArgumentError(f"{name}: only applies to modality {owner!r}, found it set with modality {modality!r}")
        self.phantom_kind, self.image_directory = _check_phantom(phantom)
        self.phantom = phantom if self.image_directory is None else f"{self.phantom_kind}:{self.image_directory}"
        self.oversample = _positive_int(oversample, "oversample")
        if image_size is not None:
            image_size = _positive_int(image_size, "image_size")
        self.lesion_options = dict(lesion_options or {})
        if self.lesion_options and self.phantom_kind not in ("lesions", "lesions:images"):
            raise ArgumentError(f"lesion_options: only applies to phantom 'lesions' or 'lesions:images:DIR', "
                             f"found phantom {phantom!r}")
        unknown = sorted(set(self.lesion_options) - {"num_lesions", "radius_range", "contrast",
                                                     "presence_probability", "background", "body_threshold"})
        if unknown:
            raise ArgumentError(f"lesion_options: expected keys among 'num_lesions', 'radius_range', 'contrast', "
                             f"'presence_probability', 'background', 'body_threshold', "
                             f"found {', '.join(map(repr, unknown))}")
        for key, kind, owner in (("background", "lesions", "lesions"),
                                 ("body_threshold", "lesions:images", "lesions:images:DIR")):
            if key in self.lesion_options and self.phantom_kind != kind:
                raise ArgumentError(f"lesion_options: {key!r} only applies to phantom {owner!r}, "
                                 f"found phantom {phantom!r}")
        self.noise_spec = noise
        self.noise = parse_noise(noise, modality)

        if modality == "ct":
            self._init_ct(image_size, geometry, num_angles, num_detectors, pixel_size, intensity_scale)
        else:
            self._init_mri(image_size, coils, acceleration, center_fraction, mask)
        if self.phantom_kind == "lesions":
            # validate the options once, on a tiny image, so errors surface before any work
            self._lesions((8, 8), 0, 0, 1)
        elif self.phantom_kind == "lesions:images":
            from ..phantoms import lesions

            lesions((8, 8), 1, seed=0, background=torch.zeros(1, 1, 8, 8), **self.lesion_options)
        self._images = _load_images(self.image_directory) if self.image_directory is not None else None
        if self.phantom_kind == "lesions:images" and all(float(img.max()) <= float(img.min())
                                                         for _, img in self._images):
            # scaled to [0, 1], a non-constant image reaches 1 > body_threshold: it has a body
            raise ArgumentError(f"phantom: expected images with a body (pixels above body_threshold after scaling "
                             f"to [0, 1]) in {str(self.image_directory)!r} to place lesions in, "
                             f"found only constant images")
        self._operators: dict = {}

    # ---- construction ---------------------------------------------------

    def _init_ct(self, image_size, geometry, num_angles, num_detectors, pixel_size, intensity_scale):
        from ..ct import FanBeam2D, ParallelBeam2D, lpd_ellipses_geometry

        if geometry is not None:
            clash = [k for k, v in (("num_angles", num_angles), ("num_detectors", num_detectors),
                                    ("pixel_size", pixel_size)) if v is not None]
            if clash:
                raise ArgumentError(f"geometry: expected either a geometry or {', '.join(clash)}, found both")
            if not isinstance(geometry, (ParallelBeam2D, FanBeam2D)):
                raise ArgumentError(f"geometry: expected a ParallelBeam2D or FanBeam2D, found {type(geometry).__name__}")
            if image_size is not None and tuple(geometry.image_shape) != (image_size, image_size):
                raise ArgumentError(f"image_size: expected {geometry.image_shape[0]} to match the geometry's image "
                                 f"shape {tuple(geometry.image_shape)}, found {image_size}")
        else:
            size = 128 if image_size is None else image_size
            if size == 128 and num_angles is None and num_detectors is None and pixel_size is None:
                geometry = lpd_ellipses_geometry()
            else:
                geometry = ParallelBeam2D(
                    (size, size),
                    pixel_size=1.0 if pixel_size is None else _positive_float(pixel_size, "pixel_size"),
                    num_angles=30 if num_angles is None else _positive_int(num_angles, "num_angles"),
                    num_detectors=None if num_detectors is None else _positive_int(num_detectors, "num_detectors"))
        self.geometry = geometry
        self.image_shape = tuple(geometry.image_shape)
        if intensity_scale is not None:
            self.intensity_scale = _positive_float(intensity_scale, "intensity_scale")
        else:
            from ..noise import MU_WATER_PER_MM, TransmissionPoisson

            # photon counts need attenuation in 1/mm: phantom value 1 = water
            self.intensity_scale = MU_WATER_PER_MM if isinstance(self.noise, TransmissionPoisson) else 1.0
        if self.oversample > 1:
            from ..ct import geometry_from_dict

            d = geometry.to_dict()
            d["image_shape"] = [s * self.oversample for s in geometry.image_shape]
            d["pixel_size"] = geometry.pixel_size / self.oversample
            self.fine_geometry = geometry_from_dict(d)
        else:
            self.fine_geometry = geometry

    def _init_mri(self, image_size, coils, acceleration, center_fraction, mask):
        from ..mri import EquispacedMask, RandomMask

        size = 128 if image_size is None else image_size
        self.image_shape = (size, size)
        self.geometry = None
        self.coils = 8 if coils is None else _positive_int(coils, "coils")
        accel = 4.0 if acceleration is None else acceleration
        if isinstance(accel, bool) or not isinstance(accel, numbers.Real) or not math.isfinite(accel) or accel < 1:
            raise ArgumentError(f"acceleration: expected a number >= 1 (1 = fully sampled), found {acceleration!r}")
        self.acceleration = float(accel)
        cf = 0.08 if center_fraction is None else center_fraction
        if isinstance(cf, bool) or not isinstance(cf, numbers.Real) or not 0 < cf < 1:
            raise ArgumentError(f"center_fraction: expected a number in (0, 1), found {center_fraction!r}")
        self.center_fraction = float(cf)
        if self.center_fraction * self.acceleration > 1:
            raise ArgumentError(f"center_fraction: expected at most 1/acceleration = {1 / self.acceleration:.6g} "
                             f"(the centre alone would exceed the sampled fraction), found {self.center_fraction!r}")
        kind = "random" if mask is None else mask
        if not isinstance(kind, str) or kind.lower() not in MASKS:
            raise ArgumentError(f"mask: expected 'random' or 'equispaced', found {mask!r}")
        self.mask_kind = kind.lower()
        cls = RandomMask if self.mask_kind == "random" else EquispacedMask
        self.mask_function = cls([self.center_fraction], [self.acceleration])
        # surface a mask that does not fit this W now, not at the first sample
        self.mask_function((size, size), batch_size=1, seed=0)

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_operators"] = {}  # rebuilt lazily in each process
        return state

    # ---- description ----------------------------------------------------

    @property
    def coil_maps(self) -> torch.Tensor:
        """MRI coil maps ``(coils, H, W)`` complex64 on the reconstruction grid."""
        return self._maps(self.image_shape)

    def describe(self) -> dict[str, Any]:
        """The simulation parameters as plain JSON types (stored in the file's attributes)."""
        from .._version import __version__

        d: dict[str, Any] = {"modality": self.modality, "phantom": self.phantom,
                             "image_shape": list(self.image_shape), "oversample": self.oversample,
                             "noise": self.noise_spec if self.noise_spec is not None else
                             ("gaussian:0.05" if self.modality == "ct" else "none"),
                             "pirecon_version": __version__}
        if self.modality == "ct":
            d["intensity_scale"] = self.intensity_scale
        else:
            d.update(coils=self.coils, acceleration=self.acceleration, center_fraction=self.center_fraction,
                     mask=self.mask_kind)
        if self.lesion_options:
            d["lesion_options"] = {k: list(v) if isinstance(v, tuple) else v for k, v in self.lesion_options.items()}
        return d

    # ---- phantoms -------------------------------------------------------

    def _lesions(self, shape, seed, start, count):
        from ..phantoms import lesions

        return lesions(shape, count, seed=seed, start_index=start, **self.lesion_options)

    def _backgrounds(self, shape, start: int, count: int) -> torch.Tensor:
        """Images ``start % n, ..., (start + count - 1) % n`` of the directory at ``shape``: ``(count, 1, H, W)``
        float64."""
        n = len(self._images)
        return torch.cat([_resize(_prepare_image(self._images[(start + i) % n][1]), shape) for i in range(count)])

    def _image_lesions(self, shape, seed, start, count):
        """Lesions on the directory's images; placed in the body of the reconstruction-grid images, so that a
        finer (oversampled) rendering gets the same lesions."""
        from ..phantoms import _BODY_THRESHOLD, body_mask, lesions

        options = dict(self.lesion_options)
        threshold = options.pop("body_threshold", _BODY_THRESHOLD)
        backgrounds = self._backgrounds(shape, start, count)
        coarse = backgrounds if tuple(shape) == tuple(self.image_shape) else \
            self._backgrounds(self.image_shape, start, count)
        return lesions(shape, count, seed=seed, start_index=start, background=backgrounds,
                       body_mask=body_mask(coarse, threshold), **options)

    def _phantom(self, shape, seed: int, start: int, count: int):
        """``(images (count, 1, H, W) float32, segmentation (count, 1, H, W) uint8 or None, labels or None)``."""
        from ..phantoms import random_ellipses, shepp_logan

        if self.phantom_kind == "ellipses":
            return random_ellipses(shape, count, seed=seed, start_index=start), None, None
        if self.phantom_kind == "shepp-logan":
            return shepp_logan(shape).expand(count, -1, -1, -1).clone(), None, None
        if self.phantom_kind == "lesions":
            return self._lesions(shape, seed, start, count)
        if self.phantom_kind == "lesions:images":
            return self._image_lesions(shape, seed, start, count)
        return self._backgrounds(shape, start, count).to(torch.float32), None, None

    def _maps(self, shape) -> torch.Tensor:
        key = ("maps", tuple(shape))
        if key not in self._operators:
            from ..mri import birdcage_maps

            self._operators[key] = birdcage_maps(self.coils, tuple(shape))
        return self._operators[key]

    def _ray_transform(self, geometry):
        key = ("ray", geometry.fingerprint())
        if key not in self._operators:
            from ..ct import RayTransform

            self._operators[key] = RayTransform(geometry)
        return self._operators[key]

    # ---- simulation -----------------------------------------------------

    def simulate(self, seed: int, start: int, count: int) -> dict[str, np.ndarray]:
        """Samples ``start, ..., start + count - 1`` of the stream of ``seed`` (see the class docstring)."""
        if not _is_int(seed):
            raise ArgumentError(f"seed: expected an integer, found {seed!r}")
        if not _is_int(start) or start < 0:
            raise ArgumentError(f"start: expected a non-negative integer, found {start!r}")
        count = _positive_int(count, "count")
        with torch.no_grad():
            return self._simulate_ct(seed, start, count) if self.modality == "ct" \
                else self._simulate_mri(seed, start, count)

    def _fine_shape(self):
        return tuple(s * self.oversample for s in self.image_shape)

    def _simulate_ct(self, seed, start, count):
        truth, seg, labels = self._phantom(self.image_shape, seed, start, count)
        fine = truth if self.oversample == 1 else self._phantom(self._fine_shape(), seed, start, count)[0]
        if self.intensity_scale != 1.0:
            truth, fine = truth * self.intensity_scale, fine * self.intensity_scale
        sino = self._ray_transform(self.fine_geometry)(fine.to(torch.float32))
        if self.noise is not None:
            gens = sample_generators(seed, count, start, _STREAM_NOISE)
            sino = torch.cat([self.noise(sino[i:i + 1], seed=gens[i]) for i in range(count)])
        out = {"sinogram": sino[:, 0].to(torch.float32).numpy(),
               "ground_truth": truth[:, 0].to(torch.float32).numpy()}
        if seg is not None:
            out["segmentation"] = seg[:, 0].to(torch.uint8).numpy()
            out["labels"] = labels.to(torch.int64).numpy()
        return out

    def _phase(self, shape, seed, start, count) -> torch.Tensor:
        """Smooth random phases ``(count, 1, H, W)`` float64: ``pi * (c0 + c1 x + c2 y + c3 x^2 + c4 x y + c5 y^2)``.

        Coefficients ``c0 ~ U[-1, 1]`` and the others ``U[-0.25, 0.25]``, per sample; a continuous function
        of the normalised coordinates, hence the same at any resolution.
        """
        H, W = shape
        x = _pixel_coords(W).view(1, W)
        y = -_pixel_coords(H).view(H, 1)
        basis = torch.stack([torch.ones(H, W, dtype=torch.float64), x.expand(H, W), y.expand(H, W),
                             (x * x).expand(H, W), x * y, (y * y).expand(H, W)])
        coeffs = []
        for g in sample_generators(seed, count, start, _STREAM_PHASE):
            c = torch.rand(6, dtype=torch.float64, generator=g) * 0.5 - 0.25
            c[0] *= 4.0
            coeffs.append(c)
        return math.pi * torch.einsum("bk,khw->bhw", torch.stack(coeffs), basis)[:, None]

    def _complex_image(self, shape, seed, start, count):
        magnitude, seg, labels = self._phantom(shape, seed, start, count)
        x = magnitude.to(torch.float64) * torch.exp(1j * self._phase(shape, seed, start, count))
        return x, seg, labels

    def _simulate_mri(self, seed, start, count):
        from ..mri import SenseOperator, fft2c, ifft2c, rss

        H, W = self.image_shape
        truth, seg, labels = self._complex_image(self.image_shape, seed, start, count)
        if self.oversample == 1:
            full = SenseOperator(self._maps(self.image_shape).to(torch.complex128))(truth)
        else:
            k = self.oversample
            fine_shape = self._fine_shape()
            fine, _, _ = self._complex_image(fine_shape, seed, start, count)
            kfine = fft2c(self._maps(fine_shape).to(torch.complex128)[None] * fine)
            r0, c0 = fine_shape[0] // 2 - H // 2, fine_shape[1] // 2 - W // 2
            full = kfine[..., r0:r0 + H, c0:c0 + W] / k

            # the centred DFT puts its origin at index n // 2, whose position differs between the grids
            def ramp(n):
                shift = _pixel_coords(n)[n // 2] - _pixel_coords(k * n)[(k * n) // 2]
                m = torch.arange(n, dtype=torch.float64) - n // 2
                return torch.exp(1j * math.pi * m * shift)

            full = full * ramp(H).view(H, 1) * ramp(W).view(1, W)
        if self.noise is not None:  # on every entry, then masked: unsampled entries stay zero
            gens = sample_generators(seed, count, start, _STREAM_NOISE)
            full = torch.cat([self.noise(full[i:i + 1], seed=gens[i]) for i in range(count)])
        mask = self.mask_function((H, W), batch_size=count, seed=seed, start_index=start).mask  # (count, 1, 1, W)
        kspace = full * mask
        out = {"kspace": kspace.to(torch.complex64).numpy(),
               "mask": mask.to(torch.float32).numpy(),
               "ground_truth": truth[:, 0].to(torch.complex64).numpy(),
               "reconstruction_rss": rss(ifft2c(full))[:, 0].to(torch.float32).numpy()}
        if seg is not None:
            out["segmentation"] = seg[:, 0].to(torch.uint8).numpy()
            out["labels"] = labels.to(torch.int64).numpy()
        return out


# --------------------------------------------------------------------------
# simulate(): the file writer
# --------------------------------------------------------------------------

def _buffer(shape, dtype, directory: Path) -> np.ndarray:
    """A zeroed array backed by an anonymous temporary file in ``directory`` (freed when the process ends)."""
    with tempfile.TemporaryFile(dir=directory, prefix=".pirecon-simulate-") as f:
        # the mapping keeps the (already unlinked) file alive after f is closed
        return np.memmap(f, dtype=dtype, mode="w+", shape=tuple(shape))


def simulate(out: str | os.PathLike, *, modality: str = "ct", phantom: str = "ellipses", n: int | None = None,
             seed: int = 0, image_size: int | None = None, geometry=None, num_angles: int | None = None,
             num_detectors: int | None = None, pixel_size: float | None = None, noise: str | None = None,
             intensity_scale: float | None = None, coils: int | None = None, acceleration: float | None = None,
             center_fraction: float | None = None, mask: str | None = None, oversample: int = 1,
             lesion_options: dict | None = None, split: str = "train", chunk_size: int = 32,
             progress: bool = True) -> Path:
    """Simulate ``n`` samples and write them to ``out`` as one raw HDF5 file; returns ``out``.

    Parameters
    ----------
    out : path
        The raw file to write (``.h5``). Written atomically: the samples are
        generated into anonymous temporary files (unlinked at once, so a
        killed run leaves nothing behind), then written with
        :func:`pirecon.data.formats.write_ct_raw` / ``write_mri_raw``, which
        rename a complete temporary file into place.
    modality : {"ct", "mri"}
    phantom : {"ellipses", "shepp-logan", "lesions", "images:DIR", "lesions:images:DIR"}
        Random ellipses of the LPD-ellipses protocol, the modified
        Shepp-Logan phantom, lesion phantoms (:func:`pirecon.phantoms.lesions`,
        writes ``segmentation`` and ``labels``), the images of a directory
        (``read_image_directory``; each scaled to ``[0, 1]`` min-max, padded
        to a square with its minimum and resized with bilinear interpolation;
        sample ``i`` is image ``i`` in the reader's order), or lesions
        inserted into those images (``lesion_options`` apply; writes
        ``segmentation`` and ``labels``): sample ``i`` is image
        ``i % len(images)`` with the lesions of ``(seed, i)``, placed inside
        the body (:func:`pirecon.phantoms.body_mask` of the image at
        ``image_size``: above ``body_threshold``, default 0.05, largest
        connected component). An image without body (constant) gets no
        lesion (label 0, empty segmentation); a directory of only such
        images is refused.
    n : int
        Number of samples; with ``images:DIR`` at most the number of images
        (default: all of them); with ``lesions:images:DIR`` any number
        (default: the number of images), cycling through the images.
    seed : int
        Sample ``i`` depends only on ``(seed, split, i)``.
    image_size : int, optional
        Side of the square images (default 128, or the geometry's).
    geometry : ParallelBeam2D or FanBeam2D, optional
        CT only. Default: ``lpd_ellipses_geometry()`` at ``image_size`` 128
        when no other geometry option is set, else
        ``ParallelBeam2D((s, s), pixel_size, num_angles, num_detectors)``.
    num_angles, num_detectors, pixel_size : optional
        CT only: the default parallel-beam geometry's angles (30), detector
        count (ODL's default) and pixel size in mm (1.0).
    noise : str, optional
        CT: ``"gaussian:R"`` (std ``R`` times each sample's mean ``|data|``,
        default ``"gaussian:0.05"``), ``"poisson:I0"``, ``"none"``.
        MRI: ``"gaussian:SIGMA"`` (complex std, stored in the file as a
        ``ComplexGaussianNoise``) or ``"none"`` (default).
    intensity_scale : float, optional
        CT only: multiplies the phantom (ground truth included), giving the
        images' units. Default: ``MU_WATER_PER_MM = 0.02`` with ``poisson``
        noise (phantom value 1 = water, attenuation in 1/mm, as photon counts
        need), else 1 (phantom units).
    coils, acceleration, center_fraction, mask : optional
        MRI only: number of birdcage coils (8), acceleration (4), fraction of
        fully sampled central lines (0.08), ``"random"`` (default) or
        ``"equispaced"`` line mask.
    oversample : int
        ``k > 1`` avoids the inverse crime (see the module docstring).
    lesion_options : dict, optional
        Keyword arguments of :func:`pirecon.phantoms.lesions` (``num_lesions``,
        ``radius_range``, ``contrast``, ``presence_probability``; ``background``
        with ``lesions`` only, ``body_threshold`` with ``lesions:images:DIR`` only).
    split : {"train", "validation", "test", "calibration", "panel"}
        Which of the seed's disjoint streams to draw from (:func:`pirecon._validation.split_seed`):
        held-out files use ``"validation"``, ``"test"`` or ``"calibration"``, and no training stream,
        whatever its length, ever reaches them. Stored in the file's ``split`` attribute.
    chunk_size : int
        Samples simulated at once.
    progress : bool
        Show a tqdm progress bar (on stderr).
    """
    if not isinstance(out, (str, os.PathLike)) or not str(out):
        raise ArgumentError(f"out: expected a file path, found {out!r}")
    out = Path(out)
    if out.is_dir():
        raise ArgumentError(f"out: expected a file path, found the directory {str(out)!r}")
    if not _is_int(seed):
        raise ArgumentError(f"seed: expected an integer, found {seed!r}")
    if split not in SPLITS:
        raise ArgumentError(f"split: expected one of {', '.join(repr(k) for k in SPLITS)}, found {split!r}")
    chunk_size = _positive_int(chunk_size, "chunk_size")
    sim = Simulator(modality, phantom, image_size=image_size, geometry=geometry, num_angles=num_angles,
                    num_detectors=num_detectors, pixel_size=pixel_size, noise=noise,
                    intensity_scale=intensity_scale, coils=coils, acceleration=acceleration,
                    center_fraction=center_fraction, mask=mask, oversample=oversample,
                    lesion_options=lesion_options)
    if sim.phantom_kind in ("images", "lesions:images"):
        available = len(sim._images)
        if n is None:
            n = available
        n = _positive_int(n, "n")
        if n > available and sim.phantom_kind == "images":
            raise ArgumentError(f"n: expected at most {available} (the number of images in "
                             f"{str(sim.image_directory)!r}), found {n}")
    else:
        if n is None:
            raise ArgumentError("n: expected a positive integer, found None")
        n = _positive_int(n, "n")

    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        if not os.access(out.parent, os.W_OK):
            raise PermissionError(13, "Permission denied")
    except OSError as err:
        raise ArgumentError(f"out: expected a path in a writable directory, found {str(out)!r} "
                         f"({err.strerror or err})") from None
    try:
        path = _generate_and_write(sim, out, n, seed, split, chunk_size, progress)
    except OSError as err:
        raise ArgumentError(f"out: could not write {str(out)!r} ({err.strerror or err})") from None
    return Path(path)


def _generate_and_write(sim, out: Path, n: int, seed: int, split: str, chunk_size: int, progress: bool):
    """Simulate ``n`` samples of ``split``'s stream into scratch buffers, then write the file atomically."""
    from tqdm.auto import tqdm

    from . import formats

    buffers: dict[str, np.ndarray] = {}
    desc = f"simulate {sim.modality} {out.name}"
    with tqdm(total=n, desc=desc, unit="slice", disable=not progress, dynamic_ncols=True) as bar:
        for start in range(0, n, chunk_size):
            count = min(chunk_size, n - start)
            chunk = sim.simulate(split_seed(seed, split), start, count)
            for key, value in chunk.items():
                if key not in buffers:
                    buffers[key] = _buffer((n, *value.shape[1:]), value.dtype, out.parent)
                buffers[key][start:start + count] = value
            bar.update(count)
        bar.set_postfix_str("writing")
        attrs = {"simulation": json.dumps(sim.describe(), sort_keys=True), "seed": int(seed), "split": split}
        if sim.modality == "ct":
            path = formats.write_ct_raw(out, buffers["sinogram"], sim.geometry, noise=sim.noise,
                                        ground_truth=buffers["ground_truth"],
                                        segmentation=buffers.get("segmentation"), labels=buffers.get("labels"),
                                        attrs=attrs)
        else:
            attrs.update(acceleration=sim.acceleration,
                         num_low_frequency=round(sim.image_shape[1] * sim.center_fraction))
            # (coils, H, W): the maps of every slice, stored once
            path = formats.write_mri_raw(out, buffers["kspace"], mask=buffers["mask"],
                                         coil_maps=sim.coil_maps.numpy(), noise=sim.noise,
                                         ground_truth=buffers["ground_truth"],
                                         reconstruction_rss=buffers["reconstruction_rss"],
                                         segmentation=buffers.get("segmentation"), labels=buffers.get("labels"),
                                         attrs=attrs)
        bar.set_postfix_str("done")
    return path


# --------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------

def add_simulate_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add the ``pirecon simulate`` options to ``parser``; run with :func:`simulate_main`."""
    parser.add_argument("--modality", default="ct", help="'ct' or 'mri' (default ct)")
    parser.add_argument("--phantom", default="ellipses",
                        help="'ellipses', 'shepp-logan', 'lesions', 'images:DIR' (the images of DIR) or "
                             "'lesions:images:DIR' (lesions inside the body of the images of DIR, sample i on "
                             "image i %% len(images)) (default ellipses)")
    parser.add_argument("--n", type=int, default=None,
                        help="number of samples (images:DIR: at most, and by default, the number of images; "
                             "lesions:images:DIR: default the number of images)")
    parser.add_argument("--seed", type=int, default=0, help="sample i depends only on (seed, split, i) (default 0)")
    parser.add_argument("--split", default="train", choices=tuple(SPLITS),
                        help="the seed's stream to draw from; held-out files use validation, test or calibration, "
                             "which no training stream reaches (default train)")
    parser.add_argument("--out", required=True, help="raw HDF5 file to write")
    parser.add_argument("--image-size", type=int, default=None, help="image side in pixels (default 128)")
    ct = parser.add_argument_group("CT")
    ct.add_argument("--num-angles", type=int, default=None, help="projection angles (default: LPD-ellipses, 30)")
    ct.add_argument("--num-detectors", type=int, default=None, help="detector pixels (default: ODL's)")
    ct.add_argument("--pixel-size", type=float, default=None, help="pixel size in mm (default 1)")
    ct.add_argument("--intensity-scale", type=float, default=None,
                    help="multiplies the phantom, giving its units (default: 0.02 with poisson noise, i.e. phantom "
                         "value 1 = water = 0.02 / mm, attenuation in 1/mm; else 1)")
    parser.add_argument("--noise", default=None,
                        help="CT: 'gaussian:R' (std R * mean |data|, default gaussian:0.05), 'poisson:I0' (I0 photons "
                             "per detector pixel; phantom value 1 = water, 0.02 / mm, unless --intensity-scale), "
                             "'none'; MRI: 'gaussian:SIGMA' (complex std per k-space sample, stored in the file) or "
                             "'none' (default)")
    parser.add_argument("--oversample", type=int, default=1, help="simulate on a k-times finer grid (default 1)")
    mri = parser.add_argument_group("MRI")
    mri.add_argument("--coils", type=int, default=None, help="birdcage coils (default 8)")
    mri.add_argument("--acceleration", type=float, default=None, help="undersampling factor (default 4)")
    mri.add_argument("--center-fraction", type=float, default=None, help="fully sampled centre (default 0.08)")
    mri.add_argument("--mask", default=None, help="'random' (default) or 'equispaced'")
    parser.add_argument("--lesion-options", default=None, metavar="JSON",
                        help="options of the lesion phantoms as a JSON object, e.g. '{\"radius_range\": [0.03, 0.08], "
                             "\"contrast\": 0.05, \"num_lesions\": [1, 3], \"body_threshold\": 0.05}'")
    parser.add_argument("--chunk-size", type=int, default=32, help="samples simulated at once (default 32)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser


def simulate_main(args: argparse.Namespace) -> int:
    """Run ``pirecon simulate`` from parsed arguments; user errors raise ``ValueError``. Returns 0."""
    lesion_options = None
    if args.lesion_options is not None:
        try:
            lesion_options = json.loads(args.lesion_options)
        except json.JSONDecodeError as err:
            raise ArgumentError(f"--lesion-options: expected a JSON object, found {args.lesion_options!r} ({err.msg})") \
                from None
        if not isinstance(lesion_options, dict):
            raise ArgumentError(f"--lesion-options: expected a JSON object, found {args.lesion_options!r}")
        lesion_options = {k: tuple(v) if isinstance(v, list) else v for k, v in lesion_options.items()}
    path = simulate(args.out, modality=args.modality, phantom=args.phantom, n=args.n, seed=args.seed,
                    image_size=args.image_size, num_angles=args.num_angles, num_detectors=args.num_detectors,
                    pixel_size=args.pixel_size, intensity_scale=args.intensity_scale, noise=args.noise,
                    oversample=args.oversample, coils=args.coils, acceleration=args.acceleration,
                    center_fraction=args.center_fraction, mask=args.mask, split=args.split,
                    lesion_options=lesion_options, chunk_size=args.chunk_size, progress=not args.quiet)
    print(f"wrote {path}")
    return 0
