"""Upper confidence bounds on a risk in [0, 1] from n calibration losses (Bates, Angelopoulos et al., RCPS, 2021).

For losses ``L_1..L_n`` in ``[0, 1]`` with mean ``R`` and empirical mean ``r``:

* Hoeffding: ``P(r <= t) <= exp(-n h(t, R))`` for ``t <= R``, with ``h(a, b) = a log(a/b) + (1-a) log((1-a)/(1-b))``;
* Bentkus: ``P(r <= t) <= e P(Binomial(n, R) <= ceil(n t))``;
* Hoeffding-Bentkus (HB): the smaller of the two. ``hb_p_value(r, n, R)`` is the p-value of the null
  hypothesis "the risk is at least R"; ``hb_upper_bound(r, n, delta)`` is the largest R it does not reject
  at level delta, so that ``P(R > hb_upper_bound) <= delta``;
* Waudby-Smith-Ramdas (WSR, RCPS Proposition 5): a betting martingale over the losses in their order,
  tighter when the losses vary little.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import stats

from ..errors import ArgumentError

__all__ = ["hoeffding_p_value", "bentkus_p_value", "hb_p_value", "hb_upper_bound", "wsr_upper_bound",
           "minimum_calibration_size", "BOUNDS"]

BOUNDS = ("hb", "wsr")


def _check_level(value, name: str, *, open_low: bool = True) -> float:
    value = float(value)
    if not (0 < value < 1 if open_low else 0 <= value <= 1):
        interval = "(0, 1)" if open_low else "[0, 1]"
        raise ArgumentError(f"{name}: expected a number in {interval}, found {value!r}")
    return value


def _check_n(n) -> int:
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ArgumentError(f"n: expected a positive integer (calibration samples), found {n!r}")
    return int(n)


def _kl(a: float, b: float) -> float:
    """``h(a, b)``, the Kullback-Leibler divergence of Bernoulli(a) from Bernoulli(b), with ``0 log 0 = 0``."""
    total = 0.0
    if a > 0:
        total += a * math.log(a / b)
    if a < 1:
        total += (1 - a) * math.log((1 - a) / (1 - b))
    return total


def hoeffding_p_value(risk_hat: float, n: int, risk: float) -> float:
    """Hoeffding's p-value of "the risk is at least ``risk``" after seeing empirical risk ``risk_hat``."""
    risk_hat, n, risk = _check_level(risk_hat, "risk_hat", open_low=False), _check_n(n), _check_level(risk, "risk")
    return math.exp(-n * _kl(min(risk_hat, risk), risk))


def bentkus_p_value(risk_hat: float, n: int, risk: float) -> float:
    """Bentkus' p-value: ``e P(Binomial(n, risk) <= ceil(n risk_hat))`` (at most 1)."""
    risk_hat, n, risk = _check_level(risk_hat, "risk_hat", open_low=False), _check_n(n), _check_level(risk, "risk")
    successes = math.ceil(n * risk_hat - 1e-9)  # n * (k / n) may round to just above k
    return min(1.0, math.e * float(stats.binom.cdf(successes, n, risk)))


def hb_p_value(risk_hat: float, n: int, risk: float) -> float:
    """The Hoeffding-Bentkus p-value: the smaller of :func:`hoeffding_p_value` and :func:`bentkus_p_value`."""
    return min(hoeffding_p_value(risk_hat, n, risk), bentkus_p_value(risk_hat, n, risk))


def hb_upper_bound(risk_hat: float, n: int, delta: float, *, tolerance: float = 1e-7) -> float:
    """The largest risk that the HB p-value does not reject at level ``delta`` (bisection; the p-value falls as
    the hypothesised risk grows): with probability at least ``1 - delta`` the risk is below it."""
    risk_hat, delta = _check_level(risk_hat, "risk_hat", open_low=False), _check_level(delta, "delta")
    low, high = risk_hat, 1.0
    if hb_p_value(risk_hat, n, max(low, 1e-12)) < delta:
        return low
    while high - low > tolerance:
        middle = 0.5 * (low + high)
        if middle <= 0 or hb_p_value(risk_hat, n, middle) >= delta:
            low = middle
        else:
            high = middle
    return high


def wsr_upper_bound(losses, delta: float, *, grid: int = 2000) -> float:
    """The Waudby-Smith-Ramdas upper confidence bound on the mean of ``losses`` (in [0, 1], in their order).

    ``mu_i = (1/2 + sum_{j<=i} L_j) / (1 + i)``, ``s2_i = (1/4 + sum_{j<=i} (L_j - mu_j)^2) / (1 + i)``,
    ``nu_i = min(1, sqrt(2 log(1/delta) / (n s2_{i-1})))``, ``K_i(R) = prod_{j<=i} (1 - nu_j (L_j - R))``: a
    wealth that grows when the losses fall below R. The bound is the smallest R on a grid of ``grid`` steps
    with ``max_i K_i(R) > 1/delta`` (a mean that large is rejected), rounded up to the grid.
    """
    x = np.asarray(losses, dtype=np.float64).ravel()
    delta = _check_level(delta, "delta")
    if x.size == 0 or not np.all(np.isfinite(x)) or x.min() < 0 or x.max() > 1:
        raise ArgumentError(f"losses: expected finite values in [0, 1], found {x.size} values"
                            + (f" from {x.min():g} to {x.max():g}" if x.size and np.all(np.isfinite(x)) else ""))
    n = x.size
    counts = np.arange(1, n + 1)
    mu = (0.5 + np.cumsum(x)) / (1 + counts)
    s2 = (0.25 + np.cumsum((x - mu) ** 2)) / (1 + counts)
    s2_before = np.concatenate([[0.25], s2[:-1]])
    nu = np.minimum(1.0, np.sqrt(2 * math.log(1 / delta) / (n * s2_before)))
    candidates = np.linspace(0.0, 1.0, grid + 1)
    with np.errstate(divide="ignore"):
        log_k = np.cumsum(np.log1p(-nu[None, :] * (x[None, :] - candidates[:, None])), axis=1)
    rejected = np.nonzero(log_k.max(axis=1) > math.log(1 / delta))[0]  # "the mean is R": R too large
    return float(candidates[rejected[0]]) if rejected.size else 1.0


def minimum_calibration_size(alpha: float, delta: float, bound: str = "hb") -> int:
    """The smallest calibration set on which a perfect empirical risk of 0 certifies a risk below ``alpha`` at
    level ``delta``: with HB, ``(1 - alpha)^n < delta`` (Hoeffding's term, the smaller at zero risk), i.e.
    ``n > log(delta) / log(1 - alpha)``, 22 for alpha = delta = 0.1; with WSR, the first n whose bound on n zero
    losses is below alpha. Fewer samples cannot give the guarantee, whatever the model."""
    alpha, delta = _check_level(alpha, "alpha"), _check_level(delta, "delta")
    if bound not in BOUNDS:
        raise ArgumentError(f"bound: expected one of {', '.join(BOUNDS)}, found {bound!r}")
    n = 1
    if bound == "hb":
        while hb_p_value(0.0, n, alpha) >= delta:
            n += 1
        return n
    while wsr_upper_bound(np.zeros(n), delta) >= alpha:
        n += 1
    return n
