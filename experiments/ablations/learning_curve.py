"""The learning curve of a training run against wall time: validation PSNR from its TensorBoard log.

    python experiments/ablations/learning_curve.py runs/ct_lpd_ellipses_cpu --out learning_curve.png \
        [--reference "TV (PDHG), best lambda=33.6"] [--metric val/psnr]

Reads every scalar ``--metric`` of the run's ``events.out.tfevents.*`` files (TensorBoard stores the wall
clock of each value), plots it against minutes since the run's first logged value and against the step,
draws each ``--reference NAME=VALUE`` as a horizontal line, and prints the points as a Markdown table.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from pirecon._atomic import atomic_path


def read_scalars(run: Path, metric: str) -> list[tuple[float, int, float]]:
    """``(wall time in s, step, value)`` of every ``metric`` value logged under ``run``, in step order."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    files = sorted(run.rglob("events.out.tfevents.*"))
    if not files:
        raise SystemExit(f"{run}: expected TensorBoard event files (events.out.tfevents.*), found none")
    points = []
    for file in files:
        events = EventAccumulator(str(file), size_guidance={"scalars": 0})
        events.Reload()
        if metric in events.Tags()["scalars"]:
            points += [(e.wall_time, e.step, e.value) for e in events.Scalars(metric)]
    if not points:
        raise SystemExit(f"{run}: expected scalars named {metric!r}, found none")
    return sorted(points, key=lambda p: p[1])


def start_time(run: Path) -> float:
    """Wall time of the first scalar of any name the run logged (training starts just before)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    first = []
    for file in sorted(run.rglob("events.out.tfevents.*")):
        events = EventAccumulator(str(file), size_guidance={"scalars": 0})
        events.Reload()
        first += [events.Scalars(tag)[0].wall_time for tag in events.Tags()["scalars"] if events.Scalars(tag)]
    return min(first)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--metric", default="val/psnr")
    parser.add_argument("--reference", action="append", default=[], help="NAME=VALUE, a horizontal line")
    parser.add_argument("--title", default=None)
    args = parser.parse_args(argv)
    references = []
    for item in args.reference:
        name, sep, value = item.rpartition("=")
        if not sep:
            parser.error(f"--reference: expected NAME=VALUE, found {item!r}")
        references.append((name, float(value)))

    points = read_scalars(args.run, args.metric)
    t0 = start_time(args.run)
    minutes = [(wall - t0) / 60 for wall, _, _ in points]
    steps = [step for _, step, _ in points]
    values = [value for _, _, value in points]

    from matplotlib.figure import Figure

    fig = Figure(figsize=(11, 4.2), layout="constrained")
    by_time, by_step = fig.subplots(1, 2, sharey=True)
    for ax, x, label in ((by_time, minutes, "wall time since the first logged value (min)"),
                         (by_step, steps, "training step")):
        ax.plot(x, values, "o-", label=args.metric)
        for name, value in references:
            ax.axhline(value, linestyle="--", color="grey")
            ax.annotate(name, (x[0], value), textcoords="offset points", xytext=(0, 4), fontsize=8)
        ax.set_xlabel(label)
        ax.grid(alpha=0.3)
    by_time.set_ylabel(f"{args.metric} (dB)" if "psnr" in args.metric else args.metric)
    fig.suptitle(args.title or f"{args.run}: {args.metric}")
    with atomic_path(args.out) as tmp:
        fig.savefig(tmp, format="png", dpi=100)

    print(f"| step | minutes | {args.metric} |\n|---:|---:|---:|")
    for step, minute, value in zip(steps, minutes, values):
        print(f"| {step} | {minute:.1f} | {value:.2f} |")


if __name__ == "__main__":
    main()
