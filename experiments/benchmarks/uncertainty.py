"""Calibrated uncertainty heads on CT and MRI: guarantee, adaptivity and usefulness over 100 random splits.

For each setup (``ct``: the LPD-ellipses protocol with an LPD backbone; ``mri``: simulated 8-coil k-space at
4x with a MoDL backbone) and each head (gaussian, quantile, mc_dropout, a deep ensemble of ``--members``
Gaussian heads from different seeds, and the constant-width baseline on the plain backbone), train for
``--steps`` steps on the seed's training stream (``pirecon.training.fit.fit_on_simulation``), then on
held-out images of the seed's ``calibration`` and ``test`` splits pooled: for ``--splits`` random
calibration/test splits, calibrate by RCPS (Hoeffding-Bentkus, alpha = delta = 0.1) and measure the test part
(:func:`pirecon.uncertainty.report.split_statistics`). Reported per head: the fraction of splits with risk >
alpha, the mean risk, the mean width, the width relative to the constant-width interval around the plain
backbone's reconstruction calibrated on the same splits, Spearman(width, |error|) and AUSE on the test pixels
at scale 1, the training-step time relative to the plain backbone's (:func:`step_costs`, interleaved in one
process; the ensemble's: its members' sum) and the wall-clock minutes of each run.

    python experiments/benchmarks/uncertainty.py [--setups ct mri] [--steps 28000] [--members 3]
        [--calibration 200] [--test 200] [--splits 100] [--out DIR] [--costs-only]

Targets (the issue's): every calibrated head violates in at most delta of the splits; the best head's width at
least 20% below the constant baseline's; Spearman of the best head at least 0.4. Writes ``uncertainty.md`` and
``risk_violin_<setup>.png`` to ``--out``, and keeps the runs there (``<setup>/<head>/training/checkpoints``)
for ``uncertainty_shift.py``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from _timing import scratch_directory

SETUPS = {
    "ct": {"simulation": {"modality": "ct", "phantom": "ellipses", "seed": 0, "noise": "gaussian:0.05"},
           "backbone": {"class_path": "lpd", "init_args": {"iterations": 5, "primal_channels": 5,
                                                          "dual_channels": 5, "hidden": 16, "initial": "fbp",
                                                          "identity_init": True}}},
    "mri": {"simulation": {"modality": "mri", "phantom": "ellipses", "seed": 0, "image_size": 64, "coils": 8,
                           "acceleration": 4},
            "backbone": {"class_path": "modl", "init_args": {"iterations": 4, "hidden": 16, "complex_data": True}}},
}
HEADS = ("gaussian", "quantile", "mc_dropout", "ensemble")


def _head_spec(head: str, backbone: dict) -> dict:
    if head == "plain":
        return backbone
    name = {"gaussian": "gaussian_head", "quantile": "quantile_head", "mc_dropout": "mc_dropout"}[head]
    args = {"backbone": backbone}
    if head == "gaussian":
        args["beta"] = 0.5
    return {"class_path": name, "init_args": args}


def _held_out(root: Path, setup: dict, calibration: int, test: int) -> Path:
    """One file of held-out images: the seed's calibration split then its test split (both out of training's
    reach), written once."""
    from pirecon.data.simulate import simulate

    files = [simulate(root / f"{split}.h5", n=n, progress=False, split=split, **setup["simulation"])
             for split, n in (("calibration", calibration), ("test", test))]
    return files


def measure(model, source, constant: bool):
    """Of a loaded ``model`` (:func:`pirecon.load`) on an opened ``source`` (``model.open(..., metrics=True)``):
    per image the fraction of pixels outside the interval at each of ``LAMBDAS`` ``(N, L)`` and the mean width
    at scale 1 ``(N,)``, and per pixel the |error| of the centre and the width ``(N * H * W,)``. ``constant``:
    a unit-width interval around the model's reconstruction instead of its head's."""
    from pirecon.inference.calibrate import LAMBDAS
    from pirecon.uncertainty import Interval, mean_width, miscoverage_curves

    curves, widths, errors, pixel_widths = [], [], [], []
    with torch.no_grad():
        for _, y, physics, truth in source.batches(8):
            result = model.model(y, physics)
            reference = (truth.abs() if truth.is_complex() else truth).float()
            if constant:
                center = (result.image.abs() if result.image.is_complex() else result.image).float()
                interval = Interval(center - 0.5, center + 0.5, center, "constant")
            else:
                interval = result.uncertainty.detach("cpu")
                reference = reference.to(interval.center.dtype)
            curves.append(miscoverage_curves(interval, reference, LAMBDAS))
            widths.append(mean_width(interval).numpy())
            errors.append((interval.center - reference).abs().flatten().numpy())
            pixel_widths.append(interval.width.flatten().numpy())
    return np.concatenate(curves), np.concatenate(widths), np.concatenate(errors), np.concatenate(pixel_widths)


def _intervals(checkpoint: Path, files, constant: bool):
    """:func:`measure` of a checkpoint on the held-out files, concatenated."""
    import pirecon

    model = pirecon.load(checkpoint)
    parts = [measure(model, model.open(path, metrics=True, progress=False), constant) for path in files]
    return tuple(np.concatenate(arrays) for arrays in zip(*parts))


def step_costs(setup: dict, heads, held_out: Path, members: int = 3, rounds: int = 5,
               steps: int = 5) -> dict[str, float]:
    """Training-step time of each head relative to the plain backbone's, measured in the same process,
    interleaved: ``rounds`` rounds, each timing ``steps`` Adam steps (forward, loss, backward, update) of every
    model on the same batch of 2 held-out images; the median per model over the rounds, divided by the plain
    backbone's. An ensemble of K members costs K Gaussian heads. Wall-clock times of whole runs move with
    whatever else the machine does; a ratio of interleaved medians does not drift with it."""
    from pirecon.data.acquisition import read_acquisition
    from pirecon.models.registry import build_model
    from pirecon.training.batch_physics import target_and_prediction

    acquisition = read_acquisition(held_out, slices=slice(0, 2))
    y, physics = acquisition.y, acquisition.physics
    names = ["plain", *[h for h in heads if h != "ensemble"]]
    if "ensemble" in heads and "gaussian" not in names:
        names.append("gaussian")
    runs = {}
    for name in names:
        torch.manual_seed(0)
        model = build_model(_head_spec(name, setup["backbone"])).train()
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)

        def step(model=model, optimizer=optimizer):
            for _ in range(steps):
                optimizer.zero_grad()
                result = model(y, physics)
                target, prediction = target_and_prediction({"ground_truth": acquisition.ground_truth}, result.image)
                loss = (prediction - target).abs().pow(2).mean()
                if hasattr(model, "uncertainty_loss"):
                    loss = loss + model.uncertainty_loss(result, target)
                loss.backward()
                optimizer.step()

        step()  # warm-up: caches, allocator
        runs[name] = step
    times: dict[str, list[float]] = {name: [] for name in names}
    for _ in range(rounds):
        for name, step in runs.items():
            start = time.perf_counter()
            step()
            times[name].append(time.perf_counter() - start)
    medians = {name: float(np.median(values)) for name, values in times.items()}
    costs = {name: medians[name] / medians["plain"] for name in names}
    if "ensemble" in heads:
        costs["ensemble"] = members * costs["gaussian"]
    return costs


def _shown(value: float, digits: int) -> str:
    return "-" if np.isnan(value) else f"{value:.{digits}f}"


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--setups", nargs="+", choices=sorted(SETUPS), default=["ct", "mri"])
    parser.add_argument("--heads", nargs="+", choices=HEADS, default=list(HEADS))
    parser.add_argument("--steps", type=int, default=28000)
    parser.add_argument("--members", type=int, default=3, help="members of the deep ensemble (Gaussian heads)")
    parser.add_argument("--image-size", type=int, help="override the setups' image size (quick runs)")
    parser.add_argument("--calibration", type=int, default=200)
    parser.add_argument("--test", type=int, default=200)
    parser.add_argument("--splits", type=int, default=100)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", help="directory for uncertainty.md, the figures and the runs (default: temporary)")
    parser.add_argument("--json", help="write the results here")
    parser.add_argument("--costs-only", action="store_true",
                        help="only the interleaved training-step costs (step_costs), on the held-out test file of "
                             "an earlier run in --out (or a new one)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.costs_only:
        from pirecon.data.simulate import simulate

        costs = {}
        for name in args.setups:
            setup = json.loads(json.dumps(SETUPS[name]))
            if args.image_size:
                setup["simulation"]["image_size"] = args.image_size
            held_out = Path(args.out or ".") / name / "test.h5"
            if not held_out.is_file():
                held_out.parent.mkdir(parents=True, exist_ok=True)
                simulate(held_out, n=2, progress=False, split="test", **setup["simulation"])
            costs[name] = step_costs(setup, args.heads, held_out, members=args.members)
        print(json.dumps(costs, indent=2))
        return costs

    from pirecon.inference.calibrate import LAMBDAS
    from pirecon.inference.ensemble import combine
    from pirecon.training.fit import fit_on_simulation
    from pirecon.uncertainty import ause, spearman
    from pirecon.uncertainty.report import risk_violin, split_statistics

    results: dict = {"alpha": 0.1, "delta": 0.1, "splits": args.splits, "steps": args.steps, "setups": {}}
    with scratch_directory(Path(args.out) if args.out else None, "pirecon-uncertainty-") as root:
        root.mkdir(parents=True, exist_ok=True)
        lines = ["# Calibrated uncertainty heads", "",
                 f"RCPS (Hoeffding-Bentkus), alpha = delta = 0.1, {args.splits} random calibration/test splits of "
                 f"{args.calibration} calibration + {args.test} test images; {args.steps} training steps.", ""]
        for name in args.setups:
            setup = json.loads(json.dumps(SETUPS[name]))
            if args.image_size:
                setup["simulation"]["image_size"] = args.image_size
            directory = root / name
            directory.mkdir(exist_ok=True)
            files = _held_out(directory, setup, args.calibration, args.test)
            val = files[0]
            rows, violins, seconds = {}, {}, {}
            def train(head: str, run: str, seed: int = 0) -> Path:
                start = time.perf_counter()
                checkpoint = fit_on_simulation(directory / run, val, model=_head_spec(head, setup["backbone"]),
                                               simulation=setup["simulation"], steps=args.steps, lr=3e-3,
                                               batch_size=2, progress=False, schedule="onecycle", seed=seed)
                seconds[run] = time.perf_counter() - start
                return checkpoint

            for head in ["plain", *args.heads]:
                if head == "ensemble":  # K Gaussian heads from different seeds, the first one the gaussian run's
                    members = [directory / "gaussian" / "training" / "checkpoints" / "last.ckpt"]
                    if "gaussian" not in seconds:
                        members[0] = train("gaussian", "gaussian")
                    members += [train("gaussian", f"gaussian_seed{k}", seed=k) for k in range(1, args.members)]
                    checkpoint = combine(members, directory / "ensemble.ckpt", overwrite=True)
                    seconds[head] = seconds["gaussian"] + sum(seconds[f"gaussian_seed{k}"]
                                                              for k in range(1, args.members))
                else:
                    checkpoint = train(head, head)
                label = {"plain": "constant width (plain backbone)",
                         "ensemble": f"ensemble ({args.members} Gaussian members)"}.get(head, head)
                losses, widths, errors, pixel_widths = _intervals(checkpoint, files, constant=head == "plain")
                stats = split_statistics(losses, widths, LAMBDAS, splits=args.splits,
                                         calibration_fraction=args.calibration / (args.calibration + args.test))
                per_image = errors.size // (args.calibration + args.test)
                test = slice(errors.size - per_image * args.test, None)  # the test images' pixels
                ranked = head != "plain"  # a constant width ranks nothing
                rows[label] = {"violation_fraction": stats["violation_fraction"], "mean_risk": stats["mean_risk"],
                               "mean_width": stats["mean_width"], "abstentions": stats["abstentions"],
                               "spearman": spearman(pixel_widths[test], errors[test]) if ranked else float("nan"),
                               "ause": ause(pixel_widths[test], errors[test]) if ranked else float("nan"),
                               "training_seconds": seconds[head]}
                violins[label] = stats["risks"]
            costs = step_costs(setup, args.heads, files[1], members=args.members)
            for head, label in zip(["plain", *args.heads], rows):
                rows[label]["training_cost"] = costs[head]
            baseline = rows["constant width (plain backbone)"]["mean_width"]
            for row in rows.values():
                row["width_vs_constant"] = row["mean_width"] / baseline
            risk_violin(violins, 0.1, root / f"risk_violin_{name}.png", title=f"{name}: test risk over the splits")
            results["setups"][name] = rows
            lines += [f"## {name}", "", "| head | splits risk > alpha | mean risk | mean width | width / constant | "
                      "Spearman | AUSE | training step vs plain | training minutes |",
                      "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
            lines += [f"| {label} | {r['violation_fraction']:.2f} | {r['mean_risk']:.4f} | {r['mean_width']:.4g} | "
                      f"{r['width_vs_constant']:.2f} | {_shown(r['spearman'], 3)} | {_shown(r['ause'], 4)} | "
                      f"{r['training_cost']:.2f} | {r['training_seconds'] / 60:.1f} |" for label, r in rows.items()]
            lines.append("")
        (root / "uncertainty.md").write_text("\n".join(lines) + "\n")
        print("\n".join(lines))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2, default=float))
    return results


if __name__ == "__main__":
    main()
