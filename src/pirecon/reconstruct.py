"""``pirecon reconstruct``: a raw file in, a reconstruction file (with provenance) out.

    pirecon reconstruct INPUT.h5 --method fbp|zero-filled|cgls|sirt|tv --out OUT.h5 [--param k=v ...]

The measurements and the physics come from the file itself, read once through
:func:`pirecon.data.acquisition.read_acquisition`. When the file
has ground truth, PSNR and SSIM per slice are reported and stored in the
provenance.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import torch

from .errors import ArgumentError

__all__ = ["reconstruct_file", "METHODS", "parse_params"]

METHODS = ("fbp", "zero-filled", "cgls", "sirt", "tv")

# parameters each method accepts, with their types
_PARAMS: dict[str, dict[str, type]] = {
    "fbp": {"filter": str, "frequency_scaling": float},
    "zero-filled": {},
    "cgls": {"iterations": int, "tikhonov": float, "tol": float},
    "sirt": {"iterations": int, "nonnegative": bool},
    "tv": {"lam": float, "iterations": int, "nonnegative": bool},
}


def _convert(text: str, kind: type, key: str):
    if kind is bool:
        if text.lower() in ("1", "true", "yes"):
            return True
        if text.lower() in ("0", "false", "no"):
            return False
        raise ArgumentError(f"--param {key}: expected true or false, found {text!r}")
    try:
        return kind(text)
    except ValueError:
        raise ArgumentError(f"--param {key}: expected {kind.__name__}, found {text!r}") from None


def parse_params(method: str, pairs: list[str]) -> dict[str, Any]:
    """``["k=v", ...]`` into typed keyword arguments of ``method``; unknown keys are an error."""
    allowed = _PARAMS[method]
    params: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ArgumentError(f"--param: expected key=value, found {pair!r}")
        if key not in allowed:
            known = ", ".join(sorted(allowed)) or "none"
            raise ArgumentError(f"--param {key}: method {method!r} accepts {known}")
        params[key] = _convert(value, allowed[key], key)
    return params


def _run(method: str, y: torch.Tensor, physics, params: dict[str, Any], progress: bool) -> torch.Tensor:
    from .ct import fbp

    if method == "fbp":
        if physics.modality != "ct":
            raise ArgumentError("method 'fbp': expected a CT file, found an MRI file (use zero-filled)")
        return fbp(y, physics.operator, **params)
    if method == "zero-filled":
        if physics.modality != "mri":
            raise ArgumentError("method 'zero-filled': expected an MRI file, found a CT file (use fbp)")
        return physics.adjoint(y)
    from . import solvers

    solver = {"cgls": solvers.cgls, "sirt": solvers.sirt, "tv": solvers.tv_pdhg}[method]
    if method == "tv" and "lam" not in params:
        raise ArgumentError("method 'tv': expected --param lam=<regularisation weight>, found none")
    return solver(y, physics.operator, progress=progress, **params).image


def reconstruct_file(input_path: str | Path, out: str | Path, method: str, params: dict[str, Any] | None = None,
                     *, progress: bool = True) -> dict[str, Any]:
    """Reconstruct every slice of a raw file with ``method`` and write a reconstruction file.

    Returns the provenance written, including ``metrics`` (mean PSNR/SSIM) when the file has ground truth.
    """
    from . import __version__
    from ._validation import check_choice
    from .data.acquisition import read_acquisition
    from .data.formats import write_reconstruction
    from .metrics import psnr, ssim

    method = check_choice(method, "method", METHODS)
    params = dict(params or {})
    input_path = Path(input_path)
    acquisition = read_acquisition(input_path)
    physics, y, truth = acquisition.physics, acquisition.y, acquisition.ground_truth
    with torch.no_grad():
        image = _run(method, y, physics, params, progress)
    provenance: dict[str, Any] = {
        "method": method,
        "config": json.dumps({"method": method, "params": params}, sort_keys=True),
        "source_file": str(input_path),
        "pirecon_version": __version__,
    }
    if "geometry" in physics.metadata:
        provenance["geometry"] = physics.metadata["geometry"]
    if truth is not None:
        reference, shown = truth.abs() if truth.is_complex() else truth, image.abs() if image.is_complex() else image
        p, s = psnr(shown.float(), reference.float()), ssim(shown.float(), reference.float())
        provenance["metrics"] = json.dumps({"psnr_db": p.tolist(), "ssim": s.tolist(),
                                            "mean_psnr_db": float(p.mean()), "mean_ssim": float(s.mean())})
    write_reconstruction(out, image[:, 0], provenance=provenance)
    return provenance


def add_reconstruct_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("input", help="raw CT or MRI file (pirecon format or fastMRI)")
    parser.add_argument("--method", required=True, choices=METHODS)
    parser.add_argument("--out", required=True, help="reconstruction file to write")
    parser.add_argument("--param", action="append", default=[], metavar="KEY=VALUE",
                        help="method parameter, repeatable (fbp: filter, frequency_scaling; cgls: iterations, "
                             "tikhonov, tol; sirt: iterations, nonnegative; tv: lam, iterations, nonnegative)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def reconstruct_main(args: argparse.Namespace) -> int:
    params = parse_params(args.method, args.param)
    provenance = reconstruct_file(args.input, args.out, args.method, params, progress=not args.quiet)
    line = f"wrote {args.out} ({args.method})"
    if "metrics" in provenance:
        metrics = json.loads(provenance["metrics"])
        line += f": PSNR {metrics['mean_psnr_db']:.2f} dB, SSIM {metrics['mean_ssim']:.3f} (mean over slices)"
    print(line)
    return 0
