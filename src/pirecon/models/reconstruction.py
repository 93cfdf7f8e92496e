"""``Reconstruction``: what every reconstructor returns."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

__all__ = ["Reconstruction"]


@dataclass
class Reconstruction:
    """The output of ``model(y, physics)``.

    Attributes
    ----------
    image : torch.Tensor
        ``(B, 1, H, W)``: real float32 for CT, complex64 for MRI (same kind as ``physics.adjoint(y)``).
    uncertainty : pirecon.uncertainty.Interval, torch.Tensor or None
        Filled by uncertainty heads (:mod:`pirecon.models.uncertainty_heads`): an ``Interval`` (lower, upper,
        centre, std where the method has one, kind, calibration), or a per-pixel tensor ``(B, 1, H, W)``.
    task : dict of str to torch.Tensor
        Diagnostic-task outputs (segmentation logits, class scores), filled by task heads.
    provenance : dict
        Where the reconstruction came from, as plain JSON data (filled by :func:`pirecon.load` /
        ``Reconstructor.reconstruct``): ``model``, ``checkpoint``, ``checkpoint_sha256``, ``source_file``,
        ``geometry``, ``pirecon_version``, ... Empty for a bare ``model(y, physics)`` call.
    samples : torch.Tensor or None
        ``(S, B, 1, H, W)`` magnitude images a sampling head drew to form ``image`` and ``uncertainty`` (MC
        dropout's passes, an ensemble's members), for a task head to read without drawing them again; None
        otherwise.
    """

    image: torch.Tensor
    uncertainty: object = None
    task: dict[str, torch.Tensor] = field(default_factory=dict)
    provenance: dict = field(default_factory=dict)
    samples: torch.Tensor | None = None
