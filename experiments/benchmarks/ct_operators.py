"""Operator-throughput benchmark for the CT ray transform (the Operator throughput protocol of docs/protocols.md).

2D parallel beam, 256 x 256 image (1 mm pixels), 360 angles on [0, pi), 363
detectors of 1 mm, batch 8, one forward plus one adjoint, float32, 2 CPU
threads. Each pirecon backend is timed against two references measured in
the same run: ASTRA's CPU projector called directly (``linear``, a loop over
the batch) and ODL's torch ``OperatorModule``. The adjoint error of each
backend is measured in float64.

    python experiments/benchmarks/ct_operators.py [--threads 2] [--repeats 5] [--json out.json]

Prints a Markdown table; ``--quick`` runs a small geometry to check the script.
"""

from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np
import torch

from _timing import median_time



def astra_direct(geometry, images: np.ndarray):
    """Forward and adjoint with ASTRA's own API, as a user of ASTRA would call it."""
    import astra

    proj = astra.create_projector("linear", geometry.astra_projection_geometry(), geometry.astra_volume_geometry())

    def run():
        for image in images:
            sid, sino = astra.create_sino(image, proj)
            bid, _ = astra.create_backprojection(sino, proj)
            astra.data2d.delete([sid, bid])

    return run, lambda: astra.projector.delete(proj)


def odl_operator_module(geometry, images: torch.Tensor):
    from odl.contrib.torch import OperatorModule

    from pirecon.ct.odl_backend import odl_ray_transform

    ray_trafo = odl_ray_transform(geometry, impl="astra_cpu")
    forward, adjoint = OperatorModule(ray_trafo), OperatorModule(ray_trafo.adjoint)

    def run():
        with torch.no_grad():
            adjoint(forward(images))

    return run


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--quick", action="store_true", help="64 x 64 image, 45 angles: checks the script only")
    parser.add_argument("--json", help="also write the results to this JSON file")
    args = parser.parse_args(argv)

    torch.set_num_threads(args.threads)
    from pirecon import adjoint_test
    from pirecon.ct import ParallelBeam2D, RayTransform

    if args.quick:
        geometry = ParallelBeam2D((64, 64), num_angles=45, num_detectors=91, detector_spacing=1.0)
    else:
        geometry = ParallelBeam2D((256, 256), num_angles=360, num_detectors=363, detector_spacing=1.0)
    gen = torch.Generator().manual_seed(0)
    images = torch.rand(args.batch, 1, *geometry.image_shape, generator=gen)

    rows = []
    reference_run, release = astra_direct(geometry, images[:, 0].numpy())
    t_astra = median_time(reference_run, args.repeats)
    release()
    t_odl = median_time(odl_operator_module(geometry, images[:, 0]), max(1, args.repeats // 2))

    for backend in ("sparse", "astra", "odl"):
        start = time.perf_counter()
        op = RayTransform(geometry, backend=backend)
        setup = time.perf_counter() - start

        def run(op=op):
            with torch.no_grad():
                op.T(op(images))

        seconds = median_time(run, args.repeats if backend != "odl" else max(1, args.repeats // 2))
        rows.append({
            "backend": backend,
            "seconds": seconds,
            "vs_astra_cpu": t_astra / seconds,
            "vs_odl_module": t_odl / seconds,
            "adjoint_error_float64": adjoint_test(op, dtype=torch.float64),
            "setup_seconds": setup,
        })

    results = {
        "protocol": {
            "image_shape": geometry.image_shape, "num_angles": geometry.num_angles,
            "num_detectors": geometry.num_detectors, "batch": args.batch, "dtype": "float32",
            "threads": args.threads, "repeats": args.repeats,
        },
        "references": {"astra_cpu_direct": t_astra, "odl_operator_module": t_odl},
        "backends": rows,
    }
    h, w = geometry.image_shape
    print(f"Forward + adjoint, {h}x{w}, {geometry.num_angles} angles, {geometry.num_detectors} detectors, "
          f"batch {args.batch}, float32, {args.threads} threads (median of {args.repeats})\n")
    print("| operator | time (s) | speed-up vs ASTRA CPU | speed-up vs ODL OperatorModule | adjoint error (float64) |")
    print("|---|---:|---:|---:|---:|")
    print(f"| ASTRA CPU, direct (reference) | {t_astra:.3f} | 1.0 | {t_odl / t_astra:.2f} | |")
    print(f"| ODL OperatorModule (reference) | {t_odl:.3f} | {t_astra / t_odl:.2f} | 1.0 | |")
    for r in rows:
        print(f"| pirecon `{r['backend']}` | {r['seconds']:.3f} | {r['vs_astra_cpu']:.1f} | "
              f"{r['vs_odl_module']:.1f} | {r['adjoint_error_float64']:.1e} |")
    sparse_setup = rows[0]["setup_seconds"]
    nnz = RayTransform(geometry, backend="sparse").impl.matrix.nnz
    results["sparse_nonzeros"] = nnz
    print(f"\nsparse backend: {nnz / 1e6:.1f} M nonzeros; setup (build or load the cached system matrix) "
          f"{sparse_setup:.1f} s; cache directory: {os.environ.get('PIRECON_CACHE_DIR', 'default user cache')}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)
    return results


if __name__ == "__main__":
    main()
