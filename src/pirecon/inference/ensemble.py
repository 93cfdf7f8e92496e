"""``pirecon ensemble``: K checkpoints of one configuration (K runs with different seeds) as one deep ensemble.

    pirecon ensemble --checkpoints run0/last.ckpt run1/last.ckpt ... --out ensemble.ckpt

The combined checkpoint has the layout ``pirecon fit`` writes: the model spec ``{"class_path": "ensemble",
"init_args": {"members": [spec, ...]}}`` (:class:`pirecon.models.DeepEnsemble`), the members' weights under
``model.members.<k>.``, and the physics they share (members trained for different physics are refused, naming
both). ``pirecon.load`` reads it like any checkpoint; ``pirecon calibrate`` calibrates its intervals.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from ..errors import ArgumentError, PireconUserError

__all__ = ["combine", "add_ensemble_arguments", "ensemble_main"]


def combine(checkpoints, out, *, alpha: float = 0.1, overwrite: bool = False) -> Path:
    """Write the deep ensemble of ``checkpoints`` (at least 2) to ``out``; returns ``out``."""
    from .._atomic import atomic_path
    from ..data.acquisition import check_same_physics
    from .checkpoint import checkpoint_stamp, read_checkpoint
    from .output import refuse_existing

    paths = [Path(p) for p in checkpoints]
    if len(paths) < 2:
        raise ArgumentError(f"--checkpoints: expected at least 2 checkpoints, found {len(paths)}")
    out = Path(out)
    refuse_existing(out, overwrite=overwrite)
    members, state, first = [], {}, None
    for k, path in enumerate(paths):
        checkpoint, _ = read_checkpoint(path, map_location="cpu")
        spec = (checkpoint.get("hyper_parameters") or {}).get("model")
        if not isinstance(spec, dict):
            raise PireconUserError(f"{path}: expected the model's class_path/init_args in the checkpoint, found none")
        if first is None:
            first = (path, checkpoint)
        elif checkpoint.get("pirecon_physics") != first[1].get("pirecon_physics"):
            check_same_physics(first[1].get("pirecon_physics") or {}, checkpoint.get("pirecon_physics") or {},
                               stored_name=str(first[0]), found_name=str(path))
        members.append(spec)
        for key, value in checkpoint["state_dict"].items():
            if key.startswith("model."):
                state[f"model.members.{k}.{key[len('model.'):]}"] = value
    hparams = dict(first[1].get("hyper_parameters") or {})
    hparams["model"] = {"class_path": "ensemble", "init_args": {"members": members, "alpha": float(alpha)}}
    combined = {"state_dict": state, "hyper_parameters": hparams, "pirecon": checkpoint_stamp(),
                "pirecon_ensemble": {"members": [str(p) for p in paths]}}
    if first[1].get("pirecon_physics") is not None:
        combined["pirecon_physics"] = first[1]["pirecon_physics"]
    with atomic_path(out) as tmp:
        torch.save(combined, tmp)
    return out


def add_ensemble_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoints", nargs="+", required=True, help="K >= 2 checkpoints of one configuration")
    parser.add_argument("--out", required=True, help="the ensemble checkpoint to write")
    parser.add_argument("--alpha", type=float, default=0.1, help="nominal miscoverage of the interval mean +- z std")
    parser.add_argument("--overwrite", action="store_true")


def ensemble_main(args: argparse.Namespace) -> int:
    out = combine(args.checkpoints, args.out, alpha=args.alpha, overwrite=args.overwrite)
    print(f"wrote {out}: a deep ensemble of {len(args.checkpoints)} members")
    return 0
