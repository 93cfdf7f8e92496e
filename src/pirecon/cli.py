"""The ``pirecon`` command.

    pirecon job --out DIR           the main job: simulate LPD-ellipses data, train LPD, evaluate against FBP and TV, report
    pirecon demo --out DIR          simulate LPD-ellipses CT data, reconstruct with FBP, write metrics and a figure
    pirecon simulate ... --out F    simulate a raw CT or MRI file (data_specs/)
    pirecon check FILE              check a file against its spec; one line, exit 0 or 2 (also: pirecon validate FILE)
    pirecon fit|validate|test|predict --config experiments/X.yaml [--ckpt_path C]   train / evaluate with Lightning
    pirecon fit --config experiments/X.yaml --ensemble K   K members (seeds s .. s+K-1) and their deep ensemble
    pirecon predict --ckpt_path C --data.predict F [F ...] [--writer.output_dir D]   the checkpoint alone
    pirecon reconstruct IN --checkpoint C --out OUT [--format dicom]   a trained model on a raw file or volume
    pirecon reconstruct IN --method M --out OUT [--param k=v ...]   classical reconstruction of a raw file
    pirecon calibrate --checkpoint C --data CAL.h5 --out CALIBRATED.ckpt   intervals with a guaranteed risk
    pirecon calibrate --task --checkpoint C --data CAL.h5 --out CALIBRATED.ckpt   a task model's lesion label
    pirecon ensemble --checkpoints A B ... --out E.ckpt   K runs as one deep ensemble
    pirecon panel build NAME --out DIR [--small]   a standardised test panel (ct-v1, mri-v1); panel verify DIR
    pirecon evaluate --checkpoint C --method fbp --panel DIR --out REPORT   per-condition metrics, blind spots

User errors print one line, ``pirecon <command>: error: <message>``, to stderr
and exit with status 2, without a traceback: pirecon's own
:class:`pirecon.errors.PireconUserError` (bad arguments, configs or files, a
backend or device this machine lacks) and OS errors about a path (missing, unwritable, a directory where a
file is expected). Anything else is a bug: its traceback is kept and the exit
status is 1.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ._version import __version__
from .errors import PATH_ERRORS, PireconUserError


def _demo(args) -> int:
    from .demo import _table_markdown, best_filter, run_ct_demo

    scores = run_ct_demo(args.out, num_ellipses=args.num_ellipses, seed=args.seed, noise=args.noise,
                         progress=not args.quiet)
    print(_table_markdown(scores, best_filter(scores), args.num_ellipses))
    print(f"wrote {args.out}/metrics.md, metrics.csv and figure.png")
    return 0


def _job(args) -> int:
    from .job import JOB_BATCH_SIZE, JOB_STEPS, run_job

    run_job(args.out, steps=args.steps or JOB_STEPS, batch_size=args.batch_size or JOB_BATCH_SIZE,
            checkpoint=args.checkpoint, num_test=args.num_test, tv_iterations=args.tv_iterations, seed=args.seed,
            progress=not args.quiet, fast=not args.float32)
    print((Path(args.out) / "metrics.md").read_text())
    print(f"wrote {args.out}/metrics.md, metrics.csv and figure.png")
    return 0


def _simulate(args) -> int:
    from .data.simulate import simulate_main

    return simulate_main(args)


def _validate(args) -> int:
    from .data.validate import main_validate

    return main_validate(args.file)


def _calibrate(args) -> int:
    from .inference.calibrate import calibrate_main

    return calibrate_main(args)


def _ensemble(args) -> int:
    from .inference.ensemble import ensemble_main

    return ensemble_main(args)


def _reconstruct(args) -> int:
    from .reconstruct import reconstruct_main

    return reconstruct_main(args)


def _panel(args) -> int:
    from .evaluation.panels import panel_main

    return panel_main(args)


def _evaluate(args) -> int:
    from .evaluation.evaluate import evaluate_main

    return evaluate_main(args)


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, found {text!r}")
    return value


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1), found {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pirecon", description="Physics-informed reconstruction for medical imaging.")
    parser.add_argument("--version", action="version", version=f"pirecon {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    job = sub.add_parser("job", help="the main job: simulate LPD-ellipses data, train LPD, evaluate against FBP and "
                                     "TV, write a report")
    job.add_argument("--out", required=True, help="output directory (created if missing)")
    job.add_argument("--steps", type=_positive_int, help="training steps (default: pirecon.job.JOB_STEPS)")
    job.add_argument("--batch-size", type=_positive_int, help="default: pirecon.job.JOB_BATCH_SIZE")
    job.add_argument("--checkpoint", help="evaluate this checkpoint (from pirecon fit) instead of training")
    job.add_argument("--num-test", type=_positive_int, default=100, help="held-out random-ellipse test images")
    job.add_argument("--tv-iterations", type=_positive_int, default=2000)
    job.add_argument("--seed", type=int, default=0)
    job.add_argument("--quiet", action="store_true", help="no progress bars")
    job.add_argument("--float32", action="store_true",
                     help="train in float32 without channels-last or torch.compile (default: the fastest settings "
                          "this machine supports, bfloat16 autocast where the CPU computes it natively)")
    job.set_defaults(run=_job)

    demo = sub.add_parser("demo", help="simulate LPD-ellipses CT data, reconstruct with FBP, write a report")
    demo.add_argument("--out", required=True, help="output directory (created if missing)")
    demo.add_argument("--num-ellipses", type=_positive_int, default=20, help="held-out random-ellipse images")
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--noise", type=_fraction, default=0.05, help="Gaussian std relative to mean |data| (0: none)")
    demo.add_argument("--quiet", action="store_true", help="no progress bar")
    demo.set_defaults(run=_demo)

    from .data.simulate import add_simulate_arguments

    simulate = sub.add_parser("simulate", help="simulate a raw CT or MRI file in pirecon's format")
    add_simulate_arguments(simulate)
    simulate.set_defaults(run=_simulate)

    for name in ("check", "validate"):
        check = sub.add_parser(name, help="check a file against its spec (data_specs/)" if name == "check" else
                               "with --config: evaluate a model (Lightning); with a FILE: as 'check'")
        check.add_argument("file", help="an HDF5 file written by pirecon, or a fastMRI file")
        check.set_defaults(run=_validate)
    for name in ("fit", "test", "predict"):
        sub.add_parser(name, help=f"Lightning {name} with --config experiments/X.yaml (pirecon {name} --help)",
                       add_help=False)

    from .reconstruct import add_reconstruct_arguments

    reconstruct = sub.add_parser("reconstruct", help="reconstruct a raw file (or a DICOM/NIfTI volume) with a "
                                                     "checkpoint or a classical method; write HDF5, NIfTI or DICOM")
    add_reconstruct_arguments(reconstruct)
    reconstruct.set_defaults(run=_reconstruct)

    from .inference.calibrate import add_calibrate_arguments

    calibrate = sub.add_parser("calibrate", help="calibrate an uncertainty head's intervals to a guaranteed risk "
                                                 "on held-out data (RCPS or conformal risk control), or with "
                                                 "--task a task model's lesion label (temperature, conformal sets)")
    add_calibrate_arguments(calibrate)
    calibrate.set_defaults(run=_calibrate)

    from .inference.ensemble import add_ensemble_arguments

    ensemble = sub.add_parser("ensemble", help="combine K checkpoints of one configuration into a deep ensemble")
    add_ensemble_arguments(ensemble)
    ensemble.set_defaults(run=_ensemble)

    from .evaluation.panels import add_panel_arguments

    panel = sub.add_parser("panel", help="build or verify a standardised test panel (ct-v1, mri-v1)")
    add_panel_arguments(panel)
    panel.set_defaults(run=_panel)

    from .evaluation.evaluate import add_evaluate_arguments

    evaluate = sub.add_parser("evaluate", help="run checkpoints and classical baselines on a test panel: "
                                               "per-condition metrics, the blind-spot map, a report")
    add_evaluate_arguments(evaluate)
    evaluate.set_defaults(run=_evaluate)
    return parser


def _is_lightning(argv: list[str]) -> bool:
    """``fit``/``test``/``predict``, or ``validate`` with options rather than a single file to check."""
    if not argv:
        return False
    if argv[0] in ("fit", "test", "predict"):
        return True
    return argv[0] == "validate" and not (len(argv) == 2 and not argv[1].startswith("-"))


def _has_config(argv: list[str]) -> bool:
    return any(arg in ("--config", "-c") or arg.startswith("--config=") for arg in argv)


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["predict"] and not _has_config(argv[1:]):
        from .reconstruct import predict_main

        try:
            return predict_main(argv[1:])
        except (PireconUserError, *PATH_ERRORS) as err:
            print(f"pirecon predict: error: {err}", file=sys.stderr)
            return 2
    if _is_lightning(argv):
        from .training.cli import run_ensemble, run_lightning, split_ensemble

        if argv[0] == "fit":
            try:
                members, rest = split_ensemble(argv[1:])
            except PireconUserError as err:
                print(f"pirecon fit: error: {err}", file=sys.stderr)
                return 2
            if members is not None:
                return run_ensemble(members, rest)
        return run_lightning(argv[0], argv[1:])
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.run(args)
    except (PireconUserError, *PATH_ERRORS) as err:
        print(f"pirecon {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
