"""The main job: raw CT data to a trained, evaluated Learned Primal-Dual, in one command.

    pirecon job --out pirecon-job                    # simulate, train LPD, evaluate, report
    pirecon job --out report --checkpoint last.ckpt  # evaluate a model trained by `pirecon fit`

On the LPD-ellipses protocol (docs/protocols.md):

1. simulate: random-ellipse training images streamed on the fly (``SimulationDataset``), a fixed
   validation file ``data/val.h5`` (10 images) and the test file ``data/test.h5``: modified
   Shepp-Logan followed by ``num_test`` random-ellipse images of the seed's test split, 5% Gaussian
   noise; training, validation and test images come from disjoint streams of the seed
   (:func:`pirecon._validation.split_seed`), so no training run reaches the test images;
2. train LPD with Lightning (Adam, batch 8, one-cycle schedule, gradient clipping at 1), checkpoints and logs
   under ``training/``;
3. evaluate against Hann FBP and TV (PDHG, nonnegativity on Shepp-Logan), TV's lambda chosen by
   a grid on the validation file (:func:`pirecon.tuning.grid_search`);
4. report: ``metrics.md`` and ``metrics.csv`` (PSNR / SSIM on Shepp-Logan and the mean over the
   ellipse images) and ``figure.png`` (Shepp-Logan and a held-out ellipse image: ground truth, FBP, TV,
   LPD and their error maps, with intensity scales and a caption).

Each stage prints one line when it starts and one with its duration when it ends.
"""

from __future__ import annotations

import csv
import io
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from ._atomic import atomic_path

__all__ = ["run_job", "prepare_data", "train_lpd", "evaluate_ct", "evaluate_checkpoint", "MethodScore", "JOB_MODEL",
           "JOB_LR", "JOB_STEPS", "JOB_BATCH_SIZE", "JOB_SCHEDULE", "TV_LAMBDAS"]

JOB_MODEL = {"class_path": "lpd", "init_args": {"iterations": 5, "primal_channels": 5, "dual_channels": 5,
                                                 "hidden": 16, "initial": "fbp", "identity_init": True}}
"""The LPD the job trains, that of ``experiments/ct_lpd_ellipses_cpu.yaml``: the paper's 5 + 5 memory
channels, 5 iterations and 16 hidden channels (half the paper's, for CPU budgets), primal memory
starting at the FBP and every block's last convolution at zero."""

JOB_LR = 3e-3
"""Adam's peak learning rate in the job, as in the CPU configuration."""

JOB_STEPS = 2400
JOB_BATCH_SIZE = 8
JOB_SCHEDULE = "onecycle"
"""The job's training run: 2400 steps at batch 8, one-cycle schedule (warm-up over 10% of the steps, then
cosine decay), what fits beside the install and the evaluation in the quickstart's 10 minutes with bfloat16 on
2 cores. It learned most per second among the variants of ``experiments/ablations/lpd_cpu_budget.py --set
schedule``, chosen on the validation images."""

TV_LAMBDAS = (0.0625, 0.125, 0.25, 0.5, 1.0, 2.0)
"""The TV regularisation weights tried on the validation images (data in mm line integrals)."""


@dataclass(frozen=True)
class MethodScore:
    """One method's scores: Shepp-Logan, and the mean over the held-out ellipse images."""

    method: str
    parameter: str
    psnr_shepp_logan: float
    ssim_shepp_logan: float
    psnr_ellipses: float
    ssim_ellipses: float
    seconds: float


# ---- data --------------------------------------------------------------------------

def _simulation_options(seed: int) -> dict:
    return {"modality": "ct", "phantom": "ellipses", "seed": seed, "noise": "gaussian:0.05"}


def _write_test_file(path: Path, num_test: int, seed: int) -> Path:
    """Shepp-Logan and ``num_test`` held-out ellipse images through the LPD-ellipses physics, as a ct_raw file."""
    from .ct import RayTransform, lpd_ellipses_geometry
    from ._validation import split_seed
    from .data.formats import write_ct_raw
    from .noise import GaussianNoise
    from .phantoms import random_ellipses, shepp_logan

    geometry = lpd_ellipses_geometry()
    test_seed = split_seed(seed, "test")
    truth = torch.cat([shepp_logan(geometry.image_shape),
                       random_ellipses(geometry.image_shape, num_test, seed=test_seed)])
    noise = GaussianNoise(relative=0.05)
    with torch.no_grad():
        sinogram = noise(RayTransform(geometry)(truth), seed=test_seed)
    write_ct_raw(path, sinogram[:, 0].numpy(), geometry, noise=noise, ground_truth=truth[:, 0].numpy())
    return path


def prepare_data(directory: Path, num_test: int = 100, seed: int = 0) -> tuple[Path, Path]:
    """``(test.h5, val.h5)`` in ``directory``, written unless they exist: Shepp-Logan and ``num_test``
    ellipse images of the seed's test split, and 10 images of its validation split (neither reachable by
    any training stream: :func:`pirecon._validation.split_seed`)."""
    test_file, val_file = directory / "test.h5", directory / "val.h5"
    if not test_file.exists():
        _write_test_file(test_file, num_test, seed)
    if not val_file.exists():
        from .data.simulate import simulate

        simulate(val_file, n=10, progress=False, split="validation", **_simulation_options(seed))
    return test_file, val_file


# ---- training ----------------------------------------------------------------------

def train_lpd(out: Path, val_file: Path, *, steps: int, batch_size: int = JOB_BATCH_SIZE, seed: int = 0,
              progress: bool = True, model: dict | None = None, lr: float = JOB_LR, fast: bool = True,
              schedule: str = JOB_SCHEDULE) -> Path:
    """Train LPD on streamed LPD-ellipses data for ``steps`` steps, validating on ``val_file``; returns the
    last checkpoint (:func:`pirecon.training.fit.fit_on_simulation`). ``fast``: the fastest settings the
    machine supports (:func:`pirecon.models.fast_training_options`: bfloat16 autocast for the networks,
    channels-last, compiled CNN blocks); otherwise float32 and eager."""
    from .models import fast_training_options
    from .training.fit import fit_on_simulation

    options = fast_training_options("cuda" if torch.cuda.is_available() else "cpu") if fast else {}
    return fit_on_simulation(out, val_file, model=model or JOB_MODEL, simulation=_simulation_options(seed),
                             steps=steps, lr=lr, batch_size=batch_size, seed=seed, progress=progress,
                             schedule=schedule, **options)


# ---- evaluation ----------------------------------------------------------------------

def _scores(method: str, parameter: str, image: torch.Tensor, truth: torch.Tensor, seconds: float) -> MethodScore:
    from .metrics import psnr, ssim

    p, s = psnr(image, truth), ssim(image, truth)
    return MethodScore(method, parameter, float(p[0]), float(s[0]), float(p[1:].mean()), float(s[1:].mean()), seconds)


def evaluate_ct(checkpoint: str | Path, test_file: str | Path, val_file: str | Path, *, tv_iterations: int = 2000,
                progress: bool = True, stages: bool = False) -> tuple[list[MethodScore], dict[str, torch.Tensor],
                                                                      torch.Tensor]:
    """FBP (Hann), TV (best lambda on ``val_file``) and the checkpoint's model on ``test_file``
    (sample 0 Shepp-Logan, the rest ellipses). Returns the scores, the reconstructions and the truth.
    ``stages``: print a line per stage with its duration."""
    from . import solvers
    from ._progress import stage
    from .ct import fbp
    from .data.acquisition import check_same_physics, read_acquisition
    from .tuning import grid_search

    test, val = read_acquisition(test_file), read_acquisition(val_file)
    check_same_physics(val.description(), test.description(), stored_name=str(val_file), found_name=str(test_file))
    A = test.physics.operator
    y, truth = test.y, test.ground_truth
    y_val, truth_val = val.y, val.ground_truth
    images, scores = {}, []

    start = time.perf_counter()
    images["FBP"] = fbp(y, A, "hann")
    scores.append(_scores("FBP (Hann)", "-", images["FBP"], truth, time.perf_counter() - start))

    with stage(f"TV: choosing lambda among {len(TV_LAMBDAS)} values on {len(y_val)} validation images "
               f"({tv_iterations} iterations each)", enabled=stages):
        tuned = grid_search(lambda lam: solvers.tv_pdhg(y_val, A, lam=lam, iterations=tv_iterations,
                                                        progress=progress).image, TV_LAMBDAS, truth_val)
    start = time.perf_counter()
    with stage(f"TV on the test images at lambda = {tuned.best:g} (Shepp-Logan with nonnegativity, then "
               f"{len(y) - 1} ellipse images)", enabled=stages):
        # nonnegativity on Shepp-Logan (a nonnegative image class), not on the ellipses (negative in places)
        shepp = solvers.tv_pdhg(y[:1], A, lam=tuned.best, iterations=tv_iterations, nonnegative=True,
                                progress=progress)
        rest = solvers.tv_pdhg(y[1:], A, lam=tuned.best, iterations=tv_iterations, progress=progress)
    images["TV"] = torch.cat([shepp.image, rest.image])
    scores.append(_scores("TV (PDHG)", f"lambda = {tuned.best:g}", images["TV"], truth, time.perf_counter() - start))

    with stage("LPD on the test images", enabled=stages):
        score, images["LPD"] = evaluate_checkpoint(checkpoint, test)
    scores.append(score)
    return scores, images, truth


def evaluate_checkpoint(checkpoint: str | Path, acquisition) -> tuple[MethodScore, torch.Tensor]:
    """The score and the reconstructions ``(N, 1, H, W)`` of a trained checkpoint on a test file's
    :class:`pirecon.data.acquisition.Acquisition` (sample 0 Shepp-Logan, the rest ellipses), through
    :func:`pirecon.inference.load`. The file's physics must be the one the checkpoint was trained with; a
    mismatch is an error naming both."""
    from .inference import load

    model = load(checkpoint)
    source = model.open(acquisition.y, physics=acquisition.physics)  # the physics checked before the clock starts
    start = time.perf_counter()
    image = model.reconstruct(source, batch_size=20, progress=False).image
    return (_scores(model.name, Path(checkpoint).name, image, acquisition.ground_truth,
                    time.perf_counter() - start), image)


def known_limits(scores: list[MethodScore], num_test: int, seed: int) -> list[str]:
    """What the evaluation found the learned model (the last score) does worse than a classical method, and
    the reach of its training data: the "Known limits" of its model card."""
    model, limits = scores[-1], []
    for label, attribute in (("modified Shepp-Logan (an image unlike the training ellipses)", "psnr_shepp_logan"),
                             (f"the {num_test} held-out ellipse images (mean)", "psnr_ellipses")):
        mine = getattr(model, attribute)
        for other in scores[:-1]:
            theirs = getattr(other, attribute)
            if theirs > mine:
                limits.append(f"On {label}, {model.method} is {theirs - mine:.2f} dB below {other.method} in PSNR "
                              f"({mine:.2f} vs {theirs:.2f} dB; pirecon job, seed {seed}).")
    limits.append("Trained and evaluated on simulated LPD-ellipses data only (random ellipses; 128 x 128, 30 "
                  "parallel-beam angles, 183 detectors, 5% Gaussian noise): untested on clinical images, other "
                  "geometries or noise levels, which Reconstructor.reconstruct refuses unless physics_mismatch='use_data'.")
    return limits


def _complete_card(directory: Path, scores: list[MethodScore], num_test: int, seed: int) -> None:
    """Add the evaluation's scores and known limits to the model card beside the checkpoints."""
    from .inference import update_card

    model = scores[-1]
    evaluation = {"psnr_shepp_logan": model.psnr_shepp_logan, "ssim_shepp_logan": model.ssim_shepp_logan,
                  "psnr_ellipses": model.psnr_ellipses, "ssim_ellipses": model.ssim_ellipses,
                  "num_test": num_test, "seed": seed,
                  "baselines": {s.method: {"psnr_shepp_logan": s.psnr_shepp_logan, "psnr_ellipses": s.psnr_ellipses}
                                for s in scores[:-1]}}
    update_card(directory, known_limits=known_limits(scores, num_test, seed), metrics={"job_evaluation": evaluation},
                replace_limits=True)


# ---- report ----------------------------------------------------------------------------

def _markdown(scores: list[MethodScore], num_test: int, header: str) -> str:
    lines = [header, "",
             f"| method | parameter | PSNR Shepp-Logan (dB) | SSIM Shepp-Logan | PSNR ellipses, mean of {num_test} (dB) "
             "| SSIM ellipses | time (s) |",
             "|---|---|---:|---:|---:|---:|---:|"]
    for s in scores:
        lines.append(f"| {s.method} | {s.parameter} | {s.psnr_shepp_logan:.2f} | {s.ssim_shepp_logan:.3f} | "
                     f"{s.psnr_ellipses:.2f} | {s.ssim_ellipses:.3f} | {s.seconds:.1f} |")
    tv, learned = scores[1], scores[-1]
    lines += ["", f"{learned.method} minus TV: {learned.psnr_shepp_logan - tv.psnr_shepp_logan:+.2f} dB on "
              f"Shepp-Logan, {learned.psnr_ellipses - tv.psnr_ellipses:+.2f} dB on the ellipse images.", "",
              "![figure](figure.png)", ""]
    return "\n".join(lines)


def _write_csv(path: Path, scores: list[MethodScore]) -> None:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["method", "parameter", "psnr_shepp_logan_db", "ssim_shepp_logan", "psnr_ellipses_db",
                     "ssim_ellipses", "seconds"])
    for s in scores:
        writer.writerow([s.method, s.parameter, f"{s.psnr_shepp_logan:.4f}", f"{s.ssim_shepp_logan:.4f}",
                         f"{s.psnr_ellipses:.4f}", f"{s.ssim_ellipses:.4f}", f"{s.seconds:.2f}"])
    with atomic_path(path) as tmp:
        tmp.write_text(buffer.getvalue())


def _figure(path: Path, images: dict[str, torch.Tensor], truth: torch.Tensor, scores: list[MethodScore],
            caption: str) -> None:
    """Shepp-Logan (rows 1-2) and the first held-out ellipse image (rows 3-4): ground truth and each method's
    reconstruction on one grey window with its scale, then each method's error (reconstruction minus truth)
    on a symmetric colour scale, red where the reconstruction is too bright, blue where too dark."""
    from matplotlib.figure import Figure

    from .metrics import psnr

    names = list(images)
    cases = [(0, "Shepp-Logan")] + ([(1, "test ellipse image 1")] if truth.shape[0] > 1 else [])
    fig = Figure(figsize=(3.6 * (len(names) + 1), 3.4 * 2 * len(cases) + 0.8), layout="constrained")
    axes = fig.subplots(2 * len(cases), len(names) + 1, squeeze=False)
    for case, (index, label) in enumerate(cases):
        top, bottom = axes[2 * case], axes[2 * case + 1]
        t = truth[index, 0].numpy()
        window = dict(cmap="gray", vmin=float(t.min()), vmax=float(t.max()))
        bound = 0.25 * float(t.max() - t.min())
        shown = top[0].imshow(t, **window)
        top[0].set_title(f"truth: {label}")
        fig.colorbar(shown, ax=top[0], shrink=0.8, label="image value (phantom units)")
        for column, (name, score) in enumerate(zip(names, scores), start=1):
            x = images[name][index, 0].numpy()
            value = float(psnr(images[name][index:index + 1], truth[index:index + 1])[0])
            top[column].imshow(x, **window)
            top[column].set_title(f"{score.method}: PSNR {value:.2f} dB")
            error = bottom[column].imshow(x - t, cmap="RdBu_r", vmin=-bound, vmax=bound)
            bottom[column].set_title(f"error, {score.method}")
        fig.colorbar(error, ax=bottom[-1], shrink=0.8, label="reconstruction - truth (phantom units)")
        bottom[0].axis("off")
        bottom[0].text(0.0, 0.5, f"grey window: [{t.min():.2f}, {t.max():.2f}]\nerror scale: +/- {bound:.2f}\n"
                                 "red: too bright\nblue: too dark", transform=bottom[0].transAxes, va="center")
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(caption, wrap=True, fontsize=10)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=90)
    with atomic_path(path) as tmp:
        tmp.write_bytes(buffer.getvalue())


def run_job(out: str | Path, *, steps: int = JOB_STEPS, batch_size: int = JOB_BATCH_SIZE,
            checkpoint: str | Path | None = None,
            num_test: int = 100, tv_iterations: int = 2000, seed: int = 0, progress: bool = True,
            fast: bool = True) -> list[MethodScore]:
    """Simulate, train (unless ``checkpoint`` is given), evaluate and write the report to ``out``, printing
    one line per stage with its duration. ``fast``: train with :func:`pirecon.models.fast_training_options`."""
    from ._progress import stage

    out = Path(out)
    if checkpoint is not None:  # the whole checkpoint is checked before any work
        from .inference import load

        load(checkpoint)
    start = time.perf_counter()
    with stage(f"simulating the test data (Shepp-Logan and {num_test} ellipse images) and 10 validation images"):
        test_file, val_file = prepare_data(out / "data", num_test, seed)
    if checkpoint is None:
        with stage(f"training LPD for {steps} steps at batch {batch_size} (logs in {out / 'training'})"):
            checkpoint = train_lpd(out, val_file, steps=steps, batch_size=batch_size, seed=seed, progress=progress,
                                   fast=fast)
        trained_here = True
        trained = f"trained here for {steps} steps at batch {batch_size}"
        where = f"{trained} (`training/`)"
    else:
        trained_here = False
        trained = where = f"from `{checkpoint}`"
    scores, images, truth = evaluate_ct(checkpoint, test_file, val_file, tv_iterations=tv_iterations,
                                        progress=progress, stages=True)
    if trained_here:
        _complete_card(Path(checkpoint).parent, scores, num_test, seed)
    with stage("writing metrics.md, metrics.csv and figure.png"):
        header = (f"# pirecon main job: LPD-ellipses\n\n128 x 128 images, 30 parallel-beam angles, 183 detectors, "
                  f"Gaussian noise with std 5% of mean |data|, seed {seed}. Model {where}. TV: {tv_iterations} PDHG "
                  f"iterations, lambda chosen on the validation images (`data/val.h5`). Test: modified Shepp-Logan "
                  f"and {num_test} held-out random-ellipse images (`data/test.h5`).")
        with atomic_path(out / "metrics.md") as tmp:
            tmp.write_text(_markdown(scores, num_test, header))
        _write_csv(out / "metrics.csv", scores)
        caption = (f"LPD-ellipses: 128 x 128 images, 30 parallel-beam angles over 180 degrees, 183 detectors, "
                   f"Gaussian noise 5% of mean |data|, seed {seed}. LPD {trained}; TV with "
                   f"{tv_iterations} PDHG iterations at the lambda chosen on 10 validation images; FBP with the "
                   f"Hann filter. Test images from a stream no training run reaches.")
        _figure(out / "figure.png", images, truth, scores, caption)
    print(f"pirecon job: {time.perf_counter() - start:.0f} s in all", flush=True)
    return scores
