"""Noise models for simulated measurements.

A noise model maps clean data ``y`` (any shape, first dimension the batch, on
any device) to noisy data of the same shape, dtype and device:
``y_noisy = model(y, seed=...)``. :class:`GaussianNoise` and
:class:`TransmissionPoisson` take real floating data (CT sinograms),
:class:`ComplexGaussianNoise` complex data (MRI k-space ``(B, coils, H, W)``
or ``(B, coils, K)``). Random numbers are drawn on the CPU from ``seed`` (an
int, a ``torch.Generator`` or ``None``), so the same seed gives the same data
on every machine, and then moved to ``y``'s device.

Models serialise to plain dicts (``to_dict`` / ``noise_from_dict``) holding
only strings, numbers, booleans and (for a coil covariance) nested lists of
numbers, suitable for JSON or HDF5 attributes.

Units of transmission CT
------------------------
:class:`TransmissionPoisson` reads ``y`` as dimensionless line integrals:
attenuation in 1/mm integrated over mm. Phantoms are in arbitrary units
(Shepp-Logan up to 1, random ellipses of order 1); to simulate physical
photon counts, multiply them by :data:`MU_WATER_PER_MM` (phantom value 1 =
water, 0.02 / mm), as ``pirecon simulate`` does by default with Poisson noise.
Unscaled phantoms give line integrals of order 100 and no detected photon on
almost every ray through the object; the model refuses such data (see
:data:`MAX_ZERO_COUNT_FRACTION`).
"""

from __future__ import annotations

import json
import math
import numbers

import numpy as np
import torch

from ._validation import check_choice, check_positive, check_tensor, make_generator

__all__ = ["NoiseModel", "GaussianNoise", "TransmissionPoisson", "ComplexGaussianNoise", "noise_from_dict",
           "MU_WATER_PER_MM", "MAX_ZERO_COUNT_FRACTION"]

FORMAT_VERSION = 1

#: Linear attenuation of water in 1/mm (about 20 / m at the 60-70 keV of a diagnostic spectrum; the
#: LoDoPaB-CT / DIVal convention, ``MU_WATER = 20 / m``). The attenuation unit of pirecon's
#: transmission simulations: phantom value 1 is water.
MU_WATER_PER_MM = 0.02

#: :class:`TransmissionPoisson` refuses data on which more than this fraction of the rays through the
#: object (line integral > 0) would detect no photon at all (expected fraction), unless
#: ``allow_photon_starvation=True``: such data almost always mean that the image was not in 1/mm.
MAX_ZERO_COUNT_FRACTION = 0.01


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
        return cls(**cls._decode_params({k: d[k] for k in cls._params if k in d}))

    @classmethod
    def _decode_params(cls, params: dict) -> dict:
        """Constructor arguments from the parameters of a dict (HDF5 scalars made plain Python)."""
        return {k: _plain_number(v) for k, v in params.items()}

    def __eq__(self, other):
        if not isinstance(other, NoiseModel):
            return NotImplemented
        return self.to_dict() == other.to_dict()

    def __hash__(self):
        return hash(json.dumps(self.to_dict(), sort_keys=True))

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

    ``y`` are dimensionless line integrals (attenuation in 1/mm times mm; see
    :data:`MU_WATER_PER_MM`). Counts are ``N ~ Poisson(I0 * exp(-y))`` and the
    model returns post-log data ``-log(max(N, zero_count) / I0)``, whose
    variance is about ``1 / (I0 exp(-y))`` at high counts.

    Parameters
    ----------
    photon_count : float
        ``I0``, the expected number of photons per detector bin without object.
    zero_count : float
        Stand-in for a zero count before the logarithm, so a ray with no
        detected photon gives the finite value ``log(I0 / zero_count)`` (the
        largest post-log value possible). ``0.1`` follows the LoDoPaB-CT
        convention.
    allow_photon_starvation : bool
        ``False`` (default): refuse (``ValueError``) data on which more than
        :data:`MAX_ZERO_COUNT_FRACTION` of the rays with a positive line
        integral would detect no photon, i.e. the mean of ``exp(-I0 exp(-y))``
        over those rays (a function of ``y`` alone, not of the draw). Such
        data carry no information but the zero-count cap and almost always
        mean an image in arbitrary units instead of 1/mm. ``True`` accepts
        them (stored in :meth:`to_dict` only when ``True``).
    """

    type_name = "transmission_poisson"
    _params = ("photon_count", "zero_count", "allow_photon_starvation")

    def __init__(self, photon_count: float, zero_count: float = 0.1, *, allow_photon_starvation: bool = False):
        self.photon_count = float(check_positive(photon_count, "photon_count"))
        self.zero_count = float(check_positive(zero_count, "zero_count"))
        if not isinstance(allow_photon_starvation, (bool, np.bool_)):
            raise ValueError(f"allow_photon_starvation: expected True or False, found {allow_photon_starvation!r}")
        self.allow_photon_starvation = bool(allow_photon_starvation)

    def to_dict(self) -> dict:
        d = super().to_dict()
        if not self.allow_photon_starvation:
            del d["allow_photon_starvation"]
        return d

    def zero_count_fraction(self, y: torch.Tensor) -> float:
        """Expected fraction of the rays with ``y > 0`` that detect no photon: mean of ``exp(-I0 exp(-y))``.

        0 when no ray has a positive line integral.
        """
        y64 = check_tensor(y, "y").detach().to(device="cpu", dtype=torch.float64)
        return self._zero_fraction(y64, self.photon_count * torch.exp(-y64))[0]

    @staticmethod
    def _zero_fraction(y64: torch.Tensor, rate: torch.Tensor) -> tuple[float, int]:
        """``(mean of P(N = 0) = exp(-rate) over the rays with y > 0, number of those rays)``."""
        through = y64 > 0
        rays = int(through.sum())
        if rays == 0:
            return 0.0, 0
        return float(torch.exp(-rate[through]).mean()), rays

    def _check_starvation(self, y64: torch.Tensor, rate: torch.Tensor) -> None:
        fraction, rays = self._zero_fraction(y64, rate)
        if fraction > MAX_ZERO_COUNT_FRACTION:
            raise ValueError(
                f"y: TransmissionPoisson: {100 * fraction:.1f}% of the {rays} rays through the object would get "
                f"zero photons at I0 = {self.photon_count:g} (line integrals up to {float(y64.max()):.1f}), "
                f"expected at most {100 * MAX_ZERO_COUNT_FRACTION:g}%; expected attenuation in 1/mm (water "
                f"about {MU_WATER_PER_MM} / mm) - scale the image (intensity_scale) or raise I0 "
                f"(allow_photon_starvation=True accepts such data)"
            )

    def _counts64(self, y: torch.Tensor, seed) -> torch.Tensor:
        """Counts as a float64 tensor (on the CPU unless a CUDA generator was given)."""
        y = check_tensor(y, "y")
        y64 = y.detach().to(device="cpu", dtype=torch.float64)
        rate = self.photon_count * torch.exp(-y64)
        if rate.numel() and not bool(torch.isfinite(rate).all()):
            raise ValueError(
                f"y: expected line integrals with finite photon_count*exp(-y), found min(y) = "
                f"{float(y.min()):.6g} (photon_count={self.photon_count:g})"
            )
        if not self.allow_photon_starvation:
            self._check_starvation(y64, rate)
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


def _as_covariance(value) -> torch.Tensor:
    """A coil covariance argument (tensor, array or nested lists, real or complex) as complex128 on the CPU."""
    if isinstance(value, torch.Tensor):
        t = value.detach().to("cpu").resolve_conj()
    else:
        try:
            a = np.asarray(value)
        except (TypeError, ValueError):
            a = None
        if a is None or a.dtype.kind not in "iufc":
            raise ValueError(f"covariance: expected a (coils, coils) complex matrix (tensor, array or nested "
                             f"lists of numbers), found {type(value).__name__}")
        t = torch.from_numpy(np.ascontiguousarray(a))
    if t.dtype == torch.bool:
        raise ValueError("covariance: expected a (coils, coils) complex matrix of numbers, found dtype bool")
    return t.to(torch.complex128)


#: Largest ``|Psi - Psi^H|`` accepted, relative to the largest ``|Psi|`` (float32 rounding of a measured
#: covariance); the accepted matrix is then made exactly Hermitian, ``(Psi + Psi^H) / 2``.
_HERMITIAN_RTOL = 1e-6


class ComplexGaussianNoise(NoiseModel):
    r"""Additive circular complex Gaussian noise of MRI k-space: ``y + sigma * L z``.

    ``z`` has i.i.d. standard circular complex Gaussian entries (real and
    imaginary parts independent ``N(0, 1/2)``, so ``E|z|^2 = 1``). Without a
    covariance (``L = I``) every complex sample gets noise of standard
    deviation ``sigma`` (``E|n|^2 = sigma^2``): ``sigma / sqrt(2)`` in its real
    part and as much in its imaginary part, independent across samples and
    coils. The centred orthonormal FFT (:func:`pirecon.mri.fft2c`) keeps this
    white: ``sigma`` per k-space sample is ``sigma`` per coil-image pixel.

    Parameters
    ----------
    sigma : float
        Noise level: the complex standard deviation per sample (per coil when
        ``covariance`` has unit diagonal).
    covariance : (coils, coils) complex matrix, optional
        ``Psi``, the noise covariance between coils in units of ``sigma^2``:
        ``E[n_c conj(n_d)] = sigma^2 Psi[c, d]``. Hermitian positive definite;
        the noise is ``sigma L z`` along the coil axis (dimension 1) with
        ``Psi = L L^H`` (Cholesky). A measured absolute covariance is
        ``sigma=1, covariance=Psi``. ``None``: independent coils (``Psi = I``).

    The model applies to every entry of ``y``, sampled or not: for
    undersampled k-space apply the mask after the noise (as
    :mod:`pirecon.data.simulate` does), so unsampled entries stay zero.
    Random numbers are drawn on the CPU, real parts of the whole ``y`` first,
    then imaginary parts, in float64 for complex128 data and float32 for
    complex64 data.
    """

    type_name = "complex_gaussian"
    _params = ("sigma", "covariance")

    def __init__(self, sigma: float, covariance=None):
        self.sigma = float(check_positive(sigma, "sigma"))
        self._covariance = self._cholesky = None
        if covariance is not None:
            psi = _as_covariance(covariance)
            if psi.ndim != 2 or psi.shape[0] != psi.shape[1] or psi.shape[0] < 1:
                raise ValueError(f"covariance: expected a square (coils, coils) matrix, found shape {tuple(psi.shape)}")
            if not bool(torch.isfinite(torch.view_as_real(psi)).all()):
                raise ValueError("covariance: expected finite values, found NaN or Inf")
            scale = float(psi.abs().max())
            asym = (psi - psi.mH).abs()
            worst = float(asym.max())
            if worst > _HERMITIAN_RTOL * scale:
                i, j = np.unravel_index(int(asym.argmax()), tuple(psi.shape))
                raise ValueError(f"covariance: expected a Hermitian matrix (covariance[i, j] = "
                                 f"conj(covariance[j, i])), found |covariance - covariance^H| = {worst:.3g} "
                                 f"at index ({i}, {j}) (largest |entry| {scale:.3g})")
            psi = (psi + psi.mH) / 2  # exactly Hermitian (idempotent for Hermitian input)
            cholesky, info = torch.linalg.cholesky_ex(psi)
            if int(info) != 0:
                smallest = float(torch.linalg.eigvalsh(psi).min())
                raise ValueError(f"covariance: expected a positive definite matrix, found smallest eigenvalue "
                                 f"{smallest:.3g}")
            self._covariance, self._cholesky = psi, cholesky

    @property
    def covariance(self) -> torch.Tensor | None:
        """``Psi`` (coils, coils) complex128 on the CPU, or ``None`` for independent coils (a copy)."""
        return None if self._covariance is None else self._covariance.clone()

    @property
    def num_coils(self) -> int | None:
        """Coils of the covariance, or ``None`` (any number of coils)."""
        return None if self._covariance is None else int(self._covariance.shape[0])

    def to_dict(self) -> dict:
        """``{"type": "complex_gaussian", "format_version": 1, "sigma": s}`` plus, for correlated coils,
        ``"covariance"``: ``Psi`` as nested lists ``[[[re, im], ...], ...]`` of shape ``(coils, coils, 2)``."""
        d = {"type": self.type_name, "format_version": FORMAT_VERSION, "sigma": self.sigma}
        if self._covariance is not None:
            d["covariance"] = torch.view_as_real(self._covariance).tolist()
        return d

    @classmethod
    def _decode_params(cls, params: dict) -> dict:
        out = {k: _plain_number(v) for k, v in params.items() if k != "covariance"}
        if "covariance" in params:
            try:
                pairs = np.asarray(params["covariance"], dtype=np.float64)
            except (TypeError, ValueError):
                pairs = None
            if pairs is None or pairs.ndim != 3 or pairs.shape[2] != 2:
                found = "ragged or non-numeric lists" if pairs is None else f"shape {pairs.shape}"
                raise ValueError(f"noise dict: expected 'covariance' as (coils, coils, 2) [real, imag] pairs, "
                                 f"found {found}")
            out["covariance"] = torch.view_as_complex(torch.from_numpy(np.ascontiguousarray(pairs)))
        return out

    def __repr__(self) -> str:
        cov = "" if self._covariance is None else f", covariance=<{self.num_coils}x{self.num_coils} matrix>"
        return f"{type(self).__name__}(sigma={self.sigma!r}{cov})"

    def noise(self, y: torch.Tensor, seed: int | torch.Generator | None = None) -> torch.Tensor:
        """``y + sigma * L z`` with ``z`` drawn on the CPU; same shape, dtype and device as ``y``.

        ``y`` complex: ``(B, coils, H, W)``, ``(B, coils, K)``, or (without a covariance) any shape.
        """
        if isinstance(y, torch.Tensor) and not y.is_complex():
            raise ValueError(f"y: expected complex k-space (complex64 or complex128) for ComplexGaussianNoise, "
                             f"found dtype {str(y.dtype).replace('torch.', '')} (real data take GaussianNoise)")
        y = check_tensor(y, "y", kind="complex")
        if self._cholesky is not None:
            c = self.num_coils
            if y.ndim < 2 or y.shape[1] != c:
                raise ValueError(f"y: expected {c} coils along dimension 1 ((B, {c}, H, W) or (B, {c}, K)) to "
                                 f"match the {c}x{c} covariance, found shape {tuple(y.shape)}")
        gen = make_generator(seed)
        real_dtype = torch.float64 if y.dtype == torch.complex128 else torch.float32
        re = torch.randn(y.shape, generator=gen, dtype=real_dtype, device=gen.device)
        im = torch.randn(y.shape, generator=gen, dtype=real_dtype, device=gen.device)
        z = torch.complex(re, im)
        if self._cholesky is not None:
            lower = self._cholesky.to(device=z.device, dtype=z.dtype)
            z = torch.einsum("cd,bd...->bc...", lower, z)
        n = (self.sigma / math.sqrt(2.0)) * z
        return y + n.to(device=y.device, dtype=y.dtype)


_MODELS = {cls.type_name: cls for cls in (GaussianNoise, TransmissionPoisson, ComplexGaussianNoise)}


def noise_from_dict(d: dict) -> NoiseModel:
    """Rebuild a noise model from :meth:`NoiseModel.to_dict` output, dispatching on ``d["type"]``."""
    if not isinstance(d, dict):
        raise TypeError(f"noise dict: expected a dict, found {type(d).__name__}")
    if "type" not in d:
        raise ValueError(f"noise dict: expected a 'type' key, found keys {sorted(d)}")
    kind = check_choice(_plain_str(d["type"]), "noise type", tuple(_MODELS))
    return _MODELS[kind].from_dict({**d, "type": kind})
