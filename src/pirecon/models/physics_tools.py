"""What learned reconstructions need from a ``Physics``: input checks, the operator norm, a starting image.

    scale = operator_scale(physics)        # 1 / ||A||, cached per operator
    x0 = initial_image(y, physics)         # FBP (Hann) for CT, A^H y otherwise: (B, 1, H, W)
"""

from __future__ import annotations

import functools

import torch

from .._validation import check_tensor

__all__ = ["check_model_inputs", "operator_scale", "initial_image", "cartesian_mask"]


def check_model_inputs(y, physics, model: str, complex_data: bool | None = None) -> None:
    """Raise ``ValueError``/``TypeError`` naming ``model`` unless ``y`` is a batched tensor and ``physics`` a Physics
    (and, when ``complex_data`` is given, ``y`` is complex exactly when the model expects complex data)."""
    from ..physics import Physics

    if not isinstance(physics, Physics):
        raise TypeError(f"{model}: expected physics to be a pirecon.physics.Physics, found {type(physics).__name__}")
    kind = "complex" if physics.operator.range_kind == "complex" else "real"
    check_tensor(y, f"{model}: y", kind=kind, min_ndim=len(physics.operator.range_shape) + 1, finite=False)
    if complex_data is not None and y.is_complex() != complex_data:
        raise ValueError(f"{model}: expected {'complex' if complex_data else 'real'} measurements "
                         f"(complex_data={complex_data}), found {y.dtype}")
    expected = tuple(physics.operator.range_shape)
    found = tuple(y.shape[-len(expected):])
    if found != expected:
        raise ValueError(f"{model}: expected measurements of shape (B, ..., {', '.join(map(str, expected))}) "
                         f"for {physics.operator!r}, found {tuple(y.shape)}")


@functools.lru_cache(maxsize=16)
def _geometry_norm(geometry) -> float:
    from ..ct import RayTransform

    return RayTransform(geometry).opnorm(iterations=200, rtol=1e-7)


def operator_scale(physics) -> float:
    """``1 / ||A||_2`` of the physics' operator, for networks that work with the normalised operator.

    Ray transforms: computed once per geometry (power iteration, float64). SENSE and single-coil
    Fourier operators: 1 (orthonormal FFT, binary mask, maps with unit root-sum-of-squares give
    ``||A|| <= 1``; their maps change from batch to batch). Any other operator: computed once and
    stored on the operator.
    """
    from ..mri import SenseOperator

    op = physics.operator
    geometry = getattr(op, "geometry", None)
    if geometry is not None:
        norm = _geometry_norm(geometry)
    elif isinstance(op, SenseOperator):
        return 1.0
    else:
        norm = op.__dict__.get("_pirecon_opnorm")
        if norm is None:
            norm = op.__dict__["_pirecon_opnorm"] = op.opnorm()
    if not norm > 0:
        raise ValueError(f"operator_scale: expected an operator with a positive norm, found ||A|| = {norm}")
    return 1.0 / norm


def initial_image(y: torch.Tensor, physics, filter: str = "hann") -> torch.Tensor:
    """The classical starting image ``(B, 1, H, W)``: filtered back-projection (parallel or fan beam) for CT,
    the adjoint ``A^H y`` (the coil-combined zero-filled image for SENSE) otherwise."""
    from ..ct import FanBeam2D, ParallelBeam2D, fbp

    op = physics.operator
    if isinstance(getattr(op, "geometry", None), (ParallelBeam2D, FanBeam2D)):
        return fbp(y, op, filter)
    return op.adjoint(y)


def cartesian_mask(physics) -> torch.Tensor:
    """The sampling mask of Cartesian multi-coil physics, as stored in its ``SenseOperator``
    (broadcastable to ``(B, coils, H, W)``); all ones when the operator samples everything."""
    from ..mri import SenseOperator

    op = physics.operator
    if not isinstance(op, SenseOperator):
        raise TypeError(f"expected Cartesian MRI physics (a SenseOperator), found {type(op).__name__}")
    if op.mask is None:
        return torch.ones(1, 1, *op.range_shape[-2:])
    return op.mask
