"""The difficulty of the lesion task, chosen on validation data: FBP (or zero-filled) input plus the task heads.

The task-adapted sweep (``experiments/task_sweep.py``) needs room between its modes: at a difficulty where
FBP plus a segmentation network is already perfect, or learns nothing, no mode can beat another. This script
trains the sweep's ``fbp`` mode (its heads on the FBP / zero-filled image, the same training budget) at each
lesion contrast of ``--contrasts`` and measures it on the seed's **validation** split only (never the test
split): Dice over the validation images that hold lesions, and the ROC AUC of the label.

The chosen default is the lowest contrast at which the heads learn (Dice >= ``--min-dice`` and AUC >=
``--min-auc``) and are still clearly imperfect (Dice <= ``--max-dice``); ``difficulty.md`` holds the table
and the choice, ``difficulty.json`` the numbers. ``--mode oracle`` trains the heads on the ground truth
instead: whether a background poses the task at all (random ellipses hold lesion-like small ellipses).

    python experiments/lesion_difficulty.py [--modality ct|mri] [--steps 1200] [--contrasts 0.02 0.05 0.1]
        [--lesion-options '{"background": "shepp-logan"}'] [--out runs/lesion_difficulty_ct]

Measured (the sweep's defaults come from these runs):

    python experiments/lesion_difficulty.py --modality ct --steps 1200 --contrasts 0.02 0.05 0.07 0.1
    python experiments/lesion_difficulty.py --modality mri --steps 800 --contrasts 0.05 0.07 0.1 0.2 0.3
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import task_sweep  # noqa: E402  (the sweep's simulations, heads and predictions)


def validation_metrics(outputs: dict) -> dict:
    """Dice over the images with lesions and the label's ROC AUC, from :func:`task_sweep.predictions`."""
    from pirecon.tasks import dice, roc_auc
    from pirecon.tasks.evaluation import lesion_cases

    lesion = lesion_cases(outputs["true_segmentation"])
    values = dice(outputs["segmentation"][lesion], outputs["true_segmentation"][lesion]).numpy()
    return {"dice": float(values.mean()) if values.size else float("nan"),
            "auc": float(roc_auc(outputs["label"], outputs["true_label"])), "lesion_images": int(lesion.sum())}


def choose(rows: list[dict], min_dice: float, min_auc: float, max_dice: float) -> dict | None:
    """The lowest-contrast row that learns (``dice >= min_dice``, ``auc >= min_auc``) and is imperfect
    (``dice <= max_dice``); ``None`` when no row qualifies."""
    for row in sorted(rows, key=lambda r: abs(r["contrast"])):
        if row["dice"] >= min_dice and row["auc"] >= min_auc and row["dice"] <= max_dice:
            return row
    return None


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--modality", choices=sorted(task_sweep.BACKBONES), default="ct")
    parser.add_argument("--steps", type=int, default=1200, help="training steps at each contrast (the sweep's)")
    parser.add_argument("--mode", choices=("fbp", "oracle"), default="fbp",
                        help="the heads on FBP / zero-filled input (the difficulty), or on the ground truth (whether "
                             "the task is posed at all on a background)")
    parser.add_argument("--contrasts", type=float, nargs="+", default=[0.02, 0.05, 0.1])
    parser.add_argument("--lesion-options", type=json.loads, default=None,
                        help="JSON options of the lesion phantom besides the contrast (default: the sweep's, "
                             "task_sweep.LESIONS[modality])")
    parser.add_argument("--validation", type=int, default=100, help="validation images")
    parser.add_argument("--image-size", type=int, help="override the simulation's image size (quick runs)")
    parser.add_argument("--min-dice", type=float, default=0.2)
    parser.add_argument("--min-auc", type=float, default=0.7)
    parser.add_argument("--max-dice", type=float, default=0.7)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default=None, help="default runs/lesion_difficulty_<modality>")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.lesion_options is None:
        args.lesion_options = {k: v for k, v in task_sweep.LESIONS[args.modality].items() if k != "contrast"}

    from pirecon.data.simulate import simulate
    from pirecon.training.fit import fit_on_simulation

    out = Path(args.out or f"runs/lesion_difficulty_{args.modality}" + ("" if args.mode == "fbp" else f"_{args.mode}"))
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for contrast in args.contrasts:
        directory = out / f"contrast_{contrast:g}"
        saved = directory / "result.json"
        if saved.is_file():
            rows.append(json.loads(saved.read_text()))
            continue
        simulation = {**task_sweep.SIMULATIONS[args.modality],
                      "lesion_options": {**args.lesion_options, "contrast": contrast}}
        if args.image_size:
            simulation["image_size"] = args.image_size
        directory.mkdir(parents=True, exist_ok=True)
        validation = directory / "validation.h5"
        if not validation.is_file():
            simulate(validation, n=args.validation, split="validation", progress=False, **simulation)
        spec, _ = task_sweep.mode_spec(args.mode, task_sweep.BACKBONES[args.modality])
        checkpoint = fit_on_simulation(directory, validation, model=spec, simulation=simulation, steps=args.steps,
                                       lr=3e-3, batch_size=2, progress=False, schedule=task_sweep.TASK_SCHEDULE,
                                       resume=True)
        row = {"contrast": contrast, **validation_metrics(task_sweep.predictions(checkpoint, validation))}
        saved.write_text(json.dumps(row))
        rows.append(row)
        print(f"contrast {contrast:g}: validation Dice {row['dice']:.3f}, AUC {row['auc']:.3f}", flush=True)
    chosen = choose(rows, args.min_dice, args.min_auc, args.max_dice)
    lines = [f"# Lesion difficulty ({args.modality}): the {args.mode} mode on validation data", "",
             f"{args.steps} training steps per contrast; lesion options {json.dumps(args.lesion_options)}; "
             f"{args.validation} validation images of the seed's validation split; Dice over the images with "
             "lesions.", "",
             "| contrast | Dice | AUC | images with lesions |", "|---:|---:|---:|---:|",
             *(f"| {r['contrast']:g} | {r['dice']:.3f} | {r['auc']:.3f} | {r['lesion_images']} |" for r in rows), "",
             f"Rule: the lowest contrast with Dice >= {args.min_dice:g} and AUC >= {args.min_auc:g} (the heads "
             f"learn) and Dice <= {args.max_dice:g} (clearly imperfect).", "",
             f"Chosen: contrast {chosen['contrast']:g}." if chosen else "Chosen: none of the contrasts qualifies."]
    (out / "difficulty.md").write_text("\n".join(lines) + "\n")
    (out / "difficulty.json").write_text(json.dumps({"rows": rows, "chosen": chosen}, indent=1))
    print("\n".join(lines))
    return {"rows": rows, "chosen": chosen}


if __name__ == "__main__":
    main()
