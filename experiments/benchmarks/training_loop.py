"""Steps per second of the CPU configuration's whole training loop: float32 against the fast settings.

``pirecon.training.fit.fit_on_simulation`` with the LPD of ``ct_lpd_ellipses_cpu.yaml`` (``pirecon.job.JOB_MODEL``)
at batch 2 on the LPD-ellipses stream, as ``pirecon job`` and ``pirecon fit`` run it: every step simulates
its batch in the training process, runs Lightning's hooks, clips the gradient norm, logs, and every 200
steps validates on 4 validation images. Each setting trains a short and a long run (``--steps`` and
``--steps + --extra``); the difference of their wall times over ``--extra`` is the time of one steady-state
step, free of start-up and of compiling (which is reported apart, as the short run's time beyond its
steps). Settings: ``float32`` (eager float32, as before the speed-ups) and ``fast``
(:func:`pirecon.models.fast_training_options`). Both are measured in the same invocation.

    python experiments/benchmarks/training_loop.py [--steps 200] [--extra 1000] [--out DIR]
"""

from __future__ import annotations

import argparse
import shutil
import time
from pathlib import Path

from _timing import scratch_directory
from pirecon.job import JOB_LR, JOB_MODEL, _simulation_options, prepare_data
from pirecon.models import fast_training_options
from pirecon.training.fit import fit_on_simulation


def wall_time(out: Path, val: Path, steps: int, options: dict) -> float:
    shutil.rmtree(out, ignore_errors=True)
    start = time.perf_counter()
    fit_on_simulation(out, val, model=JOB_MODEL, simulation=_simulation_options(0), steps=steps, lr=JOB_LR,
                      progress=False, **options)
    return time.perf_counter() - start


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--extra", type=int, default=1000)
    parser.add_argument("--out", type=Path, default=None, help="scratch directory (default: a temporary one)")
    args = parser.parse_args(argv)
    with scratch_directory(args.out, "pirecon-loop-") as root:
        _, val = prepare_data(root / "data", num_test=1)
        settings = {"float32": {}, "fast": fast_training_options("cpu")}
        rows = {}
        for name, options in settings.items():
            short = wall_time(root / f"{name}-short", val, args.steps, options)
            long = wall_time(root / f"{name}-long", val, args.steps + args.extra, options)
            step = (long - short) / args.extra
            rows[name] = (step, short - args.steps * step)
        base = rows["float32"][0]
        print(f"Training loop of ct_lpd_ellipses_cpu.yaml's LPD, batch 2 ({args.extra} steps beyond {args.steps})\n")
        print("| setting | s / step | steps / s | speed-up | start-up and compiling (s) |")
        print("|---|---:|---:|---:|---:|")
        for name, (step, startup) in rows.items():
            print(f"| {name} | {step:.4f} | {1 / step:.1f} | {base / step:.2f} | {startup:.1f} |")


if __name__ == "__main__":
    main()
