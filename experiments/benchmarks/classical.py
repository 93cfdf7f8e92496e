"""Classical baselines on the LPD-ellipses protocol and on simulated multi-coil MRI.

CT (LPD-ellipses protocol, docs/protocols.md): 128 x 128 on [-64, 64]^2 mm, 30 angles, 183
detectors, Gaussian noise with std 5% of mean |data|. Test data: modified
Shepp-Logan and 100 held-out random-ellipse images; each method's parameter
(FBP filter, TV lambda, iteration counts) is chosen by a grid on 10 separate
validation ellipse images (``pirecon.tuning.grid_search``). Nonnegativity is
imposed on Shepp-Logan (a nonnegative image class) and not on the random
ellipses, whose intensities are negative in places.

MRI: 8 birdcage coils, 128 x 128 Shepp-Logan and ellipse images times a
smooth phase, 4x random line mask (8% centre lines), complex Gaussian noise;
zero-filled SENSE adjoint, CG-SENSE and TV.

    python experiments/benchmarks/classical.py [--num-test 100] [--tv-iterations 2000]

Prints Markdown tables with PSNR / SSIM (mean over images) and run times.
"""

from __future__ import annotations

import argparse

import torch

from _timing import timed



def ct_table(num_test: int, tv_iterations: int) -> list[dict]:
    from pirecon import solvers
    from pirecon.ct import FILTERS, RayTransform, fbp, lpd_ellipses_geometry
    from pirecon.metrics import psnr, ssim
    from pirecon.noise import GaussianNoise
    from pirecon.phantoms import random_ellipses, shepp_logan
    from pirecon.tuning import grid_search

    A = RayTransform(lpd_ellipses_geometry())
    noise = GaussianNoise(relative=0.05)
    validation = random_ellipses((128, 128), 10, seed=7, start_index=2_000_000)
    y_val = noise(A(validation), seed=8)
    tests = {"Shepp-Logan": shepp_logan((128, 128)),
             f"{num_test} ellipses": random_ellipses((128, 128), num_test, seed=7, start_index=1_000_000)}
    data = {name: (x, noise(A(x), seed=9)) for name, x in tests.items()}

    methods = {
        "FBP": (lambda y, f, nonneg: fbp(y, A, f), list(FILTERS), "filter"),
        "CGLS": (lambda y, k, nonneg: solvers.cgls(y, A, iterations=k).image, [5, 10, 20, 40], "iterations"),
        "SIRT": (lambda y, k, nonneg: solvers.sirt(y, A, iterations=k, nonnegative=nonneg).image,
                 [25, 50, 100, 200], "iterations"),
        "TV (PDHG)": (lambda y, lam, nonneg: solvers.tv_pdhg(y, A, lam=lam, iterations=tv_iterations,
                                                             nonnegative=nonneg).image,
                      [0.5, 1.0, 2.0, 4.0, 8.0], "lambda"),
    }
    rows = []
    for name, (run, grid, label) in methods.items():
        tuned = grid_search(lambda value: run(y_val, value, False), grid, validation)
        row = {"method": name, "parameter": f"{label} = {tuned.best}"}
        for dataset, (x, y) in data.items():
            nonnegative = dataset == "Shepp-Logan"
            image, seconds = timed(lambda: run(y, tuned.best, nonnegative))
            row[dataset] = (float(psnr(image, x).mean()), float(ssim(image, x).mean()), seconds)
        rows.append(row)
    return rows


def mri_table(num_test: int, tv_iterations: int) -> list[dict]:
    from pirecon import solvers
    from pirecon.metrics import psnr, ssim
    from pirecon.mri import RandomMask, SenseOperator, birdcage_maps
    from pirecon.phantoms import random_ellipses, shepp_logan
    from pirecon.tuning import grid_search

    n = 128
    gen = torch.Generator().manual_seed(3)
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, n), torch.linspace(-1, 1, n), indexing="ij")
    phase = torch.exp(1j * (0.8 * xx + 0.5 * yy ** 2))

    def images(magnitude):
        return (magnitude.abs() * phase).to(torch.complex64)

    maps = birdcage_maps(8, (n, n))
    sets = {"validation": images(random_ellipses((n, n), 8, seed=11, start_index=2_000_000)),
            "Shepp-Logan": images(shepp_logan((n, n))),
            f"{num_test} ellipses": images(random_ellipses((n, n), num_test, seed=11, start_index=1_000_000))}
    data = {}
    for name, x in sets.items():
        mask = RandomMask([0.08], [4])((n, n), batch_size=x.shape[0], seed=12).mask
        A = SenseOperator(maps, mask)
        k = A(x)
        sigma = 0.02 * float(k.abs()[k.abs() > 0].mean())
        noise = torch.complex(torch.randn(k.shape, generator=gen), torch.randn(k.shape, generator=gen)) * sigma
        data[name] = (x, A, k + noise * mask)

    methods = {
        "zero-filled (SENSE adjoint)": (lambda A, y, _: A.adjoint(y), [None], "-"),
        "CG-SENSE": (lambda A, y, k: solvers.cgls(y, A, iterations=k).image, [5, 10, 20, 40], "iterations"),
        "TV (PDHG)": (lambda A, y, lam: solvers.tv_pdhg(y, A, lam=lam, iterations=tv_iterations).image,
                      [0.005, 0.01, 0.02, 0.05], "lambda"),
    }
    rows = []
    x_val, A_val, y_val = data["validation"]
    for name, (run, grid, label) in methods.items():
        tuned = grid_search(lambda value: run(A_val, y_val, value), grid, x_val)
        row = {"method": name, "parameter": "-" if label == "-" else f"{label} = {tuned.best}"}
        for dataset in ("Shepp-Logan", f"{num_test} ellipses"):
            x, A, y = data[dataset]
            image, seconds = timed(lambda: run(A, y, tuned.best))
            row[dataset] = (float(psnr(image.abs(), x.abs()).mean()), float(ssim(image.abs(), x.abs()).mean()), seconds)
        rows.append(row)
    return rows


def print_table(title: str, rows: list[dict]) -> None:
    datasets = [k for k in rows[0] if k not in ("method", "parameter")]
    print(f"\n{title}\n")
    header = "| method | tuned parameter | " + " | ".join(f"{d}: PSNR (dB) / SSIM / time (s)" for d in datasets) + " |"
    print(header)
    print("|---|---|" + "---:|" * len(datasets))
    for row in rows:
        cells = " | ".join(f"{p:.2f} / {s:.3f} / {t:.2f}" for p, s, t in (row[d] for d in datasets))
        print(f"| {row['method']} | {row['parameter']} | {cells} |")


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num-test", type=int, default=100)
    parser.add_argument("--tv-iterations", type=int, default=2000)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    with torch.no_grad():
        ct = ct_table(args.num_test, args.tv_iterations)
        print_table("CT, LPD-ellipses protocol (5% noise)", ct)
        mri = mri_table(args.num_test, args.tv_iterations // 4)
        print_table("MRI, 8 coils, 128 x 128, 4x random mask", mri)
    return {"ct": ct, "mri": mri}


if __name__ == "__main__":
    main()
