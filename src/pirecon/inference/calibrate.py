"""``pirecon calibrate``: scale an uncertainty head's intervals to a guaranteed risk on held-out data.

    pirecon calibrate --checkpoint CKPT --data CAL.h5 --alpha 0.1 --delta 0.1 --out CALIBRATED.ckpt
        [--method rcps|crc] [--bound hb|wsr]

The head's intervals on every calibration image give the fraction of pixels outside the interval at each
scale of a grid (:func:`pirecon.uncertainty.miscoverage_curves`); RCPS or conformal risk control picks
lambda-hat (:mod:`pirecon.uncertainty.calibration`, the guarantee in ``docs/protocols.md``). The calibrated
checkpoint is the input checkpoint with ``pirecon_calibration`` (lambda-hat, alpha, delta, method, bound,
n, the calibration file and its SHA-256) and its model card completed; ``pirecon.load`` of it returns
calibrated intervals.

The calibration file must be held out: a file that a training run may read (``split`` "train", or a file
listed in the model card's training data) is refused.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from ..errors import ArgumentError, PireconUserError

__all__ = ["calibrate", "add_calibrate_arguments", "calibrate_main", "LAMBDAS"]

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


def calibrate(checkpoint, data, out, *, alpha: float = 0.1, delta: float = 0.1, method: str = "rcps",
              bound: str = "hb", batch_size: int = 8, overwrite: bool = False, progress: bool = True):
    """Calibrate the uncertainty head of ``checkpoint`` on ``data`` and write ``out``; returns the
    :class:`pirecon.uncertainty.Calibration`."""
    from .._atomic import atomic_path
    from .._progress import progress_bar
    from .._validation import check_choice
    from ..uncertainty import Interval, conformal_risk_control, miscoverage_curves, rcps
    from ..uncertainty.calibration import METHODS
    from .card import ModelCard
    from .checkpoint import file_sha256, read_checkpoint
    from .reconstructors import load

    method = check_choice(method, "method", METHODS)
    out, data = Path(out), Path(data)
    if out.exists() and not overwrite:
        raise PireconUserError(f"{out}: expected a new output path, found a file that exists; pass overwrite=True "
                               "(--overwrite) to replace it")
    model = load(checkpoint)
    source = model.open(data, metrics=True, progress=progress)
    _held_out(data, model.card)
    curves = []
    bar = progress_bar(total=source.num_slices, progress=progress, unit="slice", desc="calibrating")
    with torch.no_grad():
        for _, y, physics, truth in source.batches(batch_size):
            interval = model.model(y.to(model.device), physics).uncertainty
            if not isinstance(interval, Interval):
                raise PireconUserError(f"{checkpoint}: expected a model with an uncertainty head (gaussian_head, "
                                       f"quantile_head, mc_dropout, constant_width), found {model.name}")
            if truth is None:
                raise PireconUserError(f"{data}: expected ground truth to calibrate against, found none")
            reference = (truth.abs() if truth.is_complex() else truth).to(interval.center.dtype)
            curves.append(miscoverage_curves(interval.detach("cpu"), reference, LAMBDAS))
            bar.update(y.shape[0])
    bar.close()
    losses = np.concatenate(curves)
    result = rcps(losses, LAMBDAS, alpha, delta, bound) if method == "rcps" else \
        conformal_risk_control(losses, LAMBDAS, alpha)
    stored, _ = read_checkpoint(checkpoint, map_location="cpu")
    summary = {**result.to_dict(), "data": str(data), "data_sha256": file_sha256(data)}
    stored["pirecon_calibration"] = summary
    card = model.card.data if model.card is not None else stored.get("pirecon_card")
    if card:  # the card of a fit run, completed with the calibration, in the checkpoint and beside it
        card = {**card, "metrics": {**(card.get("metrics") or {}), "calibration": summary}}
        stored["pirecon_card"] = card
    with atomic_path(out) as tmp:
        torch.save(stored, tmp)
    if card:
        ModelCard(card).write(out.parent)
    return result


def add_calibrate_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", required=True, help="a checkpoint of a model with an uncertainty head")
    parser.add_argument("--data", required=True, help="held-out calibration file (pirecon simulate --split "
                                                      "calibration, or held-out raw files)")
    parser.add_argument("--out", required=True, help="the calibrated checkpoint to write")
    parser.add_argument("--alpha", type=float, default=0.1, help="tolerated fraction of pixels outside (default 0.1)")
    parser.add_argument("--delta", type=float, default=0.1, help="RCPS: failure probability (default 0.1)")
    parser.add_argument("--method", choices=("rcps", "crc"), default="rcps")
    parser.add_argument("--bound", choices=("hb", "wsr"), default="hb")
    parser.add_argument("--risk", choices=("pixel-miscoverage",), default="pixel-miscoverage")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--overwrite", action="store_true")
    parser.add_argument("--quiet", action="store_true")


def calibrate_main(args: argparse.Namespace) -> int:
    if args.batch_size < 1:
        raise ArgumentError(f"--batch-size: expected a positive integer, found {args.batch_size}")
    result = calibrate(args.checkpoint, args.data, args.out, alpha=args.alpha, delta=args.delta, method=args.method,
                       bound=args.bound, batch_size=args.batch_size, overwrite=args.overwrite,
                       progress=not args.quiet)
    guarantee = f"risk <= {result.alpha:g}" + (f" with probability >= {1 - result.delta:g}" if result.delta else
                                               " in expectation")
    print(f"wrote {args.out}: lambda-hat {result.lambda_hat:.3f} ({result.method.upper()}"
          f"{'' if result.bound is None else ', ' + result.bound.upper()}, {result.n} calibration images, "
          f"empirical risk {result.risk_hat:.4f}, bound {result.upper_bound:.4f}; {guarantee})")
    return 0
