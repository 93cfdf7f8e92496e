"""Computed tomography: geometries, the ray transform and its backends, filtered back-projection."""

from .filtered_backprojection import FILTERS, fbp, fbp_filter
from .geometry import ConeBeam3D, FanBeam2D, Geometry, ParallelBeam2D, geometry_from_dict, lpd_ellipses_geometry
from .ray_transform import BACKENDS, RayTransform


def clear_caches() -> None:
    """Release the in-memory caches of system matrices and default FBP operators (the disk cache stays)."""
    from .filtered_backprojection import _default_ray_transform
    from .sparse_backend import system_matrix

    system_matrix.cache_clear()
    _default_ray_transform.cache_clear()


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
    "clear_caches",
]
