"""SENSE-throughput benchmark (the SENSE throughput protocol of docs/protocols.md).

Batch 8, 8 coils, 256 x 256, a Cartesian line mask (4x, 8% centre lines), one
forward plus one adjoint, complex64, 2 CPU threads. pirecon's
``SenseOperator`` is timed against references measured in the same run:
sigpy's ``mri.linop.Sense`` (a loop over the batch), deepinv's
``MultiCoilMRI`` where deepinv is installed, and a plain torch version with
``fftshift``. Each reference's output is compared with pirecon's (the last
column); a difference above 1e-5 stops the script.

The FFT limit: one ``torch.fft.fft2`` and one ``torch.fft.ifft2`` of the
``(8, 8, 256, 256)`` complex64 coil images (about ``2 * 64 * 5 N log2 N`` =
0.67 GFLOP, ``N = 256^2``), timed in the same run: what forward plus adjoint
would cost if the multiplies, the mask and the coil sum were free and the
FFTs ran over the whole k-space. pirecon's time over it is the last ratio
printed (a line mask lets pirecon transform only the sampled columns along
``H``, so the ratio can go below 1).

    python experiments/benchmarks/mri_operators.py [--threads 2] [--repeats 10] [--json out.json]
"""

from __future__ import annotations

import argparse
import json

import numpy as np
import torch

from _timing import median_time



def relative_difference(a, b) -> float:
    a, b = torch.as_tensor(np.asarray(a)), torch.as_tensor(np.asarray(b))
    return float(torch.linalg.vector_norm(a - b) / torch.linalg.vector_norm(b))


def sigpy_reference(maps, mask, x):
    import sigpy.mri

    B = x.shape[0]
    weights = np.broadcast_to(mask.numpy(), (B, 1, *maps.shape[-2:]))
    ops = [sigpy.mri.linop.Sense(maps[i].numpy(), weights=weights[i, 0].copy()) for i in range(B)]
    images = x[:, 0].numpy()

    def run():
        return np.stack([ops[i].H * (ops[i] * images[i]) for i in range(B)])[:, None]

    return run


def deepinv_reference(maps, mask, x):
    """deepinv's MultiCoilMRI on 2-channel real images; ``None`` if deepinv is not installed."""
    try:
        from deepinv.physics import MultiCoilMRI
    except ImportError:
        return None
    H, W = maps.shape[-2:]
    physics = MultiCoilMRI(mask=mask.expand(x.shape[0], 1, H, W), coil_maps=maps, img_size=(1, H, W))
    x2 = torch.view_as_real(x[:, 0]).permute(0, 3, 1, 2).contiguous()  # (B, 2, H, W)

    def run():
        with torch.no_grad():
            out = physics.A_adjoint(physics.A(x2))
        return torch.view_as_complex(out.permute(0, 2, 3, 1).contiguous())[:, None]

    return run


def plain_torch_reference(maps, mask, x):
    def run():
        with torch.no_grad():
            k = mask * torch.fft.fftshift(torch.fft.fft2(torch.fft.ifftshift(maps * x, dim=(-2, -1)), norm="ortho"),
                                          dim=(-2, -1))
            images = torch.fft.fftshift(torch.fft.ifft2(torch.fft.ifftshift(mask * k, dim=(-2, -1)), norm="ortho"),
                                        dim=(-2, -1))
            return (images * maps.conj()).sum(dim=1, keepdim=True)

    return run


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--json")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    from pirecon.mri import SenseOperator
    from pirecon.mri.masks import RandomMask

    B, C, N = 8, 8, args.size
    gen = torch.Generator().manual_seed(0)
    maps = torch.complex(torch.randn(B, C, N, N, generator=gen), torch.randn(B, C, N, N, generator=gen))
    maps = maps / torch.sqrt((maps.abs() ** 2).sum(dim=1, keepdim=True))
    x = torch.complex(torch.randn(B, 1, N, N, generator=gen), torch.randn(B, 1, N, N, generator=gen))
    mask = RandomMask([0.08], [4])((N, N), batch_size=B, seed=0).mask  # (B, 1, 1, N)

    A = SenseOperator(maps, mask)

    def ours():
        with torch.no_grad():
            return A.T(A(x))

    expected = ours()
    t_ours = median_time(ours, args.repeats)
    coil_images = maps * x

    def fft_limit():
        with torch.no_grad():
            return torch.fft.ifft2(torch.fft.fft2(coil_images, norm="ortho"), norm="ortho")

    t_fft = median_time(fft_limit, args.repeats)
    fft_gflop = 2 * B * C * 5 * N * N * np.log2(N * N) / 1e9
    rows = [{"operator": "pirecon SenseOperator", "seconds": t_ours, "difference": 0.0}]
    references = {
        "sigpy mri.linop.Sense": sigpy_reference(maps, mask, x),
        "deepinv MultiCoilMRI": deepinv_reference(maps, mask, x),
        "torch with fftshift": plain_torch_reference(maps, mask, x),
    }
    for name, run in references.items():
        if run is None:
            rows.append({"operator": name, "seconds": None, "difference": None})
            continue
        difference = relative_difference(np.asarray(run()), expected.numpy())
        if difference > 1e-5:
            raise SystemExit(f"{name}: output differs from pirecon's by {difference:.2e}; the comparison is void")
        rows.append({"operator": name, "seconds": median_time(run, args.repeats), "difference": difference})

    print(f"SENSE forward + adjoint, batch {B}, {C} coils, {N}x{N}, complex64, {args.threads} threads "
          f"(median of {args.repeats})\n")
    print("| operator | time (ms) | pirecon speed-up | relative difference to pirecon |")
    print("|---|---:|---:|---:|")
    for r in rows:
        if r["seconds"] is None:
            print(f"| {r['operator']} | not installed | | |")
            continue
        r["speedup"] = r["seconds"] / t_ours
        print(f"| {r['operator']} | {1e3 * r['seconds']:.1f} | {r['speedup']:.2f} | {r['difference']:.1e} |")
    print(f"\nFFT limit (fft2 + ifft2 of the coil images, {fft_gflop:.2f} GFLOP): {1e3 * t_fft:.1f} ms "
          f"({fft_gflop / t_fft:.1f} GFLOP/s); pirecon / FFT limit: {t_ours / t_fft:.2f}")
    results = {"protocol": {"batch": B, "coils": C, "size": N, "threads": args.threads}, "rows": rows,
               "fft_limit_seconds": t_fft, "fft_gflop": fft_gflop, "pirecon_over_fft_limit": t_ours / t_fft}
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)
    return results


if __name__ == "__main__":
    main()
