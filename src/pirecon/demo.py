"""The CT demo job: simulate LPD-ellipses data, reconstruct with FBP, write a report.

Data follow the LPD-ellipses protocol (docs/protocols.md): 128 x 128 images on
[-64, 64]^2 mm, 30 parallel-beam angles, 183 detectors, Gaussian noise with
std 5% of mean |data|. The test image is modified Shepp-Logan; random-ellipse
images of the seed's test split give mean scores. Every FBP filter is
evaluated; the best one is chosen on images of the seed's validation split
(never on the test images) and named in the report.

Output directory:
    metrics.csv, metrics.md   PSNR / SSIM per filter
    figure.png                truth, noisy sinogram, FBP (Ram-Lak, best filter), error map
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm.auto import tqdm

from ._atomic import atomic_path
from ._validation import split_seed
from .ct import FILTERS, RayTransform, fbp, lpd_ellipses_geometry
from .metrics import psnr, ssim
from .noise import GaussianNoise
from .phantoms import random_ellipses, shepp_logan

__all__ = ["run_ct_demo", "best_filter", "FilterScore"]


@dataclass(frozen=True)
class FilterScore:
    """Scores of one FBP filter: on Shepp-Logan and averaged over the random-ellipse images."""

    filter: str
    psnr_shepp_logan: float
    ssim_shepp_logan: float
    psnr_ellipses: float
    ssim_ellipses: float
    psnr_validation: float


def _table_markdown(scores: list[FilterScore], best: str, num_ellipses: int) -> str:
    lines = [
        f"| FBP filter | PSNR validation, mean of {NUM_VALIDATION} (dB) | PSNR Shepp-Logan (dB) | SSIM Shepp-Logan | "
        f"PSNR test ellipses, mean of {num_ellipses} (dB) | SSIM test ellipses |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for s in scores:
        name = f"**{s.filter}** (best)" if s.filter == best else s.filter
        lines.append(f"| {name} | {s.psnr_validation:.2f} | {s.psnr_shepp_logan:.2f} | {s.ssim_shepp_logan:.3f} | "
                     f"{s.psnr_ellipses:.2f} | {s.ssim_ellipses:.3f} |")
    return "\n".join(lines) + "\n"


def _figure(path: Path, truth, sinogram, ramlak, best_rec, best: str, scores: dict[str, FilterScore]) -> None:
    from matplotlib.figure import Figure  # no pyplot: leaves the caller's backend and figures alone

    fig = Figure(figsize=(20, 4.2), layout="constrained")
    axes = fig.subplots(1, 5)
    vmin, vmax = 0.0, float(truth.max())
    panels = [
        (truth, "ground truth (modified Shepp-Logan)", dict(cmap="gray", vmin=vmin, vmax=vmax)),
        (sinogram, "noisy sinogram (30 angles x 183 detectors)", dict(cmap="gray", aspect="auto")),
        (ramlak, f"FBP Ram-Lak: {scores['ram-lak'].psnr_shepp_logan:.2f} dB", dict(cmap="gray", vmin=vmin, vmax=vmax)),
        (best_rec, f"FBP {best}: {scores[best].psnr_shepp_logan:.2f} dB", dict(cmap="gray", vmin=vmin, vmax=vmax)),
        (best_rec - truth, f"error, FBP {best}", dict(cmap="RdBu_r", vmin=-0.5, vmax=0.5)),
    ]
    for ax, (image, title, kwargs) in zip(axes, panels):
        shown = ax.imshow(image.cpu().numpy(), **kwargs)
        ax.set_title(title)
        ax.set_xticks([])
        ax.set_yticks([])
        fig.colorbar(shown, ax=ax, shrink=0.8)
    axes[1].set_xlabel("detector")
    axes[1].set_ylabel("angle")
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")


NUM_VALIDATION = 10
"""Validation-split ellipse images on which the best filter is chosen."""


def best_filter(scores: list[FilterScore]) -> str:
    """The filter with the highest mean PSNR on the validation images (the test images play no part)."""
    return max(scores, key=lambda s: s.psnr_validation).filter


def run_ct_demo(out: str | Path, *, num_ellipses: int = 20, seed: int = 0, noise: float = 0.05,
                progress: bool = True) -> list[FilterScore]:
    """Simulate LPD-ellipses data, reconstruct with every FBP filter, write metrics and a figure to ``out``.

    Returns the scores, one per filter. ``noise`` is the Gaussian std relative to mean |data| (0: none).
    The random-ellipse images are the seed's test split; the best filter is chosen on
    ``NUM_VALIDATION`` images of its validation split (:func:`pirecon._validation.split_seed`).
    """
    out = Path(out)
    geometry = lpd_ellipses_geometry()
    A = RayTransform(geometry)
    test_seed, validation_seed = split_seed(seed, "test"), split_seed(seed, "validation")
    truth = torch.cat([shepp_logan(geometry.image_shape),
                       random_ellipses(geometry.image_shape, num_ellipses, seed=test_seed)])
    validation = random_ellipses(geometry.image_shape, NUM_VALIDATION, seed=validation_seed)
    with torch.no_grad():
        sinogram, validation_sinogram = A(truth), A(validation)
        if noise > 0:
            sinogram = GaussianNoise(relative=noise)(sinogram, seed=test_seed)
            validation_sinogram = GaussianNoise(relative=noise)(validation_sinogram, seed=validation_seed)
        scores, reconstructions = [], {}
        for name in tqdm(FILTERS, desc="FBP filters", disable=not progress):
            rec = fbp(sinogram, A, name)
            p, s = psnr(rec, truth), ssim(rec, truth)
            p_val = psnr(fbp(validation_sinogram, A, name), validation).mean()
            scores.append(FilterScore(name, float(p[0]), float(s[0]), float(p[1:].mean()), float(s[1:].mean()),
                                      float(p_val)))
            reconstructions[name] = rec[0, 0]
    best = best_filter(scores)

    with atomic_path(out / "metrics.csv") as tmp:
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        writer.writerow(["filter", "psnr_validation_db", "psnr_shepp_logan_db", "ssim_shepp_logan", "psnr_ellipses_db",
                         "ssim_ellipses"])
        for s in scores:
            writer.writerow([s.filter, f"{s.psnr_validation:.4f}", f"{s.psnr_shepp_logan:.4f}", f"{s.ssim_shepp_logan:.4f}",
                             f"{s.psnr_ellipses:.4f}", f"{s.ssim_ellipses:.4f}"])
        tmp.write_text(buffer.getvalue())
    header = (f"# pirecon CT demo\n\nLPD-ellipses protocol: {geometry!r}, Gaussian noise {noise:.0%} of mean |data|, "
              f"seed {seed}, operator backend `{A.backend}`.\nBest filter by mean PSNR on {NUM_VALIDATION} "
              f"validation images (not the test images below): **{best}**.\n\n")
    with atomic_path(out / "metrics.md") as tmp:
        tmp.write_text(header + _table_markdown(scores, best, num_ellipses) + "\n![figure](figure.png)\n")
    _figure(out / "figure.png", truth[0, 0], sinogram[0, 0], reconstructions["ram-lak"], reconstructions[best], best,
            {s.filter: s for s in scores})
    return scores
