"""``Physics``: the one object that travels from raw data to every reconstructor.

A ``Physics`` bundles the forward operator ``A``, the noise model of the
acquisition and the metadata needed to rebuild both (geometry, coil maps,
mask). Every reconstructor, classical or learned, takes ``(y, physics)``.

    physics(x)                  A x, noise-free
    physics.simulate(x, seed)   noise(A x)

The physics of a raw file or a training batch is built in one place,
:mod:`pirecon.data.acquisition` (``read_acquisition``, ``physics_from_file``,
``BatchPhysics``); this module knows nothing of files.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from .noise import NoiseModel
from .operators.base import LinearOperator

__all__ = ["Physics"]


@dataclass
class Physics:
    """Forward operator, noise model and acquisition metadata.

    Attributes
    ----------
    operator : LinearOperator
        ``A``: images ``(B, C, H, W)`` to measurements (sinograms or k-space).
    noise : NoiseModel or None
        How measurements were (or are to be) corrupted; ``None`` for noise-free data.
    modality : {"ct", "mri"}
    metadata : dict
        What the operator was built from: ``geometry`` (CT), ``coil_maps`` / ``mask`` / ``trajectory`` (MRI),
        and the file it came from.
    """

    operator: LinearOperator
    noise: NoiseModel | None = None
    modality: str = "ct"
    metadata: dict[str, Any] = field(default_factory=dict)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """Noise-free measurements ``A x``."""
        return self.operator(x)

    def adjoint(self, y: torch.Tensor) -> torch.Tensor:
        """``A^H y``."""
        return self.operator.adjoint(y)

    def simulate(self, x: torch.Tensor, seed: int | torch.Generator | None = None) -> torch.Tensor:
        """Noisy measurements ``noise(A x)`` (``A x`` when the physics has no noise model).

        With a sampling mask (Cartesian MRI: ``operator.mask``), the noise is masked too: unsampled
        k-space stays zero, ``M (A_full x + n)``.
        """
        y = self.operator(x)
        if self.noise is None:
            return y
        noisy = self.noise(y, seed=seed)
        mask = getattr(self.operator, "mask", None)
        return noisy if mask is None else noisy * mask.to(device=noisy.device, dtype=noisy.real.dtype)
