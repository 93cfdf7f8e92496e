"""``pirecon calibrate --task``: a task model's lesion label calibrated on held-out data, and measured.

    pirecon calibrate --task --checkpoint CKPT --data CAL.h5 [CAL2.h5 ...] --alpha 0.1 --out CALIBRATED.ckpt
        [--label-calibration temperature|platt] [--test TEST.h5 [...] --report DIR]

The task model (:class:`pirecon.models.TaskAdapted` with a classification head) runs on every slice of the
calibration files; their cases are split at random (:func:`pirecon.tasks.calibrate_label`): one half fits the
label's calibration ``p = sigmoid(logit / T + b)`` (temperature scaling, ``b = 0``, or Platt scaling, both
fitted) and the operating point (Youden), the other half gives the split-conformal threshold ``qhat``.
Guarantee: for a new case exchangeable with the calibration cases, the prediction set
``{k : 1 - p(k) <= qhat}`` holds its true label with probability at least ``1 - alpha`` (marginally, over
the calibration draw and the case). The calibrated checkpoint is the input with ``pirecon_task_calibration``
(``temperature``, ``bias``, ``label_calibration``, ``threshold``, ``qhat``, ``alpha``, the counts, the files and their SHA-256);
``pirecon.load`` of it returns calibrated label probabilities, ``task["label_set"]`` ``(N, 2)`` (classes
absent, present) and ``task["label_decision"]`` ``(N,)`` at the operating point.

Cases are the slices of files written by ``pirecon simulate --phantom lesions`` (independent draws, with
``labels`` and ``segmentation``); other files are refused (the slices of one volume are not exchangeable).
Calibration files must be held out, as for interval calibration.

With ``--test`` and ``--report DIR``: on the test files, Dice and HD95 over the cases with lesions, ROC AUC,
sensitivity and specificity at the operating point, ECE before and after calibration, with 95%
bootstrap intervals; the coverage and size of the conformal sets at ``qhat``, and their mean coverage over 100
random splits of the test cases (calibrated and measured on disjoint halves at the fixed map); a
reliability diagram (``reliability.png``) and ``report.md``. The measured metrics go into the model card.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..errors import PireconUserError

__all__ = ["calibrate_task", "task_outputs", "apply_task_calibration", "lesion_targets"]


def apply_task_calibration(task: dict, calibration: dict) -> dict:
    """``task`` (a model's outputs, tensors) with the label calibrated: ``label = sigmoid(label_logit / T + b)``
    (``b = 0`` in calibrations stored without a bias),
    ``label_set`` ``(N, 2)`` bool (classes absent, present; ``1 - p(k) <= qhat``) and ``label_decision`` ``(N,)``
    uint8 (``label >= threshold``)."""
    from ..tasks import prediction_sets

    logit = task["label_logit"]
    label = torch.sigmoid(logit.float() / float(calibration["temperature"]) + float(calibration.get("bias", 0.0)))
    sets = prediction_sets(label.detach().cpu().numpy(), float(calibration["qhat"])).to(label.device)
    return {**task, "label": label.to(logit.dtype), "label_set": sets,
            "label_decision": (label >= float(calibration["threshold"])).to(torch.uint8)}


def lesion_targets(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """The true labels ``(N,)`` and segmentations ``(N, 1, H, W)`` of a simulated lesion file."""
    import h5py

    with h5py.File(path, "r") as f:
        if "simulation" not in f.attrs:
            raise PireconUserError(f"{path}: expected a file of pirecon simulate (independent slices, the cases of "
                                   "task calibration), found a file without the 'simulation' attribute (the slices "
                                   "of one volume are not exchangeable cases)")
        missing = [name for name in ("labels", "segmentation") if name not in f]
        if missing:
            raise PireconUserError(f"{path}: expected the datasets 'labels' and 'segmentation' of a lesion phantom "
                                   f"(pirecon simulate --phantom lesions), found no {', '.join(missing)}")
        return f["labels"][()].astype(np.int64), f["segmentation"][()][:, None].astype(np.uint8)


def task_outputs(model, paths, *, batch_size: int = 8, progress: bool = True) -> tuple[dict, list[int]]:
    """The task outputs of ``model`` (a :class:`pirecon.Reconstructor`) on simulated lesion files, with their
    targets: ``segmentation``, ``label_logit``, ``true_segmentation``, ``true_label`` (NumPy, all files in order),
    and the number of cases of each file."""
    out: dict[str, list] = {"segmentation": [], "label_logit": [], "true_segmentation": [], "true_label": []}
    for path in paths:
        labels, segmentation = lesion_targets(Path(path))
        result = model.reconstruct(path, batch_size=batch_size, progress=progress)
        if "label_logit" not in result.task:
            raise PireconUserError(f"{model.name}: expected a task model with a classification head "
                                   f"(task output 'label_logit'), found task outputs {sorted(result.task) or 'none'}")
        out["label_logit"].append(result.task["label_logit"].float().numpy())
        out["segmentation"].append(result.task["segmentation"].float().numpy() if "segmentation" in result.task
                                   else np.zeros(segmentation.shape, np.float32))
        out["true_segmentation"].append(segmentation)
        out["true_label"].append(labels)
    return {key: np.concatenate(values) for key, values in out.items()}, [len(labels) for labels in out["true_label"]]


def calibrate_task(checkpoint, data, out, *, alpha: float = 0.1, temperature_fraction: float = 0.5,
                   label_calibration: str = "temperature", batch_size: int = 8, overwrite: bool = False, progress: bool = True, test=None,
                   report=None) -> dict:
    """Calibrate the lesion label of ``checkpoint`` on ``data`` (held-out simulated lesion files) and write
    ``out``; returns the stored calibration (see the module), with ``"test"`` metrics when ``test`` is given."""
    from ..errors import ArgumentError
    from ..tasks import calibrate_label
    from .calibrate import held_out_files, write_calibrated
    from .output import refuse_existing
    from .reconstructors import load

    out = Path(out)
    refuse_existing(out, overwrite=overwrite)
    if (test is None) != (report is None):
        raise ArgumentError("--test, --report: expected both (a held-out test file and a report directory) or "
                            "neither, found one")
    model = load(checkpoint)
    if getattr(model.model, "task_input", None) == "truth":
        raise PireconUserError(f"{checkpoint}: expected a task model that reads the reconstruction, found an oracle "
                               "(task_input='truth': its heads read the ground truth, an upper bound, not a model "
                               "to deploy)")
    paths, digests, test_paths, test_digests = held_out_files(model, data, test)
    outputs, cases = task_outputs(model, paths, batch_size=batch_size, progress=progress)
    fitted = calibrate_label(outputs["label_logit"], outputs["true_label"], alpha, temperature_fraction,
                             method=label_calibration)
    summary = {**fitted, "method": f"{label_calibration} scaling + split conformal",
               "files": [{"path": str(p), "sha256": d, "cases": n} for p, d, n in zip(paths, digests, cases)]}
    if test_paths:
        summary["test"] = measure(model, test_paths, test_digests, fitted, batch_size=batch_size, progress=progress,
                                  report=Path(report))
    write_calibrated(checkpoint, out, model, "pirecon_task_calibration", summary)
    return summary


def measure(model, paths, digests, fitted: dict, *, batch_size: int, progress: bool, report: Path) -> dict:
    """The calibrated task on held-out test files (their SHA-256 ``digests``; see the module): the metrics,
    ``report.md`` and ``reliability.png`` in ``report``."""
    from ..tasks import conformal_coverage_over_splits, label_probability, task_metrics

    outputs, _ = task_outputs(model, paths, batch_size=batch_size, progress=progress)
    result = task_metrics(outputs, threshold=fitted["threshold"], temperature=fitted["temperature"],
                          bias=fitted["bias"], qhat=fitted["qhat"])
    probability = label_probability(outputs["label_logit"], fitted["temperature"], fitted["bias"])
    splits = conformal_coverage_over_splits(probability, outputs["true_label"], fitted["alpha"], splits=100)
    result["split_coverage"], result["split_set_size"] = splits["mean_coverage"], splits["mean_set_size"]
    result["files"] = [{"path": str(p), "sha256": d} for p, d in zip(paths, digests)]
    report.mkdir(parents=True, exist_ok=True)
    _reliability_figure(outputs, fitted, report / "reliability.png")
    _write_report(result, fitted, report / "report.md")
    del result["per_case"]
    return result


def _reliability_figure(outputs: dict, fitted: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .._atomic import atomic_path
    from ..tasks import label_probability, reliability_curve

    fig, ax = plt.subplots(figsize=(4.5, 4.2), constrained_layout=True)
    ax.plot([0.5, 1], [0.5, 1], color="k", linewidth=1, label="perfect calibration")
    after = f"after (T = {fitted['temperature']:.3g}, b = {fitted['bias']:.3g})"
    for t, b, name in ((1.0, 0.0, "before"), (fitted["temperature"], fitted["bias"], after)):
        confidence, accuracy, counts = reliability_curve(label_probability(outputs["label_logit"], t, b),
                                                         outputs["true_label"])
        used = counts > 0
        ax.plot(confidence[used], accuracy[used], "o-", label=name)
    ax.set_xlabel("confidence of the predicted class")
    ax.set_ylabel("accuracy")
    ax.set_title("lesion label: reliability on test cases", fontsize=10)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)


def _interval(value) -> str:
    estimate, low, high = value
    return "—" if np.isnan(estimate) else f"{estimate:.3f} [{low:.3f}, {high:.3f}]"


def _write_report(result: dict, fitted: dict, path: Path) -> None:
    from .._atomic import atomic_path

    lines = [f"# Calibrated lesion label ({fitted['label_calibration']} scaling): T {fitted['temperature']:.3f}, "
             f"b {fitted['bias']:.3f}, operating point {fitted['threshold']:.3f}, qhat {fitted['qhat']:.3f} "
             f"(alpha {fitted['alpha']:g})", "",
             f"Calibration map and operating point from {fitted['n_temperature']} calibration cases, qhat from the other "
             f"{fitted['n_conformal']}; measured on {result['cases']} test cases ({result['lesion_cases']} with "
             "lesions); 95% bootstrap intervals over cases.", "",
             "| measure | value |", "|---|---:|",
             f"| Dice (cases with lesions) | {_interval(result['dice'])} |",
             f"| HD95 (pixels) | {_interval(result['hd95'])} |",
             f"| ROC AUC | {_interval(result['auc'])} |",
             f"| sensitivity / specificity at the operating point | {result['sensitivity']:.3f} / "
             f"{result['specificity']:.3f} |",
             f"| ECE before / after {fitted['label_calibration']} scaling | {result['ece_before']:.3f} / "
             f"{result['ece']:.3f} |",
             f"| ECE of a calibrated model on as many cases (mean / 95th percentile; labels drawn from the "
             f"probabilities) | {result['ece_floor']['mean']:.3f} / {result['ece_floor']['p95']:.3f} |",
             f"| conformal set coverage at qhat (target >= {1 - fitted['alpha']:g}) | {result['set_coverage']:.3f} |",
             f"| mean set size | {result['set_size']:.3f} |",
             f"| mean coverage over 100 random splits of the test cases | {result['split_coverage']:.3f} |", "",
             "Figure: `reliability.png`."]
    with atomic_path(path) as tmp:
        Path(tmp).write_text("\n".join(lines) + "\n")
