"""``pirecon reconstruct``: a raw file (or an image volume to simulate from) in, a reconstruction out.

    pirecon reconstruct IN --checkpoint CKPT --out OUT [--format dicom] [--device D] [--batch-size B] [--overwrite]
    pirecon reconstruct IN --method fbp|zero-filled|cgls|sirt|tv --out OUT [--param k=v ...]

Learned models (a checkpoint of ``pirecon fit``) and classical methods take the same road,
:class:`pirecon.inference.Reconstructor`: the measurements and the physics come from the file itself
(:mod:`pirecon.data.acquisition`), slices are reconstructed in batches, and the output format follows
from ``OUT`` (``.h5``, ``.nii``, ``.nii.gz``, or a directory with ``--format dicom``). Every input and the
output path are checked before any work. When the file has ground truth, PSNR and SSIM per slice are
reported and stored in the provenance.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from .errors import ArgumentError
from .inference.classical import METHODS, PARAMS

__all__ = ["reconstruct_file", "METHODS", "parse_params"]


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
    allowed = PARAMS[method]
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


def reconstruct_file(input_path: str | Path, out: str | Path, method: str | None = None,
                     params: dict[str, Any] | None = None, *, checkpoint: str | Path | None = None,
                     format: str | None = None, device: str = "cpu", batch_size: int = 8, overwrite: bool = False,
                     progress: bool = True, physics_mismatch: str = "error", reconstructor=None) -> dict[str, Any]:
    """Reconstruct every slice of ``input_path`` with a classical ``method`` or a ``checkpoint`` and write ``out``.

    Everything is checked first (the output path, the method or checkpoint, the input file and its physics,
    what the output format needs), then the slices are reconstructed ``batch_size`` at a time. Returns the provenance written, including ``metrics`` (PSNR and
    SSIM per slice and their means) when the file has ground truth. ``reconstructor``: a ready
    :class:`pirecon.inference.Reconstructor` to use instead of loading one.
    """
    from .inference import load, reconstructor as classical, save
    from .inference.output import check_output, check_writable

    if (method is None) == (checkpoint is None) and reconstructor is None:
        raise ArgumentError("expected exactly one of --method and --checkpoint, found "
                            + ("both" if method is not None else "neither"))
    input_path = Path(input_path)
    kind = check_output(out, format, overwrite=overwrite)
    if not input_path.exists():
        raise FileNotFoundError(f"input: expected an existing raw file or image volume, found nothing at "
                                f"{str(input_path)!r}")
    if reconstructor is None:
        reconstructor = load(checkpoint, device=device) if checkpoint is not None else \
            classical(method, device=device, **(params or {}))
    source = reconstructor.open(input_path, physics_mismatch=physics_mismatch, metrics=True, progress=progress)
    check_writable(source.facts, kind, out)
    reconstruction = reconstructor.reconstruct(source, batch_size=batch_size, progress=progress)
    save(reconstruction, out, format=format, overwrite=overwrite)
    return reconstruction.provenance


def add_reconstruct_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("input", help="raw CT or MRI file (pirecon format, fastMRI, LoDoPaB-CT observation file), "
                                      "or a DICOM series / NIfTI volume to simulate from with a CT checkpoint's physics")
    how = parser.add_mutually_exclusive_group(required=True)
    how.add_argument("--checkpoint", help="a checkpoint written by pirecon fit (any device it was trained on)")
    how.add_argument("--method", choices=METHODS, help="a classical method")
    parser.add_argument("--out", required=True, help="output: .h5, .nii, .nii.gz, or a directory with --format dicom")
    parser.add_argument("--format", choices=("h5", "nifti", "dicom"), help="default: from the suffix of --out")
    parser.add_argument("--param", action="append", default=[], metavar="KEY=VALUE",
                        help="method parameter, repeatable (fbp: filter, frequency_scaling; cgls: iterations, "
                             "tikhonov, tol; sirt: iterations, nonnegative; tv: lam, iterations, nonnegative)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default: cpu)")
    parser.add_argument("--batch-size", type=int, default=8, help="slices per model call (default: 8)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output")
    parser.add_argument("--physics-mismatch", choices=("error", "use_data"), default="error",
                        help="data whose geometry or noise model differ from the model's: refuse (default) or "
                             "reconstruct anyway")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def reconstruct_main(args: argparse.Namespace) -> int:
    from .inference import load, reconstructor as classical

    if args.method is None and args.param:
        raise ArgumentError("--param: expected with --method (a classical method), found it with --checkpoint")
    params = parse_params(args.method, args.param) if args.method else {}
    if args.method == "tv" and "lam" not in params:
        raise ArgumentError("method 'tv': expected --param lam=<regularisation weight>, found none")
    if args.batch_size < 1:
        raise ArgumentError(f"--batch-size: expected a positive integer, found {args.batch_size}")
    if args.checkpoint is not None:
        model = load(args.checkpoint, device=args.device)
        print(f"model: {model.card.summary() if model.card is not None else model.name}", flush=True)
    else:
        model = classical(args.method, device=args.device, **params)
    provenance = reconstruct_file(args.input, args.out, format=args.format, batch_size=args.batch_size,
                                  overwrite=args.overwrite, progress=not args.quiet,
                                  physics_mismatch=args.physics_mismatch, reconstructor=model)
    line = f"wrote {args.out} ({provenance.get('method', model.name)})"
    if "metrics" in provenance:
        metrics = provenance["metrics"]
        line += f": PSNR {metrics['mean_psnr_db']:.2f} dB, SSIM {metrics['mean_ssim']:.3f} (mean over slices)"
    print(line)
    return 0


def predict_main(argv: list[str]) -> int:
    """``pirecon predict --ckpt_path CKPT --data.predict FILE [FILE ...] [--writer.output_dir DIR]``: the checkpoint
    alone (no training config), one ``DIR/<stem>_<model>.h5`` per input, each named when written."""
    from .inference import load, save
    from .inference.output import check_output

    parser = argparse.ArgumentParser(prog="pirecon predict", description=(
        "Reconstruct raw files with a checkpoint of pirecon fit (no config needed; with --config, Lightning's "
        "predict runs instead)."))
    parser.add_argument("--ckpt_path", required=True, help="checkpoint written by pirecon fit")
    parser.add_argument("--data.predict", dest="files", nargs="+", action="extend", required=True, metavar="FILE",
                        help="raw files to reconstruct")
    parser.add_argument("--writer.output_dir", dest="output_dir", default="reconstructions",
                        help="where to write <input stem>_<model>.h5 (default: reconstructions)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    parser.add_argument("--physics-mismatch", choices=("error", "use_data"), default="error")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    if args.batch_size < 1:
        raise ArgumentError(f"--batch-size: expected a positive integer, found {args.batch_size}")
    inputs = [Path(f) for f in args.files]
    for path in inputs:
        if not path.is_file():
            raise FileNotFoundError(f"--data.predict: expected an existing raw file, found nothing at {str(path)!r}")
    model = load(args.ckpt_path, device=args.device)
    outputs = [Path(args.output_dir) / f"{path.stem}_{model.name}.h5" for path in inputs]
    for i, (out, path) in enumerate(zip(outputs, inputs)):
        earlier = [p for o, p in zip(outputs[:i], inputs[:i]) if o == out]
        if earlier:
            raise ArgumentError(f"--data.predict: expected inputs with distinct names, found {earlier[0]} and {path}, "
                                f"which would both be written to {out}")
        check_output(out, overwrite=args.overwrite)
    sources = [model.open(path, physics_mismatch=args.physics_mismatch, progress=not args.quiet) for path in inputs]
    print(f"model: {model.card.summary() if model.card is not None else model.name}", flush=True)
    for path, out, source in zip(inputs, outputs, sources):
        reconstruction = model.reconstruct(source, batch_size=args.batch_size, progress=not args.quiet)
        out.parent.mkdir(parents=True, exist_ok=True)
        save(reconstruction, out, overwrite=args.overwrite)
        print(f"wrote {out} ({reconstruction.image.shape[0]} slices of {path})", flush=True)
    return 0
