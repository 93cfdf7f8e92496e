"""Noise models for simulated measurements.

A noise model maps clean data ``y`` (any shape, first dimension the batch,
real float tensor on any device) to noisy data of the same shape, dtype and
device: ``y_noisy = model(y, seed=...)``. Random numbers are drawn on the CPU
from ``seed`` (an int, a ``torch.Generator`` or ``None``), so the same seed
gives the same data on every machine, and then moved to ``y``'s device.

Models serialise to plain dicts (``to_dict`` / ``noise_from_dict``) holding
only strings and numbers, suitable for JSON or HDF5 attributes.
"""

from __future__ import annotations

import math
import numbers

import torch

from ._validation import check_choice, check_positive, check_tensor, make_generator

__all__ = ["NoiseModel", "GaussianNoise", "TransmissionPoisson", "noise_from_dict"]

FORMAT_VERSION = 1


def _draw_dtype(dtype: torch.dtype) -> torch.dtype:
    """Dtype random numbers are drawn in: float64 for float64 data, else float32."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def _plain_number(value):
    """Turn numpy / torch scalars (as read back from HDF5) into Python numbers."""
    if hasattr(value, "item") and not isinstance(value, (int, float)):
        try:
            value = value.item()
        except (TypeError, ValueError):
            return value
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        return int(value)
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        return float(value)
    return value


def _plain_str(value):
    if isinstance(value, bytes):
        return value.decode()
    return value


class NoiseModel:
    """Base class: ``model(y, seed=None)`` returns noisy data like ``y``."""

    #: the value of the ``"type"`` key in :meth:`to_dict`
    type_name: str = ""
    _params: tuple[str, ...] = ()

    def __call__(self, y: torch.Tensor, seed: int | torch.Generator | None = None) -> torch.Tensor:
        return self.noise(y, seed)

    def noise(self, y: torch.Tensor, seed: int | torch.Generator | None = None) -> torch.Tensor:
        raise NotImplementedError

    def to_dict(self) -> dict:
        """A plain dict ``{"type": ..., "format_version": 1, <parameters>}`` (no ``None`` values)."""
        d = {"type": self.type_name, "format_version": FORMAT_VERSION}
        for key in self._params:
            value = getattr(self, key)
            if value is not None:
                d[key] = value
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "NoiseModel":
        """Inverse of :meth:`to_dict`; rejects a wrong ``"type"`` and unknown keys."""
        if not isinstance(d, dict):
            raise TypeError(f"noise dict: expected a dict, found {type(d).__name__}")
        kind = _plain_str(d.get("type"))
        if kind != cls.type_name:
            raise ValueError(f"noise dict: expected type {cls.type_name!r}, found {kind!r}")
        version = _plain_number(d.get("format_version", FORMAT_VERSION))
        if version != FORMAT_VERSION:
            raise ValueError(f"noise dict: expected format_version {FORMAT_VERSION}, found {version!r}")
        unknown = sorted(set(d) - {"type", "format_version", *cls._params})
        if unknown:
            raise ValueError(
                f"noise dict: expected keys among {', '.join(repr(k) for k in cls._params)}, "
                f"found unknown {', '.join(repr(k) for k in unknown)}"
            )
        return cls(**{k: _plain_number(d[k]) for k in cls._params if k in d})

    def __eq__(self, other):
        if not isinstance(other, NoiseModel):
            return NotImplemented
        return self.to_dict() == other.to_dict()

    def __hash__(self):
        return hash(tuple(sorted(self.to_dict().items())))

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.to_dict().items() if k not in ("type", "format_version"))
        return f"{type(self).__name__}({args})"


class GaussianNoise(NoiseModel):
    """Additive white Gaussian noise ``y + s * n``, ``n ~ N(0, 1)`` i.i.d.

    Parameters
    ----------
    sigma : float, optional
        Absolute standard deviation ``s`` (units of ``y``).
    relative : float, optional
        Relative level: ``s_b = relative * mean(|y_b|)`` for each sample ``b``,
        the mean taken over all non-batch dimensions (the LPD-ellipses
        protocol uses ``relative=0.05``). A 0-d ``y`` is one sample; a 1-d
        ``y`` of shape ``(B,)`` is ``B`` one-value samples.

    Exactly one of ``sigma`` and ``relative`` must be given.
    """

    type_name = "gaussian"
    _params = ("sigma", "relative")

    def __init__(self, sigma: float | None = None, relative: float | None = None):
        if (sigma is None) == (relative is None):
            found = "both" if sigma is not None else "neither"
            raise ValueError(f"GaussianNoise: expected exactly one of sigma and relative, found {found}")
        self.sigma = None if sigma is None else float(check_positive(sigma, "sigma"))
        self.relative = None if relative is None else float(check_positive(relative, "relative"))

    def std(self, y: torch.Tensor) -> torch.Tensor:
        """Noise standard deviation, broadcastable to ``y``: shape ``(B, 1, ..., 1)`` (0-d for 0-d ``y``).

        A level of the measurement, not a function of it: detached from autograd, so ``d noise(y)/dy = 1``.
        """
        y = check_tensor(y, "y").detach()
        if self.sigma is not None:
            return torch.full((), self.sigma, dtype=y.dtype, device=y.device)
        if y.ndim == 0:
            return self.relative * y.abs()
        dims = tuple(range(1, y.ndim))
        level = y.abs().mean(dim=dims, keepdim=True) if dims else y.abs()
        return self.relative * level

    def noise(self, y: torch.Tensor, seed: int | torch.Generator | None = None) -> torch.Tensor:
        """``y + s * n`` with ``n ~ N(0, 1)`` drawn on the CPU; same shape, dtype and device as ``y``."""
        std = self.std(y)
        gen = make_generator(seed)
        n = torch.randn(y.shape, generator=gen, dtype=_draw_dtype(y.dtype), device=gen.device)
        return y + std * n.to(device=y.device, dtype=y.dtype)


class TransmissionPoisson(NoiseModel):
    """Photon-counting noise of transmission CT (Beer-Lambert law).

    ``y`` are dimensionless line integrals (attenuation in 1/mm times mm).
    Counts are ``N ~ Poisson(I0 * exp(-y))`` and the model returns post-log
    data ``-log(max(N, zero_count) / I0)``.

    Parameters
    ----------
    photon_count : float
        ``I0``, the expected number of photons per detector bin without object.
    zero_count : float
        Stand-in for a zero count before the logarithm, so a ray with no
        detected photon gives the finite value ``log(I0 / zero_count)`` (the
        largest post-log value possible). ``0.1`` follows the LoDoPaB-CT
        convention.
    """

    type_name = "transmission_poisson"
    _params = ("photon_count", "zero_count")

    def __init__(self, photon_count: float, zero_count: float = 0.1):
        self.photon_count = float(check_positive(photon_count, "photon_count"))
        self.zero_count = float(check_positive(zero_count, "zero_count"))

    def _counts64(self, y: torch.Tensor, seed) -> torch.Tensor:
        """Counts as a float64 tensor (on the CPU unless a CUDA generator was given)."""
        y = check_tensor(y, "y")
        rate = self.photon_count * torch.exp(-y.detach().to(device="cpu", dtype=torch.float64))
        if rate.numel() and not bool(torch.isfinite(rate).all()):
            raise ValueError(
                f"y: expected line integrals with finite photon_count*exp(-y), found min(y) = "
                f"{float(y.min()):.6g} (photon_count={self.photon_count:g})"
            )
        gen = make_generator(seed)
        return torch.poisson(rate.to(gen.device), generator=gen)

    def counts(self, y: torch.Tensor, seed: int | torch.Generator | None = None) -> torch.Tensor:
        """Raw photon counts ``N ~ Poisson(I0 exp(-y))``, same shape, dtype and device as ``y``.

        Drawn on the CPU in float64 (integers exact up to 2^53), then cast.
        """
        return self._counts64(y, seed).to(device=y.device, dtype=y.dtype)

    def post_log(self, counts: torch.Tensor) -> torch.Tensor:
        """``-log(max(counts, zero_count) / I0)``, computed in float64, returned like ``counts``."""
        c = counts.to(torch.float64).clamp_min(self.zero_count)
        return (math.log(self.photon_count) - torch.log(c)).to(counts.dtype)

    def noise(self, y: torch.Tensor, seed: int | torch.Generator | None = None) -> torch.Tensor:
        """Noisy post-log line integrals ``-log(max(N, zero_count) / I0)``, like ``y``.

        Same draws as :meth:`counts` for the same seed.
        """
        post = self.post_log(self._counts64(y, seed))
        return post.to(device=y.device, dtype=y.dtype)


_MODELS = {cls.type_name: cls for cls in (GaussianNoise, TransmissionPoisson)}


def noise_from_dict(d: dict) -> NoiseModel:
    """Rebuild a noise model from :meth:`NoiseModel.to_dict` output, dispatching on ``d["type"]``."""
    if not isinstance(d, dict):
        raise TypeError(f"noise dict: expected a dict, found {type(d).__name__}")
    if "type" not in d:
        raise ValueError(f"noise dict: expected a 'type' key, found keys {sorted(d)}")
    kind = check_choice(_plain_str(d["type"]), "noise type", tuple(_MODELS))
    return _MODELS[kind].from_dict({**d, "type": kind})
