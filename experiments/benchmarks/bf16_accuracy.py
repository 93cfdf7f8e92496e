"""Does bfloat16 training cost accuracy? The job's LPD after a fixed number of steps, float32 against fast.

Both runs train ``pirecon.job.JOB_MODEL`` from the same seed on the same LPD-ellipses stream for ``--steps``
steps at ``--batch-size`` (``pirecon.job.train_lpd``), one in float32 (eager), one with
:func:`pirecon.models.fast_training_options` (bfloat16 autocast for the networks, the ray transform in float32,
channels-last, compiled blocks). Each last checkpoint then reconstructs the 10 images of the seed's validation
split in float32; the table gives their mean PSNR, the difference, and each run's wall time (compiling
included).

    python experiments/benchmarks/bf16_accuracy.py [--steps 1000] [--batch-size 2] [--out DIR]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from pirecon.data.acquisition import read_acquisition
from _timing import scratch_directory
from pirecon.job import prepare_data, train_lpd
from pirecon.metrics import psnr
from pirecon.training import load_module


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--out", type=Path, default=None, help="scratch directory (default: a temporary one)")
    args = parser.parse_args(argv)
    with scratch_directory(args.out, "pirecon-bf16-") as root:
        _, val_file = prepare_data(root / "data", num_test=1)
        validation = read_acquisition(val_file)
        rows = {}
        for name, fast in (("float32", False), ("fast (bfloat16)", True)):
            start = time.perf_counter()
            checkpoint = train_lpd(root / name.split()[0], val_file, steps=args.steps, batch_size=args.batch_size,
                                   schedule="cosine", progress=False, fast=fast)
            seconds = time.perf_counter() - start
            with torch.no_grad():
                image = load_module(checkpoint)(validation.y, validation.physics).image
            rows[name] = (float(psnr(image, validation.ground_truth).mean()), seconds)
        reference = rows["float32"][0]
        print(f"The job's LPD after {args.steps} steps at batch {args.batch_size}, same seed; mean PSNR on the 10 "
              "validation images\n")
        print("| training | PSNR validation (dB) | difference to float32 (dB) | wall time (s) |")
        print("|---|---:|---:|---:|")
        for name, (value, seconds) in rows.items():
            print(f"| {name} | {value:.3f} | {value - reference:+.3f} | {seconds:.1f} |")


if __name__ == "__main__":
    main()
