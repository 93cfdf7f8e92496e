"""The main job: simulate, train, evaluate against FBP and TV, report."""

import contextlib
import csv
import io
import logging
import warnings
from pathlib import Path

import pytest

from pirecon.cli import main
from pirecon.job import JOB_LR, JOB_MODEL, run_job
from pirecon.models.acceleration import cpp_compiler_found


JOB_STEPS = 100


@pytest.fixture(scope="module")
def job(tmp_path_factory):
    out = tmp_path_factory.mktemp("job")
    printed, records = io.StringIO(), _Records()
    logging.getLogger("pytorch_lightning").addHandler(records)
    try:
        with contextlib.redirect_stdout(printed), warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            # the fastest settings of this machine, as in the quickstart
            scores = run_job(out, steps=JOB_STEPS, batch_size=2, num_test=3, tv_iterations=10, progress=True)
    finally:
        logging.getLogger("pytorch_lightning").removeHandler(records)
    (out / "stdout.txt").write_text(printed.getvalue())
    notices = [r.getMessage() for r in records.records] + [str(w.message) for w in caught]
    (out / "notices.txt").write_text("\n".join(notices))
    return out, scores


class _Records(logging.Handler):
    def __init__(self):
        super().__init__(logging.DEBUG)
        self.records = []

    def emit(self, record):
        self.records.append(record)


def test_every_stage_prints_a_line_with_its_duration(job):
    """Not a terminal (pytest captures stderr): no bars, one line per stage and per tenth of training."""
    out, _ = job
    lines = (out / "stdout.txt").read_text().splitlines()
    stages = [line.removesuffix(" ...") for line in lines if line.endswith(" ...")]
    assert [s.split(" ")[0] for s in stages] == ["simulating", "training", "TV:", "TV", "LPD", "writing"]
    for name in stages:
        assert sum(line.startswith(f"{name}: done in ") and line.endswith(" s") for line in lines) == 1
    steps = [line for line in lines if line.startswith("  step ")]
    assert [line.split(",")[0] for line in steps] == [f"  step {10 * k}/{JOB_STEPS}" for k in range(1, 11)]
    assert all("loss" in line for line in steps)
    assert sum(line.startswith("  final validation PSNR ") and line.endswith(" dB") for line in lines) == 1
    assert lines[-1].startswith("pirecon job: ") and lines[-1].endswith(" s in all")
    assert not any("\r" in line for line in lines)
    notices = (out / "notices.txt").read_text()
    assert "litlogger" not in notices and "LeafSpec" not in notices and "GPU available" not in notices


def test_lpd_beats_fbp_after_its_training(job):
    """100 steps of the job's LPD (FBP start, identity initialisation) already improve on its FBP start
    (measured: +0.7 dB on Shepp-Logan, +1.2 dB and SSIM 0.52 to 0.66 on the 3 test ellipse images)."""
    _, scores = job
    fbp, lpd = scores[0], scores[-1]
    assert lpd.psnr_shepp_logan > fbp.psnr_shepp_logan + 0.3
    assert lpd.psnr_ellipses > fbp.psnr_ellipses + 0.6
    assert lpd.ssim_ellipses > fbp.ssim_ellipses + 0.05


def test_report_files(job):
    out, scores = job
    assert [s.method for s in scores] == ["FBP (Hann)", "TV (PDHG)", "LearnedPrimalDual"]
    rows = list(csv.DictReader((out / "metrics.csv").open()))
    assert [r["method"] for r in rows] == [s.method for s in scores]
    for row, score in zip(rows, scores):
        assert float(row["psnr_shepp_logan_db"]) == pytest.approx(score.psnr_shepp_logan, abs=1e-4)
    text = (out / "metrics.md").read_text()
    assert "| TV (PDHG) | lambda = " in text and "LearnedPrimalDual minus TV:" in text
    assert (out / "figure.png").stat().st_size > 10_000
    assert (out / "training" / "checkpoints" / "last.ckpt").is_file()
    assert (out / "training" / "metrics.csv").is_file()


def test_fbp_row_is_the_hann_fbp_of_the_test_file(job):
    import torch

    from pirecon.ct import RayTransform, fbp
    from pirecon.data.formats import read_ct_raw
    from pirecon.metrics import psnr

    out, scores = job
    test = read_ct_raw(out / "data" / "test.h5")
    assert test.sinogram.shape[0] == 4  # Shepp-Logan and 3 ellipse images
    y = torch.from_numpy(test.sinogram)[:, None]
    truth = torch.from_numpy(test.ground_truth)[:, None]
    expected = psnr(fbp(y, RayTransform(test.geometry), "hann"), truth)
    assert scores[0].psnr_shepp_logan == pytest.approx(float(expected[0]), abs=1e-6)
    assert scores[0].psnr_ellipses == pytest.approx(float(expected[1:].mean()), abs=1e-6)


def test_evaluating_a_checkpoint_reproduces_the_scores(job, tmp_path):
    out, scores = job
    for name in ("data",):
        (tmp_path / name).symlink_to(out / name)
    again = run_job(tmp_path, checkpoint=out / "training" / "checkpoints" / "last.ckpt", num_test=3, tv_iterations=10,
                    progress=False)
    assert again[-1].psnr_shepp_logan == pytest.approx(scores[-1].psnr_shepp_logan, abs=1e-5)
    assert again[1].parameter == scores[1].parameter


def test_the_model_card_carries_the_evaluation(job):
    import pirecon

    out, scores = job
    card = pirecon.load(out / "training" / "checkpoints" / "last.ckpt").card
    assert card.model_name == "LearnedPrimalDual" and card.steps == JOB_STEPS
    evaluation = card.metrics["job_evaluation"]
    assert evaluation["psnr_shepp_logan"] == pytest.approx(scores[-1].psnr_shepp_logan)
    assert evaluation["psnr_ellipses"] == pytest.approx(scores[-1].psnr_ellipses)
    below_tv = scores[1].psnr_shepp_logan > scores[-1].psnr_shepp_logan
    assert any(limit.startswith("On modified Shepp-Logan") and "below TV (PDHG)" in limit
               for limit in card.known_limits) == below_tv
    assert card.known_limits[-1].startswith("Trained and evaluated on simulated LPD-ellipses data only")
    markdown = (out / "training" / "checkpoints" / "model_card.md").read_text()
    assert card.known_limits[-1] in markdown


def test_missing_checkpoint_is_one_line(tmp_path, capsys):
    assert main(["job", "--out", str(tmp_path), "--checkpoint", str(tmp_path / "none.ckpt"), "--num-test", "1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"pirecon job: error: checkpoint: expected an existing checkpoint file, found no file at "
                   f"{str(tmp_path / 'none.ckpt')!r}"]


def test_a_corrupt_checkpoint_is_refused_before_any_work(tmp_path, capsys):
    corrupt = tmp_path / "corrupt.ckpt"
    corrupt.write_bytes(b"PK\x03\x04 not really a zip archive")
    out = tmp_path / "out"
    assert main(["job", "--out", str(out), "--checkpoint", str(corrupt), "--num-test", "1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"pirecon job: error: {corrupt}: expected a PyTorch checkpoint (zip file of tensors), found a "
                   "corrupt or truncated file (not a readable zip archive)"]
    assert not out.exists()  # nothing simulated, nothing evaluated


def test_job_trains_the_cpu_configuration_model():
    yaml = pytest.importorskip("yaml")
    config = yaml.safe_load((Path(__file__).resolve().parents[1] / "experiments" / "ct_lpd_ellipses_cpu.yaml")
                            .read_text())
    assert config["model"]["model"] == JOB_MODEL
    assert config["model"]["lr"] == JOB_LR


@pytest.mark.parametrize("fast", [False, True], ids=["float32", "fast"])
def test_training_is_reproducible_on_one_machine(tmp_path, fast):
    """The same seed gives the same weights, bit for bit, run after run (same machine, same thread count)."""
    import torch

    from pirecon.job import prepare_data, train_lpd

    if fast and not cpp_compiler_found():
        pytest.skip("torch.compile on CPU needs a C++ compiler")
    _, val = prepare_data(tmp_path / "data", num_test=1)
    weights = []
    for run in ("first", "second"):
        checkpoint = train_lpd(tmp_path / run, val, steps=6, batch_size=2, progress=False, fast=fast)
        weights.append(torch.load(checkpoint, weights_only=True)["state_dict"])
    assert weights[0].keys() == weights[1].keys()
    for key in weights[0]:
        assert torch.equal(weights[0][key], weights[1][key]), key
