"""CT acquisition geometries, in millimetres, following ASTRA's conventions.

A geometry is data: immutable, hashable, and serialisable to a plain dict
(for HDF5 attributes and JSON). Operators are built from it.

Coordinates: the image is centred at the origin; pixel ``(r, c)`` of an
``H x W`` image has centre ``x = (c - (W-1)/2) * pixel_size`` and
``y = ((H-1)/2 - r) * pixel_size`` (row 0 at the top, as ASTRA's 2D volumes).
At angle ``theta`` a parallel ray runs along ``(sin theta, -cos theta)`` and
detector pixel ``j`` sits at ``(j - (n-1)/2) * spacing * (cos theta, sin theta)``;
a fan-beam source sits at ``R (sin theta, -cos theta)`` and the flat detector's
centre at ``D (-sin theta, cos theta)``. These are ASTRA's ``parallel`` and
``fanflat`` geometries, so sinograms of shape ``(angles, detectors)`` are
interchangeable with ASTRA's.
"""

from __future__ import annotations

import hashlib
import json
import math
from typing import Any

import numpy as np

from .._validation import check_positive

__all__ = [
    "Geometry",
    "ParallelBeam2D",
    "FanBeam2D",
    "ConeBeam3D",
    "geometry_from_dict",
    "lpd_ellipses_geometry",
]

FORMAT_VERSION = 1


def _shape(value, name: str, ndim: int) -> tuple[int, ...]:
    try:
        shape = tuple(value)
    except TypeError:
        shape = None
    if (shape is None or len(shape) != ndim
            or not all(isinstance(s, (int, np.integer)) and not isinstance(s, bool) and s > 0 for s in shape)):
        raise ValueError(f"{name}: expected a tuple of {ndim} positive integers, found {value!r}")
    return tuple(int(s) for s in shape)


def _number(value, name: str, *, minimum: float | None = None) -> float:
    """A finite real number (``>= minimum`` if given), else ``ValueError``."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)) \
            or not math.isfinite(float(value)) or (minimum is not None and float(value) < minimum):
        what = "a finite number" if minimum is None else f"a finite number >= {minimum:g}"
        raise ValueError(f"{name}: expected {what}, found {value!r}")
    return float(value)


def _angles(num_angles, angles, name: str, arc: float) -> tuple[float, ...]:
    """Explicit angles (radians), or ``num_angles`` equispaced on ``[0, arc)``."""
    if angles is not None:
        a = np.asarray(angles, dtype=np.float64).ravel()
        if a.size == 0 or not np.all(np.isfinite(a)):
            raise ValueError(f"{name}: expected a non-empty sequence of finite angles in radians, found {angles!r}")
        if num_angles is not None and int(num_angles) != a.size:
            raise ValueError(f"num_angles: expected {a.size} to match len(angles), found {num_angles!r}")
        return tuple(float(v) for v in a)
    if num_angles is None:
        raise ValueError(f"{name}: expected num_angles or angles, found neither")
    check_positive(num_angles, "num_angles", integer=True)
    return tuple(float(v) for v in np.arange(num_angles) * (arc / num_angles))


class Geometry:
    """Base class: immutable, hashable, dict round trip, a stable fingerprint."""

    kind: str = ""
    _fields: tuple[str, ...] = ()

    def __setattr__(self, name, value):
        if getattr(self, "_frozen", False):
            raise AttributeError(f"{type(self).__name__} is immutable; build a new geometry instead")
        object.__setattr__(self, name, value)

    def _freeze(self):
        object.__setattr__(self, "_frozen", True)

    def to_dict(self) -> dict[str, Any]:
        """A plain dict of JSON types that ``geometry_from_dict`` turns back into this geometry."""
        out: dict[str, Any] = {"type": self.kind, "format_version": FORMAT_VERSION}
        for f in self._fields:
            v = getattr(self, f)
            out[f] = list(v) if isinstance(v, tuple) else v
        return out

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Geometry":
        return geometry_from_dict(d)

    def fingerprint(self) -> str:
        """SHA-256 of the canonical JSON form: stable across processes and machines."""
        text = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()

    def __eq__(self, other):
        return type(self) is type(other) and self.to_dict() == other.to_dict()

    def __hash__(self):
        return hash(self.fingerprint())

    def __repr__(self):
        parts = []
        for f in self._fields:
            v = getattr(self, f)
            if f == "angles":
                parts.append(f"num_angles={len(v)}")
            else:
                parts.append(f"{f}={v!r}")
        return f"{type(self).__name__}({', '.join(parts)})"

    @property
    def num_angles(self) -> int:
        return len(self.angles)

    @property
    def sinogram_shape(self) -> tuple[int, ...]:
        """Shape of one sinogram: ``(angles, detectors)`` in 2D, ``(angles, rows, cols)`` in 3D."""
        raise NotImplementedError


class _Geometry2D(Geometry):
    image_shape: tuple[int, int]
    pixel_size: float
    angles: tuple[float, ...]
    num_detectors: int
    detector_spacing: float

    @property
    def sinogram_shape(self) -> tuple[int, int]:
        return (self.num_angles, self.num_detectors)

    @property
    def image_extent(self) -> tuple[float, float]:
        """``(height, width)`` of the image in mm."""
        return (self.image_shape[0] * self.pixel_size, self.image_shape[1] * self.pixel_size)

    @property
    def object_radius(self) -> float:
        """Radius (mm) of the circle through the image corners."""
        h, w = self.image_extent
        return 0.5 * math.hypot(h, w)

    def astra_volume_geometry(self) -> dict:
        """ASTRA's volume geometry dict for this image grid."""
        import astra

        h, w = self.image_extent
        return astra.create_vol_geom(self.image_shape[0], self.image_shape[1], -w / 2, w / 2, -h / 2, h / 2)

    def detector_positions(self) -> np.ndarray:
        """Detector pixel offsets from the detector centre, in units of ``detector_spacing``: ``j - (n-1)/2``."""
        return np.arange(self.num_detectors) - (self.num_detectors - 1) / 2.0


class ParallelBeam2D(_Geometry2D):
    """2D parallel beam.

    Parameters
    ----------
    image_shape : (H, W)
        Image size in pixels.
    pixel_size : float
        Side of a square pixel in mm.
    num_angles : int, optional
        Number of angles equispaced on ``[0, pi)`` (``k pi / n``); or give ``angles``.
    angles : sequence of float, optional
        Projection angles in radians.
    num_detectors, detector_spacing : optional
        Detector pixel count and spacing (mm). By default the detector spans
        the image diagonal at Nyquist sampling, as ODL's
        ``parallel_beam_geometry``: ``n = 2 ceil(rho / pixel_size) + 1`` and
        spacing ``2 rho / n`` with ``rho`` the half diagonal.
    """

    kind = "parallel2d"
    _fields = ("image_shape", "pixel_size", "angles", "num_detectors", "detector_spacing")

    def __init__(self, image_shape, pixel_size=1.0, num_angles=None, angles=None,
                 num_detectors=None, detector_spacing=None):
        self.image_shape = _shape(image_shape, "image_shape", 2)
        self.pixel_size = float(check_positive(pixel_size, "pixel_size"))
        self.angles = _angles(num_angles, angles, "angles", math.pi)
        rho = self.object_radius
        if num_detectors is None and detector_spacing is None:
            num_detectors = 2 * math.ceil(rho / self.pixel_size) + 1
        if detector_spacing is None:
            check_positive(num_detectors, "num_detectors", integer=True)
            detector_spacing = 2 * rho / num_detectors
        if num_detectors is None:
            check_positive(detector_spacing, "detector_spacing")
            num_detectors = math.ceil(2 * rho / detector_spacing)
        self.num_detectors = int(check_positive(num_detectors, "num_detectors", integer=True))
        self.detector_spacing = float(check_positive(detector_spacing, "detector_spacing"))
        self._freeze()

    def astra_vectors(self) -> np.ndarray:
        """``(angles, 6)`` rows ``(ray, detector centre, detector pixel step)`` of ASTRA's ``parallel_vec``."""
        t = np.asarray(self.angles)
        s, c, z = np.sin(t), np.cos(t), np.zeros_like(t)
        return np.stack([s, -c, z, z, c * self.detector_spacing, s * self.detector_spacing], axis=1)

    def astra_projection_geometry(self) -> dict:
        import astra

        return astra.create_proj_geom("parallel", self.detector_spacing, self.num_detectors, np.asarray(self.angles))


class FanBeam2D(_Geometry2D):
    """2D fan beam with a flat detector.

    Parameters
    ----------
    image_shape, pixel_size, num_angles, angles :
        As for ``ParallelBeam2D``, but default angles are equispaced on ``[0, 2 pi)``.
    source_distance : float
        Source to rotation centre, mm (ASTRA's ``source_origin``).
    detector_distance : float
        Rotation centre to detector, mm (ASTRA's ``origin_det``).
    num_detectors, detector_spacing : optional
        By default the spacing is the pixel size magnified to the detector,
        ``pixel_size (R + D) / R``, and the detector covers the fan through
        the image corners.
    """

    kind = "fan2d"
    _fields = ("image_shape", "pixel_size", "angles", "num_detectors", "detector_spacing",
               "source_distance", "detector_distance")

    def __init__(self, image_shape, pixel_size=1.0, num_angles=None, angles=None,
                 num_detectors=None, detector_spacing=None, *, source_distance, detector_distance):
        self.image_shape = _shape(image_shape, "image_shape", 2)
        self.pixel_size = float(check_positive(pixel_size, "pixel_size"))
        self.angles = _angles(num_angles, angles, "angles", 2 * math.pi)
        self.source_distance = float(check_positive(source_distance, "source_distance"))
        self.detector_distance = detector_distance = _number(detector_distance, "detector_distance", minimum=0)
        rho = self.object_radius
        if self.source_distance <= rho:
            raise ValueError(
                f"source_distance: expected more than the image's half diagonal {rho:.4g} mm "
                f"(the source must lie outside the object), found {self.source_distance!r}"
            )
        magnification = (self.source_distance + detector_distance) / self.source_distance
        half_width = (self.source_distance + detector_distance) * math.tan(math.asin(rho / self.source_distance))
        if num_detectors is not None:
            check_positive(num_detectors, "num_detectors", integer=True)
        if detector_spacing is None:
            detector_spacing = (2 * half_width / num_detectors if num_detectors is not None
                                else self.pixel_size * magnification)
        check_positive(detector_spacing, "detector_spacing")
        if num_detectors is None:
            num_detectors = 2 * math.ceil(half_width / detector_spacing) + 1
        self.num_detectors = int(check_positive(num_detectors, "num_detectors", integer=True))
        self.detector_spacing = float(detector_spacing)
        self._freeze()

    def astra_vectors(self) -> np.ndarray:
        """``(angles, 6)`` rows ``(source, detector centre, detector pixel step)`` of ASTRA's ``fanflat_vec``."""
        t = np.asarray(self.angles)
        s, c = np.sin(t), np.cos(t)
        R, D, w = self.source_distance, self.detector_distance, self.detector_spacing
        return np.stack([s * R, -c * R, -s * D, c * D, c * w, s * w], axis=1)

    def astra_projection_geometry(self) -> dict:
        import astra

        return astra.create_proj_geom("fanflat", self.detector_spacing, self.num_detectors,
                                      np.asarray(self.angles), self.source_distance, self.detector_distance)


class ConeBeam3D(Geometry):
    """3D circular cone beam with a flat detector (ASTRA's ``cone`` geometry; needs CUDA).

    Parameters
    ----------
    volume_shape : (D, H, W)
        Slices (z), rows (y), columns (x), ASTRA's 3D volume layout.
    voxel_size : float
        Side of a cubic voxel in mm.
    num_angles, angles :
        Angles equispaced on ``[0, 2 pi)``, or explicit radians.
    detector_shape : (rows, cols)
    detector_spacing : float or (row, col) spacing in mm
    source_distance, detector_distance : float
        Source to rotation centre and rotation centre to detector, mm.

    Sinograms have shape ``(angles, rows, cols)``.
    """

    kind = "cone3d"
    _fields = ("volume_shape", "voxel_size", "angles", "detector_shape", "detector_spacing",
               "source_distance", "detector_distance")

    def __init__(self, volume_shape, voxel_size=1.0, num_angles=None, angles=None, *,
                 detector_shape, detector_spacing, source_distance, detector_distance):
        self.volume_shape = _shape(volume_shape, "volume_shape", 3)
        self.voxel_size = float(check_positive(voxel_size, "voxel_size"))
        self.angles = _angles(num_angles, angles, "angles", 2 * math.pi)
        self.detector_shape = _shape(detector_shape, "detector_shape", 2)
        pair = np.atleast_1d(np.asarray(detector_spacing, dtype=object))
        if pair.size == 1:
            pair = np.repeat(pair, 2)
        if pair.shape != (2,):
            raise ValueError(f"detector_spacing: expected a number or a (row, col) pair, found {detector_spacing!r}")
        self.detector_spacing = tuple(float(check_positive(s, "detector_spacing")) for s in pair)
        self.source_distance = float(check_positive(source_distance, "source_distance"))
        self.detector_distance = _number(detector_distance, "detector_distance", minimum=0)
        self._freeze()

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return self.volume_shape

    @property
    def sinogram_shape(self) -> tuple[int, int, int]:
        return (self.num_angles, *self.detector_shape)

    def astra_volume_geometry(self) -> dict:
        import astra

        d, h, w = (n * self.voxel_size for n in self.volume_shape)
        return astra.create_vol_geom(self.volume_shape[1], self.volume_shape[2], self.volume_shape[0],
                                     -w / 2, w / 2, -h / 2, h / 2, -d / 2, d / 2)

    def astra_projection_geometry(self) -> dict:
        import astra

        rows, cols = self.detector_shape
        return astra.create_proj_geom("cone", self.detector_spacing[1], self.detector_spacing[0], rows, cols,
                                      np.asarray(self.angles), self.source_distance, self.detector_distance)


_KINDS = {cls.kind: cls for cls in (ParallelBeam2D, FanBeam2D, ConeBeam3D)}


def geometry_from_dict(d: dict[str, Any]) -> Geometry:
    """Rebuild a geometry from ``Geometry.to_dict()`` output."""
    if not isinstance(d, dict) or "type" not in d:
        raise ValueError(f"geometry dict: expected a dict with a 'type' key, found {d!r}")
    cls = _KINDS.get(d["type"])
    if cls is None:
        raise ValueError(f"geometry dict: expected 'type' in {sorted(_KINDS)}, found {d['type']!r}")
    version = d.get("format_version", FORMAT_VERSION)
    if version != FORMAT_VERSION:
        raise ValueError(f"geometry dict: expected format_version {FORMAT_VERSION}, found {version!r}")
    missing = [f for f in cls._fields if f not in d]
    if missing:
        raise ValueError(f"geometry dict for {d['type']!r}: missing keys {missing}")
    kwargs = {f: d[f] for f in cls._fields}
    if cls is ConeBeam3D:
        kwargs["detector_spacing"] = tuple(kwargs["detector_spacing"])
    return cls(**kwargs)


def lpd_ellipses_geometry() -> ParallelBeam2D:
    """The LPD-ellipses protocol geometry (Adler & Oktem 2018).

    128 x 128 image on ``[-64, 64]^2`` mm, 30 angles at the midpoints of
    ``[0, pi)`` split into 30 cells (ODL's ``uniform_partition``), and ODL's
    default detector for that image: 183 pixels over the image diagonal.
    """
    n = 30
    angles = (np.arange(n) + 0.5) * (math.pi / n)
    return ParallelBeam2D((128, 128), pixel_size=1.0, angles=angles)
