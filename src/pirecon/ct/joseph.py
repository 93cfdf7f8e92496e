"""System matrix of the 2D ray transform by Joseph's method.

Each ray is stepped one pixel at a time along its dominant axis (x when
``|r_x| >= |r_y|``, else y); at every step the image is linearly
interpolated between the two nearest pixels across the ray and weighted by
the step length ``pixel_size / |r_dominant|`` (``r`` a unit vector). The
entries therefore approximate line integrals in mm. This is the projector
ASTRA calls ``linear`` for parallel beams; here it serves parallel and fan
beams alike.

Rows are rays in sinogram order (angle-major, ``angle * n_det + detector``),
columns are pixels in row-major image order (``row * W + col``).
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from .geometry import FanBeam2D, ParallelBeam2D

__all__ = ["joseph_matrix", "estimate_nnz"]

_CHUNK_ELEMENTS = 1 << 20  # rays x steps handled per vectorised chunk


def estimate_nnz(geometry) -> int:
    """Upper bound on the number of nonzeros: two per step along the longer image axis."""
    return 2 * geometry.num_angles * geometry.num_detectors * max(geometry.image_shape)


def _rays(geometry) -> tuple[np.ndarray, np.ndarray]:
    """Points on each ray and unit directions, both ``(n_rays, 2)`` in mm (x, y)."""
    vec = geometry.astra_vectors()
    offsets = geometry.detector_positions()
    det_centre, det_step = vec[:, None, 2:4], vec[:, None, 4:6]
    pixels = det_centre + offsets[None, :, None] * det_step  # (angles, dets, 2)
    if isinstance(geometry, ParallelBeam2D):
        direction = np.broadcast_to(vec[:, None, 0:2], pixels.shape)
        points = pixels
    elif isinstance(geometry, FanBeam2D):
        source = vec[:, None, 0:2]
        direction = pixels - source
        points = np.broadcast_to(source, pixels.shape)
    else:
        raise TypeError(f"geometry: expected ParallelBeam2D or FanBeam2D, found {type(geometry).__name__}")
    direction = direction / np.linalg.norm(direction, axis=-1, keepdims=True)
    return points.reshape(-1, 2), direction.reshape(-1, 2)


def _march(rays, major0, minor0, d_major, d_minor, n_major, n_minor, scale):
    """Joseph steps for rays dominated by one index axis.

    ``major0, minor0`` are a point on each ray in continuous pixel-index
    coordinates, ``d_major, d_minor`` its direction (|d_major| >= |d_minor|).
    Returns ``(ray, major, minor, weight)`` for the nonzero entries.
    """
    steps = np.arange(n_major, dtype=np.float64)
    t = (steps[None, :] - major0[:, None]) / d_major[:, None]
    minor = minor0[:, None] + t * d_minor[:, None]
    lower = np.floor(minor)
    frac = minor - lower
    length = (scale / np.abs(d_major))[:, None]
    out = []
    for index, weight in ((lower, (1.0 - frac) * length), (lower + 1.0, frac * length)):
        keep = (index >= 0) & (index <= n_minor - 1) & (weight > 0)
        r, m = np.nonzero(keep)
        out.append((rays[r], m, index[keep].astype(np.int64), weight[keep]))
    return [np.concatenate(parts) for parts in zip(*out)]


def joseph_matrix(geometry, dtype=np.float32) -> sp.csr_matrix:
    """The ``(angles * detectors, H * W)`` CSR system matrix of ``geometry``.

    ``(A @ image.ravel()).reshape(angles, detectors)`` approximates the line
    integrals (mm) of the image over each ray.
    """
    height, width = geometry.image_shape
    px = geometry.pixel_size
    points, direction = _rays(geometry)
    # Continuous pixel-index coordinates: column u grows with x, row v grows with -y.
    u0 = points[:, 0] / px + (width - 1) / 2.0
    v0 = (height - 1) / 2.0 - points[:, 1] / px
    du, dv = direction[:, 0], -direction[:, 1]
    x_major = np.abs(du) >= np.abs(dv)

    blocks = []
    n_rays = points.shape[0]
    chunk = max(1, _CHUNK_ELEMENTS // max(height, width))
    for start in range(0, n_rays, chunk):
        stop = min(start + chunk, n_rays)
        ray_ids = np.arange(start, stop)
        xm = x_major[start:stop]
        parts = []
        if xm.any():
            r = ray_ids[xm]
            ray, col, row, w = _march(r, u0[r], v0[r], du[r], dv[r], width, height, px)
            parts.append((ray, row * width + col, w))
        if (~xm).any():
            r = ray_ids[~xm]
            ray, row, col, w = _march(r, v0[r], u0[r], dv[r], du[r], height, width, px)
            parts.append((ray, row * width + col, w))
        ray, pixel, w = (np.concatenate(p) for p in zip(*parts))
        # one CSR block per chunk of consecutive rays keeps the peak memory near the result's size
        blocks.append(sp.csr_matrix((w.astype(dtype), (ray - start, pixel)), shape=(stop - start, height * width)))
    matrix = sp.vstack(blocks, format="csr")
    matrix.sum_duplicates()
    matrix.indices = matrix.indices.astype(np.int32, copy=False)
    return matrix
