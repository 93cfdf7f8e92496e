"""FBP agreement with ODL's ``fbp_op`` on the LPD-ellipses protocol.

Modified Shepp-Logan, 128 x 128 on [-64, 64]^2 mm, 30 parallel-beam angles,
183 detectors; noise-free and with Gaussian noise of std 5% of mean |data|.
The same sinogram goes to ``pirecon.ct.fbp`` and to ODL's ``fbp_op`` (ASTRA
CPU ray transform) with the same filter; PSNRs are against the phantom.

    python experiments/benchmarks/fbp_vs_odl.py
"""

from __future__ import annotations

import torch


def main() -> list[dict]:
    from pirecon.ct import FILTERS, RayTransform, fbp, lpd_ellipses_geometry
    from pirecon.ct.odl_backend import odl_fbp
    from pirecon.metrics import psnr
    from pirecon.noise import GaussianNoise
    from pirecon.phantoms import shepp_logan

    geometry = lpd_ellipses_geometry()
    truth = shepp_logan(geometry.image_shape, dtype=torch.float64)
    clean = RayTransform(geometry)(truth)
    data = {"noise-free": clean, "5% noise": GaussianNoise(relative=0.05)(clean, seed=7)}
    rows = []
    print("| data | filter | pirecon PSNR (dB) | ODL fbp_op PSNR (dB) | difference (dB) |")
    print("|---|---|---:|---:|---:|")
    for label, sinogram in data.items():
        for name in FILTERS:
            ours = float(psnr(fbp(sinogram, geometry, name), truth)[0])
            theirs = float(psnr(odl_fbp(sinogram, geometry, name), truth)[0])
            rows.append({"data": label, "filter": name, "pirecon": ours, "odl": theirs})
            print(f"| {label} | {name} | {ours:.2f} | {theirs:.2f} | {ours - theirs:+.3f} |")
    return rows


if __name__ == "__main__":
    main()
