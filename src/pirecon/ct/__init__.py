"""Computed tomography: geometries, the ray transform and its backends, filtered back-projection."""

from .filtered_backprojection import FILTERS, fbp, fbp_filter
from .geometry import ConeBeam3D, FanBeam2D, Geometry, ParallelBeam2D, geometry_from_dict, lpd_ellipses_geometry
from .ray_transform import BACKENDS, RayTransform

__all__ = [
    "Geometry",
    "ParallelBeam2D",
    "FanBeam2D",
    "ConeBeam3D",
    "geometry_from_dict",
    "lpd_ellipses_geometry",
    "RayTransform",
    "BACKENDS",
    "fbp",
    "fbp_filter",
    "FILTERS",
]
