"""Which choices make Learned Primal-Dual learn fastest on a CPU budget: short runs of equal wall time.

LPD-ellipses protocol (the data of ``pirecon job``): every variant trains with Lightning
(:func:`pirecon.job.train_lpd`: Adam with cosine decay to 0 over its steps, beta2 0.99,
gradient-norm clipping at 1, batch 2, seed 0, primal memory starting at the Hann FBP, 16 hidden
channels unless named). The variant to keep is chosen by its mean PSNR on the 10 images of the
validation file (the seed's validation split); only then is every variant scored on modified
Shepp-Logan and 100 random-ellipse images of the seed's test split
(:func:`pirecon.job.evaluate_checkpoint`), which play no part in the choice. A step of the 5-iteration network costs about
half one of the 10-iteration network, so those variants get twice the steps; the 32-hidden-channel
network costs about twice the 16-channel one per step, so it gets half. The variants:

* ``10 it, lr 1e-3``: the paper's iterations, learning rate and Xavier initialisation;
* ``10 it, lr 3e-3``: a larger learning rate;
* ``10 it, lr 3e-3, identity init``: every block's last convolution starts at zero (the untrained
  network returns the FBP);
* ``5 it, lr 3e-3`` and ``5 it, lr 3e-3, identity init``: half the iterations, twice the steps;
* ``5 it, 32 hidden, lr 3e-3, identity init``: the paper's width, half the steps.

These were chosen in float32 without ``torch.compile``, and that is how ``--set architecture`` (the
default) trains them. ``--set schedule`` asks how the chosen network learns most per second once a step is
fast (:func:`pirecon.models.fast_training_options`: bfloat16 autocast, channels-last, compiled blocks),
in runs of the length the quickstart can afford (6000 steps at batch 2, about 7 minutes):

* ``batch 2, cosine``: the configuration's (5 it, 16 hidden, identity init, lr 3e-3, batch 2);
* ``batch 4, cosine``: twice the images per step, 0.7 times the steps (a batch-4 step costs about
  1.4 batch-2 steps);
* ``batch 4, one-cycle``: a linear warm-up from lr / 25 over the first 10% of the steps, then the cosine;
* ``batch 8, cosine``: four times the images per step, 0.45 times the steps;
* ``batch 8, one-cycle``: the same with the warm-up.

    python experiments/ablations/lpd_cpu_budget.py                 # all variants, about 35 min on 2 cores
    python experiments/ablations/lpd_cpu_budget.py --scale 0.5     # half the steps of every variant
    python experiments/ablations/lpd_cpu_budget.py --set schedule  # about 40 min on 2 cores with bfloat16

Each variant's score is kept in ``OUT/<variant>/score.json``; a rerun skips the variants already
scored (delete the file to redo one). The table goes to ``OUT/lpd_cpu_budget_<set>.md`` and the output.
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from dataclasses import asdict
from pathlib import Path

from pirecon._atomic import atomic_path
from pirecon.data.acquisition import Acquisition, read_acquisition
from pirecon.job import JOB_MODEL, evaluate_checkpoint, prepare_data, train_lpd
from pirecon.metrics import psnr

VARIANTS = {
    # name, LPD options on top of JOB_MODEL, learning rate, steps at --scale 1, training options
    "architecture": (
        ("10 it, lr 1e-3", {"iterations": 10, "identity_init": False}, 1e-3, 1000, {}),
        ("10 it, lr 3e-3", {"iterations": 10, "identity_init": False}, 3e-3, 1000, {}),
        ("10 it, lr 3e-3, identity init", {"iterations": 10, "identity_init": True}, 3e-3, 1000, {}),
        ("5 it, lr 3e-3", {"iterations": 5, "identity_init": False}, 3e-3, 2000, {}),
        ("5 it, lr 3e-3, identity init", {"iterations": 5, "identity_init": True}, 3e-3, 2000, {}),
        ("5 it, 32 hidden, lr 3e-3, identity init", {"iterations": 5, "hidden": 32, "identity_init": True}, 3e-3,
         1000, {}),
    ),
    "schedule": (
        ("batch 2, cosine", {}, 3e-3, 6000, {"fast": True}),
        ("batch 4, cosine", {}, 3e-3, 4200, {"fast": True, "batch_size": 4}),
        ("batch 4, one-cycle", {}, 3e-3, 4200, {"fast": True, "batch_size": 4, "schedule": "onecycle"}),
        ("batch 8, cosine", {}, 3e-3, 2700, {"fast": True, "batch_size": 8}),
        ("batch 8, one-cycle", {}, 3e-3, 2700, {"fast": True, "batch_size": 8, "schedule": "onecycle"}),
    ),
}


def _directory_name(name: str, steps: int) -> str:
    return f"{name.replace(', ', '_').replace(' ', '-')}_{steps}-steps"


def run_variant(out: Path, name: str, options: dict, lr: float, steps: int, val_file: Path,
                test: Acquisition, training: dict) -> dict:
    """Train one variant (unless its ``score.json`` exists), score it on the validation file and on the
    test file's acquisition, and return its row."""
    directory = out / _directory_name(name, steps)
    score_file = directory / "score.json"
    if score_file.exists():
        return json.loads(score_file.read_text())
    shutil.rmtree(directory, ignore_errors=True)  # a killed earlier try: train afresh, not beside its checkpoints
    model = {"class_path": JOB_MODEL["class_path"], "init_args": {**JOB_MODEL["init_args"], **options}}
    start = time.perf_counter()
    training = {"fast": False, "batch_size": 2, **training}
    checkpoint = train_lpd(directory, val_file, steps=steps, model=model, lr=lr, **training)
    seconds = time.perf_counter() - start
    validation = read_acquisition(val_file)
    _, validation_images = evaluate_checkpoint(checkpoint, validation)
    score, _ = evaluate_checkpoint(checkpoint, test)
    row = {"variant": name, "lr": lr, "steps": steps, "train_seconds": seconds,
           "psnr_validation": float(psnr(validation_images, validation.ground_truth).mean()), **asdict(score)}
    with atomic_path(score_file) as tmp:  # a killed run leaves no half-written score to skip over
        tmp.write_text(json.dumps(row, indent=1))
    return row


def chosen(rows: list[dict]) -> str:
    """The variant with the best mean PSNR on the validation images."""
    return max(rows, key=lambda row: row["psnr_validation"])["variant"]


def markdown(rows: list[dict]) -> str:
    best = chosen(rows)
    lines = ["| variant | steps | training (s) | PSNR validation, mean (dB) | PSNR Shepp-Logan (dB) "
             "| PSNR test ellipses, mean (dB) |",
             "|---|---:|---:|---:|---:|---:|"]
    for row in rows:
        name = f"**{row['variant']}** (chosen)" if row["variant"] == best else row["variant"]
        lines.append(f"| {name} | {row['steps']} | {row['train_seconds']:.0f} | {row['psnr_validation']:.2f} | "
                     f"{row['psnr_shepp_logan']:.2f} | {row['psnr_ellipses']:.2f} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("reports/ablations/lpd_cpu_budget"))
    parser.add_argument("--set", choices=list(VARIANTS), default="architecture",
                        help="which variants: the network's (default) or the schedule's with the fast settings")
    parser.add_argument("--scale", type=float, default=1.0, help="multiplies every variant's steps (default 1)")
    parser.add_argument("--num-test", type=int, default=100, help="held-out ellipse images (default 100)")
    args = parser.parse_args()
    if not args.scale > 0:
        parser.error(f"--scale: expected a positive number, found {args.scale}")
    if args.num_test < 1:
        parser.error(f"--num-test: expected a positive integer, found {args.num_test}")
    test_file, val_file = prepare_data(args.out / "data", args.num_test)
    test = read_acquisition(test_file)
    rows = [run_variant(args.out, name, options, lr, max(1, round(steps * args.scale)), val_file, test, training)
            for name, options, lr, steps, training in VARIANTS[args.set]]
    table = markdown(rows)
    with atomic_path(args.out / f"lpd_cpu_budget_{args.set}.md") as tmp:
        tmp.write_text(table)
    print(table)


if __name__ == "__main__":
    main()
