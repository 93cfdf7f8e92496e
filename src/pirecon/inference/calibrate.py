"""``pirecon calibrate``: scale an uncertainty head's intervals to a guaranteed risk on held-out data.

    pirecon calibrate --checkpoint CKPT --data CAL.h5 [CAL2.h5 ...] --alpha 0.1 --delta 0.1 --out CALIBRATED.ckpt
        [--method rcps|crc] [--bound hb|wsr] [--test TEST.h5 [...] --report DIR]

The head's intervals on every calibration image give the fraction of pixels outside the interval at each
scale of a grid (:func:`pirecon.uncertainty.miscoverage_curves`); RCPS or conformal risk control picks
lambda-hat (:mod:`pirecon.uncertainty.calibration`, the guarantee in ``docs/protocols.md``). The calibrated
checkpoint is the input checkpoint with ``pirecon_calibration`` (lambda-hat, alpha, delta, method, bound,
n, the calibration file and its SHA-256) and its model card completed; ``pirecon.load`` of it returns
calibrated intervals.

The calibration files must be held out: a file that a training run may read (``split`` "train", or a file
listed in the model card's training data) is refused.

The unit of calibration is what is exchangeable: the slices of a simulated file (``pirecon simulate``, an
attribute ``simulation``) are independent draws, so each slice is one unit; any other file (a fastMRI volume,
a scanner's raw file) holds the slices of one volume, so the file is one unit, its loss the mean over its
slices (the guarantee is then about volumes), and random splits keep a volume on one side
(:func:`pirecon.uncertainty.group_splits`), never splitting it by slice.

With ``--test`` (another held-out file) and ``--report DIR``, the intervals are also measured: the test risk
and width at lambda-hat; over 100 random calibration/test splits of the two files pooled, the fraction of
splits whose test risk exceeds alpha, the mean risk and width (:func:`pirecon.uncertainty.report.split_statistics`);
coverage against nominal coverage for alpha from 0.05 to 0.5; Spearman(width, |error|), AUSE; and the figures
(``risk_violin.png``, ``reliability.png``, ``sparsification.png``, ``examples.png``) with ``report.md``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from ..errors import ArgumentError, PireconUserError

__all__ = ["calibrate", "add_calibrate_arguments", "calibrate_main", "LAMBDAS", "held_out_files",
           "write_calibrated"]

LAMBDAS = np.concatenate([np.linspace(0, 2, 201)[:-1], np.linspace(2, 20, 181)])
"""The scales searched: steps of 0.01 up to 2, then of 0.1 up to 20."""


def _held_out(path: Path, card) -> None:
    import h5py

    from .checkpoint import file_sha256

    with h5py.File(path, "r") as f:
        split = f.attrs.get("split")
    split = split.decode() if isinstance(split, bytes) else split
    if split == "train":
        raise PireconUserError(f"{path}: expected held-out calibration data (split 'calibration'), found split "
                               "'train', a stream training runs read")
    train = ((card.data.get("training_data") or {}).get("train") or {}) if card is not None else {}
    files = train.get("files") if isinstance(train, dict) else None
    if files:
        digest = file_sha256(path)
        if any(isinstance(f, dict) and f.get("sha256") == digest for f in files):
            raise PireconUserError(f"{path}: expected data disjoint from the model's training data, found a file "
                                   "the model card lists among its training files")


def _curves(model, source, checkpoint, batch_size: int, progress: bool, keep: bool):
    """Miscoverage curves ``(n, L)`` of a source's images on :data:`LAMBDAS`, their mean widths ``(n,)`` at scale
    1, and (``keep``) the truths and intervals at scale 1 (all images, on the CPU) for the report."""
    from .._progress import progress_bar
    from ..uncertainty import Interval, mean_width, miscoverage_curves

    curves, widths, truths, intervals = [], [], [], []
    bar = progress_bar(total=source.num_slices, progress=progress, unit="slice", desc=f"intervals of {source.name}")
    with torch.no_grad():
        for _, y, physics, truth in source.batches(batch_size):
            interval = model.model(y.to(model.device), physics).uncertainty
            if not isinstance(interval, Interval):
                raise PireconUserError(f"{checkpoint}: expected a model with an uncertainty head (gaussian_head, "
                                       f"quantile_head, mc_dropout, constant_width), found {model.name}")
            if truth is None:
                raise PireconUserError(f"{source.name}: expected ground truth to calibrate against, found none")
            interval = interval.detach("cpu")
            reference = (truth.abs() if truth.is_complex() else truth).to(interval.center.dtype)
            curves.append(miscoverage_curves(interval, reference, LAMBDAS))
            widths.append(mean_width(interval).numpy())
            if keep:
                truths.append(reference)
                intervals.append(interval)
            bar.update(y.shape[0])
    bar.close()
    kept = (torch.cat(truths), Interval.concatenate(intervals)) if keep else None
    return np.concatenate(curves), np.concatenate(widths), kept


def _is_simulated(path: Path) -> bool:
    """Whether a raw file was written by ``pirecon simulate`` (its slices are independent draws)."""
    import h5py

    with h5py.File(path, "r") as f:
        return "simulation" in f.attrs


def unit_name(paths) -> str:
    """What one calibration unit of these files is: ``"images"`` (all simulated) or ``"volumes"``."""
    return "images" if all(_is_simulated(Path(path)) for path in paths) else "volumes"


def _unit_of_slices(path: Path, slices: int) -> np.ndarray:
    """Per slice, the index of its calibration unit within the file: its own for a simulated file (independent
    draws), 0 for any other (one volume)."""
    return np.arange(slices) if _is_simulated(path) else np.zeros(slices, dtype=np.int64)


def _unit_curves(model, paths, checkpoint, batch_size: int, progress: bool, keep: bool):
    """:func:`_curves` of several held-out files, averaged within calibration units (slices of simulated files,
    whole files otherwise): ``(curves (n_units, L), widths (n_units,), kept, units per file)``."""
    curves, widths, kept, counts = [], [], [], []
    for path in paths:
        source = model.open(path, metrics=True, progress=progress)
        file_curves, file_widths, file_kept = _curves(model, source, checkpoint, batch_size, progress, keep)
        units = _unit_of_slices(path, len(file_curves))
        count = int(units.max()) + 1
        curves.append(np.stack([file_curves[units == u].mean(axis=0) for u in range(count)]))
        widths.append(np.array([file_widths[units == u].mean() for u in range(count)]))
        counts.append(count)
        if keep:
            kept.append(file_kept)
    if keep:
        from ..uncertainty import Interval

        kept = (torch.cat([k[0] for k in kept]), Interval.concatenate([k[1] for k in kept]))
    return np.concatenate(curves), np.concatenate(widths), kept if keep else None, counts


def held_out_files(model, data, test=None) -> tuple[list[Path], list[str], list[Path], list[str]]:
    """The calibration files ``data`` and test files ``test`` checked before any work: existing, held out
    (:func:`_held_out`), distinct, and disjoint from each other by SHA-256. Returns ``(paths, their SHA-256,
    test paths, their SHA-256)``."""
    from ..uncertainty import check_disjoint
    from .checkpoint import file_sha256

    paths = _paths(data, "--data")
    for path in paths:
        if not path.is_file():
            raise FileNotFoundError(f"--data: expected an existing file, found nothing at {str(path)!r}")
        _held_out(path, model.card)
    digests = [file_sha256(path) for path in paths]
    if len(set(digests)) < len(paths):
        raise PireconUserError("--data: expected distinct calibration files, found the same file twice")
    test_paths = [] if test is None else _paths(test, "--test")
    for path in test_paths:
        _held_out(path, model.card)
    test_digests = [file_sha256(path) for path in test_paths]
    if test_paths:
        check_disjoint(digests, test_digests, "files (by SHA-256)")
    return paths, digests, test_paths, test_digests


def write_calibrated(checkpoint, out: Path, model, key: str, summary: dict) -> None:
    """``checkpoint`` with ``summary`` stored under ``key`` (``pirecon_calibration``, ``pirecon_task_calibration``)
    written atomically to ``out``; the model card of a fit run gets it as ``metrics[<key without pirecon_>]``, in
    the checkpoint and beside it."""
    from .._atomic import atomic_path
    from .card import ModelCard
    from .checkpoint import read_checkpoint

    stored, _ = read_checkpoint(checkpoint, map_location="cpu")
    stored[key] = summary
    card = model.card.data if model.card is not None else stored.get("pirecon_card")
    if card:
        card = {**card, "metrics": {**(card.get("metrics") or {}), key.removeprefix("pirecon_"): summary}}
        stored["pirecon_card"] = card
    with atomic_path(out) as tmp:
        torch.save(stored, tmp)
    if card:
        ModelCard(card).write(out.parent)


def _paths(data, name: str) -> list[Path]:
    paths = [Path(data)] if isinstance(data, (str, Path)) else [Path(p) for p in data]
    if not paths:
        raise ArgumentError(f"{name}: expected at least one held-out file, found none")
    return paths


def calibrate(checkpoint, data, out, *, alpha: float = 0.1, delta: float = 0.1, method: str = "rcps",
              bound: str = "hb", batch_size: int = 8, overwrite: bool = False, progress: bool = True,
              test=None, report=None):
    """Calibrate the uncertainty head of ``checkpoint`` on ``data`` (a held-out file or a list of them) and write
    ``out``; returns the :class:`pirecon.uncertainty.Calibration` (``n``: calibration units, see the module)."""
    from .._validation import check_choice
    from ..uncertainty import conformal_risk_control, rcps
    from ..uncertainty.calibration import METHODS
    from .output import refuse_existing
    from .reconstructors import load

    method = check_choice(method, "method", METHODS)
    out = Path(out)
    refuse_existing(out, overwrite=overwrite)
    if (test is None) != (report is None):
        raise ArgumentError("--test, --report: expected both (a held-out test file and a report directory) or "
                            "neither, found one")
    model = load(checkpoint)
    paths, data_sha256, test_paths, _ = held_out_files(model, data, test)
    losses, widths, _, units = _unit_curves(model, paths, checkpoint, batch_size, progress, keep=False)
    result = rcps(losses, LAMBDAS, alpha, delta, bound) if method == "rcps" else \
        conformal_risk_control(losses, LAMBDAS, alpha)
    files = [{"path": str(path), "sha256": digest, "units": count}
             for path, digest, count in zip(paths, data_sha256, units)]
    summary = {**result.to_dict(), "unit": unit_name(paths), "files": files,
               "data": str(paths[0]) if len(paths) == 1 else [str(p) for p in paths],
               "data_sha256": data_sha256[0] if len(paths) == 1 else data_sha256}
    write_calibrated(checkpoint, out, model, "pirecon_calibration", summary)
    if test_paths:
        test_curves, test_widths, kept, _ = _unit_curves(model, test_paths, checkpoint, batch_size, progress,
                                                         keep=True)
        _report(Path(report), result, losses, widths, test_curves, test_widths, *kept, alpha=alpha, delta=delta,
                bound=bound, units=(unit_name(paths), unit_name(test_paths)))
    return result


def _report(directory: Path, result, losses, widths, test_losses, test_widths, truth, interval, *, alpha, delta,
            bound, units: tuple[str, str] = ("images", "images")) -> None:
    """Measure the calibrated intervals on the test images and write ``report.md`` and the figures."""
    from .._atomic import atomic_path
    from ..uncertainty import ause, rcps, sparsification, spearman
    from ..uncertainty.report import (examples_figure, reliability_diagram, risk_violin, sparsification_figure,
                                      split_statistics)

    directory.mkdir(parents=True, exist_ok=True)
    k = int(np.searchsorted(LAMBDAS, result.lambda_hat))
    calibrated = interval.scaled(result.lambda_hat)
    error = (interval.center - truth).abs()
    stats = split_statistics(np.concatenate([losses, test_losses]), np.concatenate([widths, test_widths]), LAMBDAS,
                             alpha=alpha, delta=delta, bound=bound,
                             calibration_fraction=len(losses) / (len(losses) + len(test_losses)))
    nominal, observed = [], []
    for level in (0.05, 0.1, 0.2, 0.3, 0.4, 0.5):
        try:
            at = rcps(losses, LAMBDAS, level, delta, bound)
        except PireconUserError:
            continue
        nominal.append(1 - level)
        observed.append(1 - test_losses[:, int(np.searchsorted(LAMBDAS, at.lambda_hat))].mean())
    fractions, curve, oracle = sparsification(calibrated.width, error)
    area = ause(calibrated.width, error)
    rho = spearman(calibrated.width, error)
    if stats["risks"].size:
        risk_violin({"calibrated head": stats["risks"]}, alpha, directory / "risk_violin.png")
    if nominal:
        reliability_diagram(np.array(nominal), np.array(observed), directory / "reliability.png")
    sparsification_figure(fractions, curve, oracle, directory / "sparsification.png", area)
    examples_figure(truth, calibrated, directory / "examples.png")
    lines = [f"# Calibrated intervals: {result.method.upper()}, alpha {alpha:g}, delta {delta:g}", "",
             f"lambda-hat {result.lambda_hat:.3f} on {result.n} calibration {units[0]} (empirical risk "
             f"{result.risk_hat:.4f}, bound {result.upper_bound:.4f}).", "",
             "| measure | value |", "|---|---:|",
             f"| test risk at lambda-hat ({test_losses.shape[0]} {units[1]}) | {test_losses[:, k].mean():.4f} |",
             f"| test mean width at lambda-hat | {calibrated.width.mean():.4g} |",
             f"| splits with test risk > alpha ({stats['splits']} random splits, calibration and test pooled) | "
             f"{stats['violation_fraction']:.2f} |",
             f"| mean risk over the splits | {stats['mean_risk']:.4f} |",
             f"| splits certifying no scale (left out above) | {stats['abstentions']} |",
             f"| Spearman(width, abs error), test pixels | {rho:.3f} |",
             f"| AUSE (width), test pixels | {area:.4f} |", "",
             "Figures: `risk_violin.png`, `reliability.png`, `sparsification.png`, `examples.png`."]
    with atomic_path(directory / "report.md") as tmp:
        Path(tmp).write_text("\n".join(lines) + "\n")


def add_calibrate_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", required=True, help="a checkpoint of a model with an uncertainty head "
                                                              "(or, with --task, a task model)")
    parser.add_argument("--task", action="store_true",
                        help="calibrate the lesion label of a task model instead (temperature or Platt scaling "
                             "and split-conformal sets, pirecon.inference.calibrate_task)")
    parser.add_argument("--data", required=True, nargs="+", help="held-out calibration files (pirecon simulate "
                                                                  "--split calibration, or held-out raw files)")
    parser.add_argument("--out", required=True, help="the calibrated checkpoint to write")
    parser.add_argument("--alpha", type=float, default=0.1, help="tolerated fraction of pixels outside; with --task, "
                                                                 "of cases whose set misses the label (default 0.1)")
    parser.add_argument("--delta", type=float, default=0.1, help="RCPS: failure probability (default 0.1)")
    parser.add_argument("--temperature-fraction", type=float, default=0.5,
                        help="--task: the fraction of calibration cases that fit the temperature (default 0.5)")
    parser.add_argument("--label-calibration", choices=("temperature", "platt"), default="temperature",
                        help="--task: sigmoid(logit / T) (temperature scaling, default) or sigmoid(logit / T + b) "
                             "(Platt scaling: also removes a shift of the logits)")
    parser.add_argument("--method", choices=("rcps", "crc"), default="rcps")
    parser.add_argument("--bound", choices=("hb", "wsr"), default="hb")
    parser.add_argument("--risk", choices=("pixel-miscoverage",), default="pixel-miscoverage")
    parser.add_argument("--test", nargs="+", help="other held-out files to measure the calibrated intervals on "
                                                  "(with --report)")
    parser.add_argument("--report", help="directory for report.md and the figures (with --test)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--overwrite", action="store_true")
    parser.add_argument("--quiet", action="store_true")


def calibrate_main(args: argparse.Namespace) -> int:
    if args.batch_size < 1:
        raise ArgumentError(f"--batch-size: expected a positive integer, found {args.batch_size}")
    if args.task:
        return _calibrate_task_main(args)
    result = calibrate(args.checkpoint, args.data, args.out, alpha=args.alpha, delta=args.delta, method=args.method,
                       bound=args.bound, batch_size=args.batch_size, overwrite=args.overwrite,
                       progress=not args.quiet, test=args.test, report=args.report)
    guarantee = f"risk <= {result.alpha:g}" + (f" with probability >= {1 - result.delta:g}" if result.delta else
                                               " in expectation")
    print(f"wrote {args.out}: lambda-hat {result.lambda_hat:.3f} ({result.method.upper()}"
          f"{'' if result.bound is None else ', ' + result.bound.upper()}, {result.n} calibration "
          f"{unit_name(_paths(args.data, '--data'))}, "
          f"empirical risk {result.risk_hat:.4f}, bound {result.upper_bound:.4f}; {guarantee})")
    if args.report:
        print(f"wrote {Path(args.report) / 'report.md'} and its figures")
    return 0


def _calibrate_task_main(args: argparse.Namespace) -> int:
    from .calibrate_task import calibrate_task

    result = calibrate_task(args.checkpoint, args.data, args.out, alpha=args.alpha,
                            temperature_fraction=args.temperature_fraction,
                            label_calibration=args.label_calibration, batch_size=args.batch_size,
                            overwrite=args.overwrite, progress=not args.quiet, test=args.test, report=args.report)
    if result["temperature_note"]:
        print(f"note: {result['temperature_note']}")
    print(f"wrote {args.out}: temperature {result['temperature']:.3f}"
          + (f", bias {result['bias']:.3f}" if result["label_calibration"] == "platt" else "")
          + f", operating point {result['threshold']:.3f}, "
          f"qhat {result['qhat']:.3f} ({result['n_temperature']} + {result['n_conformal']} calibration cases; the "
          f"label's conformal set holds the truth with probability >= {1 - result['alpha']:g})")
    if args.report:
        test = result["test"]
        print(f"test: AUC {test['auc'][0]:.3f}, Dice {test['dice'][0]:.3f}, ECE {test['ece']:.3f}, set coverage "
              f"{test['set_coverage']:.3f}; wrote {Path(args.report) / 'report.md'} and reliability.png")
    return 0
