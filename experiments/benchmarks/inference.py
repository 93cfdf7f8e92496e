"""Inference throughput of ``pirecon.load(...).reconstruct(file)`` against the same model in a plain loop.

Protocol: a 100-slice LPD-ellipses raw file (docs/protocols.md: 128 x 128, 30 angles, 183 detectors, 5%
Gaussian noise; ``pirecon simulate``), 2 CPU threads, batch 8, float32. Each method reconstructs the whole
file through the API (reading the file, checking it against its spec, batching, provenance) and, in the
same run, in a plain loop over the measurements already in memory (``model(y[i:i+8], physics)`` under
``torch.no_grad``). Times are medians of ``--repeats`` runs after a warm-up, the two ways interleaved; peak memory is the process's
resident-set high-water mark during the run (``VmHWM``, reset before each run through
``/proc/self/clear_refs``), reported as the increase over the resident set before the run.

    python experiments/benchmarks/inference.py [--checkpoint CKPT] [--slices 100] [--repeats 11]

The LPD is the main job's network (``pirecon.job.JOB_MODEL``), from ``--checkpoint`` (a checkpoint of
``pirecon fit`` / ``pirecon job``) or freshly initialised and written as a checkpoint here (throughput does
not depend on the weights). Prints a Markdown table; ``--json`` writes the numbers.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import time
from pathlib import Path

import torch

from _timing import scratch_directory


def _rss_kib(field: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def _reset_peak() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def _run_once(run) -> tuple[float, float | None]:
    """Seconds of one ``run()`` and the increase of the resident-set high-water mark over the resident set (MiB)."""
    reset = _reset_peak()
    before = _rss_kib("VmRSS")
    start = time.perf_counter()
    run()
    seconds = time.perf_counter() - start
    peak = _rss_kib("VmHWM") if reset else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return seconds, None if before is None or peak is None else max(peak - before, 0) / 1024


def measure(runs: dict, repeats: int) -> dict:
    """Median seconds and largest peak-memory increase of each ``runs[name]()``, after one warm-up each, the
    runs interleaved (a, b, a, b, ...) so that a drift of the machine's speed affects them alike."""
    for run in runs.values():
        run()
    samples: dict = {name: [] for name in runs}
    for _ in range(repeats):
        for name, run in runs.items():
            samples[name].append(_run_once(run))
    out = {}
    for name, values in samples.items():
        peaks = [peak for _, peak in values if peak is not None]
        out[name] = {"seconds": statistics.median(t for t, _ in values), "peak_mib": max(peaks) if peaks else None}
    return out


def write_checkpoint(path: Path, geometry, noise) -> Path:
    """A freshly initialised ``pirecon.job.JOB_MODEL`` as a checkpoint of the layout ``pirecon fit`` writes."""
    from pirecon.job import JOB_MODEL
    from pirecon.training import ReconstructionModule

    torch.manual_seed(0)
    module = ReconstructionModule(JOB_MODEL)
    module.set_physics("ct", geometry, noise)
    checkpoint = {"state_dict": module.state_dict(), "hyper_parameters": dict(module.hparams)}
    module.on_save_checkpoint(checkpoint)
    torch.save(checkpoint, path)
    return path


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", help="an LPD-ellipses checkpoint (default: the job's network, initialised)")
    parser.add_argument("--slices", type=int, default=100)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--tv-iterations", type=int, default=300)
    parser.add_argument("--repeats", type=int, default=11)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", help="write the results here")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    import pirecon
    from pirecon.data.acquisition import read_acquisition
    from pirecon.data.simulate import simulate
    from pirecon.job import TV_LAMBDAS

    with scratch_directory(None, "pirecon-inference-") as root:
        raw = simulate(root / "raw.h5", n=args.slices, progress=False, split="test", seed=0)
        acquisition = read_acquisition(raw)
        geometry = acquisition.physics.metadata["geometry"]
        checkpoint = Path(args.checkpoint) if args.checkpoint else \
            write_checkpoint(root / "lpd.ckpt", geometry, acquisition.physics.noise)
        lam = TV_LAMBDAS[3]
        methods = {
            "LPD (checkpoint)": pirecon.load(checkpoint),
            "FBP (Hann)": pirecon.reconstructor("fbp", filter="hann"),
            f"TV ({args.tv_iterations} iterations)": pirecon.reconstructor("tv", lam=lam,
                                                                             iterations=args.tv_iterations),
        }
        y, physics, b = acquisition.y, acquisition.physics, args.batch_size
        rows = []
        for name, reconstructor in methods.items():
            model = reconstructor.model

            def plain():
                with torch.no_grad():
                    return [model(y[i:i + b], physics).image for i in range(0, len(y), b)]

            def api():
                return reconstructor.reconstruct(raw, batch_size=b, progress=False)

            timings = measure({"plain": plain, "api": api}, args.repeats)
            loop, door = timings["plain"], timings["api"]
            rows.append({"method": name, "plain_seconds": loop["seconds"], "api_seconds": door["seconds"],
                         "plain_slices_per_second": args.slices / loop["seconds"],
                         "api_slices_per_second": args.slices / door["seconds"],
                         "overhead": door["seconds"] / loop["seconds"] - 1,
                         "plain_peak_mib": loop["peak_mib"], "api_peak_mib": door["peak_mib"]})
        def read_only():
            import h5py

            with h5py.File(raw, "r") as f:
                return f["sinogram"][()]

        reading = measure({"read": read_only}, args.repeats)["read"]["seconds"]
    results = {"slices": args.slices, "read_seconds": reading, "batch_size": b, "threads": args.threads, "torch": str(torch.__version__),
               "checkpoint": str(args.checkpoint) if args.checkpoint else "initialised JOB_MODEL", "rows": rows}
    print(f"{args.slices}-slice LPD-ellipses file, batch {b}, {args.threads} threads, float32 "
          f"(medians of {args.repeats})\n")
    print("| method | API: slices/s | plain loop: slices/s | API overhead | API - loop (ms) | "
          "peak memory API / loop (MiB) |")
    print("|---|---:|---:|---:|---:|---:|")
    for r in rows:
        peaks = "-" if r["api_peak_mib"] is None else f"{r['api_peak_mib']:.0f} / {r['plain_peak_mib']:.0f}"
        print(f"| {r['method']} | {r['api_slices_per_second']:.1f} | {r['plain_slices_per_second']:.1f} | "
              f"{100 * r['overhead']:+.1f}% | {1000 * (r['api_seconds'] - r['plain_seconds']):.0f} | {peaks} |")
    print(f"\nReading the file's {args.slices} sinograms alone (h5py, gzip): {1000 * reading:.0f} ms.")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return results


if __name__ == "__main__":
    main()
