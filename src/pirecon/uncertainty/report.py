"""How calibrated intervals behave on held-out data: statistics over random splits, and their figures.

:func:`split_statistics` pools held-out images (calibration and test files alike), draws random
calibration/test splits, calibrates on each calibration part and measures the test part: the fraction of
splits whose test risk exceeds alpha (the guarantee says at most delta), the mean risk and the mean width.
The figures (PNG, matplotlib): a violin of the test risks over the splits with alpha marked
(:func:`risk_violin`), a reliability diagram of nominal against observed coverage (:func:`reliability_diagram`),
the sparsification curve against its oracle (:func:`sparsification_figure`) and, for a few test images, the
truth, the reconstruction, |error|, the interval width and the pixels outside (:func:`examples_figure`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import PireconUserError
from .calibration import group_splits, rcps

__all__ = ["split_statistics", "risk_violin", "reliability_diagram", "sparsification_figure", "examples_figure"]


def split_statistics(losses: np.ndarray, widths: np.ndarray, lambdas, *, alpha: float = 0.1, delta: float = 0.1,
                     splits: int = 100, calibration_fraction: float = 0.5, groups=None, bound: str = "hb",
                     seed: int = 0) -> dict:
    """Calibrate and test on ``splits`` random splits of held-out images.

    ``losses``: ``(n, L)`` miscoverage curves (:func:`pirecon.uncertainty.miscoverage_curves`); ``widths``:
    ``(n,)`` mean interval width of each image at scale 1 (the width at scale ``lambda`` is ``lambda`` times it);
    ``groups``: the volume or patient of each image (default: each image its own). Returns ``risks``, ``widths``
    and ``lambda_hats`` per split, ``violation_fraction`` (test risk > alpha), ``mean_risk``, ``mean_width``, and
    ``abstentions``: splits whose calibration part certifies no scale of the grid (RCPS then offers no finite
    interval; they are left out of the other statistics).
    """
    grid = np.asarray(lambdas, dtype=np.float64)
    groups = np.arange(len(losses)) if groups is None else np.asarray(groups)
    risks, mean_widths, lambda_hats, abstentions = [], [], [], 0
    for calibration, test in group_splits(groups, calibration_fraction, splits, seed):
        try:
            result = rcps(losses[calibration], grid, alpha, delta, bound)
        except PireconUserError:
            abstentions += 1
            continue
        k = int(np.searchsorted(grid, result.lambda_hat))
        risks.append(float(losses[test, k].mean()))
        mean_widths.append(float(result.lambda_hat * widths[test].mean()))
        lambda_hats.append(result.lambda_hat)
    risks_array = np.asarray(risks)
    feasible = risks_array.size > 0
    return {"risks": risks_array, "widths": np.asarray(mean_widths), "lambda_hats": np.asarray(lambda_hats),
            "violation_fraction": float((risks_array > alpha).mean()) if feasible else float("nan"),
            "mean_risk": float(risks_array.mean()) if feasible else float("nan"),
            "mean_width": float(np.mean(mean_widths)) if feasible else float("nan"), "abstentions": abstentions,
            "alpha": alpha, "delta": delta, "splits": splits}


def _save(fig, path) -> Path:
    from .._atomic import atomic_path

    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=120, bbox_inches="tight", format="png")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return path


def risk_violin(risks: dict[str, np.ndarray], alpha: float, path, title: str = "") -> Path:
    """Violins of the test risk over the splits, one per method, with ``alpha`` as a dashed line."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(1.6 + 1.4 * len(risks), 4))
    names = list(risks)
    ax.violinplot([risks[name] for name in names], showmedians=True)
    ax.axhline(alpha, color="tab:red", linestyle="--", label=f"alpha = {alpha:g}")
    ax.set_xticks(range(1, len(names) + 1), names, rotation=20)
    ax.set_ylabel("test risk (fraction of pixels outside)")
    ax.set_title(title or "risk over random calibration/test splits", fontsize=10)
    ax.legend(loc="upper right")
    return _save(fig, path)


def reliability_diagram(nominal: np.ndarray, observed: np.ndarray, path, title: str = "") -> Path:
    """Observed test coverage against the nominal coverage ``1 - alpha`` each calibration aimed at."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4.2, 4.2))
    ax.plot([0, 1], [0, 1], color="0.6", linestyle=":", label="ideal")
    ax.plot(nominal, observed, marker="o", label="calibrated intervals")
    ax.set_xlabel("nominal coverage 1 - alpha")
    ax.set_ylabel("observed coverage on test images")
    low = float(min(np.min(nominal), np.min(observed))) - 0.05
    ax.set_xlim(low, 1.0)
    ax.set_ylim(low, 1.0)
    ax.set_title(title or "reliability", fontsize=10)
    ax.legend(loc="lower right")
    return _save(fig, path)


def sparsification_figure(fractions: np.ndarray, curve: np.ndarray, oracle: np.ndarray, path, ause: float) -> Path:
    """The error left after removing the most uncertain pixels, against the oracle; AUSE in the title."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4.8, 4))
    ax.plot(fractions, curve, label="by interval width")
    ax.plot(fractions, oracle, linestyle="--", label="oracle (by |error|)")
    ax.fill_between(fractions, oracle, curve, alpha=0.2)
    ax.set_xlabel("fraction of pixels removed")
    ax.set_ylabel("mean |error| of the rest (relative)")
    ax.set_title(f"sparsification, AUSE {ause:.3f}", fontsize=10)
    ax.legend()
    return _save(fig, path)


def examples_figure(truth, interval, path, indices=(0, 1, 2)) -> Path:
    """Rows of test images: truth, reconstruction (the interval's centre), |error|, width, pixels outside."""
    import matplotlib.pyplot as plt

    indices = [i for i in indices if i < truth.shape[0]]
    fig, axes = plt.subplots(len(indices), 5, figsize=(17, 3.4 * len(indices)), squeeze=False,
                             constrained_layout=True)
    for row, i in enumerate(indices):
        t, c = truth[i, 0].numpy(), interval.center[i, 0].numpy()
        lo, up = interval.lower[i, 0].numpy(), interval.upper[i, 0].numpy()
        outside = (t < lo) | (t > up)
        panels = [(t, "truth", "gray"), (c, "reconstruction", "gray"), (np.abs(c - t), "|error|", "magma"),
                  (up - lo, "interval width", "magma"), (outside, f"outside: {outside.mean():.1%} of pixels", "Reds")]
        for ax, (image, title, cmap) in zip(axes[row], panels):
            limits = {"gray": {"vmin": t.min(), "vmax": t.max()}, "Reds": {"vmin": 0, "vmax": 1}}.get(cmap, {})
            shown = ax.imshow(image, cmap=cmap, interpolation="nearest", **limits)
            ax.set_title(title, fontsize=10)
            ax.set_xticks([])
            ax.set_yticks([])
            fig.colorbar(shown, ax=ax, fraction=0.046, pad=0.04)
    return _save(fig, path)
