"""``Interval``: per-pixel uncertainty of a reconstruction, as a typed object.

    interval = Interval(lower, upper, center=image, kind="quantile")
    interval.scaled(2.0)          # the interval about its centre, each side stretched by 2: what calibration tunes

``lower <= center <= upper`` per pixel, all ``(B, 1, H, W)`` real (the magnitude for MRI); ``std`` where the
method has one (Gaussian heads, ensembles, MC dropout), and the calibration (lambda-hat and the guarantee)
once :func:`pirecon.uncertainty.calibration.rcps` has set it.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch

from ..errors import ArgumentError

__all__ = ["Interval", "KINDS"]

KINDS = ("gaussian", "quantile", "mc-dropout", "ensemble", "constant")


def _real(x, name: str) -> torch.Tensor:
    x = torch.as_tensor(x)
    if x.is_complex() or not x.is_floating_point():
        raise ArgumentError(f"{name}: expected a real floating-point tensor, found dtype {x.dtype}")
    if not bool(torch.isfinite(x).all()):
        raise ArgumentError(f"{name}: expected finite values, found {int((~torch.isfinite(x)).sum())} NaN or Inf")
    return x


@dataclass(frozen=True)
class Interval:
    """A per-pixel interval ``[lower, upper]`` about ``center``.

    Attributes
    ----------
    lower, upper, center : tensors ``(B, 1, H, W)``, real, ``lower <= center <= upper``
    kind : one of :data:`KINDS`
    std : tensor ``(B, 1, H, W)`` or None
        Predicted standard deviation, where the method has one.
    calibration : dict or None
        ``{"lambda_hat", "alpha", "delta", "method", "bound", "n"}`` once calibrated; None before.
    parts : dict of str to tensor, or None
        Components of the uncertainty where the method has them (a deep ensemble: ``aleatoric_std``,
        ``epistemic_std``), each ``(B, 1, H, W)``.
    """

    lower: torch.Tensor
    upper: torch.Tensor
    center: torch.Tensor
    kind: str
    std: torch.Tensor | None = None
    calibration: dict | None = None
    parts: dict | None = None

    def __post_init__(self):
        lower, upper, center = (_real(v, n) for v, n in ((self.lower, "lower"), (self.upper, "upper"),
                                                         (self.center, "center")))
        if not (lower.shape == upper.shape == center.shape):
            raise ArgumentError(f"interval: expected lower, upper and center of one shape, found "
                                f"{tuple(lower.shape)}, {tuple(upper.shape)} and {tuple(center.shape)}")
        if self.kind not in KINDS:
            raise ArgumentError(f"kind: expected one of {', '.join(KINDS)}, found {self.kind!r}")
        for name, bad in (("lower > center", lower > center), ("center > upper", center > upper)):
            if bool(bad.any()):
                raise ArgumentError(f"interval: expected lower <= center <= upper, found {name} at "
                                    f"{int(bad.sum())} pixels")
        if self.std is not None:
            std = _real(self.std, "std")
            if std.shape != center.shape or bool((std < 0).any()):
                raise ArgumentError(f"std: expected non-negative values of shape {tuple(center.shape)}, found "
                                    f"shape {tuple(std.shape)}, minimum {float(std.min()):g}")

    @classmethod
    def concatenate(cls, intervals: list["Interval"]) -> "Interval":
        """The intervals of consecutive batches as one (same kind and calibration)."""
        first = intervals[0]
        std = None if first.std is None else torch.cat([i.std for i in intervals])
        parts = None if first.parts is None else {k: torch.cat([i.parts[k] for i in intervals]) for k in first.parts}
        return cls(torch.cat([i.lower for i in intervals]), torch.cat([i.upper for i in intervals]),
                   torch.cat([i.center for i in intervals]), first.kind, std, first.calibration, parts)

    def detach(self, device="cpu") -> "Interval":
        """The interval without autograd history, on ``device``."""
        move = (lambda t: None if t is None else t.detach().to(device))
        parts = None if self.parts is None else {k: move(v) for k, v in self.parts.items()}
        return replace(self, lower=move(self.lower), upper=move(self.upper), center=move(self.center),
                       std=move(self.std), parts=parts)

    def describe(self) -> dict:
        """``{"kind", "calibration"}`` as plain data, for provenance."""
        return {"kind": self.kind, "calibration": self.calibration}

    @property
    def width(self) -> torch.Tensor:
        """``upper - lower`` per pixel."""
        return self.upper - self.lower

    def scaled(self, lam: float) -> "Interval":
        """Each side's distance from the centre multiplied by ``lam >= 0``: ``[c - lam (c - l), c + lam (u - c)]``."""
        lam = float(lam)
        if not lam >= 0:
            raise ArgumentError(f"lam: expected a number >= 0, found {lam!r}")
        return replace(self, lower=self.center - lam * (self.center - self.lower),
                       upper=self.center + lam * (self.upper - self.center))
