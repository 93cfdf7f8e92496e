"""Evaluate reconstructors on a test panel: per condition, image quality and its shift gap, the task, the
intervals' coverage, and the blind-spot map of the lesion grid.

    evaluate({"lpd": pirecon.load("lpd.ckpt"), "fbp": reconstructor("fbp")}, "panels/ct-v1", "report")
    pirecon evaluate --checkpoint lpd.ckpt --method fbp --panel panels/ct-v1 --out report

Every condition's file goes through ``Reconstructor.reconstruct`` (the data's own physics: a shift is the
point), with the panel verified first. Per model and condition the per-case numbers are kept in
``cases/<model>/<condition>.npz``, written once: a killed evaluation resumes where it stopped (with the cases of
the same checkpoint file or method parameters only, recorded in ``cases/<model>/model.json``). Per condition:

* PSNR and SSIM (dB, per image against the image's range) with 95% bootstrap intervals over cases, and the
  shift gap: the in-distribution mean minus the condition's (bootstrap over both sets of cases);
* task models (a lesion label): ROC AUC, and sensitivity and specificity of the model's decision (its
  calibrated operating point, else ``p >= 0.5``), with intervals;
* a model that cannot run under a condition (FBP on limited-angle data, say) gets the error's message instead;
* calibrated intervals: the mean fraction of pixels outside, against the calibration's risk level ``alpha``
  (the guarantee holds under the condition when the mean stays at or below ``alpha``).

The blind-spot map (lesion grid): per radius x contrast cell, the fraction of lesion cases detected: by the
task model's decision, or, for a model without a task head, by the Rose criterion: the lesion's recovered
contrast ``C`` (mean of ``x_hat - x_background`` inside the lesion minus that in a ring around it, with
``x_background = x - contrast * mask``) against the noise ``sigma`` (std of ``x_hat - x_background`` in the
ring), detected when ``C sqrt(N) / sigma >= 5`` with ``N`` the lesion's pixels (Rose 1948; approximate for
correlated noise). The smallest lesion detected in at least 90% of cases is stated per contrast.

The out-of-distribution flag of each model (:mod:`pirecon.inference.ood`; calibrated here on in-distribution
slices of the ``calibration`` split, which sets the Reconstructor's ``ood_calibration``, unless it holds
thresholds already) is measured on the reference and shifted conditions: the fraction of failing cases it flags
(PSNR more than 3 dB below the in-distribution median, or intervals missing more than ``2 alpha`` of the
pixels) and its false alarms on the others.

The failure gallery shows the :data:`GALLERY_CASES` worst cases (by PSNR) of each condition: truth,
reconstruction, error, and the interval width and predicted mask where the model gives them.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import torch

from ..errors import ArgumentError
from .panels import verify_panel
from .report import summary_paragraph

__all__ = ["evaluate", "case_scores", "rose_detectability", "smallest_detected", "ood_performance",
           "method_reconstructor", "tune_method", "tuning_file", "ROSE_K", "TUNING_GRIDS", "TUNING_CASES", "DETECTION_RATE", "FAILURE_DB", "GALLERY_CASES"]

ROSE_K = 5.0
"""The Rose criterion's threshold on ``C sqrt(N) / sigma``."""
DETECTION_RATE = 0.9
"""The detection rate at which the smallest detected lesion is stated."""
FAILURE_DB = 3.0
"""A case fails when its PSNR is more than this (dB) below the in-distribution median."""
GALLERY_CASES = 3
"""The worst cases per condition (by PSNR) kept for the failure gallery."""
TUNING_CASES = 16
"""Validation slices the tuned parameters of classical baselines are chosen on (:func:`tune_method`)."""
TUNING_GRIDS = {("tv", "lam"): tuple(float(f"{v:.4g}") for v in 10.0 ** np.arange(-4.0, 1.01, 0.5)),
                ("fbp", "filter"): ("ram-lak", "shepp-logan", "cosine", "hamming", "hann")}
"""The values tried for ``--method NAME:KEY=tuned``: TV's weight over 1e-4 to 10 (half decades), FBP's filter."""
_RING = (2, 5)  # the ring around a lesion: pixels 2 to 5 away from its mask (a margin for blurred edges)


def _dilate(mask: torch.Tensor, pixels: int) -> torch.Tensor:
    """``(N, 1, H, W)`` bool masks grown by ``pixels`` (square neighbourhoods)."""
    if pixels == 0:
        return mask
    kernel = 2 * pixels + 1
    return torch.nn.functional.max_pool2d(mask.float(), kernel, stride=1, padding=pixels) > 0


def rose_detectability(image, truth, mask, contrast: float) -> np.ndarray:
    """``(N,)`` Rose ratios ``C sqrt(N_lesion) / sigma`` of each image's lesions (see the module); NaN where an
    image has no lesion. ``image``, ``truth`` ``(N, 1, H, W)`` real (MRI: magnitudes), ``mask`` ``(N, 1, H, W)``."""
    image, truth = torch.as_tensor(image).float(), torch.as_tensor(truth).float()
    mask = torch.as_tensor(mask).bool()
    signal = image - (truth - contrast * mask.float())
    ring = _dilate(mask, _RING[1]) & ~_dilate(mask, _RING[0])
    out = np.full(image.shape[0], np.nan)
    for k in range(image.shape[0]):
        inside, around = mask[k], ring[k]
        if not inside.any() or around.sum() < 2:
            continue
        recovered = signal[k][inside].mean() - signal[k][around].mean()
        sigma = signal[k][around].std().clamp_min(1e-12)
        out[k] = float(recovered * math.sqrt(int(inside.sum())) / sigma)
    return out


def _lesion_contrast(path: Path) -> float | None:
    import h5py

    with h5py.File(path, "r") as f:
        if "segmentation" not in f or "simulation" not in f.attrs:
            return None
        options = json.loads(f.attrs["simulation"]).get("lesion_options") or {}
    return float(options.get("contrast", 0.05))


def case_scores(model, path: Path, *, batch_size: int = 8) -> dict[str, np.ndarray]:
    """Per-case numbers of ``model`` (a Reconstructor) on one panel file: ``psnr``, ``ssim``; with a label
    ``label_probability`` and ``label_decision``; with calibrated intervals ``miscoverage``; on lesion files
    ``true_label`` and ``rose`` (the Rose ratio, NaN without lesion); ``seconds``, the wall time of the
    reconstruction (``reconstruct`` with its metrics and OOD scores)."""
    import time

    from ..inference.calibrate_task import lesion_targets
    from ..uncertainty import Interval
    from ..uncertainty.metrics import miscoverage

    start = time.perf_counter()
    result = model.reconstruct(path, batch_size=batch_size, progress=False, metrics=True, physics_mismatch="use_data",
                               ood=True)
    seconds = time.perf_counter() - start
    metrics = result.provenance.get("metrics")
    if not metrics:
        raise ArgumentError(f"{path}: expected a panel file with ground truth, found none")
    out = {"psnr": np.asarray(metrics["psnr_db"]), "ssim": np.asarray(metrics["ssim"]),
           "consistency": np.asarray(result.provenance["ood"]["consistency"]), "seconds": np.asarray(seconds)}
    if "flag" in result.provenance["ood"]:
        out["ood_flag"] = np.asarray(result.provenance["ood"]["flag"], dtype=bool)
    if "label" in result.task:
        p = result.task["label"].double().numpy()
        out["label_probability"] = p
        decision = result.task.get("label_decision")
        out["label_decision"] = (p >= 0.5).astype(np.int64) if decision is None else decision.numpy().astype(np.int64)
    import h5py

    with h5py.File(path, "r") as f:  # read once: intervals, the gallery and the Rose ratio use it
        truth = torch.from_numpy(f["ground_truth"][()][:, None])
    if isinstance(result.uncertainty, Interval) and result.uncertainty.calibration is not None:
        out["miscoverage"] = miscoverage(result.uncertainty, truth).numpy()
        out["alpha"] = np.asarray(float(result.uncertainty.calibration["alpha"]))
    magnitude = truth.abs() if truth.is_complex() else truth
    out.update(_gallery(result, magnitude, out["psnr"]))
    contrast = _lesion_contrast(path)
    if contrast is not None:
        labels, masks = lesion_targets(path)
        image = result.image.abs() if result.image.is_complex() else result.image
        out["true_label"] = labels
        out["rose"] = rose_detectability(image, magnitude, masks, contrast)
    return out


def _gallery(result, truth: torch.Tensor, psnr: np.ndarray) -> dict[str, np.ndarray]:
    """The :data:`GALLERY_CASES` worst cases by PSNR (``truth`` ``(N, 1, H, W)`` magnitudes):
    ``gallery_index`` ``(k,)``, and ``(k, H, W)`` images ``gallery_truth``, ``gallery_image`` (magnitudes for
    MRI), ``gallery_width`` (intervals), ``gallery_segmentation`` (task); ``gallery_label`` ``(k,)`` the label
    probability."""
    worst = np.argsort(psnr, kind="stable")[:GALLERY_CASES]
    image = result.image[worst, 0]
    out = {"gallery_index": worst, "gallery_truth": truth[worst, 0].float().numpy(),
           "gallery_image": (image.abs() if image.is_complex() else image).float().numpy()}
    interval = result.uncertainty
    if interval is not None and hasattr(interval, "width"):
        out["gallery_width"] = interval.width[worst, 0].float().numpy()
    if "segmentation" in result.task:
        out["gallery_segmentation"] = result.task["segmentation"][worst, 0].float().numpy()
    if "label" in result.task:
        out["gallery_label"] = result.task["label"][worst].double().numpy()
    return out


def _save(path: Path, arrays: dict) -> None:
    from .._atomic import atomic_path

    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)


def _claim_cases(cases: Path, identities: dict[str, dict]) -> None:
    """Make ``cases/<name>`` the store of the reconstructor ``identities[name]`` (:attr:`Reconstructor.identity`,
    kept in ``cases/<name>/model.json``) for every name, so that resuming reuses cases of the same model only.

    Raises ``ArgumentError`` when the stored cases of a name were computed by another model (another checkpoint
    file or other parameters under the same name) or by one that was not recorded; nothing is written then."""
    from .._atomic import atomic_path

    unrecorded = {}  # record path -> identity as JSON, written once every name has been checked
    for name, identity in identities.items():
        directory, expected = cases / name, json.dumps(identity, sort_keys=True)
        record = directory / "model.json"
        if record.is_file():
            stored = json.loads(record.read_text())
            if stored != identity:
                raise ArgumentError(f"{directory}: expected cases of {expected}, found cases of "
                                    f"{json.dumps(stored, sort_keys=True)}; write the report to a new --out, or "
                                    "delete that directory to evaluate the new model under this name")
        elif any(directory.glob("*.npz")):
            raise ArgumentError(f"{directory}: expected cases of {expected}, found cases of an unrecorded model "
                                "(no model.json); write the report to a new --out, or delete that directory")
        else:
            unrecorded[record] = expected
    for record, expected in unrecorded.items():
        record.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(record) as tmp:
            tmp.write_text(expected)


def _gap(reference: np.ndarray, values: np.ndarray, n_resamples: int = 2000) -> tuple[float, float, float]:
    """The reference mean minus the values' mean with a 95% bootstrap interval (independent resamples)."""
    rng = np.random.default_rng(0)
    draws = [rng.choice(reference, reference.size).mean() - rng.choice(values, values.size).mean()
             for _ in range(n_resamples)]
    low, high = np.quantile(draws, [0.025, 0.975])
    return float(reference.mean() - values.mean()), float(low), float(high)


def _interval(statistic, *arrays, **options) -> tuple[float, float, float]:
    """``bootstrap_ci``; with a single case, its value and no interval (NaN bounds)."""
    from ..tasks import bootstrap_ci

    if len(arrays[0]) < 2:
        value = float(statistic(*arrays)) if len(arrays[0]) else float("nan")
        return value, float("nan"), float("nan")
    return bootstrap_ci(statistic, *arrays, **options)


def _summary(cases: dict[str, np.ndarray], reference: dict[str, np.ndarray] | None) -> dict:
    from ..tasks import roc_auc

    if "error" in cases:
        return {"cases": 0, "error": str(cases["error"])}
    if reference is not None and "error" in reference:
        reference = None
    row = {"cases": int(cases["psnr"].size), "psnr": _interval(np.mean, cases["psnr"]),
           "ssim": _interval(np.mean, cases["ssim"])}
    if reference is not None:
        row["psnr_gap"] = _gap(reference["psnr"], cases["psnr"])
    if "label_probability" in cases and "true_label" in cases:
        y, decision = cases["true_label"], cases["label_decision"]
        if 0 < y.sum() < y.size:
            row["auc"] = _interval(roc_auc, cases["label_probability"], y, strata=y)
        if y.any():
            row["sensitivity"] = _interval(np.mean, decision[y == 1])
        if (y == 0).any():
            row["specificity"] = _interval(np.mean, 1 - decision[y == 0])
    if "miscoverage" in cases:
        row["miscoverage"] = _interval(np.mean, cases["miscoverage"])
        row["alpha"] = float(cases["alpha"])
        row["guarantee_holds"] = bool(row["miscoverage"][0] <= row["alpha"])
    if "ood_flag" in cases:
        row["ood_flagged"] = _interval(np.mean, cases["ood_flag"].astype(float))
    if "rose" in cases and np.isfinite(cases["rose"]).any():
        detected = cases["rose"][np.isfinite(cases["rose"])] >= ROSE_K
        row["rose_detection"] = _interval(np.mean, detected.astype(float))
    return row


def _reference_slices(manifest: dict, path: Path, split: str, n: int) -> Path:
    """``n`` slices of the panel's reference condition drawn again from ``split`` (disjoint from the panel's
    stream) at ``path``; written once."""
    from ..data.simulate import simulate

    reference = next(c for c in manifest["conditions"] if c["kind"] == "reference")
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        simulate(path, n=n, seed=reference["seed"], split=split, progress=False, **reference["parameters"])
    return path


def ood_calibration_file(manifest: dict, out: Path) -> Path:
    """In-distribution slices to calibrate the OOD flag on: the panel's reference condition simulated again from
    the ``calibration`` split, as many as the condition holds and at least 40."""
    reference = next(c for c in manifest["conditions"] if c["kind"] == "reference")
    return _reference_slices(manifest, out / "ood_calibration.h5", "calibration", max(int(reference["n"]), 40))


def ood_performance(cases: dict[str, dict], conditions: list[dict]) -> dict | None:
    """How well the OOD flag finds failing cases, over the reference and shifted conditions: failing when the
    PSNR is more than :data:`FAILURE_DB` below the in-distribution median, or (calibrated intervals) when the
    fraction of pixels outside exceeds ``2 alpha``. ``{"failing", "flagged", "others", "false_alarms"}`` (counts
    and fractions); None without flags."""
    names = [c["name"] for c in conditions if c["kind"] in ("reference", "shift", "user_images")]
    usable = [cases[n] for n in names if "ood_flag" in cases[n]]
    reference = cases.get("in_distribution", {})
    if not usable or "psnr" not in reference:
        return None
    median = float(np.median(reference["psnr"]))
    failing, flags = [], []
    for arrays in usable:
        bad = arrays["psnr"] < median - FAILURE_DB
        if "miscoverage" in arrays:
            bad |= arrays["miscoverage"] > 2 * float(arrays["alpha"])
        failing.append(bad)
        flags.append(arrays["ood_flag"])
    failing, flags = np.concatenate(failing), np.concatenate(flags)
    return {"failing": int(failing.sum()), "flagged": float(flags[failing].mean()) if failing.any() else float("nan"),
            "others": int((~failing).sum()),
            "false_alarms": float(flags[~failing].mean()) if (~failing).any() else float("nan")}


def detection_rate(row: dict) -> float | None:
    """A lesion-grid cell's detection rate: the task's sensitivity, else the Rose criterion's rate."""
    value = row.get("sensitivity") or row.get("rose_detection")
    return None if value is None else float(value[0])


def smallest_detected(grid: dict[tuple[float, float], float]) -> dict[float, float | None]:
    """Per contrast, the smallest radius whose detection rate is at least :data:`DETECTION_RATE` (None: none)."""
    out = {}
    for contrast in sorted({c for _, c in grid}):
        radii = sorted(r for r, c in grid if c == contrast and grid[(r, c)] is not None
                       and grid[(r, c)] >= DETECTION_RATE)
        out[contrast] = radii[0] if radii else None
    return out


def evaluate(models: dict, panel: str | Path, out: str | Path, *, baselines=(), batch_size: int = 8,
             progress: bool = True, tuning: dict | None = None) -> dict:
    """Run every model of ``models`` (name -> Reconstructor) on every condition of the verified panel
    ``panel``, writing ``out/report.html`` (self-contained), ``report.md``, ``metrics.json``, ``metrics.csv``,
    ``blind_spots.png`` and ``gallery_<model>.png``.
    ``baselines`` names the classical methods among the models: a learned model below the best baseline's PSNR
    under a condition is marked; ``tuning`` (model -> :func:`tune_method`'s record) is reported beside them.
    Returns ``{"panel", "models", "baselines", "tuning", "rows", "grid", "smallest", "seconds"}``:
    ``rows[model][condition]`` the summaries of the module, ``seconds[model]`` the wall time of the model's
    reconstructions over the panel (summed over conditions, so it survives a resume)."""
    from tqdm.auto import tqdm

    if not models:
        raise ArgumentError("models: expected at least one reconstructor (a checkpoint or a classical method), "
                            "found none")
    manifest = verify_panel(panel)
    panel, out = Path(panel), Path(out)
    conditions = manifest["conditions"]
    rows: dict[str, dict] = {}
    galleries: dict[str, dict] = {}
    ood: dict[str, dict | None] = {}
    seconds: dict[str, float] = {}
    _claim_cases(out / "cases", {name: model.identity for name, model in models.items()})
    with tqdm(total=len(models) * len(conditions), desc=f"evaluate on {manifest['panel']}", unit="condition",
              disable=not progress) as bar:
        for name, model in models.items():
            if getattr(model, "ood_calibration", None) is None:
                model.calibrate_ood(ood_calibration_file(manifest, out), batch_size=batch_size, progress=False)
            cases = {}
            for condition in conditions:
                stored = out / "cases" / name / f"{condition['name']}.npz"
                if not stored.is_file():
                    try:
                        scores = case_scores(model, panel / condition["file"], batch_size=batch_size)
                    except (ValueError, RuntimeError) as err:  # the model cannot run under this condition
                        scores = {"error": np.asarray(str(err).strip().splitlines()[-1][:300])}
                    _save(stored, scores)
                with np.load(stored) as f:
                    cases[condition["name"]] = dict(f)
                bar.update(1)
            seconds[name] = sum(float(arrays.get("seconds", 0.0)) for arrays in cases.values())
            reference = cases.get("in_distribution")
            rows[name] = {c["name"]: _summary(cases[c["name"]], reference) for c in conditions}
            ood[name] = ood_performance(cases, conditions)
            galleries[name] = {c: {k[len("gallery_"):]: v for k, v in arrays.items() if k.startswith("gallery_")}
                               for c, arrays in cases.items()}
    grid = {name: {(c["cell"]["radius"], c["cell"]["contrast"]): detection_rate(rows[name][c["name"]])
                   for c in conditions if c.get("kind") == "lesion_grid"} for name in models}
    result = {"panel": {k: manifest[k] for k in ("panel", "version", "small", "pirecon_version")},
              "models": list(models), "baselines": [b for b in baselines if b in models],
              "tuning": {name: record for name, record in (tuning or {}).items() if record},
              "conditions": [{k: c[k] for k in ("name", "kind", "description", "n", "cell") if k in c}
                             for c in conditions],
              "rows": rows, "ood": ood,
              "grid": {name: [{"radius": r, "contrast": c, "detection_rate": v} for (r, c), v in cells.items()]
                       for name, cells in grid.items()},
              "smallest": {name: {str(c): r for c, r in smallest_detected(cells).items()}
                           for name, cells in grid.items()},
              "seconds": seconds}
    from .report import write_report

    write_report(result, grid, galleries, out)
    return result


def method_reconstructor(spec: str):
    """A classical Reconstructor from ``"NAME[:key=value,...]"`` (``"tv:lam=0.01,iterations=300"``)."""
    from ..inference import reconstructor
    from ..reconstruct import parse_params

    method, _, rest = spec.partition(":")
    return reconstructor(method, **parse_params(method, [p for p in rest.split(",") if p]))


def tuning_file(manifest: dict, out: Path) -> Path:
    """In-distribution slices to tune classical baselines on: the panel's reference condition simulated again
    from the ``validation`` split, :data:`TUNING_CASES` of them."""
    return _reference_slices(manifest, out / "tuning_validation.h5", "validation", TUNING_CASES)


def tune_method(spec: str, validation: Path, *, batch_size: int = 8) -> tuple[str, dict]:
    """``spec`` with its ``KEY=tuned`` value chosen by mean PSNR on the ``validation`` file among
    :data:`TUNING_GRIDS` (``"tv:lam=tuned,iterations=300"`` -> ``"tv:lam=0.0316,iterations=300"``), and
    ``{"method", "parameter", "best", "scores", "validation_cases"}``; a spec without ``tuned`` comes back
    as it is with ``{}``."""
    from ..data.acquisition import read_acquisition
    from ..tuning import grid_search

    method, _, rest = spec.partition(":")
    pairs = [p for p in rest.split(",") if p]
    tuned = [k for k, _, v in (p.partition("=") for p in pairs) if v == "tuned"]
    if not tuned:
        return spec, {}
    if len(tuned) > 1 or (method, tuned[0]) not in TUNING_GRIDS:
        known = ", ".join(f"{m}:{k}=tuned" for m, k in TUNING_GRIDS)
        raise ArgumentError(f"--method {spec}: expected one tuned parameter among {known}, found "
                            f"{', '.join(f'{method}:{k}=tuned' for k in tuned)}")
    key = tuned[0]
    fixed = [p for p in pairs if p.partition("=")[0] != key]

    def reconstruct(value):
        model = method_reconstructor(f"{method}:" + ",".join([f"{key}={value}", *fixed]))
        return model.reconstruct(validation, batch_size=batch_size, progress=False).image

    truth = read_acquisition(validation).ground_truth
    search = grid_search(reconstruct, TUNING_GRIDS[(method, key)], truth)
    best = f"{search.best:.4g}" if isinstance(search.best, float) else str(search.best)
    resolved = f"{method}:" + ",".join(f"{key}={best}" if p.partition("=")[0] == key else p for p in pairs)
    return resolved, {"method": method, "parameter": key, "best": search.best,
                      "scores": [[value, score] for value, score in search.scores],
                      "validation_cases": int(truth.shape[0])}


def checkpoint_name(path: str | Path) -> str:
    """A checkpoint's name in the report: its file's stem, or its run's directory for a Lightning checkpoint
    (``runs/ct_lpd/checkpoints/last.ckpt`` -> ``ct_lpd``; ``runs/ct_lpd/checkpoints/step=1000.ckpt`` ->
    ``ct_lpd-step=1000``)."""
    path = Path(path)
    if path.parent.name != "checkpoints":
        return path.stem
    run = path.parent.parent.resolve().name
    return run if path.stem == "last" else f"{run}-{path.stem}"


def add_evaluate_arguments(parser) -> None:
    parser.add_argument("--checkpoint", action="append", default=[], help="a trained model (repeat for several)")
    parser.add_argument("--method", action="append", default=[], metavar="NAME[:KEY=VALUE,...]",
                        help="a classical baseline, e.g. fbp or tv:lam=0.01,iterations=300 (repeat for several); "
                             "tv:lam=tuned or fbp:filter=tuned choose the value by PSNR on in-distribution "
                             "slices of the validation split")
    parser.add_argument("--panel", required=True, help="a panel directory (pirecon panel build)")
    parser.add_argument("--out", required=True, help="the report's directory")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def evaluate_main(args) -> int:
    import pirecon
    from ..inference.card import CARD_JSON, add_known_limits
    from .report import known_limits

    models = {}
    for path in args.checkpoint:
        name = checkpoint_name(path)
        if name in models:
            raise ArgumentError(f"--checkpoint: expected checkpoints of different names (the file's stem, or the "
                                f"run's directory for RUN/checkpoints/last.ckpt), found {name!r} twice")
        models[name] = pirecon.load(path)
    baselines, tuning = [], {}
    for spec in args.method:
        if "=tuned" in spec:
            spec, tuning_result = tune_method(spec, tuning_file(verify_panel(args.panel), Path(args.out)),
                                              batch_size=args.batch_size)
            tuning[spec] = tuning_result
            print(f"{spec}: {tuning_result['parameter']} chosen by mean PSNR on {tuning_result['validation_cases']} "
                  f"validation slices among {len(tuning_result['scores'])} values")
        models[spec] = method_reconstructor(spec)
        baselines.append(spec)
    result = evaluate(models, args.panel, args.out, baselines=baselines, batch_size=args.batch_size,
                      progress=not args.quiet, tuning=tuning)
    print(summary_paragraph(result))
    for path in args.checkpoint:  # the card beside a checkpoint gets the limits found
        card = Path(path).parent / CARD_JSON
        limits = known_limits(result, checkpoint_name(path))
        if card.is_file() and limits:
            add_known_limits(card, limits)
            print(f"added {len(limits)} known limits to {card.with_suffix('.md')}")
    print(f"wrote {args.out}/report.html, report.md, metrics.csv, metrics.json, blind_spots.png and the galleries")
    return 0
