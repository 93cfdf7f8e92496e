"""Generate the tutorial notebooks in this directory from the cell lists below.

Each notebook is a ``(filename, cells)`` pair in ``NOTEBOOKS``; a cell is
``("markdown" | "code", source)``. Notebooks are written without outputs and
with deterministic cell ids, so regenerating an unchanged notebook leaves the
file byte for byte the same.

Usage::

    python notebooks/make_notebooks.py            # (re)write every notebook
    python notebooks/make_notebooks.py 01_ct_physics.ipynb
    python notebooks/make_notebooks.py --check    # exit 1 if a notebook is out of date
"""

from __future__ import annotations

import argparse
import sys
import textwrap
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

HERE = Path(__file__).resolve().parent


def md(source: str) -> tuple[str, str]:
    return ("markdown", source)


def code(source: str) -> tuple[str, str]:
    return ("code", source)


# ---------------------------------------------------------------------------
# 01: CT physics
# ---------------------------------------------------------------------------

CT_PHYSICS = [
    md("""
    # 01 · CT physics: geometry, ray transform, noise, filtered back-projection

    The forward model of (parallel-beam) CT is the ray transform

    $$(A\\mu)(\\theta, s) = \\int_{\\mathbb{R}} \\mu\\big(s\\,\\omega_\\theta + t\\,\\omega_\\theta^\\perp\\big)\\,dt,
    \\qquad \\omega_\\theta = (\\cos\\theta, \\sin\\theta),$$

    the integral of the attenuation coefficient $\\mu$ (units 1/mm) along the line at angle $\\theta$ and
    signed distance $s$ (mm) from the origin. $A\\mu$ is dimensionless. In `pirecon`:

    * a **geometry** (`ParallelBeam2D`, `FanBeam2D`) fixes the image grid and the sampled lines, all in millimetres;
    * `RayTransform(geometry)` is the discretised $A$ acting on torch tensors:
      images `(B, C, H, W)` $\\to$ sinograms `(B, C, angles, detectors)`, with adjoint `A.T`;
    * `fbp` inverts it approximately, `pirecon.noise` simulates measurement noise.

    Everything below runs on the CPU in a few seconds.
    """),
    code("""
    import os
    import time
    from pathlib import Path

    import matplotlib.pyplot as plt
    import numpy as np
    import torch

    from pirecon import adjoint_test, metrics
    from pirecon.ct import FILTERS, FanBeam2D, ParallelBeam2D, RayTransform, fbp, lpd_ellipses_geometry
    from pirecon.noise import GaussianNoise, TransmissionPoisson
    from pirecon.phantoms import shepp_logan

    torch.manual_seed(0)
    OUT = os.environ.get("PIRECON_NOTEBOOK_OUT")  # directory for figures; nothing is saved when unset


    def psnr(x, reference):
        \"\"\"PSNR in dB of one image, with the reference's range max - min as peak (pirecon.metrics).\"\"\"
        return float(metrics.psnr(x, reference)[0])


    def save(fig, name):
        if OUT:
            Path(OUT).mkdir(parents=True, exist_ok=True)
            fig.savefig(Path(OUT) / name, dpi=110, bbox_inches="tight")
    """),
    md("""
    ## 1. Geometries

    `lpd_ellipses_geometry()` is the protocol of Adler & Öktem's learned primal-dual paper:
    a 128×128 image of 1 mm pixels on $[-64, 64]^2$ mm, 30 angles at the midpoints of
    $[0, \\pi)$ cut into 30 cells, and 183 detector bins spanning the image diagonal.
    A custom geometry takes the image shape, the pixel size in mm and the angles (or their number,
    equispaced on $[0, \\pi)$); the detector defaults to Nyquist sampling of the image diagonal.
    """),
    code("""
    lpd = lpd_ellipses_geometry()
    custom = ParallelBeam2D((128, 128), pixel_size=0.5, num_angles=180)  # 64 mm field of view, 180 angles

    for name, g in [("LPD ellipses", lpd), ("custom", custom)]:
        print(f"{name:>12}: {g}")
        print(f"{'':>12}  image extent {g.image_extent} mm, sinogram shape {g.sinogram_shape}, "
              f"angles {np.degrees(g.angles[0]):.1f}..{np.degrees(g.angles[-1]):.1f} deg")
    """),
    md("""
    ## 2. Phantom and ray transform

    `shepp_logan((H, W))` is the modified (high-contrast) Shepp-Logan phantom on $[-1, 1]^2$,
    sampled at pixel centres, shape `(1, 1, H, W)`, values in $[0, 1]$; row 0 is the top of the head.
    The phantom lives on the normalised square, so on both geometries it fills the field of view,
    whatever its size in mm.

    The `sparse` backend assembles the Joseph system matrix once per geometry (cached on disk, see
    `PIRECON_CACHE_DIR`) and applies it as a sparse matrix product. Since $A$ integrates over
    lengths in mm, halving the pixel size halves the line integrals of the same pixel array.
    """),
    code("""
    x = shepp_logan((128, 128), dtype=torch.float64)   # (1, 1, 128, 128), dimensionless values in [0, 1]
    A = RayTransform(lpd, backend="sparse")
    A_custom = RayTransform(custom, backend="sparse")
    print(A)

    y = A(x)                # (1, 1, 30, 183)
    y_custom = A_custom(x)  # (1, 1, 180, 183)
    print("phantom", tuple(x.shape), "-> sinogram", tuple(y.shape))
    print(f"max line integral: {y.max():.2f} (1 mm pixels), {y_custom.max():.2f} (0.5 mm pixels)")
    """),
    md("""
    ## 3. The adjoint and the operator norm

    `A.T` is the exact transpose of the discretised $A$, with respect to the Euclidean inner products
    of pixel and sinogram arrays. `adjoint_test` draws random $x, y$ and returns
    $|\\langle Ax, y\\rangle - \\langle x, A^T y\\rangle| / \\max(|\\langle Ax, y\\rangle|, |\\langle x, A^T y\\rangle|)$,
    which should be at rounding level. (Random $x, y$ make $\\langle Ax, y\\rangle$ a sum with much cancellation,
    $|\\langle Ax, y\\rangle| \\ll \\|Ax\\|\\,\\|y\\|$, so expect $10^{-16}$ to $10^{-13}$ in float64.)

    `A.opnorm()` estimates $\\|A\\|_2$ by power iteration on $A^TA$. Its square is the Lipschitz
    constant of $\\nabla \\tfrac12\\|Ax - y\\|^2 = A^T(Ax - y)$, i.e. it sets the step size of gradient
    methods (Landweber converges for steps below $2/\\|A\\|^2$).
    """),
    code("""
    print(f"adjoint test (sparse, float64): {adjoint_test(A):.2e}")
    norm = A.opnorm()
    print(f"||A||_2 = {norm:.3f}   (so 1/||A||^2 = {1 / norm**2:.2e})")
    print(f"||A_custom||_2 = {A_custom.opnorm():.3f}")
    """),
    md("""
    ## 4. Noise

    **Gaussian.** The LPD-ellipses protocol adds white Gaussian noise with standard deviation 5% of
    the mean absolute value of each clean sinogram: `GaussianNoise(relative=0.05)`.

    **Transmission Poisson.** Physically, a detector bin counts photons,
    $N \\sim \\mathrm{Poisson}(I_0 e^{-(A\\mu)})$ (Beer-Lambert), and the data are the post-log values
    $-\\log(N / I_0)$. This only makes sense when $A\\mu$ is dimensionless, so the phantom must first be
    given physical units: we take $\\mu = 0.02\\,\\text{mm}^{-1} \\times$ phantom (water and soft tissue
    attenuate about $0.02$/mm at 60–70 keV), giving line integrals up to about 0.7.
    With $I_0$ photons per bin, the post-log noise has variance about $e^{A\\mu}/I_0$: largest
    behind the most attenuating rays.
    """),
    code("""
    y_gauss = GaussianNoise(relative=0.05)(y, seed=1)

    MU_WATER = 0.02                # 1/mm
    mu = MU_WATER * x              # attenuation in 1/mm
    line_integrals = A(mu)         # dimensionless
    poisson = TransmissionPoisson(photon_count=1e4)
    y_poisson = poisson(line_integrals, seed=2)   # post-log data, dimensionless

    print(f"line integrals of mu: max {line_integrals.max():.3f}, "
          f"detected fraction of photons exp(-max) = {torch.exp(-line_integrals.max()):.2f}")
    rel = lambda a, b: float(torch.linalg.vector_norm(a - b) / torch.linalg.vector_norm(b))
    # 5% of the mean |y| is less than 5% in the l2 sense, since the rms of y exceeds its mean
    print(f"||noise|| / ||clean||: Gaussian {rel(y_gauss, y):.3f}, Poisson (I0=1e4) {rel(y_poisson, line_integrals):.3f}")
    """),
    md("""
    ## 5. Filtered back-projection

    For angles covering $[0, \\pi)$, $\\mu = A^\\#\\,\\mathcal{F}^{-1}|\\nu|\\,\\mathcal{F}\\,A\\mu$, with $\\mathcal{F}$ the
    Fourier transform along $s$ ($\\nu$ in cycles/mm) and $A^\\# g(x) = \\int_0^\\pi g(\\theta, x\\cdot\\omega_\\theta)\\,d\\theta$
    the back-projection (a multiple of $A^T$ once discretised). `fbp(y, A, filter=...)` applies
    the ramp filter $|\\nu|$ times a window along the detector and back-projects with `A`'s backend,
    scaled so that `fbp(A(x), A) ≈ x`. Ram-Lak (no window) is the sharpest and amplifies noise most;
    Hann damps the high frequencies. Available filters: `FILTERS`.
    With only 30 angles streak artefacts dominate; the custom 180-angle geometry shows the
    difference. FBP of post-log Poisson data is an attenuation image in 1/mm, compared with $\\mu$.
    PSNR uses the reference's range $\\max - \\min$ as peak; it is dominated by the bright rim of the
    skull, so once streaks and noise are small (180 angles) the smoother Hann window *loses* dB to
    Ram-Lak by blurring that edge.
    """),
    code("""
    print("filters:", FILTERS)
    recon = {}
    for f in ("ram-lak", "hann"):
        recon["clean", f] = fbp(y, A, filter=f)
        recon["gauss", f] = fbp(y_gauss, A, filter=f)
        recon["poisson", f] = fbp(y_poisson, A, filter=f)   # in 1/mm

    y_custom_gauss = GaussianNoise(relative=0.05)(y_custom, seed=1)
    print(f"{'PSNR [dB]':>34} {'ram-lak':>8} {'hann':>8}")
    for label, key in [("30 angles, clean", "clean"), ("30 angles, 5% Gaussian", "gauss")]:
        print(f"{label:>34} " + " ".join(f"{psnr(recon[key, f], x):8.2f}" for f in ("ram-lak", "hann")))
    print(f"{'30 angles, Poisson I0=1e4 (mu)':>34} "
          + " ".join(f"{psnr(recon['poisson', f], mu):8.2f}" for f in ("ram-lak", "hann")))
    print(f"{'180 angles (custom), 5% Gaussian':>34} "
          + " ".join(f"{psnr(fbp(y_custom_gauss, A_custom, filter=f), x):8.2f}" for f in ("ram-lak", "hann")))
    """),
    md("""
    ## 6. Backends

    The same geometry can be evaluated by ASTRA's CPU projector (`backend="astra"`, Joseph-type
    `linear` projector, float32 arithmetic) or through ODL (`backend="odl"`). Both `sparse` and `astra`
    use Joseph's interpolation, but their matrix entries are not bit-identical (ASTRA works in float32),
    so the two operators agree to about $10^{-4}$ relative, not to float64 rounding. ASTRA's adjoint
    test reflects float32 inner products, amplified by the cancellation noted in section 3.
    """),
    code("""
    A_astra = RayTransform(lpd, backend="astra")
    r = torch.randn(1, 1, *lpd.sinogram_shape, dtype=torch.float64)
    forward_diff = rel(A_astra(x), A(x))
    adjoint_diff = rel(A_astra.T(r), A.T(r))
    print(f"sparse vs astra, ||A_astra x - A_sparse x|| / ||A_sparse x||       = {forward_diff:.2e}")
    print(f"sparse vs astra, ||A_astra^T r - A_sparse^T r|| / ||A_sparse^T r|| = {adjoint_diff:.2e}")
    print(f"adjoint test (astra, float32 inside): {adjoint_test(A_astra):.2e}")

    for op in (A, A_astra):
        start = time.perf_counter()
        for _ in range(10):
            op(x)
        print(f"{op.backend:>6}: {1e3 * (time.perf_counter() - start) / 10:.2f} ms per forward projection")
    """),
    md("""
    ## 7. Figure

    Top: phantom, clean sinogram, sinogram with 5% Gaussian noise, post-log Poisson sinogram (angles
    down, detector bins across). Bottom: FBP of the Gaussian data with Ram-Lak and Hann filters, Hann
    FBP of the Poisson data (attenuation in 1/mm), and the error of the Hann reconstruction.
    """),
    code("""
    def show(ax, img, title, label, **kw):
        im = ax.imshow(img[0, 0].numpy(), **kw)
        ax.set_title(title, fontsize=10)
        fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label=label)
        return im

    fig, axes = plt.subplots(2, 4, figsize=(17, 8), constrained_layout=True)
    image = dict(cmap="gray", vmin=0, vmax=1)
    sino = dict(cmap="gray", aspect="auto")
    show(axes[0, 0], x, "modified Shepp-Logan phantom", "a.u.", **image)
    show(axes[0, 1], y, "sinogram $Ax$ (30 angles)", "a.u. · mm", **sino)
    show(axes[0, 2], y_gauss, "+ 5% Gaussian noise", "a.u. · mm", **sino)
    show(axes[0, 3], y_poisson, "post-log Poisson, $\\\\mu = 0.02$/mm, $I_0 = 10^4$", "dimensionless", **sino)
    for f, ax in zip(("ram-lak", "hann"), axes[1, :2]):
        show(ax, recon["gauss", f], f"FBP {f}, Gaussian: {psnr(recon['gauss', f], x):.1f} dB", "a.u.", **image)
    show(axes[1, 2], recon["poisson", "hann"],
         f"FBP hann, Poisson: {psnr(recon['poisson', 'hann'], mu):.1f} dB", "1/mm",
         cmap="gray", vmin=0, vmax=MU_WATER)
    err = recon["gauss", "hann"] - x
    lim = float(err.abs().max())
    show(axes[1, 3], err, "error: FBP hann (Gaussian) − phantom", "a.u.", cmap="RdBu_r", vmin=-lim, vmax=lim)
    for ax in axes[0, 1:]:
        ax.set_xlabel("detector bin")
        ax.set_ylabel("angle index")
    for ax in (axes[0, 0], *axes[1]):
        ax.set_axis_off()
    save(fig, "01_ct_physics.png")
    """),
    md("""
    ## 8. Fan beam

    `FanBeam2D` models a point source at distance $R$ from the rotation centre and a flat detector at
    distance $D$ behind it, with angles on $[0, 2\\pi)$. The detector spacing defaults to the pixel size
    magnified by $(R + D)/R$. `fbp` rebins the data to a virtual detector through the centre and uses
    the weighted fan-beam formula (Kak & Slaney, ch. 3.4).
    """),
    code("""
    fan = FanBeam2D((128, 128), pixel_size=1.0, num_angles=360, source_distance=300.0, detector_distance=200.0)
    A_fan = RayTransform(fan, backend="sparse")
    print(fan)
    y_fan = GaussianNoise(relative=0.05)(A_fan(x), seed=3)
    x_fan = fbp(y_fan, A_fan, filter="hann")
    print(f"fan beam, 5% Gaussian noise, FBP hann: PSNR {psnr(x_fan, x):.2f} dB")
    print(f"adjoint test (fan, sparse): {adjoint_test(A_fan):.2e}")

    fig, axes = plt.subplots(1, 3, figsize=(14, 4), constrained_layout=True)
    show(axes[0], y_fan, "fan-beam sinogram (360 angles, noisy)", "a.u. · mm", cmap="gray", aspect="auto")
    axes[0].set_xlabel("detector bin")
    axes[0].set_ylabel("angle index")
    show(axes[1], x_fan, f"fan-beam FBP hann: {psnr(x_fan, x):.1f} dB", "a.u.", **image)
    err = x_fan - x
    lim = float(err.abs().max())
    show(axes[2], err, "error", "a.u.", cmap="RdBu_r", vmin=-lim, vmax=lim)
    for ax in axes[1:]:
        ax.set_axis_off()
    save(fig, "01_ct_physics_fan.png")
    """),
]


# ---------------------------------------------------------------------------
# Registry and writer
# ---------------------------------------------------------------------------

NOTEBOOKS: list[tuple[str, list[tuple[str, str]]]] = [
    ("01_ct_physics.ipynb", CT_PHYSICS),
]


def build(cells: list[tuple[str, str]]) -> nbformat.NotebookNode:
    """A notebook (no outputs, ids ``cell-00``, ``cell-01``, ...) from ``(kind, source)`` pairs."""
    nb = new_notebook()
    nb.metadata = {
        "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"},
        "language_info": {"name": "python"},
    }
    for i, (kind, source) in enumerate(cells):
        source = textwrap.dedent(source).strip("\n")
        if kind == "markdown":
            cell = new_markdown_cell(source)
        elif kind == "code":
            cell = new_code_cell(source)
        else:
            raise ValueError(f"cell {i}: expected kind 'markdown' or 'code', found {kind!r}")
        cell.id = f"cell-{i:02d}"
        nb.cells.append(cell)
    nbformat.validate(nb)
    return nb


def render(cells) -> str:
    return nbformat.writes(build(cells)) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("names", nargs="*", help="notebook file names to write (default: all)")
    parser.add_argument("--check", action="store_true", help="only check that the files are up to date")
    parser.add_argument("--outdir", type=Path, default=HERE, help="where to write (default: this directory)")
    args = parser.parse_args(argv)

    known = dict(NOTEBOOKS)
    unknown = [n for n in args.names if n not in known]
    if unknown:
        parser.error(f"unknown notebook(s) {unknown}; expected among {sorted(known)}")
    stale = []
    for name in args.names or list(known):
        path = args.outdir / name
        text = render(known[name])
        if args.check:
            if not path.exists() or path.read_text(encoding="utf-8") != text:
                stale.append(name)
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        print(f"wrote {path}")
    if stale:
        print(f"out of date: {', '.join(stale)}; run python {Path(__file__).name}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
