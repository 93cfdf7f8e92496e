"""Uncertainty heads: wrap any ``model(y, physics)`` and fill ``Reconstruction.uncertainty`` with an
:class:`pirecon.uncertainty.Interval` about the image's magnitude.

* :class:`GaussianHead` (heteroscedastic): a CNN on the backbone's image and the classical starting image
  predicts a log-variance per pixel; trained with the Gaussian negative log-likelihood, or beta-NLL
  (Seitzer et al. 2022: the NLL of each pixel weighted by its stop-gradient variance to the power beta).
  Interval ``mean +- z std`` with ``z`` the two-sided normal quantile of ``1 - alpha``.
* :class:`QuantileHead`: the same CNN predicts the distances to the ``alpha/2`` and ``1 - alpha/2``
  quantiles (softplus, so the interval always contains the mean); trained with the pinball loss
  (im2im-uq's quantile regression head).
* :class:`MCDropoutHead`: dropout after every CNN block of the backbone, kept on at inference; ``samples``
  stochastic passes give a mean and a standard deviation (Gal & Ghahramani 2016).
* :class:`DeepEnsemble`: K independently trained members; the spread of their images (and, for Gaussian
  members, their mean variance) gives the interval, split into epistemic and aleatoric parts.
* :class:`ConstantWidthHead`: the same width at every pixel, the baseline every head must beat once both are
  calibrated.

Each head adds ``uncertainty_loss(reconstruction, target)`` to the reconstruction loss during training
(:class:`pirecon.training.ReconstructionModule` calls it); calibration (:mod:`pirecon.uncertainty.calibration`)
then scales the intervals to a guaranteed risk.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from .._validation import check_positive
from ..uncertainty import Interval
from .acceleration import cnn_blocks
from .layers import ConvBlock
from .physics_tools import initial_image
from .reconstruction import Reconstruction

__all__ = ["GaussianHead", "QuantileHead", "MCDropoutHead", "DeepEnsemble", "ConstantWidthHead", "pinball_loss", "gaussian_nll"]


def _backbone(model) -> nn.Module:
    from .registry import build_model

    return build_model(model, allow_import=False)


def _magnitude(x: torch.Tensor) -> torch.Tensor:
    return x.abs() if x.is_complex() else x


def _check_alpha(alpha: float) -> float:
    alpha = float(alpha)
    if not 0 < alpha < 1:
        raise ValueError(f"alpha: expected a miscoverage level in (0, 1), found {alpha!r}")
    return alpha


def _two_sided_quantile(alpha: float) -> float:
    """``z`` with ``P(|N(0, 1)| <= z) = 1 - alpha``: ``sqrt(2) erfinv(1 - alpha)`` (1.645 for alpha = 0.1)."""
    return math.sqrt(2) * torch.special.erfinv(torch.tensor(1 - alpha, dtype=torch.float64)).item()


def gaussian_nll(mean: torch.Tensor, log_variance: torch.Tensor, target: torch.Tensor, beta: float = 0.0):
    """Mean over pixels of ``0.5 (log s2 + (t - m)^2 / s2)``, each pixel weighted by ``stopgrad(s2)^beta``
    (beta-NLL; ``beta = 0`` is the plain Gaussian NLL)."""
    variance = log_variance.exp()
    nll = 0.5 * (log_variance + (target - mean) ** 2 / variance)
    if beta:
        nll = nll * variance.detach() ** beta
    return nll.mean()


def pinball_loss(prediction: torch.Tensor, target: torch.Tensor, quantile: float) -> torch.Tensor:
    """Mean pinball (quantile) loss ``max(q (t - p), (q - 1) (t - p))``, minimised by the ``q``-quantile."""
    difference = target - prediction
    return torch.maximum(quantile * difference, (quantile - 1) * difference).mean()


class _PixelHead(nn.Module):
    """A backbone and a small CNN from ``[|image|, |initial image|]`` to ``outputs`` channels per pixel."""

    def __init__(self, backbone, outputs: int, hidden: int, layers: int):
        super().__init__()
        self.backbone = _backbone(backbone)
        check_positive(hidden, "hidden", integer=True)
        self.net = ConvBlock(2, outputs, hidden=hidden, layers=layers)

    def _features(self, y, physics) -> tuple[Reconstruction, torch.Tensor, torch.Tensor]:
        reconstruction = self.backbone(y, physics)
        mean = _magnitude(reconstruction.image)
        with torch.no_grad():
            start = _magnitude(initial_image(y, physics)).to(mean.dtype)
        return reconstruction, mean, self.net(torch.cat([mean, start], dim=1))


class GaussianHead(_PixelHead):
    """Heteroscedastic Gaussian head around ``backbone`` (a model spec or module).

    Parameters
    ----------
    backbone : dict or nn.Module
    alpha : float
        The interval ``mean +- z std`` has nominal coverage ``1 - alpha`` (before calibration).
    beta : float
        0: Gaussian NLL; 0.5: beta-NLL (Seitzer et al. 2022).
    hidden, layers : the CNN's width and depth.
    """

    def __init__(self, backbone, alpha: float = 0.1, beta: float = 0.0, hidden: int = 16, layers: int = 3):
        super().__init__(backbone, 1, hidden, layers)
        self.alpha, self.beta = _check_alpha(alpha), float(beta)
        self.z = _two_sided_quantile(self.alpha)

    def forward(self, y, physics) -> Reconstruction:
        reconstruction, mean, log_variance = self._features(y, physics)
        std = (0.5 * log_variance.clamp(-20, 20)).exp()
        reconstruction.uncertainty = Interval(mean - self.z * std, mean + self.z * std, mean, "gaussian", std=std)
        return reconstruction

    def uncertainty_loss(self, reconstruction: Reconstruction, target: torch.Tensor) -> torch.Tensor:
        u = reconstruction.uncertainty
        return gaussian_nll(u.center, 2 * u.std.log(), _magnitude(target).to(u.center.dtype), self.beta)


class QuantileHead(_PixelHead):
    """Quantile-regression head: distances to the ``alpha/2`` and ``1 - alpha/2`` quantiles below and above the
    backbone's image, trained with the pinball loss."""

    def __init__(self, backbone, alpha: float = 0.1, hidden: int = 16, layers: int = 3):
        super().__init__(backbone, 2, hidden, layers)
        self.alpha = _check_alpha(alpha)

    def forward(self, y, physics) -> Reconstruction:
        reconstruction, mean, offsets = self._features(y, physics)
        below, above = F.softplus(offsets).chunk(2, dim=1)
        reconstruction.uncertainty = Interval(mean - below, mean + above, mean, "quantile")
        return reconstruction

    def uncertainty_loss(self, reconstruction: Reconstruction, target: torch.Tensor) -> torch.Tensor:
        u = reconstruction.uncertainty
        target = _magnitude(target).to(u.center.dtype)
        return pinball_loss(u.lower, target, self.alpha / 2) + pinball_loss(u.upper, target, 1 - self.alpha / 2)


class MCDropoutHead(nn.Module):
    """Monte Carlo dropout: ``Dropout`` (rate ``p``) after every CNN block of ``backbone``, on in training and at
    inference; ``samples`` passes give the mean and the standard deviation per pixel, and the interval
    ``mean +- z std``. With ``batched`` (and physics whose operator takes any batch, as CT's ray transform) the
    passes run as one batch of ``samples x B`` (memory for all of them at once); otherwise one after another."""

    def __init__(self, backbone, p: float = 0.1, samples: int = 8, alpha: float = 0.1, batched: bool = True):
        super().__init__()
        self.batched = bool(batched)
        self.backbone = _backbone(backbone)
        if not 0 < float(p) < 1:
            raise ValueError(f"p: expected a dropout rate in (0, 1), found {p!r}")
        self.p, self.samples = float(p), int(check_positive(samples, "samples", integer=True))
        self.alpha = _check_alpha(alpha)
        self.z = _two_sided_quantile(self.alpha)
        blocks = cnn_blocks(self.backbone)
        if not blocks:
            raise ValueError(f"backbone: expected CNN blocks (ConvBlock, UNet) to put dropout after, found none in "
                             f"{type(self.backbone).__name__}")
        for block in blocks:
            block.register_forward_hook(self._drop)

    def _drop(self, module, inputs, output):
        return F.dropout(output, self.p, training=True)

    def sample_images(self, y, physics) -> torch.Tensor:
        """The ``samples`` stochastic passes, magnitude images ``(S, B, 1, H, W)`` (one batch of ``S x B``
        where the operator allows)."""
        if self.batched and _shared_operator(physics):  # the T passes as one batch of T x B
            repeated = y.repeat(self.samples, *([1] * (y.ndim - 1)))
            return _magnitude(self.backbone(repeated, physics).image).unflatten(0, (self.samples, y.shape[0]))
        return torch.stack([_magnitude(self.backbone(y, physics).image) for _ in range(self.samples)])

    def forward(self, y, physics) -> Reconstruction:
        if self.training:  # training: one stochastic pass, the backbone's loss
            return self.backbone(y, physics)
        passes = self.sample_images(y, physics)
        mean, std = passes.mean(dim=0), passes.std(dim=0)
        return Reconstruction(mean, Interval(mean - self.z * std, mean + self.z * std, mean, "mc-dropout", std=std),
                              samples=passes)


def _shared_operator(physics) -> bool:
    """Whether ``physics`` applies to a batch of any size: not an MRI operator with per-slice maps or masks."""
    from ..mri import SenseOperator

    operator = physics.operator
    if not isinstance(operator, SenseOperator):
        return True
    return all(t is None or t.ndim < 4 or t.shape[0] == 1 for t in (operator.coil_maps, operator.mask))


class DeepEnsemble(nn.Module):
    """``K`` independently trained members (model specs or modules, e.g. K runs of one config combined by
    ``pirecon ensemble``): the mean of their images and the interval ``mean +- z std``.

    Members that are :class:`GaussianHead` s give the split of Lakshminarayanan et al. (2017): aleatoric variance
    = the mean of the members' variances, epistemic variance = the variance of their means, ``std`` the square
    root of the sum (``Interval.parts`` holds both standard deviations). Other members give the epistemic part
    alone.
    """

    def __init__(self, members: list, alpha: float = 0.1):
        super().__init__()
        if not isinstance(members, (list, tuple)) or len(members) < 2:
            raise ValueError(f"members: expected a list of at least 2 models, found {members!r}")
        self.members = nn.ModuleList(_backbone(m) for m in members)
        self.alpha = _check_alpha(alpha)
        self.z = _two_sided_quantile(self.alpha)

    def sample_images(self, y, physics) -> torch.Tensor:
        """The members' magnitude images ``(K, B, 1, H, W)``."""
        return torch.stack([_magnitude(member(y, physics).image) for member in self.members])

    def forward(self, y, physics) -> Reconstruction:
        outputs = [member(y, physics) for member in self.members]
        means = torch.stack([_magnitude(o.image) for o in outputs])
        mean = means.mean(dim=0)
        epistemic = means.var(dim=0, unbiased=False)
        stds = [o.uncertainty.std for o in outputs if isinstance(o.uncertainty, Interval)]
        aleatoric = torch.stack(stds).pow(2).mean(dim=0) if len(stds) == len(outputs) and all(
            s is not None for s in stds) else torch.zeros_like(mean)
        std = (aleatoric + epistemic).sqrt()
        parts = {"aleatoric_std": aleatoric.sqrt(), "epistemic_std": epistemic.sqrt()}
        return Reconstruction(mean, Interval(mean - self.z * std, mean + self.z * std, mean, "ensemble", std=std,
                                             parts=parts), samples=means)


class ConstantWidthHead(nn.Module):
    """The baseline: ``[mean - width/2, mean + width/2]`` at every pixel (calibration sets the scale)."""

    def __init__(self, backbone, width: float = 1.0):
        super().__init__()
        self.backbone = _backbone(backbone)
        self.width = float(check_positive(width, "width"))

    def forward(self, y, physics) -> Reconstruction:
        reconstruction = self.backbone(y, physics)
        mean = _magnitude(reconstruction.image)
        half = torch.full_like(mean, self.width / 2)
        reconstruction.uncertainty = Interval(mean - half, mean + half, mean, "constant")
        return reconstruction
