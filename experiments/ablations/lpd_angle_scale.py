"""Why a Learned Primal-Dual trained at 30 angles fails at fewer: the scale of its normalised operator.

LPD works with ``K = A / ||A||`` and ``g = y / ||A||``, ``||A||`` computed for the data's own geometry
(``pirecon.models.physics_tools.operator_scale``). With fewer angles ``||A||`` drops (about ``sqrt(30 / n)``),
so the networks see data on a scale they were not trained on. This reconstructs each panel condition twice,
with the data's own ``1 / ||A||`` and with the reference condition's (the training geometry's), and prints
the mean PSNR of both:

    python experiments/ablations/lpd_angle_scale.py runs/ct_lpd_ellipses_cpu/checkpoints/last.ckpt \
        --panel runs/panels/ct-v1 [--conditions angles_20 angles_10]
"""

from __future__ import annotations

import argparse
from contextlib import contextmanager
from pathlib import Path

import numpy as np


@contextmanager
def operator_scale_fixed_at(scale: float):
    """LPD's ``operator_scale`` replaced by the constant ``scale`` inside the block."""
    import pirecon.models.lpd as lpd

    own = lpd.operator_scale
    lpd.operator_scale = lambda physics: scale
    try:
        yield
    finally:
        lpd.operator_scale = own


def mean_psnr(model, path: Path) -> float:
    result = model.reconstruct(path, batch_size=32, progress=False, metrics=True, physics_mismatch="use_data")
    return float(np.mean(result.provenance["metrics"]["psnr_db"]))


def main(argv=None) -> None:
    import pirecon
    from pirecon.data.acquisition import physics_from_file
    from pirecon.evaluation import verify_panel
    from pirecon.models.physics_tools import operator_scale

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint")
    parser.add_argument("--panel", required=True)
    parser.add_argument("--conditions", nargs="+", default=["angles_20", "angles_10"])
    args = parser.parse_args(argv)
    manifest = verify_panel(args.panel)
    files = {c["name"]: Path(args.panel) / c["file"] for c in manifest["conditions"]}
    reference = next(c["name"] for c in manifest["conditions"] if c["kind"] == "reference")
    model = pirecon.load(args.checkpoint)

    def scale_of(name: str) -> float:
        return operator_scale(physics_from_file(files[name]))

    trained = scale_of(reference)
    print(f"| condition | 1 / ||A|| relative to {reference} | PSNR, own scale (dB) | PSNR, {reference}'s scale (dB) |")
    print("|---|---:|---:|---:|")
    for name in [reference, *args.conditions]:
        own = mean_psnr(model, files[name])
        with operator_scale_fixed_at(trained):
            fixed = mean_psnr(model, files[name])
        print(f"| {name} | {scale_of(name) / trained:.3f} | {own:.2f} | {fixed:.2f} |")


if __name__ == "__main__":
    main()
