"""Coverage of calibrated intervals under shift: calibrated in distribution, tested on shifted data.

Takes the runs of ``uncertainty.py --out DIR`` (per setup: the held-out ``calibration.h5`` and ``test.h5``
and every head's checkpoint). For each head, lambda-hat is found by RCPS (Hoeffding-Bentkus, alpha = delta =
0.1) on all of ``calibration.h5``; the calibrated intervals are then measured on the in-distribution test
images and on shifted test images simulated from the seed's ``test`` split (physics taken from the data):

* CT (trained at Gaussian noise 0.05, 30 angles, random ellipses): noise 0.10 (doubled), 20 and 10 angles,
  the Shepp-Logan phantom (another family), and slices of a real scan (``--images``);
* MRI (trained noiseless at 4x, random ellipses): k-space noise 0.02, 8x acceleration, Shepp-Logan, slices
  of a real scan.

Real slices: every image of ``--images DIR`` (DICOM, PNG or NIfTI, scaled to ``[0, 1]`` as
``simulate --phantom images:DIR`` does); by default the real CT and MR slices that pydicom ships
(``CT_small.dcm``, 128 x 128; ``MR_small.dcm``, 64 x 64), each in its 8 orientations (rotations by 90
degrees and flips) and 6 noise draws, so 48 images of one anatomy. Reported per condition and head: the
mean risk (fraction of pixels outside the interval), whether it stays at most alpha, the fraction of images
whose own risk exceeds alpha, and the mean width. Coverage that breaks under shift is the finding this
measures; RCPS guarantees nothing once test data are not exchangeable with calibration data.

    python experiments/benchmarks/uncertainty_shift.py --runs DIR [--setups ct mri] [--n 100] [--images DIR]
        [--out DIR]

Writes ``uncertainty_shift.md`` and ``shift_<setup>.png`` (mean risk per condition and head, alpha marked)
to ``--out`` (default: ``--runs``).
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np
import torch

from uncertainty import HEADS, SETUPS, measure

ALPHA = DELTA = 0.1
SHIFTS = {
    "ct": {"noise 0.10 (x2)": {"noise": "gaussian:0.1"}, "20 angles": {"num_angles": 20},
           "10 angles": {"num_angles": 10}, "Shepp-Logan phantom": {"phantom": "shepp-logan"},
           "real CT slice": {"phantom": "images"}},
    "mri": {"k-space noise 0.02": {"noise": "gaussian:0.02"}, "8x acceleration": {"acceleration": 8},
            "Shepp-Logan phantom": {"phantom": "shepp-logan"}, "real MR slice": {"phantom": "images"}},
}
REAL_SLICES = {"ct": "CT_small.dcm", "mri": "MR_small.dcm"}


def _real_slices(setup: str, directory: Path) -> Path:
    """``directory`` filled with pydicom's real slice of ``setup`` in 8 orientations x 6 copies (16-bit PNG)."""
    import pydicom
    from PIL import Image
    from pydicom.data import get_testdata_file

    image = pydicom.dcmread(get_testdata_file(REAL_SLICES[setup])).pixel_array.astype(np.float64)
    image = (image - image.min()) / (image.max() - image.min())
    directory.mkdir(parents=True, exist_ok=True)
    for k in range(8):
        oriented = np.rot90(image, k % 4)
        oriented = oriented[:, ::-1] if k >= 4 else oriented
        for copy in range(6):
            pixels = np.round(oriented * 65535).astype(np.uint16)
            Image.fromarray(pixels).save(directory / f"slice_{k}_{copy}.png")
    return directory


def _checkpoints(directory: Path) -> dict[str, tuple[Path, bool]]:
    """The heads the benchmark trained in ``directory``: label -> (checkpoint, constant-width interval)."""
    found = {"constant width (plain backbone)": (directory / "plain" / "training" / "checkpoints" / "last.ckpt", True)}
    for head in (h for h in HEADS if h != "ensemble"):
        found[head] = (directory / head / "training" / "checkpoints" / "last.ckpt", False)
    found["ensemble"] = (directory / "ensemble.ckpt", False)
    return {label: value for label, value in found.items() if value[0].is_file()}


def _figure(rows: dict, setup: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    conditions = list(next(iter(rows.values())))
    heads = list(rows)
    fig, ax = plt.subplots(figsize=(1.6 * len(conditions) + 2, 3.6))
    step = 0.8 / len(heads)
    for k, head in enumerate(heads):
        ax.bar(np.arange(len(conditions)) + (k - (len(heads) - 1) / 2) * step,
               [rows[head][c]["mean_risk"] for c in conditions], step, label=head)
    ax.axhline(ALPHA, color="k", linestyle="--", linewidth=1, label=f"alpha = {ALPHA}")
    ax.set_xticks(np.arange(len(conditions)), conditions, rotation=20, ha="right")
    ax.set_ylabel("mean risk (pixels outside)")
    ax.set_title(f"{setup}: calibrated in distribution, tested under shift")
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", required=True, help="the --out directory of uncertainty.py")
    parser.add_argument("--setups", nargs="+", choices=sorted(SHIFTS), default=["ct", "mri"])
    parser.add_argument("--n", type=int, default=100, help="images per shifted condition")
    parser.add_argument("--images", help="a directory of real slices (default: pydicom's, see above)")
    parser.add_argument("--image-size", type=int, help="the image size the runs were trained at, if overridden")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", help="directory for uncertainty_shift.md and the figures (default: --runs)")
    parser.add_argument("--json", help="write the results here")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    import pirecon
    from pirecon.errors import PireconUserError
    from pirecon.data.simulate import simulate
    from pirecon.inference.calibrate import LAMBDAS
    from pirecon.uncertainty import rcps

    runs = Path(args.runs)
    out = Path(args.out) if args.out else runs
    out.mkdir(parents=True, exist_ok=True)
    results: dict = {"alpha": ALPHA, "delta": DELTA, "n": args.n, "setups": {}}
    lines = ["# Calibrated intervals under shift", "",
             f"RCPS (Hoeffding-Bentkus, alpha = delta = {ALPHA}) on the in-distribution calibration images; mean "
             f"risk on {args.n} test images per shifted condition (physics from the data).", ""]
    with tempfile.TemporaryDirectory(prefix="pirecon-shift-") as scratch:
        for name in args.setups:
            directory = runs / name
            heads = _checkpoints(directory)
            if not heads:
                raise SystemExit(f"--runs: expected the runs of uncertainty.py in {directory}, found none")
            setup = json.loads(json.dumps(SETUPS[name]))
            if args.image_size:
                setup["simulation"]["image_size"] = args.image_size
            files = {"in distribution": (directory / "test.h5", "error")}
            for condition, change in SHIFTS[name].items():
                simulation = {**setup["simulation"], **change}
                n = args.n
                if change.get("phantom") == "images":
                    images = Path(args.images) if args.images else _real_slices(name, Path(scratch) / name)
                    simulation["phantom"] = f"images:{images}"
                    n = None  # every image of the directory
                path = Path(scratch) / f"{name}_{len(files)}.h5"
                files[condition] = (simulate(path, n=n, split="test", progress=False, **simulation), "use_data")
            rows = {}
            for label, (checkpoint, constant) in heads.items():
                model = pirecon.load(checkpoint)
                calibration = measure(model, model.open(directory / "calibration.h5", metrics=True, progress=False),
                                      constant)
                try:
                    result = rcps(calibration[0], LAMBDAS, ALPHA, DELTA, "hb")
                except PireconUserError as err:  # no scale on the grid certified: nothing to test
                    print(f"{name} {label}: {err}")
                    continue
                index = int(np.searchsorted(LAMBDAS, result.lambda_hat))
                rows[label] = {}
                for condition, (path, mismatch) in files.items():
                    curves, widths, _, _ = measure(model, model.open(path, metrics=True, progress=False,
                                                                     physics_mismatch=mismatch), constant)
                    risks = curves[:, index]
                    rows[label][condition] = {"mean_risk": float(risks.mean()),
                                              "images_above_alpha": float((risks > ALPHA).mean()),
                                              "mean_width": float(result.lambda_hat * widths.mean()),
                                              "images": int(risks.size), "lambda_hat": result.lambda_hat}
            if not rows:
                continue
            results["setups"][name] = rows
            _figure(rows, name, out / f"shift_{name}.png")
            conditions = list(files)
            lines += [f"## {name}", "", "Mean risk (* above alpha); in brackets the fraction of images whose own risk "
                      "exceeds alpha.", "", "| head | " + " | ".join(conditions) + " |",
                      "|---|" + "---:|" * len(conditions)]
            for label, row in rows.items():
                cells = [f"{row[c]['mean_risk']:.3f}{'*' if row[c]['mean_risk'] > ALPHA else ''} "
                         f"({row[c]['images_above_alpha']:.2f})" for c in conditions]
                lines.append(f"| {label} | " + " | ".join(cells) + " |")
            lines += ["", "Mean width at lambda-hat:", "", "| head | " + " | ".join(conditions) + " |",
                      "|---|" + "---:|" * len(conditions)]
            lines += [f"| {label} | " + " | ".join(f"{row[c]['mean_width']:.4g}" for c in conditions) + " |"
                      for label, row in rows.items()]
            lines.append("")
    (out / "uncertainty_shift.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return results


if __name__ == "__main__":
    main()
