"""The main job: simulate, train, evaluate against FBP and TV, report."""

import csv
from pathlib import Path

import pytest

from pirecon.cli import main
from pirecon.job import JOB_LR, JOB_MODEL, run_job


JOB_STEPS = 100


@pytest.fixture(scope="module")
def job(tmp_path_factory):
    out = tmp_path_factory.mktemp("job")
    scores = run_job(out, steps=JOB_STEPS, batch_size=2, num_test=3, tv_iterations=10, progress=False)
    return out, scores


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


def test_missing_checkpoint_is_one_line(tmp_path, capsys):
    assert main(["job", "--out", str(tmp_path), "--checkpoint", str(tmp_path / "none.ckpt"), "--num-test", "1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"pirecon job: error: checkpoint: expected an existing checkpoint file, found no file at "
                   f"{str(tmp_path / 'none.ckpt')!r}"]


def test_job_trains_the_cpu_configuration_model():
    yaml = pytest.importorskip("yaml")
    config = yaml.safe_load((Path(__file__).resolve().parents[1] / "experiments" / "ct_lpd_ellipses_cpu.yaml")
                            .read_text())
    assert config["model"]["model"] == JOB_MODEL
    assert config["model"]["lr"] == JOB_LR
