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


# Plot helpers shared by the notebooks that define them (each notebook stays self-contained).
SHOW_AND_SAVE = """\
    def show(ax, img, title, label="", **kw):
        img = img.detach().squeeze().numpy() if torch.is_tensor(img) else np.squeeze(img)
        im = ax.imshow(img, interpolation="nearest", **kw)
        ax.set_title(title, fontsize=10)
        ax.set_xticks([])
        ax.set_yticks([])
        ax.figure.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label=label)
        return im


    def save(fig, name):
        if OUT:
            Path(OUT).mkdir(parents=True, exist_ok=True)
            fig.savefig(Path(OUT) / name, dpi=110, bbox_inches="tight")
"""


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
# 02: MRI physics
# ---------------------------------------------------------------------------

MRI_PHYSICS = [
    md(r"""
    # 02 · MRI physics: Fourier sampling, coil sensitivities, SENSE, ESPIRiT, radial NUFFT

    An MR scanner measures Fourier coefficients of the (complex) transverse magnetisation $x$, each
    receive coil $c$ seeing $x$ weighted by its sensitivity $S_c$:

    $$y_c = M\,F\,(S_c\,x) + \varepsilon_c, \qquad c = 1, \dots, C.$$

    On a Cartesian grid $F$ is the 2D DFT and $M$ a diagonal 0/1 sampling mask. `pirecon` follows fastMRI:
    $F$ is `fft2c(x) = fftshift(fft2(ifftshift(x), norm="ortho"))`, the **centred orthonormal** DFT, with the
    zero frequency at index $(H/\!/2, W/\!/2)$; it is unitary, so $F^{-1} = F^H$ = `ifft2c`.

    Layouts (`pirecon.mri`): images `(B, 1, H, W)` complex64, coil maps `(C, H, W)` or `(B, C, H, W)`,
    k-space `(B, C, H, W)`, masks broadcasting to k-space. Line masks are `(B, 1, 1, W)`: the readout runs
    along $H$ (rows, always fully sampled), the phase encoding along $W$ (columns, undersampled).
    Everything below runs on the CPU in a few seconds.
    """),
    code(r"""
    import math
    import os
    from pathlib import Path

    import matplotlib.pyplot as plt
    import numpy as np
    import torch

    from pirecon import adjoint_test, metrics
    from pirecon.mri import (EquispacedMask, NUFFTOperator, RandomMask, SenseOperator, VariableDensityMask,
                             birdcage_maps, espirit_maps, fft2c, ifft2c, radial_trajectory, rss,
                             sense_adjoint, zero_filled)
    from pirecon.phantoms import shepp_logan

    torch.manual_seed(0)
    OUT = os.environ.get("PIRECON_NOTEBOOK_OUT")  # directory for figures; nothing is saved when unset
    H, W, C = 128, 128, 8


    def quality(img, ref):
        # (PSNR in dB, SSIM) of real images (B, 1, H, W); peak = range max - min of the reference (pirecon.metrics)
        return float(metrics.psnr(img, ref)[0]), float(metrics.ssim(img, ref)[0])


    def fit_scale(z, ref):
        # alpha * z with the complex alpha minimising ||alpha z - ref||_2, and alpha
        alpha = torch.vdot(z.flatten(), ref.flatten()) / torch.vdot(z.flatten(), z.flatten())
        return alpha * z, complex(alpha)


""" + SHOW_AND_SAVE + """

    PHASE = dict(cmap="twilight", vmin=-math.pi, vmax=math.pi)  # cyclic colour map for phases in rad
    """),
    md(r"""
    ## 1. A complex test image and the centred FFT

    MR images are complex: field inhomogeneity and the receive chain add a smooth phase. The test image is
    the modified Shepp-Logan phantom (magnitude in $[0, 1]$, row 0 at the top of the head) times
    $e^{i\varphi}$ with $\varphi$ a low-order polynomial on $[-1, 1]^2$. Unitarity of `fft2c` is Parseval's
    identity $\|Fx\| = \|x\|$; for an image with a slowly varying phase the largest coefficient is the zero
    frequency, at index $(H/\!/2, W/\!/2) = (64, 64)$.
    """),
    code(r"""
    magnitude = shepp_logan((H, W))                                # (1, 1, H, W) float32 in [0, 1]
    v = torch.linspace(-1, 1, H).view(H, 1)                        # vertical coordinate (down the rows)
    u = torch.linspace(-1, 1, W).view(1, W)                        # horizontal coordinate
    phi = (math.pi / 2) * (0.6 * u + 0.4 * v**2 - 0.3 * u * v)     # smooth phase, |phi| < 2.2 rad
    x = torch.polar(magnitude, phi.expand(1, 1, H, W).contiguous())  # complex64 (1, 1, H, W)
    ref = x.abs()                                                  # ground truth for the metrics

    k = fft2c(x)
    x64 = x.to(torch.complex128)
    print("x:", tuple(x.shape), x.dtype)
    print(f"Parseval  | ||F x|| / ||x|| - 1 | = {abs(float(fft2c(x64).norm() / x64.norm()) - 1):.1e} (float64)")
    print(f"inverse   max |F^H F x - x| = {float((ifft2c(k) - x).abs().max()):.1e} (float32)")
    print("largest |k| at index", tuple(int(i) for i in np.unravel_index(int(k.abs().argmax()), (H, W))))

    fig, axes = plt.subplots(1, 3, figsize=(14, 4), constrained_layout=True)
    show(axes[0], ref, "$|x|$ (Shepp-Logan)", "a.u.", cmap="gray", vmin=0, vmax=1)
    show(axes[1], torch.where(magnitude > 0, x.angle(), torch.nan), r"$\arg x$ on the object", "rad", **PHASE)
    show(axes[2], torch.log10(k.abs() + 1e-6), r"$\log_{10}|F x|$ (k-space, centred)", "", cmap="magma")
    save(fig, "02_mri_image.png")
    """),
    md(r"""
    ## 2. Sampling masks

    Scan time is proportional to the number of phase-encoding lines, so Cartesian acceleration skips columns.
    All masks keep a fully sampled low-frequency centre (the *autocalibration signal*, ACS):

    * `RandomMask(0.08, 4)` (fastMRI's `RandomMaskFunc`): `num_low = round(0.08 W) = 10` central lines, and
      each remaining line independently with probability $(W/4 - 10)/(W - 10)$: $W/4$ lines **on average**;
    * `EquispacedMask(0.08, 4)` (fastMRI's `EquispacedMaskFractionFunc`): the same centre plus lines at a spacing
      adjusted so that the total is $W/4$, from a random offset;
    * `VariableDensityMask(4)`: individual k-space points, a $24\times24$ calibration box plus points drawn with a
      Gaussian density, exactly $\mathrm{round}(HW/4)$ in all. (Point-wise masks model the two phase-encoding
      directions of a 3D scan; a 2D scan can only skip whole lines.)

    A mask function is called as `mask_fn(shape, batch_size=B, seed=...)` and returns
    `MaskSample(mask, num_low_frequencies, acceleration)`; sample $i$ depends only on `(seed, i)`.
    """),
    code(r"""
    mask_fns = {
        "random": RandomMask(center_fractions=0.08, accelerations=4),
        "equispaced": EquispacedMask(center_fractions=0.08, accelerations=4),
        "variable density": VariableDensityMask(acceleration=4, calibration_size=(24, 24), std=0.3),
    }
    samples = {name: fn((H, W), seed=0) for name, fn in mask_fns.items()}

    print(f"{'mask':>17} {'shape':>16} {'num_low':>8} {'nominal R':>10} {'sampled fraction':>17}")
    for name, s in samples.items():
        fraction = float(s.mask.expand(1, 1, H, W).mean())
        print(f"{name:>17} {str(tuple(s.mask.shape)):>16} {int(s.num_low_frequencies[0]):>8} "
              f"{float(s.acceleration[0]):>10.1f} {fraction:>17.4f}")

    fig, axes = plt.subplots(1, 3, figsize=(14, 4.4), constrained_layout=True)
    for ax, (name, s) in zip(axes, samples.items()):
        fraction = float(s.mask.expand(1, 1, H, W).mean())
        show(ax, s.mask.expand(1, 1, H, W), f"{name}: {fraction:.1%} sampled, ACS {int(s.num_low_frequencies[0])}",
             "", cmap="gray", vmin=0, vmax=1)
        ax.set_xlabel("column (phase encoding)")
        ax.set_ylabel("row (readout)")
    save(fig, "02_mri_masks.png")
    """),
    md(r"""
    ## 3. Coil sensitivities

    `birdcage_maps(C, (H, W))` simulates $C$ coils on a circle of radius 1.5 (in half fields of view) around the
    image: coil $j$ at angle $2\pi j / C$ counter-clockwise from the $+x$ axis (coil 0 on the right, coil 2 at the
    top for $C = 8$), magnitude $\propto 1/\text{distance}$, a phase turning once around the coil, and all maps
    divided by their root-sum-of-squares, so that $\sum_c |S_c|^2 = 1$ at every pixel.
    Fully sampled multi-coil k-space is then `fft2c(maps * x)`, shape `(1, C, H, W)`.
    """),
    code(r"""
    maps = birdcage_maps(C, (H, W))                # (C, H, W) complex64
    kspace = fft2c(maps * x)                       # (1, C, H, W): fully sampled multi-coil k-space
    coil_images = ifft2c(kspace)                   # = maps * x
    print("maps:", tuple(maps.shape), maps.dtype, "  k-space:", tuple(kspace.shape))
    print(f"max | sum_c |S_c|^2 - 1 | = {float(((maps.abs() ** 2).sum(0) - 1).abs().max()):.1e}")
    print(f"fully sampled RSS vs |x|: max difference {float((rss(coil_images) - ref).abs().max()):.1e}")

    shown = [0, 2, 4, 6]
    fig, axes = plt.subplots(3, 4, figsize=(15, 11), constrained_layout=True)
    for j, c in enumerate(shown):
        show(axes[0, j], maps[c].abs(), f"$|S_{c}|$", "", cmap="viridis", vmin=0, vmax=1)
        show(axes[1, j], maps[c].angle(), rf"$\arg S_{c}$", "rad", **PHASE)
        show(axes[2, j], coil_images[0, c].abs(), f"coil image $|S_{c}\\,x|$", "a.u.", cmap="gray", vmin=0)
    save(fig, "02_mri_coils.png")
    """),
    md(r"""
    ## 4. SENSE: the multi-coil forward operator

    `SenseOperator(maps, mask)` is $A: \mathbb{C}^{H\times W} \to \mathbb{C}^{C\times H\times W}$,

    $$A x = \big(M F (S_c x)\big)_{c=1}^C, \qquad A^H y = \sum_c \overline{S_c}\, F^H M y_c .$$

    Since $F$ is unitary, $M$ an orthogonal projection and $\sum_c |S_c|^2 = 1$,
    $A^H A = \sum_c \overline{S_c} F^H M F S_c \preceq I$: $\|A\|_2 \le 1$, with $A^H A = I$ (an isometry) when
    fully sampled. `adjoint_test` returns the relative mismatch of $\langle Ax, y\rangle$ and
    $\langle x, A^H y\rangle$ for random complex $x, y$ in float64.

    Two baselines from undersampled data: the **zero-filled root-sum-of-squares**
    $\sqrt{\sum_c |F^H M y_c|^2}$ (fastMRI's, `rss(zero_filled(y))`), which needs no maps but loses the phase,
    and the **SENSE adjoint** $A^H y$ (`sense_adjoint(y, maps, mask)`), the matched-filter coil combination.
    Both alias: with a 4x line mask, the image folds along $W$. Metrics compare magnitudes with $|x|$.
    """),
    code(r"""
    sample = samples["equispaced"]
    mask = sample.mask                            # (1, 1, 1, W)
    A = SenseOperator(maps, mask)
    y = A(x)                                      # (1, C, H, W), zero off the sampled lines
    print(A, ":", tuple(x.shape), "->", tuple(y.shape))
    print(f"forward: max |A x - M fft2c(S x)| = {float((y - mask * kspace).abs().max()):.1e}")
    explicit = (maps.conj() * ifft2c(mask * y)).sum(1, keepdim=True)
    print(f"adjoint: max |A^H y - sum_c conj(S_c) ifft2c(M y_c)| = {float((A.adjoint(y) - explicit).abs().max()):.1e}")
    print(f"adjoint test (float64): {adjoint_test(A):.1e}")

    print(f"||A||_2 (4x equispaced) = {A.opnorm():.4f}")
    A_full = SenseOperator(maps)                  # mask=None: fully sampled
    print(f"||A||_2 (fully sampled) = {A_full.opnorm():.4f},  max |A^H A x - x| = "
          f"{float((A_full.normal(x) - x).abs().max()):.1e}")

    print(f"\n{'mask':>17} {'zero-filled RSS':>22} {'SENSE adjoint':>22}")
    print(f"{'':>17} {'PSNR [dB]   SSIM':>22} {'PSNR [dB]   SSIM':>22}")
    baseline = {}
    for name, s in samples.items():
        y_s = SenseOperator(maps, s.mask)(x)
        zf = rss(zero_filled(y_s))                # (1, 1, H, W) real
        sa = sense_adjoint(y_s, maps, s.mask)     # (1, 1, H, W) complex
        baseline[name] = zf, sa
        (p1, s1), (p2, s2) = quality(zf, ref), quality(sa.abs(), ref)
        print(f"{name:>17} {p1:>12.2f} {s1:>8.3f} {p2:>13.2f} {s2:>8.3f}")
    zf, sa = baseline["equispaced"]
    """),
    md(r"""
    ## 5. ESPIRiT: coil maps from the data

    In practice the maps are unknown. ESPIRiT (Uecker et al. 2014) estimates them from the fully sampled ACS: the
    k-space patches of the calibration region span a low-dimensional subspace, the projection onto it is a
    convolution, and at each pixel the sensitivity vector $(S_c(r))_c$ is the eigenvector with eigenvalue 1 of
    that convolution's image-space matrix $G(r)$. Maps are zeroed where the top eigenvalue is below `crop = 0.95`,
    i.e. where there is no signal.

    The calibration region must be fully sampled: here 24 rows by the `num_low = 10` central columns of the
    masked k-space (`espirit_maps` does not check this). Maps are determined only up to a per-pixel phase
    ($S e^{i\theta}$ and $x e^{-i\theta}$ give the same data; ESPIRiT makes coil 0 real), so we compare
    $|\langle S(r), \hat S(r)\rangle| = |\sum_c \overline{S_c(r)}\,\hat S_c(r)| \in [0, 1]$, which is 1 exactly when
    the two unit vectors agree up to a phase.
    """),
    code(r"""
    acs = (24, int(sample.num_low_frequencies[0]))
    maps_est, eigenvalue = espirit_maps(y, calibration_width=acs, return_eigenvalues=True)  # (1, C, H, W), (1, H, W)
    inner = (maps.conj() * maps_est[0]).sum(0)    # <S(r), S_est(r)>, (H, W) complex
    support = maps_est[0].abs().sum(0) > 0        # where ESPIRiT kept the maps
    on_object = magnitude[0, 0] > 0
    print(f"calibration region {acs}: maps kept on {float(support.float().mean()):.1%} of the pixels "
          f"(the object covers {float(on_object.float().mean()):.1%})")
    print(f"|<S_true, S_est>|: median {float(inner.abs()[support].median()):.6f} on the kept pixels, "
          f"median {float(inner.abs()[on_object].median()):.6f} and min {float(inner.abs()[on_object].min()):.6f} "
          f"on the object")

    aligned = maps_est[0] * torch.sgn(inner).conj()   # remove the per-pixel phase
    err = torch.linalg.vector_norm(aligned - maps * support) / torch.linalg.vector_norm(maps * support)
    print(f"after phase alignment: ||S_est - S|| / ||S|| on the kept pixels = {float(err):.1e}")
    # the ESPIRiT maps vanish off the support, which also removes the aliasing there
    print(f"SENSE adjoint with the ESPIRiT maps: PSNR {quality(sense_adjoint(y, maps_est, mask).abs(), ref)[0]:.2f} dB "
          f"(true maps {quality(sa.abs(), ref)[0]:.2f} dB)")

    # pitfall: a 24 x 24 calibration square includes 14 unsampled (zero) columns; the eigenvalue then no longer
    # separates object from background, and the maps are less accurate
    bad = espirit_maps(y, calibration_width=24)
    bad_inner = (maps.conj() * bad[0]).sum(0).abs()
    print(f"calibration 24 x 24 (partly unsampled): maps kept on {float((bad[0].abs().sum(0) > 0).float().mean()):.1%} "
          f"of the pixels; |<S_true, S_est>| on the object: median {float(bad_inner[on_object].median()):.6f}, "
          f"min {float(bad_inner[on_object].min()):.6f}")

    fig, axes = plt.subplots(2, 5, figsize=(19, 7.5), constrained_layout=True)
    for j, c in enumerate(shown):
        show(axes[0, j], maps_est[0, c].abs(), rf"ESPIRiT $|\hat S_{c}|$", "", cmap="viridis", vmin=0, vmax=1)
        show(axes[1, j], torch.where(support, aligned[c].angle(), torch.nan),
             rf"$\arg \hat S_{c}$ (phase-aligned to $S$)", "rad", **PHASE)
    show(axes[0, 4], eigenvalue[0], "top eigenvalue of $G(r)$", "", cmap="viridis", vmin=0, vmax=1)
    show(axes[1, 4], torch.where(support, inner.abs(), torch.nan), r"$|\langle S, \hat S\rangle|$", "",
         cmap="viridis", vmin=0.99, vmax=1)
    save(fig, "02_mri_espirit.png")
    """),
    md(r"""
    ## 6. Non-Cartesian sampling: golden-angle radial and the NUFFT

    A radial trajectory samples $n$ points on each of $S$ diameters of k-space. `radial_trajectory(S, n)` returns
    `(B, 2, S n)` in radians per pixel, in $[-\pi, \pi)$: row 0 is $k_y$ (along $H$), row 1 is $k_x$ (along $W$).
    With `golden_angle=True` spoke $s$ has angle $s \cdot 111.25^\circ \bmod 180^\circ$, so any run of consecutive
    spokes covers the angles nearly uniformly. We take $S = 64$ spokes of $n = 256$ samples (2x readout
    oversampling); Nyquist for 128 pixels asks for about $\tfrac{\pi}{2}\,128 \approx 201$ spokes, so this is
    about 3x undersampled and gives streaks.

    `NUFFTOperator(traj, (H, W), maps)` evaluates $y_c(k_j) = (HW)^{-1/2} \sum_r S_c(r) x(r) e^{-i k_j \cdot (r - r_0)}$
    (torchkbnufft, Kaiser-Bessel interpolation), which agrees with `fft2c` on grid points. The plain adjoint
    $A^H y$ over-weights the densely sampled centre (density $\propto 1/|k|$) and blurs; the **density-compensated**
    adjoint $A^H(w \odot y)$ with Pipe-Menon weights $w$ (`density_compensation()`) approximates the inverse.
    To compare intensities fairly, each is multiplied by the complex number $\alpha$ minimising
    $\|\alpha z - x\|_2$ before computing PSNR; the printed $\alpha$ shows how far each is from the scale of $x$.
    """),
    code(r"""
    S, n = 64, 2 * H
    traj = radial_trajectory(S, n, golden_angle=True)[0]     # (2, S n) float32, rows (ky, kx)
    N = NUFFTOperator(traj, (H, W), maps)
    y_radial = N(x)                                          # (1, C, S n)
    print(N, ":", tuple(x.shape), "->", tuple(y_radial.shape))
    print(f"adjoint test (float64): {adjoint_test(N):.1e}")

    # spoke 0 lies on the kx axis; its even samples are the grid points of the centre row of fft2c
    on_grid = y_radial[0, :, 0:n:2]
    cartesian = kspace[0, :, H // 2, :]
    print(f"NUFFT vs fft2c on the centre row: relative difference "
          f"{float((on_grid - cartesian).norm() / cartesian.norm()):.1e}")

    w = N.density_compensation()                             # (1, 1, S n)
    gridded, alpha_dcf = fit_scale(N.adjoint(w * y_radial), x)
    plain, alpha_plain = fit_scale(N.adjoint(y_radial), x)
    print(f"density-compensated adjoint: PSNR {quality(gridded.abs(), ref)[0]:.2f} dB, SSIM "
          f"{quality(gridded.abs(), ref)[1]:.3f} (fitted scale {alpha_dcf.real:.3f}{alpha_dcf.imag:+.0e}j)")
    print(f"plain adjoint:               PSNR {quality(plain.abs(), ref)[0]:.2f} dB, SSIM "
          f"{quality(plain.abs(), ref)[1]:.3f} (fitted scale {alpha_plain.real:.4f}{alpha_plain.imag:+.0e}j)")
    """),
    md(r"""
    ## 7. Summary

    Top: the image magnitude, the 4x equispaced line mask and the 64 golden-angle spokes drawn on the same
    k-space grid (row down, column across; the first five spokes in colour), and the magnitudes of all 8 coil maps.
    Middle: zero-filled RSS and SENSE adjoint of the masked data (aliasing along the phase-encoding direction,
    left-right), density-compensated and plain radial adjoints (scaled as above; streaks, blur). Bottom: the
    errors $|\hat x| - |x|$.
    """),
    code(r"""
    recons = [("zero-filled RSS", zf), ("SENSE adjoint", sa.abs()),
              (f"radial {S} spokes, density-compensated", gridded.abs()),
              (f"radial {S} spokes, plain adjoint", plain.abs())]
    fig, axes = plt.subplots(3, 4, figsize=(18, 13.5), constrained_layout=True)
    image = dict(cmap="gray", vmin=0, vmax=1)

    show(axes[0, 0], ref, "$|x|$", "a.u.", **image)
    show(axes[0, 1], mask.expand(1, 1, H, W), f"equispaced mask, 4x ({float(mask.mean()):.0%} of lines)", "",
         cmap="gray", vmin=0, vmax=1)
    axes[0, 1].set_xlabel("column (phase encoding)")
    axes[0, 1].set_ylabel("row (readout)")

    ax = axes[0, 2]
    rows = (H // 2 + traj[0] * H / (2 * math.pi)).view(S, n)   # k-space grid index of each sample
    cols = (W // 2 + traj[1] * W / (2 * math.pi)).view(S, n)
    ax.plot(cols.T, rows.T, color="0.75", lw=0.6)
    for s in range(5):
        ax.plot(cols[s], rows[s], lw=1.5, label=f"spoke {s}")
    ax.set(xlim=(-0.5, W - 0.5), ylim=(H - 0.5, -0.5), aspect="equal", xlabel="column", ylabel="row",
           title=f"golden-angle radial, {S} spokes x {n} samples")
    ax.title.set_fontsize(10)
    ax.legend(fontsize=7, loc="lower right")

    montage = maps.abs().reshape(2, 4, H, W).permute(0, 2, 1, 3).reshape(2 * H, 4 * W)  # coils 0-3 / 4-7
    show(axes[0, 3], montage, "$|S_c|$, coils 0-3 (top), 4-7 (bottom)", "", cmap="viridis", vmin=0, vmax=1)
    axes[0, 3].axhline(H - 0.5, color="w", lw=1)
    for j in range(1, 4):
        axes[0, 3].axvline(j * W - 0.5, color="w", lw=1)

    for j, (title, img) in enumerate(recons):
        p, s_ = quality(img, ref)
        show(axes[1, j], img, f"{title}\nPSNR {p:.1f} dB, SSIM {s_:.2f}", "a.u.", **image)
        diff = img - ref
        show(axes[2, j], diff, f"error: {title}", "a.u.", cmap="RdBu_r", vmin=-0.5, vmax=0.5)
    save(fig, "02_mri_physics.png")
    """),
]


# ---------------------------------------------------------------------------
# 03: training Learned Primal-Dual
# ---------------------------------------------------------------------------

TRAIN_LPD = [
    md(r"""
    # 03 · Training Learned Primal-Dual

    Learned Primal-Dual (LPD; Adler & Öktem, "Learned Primal-Dual Reconstruction", IEEE TMI 37(6), 2018)
    unrolls a primal-dual optimisation scheme for a fixed number of iterations and replaces its proximal
    steps by small CNNs, trained end to end from pairs of noisy measurements and ground-truth images.
    This notebook trains a deliberately tiny LPD with the package's training stack
    (`ReconstructionDataModule`, `ReconstructionModule`, a PyTorch Lightning `Trainer`), then compares it
    with filtered back-projection on Shepp-Logan and on held-out random-ellipse images, and reloads it
    from its checkpoint.

    Training takes a minute or two on a 2-core CPU, the whole notebook less than three minutes.
    Such a short run gives a model well short of what the paper's full schedule reaches: the point here is
    the workflow, not the numbers.
    """),
    code(r"""
    import os
    import shutil
    import tempfile
    import time
    import warnings
    from pathlib import Path

    import matplotlib.pyplot as plt
    import numpy as np
    import pandas as pd
    import pytorch_lightning as pl
    import torch
    from pytorch_lightning.callbacks import ModelCheckpoint
    from pytorch_lightning.loggers import CSVLogger

    from pirecon import metrics
    from pirecon.ct import RayTransform, fbp, lpd_ellipses_geometry
    from pirecon.training.datamodule import ReconstructionDataModule
    from pirecon.data.simulate import Simulator
    from pirecon._validation import split_seed
    from pirecon.noise import GaussianNoise
    from pirecon.phantoms import random_ellipses, shepp_logan
    from pirecon.physics import Physics
    from pirecon.training import ReconstructionModule, load_checkpoint, load_module

    OUT = os.environ.get("PIRECON_NOTEBOOK_OUT")  # directory for figures; nothing is saved when unset
    WORK = Path(tempfile.mkdtemp(prefix="pirecon-03-"))  # validation file, logs and checkpoints; removed at the end
    # the data are simulated in the training process itself (a few ms per sample), no DataLoader workers needed
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")
    print(f"working directory {WORK}; torch uses {torch.get_num_threads()} threads")


    def quality(img, ref):
        # (PSNR in dB, SSIM) per image, as tensors (B,); peak = range max - min of each reference (pirecon.metrics)
        return metrics.psnr(img, ref), metrics.ssim(img, ref)


""" + SHOW_AND_SAVE + """    """),
    md(r"""
    ## 1. Data: the LPD-ellipses protocol, streamed

    The protocol of the paper (notebook 01, section 1): 128×128 images of 1 mm pixels, 30 parallel-beam
    angles, 183 detector bins, and white Gaussian noise with standard deviation 5% of the mean absolute value
    of each clean sinogram (`"gaussian:0.05"`). The images are random ellipses (`random_ellipses`: a Poisson
    number of ellipses, mean 50, with random positions, shapes and signed values that add where they overlap).

    `ReconstructionDataModule(simulation=...)` does not read training files: a `SimulationDataset` simulates
    batches on the fly, a fresh stream every epoch. Every sample is a pure function of `(seed, index)`
    (separate seeded streams for the phantom and the noise), so a run is reproducible whatever the batch size or
    the number of workers, and resuming a run sees the same samples as an uninterrupted one. Sample $i$ of
    the stream is what `Simulator(...).simulate(seed, i, 1)` returns on its own, as checked below.

    `val_simulation` writes a fixed validation file (4 images) once, in `prepare_data`, from the seed's
    *validation* split, and the test images of section 5 come from its *test* split
    (`split_seed(0, "test")`). The splits are separate inputs to the seeding, so no training stream reaches
    them, however long the run, whatever the number of ranks and workers.
    """),
    code(r"""
    SIMULATION = {"modality": "ct", "phantom": "ellipses", "seed": 0, "noise": "gaussian:0.05"}
    datamodule = ReconstructionDataModule(
        simulation=SIMULATION,
        val_simulation={"out": WORK / "val.h5", "n": 4},   # the seed's validation split; other options as simulation's
        batch_size=4)
    datamodule.prepare_data()   # writes val.h5 (Trainer.fit does this too, and skips an existing file)
    datamodule.setup("fit")

    batch = next(iter(datamodule.train_dataloader()))   # the first batch: samples 0-3 of the seed-0 stream
    print({k: (tuple(v.shape), v.dtype) for k, v in batch.items()})
    print("physics of the data:", datamodule.physics_description())

    # sample 2 on its own, from a fresh simulator: the same image and noise as in the batch (the sinogram
    # to float32 rounding: the projector sums in another order for 1 sample than for 4)
    alone = Simulator("ct", "ellipses", noise="gaussian:0.05").simulate(seed=0, start=2, count=1)
    assert torch.equal(batch["ground_truth"][2], torch.from_numpy(alone["ground_truth"]))
    torch.testing.assert_close(batch["sinogram"][2], torch.from_numpy(alone["sinogram"]), rtol=1e-5, atol=1e-5)
    print("sample 2 of the stream = Simulator(...).simulate(seed=0, start=2, count=1)")

    fig, axes = plt.subplots(1, 4, figsize=(18, 3.8), constrained_layout=True)
    for j in range(3):
        show(axes[j], batch["ground_truth"][j], f"training image {j}", "a.u.", cmap="gray")
    show(axes[3], batch["sinogram"][0], "its noisy sinogram (image 0)", "a.u. · mm", cmap="gray", aspect="auto")
    axes[3].set_xlabel("detector bin")
    axes[3].set_ylabel("angle index")
    save(fig, "03_train_lpd_data.png")
    """),
    md(r"""
    ## 2. The model

    With the normalised operator $K = A/\|A\|$ and data $g = y/\|A\|$, LPD keeps a primal memory
    $f$ (5 images) and a dual memory $h$ (5 sinograms, starting at zero) and runs, for $i = 1, \dots, I$,

    $$h \leftarrow h + \Gamma_i\big(h,\ K f^{(1)},\ g\big) \qquad \text{(dual step, a CNN on sinograms)},$$
    $$f \leftarrow f + \Lambda_i\big(f,\ K^T h^{(1)}\big) \qquad \text{(primal step, a CNN on images)},$$

    where $f^{(1)}, h^{(1)}$ are the first channels; the reconstruction is $f^{(1)}$ after the last iteration.
    Each $\Gamma_i, \Lambda_i$ is a block of three 3×3 convolutions with PReLU, with its own weights per
    iteration. The operator enters every iteration, so the CNNs only learn corrections that are consistent with
    the physics; gradients flow through $K$ and $K^T$ (`RayTransform` is differentiable).

    The paper uses $I = 10$ iterations and 32 hidden channels and starts the primal memory at zero. Here
    `iterations=5, hidden=16` keeps a step cheap, and `initial="fbp"` starts every primal channel at the Hann
    FBP, so the network begins from a sensible image and only has to learn to improve it, and
    `identity_init=True` starts the last convolution of every block at zero, so the untrained network returns
    exactly that FBP instead of a random perturbation of it. Both shorten training.
    `ReconstructionModule` builds the model from its `class_path`/`init_args` spec (stored in the checkpoint),
    minimises the mean squared error against the ground truth with Adam, and logs PSNR, SSIM and NMSE on the
    validation images.
    """),
    code(r"""
    pl.seed_everything(0, verbose=False)   # the network's initial weights
    module = ReconstructionModule(
        {"class_path": "lpd", "init_args": {"iterations": 5, "hidden": 16, "initial": "fbp",
                                            "identity_init": True}},
        lr=2e-3, schedule="cosine", log_images_every_n_epochs=0)
    print(type(module.model).__name__, f"with {sum(p.numel() for p in module.model.parameters()):,} parameters")
    """),
    md(r"""
    ## 3. Training

    A standard Lightning `Trainer`: `STEPS` optimiser steps of batch 4, the learning rate decaying from
    $2\cdot10^{-3}$ to zero along a cosine (`schedule="cosine"`), gradient norms clipped at 1 (as in the
    paper), validation on the 4 validation images every 50 steps, metrics to a CSV file and the latest
    weights to a checkpoint. The simulated stream is endless, so validation is scheduled in steps
    (`check_val_every_n_epoch=None`). Expect one to two minutes on an idle 2-core machine; the time depends on
    torch's thread count (printed above; `torch.set_num_threads` or `OMP_NUM_THREADS` changes it).
    """),
    code(r"""
    STEPS = 300
    RUN = WORK / "training"     # metrics.csv and checkpoints/
    checkpoint = ModelCheckpoint(dirpath=RUN / "checkpoints", save_last=True)
    trainer = pl.Trainer(
        max_steps=STEPS, accelerator="cpu", devices=1, gradient_clip_val=1.0,
        val_check_interval=50, check_val_every_n_epoch=None, limit_val_batches=1, log_every_n_steps=10,
        logger=CSVLogger(RUN, name="", version=""), callbacks=[checkpoint], default_root_dir=RUN,
        enable_model_summary=False)

    start = time.perf_counter()
    trainer.fit(module, datamodule=datamodule)
    seconds = time.perf_counter() - start
    print(f"{trainer.global_step} steps in {seconds:.0f} s ({1e3 * seconds / trainer.global_step:.0f} ms per step, "
          f"validation included); checkpoint {checkpoint.last_model_path}")
    """),
    md(r"""
    ## 4. Learning curves

    The CSV logger's `metrics.csv` holds one row per logging event: the training loss (the MSE of one batch,
    every 10 steps, hence noisy: the batches differ) and the validation metrics (averaged over the 4 validation
    images). For reference, the dashed line is the mean PSNR of Hann FBP on the same validation images.
    """),
    code(r"""
    log = pd.read_csv(RUN / "metrics.csv")
    train = log.dropna(subset=["train/loss"])
    val = log.dropna(subset=["val/psnr"])
    print(val[["step", "val/loss", "val/psnr", "val/ssim"]].to_string(index=False))

    val_batch = next(iter(datamodule.val_dataloader()))
    A = module.batch_physics({}).operator     # the RayTransform of the data's geometry
    val_fbp = float(quality(fbp(val_batch["sinogram"], A, "hann"), val_batch["ground_truth"])[0].mean())
    print(f"Hann FBP on the validation images: mean PSNR {val_fbp:.2f} dB")

    fig, axes = plt.subplots(1, 2, figsize=(12, 3.8), constrained_layout=True)
    axes[0].semilogy(train["step"], train["train/loss"], ".-", lw=0.8)
    axes[0].set(xlabel="step", ylabel="training loss (MSE of a batch)", title="training loss")
    axes[1].plot(val["step"], val["val/psnr"], "o-", label="LPD")
    axes[1].axhline(val_fbp, color="k", ls="--", lw=1, label="Hann FBP")
    axes[1].set(xlabel="step", ylabel="mean PSNR [dB]", title="validation PSNR (4 images)")
    axes[1].legend()
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.title.set_fontsize(10)
    save(fig, "03_train_lpd_curves.png")
    """),
    md(r"""
    ## 5. Reconstruction: Shepp-Logan and held-out ellipses

    New data, simulated with the protocol's physics: the modified Shepp-Logan phantom (a different image class
    from the training ellipses) and 8 held-out random-ellipse images. The trained model reconstructs in
    evaluation mode without gradients, `module(y, physics).image`, its physics from `module.batch_physics`
    (the `RayTransform` of the data's geometry; CT batches all share it, so any batch, even `{}`, gives it).
    """),
    code(r"""
    geometry = lpd_ellipses_geometry()
    truth = torch.cat([shepp_logan((128, 128)),
                       random_ellipses((128, 128), 8, seed=split_seed(0, "test"))])   # (9, 1, 128, 128)
    y = Physics(RayTransform(geometry), GaussianNoise(relative=0.05)).simulate(truth, seed=7)

    x_fbp = fbp(y, RayTransform(geometry), "hann")
    module.eval()
    physics = module.batch_physics({})
    with torch.no_grad():
        x_lpd = module(y, physics).image

    scores = {"FBP (Hann)": quality(x_fbp, truth), "LPD": quality(x_lpd, truth)}
    print(f"{'':>12} {'Shepp-Logan':>20} {'held-out ellipses (mean of 8)':>31}")
    print(f"{'':>12} {'PSNR [dB]':>10} {'SSIM':>9} {'PSNR [dB]':>15} {'SSIM':>15}")
    for name, (p, s) in scores.items():
        print(f"{name:>12} {p[0]:10.2f} {s[0]:9.3f} {p[1:].mean():15.2f} {s[1:].mean():15.3f}")
    gain = scores["LPD"][0][1:] - scores["FBP (Hann)"][0][1:]
    print(f"PSNR gain of LPD over FBP per held-out ellipse image: {np.round(gain.numpy(), 2)} dB")
    assert gain.mean() > 0, "LPD should beat FBP on the held-out ellipses after training"
    """),
    md(r"""
    Left to right: ground truth, Hann FBP, LPD, and the two errors on a common colour scale, for Shepp-Logan
    and the first two held-out ellipse images.
    """),
    code(r"""
    rows = [0, 1, 2]
    fig, axes = plt.subplots(len(rows), 5, figsize=(22, 4.2 * len(rows)), constrained_layout=True)
    for r, i in enumerate(rows):
        name = "Shepp-Logan" if i == 0 else f"held-out ellipses {i - 1}"
        lo, hi = float(truth[i].min()), float(truth[i].max())
        image = dict(cmap="gray", vmin=lo, vmax=hi)
        lim = float(torch.maximum((x_fbp[i] - truth[i]).abs().max(), (x_lpd[i] - truth[i]).abs().max()))
        error = dict(cmap="RdBu_r", vmin=-lim, vmax=lim)
        (p_fbp, s_fbp), (p_lpd, s_lpd) = [(float(p[i]), float(s[i])) for p, s in scores.values()]
        show(axes[r, 0], truth[i], f"truth: {name}", "a.u.", **image)
        show(axes[r, 1], x_fbp[i], f"FBP (Hann): {p_fbp:.1f} dB, SSIM {s_fbp:.2f}", "a.u.", **image)
        show(axes[r, 2], x_lpd[i], f"LPD ({STEPS} steps): {p_lpd:.1f} dB, SSIM {s_lpd:.2f}", "a.u.", **image)
        show(axes[r, 3], x_fbp[i] - truth[i], "error: FBP − truth", "a.u.", **error)
        show(axes[r, 4], x_lpd[i] - truth[i], "error: LPD − truth", "a.u.", **error)
    save(fig, "03_train_lpd.png")
    """),
    md(r"""
    ## 6. Reloading the trained model

    `load_module(path)` rebuilds the `ReconstructionModule` from a checkpoint alone: the model from the
    `class_path`/`init_args` spec in its hyperparameters, the weights from its state dict, and the physics
    (CT geometry and noise model) that the training run stored in it, so no datamodule is needed. The file is
    read with `torch.load(..., weights_only=True)`, which never unpickles arbitrary objects. The reloaded
    model gives the same reconstructions.
    """),
    code(r"""
    path = checkpoint.last_model_path
    print(f"{Path(path).name}: step {load_checkpoint(path)['global_step']}")
    reloaded = load_module(path)            # in eval mode
    print("geometry from the checkpoint:", reloaded.batch_physics.geometry)
    with torch.no_grad():
        x_reloaded = reloaded(y, reloaded.batch_physics({})).image
    difference = float((x_reloaded - x_lpd).abs().max())
    print(f"max |reloaded - trained| = {difference:.1e}")
    assert torch.allclose(x_reloaded, x_lpd, rtol=0, atol=1e-5)

    shutil.rmtree(WORK)   # the validation file, the logs and the checkpoints
    """),
    md(r"""
    ## 7. Going further

    A few minutes of CPU training on a small network gives a model well short of the paper's: the network
    has half the iterations and half the hidden channels, and it saw 1200 training images where the
    full schedule shows it half a million. The same stack scales up without code changes:

    * `pirecon fit --config experiments/ct_lpd_ellipses.yaml` trains the paper's configuration on its full
      schedule (10 iterations, 32 hidden channels, batch 5, 100 000 steps; resumable, and multi-GPU with
      `--trainer.devices`);
    * `experiments/ct_lpd_ellipses_cpu.yaml` is the same protocol on a 30-minute CPU budget;
    * `pirecon job --out DIR` is the main job end to end: simulate the data, train LPD, evaluate it against
      FBP and TV on Shepp-Logan and held-out ellipses, and write a report (`metrics.md`, `metrics.csv`,
      `figure.png`).
    """),
]


# ---------------------------------------------------------------------------
# 04: a trained model for downstream code
# ---------------------------------------------------------------------------

LOAD_AND_RECONSTRUCT = [
    md("""
    # 04 · Load a trained model, reconstruct, export DICOM and NIfTI

    Downstream code (a research pipeline, a segmentation tool, a viewer) needs three calls:

    ```python
    model = pirecon.load("last.ckpt")          # any device it was trained on; nothing unpickled or imported
    recon = model.reconstruct("scan.h5")        # raw file, DICOM series / NIfTI volume, or tensor + physics
    pirecon.save(recon, "scan.nii.gz")          # .h5, .nii(.gz), or a DICOM series (format="dicom")
    ```

    This notebook trains a small Learned Primal-Dual for a minute (so it has a checkpoint of its own), then:
    loads it and reads its model card; reconstructs a raw CT file; simulates and reconstructs a CT DICOM
    series in Hounsfield units; writes the result as DICOM and NIfTI; reads both back with pydicom and
    nibabel; and shows the images. Everything is written to a temporary directory removed at the end.
    """),
    code("""
    import os
    import shutil
    import tempfile
    from pathlib import Path

    import matplotlib.pyplot as plt
    import nibabel
    import numpy as np
    import pydicom
    import torch

    import pirecon
    from pirecon.data.readers import read_dicom_series, read_nifti
    from pirecon.data.simulate import simulate
    from pirecon.inference import write_dicom_series
    from pirecon.phantoms import shepp_logan
    from pirecon.training.fit import fit_on_simulation

    OUT = os.environ.get("PIRECON_NOTEBOOK_OUT")  # directory for figures; nothing is saved when unset
    WORK = Path(tempfile.mkdtemp(prefix="pirecon-04-"))
    print(f"working directory {WORK}")

""" + SHOW_AND_SAVE + """    """),
    md("""
    ## 1. A checkpoint of our own

    64×64 images of 1 mm pixels, 15 parallel-beam angles, 5% Gaussian noise, random-ellipse training images
    streamed from the simulator, 600 steps of a 3-iteration LPD that starts at the FBP (its last convolutions
    start at zero, so it begins as FBP and training can only move it away from FBP's errors).
    `fit_on_simulation` is what `pirecon job` trains with; `pirecon fit --config ...` writes the same kind of
    checkpoint and the same model card.
    """),
    code("""
    SIMULATION = {"modality": "ct", "phantom": "ellipses", "image_size": 64, "num_angles": 15,
                  "noise": "gaussian:0.05", "seed": 0}
    LPD = {"class_path": "lpd", "init_args": {"iterations": 3, "hidden": 16, "initial": "fbp", "identity_init": True}}
    val_file = simulate(WORK / "val.h5", n=4, progress=False, split="validation", **SIMULATION)
    checkpoint = fit_on_simulation(WORK, val_file, model=LPD, simulation=SIMULATION, steps=600, lr=3e-3,
                                   batch_size=4, progress=False, schedule="onecycle")
    print(checkpoint)
    """),
    md("""
    ## 2. Load it

    `pirecon.load` reads the checkpoint with `torch.load(weights_only=True)`, builds the model from pirecon's
    registry (a checkpoint naming any other code is refused, unless you pass the class in `models=`), and
    brings the physics it was trained for and its model card. Lightning is not imported.
    """),
    code("""
    model = pirecon.load(checkpoint)
    print(model)
    print(model.card.summary())
    print(model.physics.metadata["geometry"])
    print(model.card.to_markdown())
    """),
    md("""
    ## 3. A raw file

    A raw CT file in pirecon's format (`data_specs/ct_raw.md`) with the same physics: 8 slices from the
    simulator's *test* split. `reconstruct` reads it through its spec, a batch of slices at a time, and refuses a
    file whose geometry or noise model differs from the model's (naming both). `metrics=True` scores it against
    the file's ground truth. FBP takes the same road.
    """),
    code("""
    raw = simulate(WORK / "raw.h5", n=8, progress=False, split="test", **SIMULATION)
    recon = model.reconstruct(raw, batch_size=4, metrics=True, progress=False)
    baseline = pirecon.reconstructor("fbp", filter="hann").reconstruct(raw, metrics=True, progress=False)
    print(recon.image.shape, {k: recon.provenance[k] for k in ("model", "checkpoint_sha256", "source_file")})
    print(f"LPD {recon.provenance['metrics']['mean_psnr_db']:.2f} dB, "
          f"FBP {baseline.provenance['metrics']['mean_psnr_db']:.2f} dB (mean PSNR over 8 slices)")
    pirecon.save(recon, WORK / "raw_lpd.h5")
    """),
    md("""
    ## 4. A DICOM series, simulated with the model's physics

    A stand-in for a scanner series: three 96×96 axial CT slices in Hounsfield units (a Shepp-Logan head:
    air −1000 HU, skull 820 HU, brain 20 HU; the phantom's two large dark ellipses are 0 like the air outside,
    so −1000 HU too), 0.9 mm pixels, 3 mm apart, written as CT Image
    Storage with patient and study tags. `reconstruct` reads it with `read_dicom_series`, maps HU to the
    normalised attenuation the model was trained on, resamples each slice to the model's 64×64 grid (the
    patient geometry follows), simulates the sinograms with the model's physics (noise seed per slice), and
    reconstructs them.
    """),
    code("""
    phantom = torch.cat([shepp_logan((96, 96)) * (1 + 0.05 * k) for k in range(3)])[:, 0].numpy()
    hu = np.where(phantom > 0, 20 + 1000 * (phantom - 0.2), -1000.0)   # brain 0.2 -> 20 HU, skull 1 -> 820 HU
    positions = [[-43.2, -43.2, 3.0 * k] for k in range(3)]
    source = WORK / "source_series"
    write_dicom_series(source, hu, modality="CT", units="HU", pixel_spacing=(0.9, 0.9), slice_thickness=3.0,
                       positions=positions, orientation=[1, 0, 0, 0, 1, 0],
                       series_description="synthetic head (stand-in for a scanner series)")
    for path in sorted(source.iterdir()):   # the patient a scanner series names
        ds = pydicom.dcmread(path)
        ds.PatientName, ds.PatientID = "Doe^Jane", "P-0001"
        ds.save_as(path)
    recon_dicom = model.reconstruct(source, metrics=True, progress=False)
    p = recon_dicom.provenance
    print(recon_dicom.image.shape, p["intensity"], [round(v, 3) for v in p["pixel_spacing_mm"]])
    print(f"PSNR against the resampled source: {p['metrics']['mean_psnr_db']:.2f} dB (mean of 3 slices)")
    """),
    md("""
    ## 5. Export: DICOM and NIfTI, read back

    The DICOM output is one derived series (`DERIVED\\\\SECONDARY`) in the source's study, with new series and
    instance UIDs, the source's patient and study tags, rescale slope and intercept for Hounsfield units,
    the geometry of the resampled grid, and a `DerivationDescription` naming pirecon, the model and the
    checkpoint's SHA-256. NIfTI gets the affine of the same grid. An existing output is only replaced with
    `overwrite=True`.
    """),
    code("""
    files = pirecon.save(recon_dicom, WORK / "recon_dicom", format="dicom")
    nifti = pirecon.save(recon_dicom, WORK / "recon.nii.gz")
    ds = pydicom.dcmread(files[0])
    source_ds = pydicom.dcmread(sorted(source.iterdir())[0])
    print(ds.SOPClassUID.name, list(ds.ImageType), ds.RescaleSlope, ds.RescaleIntercept, ds.RescaleType)
    print("same study:", ds.StudyInstanceUID == source_ds.StudyInstanceUID, "| patient:", ds.PatientName)
    print("pixel spacing", [float(v) for v in ds.PixelSpacing], "| position", [float(v) for v in ds.ImagePositionPatient])
    print(ds.DerivationDescription)
    read_back, spacing, metadata = read_dicom_series(WORK / "recon_dicom")
    volume = nibabel.load(nifti)
    print("NIfTI affine (RAS mm):")
    print(np.round(volume.affine, 3))
    expected = recon_dicom.image[:, 0].numpy() * p["intensity"]["scale"] + p["intensity"]["offset"]
    print(f"DICOM values within {np.abs(read_back - expected).max():.2f} HU of the reconstruction "
          f"(half a rescale step: {0.5 * float(ds.RescaleSlope):.2f} HU)")
    """),
    md("""
    ## 6. The images
    """),
    code("""
    from pirecon.data import read_acquisition

    truth = read_dicom_series(source)[0]
    acquisition = read_acquisition(raw)
    fig, axes = plt.subplots(2, 4, figsize=(19, 8.5), constrained_layout=True)
    window = dict(cmap="gray", vmin=-100, vmax=150)
    show(axes[0, 0], truth[1], "DICOM source, slice 2 (96×96)", "HU", **window)
    show(axes[0, 1], expected[1], "LPD reconstruction (64×64)", "HU", **window)
    show(axes[0, 2], read_back[1], "read back from the DICOM output", "HU", **window)
    show(axes[0, 3], read_nifti(nifti)[0][1], "read back from the NIfTI output", "HU", **window)
    lo, hi = float(acquisition.ground_truth[0].min()), float(acquisition.ground_truth[0].max())
    image = dict(cmap="gray", vmin=lo, vmax=hi)
    show(axes[1, 0], acquisition.ground_truth[0], "raw file, slice 1: truth", "a.u.", **image)
    show(axes[1, 1], baseline.image[0], f"FBP: {baseline.provenance['metrics']['psnr_db'][0]:.1f} dB", "a.u.",
         **image)
    show(axes[1, 2], recon.image[0], f"LPD: {recon.provenance['metrics']['psnr_db'][0]:.1f} dB", "a.u.", **image)
    lim = float((recon.image[0] - acquisition.ground_truth[0]).abs().max())
    show(axes[1, 3], recon.image[0] - acquisition.ground_truth[0], "LPD − truth", "a.u.", cmap="RdBu_r",
         vmin=-lim, vmax=lim)
    save(fig, "04_load_and_reconstruct.png")
    shutil.rmtree(WORK)
    """),
]


# ---------------------------------------------------------------------------
# 05: calibrated uncertainty
# ---------------------------------------------------------------------------

UNCERTAINTY = [
    md("""
    # 05 · Calibrated uncertainty: a quantile head, RCPS, and the guarantee over random splits

    An uncertainty head puts a per-pixel interval $[l(y), u(y)]$ around the reconstruction. Calibration on
    held-out images scales it about its centre by $\\hat\\lambda$ so that the **risk**, the expected fraction of
    a test image's pixels outside its interval, is controlled:

    $$\\Pr_{\\text{calibration}}\\Big(\\mathbb{E}_{\\text{test}}\\big[\\tfrac{1}{P}\\#\\{p : x_p \\notin
    [c_p - \\hat\\lambda (c_p - l_p),\\; c_p + \\hat\\lambda (u_p - c_p)]\\}\\big] \\le \\alpha\\Big) \\ge 1 - \\delta,$$

    if calibration and test images are exchangeable (risk-controlling prediction sets, Bates et al. 2021;
    Angelopoulos et al. 2022, with the Hoeffding-Bentkus bound). This notebook trains a small LPD with a
    quantile head, calibrates it with `pirecon calibrate`'s function, checks the guarantee over 100 random
    calibration/test splits against the constant-width interval, and draws the report's figures.
    """),
    code("""
    import os
    import shutil
    import tempfile
    from pathlib import Path

    import matplotlib.pyplot as plt
    import numpy as np
    import torch

    import pirecon
    from pirecon.data import read_acquisition, read_reconstruction
    from pirecon.data.simulate import simulate
    from pirecon.inference.calibrate import LAMBDAS, calibrate
    from pirecon.training.fit import fit_on_simulation
    from pirecon.uncertainty import Interval, miscoverage_curves, spearman
    from pirecon.uncertainty.report import split_statistics

    OUT = os.environ.get("PIRECON_NOTEBOOK_OUT")  # directory for figures; nothing is saved when unset
    WORK = Path(tempfile.mkdtemp(prefix="pirecon-05-"))
    torch.manual_seed(0)

""" + SHOW_AND_SAVE + """    """),
    md("""
    ## 1. Train LPD with a quantile head

    64×64 random-ellipse images, 15 angles, 5% Gaussian noise. The quantile head reads the LPD's last primal
    state and predicts the 5% and 95% quantiles of the image, trained with the pinball loss beside the
    reconstruction's MSE (im2im-uq's quantile-regression head). 500 steps: a small model, enough to show the
    machinery.
    """),
    code("""
    SIMULATION = {"modality": "ct", "phantom": "ellipses", "image_size": 64, "num_angles": 15,
                  "noise": "gaussian:0.05", "seed": 0}
    LPD = {"class_path": "lpd", "init_args": {"iterations": 3, "hidden": 16, "initial": "fbp", "identity_init": True}}
    HEAD = {"class_path": "quantile_head", "init_args": {"backbone": LPD, "alpha": 0.1}}
    val_file = simulate(WORK / "val.h5", n=4, progress=False, split="validation", **SIMULATION)
    checkpoint = fit_on_simulation(WORK / "run", val_file, model=HEAD, simulation=SIMULATION, steps=500, lr=3e-3,
                                   batch_size=4, progress=False, schedule="onecycle")
    print(checkpoint)
    """),
    md("""
    ## 2. Calibrate on held-out images

    The seed's `calibration` and `test` splits are streams no training run reads (`pirecon calibrate` refuses a
    `train` file and any file the model card lists as training data). RCPS needs at least 22 calibration images
    at $\\alpha = \\delta = 0.1$ with the Hoeffding-Bentkus bound; we take 100, and 60 test images.
    """),
    code("""
    cal_file = simulate(WORK / "calibration.h5", n=100, progress=False, split="calibration", **SIMULATION)
    test_file = simulate(WORK / "test.h5", n=60, progress=False, split="test", **SIMULATION)
    result = calibrate(checkpoint, cal_file, WORK / "calibrated.ckpt", alpha=0.1, delta=0.1, test=test_file,
                       report=WORK / "report", progress=False)
    print(result)
    print((WORK / "report" / "report.md").read_text())
    """),
    md("""
    ## 3. The guarantee over 100 random splits, against the constant-width interval

    Pool the 160 held-out images, split them 100 times at random into 100 calibration and 60 test images,
    calibrate on each calibration part and measure the test part. The guarantee says at most $\\delta = 10\\%$
    of the splits may end above $\\alpha$. The baseline is an interval of the same width at every pixel around
    the same reconstruction, calibrated the same way: a head is worth having only if it is narrower.
    """),
    code("""
    model = pirecon.load(checkpoint)
    curves = {"quantile head": [], "constant width": []}
    widths = {"quantile head": [], "constant width": []}
    errors, pixel_widths = [], []
    for path in (cal_file, test_file):
        recon = model.reconstruct(path, progress=False)
        truth = read_acquisition(path).ground_truth
        head = recon.uncertainty
        constant = Interval(head.center - 0.5, head.center + 0.5, head.center, "constant")
        for name, interval in (("quantile head", head), ("constant width", constant)):
            curves[name].append(miscoverage_curves(interval, truth, LAMBDAS))
            widths[name].append(interval.width.mean(dim=(1, 2, 3)).numpy())
        errors.append((head.center - truth).abs().flatten().numpy())
        pixel_widths.append(head.width.flatten().numpy())
    stats = {name: split_statistics(np.concatenate(curves[name]), np.concatenate(widths[name]), LAMBDAS,
                                    splits=100, calibration_fraction=100 / 160) for name in curves}
    for name, s in stats.items():
        print(f"{name:15s} splits with risk > alpha: {s['violation_fraction']:.2f}   mean risk {s['mean_risk']:.4f}"
              f"   mean width {s['mean_width']:.4f}")
    print(f"width of the head / constant width: {stats['quantile head']['mean_width'] / stats['constant width']['mean_width']:.2f}")
    print(f"Spearman(width, |error|) over the pixels: {spearman(np.concatenate(pixel_widths), np.concatenate(errors)):.3f}")

    fig, ax = plt.subplots(figsize=(6, 3.5), constrained_layout=True)
    ax.violinplot([stats[name]["risks"] for name in stats], showmedians=True)
    ax.axhline(0.1, color="k", linestyle="--", label="alpha = 0.1")
    ax.set_xticks([1, 2], list(stats))
    ax.set_ylabel("test risk of a split")
    ax.legend()
    save(fig, "05_risk_over_splits.png")
    """),
    md("""
    ## 4. The report's figures

    `pirecon calibrate --test TEST.h5 --report DIR` writes them: the risk over random splits, the reliability
    diagram (observed coverage of the test images against the nominal $1 - \\alpha$ for $\\alpha$ from 0.05 to
    0.5), the sparsification curve (the error left when the pixels with the widest intervals are removed first,
    against removing the largest errors first), and three test images with their interval width and the pixels
    outside it.
    """),
    code("""
    names = ["risk_violin.png", "reliability.png", "sparsification.png", "examples.png"]
    fig, axes = plt.subplots(2, 2, figsize=(15, 10), constrained_layout=True)
    for ax, name in zip(axes.flat, names):
        ax.imshow(plt.imread(WORK / "report" / name))
        ax.set_title(name, fontsize=10)
        ax.axis("off")
    save(fig, "05_report_figures.png")
    """),
    md("""
    ## 5. Use the calibrated checkpoint

    `pirecon.load` of the calibrated checkpoint applies $\\hat\\lambda$: its intervals carry their calibration,
    and `pirecon.save` writes them with the image (HDF5 `interval_lower` / `interval_upper`; NIfTI and DICOM
    write the bounds beside the image).
    """),
    code("""
    calibrated = pirecon.load(WORK / "calibrated.ckpt")
    recon = calibrated.reconstruct(test_file, progress=False)
    interval, truth = recon.uncertainty, read_acquisition(test_file).ground_truth
    outside = ((truth < interval.lower) | (truth > interval.upper)).float().mean(dim=(1, 2, 3))
    print(interval.calibration)
    print(f"test risk {outside.mean():.4f} (alpha 0.1); images above alpha: {(outside > 0.1).float().mean():.2f}")
    written = read_reconstruction(pirecon.save(recon, WORK / "test_recon.h5"))
    print("written:", written.image.shape, [b.shape for b in written.interval])

    k = 0
    fig, axes = plt.subplots(1, 4, figsize=(18, 4), constrained_layout=True)
    show(axes[0], truth[k], "truth", cmap="gray", vmin=0, vmax=1)
    show(axes[1], interval.center[k], "reconstruction", cmap="gray", vmin=0, vmax=1)
    show(axes[2], interval.width[k], f"calibrated width (lambda-hat {interval.calibration['lambda_hat']:.2f})",
         cmap="magma")
    show(axes[3], (truth[k] < interval.lower[k]) | (truth[k] > interval.upper[k]),
         f"pixels outside ({outside[k]:.3f})", cmap="gray")
    save(fig, "05_calibrated_interval.png")
    shutil.rmtree(WORK)
    """),
]


# ---------------------------------------------------------------------------
# 06: task-adapted reconstruction
# ---------------------------------------------------------------------------

TASK_ADAPTED = [
    md("""
    # 06 · From raw sinograms to lesion masks: task-adapted reconstruction

    Adler, Lunz, Verdier, Schönlieb & Öktem (2018) train a reconstruction network $R_\\theta$ and a task network
    $T_\\phi$ together on

    $$\\min_{\\theta, \\phi}\\; (1 - C)\\, \\ell_{\\text{rec}}\\big(R_\\theta(y), x\\big) + C\\, \\ell_{\\text{task}}\\big(T_\\phi(R_\\theta(y)), s\\big),$$

    so that the image is shaped by what the diagnosis needs, not only by what looks right. `pirecon.models.TaskAdapted`
    wraps any reconstruction model called as `model(y, physics)` with a U-Net segmentation head and a CNN
    classification head; `experiments/task_sweep.py` trains the modes at equal budget and measures them on
    held-out data. This notebook runs a tiny sweep: every number here comes from 60 training steps on 48×48
    images and 30 test images, enough to show the machinery, not to rank the modes.
    """),
    code("""
    import json
    import os
    import shutil
    import sys
    import tempfile
    from pathlib import Path

    import h5py
    import matplotlib.pyplot as plt
    import numpy as np
    import torch

    import pirecon
    from pirecon.data import read_acquisition
    from pirecon.data.simulate import simulate

    OUT = os.environ.get("PIRECON_NOTEBOOK_OUT")  # directory for figures; nothing is saved when unset
    WORK = Path(tempfile.mkdtemp(prefix="pirecon-06-"))
    EXPERIMENTS = Path.cwd().parent / "experiments" if Path.cwd().name == "notebooks" else Path("experiments")
    sys.path.insert(0, str(EXPERIMENTS.resolve()))
    import task_sweep

""" + SHOW_AND_SAVE + """    """),
    md("""
    ## 1. Raw data with lesions

    The lesion phantom puts 1 to 3 discs of raised attenuation into the Shepp-Logan phantom, inside the
    object, in half of the images, and writes the segmentation and the present/absent label beside the
    sinograms. The difficulty is a knob (`lesion_options`: radius range, contrast, number, background); here
    the lesions are large and clear so that a few training steps learn something (the study's default, contrast
    0.07 and radii 0.03-0.08, was chosen on validation data by `experiments/lesion_difficulty.py`).
    """),
    code("""
    LESIONS = {"radius_range": [0.08, 0.15], "contrast": 0.2, "background": "shepp-logan"}
    raw = simulate(WORK / "look.h5", modality="ct", phantom="lesions", image_size=48, n=4, seed=0,
                   split="validation", noise="gaussian:0.05", lesion_options=LESIONS, progress=False)
    acquisition = read_acquisition(raw)
    with h5py.File(raw, "r") as f:
        masks, labels = f["segmentation"][()], f["labels"][()]
    fig, axes = plt.subplots(2, 4, figsize=(14, 6.5), constrained_layout=True)
    for k in range(4):
        show(axes[0, k], acquisition.ground_truth[k], f"image {k} (label {labels[k]})", cmap="gray")
        show(axes[1, k], masks[k], "lesion mask", cmap="gray")
    save(fig, "06_lesions.png")
    """),
    md("""
    ## 2. A small sweep

    The backbone (a 3-iteration LPD) trains first on the reconstruction loss; then every mode trains the same
    number of steps from it: `sequential` (backbone frozen, heads trained on its images, C = 0), `joint` at
    C = 0.1 and 0.9, `fbp` (heads on FBP), `oracle` (heads on the true image) and `mc_dropout` (joint at C = 0.5
    with dropout in the backbone: the spread of the label over 8 samples). The operating point of the label
    is chosen on validation images, its temperature and conformal sets on calibration images, and everything is
    measured on test images of the seed's held-out streams.
    """),
    code("""
    task_sweep.BACKBONES["ct"] = {"class_path": "lpd", "init_args": {"iterations": 3, "hidden": 16, "initial": "fbp",
                                                                    "identity_init": True}}
    sweep = task_sweep.main(["--steps", "60", "--image-size", "48", "--weights", "0.1", "0.9",
                             "--validation", "20", "--calibration", "30", "--test", "30", "--threads", "1",
                             "--lesion-options", json.dumps(LESIONS), "--out", str(WORK / "sweep")])
    """),
    md("""
    ## 3. The trade-off and the examples

    Each point is a mode: PSNR of its image against Dice of its segmentation and AUC of its label, with 95%
    bootstrap intervals over the test images; the dashed line is the oracle. The paired-bootstrap intervals in the
    table above say whether a mode differs from `sequential` on the same cases.
    """),
    code("""
    fig, axes = plt.subplots(2, 1, figsize=(12, 12), constrained_layout=True)
    for ax, name in zip(axes, ("tradeoff.png", "examples.png")):
        ax.imshow(plt.imread(WORK / "sweep" / name))
        ax.axis("off")
    save(fig, "06_task_sweep.png")
    """),
    md("""
    ## 4. The joint model as downstream code sees it

    `pirecon.load` of a task-adapted checkpoint returns the task outputs with the image: per-pixel lesion
    probabilities and the lesion-present probability per slice. `pirecon calibrate --task` fits the label's
    temperature and operating point on half of held-out calibration cases and a split-conformal threshold on
    the other half; the calibrated checkpoint adds each slice's prediction set (the labels plausible at
    1 - alpha = 0.9) and decision. `pirecon.save` writes them (HDF5 `task/`; NIfTI provenance; DICOM
    ImageComments, and a DICOM SEG or a NIfTI label map for the mask).
    """),
    code("""
    from pirecon.inference.calibrate_task import calibrate_task

    checkpoint = WORK / "sweep" / "joint_0.9" / "training" / "checkpoints" / "last.ckpt"
    stored = calibrate_task(checkpoint, WORK / "sweep" / "calibration.h5", WORK / "calibrated.ckpt", progress=False)
    print({key: stored[key] for key in ("temperature", "threshold", "qhat", "n_temperature", "n_conformal")})
    recon = pirecon.load(WORK / "calibrated.ckpt").reconstruct(WORK / "sweep" / "test.h5", progress=False)
    print({key: tuple(value.shape) for key, value in recon.task.items()})
    print("lesion-present probability of the first 5 test slices:", recon.task["label"][:5].numpy().round(3))
    print("their prediction sets (absent, present):", recon.task["label_set"][:5].numpy().tolist())
    shutil.rmtree(WORK)
    """),
]

# ---------------------------------------------------------------------------
# 07: blind spots
# ---------------------------------------------------------------------------

BLIND_SPOTS = [
    md("""
    # 07 · Blind spots: a test panel, a report, and a flag for data a model has not seen

    A model's test score on data like its training data says little about where it fails. A **test panel** is
    a fixed, versioned set of raw test files, one per condition: the in-distribution protocol and, beside it,
    the shifts a scanner meets (more noise, fewer angles, a limited angle, another detector, Poisson noise,
    another object family) and the lesions it must find (a radius x contrast grid, small high-contrast
    features). `pirecon evaluate` runs a model and the classical baselines on every condition and writes a
    report: the gap of each shift, the blind-spot map over the lesion grid, the worst cases, and how well an
    out-of-distribution flag computed without ground truth finds the failing cases.

    This notebook builds the small panel (8 cases per condition), trains a tiny LPD for a minute and evaluates
    it beside FBP. The numbers show the machinery, not the model: the README has the full panel's.
    """),
    code("""
    import json
    import os
    import shutil
    import tempfile
    from pathlib import Path

    import matplotlib.pyplot as plt
    import numpy as np
    import torch

    import pirecon
    from pirecon.evaluation import build_panel, verify_panel
    from pirecon.evaluation.evaluate import evaluate
    from pirecon.evaluation.report import summary_paragraph

    OUT = os.environ.get("PIRECON_NOTEBOOK_OUT")  # directory for figures; nothing is saved when unset
    WORK = Path(tempfile.mkdtemp(prefix="pirecon-07-"))
    torch.manual_seed(0)

""" + SHOW_AND_SAVE + """    """),
    md("""
    ## 1. The panel

    `build_panel("ct-v1", DIR, small=True)` is `pirecon panel build ct-v1 --out DIR --small`. Every condition
    is one `simulate` call with fixed parameters and a seed derived from the panel's and the condition's names,
    drawn from the `panel` stream, disjoint from every training, validation and calibration stream.
    `panel.json` holds each file's SHA-256: `verify_panel` (`pirecon panel verify`) checks the bytes.
    """),
    code("""
    panel = WORK / "ct-v1"
    build_panel("ct-v1", panel, small=True, progress=False)
    manifest = verify_panel(panel)
    print(f"{manifest['panel']} version {manifest['version']}: {len(manifest['conditions'])} conditions")
    for condition in manifest["conditions"][:10]:
        print(f"  {condition['name']:<20} {condition['n']:>3} cases  {condition['description']}")
    print("  ...")
    """),
    md("""
    ## 2. A tiny model, and the evaluation

    A 3-iteration LPD trained for 150 steps on the panel's in-distribution protocol (random ellipses, 30 angles,
    Gaussian noise), then evaluated with FBP on every condition. `evaluate` also calibrates each model's OOD flag
    on in-distribution slices of the `calibration` split.
    """),
    code("""
    from pirecon.data.simulate import simulate
    from pirecon.training.fit import fit_on_simulation

    reference = next(c for c in manifest["conditions"] if c["kind"] == "reference")
    simulation = {**reference["parameters"], "seed": 0}
    validation = simulate(WORK / "val.h5", n=4, split="validation", progress=False, **simulation)
    checkpoint = fit_on_simulation(WORK / "lpd", validation, simulation=simulation, steps=150, lr=3e-3, batch_size=2,
                                   progress=False, model={"class_path": "lpd", "init_args": {
                                       "iterations": 3, "hidden": 8, "initial": "fbp", "identity_init": True}})
    models = {"tiny-lpd": pirecon.load(checkpoint), "fbp": pirecon.reconstructor("fbp")}
    result = evaluate(models, panel, WORK / "report", baselines=["fbp"], progress=False)
    print(summary_paragraph(result))
    """),
    md("""
    ## 3. The shift gaps

    The in-distribution mean PSNR minus each condition's, with its 95% bootstrap interval: how much each shift
    costs each method. A learned model whose PSNR falls below the best classical baseline's under a condition is
    marked in the report's tables, and its summary names that baseline.
    """),
    code("""
    shifts = [c["name"] for c in manifest["conditions"] if c["kind"] == "shift"]
    fig, ax = plt.subplots(figsize=(11, 3.8), constrained_layout=True)
    for k, name in enumerate(models):
        rows = result["rows"][name]
        gaps = [rows[c]["psnr_gap"] if "psnr_gap" in rows[c] else (np.nan,) * 3 for c in shifts]
        centre = np.array([g[0] for g in gaps])
        errors = np.array([[g[0] - g[1] for g in gaps], [g[2] - g[0] for g in gaps]])
        ax.errorbar(np.arange(len(shifts)) + 0.15 * k, centre, yerr=errors, fmt="o", capsize=3, label=name)
    ax.set_xticks(range(len(shifts)), shifts, rotation=30, ha="right", fontsize=8)
    ax.set_ylabel("PSNR gap (dB)")
    ax.axhline(0, color="k", linewidth=0.8)
    ax.legend()
    ax.grid(alpha=0.3)
    ax.set_title("in-distribution PSNR minus the condition's (missing: the method cannot run there)")
    save(fig, "07_gaps.png")
    """),
    md("""
    ## 4. The blind-spot map and the failure gallery

    For a model without a task head, a lesion counts as detected when its recovered contrast stands out of the
    noise around it by the Rose criterion ($C\\sqrt{N}/\\sigma \\ge 5$). The map gives the detection rate over
    the lesion radius x contrast grid, per method; the gallery the worst cases (lowest PSNR) of each condition:
    truth, reconstruction and error.
    """),
    code("""
    print({name: result["smallest"][name] for name in models}, "(smallest radius detected in 90% per contrast)")
    gallery = next((WORK / "report").glob("gallery_tiny-lpd.png"))
    fig, axes = plt.subplots(2, 1, figsize=(12, 16), constrained_layout=True,
                             gridspec_kw={"height_ratios": [1, 3]})
    for ax, path in zip(axes, (WORK / "report" / "blind_spots.png", gallery)):
        ax.imshow(plt.imread(path))
        ax.axis("off")
    save(fig, "07_blind_spots.png")
    """),
    md("""
    ## 5. The out-of-distribution flag

    Without ground truth, a reconstruction can still be checked against its own data: the consistency
    $\\lVert A\\hat x - y\\rVert^2 / (m\\,\\sigma^2)$ is about 1 for data like the training data. After
    `calibrate_ood` on in-distribution slices, every `reconstruct(..., ood=True)` returns it per slice with a flag
    when it leaves the calibrated range. Below: its values under the reference and two shifts, and the fraction of
    failing cases (PSNR more than 3 dB below the in-distribution median) it flagged over the panel.
    """),
    code("""
    model = models["tiny-lpd"]
    for condition in ("in_distribution", "noise_4x", "angles_10"):
        ood = model.reconstruct(panel / f"{condition}.h5", progress=False, ood=True,
                                physics_mismatch="use_data").provenance["ood"]  # a shift is the point
        print(f"{condition:<16} consistency {np.round(ood['consistency'], 2)}  flagged {np.sum(ood['flag'])} of "
              f"{len(ood['flag'])}")
    for name, measured in result["ood"].items():
        print(f"{name}: flagged {measured['flagged']:.0%} of {measured['failing']} failing cases, "
              f"false alarms on {measured['false_alarms']:.0%} of {measured['others']} others")
    print((WORK / "report" / "report.md").read_text()[:600])
    shutil.rmtree(WORK)
    """),
]



# ---------------------------------------------------------------------------
# Registry and writer
# ---------------------------------------------------------------------------

NOTEBOOKS: list[tuple[str, list[tuple[str, str]]]] = [
    ("01_ct_physics.ipynb", CT_PHYSICS),
    ("02_mri_physics.ipynb", MRI_PHYSICS),
    ("03_train_lpd.ipynb", TRAIN_LPD),
    ("04_load_and_reconstruct.ipynb", LOAD_AND_RECONSTRUCT),
    ("05_uncertainty.ipynb", UNCERTAINTY),
    ("06_task_adapted.ipynb", TASK_ADAPTED),
    ("07_blind_spots.ipynb", BLIND_SPOTS),
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
