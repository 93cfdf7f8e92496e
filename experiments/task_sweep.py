"""Task-adapted reconstruction: the trade-off between image quality and the diagnostic task over C.

Adler, Lunz, Verdier, Schönlieb & Öktem (2018) train a reconstruction and a task network jointly on
``(1 - C) l_rec + C l_task``. This sweep does it from raw data (simulated lesion phantoms,
``pirecon.phantoms.lesions``), at equal training budget:

1. ``backbone``: the plain reconstruction network, trained ``--steps`` steps (the reconstruction loss alone);
2. every task mode trains ``--steps`` more steps, all from that backbone's weights:
   * ``sequential`` (C = 0): the backbone frozen, the heads trained on its images;
   * ``joint C`` for each ``--weights`` C in (0, 1]: backbone and heads together, the backbone at
     ``--reconstruction-lr``, each loss divided by its running mean and the heads on the whole task loss
     (``RECONSTRUCTION_LR``, ``BALANCE_TASK_LOSS``, ``HEAD_GRADIENT``);
   * ``fbp``: the heads on the FBP (CT) or zero-filled (MRI) image, no backbone;
   * ``oracle``: the heads on the ground-truth image (the upper bound).

Held-out files of the seed's ``validation``, ``calibration`` and ``test`` splits (disjoint from the training
stream by construction): the operating point of the label (Youden) is chosen on validation data, the
temperature of the label on calibration data, and everything is measured on the test data: PSNR and SSIM of
the image, Dice (foreground) and HD95 of the segmentation on the test images with lesions, ROC AUC,
sensitivity and specificity of the label, ECE after temperature scaling and after Platt scaling
(temperature and bias), and the coverage of split-conformal
label sets over 100 random calibration/test splits; 95% bootstrap intervals over test cases, and paired bootstrap intervals of each mode's
difference to ``sequential`` on the same cases.

    python experiments/task_sweep.py [--modality ct|mri] [--steps 1200] [--acceleration 8]
        [--weights 0.01 0.1 0.5 0.9 0.99 1] [--modes sequential fbp oracle joint mc_dropout] [--spread-weight 0.5]
        [--reconstruction-lr 3e-4] [--no-balance] [--head-gradient weighted|full]
        [--out runs/task_sweep_ct]

Writes ``sweep.md`` (the table), ``tradeoff.png`` (PSNR against Dice and against AUC) and ``examples.png``
(truth, reconstruction, predicted and true masks per mode), and per mode ``<mode>/result.json``. Killed, it
resumes: a finished mode is read back, an unfinished run continues from its ``last.ckpt``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

BACKBONES = {
    "ct": {"class_path": "lpd", "init_args": {"iterations": 5, "primal_channels": 5, "dual_channels": 5,
                                              "hidden": 16, "initial": "fbp", "identity_init": True}},
    "mri": {"class_path": "modl", "init_args": {"iterations": 4, "hidden": 16, "complex_data": True}},
}
SIMULATIONS = {
    "ct": {"modality": "ct", "phantom": "lesions", "seed": 0, "noise": "gaussian:0.05"},
    "mri": {"modality": "mri", "phantom": "lesions", "seed": 0, "image_size": 64, "coils": 8, "acceleration": 4},
}
LESIONS = {"ct": {"background": "shepp-logan", "contrast": 0.07},
           "mri": {"background": "shepp-logan", "contrast": 0.07, "radius_range": [0.06, 0.16]}}
"""The default lesion task: 1-3 discs of contrast 0.07 on the Shepp-Logan background (a background known
exactly: the difficulty comes from the measurements, not from lesion-like structures of a random background),
of radius 0.03-0.08 for CT at 128 x 128 and 0.06-0.16 for MRI at 64 x 64 (2-5 pixels in both). The contrast is
the lowest at which FBP or the zero-filled image plus the heads learn and stay clearly imperfect on validation
data (``experiments/lesion_difficulty.py`` at the sweep's budget; CT, 1200 steps: nothing learnt at 0.05, Dice
0.54 and AUC 0.93 at 0.07, Dice 0.72 at 0.1; MRI 4x, 800 steps: AUC 0.29 at 0.05, Dice 0.34 and AUC 0.86 at
0.07, Dice 0.53 at 0.1)."""
HEADS = {"segmentation": {"channels": 16, "depth": 3}, "classification": {"channels": 16, "depth": 3}}
WEIGHTS = (0.01, 0.1, 0.5, 0.9, 0.99, 1.0)
TASK_SCHEDULE = "constant"
"""The learning-rate schedule of the task modes (the backbone's is one-cycle). The heads sit on a plateau of
their loss (the label's BCE near log 2) for a few hundred steps before they learn; a one-cycle decay lowers
the rate before they leave it."""
RECONSTRUCTION_LR = 3e-4
"""The joint modes' learning rate of the trained backbone (the heads learn at the backbone's peak rate, 3e-3):
at 3e-3 for both, the backbone lost 14 dB at C = 0.1 and its heads learned nothing at C = 0.01 and 0.5 (CT,
1200 steps, without balancing)."""
HEAD_GRADIENT = "full"
"""The joint modes' heads descend the whole task loss, C scaling only the gradient that reaches the backbone
(``TaskAdapted(head_gradient="full")``). With the heads on ``C l_task`` ("weighted"), they stayed on the plateau
of their loss in some runs: MRI 4x, C = 0.1, 800 steps: lesion Dice 0.018 on the validation file, against 0.455
with "full" from the same backbone (sequential: 0.496)."""
BALANCE_TASK_LOSS = True
"""The joint modes divide each loss by its running mean (``ReconstructionModule(balance_task_loss=True)``), so
that C weighs relative changes: the backbone's MSE (about 2e-4 at 37 dB) is some 1000 times smaller than the
task loss, and unbalanced, every C in the grid above 0.001 is the task alone for the backbone."""


def mode_spec(mode: str, backbone: dict, head_gradient: str = "weighted") -> tuple[dict, bool]:
    """``(model spec, starts from the trained backbone)`` of a mode: ``sequential``, ``fbp``, ``oracle``,
    ``joint:C`` or ``mc_dropout:C`` (joint at C with MC dropout in the backbone, for the task's spread);
    ``head_gradient`` that of the joint modes' :class:`pirecon.models.TaskAdapted`."""
    args = {"reconstruction": backbone, **HEADS}
    if mode.startswith("mc_dropout:"):
        dropout = {"class_path": "mc_dropout", "init_args": {"backbone": backbone, "p": 0.1, "samples": 8}}
        return {"class_path": "task_adapted", "init_args": {**args, "reconstruction": dropout,
                                                            "task_weight": float(mode.split(":", 1)[1]),
                                                            "head_gradient": head_gradient}}, True
    if mode == "sequential":
        return {"class_path": "task_adapted", "init_args": {**args, "task_weight": 1.0,
                                                            "freeze_reconstruction": True}}, True
    if mode == "fbp":
        return {"class_path": "task_adapted", "init_args": {**args, "reconstruction": {"class_path": "classical"},
                                                            "task_weight": 1.0}}, False
    if mode == "oracle":
        return {"class_path": "task_adapted", "init_args": {**args, "task_weight": 1.0, "task_input": "truth",
                                                            "freeze_reconstruction": True}}, True
    weight = float(mode.split(":", 1)[1])
    return {"class_path": "task_adapted", "init_args": {**args, "task_weight": weight,
                                                        "head_gradient": head_gradient}}, True


def predictions(checkpoint: Path, path: Path) -> dict[str, np.ndarray]:
    """Images, truths, task outputs and targets of a task model on a held-out file (the oracle gets the truth)."""
    import pirecon
    from pirecon.inference.calibrate_task import lesion_targets

    model = pirecon.load(checkpoint)
    oracle = getattr(model.model, "task_input", None) == "truth"
    source = model.open(path, metrics=True, progress=False)
    out: dict[str, list] = {"image": [], "truth": [], "segmentation": [], "label": [], "label_logit": [],
                            "label_spread": []}
    with torch.no_grad():
        for _, y, physics, truth in source.batches(8):
            result = model.model(y, physics, truth=truth) if oracle else model.model(y, physics)
            magnitude = (result.image.abs() if result.image.is_complex() else result.image).float()
            out["image"].append(magnitude)
            out["truth"].append((truth.abs() if truth.is_complex() else truth).float())
            for key in ("segmentation", "label", "label_logit", "label_spread"):
                if key in result.task:
                    out[key].append(result.task[key].float())
    arrays = {key: torch.cat(values).numpy() for key, values in out.items() if values}
    arrays["true_label"], arrays["true_segmentation"] = lesion_targets(path)
    return arrays


def save_example(test: dict, path: Path) -> None:
    """The test case with the largest lesion area: truth, image, predicted and true masks ``(H, W)``."""
    k = int(np.argmax(test["true_segmentation"].reshape(len(test["true_label"]), -1).sum(axis=1)))
    np.savez(path, **{key: test[key][k, 0] for key in ("truth", "image", "segmentation", "true_segmentation")})


def evaluate(val: dict, cal: dict, test: dict, alpha: float = 0.1) -> dict:
    """The metrics of one mode from its predictions on the three held-out files (see the module)."""
    from pirecon.metrics import psnr, ssim
    from pirecon.tasks import (bootstrap_ci, conformal_coverage_over_splits, fit_label_calibration, label_probability,
                               operating_point, task_metrics)

    temperature, _, note = fit_label_calibration(cal["label_logit"], cal["true_label"])
    if note:
        print(note, flush=True)
    threshold = operating_point(label_probability(val["label_logit"], temperature), val["true_label"])
    result = task_metrics(test, threshold=threshold, temperature=temperature)
    image, truth = torch.from_numpy(test["image"]), torch.from_numpy(test["truth"])
    per_image = {"psnr": psnr(image, truth).numpy(), "ssim": ssim(image, truth).numpy()}
    for name, values in per_image.items():
        result[name] = bootstrap_ci(np.mean, values)
    pooled = np.concatenate([label_probability(cal["label_logit"], temperature),
                             label_probability(test["label_logit"], temperature)])
    coverage = conformal_coverage_over_splits(pooled, np.concatenate([cal["true_label"], test["true_label"]]), alpha,
                                              splits=100, calibration_fraction=len(cal["true_label"]) / len(pooled))
    result["conformal_coverage"], result["conformal_set_size"] = coverage["mean_coverage"], coverage["mean_set_size"]
    result["scores"] = label_probability(test["label_logit"], temperature).tolist()
    result.update(platt_ece(cal, test))
    return result


def platt_ece(cal: dict, test: dict) -> dict:
    """The label's ECE on the test cases after Platt scaling (``sigmoid(z / T + b)``, fitted on the calibration
    cases), and the fit."""
    from pirecon.tasks import expected_calibration_error, fit_label_calibration, label_probability

    temperature, bias, note = fit_label_calibration(cal["label_logit"], cal["true_label"], "platt")
    if note:
        print(note, flush=True)
    probability = label_probability(test["label_logit"], temperature, bias)
    return {"platt": {"temperature": temperature, "bias": bias},
            "ece_platt": expected_calibration_error(probability, test["true_label"])}


def paired(results: dict, reference: str = "sequential") -> dict:
    """Per mode, the paired bootstrap interval of its Dice and AUC minus the reference mode's, on the same cases."""
    from pirecon.tasks import paired_bootstrap, roc_auc

    if reference not in results:
        return {}
    ref = results[reference]
    labels = np.asarray(ref["labels"])
    out = {}
    for mode, result in results.items():
        if mode == reference:
            continue
        dice_a, dice_b = np.asarray(result["per_case"]["dice"]), np.asarray(ref["per_case"]["dice"])
        out[mode] = {
            "dice": paired_bootstrap(np.mean, [dice_a], [dice_b]),
            "auc": paired_bootstrap(lambda s, l: roc_auc(s, l), [np.asarray(result["scores"]), labels],
                                    [np.asarray(ref["scores"]), labels], strata=labels),
        }
    return out


def targets(results: dict, differences: dict, alpha: float = 0.1) -> list[str]:
    """The issue's targets, each with its verdict from the measured numbers (nothing chosen on test data: every
    joint mode is reported, not the best one)."""
    lines = ["## Targets", ""]
    sequential = results.get("sequential")
    joint = [m for m in results if m.startswith("joint:") and 0 < float(m.split(":", 1)[1]) < 1]
    if sequential and joint:
        met = []
        for mode in joint:
            d, close = differences[mode], results[mode]["psnr"][0] >= sequential["psnr"][0] - 1.0
            if close and ((d["dice"][0] >= 0.03 and d["dice"][1] > 0) or (d["auc"][0] >= 0.02 and d["auc"][1] > 0)):
                met.append(mode)
        lines.append("- Joint beats sequential (some 0 < C < 1: Dice + 0.03 or AUC + 0.02 with the paired 95% "
                     "interval above 0, PSNR within 1 dB of sequential): "
                     + (f"met by {', '.join(met)}." if met else "not met by any C."))
    if joint and {"oracle", "fbp"} <= set(results):
        for metric in ("dice", "auc"):
            values = [results[m][metric][0] for m in joint]
            oracle, fbp = results["oracle"][metric][0], results["fbp"][metric][0]
            lines.append(f"- Ordering on {metric.upper() if metric == 'auc' else 'Dice'}: oracle {oracle:.3f}, joint "
                         f"{min(values):.3f} to {max(values):.3f}, fbp {fbp:.3f}: oracle >= joint "
                         f"{'holds' if oracle >= max(values) else 'fails'} ({sum(oracle >= v for v in values)} of "
                         f"{len(values)} C), joint >= fbp {'holds' if min(values) >= fbp else 'fails'} "
                         f"({sum(v >= fbp for v in values)} of {len(values)} C).")
    modes = [m for m in results if m != "oracle"]
    low = [m for m in modes if results[m]["conformal_coverage"] < 1 - alpha - 0.02]
    high_ece = [m for m in modes if results[m]["ece"] > 0.05]
    high_platt = [m for m in modes if results[m]["ece_platt"] > 0.05]
    lines.append(f"- Conformal label sets cover >= {1 - alpha - 0.02:.2f} on average over 100 splits: "
                 + ("every mode." if not low else f"fails for {', '.join(low)}."))
    lines.append("- ECE after temperature scaling <= 0.05: "
                 + ("every mode." if not high_ece else f"fails for {', '.join(high_ece)} ("
                    + ", ".join(f"{results[m]['ece']:.3f}" for m in high_ece) + ")."))
    lines.append("- ECE after Platt scaling (temperature and bias, on the same calibration cases) <= 0.05: "
                 + ("every mode." if not high_platt else f"fails for {', '.join(high_platt)} ("
                    + ", ".join(f"{results[m]['ece_platt']:.3f}" for m in high_platt) + ")."))
    floors = [m for m in modes if "ece_floor" in results[m]]
    if floors:
        beyond = [m for m in floors if results[m]["ece"] > results[m]["ece_floor"]["p95"]]
        lines.append(f"- A calibrated model with each mode's probabilities shows an ECE of "
                     f"{min(results[m]['ece_floor']['mean'] for m in floors):.3f} to "
                     f"{max(results[m]['ece_floor']['mean'] for m in floors):.3f} on these test cases "
                     "(labels drawn from the probabilities); the measured ECE is above that draw's 95th percentile for "
                     + (", ".join(beyond) if beyond else "no mode") + ".")
    return lines + [""]


def _interval(value) -> str:
    estimate, low, high = value
    return "-" if np.isnan(estimate) else f"{estimate:.3f} [{low:.3f}, {high:.3f}]"


def _floor(result: dict) -> str:
    return f" [{result['ece_floor']['p95']:.3f}]" if "ece_floor" in result else ""


def table(results: dict, differences: dict) -> list[str]:
    lines = ["| mode | PSNR (dB) | SSIM | Dice | HD95 (px) | AUC | sens / spec | ECE: temperature / Platt "
             "[calibrated: 95th pct] | conformal coverage (set size) | Dice - sequential | AUC - sequential |",
             "|---|" + "---:|" * 10]
    for mode, r in results.items():
        diff = differences.get(mode, {})
        lines.append(
            f"| {mode} | {_interval(r['psnr'])} | {_interval(r['ssim'])} | {_interval(r['dice'])} | "
            f"{_interval(r['hd95'])} | {_interval(r['auc'])} | {r['sensitivity']:.2f} / {r['specificity']:.2f} | "
            f"{r['ece']:.3f} / {r['ece_platt']:.3f}{_floor(r)} | {r['conformal_coverage']:.3f} ({r['conformal_set_size']:.2f}) | "
            f"{_interval(diff['dice']) if diff else '-'} | {_interval(diff['auc']) if diff else '-'} |")
    return lines


def figures(results: dict, examples: dict, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4), constrained_layout=True)
    for ax, metric in zip(axes, ("dice", "auc")):
        for mode, r in results.items():
            if mode == "oracle":  # its heads read the truth: an upper bound, not a point of the curve
                ax.axhline(r[metric][0], color="k", linestyle="--", linewidth=1, label="oracle (heads on the truth)")
                continue
            joint = mode.startswith("joint")
            ax.errorbar(r["psnr"][0], r[metric][0], yerr=[[r[metric][0] - r[metric][1]], [r[metric][2] - r[metric][0]]],
                        fmt="o" if joint else "s", color="C0" if joint else "C3", capsize=3)
            ax.annotate(mode.replace("joint:", "C="), (r["psnr"][0], r[metric][0]), fontsize=8,
                        xytext=(4, 4), textcoords="offset points")
        ax.set_xlabel("PSNR (dB)")
        ax.set_ylabel(metric.upper() if metric == "auc" else "Dice")
        ax.grid(alpha=0.3)
        if "oracle" in results:
            ax.legend(fontsize=8)
    fig.suptitle("task-adapted reconstruction: image quality against the task (95% bootstrap intervals)")
    fig.savefig(out / "tradeoff.png", dpi=120)
    plt.close(fig)
    modes = list(examples)
    fig, axes = plt.subplots(len(modes), 4, figsize=(10, 2.6 * len(modes)), squeeze=False, constrained_layout=True)
    for row, mode in enumerate(modes):
        e = examples[mode]
        for col, (image, title) in enumerate(((e["truth"], "truth"), (e["image"], "input to the heads" if mode in
                                              ("fbp", "oracle") else "reconstruction"),
                                             (e["segmentation"], "predicted mask"), (e["true_segmentation"],
                                                                                     "true mask"))):
            axes[row, col].imshow(image, cmap="gray")
            axes[row, col].set_title(f"{mode}: {title}", fontsize=8)
            axes[row, col].axis("off")
    fig.savefig(out / "examples.png", dpi=110)
    plt.close(fig)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--modality", choices=sorted(BACKBONES), default="ct")
    parser.add_argument("--steps", type=int, default=1200, help="training steps of the backbone and of every mode")
    parser.add_argument("--weights", type=float, nargs="+", default=list(WEIGHTS), help="C of the joint modes")
    parser.add_argument("--modes", nargs="+", choices=("sequential", "fbp", "oracle", "joint", "mc_dropout"),
                        default=["sequential", "fbp", "oracle", "joint", "mc_dropout"])
    parser.add_argument("--spread-weight", type=float, default=0.5,
                        help="C of the mc_dropout mode (joint, MC dropout in the backbone: the task's spread)")
    parser.add_argument("--reconstruction-lr", type=float, default=RECONSTRUCTION_LR,
                        help="the joint modes' learning rate of the backbone (the heads': 3e-3)")
    parser.add_argument("--no-balance", action="store_true",
                        help="joint modes on (1 - C) l_rec + C l_task as they are, each loss not divided by its "
                             "running mean")
    parser.add_argument("--head-gradient", choices=("weighted", "full"), default=HEAD_GRADIENT,
                        help="joint modes: the heads descend C l_task (weighted) or l_task itself, C scaling only "
                             "the task gradient that reaches the backbone (full)")
    parser.add_argument("--image-size", type=int, help="override the simulation's image size (quick runs)")
    parser.add_argument("--acceleration", type=int, help="MRI: the undersampling factor (default 4)")
    parser.add_argument("--lesion-options", type=json.loads, default={},
                        help="JSON options of the lesion phantom over LESIONS[modality] (num_lesions, radius_range, "
                             "contrast, background, ...)")
    parser.add_argument("--validation", type=int, default=100)
    parser.add_argument("--calibration", type=int, default=200)
    parser.add_argument("--test", type=int, default=1000, help="test images (on 200 even a calibrated model shows an ECE near 0.05)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default=None, help="directory of the runs and the report (default runs/task_sweep_<modality>)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    from pirecon.data.simulate import simulate
    from pirecon.training.fit import fit_on_simulation
    from pirecon.tasks import ece_sampling_floor

    out = Path(args.out or f"runs/task_sweep_{args.modality}")
    out.mkdir(parents=True, exist_ok=True)
    lesions = {**LESIONS[args.modality], **args.lesion_options}
    simulation = {**SIMULATIONS[args.modality], "lesion_options": lesions}
    if args.image_size:
        simulation["image_size"] = args.image_size
    if args.acceleration:
        if args.modality != "mri":
            parser.error("--acceleration: expected --modality mri (CT has no undersampling factor)")
        simulation["acceleration"] = args.acceleration
    files = {}
    for split, n in (("validation", args.validation), ("calibration", args.calibration), ("test", args.test)):
        path = out / f"{split}.h5"
        if not path.is_file():
            simulate(path, n=n, split=split, progress=False, **simulation)
        files[split] = path
    backbone = BACKBONES[args.modality]
    training = {"simulation": simulation, "steps": args.steps, "lr": 3e-3, "batch_size": 2, "progress": False,
                "schedule": "onecycle", "resume": True}
    pretrained = fit_on_simulation(out / "backbone", files["validation"], model=backbone, **training)
    modes = [m for m in ("sequential", "fbp", "oracle") if m in args.modes]
    if "joint" in args.modes:
        modes += [f"joint:{weight:g}" for weight in args.weights]
    if "mc_dropout" in args.modes:
        modes.append(f"mc_dropout:{args.spread_weight:g}")
    results, examples = {}, {}
    for mode in modes:
        directory = out / mode.replace(":", "_")
        saved = directory / "result.json"
        spec, from_backbone = mode_spec(mode, backbone, args.head_gradient)
        joint = {"reconstruction_lr": args.reconstruction_lr, "balance_task_loss": not args.no_balance} \
            if mode.startswith(("joint:", "mc_dropout:")) else {}
        checkpoint = fit_on_simulation(directory, files["validation"], model=spec,
                                       pretrained_reconstruction=pretrained if from_backbone else None,
                                       **{**training, "schedule": TASK_SCHEDULE}, **joint)
        example = directory / "example.npz"  # the test case of the examples figure
        if not saved.is_file():
            outputs = {split: predictions(checkpoint, path) for split, path in files.items()}
            result = evaluate(outputs["validation"], outputs["calibration"], outputs["test"])
            result["labels"] = outputs["test"]["true_label"].tolist()
            saved.write_text(json.dumps(result, default=float))
            save_example(outputs["test"], example)
        elif not example.is_file():
            save_example(predictions(checkpoint, files["test"]), example)
        results[mode] = json.loads(saved.read_text())
        if "ece_floor" not in results[mode]:  # measured before the floor was: from the stored test probabilities
            results[mode]["ece_floor"] = ece_sampling_floor(results[mode]["scores"])
        if "ece_platt" not in results[mode]:  # measured before Platt scaling was: from the mode's checkpoint
            results[mode].update(platt_ece(*(predictions(checkpoint, files[split]) for split in ("calibration", "test"))))
            saved.write_text(json.dumps(results[mode], default=float))
        with np.load(example) as stored:
            examples[mode] = dict(stored)
        print(f"{mode}: Dice {results[mode]['dice'][0]:.3f}, AUC {results[mode]['auc'][0]:.3f}, "
              f"PSNR {results[mode]['psnr'][0]:.2f} dB", flush=True)
    differences = paired(results)
    lines = [f"# Task-adapted reconstruction ({args.modality})", "",
             f"{args.steps} steps for the backbone, then {args.steps} for each mode; test: {args.test} images, "
             f"operating point on {args.validation} validation images, temperature (or Platt) scaling and conformal sets on "
             f"{args.calibration} calibration images; 95% bootstrap intervals over test cases. Joint modes: the "
             f"backbone at learning rate {args.reconstruction_lr:g}, the heads at 3e-3, "
             + ("each loss divided by its running mean" if not args.no_balance else "the losses as they are")
             + f", head gradient {args.head_gradient!r}.", "",
             *table(results, differences), "",
             *(f"{mode}: spread of the label over 8 dropout samples against its errors: Spearman(spread, |p - y|) "
               f"{r['spread_spearman']:.3f}, ROC AUC of the spread for the {r['misclassified']} misclassified test "
               f"cases {r['spread_error_auc']:.3f}." for mode, r in results.items() if "spread_spearman" in r), "",
             *targets(results, differences)]
    (out / "sweep.md").write_text("\n".join(lines) + "\n")
    figures(results, examples, out)
    print("\n".join(lines))
    return {"results": results, "differences": differences}


if __name__ == "__main__":
    main()
