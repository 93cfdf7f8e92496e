"""How close one training step of each unrolled network comes to this CPU's peak (the CPU roofline protocol).

1. Peak: the best of 5 products of two 4096 x 4096 matrices (``torch.mm``, oneDNN/MKL), in float32 and,
   where the CPU computes it natively (AVX512-BF16, AMX), in bfloat16: ``2 n^3 / seconds``.
2. For each model on the LPD-ellipses protocol (128 x 128 images, 30 angles, 183 detectors, the
   ``sparse`` ray transform, 5% Gaussian noise) and each batch size, one training step (forward, mean
   squared error, backward, Adam) in two settings:

   * ``float32``: eager float32, contiguous (NCHW) weights (the step before the speed-ups);
   * ``fast``: :func:`pirecon.models.fast_training_options` (bfloat16 autocast for the networks, the
     ray transform in float32, channels-last weights, CNN blocks compiled by ``torch.compile``).

   Reported per step: the convolution FLOPs (``torch.utils.flop_counter``; forward and backward of
   every convolution), the other FLOPs it counts (the sparse ray transform counted as ``2 nnz`` per
   column, not as a dense product), the median step time, the convolution GFLOP/s over the
   convolutions' own time (from the profiler) and over the whole step, the fraction of the peak of the
   step's precision (float32 peak for ``float32``, bfloat16 peak for ``fast``), and where the time goes
   by operator kind (profiler, self CPU time).
3. One 3 x 3 convolution (bias, PReLU after it), forward and backward, on a 128 x 128 batch of 2 at widths
   16, 32, 64 and 128 channels in and out, float32 and bfloat16 (channels-last, eager): how the fraction
   of peak a convolution reaches depends on its width alone.
4. Threads: the ``fast`` LPD of ``ct_lpd_ellipses_cpu.yaml`` at batch 2 with 1 and 2 intra-op threads and
   with ``OMP_WAIT_POLICY`` unset, ``PASSIVE`` and ``ACTIVE`` (each in its own process).

    python experiments/benchmarks/cpu_roofline.py [--threads 2] [--repeats 5] [--batches 2 5]
        [--models lpd-cpu lpd-paper lgd modl unet] [--modes float32 fast] [--no-thread-sweep] [--json FILE]

Markdown tables go to stdout, progress to stderr. Compile time (the first steps of ``fast``) is reported
apart from the steady state.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from contextlib import nullcontext

import torch
from torch.profiler import ProfilerActivity, profile
from torch.utils.flop_counter import FlopCounterMode

from _timing import median_time
from pirecon.models.acceleration import cpu_bf16_native

MODELS = {
    "lpd-cpu": ("LPD, ct_lpd_ellipses_cpu.yaml (5 it, 16 hidden, FBP start)",
                "lpd", dict(iterations=5, hidden=16, initial="fbp", identity_init=True)),
    "lpd-paper": ("LPD, paper size (10 it, 32 hidden)", "lpd", dict(iterations=10, hidden=32)),
    "lgd": ("LGD (10 it, 32 hidden)", "lgd", dict(iterations=10, memory=5, hidden=32)),
    "modl": ("MoDL (10 it x 10 CG, 64 hidden, 5 layers)", "modl", dict(iterations=10, cg_iterations=10, hidden=64,
                                                                       layers=5)),
    "unet": ("post-processing U-Net (32 channels, depth 4)", "unet", dict(channels=32, depth=4)),
}

KINDS = (  # (kind, substrings of profiler event names), first match wins
    ("convolution", ("conv",)),
    ("PReLU / activation", ("prelu", "relu", "leaky")),
    ("normalisation", ("instance_norm", "batch_norm", "native_batch_norm", "var_mean")),
    ("ray transform (sparse)", ("addmm", "aten::mm", "_applylinear", "sparse")),
    ("FFT (FBP filter)", ("fft",)),
    ("optimizer", ("adam", "optimizer", "_foreach")),
    ("compiled element-wise", ("compiledfxgraph", "compiledfunction", "cpp_fused")),
    ("copies and layout", ("copy_", "_to_copy", "contiguous", "cat", "reorder", "to_dense", "clone")),
)


def _sparse_aware_mm(a, b, *args, out_val=None, **kwargs) -> int:
    """FLOPs of ``a @ b``: ``2 nnz(a) cols(b)`` when ``a`` is sparse, else the dense count."""
    if a.layout in (torch.sparse_csr, torch.sparse_coo):
        return 2 * a._nnz() * b.shape[-1]
    return 2 * a.shape[0] * a.shape[1] * b.shape[1]


_sparse_aware_mm._get_raw = True


def peak_gflops(dtype: torch.dtype, n: int = 4096) -> float:
    a, b = torch.randn(n, n).to(dtype), torch.randn(n, n).to(dtype)
    for _ in range(2):
        torch.mm(a, b)
    best = float("inf")
    for _ in range(5):
        start = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best / 1e9


def build_step(model_key: str, batch: int, mode: str):
    """``(step, model)``: one training step on fixed LPD-ellipses data, weights from ``torch.manual_seed(0)``."""
    from pirecon.ct import RayTransform, lpd_ellipses_geometry
    from pirecon.models import MODELS as CLASSES
    from pirecon.models import accelerate
    from pirecon.noise import GaussianNoise
    from pirecon.phantoms import random_ellipses
    from pirecon.physics import Physics

    _, name, args = MODELS[model_key]
    physics = Physics(RayTransform(lpd_ellipses_geometry(), backend="sparse"), GaussianNoise(relative=0.05))
    x = random_ellipses((128, 128), batch, seed=0)
    y = physics.simulate(x, seed=1)
    torch.manual_seed(0)
    model = CLASSES[name](**args)
    fast = mode == "fast"
    if fast:
        accelerate(model, channels_last=True, compile=True)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    autocast = torch.autocast("cpu", dtype=torch.bfloat16) if fast and cpu_bf16_native() else nullcontext()

    def step():
        optimizer.zero_grad(set_to_none=True)
        with autocast:
            image = model(y, physics).image
        loss = torch.nn.functional.mse_loss(image.float(), x)
        loss.backward()
        optimizer.step()
        return loss

    return step, model


def count_flops(model_key: str, batch: int) -> tuple[float, float]:
    """``(convolution FLOPs, other counted FLOPs)`` of one eager float32 step."""
    step, _ = build_step(model_key, batch, "float32")
    with FlopCounterMode(display=False, custom_mapping={torch.ops.aten.mm: _sparse_aware_mm}) as counter:
        step()
    counts = counter.get_flop_counts()["Global"]
    conv = sum(v for k, v in counts.items() if "convolution" in str(k))
    return float(conv), float(counter.get_total_flops() - conv)


def kind_of(event_name: str) -> str:
    lowered = event_name.lower()
    for kind, keys in KINDS:
        if any(key in lowered for key in keys):
            return kind
    return "other"


def profile_step(step, steps: int = 2) -> tuple[dict[str, float], float]:
    """Self CPU seconds per step by operator kind, and the convolutions' own seconds per step."""
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(steps):
            step()
    kinds: dict[str, float] = {}
    for event in prof.key_averages():
        if event.key.startswith("ProfilerStep") or event.key.startswith("autograd::engine"):
            continue
        kind = kind_of(event.key)
        kinds[kind] = kinds.get(kind, 0.0) + event.self_cpu_time_total / 1e6 / steps
    return kinds, kinds.get("convolution", 0.0)


def measure(model_key: str, batch: int, mode: str, repeats: int, flops: tuple[float, float]) -> dict:
    torch._dynamo.reset()
    step, _ = build_step(model_key, batch, mode)
    start = time.perf_counter()
    step()
    step()  # compiles forward and backward graphs (fast), allocator and caches warm
    warmup = time.perf_counter() - start
    seconds = median_time(step, repeats)
    kinds, conv_seconds = profile_step(step)
    conv_flops, other_flops = flops
    return {"model": model_key, "batch": batch, "mode": mode, "seconds": seconds, "warmup_seconds": warmup,
            "conv_gflop": conv_flops / 1e9, "other_gflop": other_flops / 1e9,
            "conv_gflops_own_time": conv_flops / conv_seconds / 1e9 if conv_seconds else float("nan"),
            "conv_gflops_step": conv_flops / seconds / 1e9, "kinds": kinds}


def convolution_by_width(widths=(16, 32, 64, 128), batch: int = 2, size: int = 128, repeats: int = 5) -> list[dict]:
    """GFLOP/s of one 3 x 3 convolution + PReLU, forward and backward, at each width, float32 and bfloat16."""
    rows = []
    for width in widths:
        for dtype in (torch.float32, torch.bfloat16):
            if dtype == torch.bfloat16 and not cpu_bf16_native():
                continue
            conv = torch.nn.Conv2d(width, width, 3, padding=1).to(dtype=dtype, memory_format=torch.channels_last)
            prelu = torch.nn.PReLU(width).to(dtype)
            x = torch.randn(batch, width, size, size, dtype=dtype).to(memory_format=torch.channels_last)
            x.requires_grad_(True)

            def step():
                prelu(conv(x)).sum().backward()

            seconds = median_time(step, repeats)
            flops = 3 * 2 * 9 * width * width * batch * size * size  # forward, input gradient, weight gradient
            rows.append({"width": width, "dtype": str(dtype).removeprefix("torch."), "seconds": seconds,
                         "gflops": flops / seconds / 1e9})
    return rows


def thread_row(threads: int, wait_policy: str | None, repeats: int) -> dict:
    """The fast LPD-cpu step at batch 2 in a child process with ``threads`` and ``OMP_WAIT_POLICY``."""
    env = dict(os.environ)
    env.pop("OMP_WAIT_POLICY", None)
    if wait_policy:
        env["OMP_WAIT_POLICY"] = wait_policy
    command = [sys.executable, __file__, "--thread-row", str(threads), "--repeats", str(repeats)]
    out = subprocess.run(command, env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1]) | {"wait_policy": wait_policy or "unset"}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--batches", type=int, nargs="+", default=[2, 5])
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--modes", nargs="+", default=["float32", "fast"], choices=["float32", "fast"])
    parser.add_argument("--no-thread-sweep", action="store_true")
    parser.add_argument("--thread-row", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--json")
    args = parser.parse_args(argv)

    if args.thread_row is not None:  # child process of the thread sweep
        torch.set_num_threads(args.thread_row)
        step, _ = build_step("lpd-cpu", 2, "fast")
        step()
        step()
        print(json.dumps({"threads": args.thread_row, "seconds": median_time(step, args.repeats)}))
        return {}

    torch.set_num_threads(args.threads)
    peaks = {"float32": peak_gflops(torch.float32)}
    if cpu_bf16_native():
        peaks["bfloat16"] = peak_gflops(torch.bfloat16)
    fast_peak = peaks.get("bfloat16", peaks["float32"])
    print(f"peak (4096^2 GEMM, {args.threads} threads): " +
          ", ".join(f"{k} {v:.0f} GFLOP/s" for k, v in peaks.items()), file=sys.stderr)

    rows = []
    for model_key in args.models:
        for batch in args.batches:
            flops = count_flops(model_key, batch)
            for mode in args.modes:
                print(f"{model_key} batch {batch} {mode} ...", file=sys.stderr, flush=True)
                row = measure(model_key, batch, mode, args.repeats, flops)
                row["peak_gflops"] = fast_peak if mode == "fast" else peaks["float32"]
                rows.append(row)

    print("single convolutions by width ...", file=sys.stderr, flush=True)
    widths = convolution_by_width()

    threads = []
    if not args.no_thread_sweep:
        for count, policy in ((1, None), (args.threads, None), (args.threads, "PASSIVE"), (args.threads, "ACTIVE")):
            print(f"threads {count}, OMP_WAIT_POLICY {policy or 'unset'} ...", file=sys.stderr, flush=True)
            threads.append(thread_row(count, policy, args.repeats))

    print(f"Peak on {args.threads} threads (4096 x 4096 GEMM, best of 5): " +
          ", ".join(f"{k} {v:.0f} GFLOP/s" for k, v in peaks.items()) + "\n")
    print("| model | batch | setting | conv GFLOP / step | other GFLOP | s / step | speed-up | conv GFLOP/s (own time) "
          "| fraction of peak | conv GFLOP/s (whole step) | compile + warm-up (s) |")
    print("|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    baseline = {(r["model"], r["batch"]): r["seconds"] for r in rows if r["mode"] == "float32"}
    for r in rows:
        base = baseline.get((r["model"], r["batch"]))
        speedup = f"{base / r['seconds']:.2f}" if base else "-"
        print(f"| {MODELS[r['model']][0]} | {r['batch']} | {r['mode']} | {r['conv_gflop']:.2f} | {r['other_gflop']:.2f} "
              f"| {r['seconds']:.3f} | {speedup} | {r['conv_gflops_own_time']:.0f} "
              f"| {r['conv_gflops_own_time'] / r['peak_gflops']:.0%} | {r['conv_gflops_step']:.0f} "
              f"| {r['warmup_seconds']:.1f} |")
    kinds = [k for k, _ in KINDS] + ["other"]
    print("\nWhere the time goes (profiler, self CPU time, share of the profiled step):\n")
    print("| model | batch | setting | " + " | ".join(kinds) + " |")
    print("|---|---:|---|" + "---:|" * len(kinds))
    for r in rows:
        total = sum(r["kinds"].values())
        print(f"| {MODELS[r['model']][0]} | {r['batch']} | {r['mode']} | " +
              " | ".join(f"{r['kinds'].get(k, 0.0) / total:.0%}" for k in kinds) + " |")
    print("\nOne 3 x 3 convolution + PReLU, forward and backward, batch 2, 128 x 128, channels-last, eager:\n")
    print("| channels in = out | dtype | ms | GFLOP/s | fraction of that dtype's peak |")
    print("|---:|---|---:|---:|---:|")
    for w in widths:
        peak = peaks["bfloat16" if w["dtype"] == "bfloat16" else "float32"]
        print(f"| {w['width']} | {w['dtype']} | {1e3 * w['seconds']:.2f} | {w['gflops']:.0f} | {w['gflops'] / peak:.0%} |")
    if threads:
        print("\nThreads (fast LPD of ct_lpd_ellipses_cpu.yaml, batch 2, each in its own process):\n")
        print("| intra-op threads | OMP_WAIT_POLICY | s / step |")
        print("|---:|---|---:|")
        for t in threads:
            print(f"| {t['threads']} | {t['wait_policy']} | {t['seconds']:.4f} |")
    results = {"threads": args.threads, "peaks_gflops": peaks, "rows": rows, "convolution_by_width": widths,
               "thread_sweep": threads}
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)
    return results


if __name__ == "__main__":
    main()
