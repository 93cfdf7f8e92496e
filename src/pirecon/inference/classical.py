"""Classical reconstructions as models: ``ClassicalMethod("tv", lam=0.5)(y, physics) -> Reconstruction``.

    fbp            filtered backprojection (CT): ``filter``, ``frequency_scaling``
    zero-filled    ``A^H y`` (MRI)
    cgls           conjugate gradients on the normal equations: ``iterations``, ``tikhonov``, ``tol``
    sirt           simultaneous iterative reconstruction: ``iterations``, ``nonnegative``
    tv             total variation by PDHG: ``lam`` (required), ``iterations``, ``nonnegative``

They take the same ``(y, physics)`` as the learned models, so :class:`pirecon.inference.Reconstructor`
serves both.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..errors import ArgumentError
from ..models.reconstruction import Reconstruction

__all__ = ["METHODS", "PARAMS", "ClassicalMethod"]

METHODS = ("fbp", "zero-filled", "cgls", "sirt", "tv")

PARAMS: dict[str, dict[str, type]] = {
    "fbp": {"filter": str, "frequency_scaling": float},
    "zero-filled": {},
    "cgls": {"iterations": int, "tikhonov": float, "tol": float},
    "sirt": {"iterations": int, "nonnegative": bool},
    "tv": {"lam": float, "iterations": int, "nonnegative": bool},
}
"""The parameters each method accepts, with their types."""


class ClassicalMethod(nn.Module):
    """A classical reconstruction with fixed parameters, called as ``method(y, physics)``.

    Parameters
    ----------
    method : one of :data:`METHODS`
    **params : the method's parameters (:data:`PARAMS`); ``tv`` needs ``lam``.
    """

    def __init__(self, method: str, **params: Any):
        super().__init__()
        if method not in METHODS:
            raise ArgumentError(f"method: expected one of {', '.join(METHODS)}, found {method!r}")
        unknown = sorted(set(params) - set(PARAMS[method]))
        if unknown:
            known = ", ".join(sorted(PARAMS[method])) or "none"
            raise ArgumentError(f"method {method!r}: expected parameters among {known}, found {', '.join(unknown)}")
        if method == "tv" and "lam" not in params:
            raise ArgumentError("method 'tv': expected lam=<regularisation weight>, found none")
        self.method, self.params = method, dict(params)
        self.progress = False

    def check_modality(self, modality: str) -> None:
        """Refuse data the method cannot reconstruct (FBP: CT only; zero-filled: MRI only)."""
        if self.method == "fbp" and modality != "ct":
            raise ArgumentError("method 'fbp': expected CT data, found MRI data (use zero-filled)")
        if self.method == "zero-filled" and modality != "mri":
            raise ArgumentError("method 'zero-filled': expected MRI data, found CT data (use fbp)")

    def forward(self, y: torch.Tensor, physics) -> Reconstruction:
        from .. import solvers
        from ..ct import fbp

        self.check_modality(physics.modality)
        if self.method == "fbp":
            return Reconstruction(fbp(y, physics.operator, **self.params))
        if self.method == "zero-filled":
            return Reconstruction(physics.adjoint(y))
        solver = {"cgls": solvers.cgls, "sirt": solvers.sirt, "tv": solvers.tv_pdhg}[self.method]
        return Reconstruction(solver(y, physics.operator, progress=self.progress, **self.params).image)

    def extra_repr(self) -> str:
        return ", ".join([repr(self.method)] + [f"{k}={v!r}" for k, v in self.params.items()])
