import csv
import subprocess
import sys

import pytest
import torch

from pirecon.cli import main
from pirecon.metrics import psnr, ssim


def test_demo_writes_metrics_and_figure(tmp_path, capsys):
    out = tmp_path / "report"
    assert main(["demo", "--out", str(out), "--num-ellipses", "3", "--quiet"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["figure.png", "metrics.csv", "metrics.md"]
    assert (out / "figure.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    rows = list(csv.DictReader((out / "metrics.csv").open()))
    assert [r["filter"] for r in rows] == ["ram-lak", "shepp-logan", "cosine", "hamming", "hann"]
    scores = {r["filter"]: float(r["psnr_shepp_logan_db"]) for r in rows}
    # LPD-ellipses protocol, Hann FBP on Shepp-Logan: about 19.5 dB (docs/protocols.md, measured with ODL)
    assert 18.8 < scores["hann"] < 20.5
    assert scores["hann"] > scores["ram-lak"] + 1.5
    best = max(rows, key=lambda r: float(r["psnr_validation_db"]))["filter"]
    assert f"**{best}** (best)" in (out / "metrics.md").read_text()
    assert "| FBP filter |" in capsys.readouterr().out


def test_same_seed_same_report(tmp_path):
    for name in ("a", "b"):
        assert main(["demo", "--out", str(tmp_path / name), "--num-ellipses", "2", "--quiet", "--seed", "5"]) == 0
    assert (tmp_path / "a" / "metrics.csv").read_text() == (tmp_path / "b" / "metrics.csv").read_text()


def test_bad_argument_exits_2_with_one_line(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "pirecon.cli", "demo", "--out", str(tmp_path), "--noise", "2"],
                          capture_output=True, text=True)
    assert proc.returncode == 2
    assert "argument --noise: expected a number in [0, 1), found '2'" in proc.stderr
    assert "Traceback" not in proc.stderr
    proc = subprocess.run([sys.executable, "-m", "pirecon.cli", "demo", "--out", str(tmp_path), "--num-ellipses", "abc"],
                          capture_output=True, text=True)
    assert proc.returncode == 2
    assert "argument --num-ellipses: expected a positive integer, found 'abc'" in proc.stderr


def test_noise_free_demo(tmp_path):
    assert main(["demo", "--out", str(tmp_path), "--num-ellipses", "2", "--quiet", "--noise", "0"]) == 0
    rows = list(csv.DictReader((tmp_path / "metrics.csv").open()))
    # noise-free 30-angle FBP of Shepp-Logan with Ram-Lak: 18.4 dB (equal to ODL's fbp_op, see fbp_vs_odl.py)
    assert abs(float(rows[0]["psnr_shepp_logan_db"]) - 18.43) < 0.05


def test_unwritable_output_is_one_clear_line(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    proc = subprocess.run([sys.executable, "-m", "pirecon.cli", "demo", "--out", str(blocker / "sub"), "--quiet",
                           "--num-ellipses", "1"], capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.startswith("pirecon demo: error: ")
    assert len(proc.stderr.strip().splitlines()) == 1
    assert "Traceback" not in proc.stderr


class TestMetrics:
    def test_psnr_formula(self):
        truth = torch.zeros(2, 1, 8, 8)
        truth[:, :, 2:6, 2:6] = 2.0
        image = truth + 0.1
        expected = 10 * torch.log10(torch.tensor(4.0) / 0.01)
        torch.testing.assert_close(psnr(image, truth), expected.double().repeat(2))

    def test_ssim_of_identical_images_is_one(self):
        gen = torch.Generator().manual_seed(0)
        truth = torch.rand(3, 1, 32, 32, generator=gen)
        torch.testing.assert_close(ssim(truth, truth), torch.ones(3, dtype=torch.float64))
        noisy = truth + 0.3 * torch.randn(3, 1, 32, 32, generator=gen)
        assert float(ssim(noisy, truth).max()) < 0.7

    def test_shape_mismatch(self):
        with pytest.raises(ValueError, match=r"image: expected shape \(\.\.\., 1, 8, 8\), found \(2, 1, 8, 9\)"):
            psnr(torch.zeros(2, 1, 8, 9), torch.zeros(2, 1, 8, 8))
        with pytest.raises(ValueError, match=r"image: expected shape \(2, 1, 8, 8\) like truth, found \(3, 1, 8, 8\)"):
            psnr(torch.zeros(3, 1, 8, 8), torch.zeros(2, 1, 8, 8))
        with pytest.raises(ValueError, match=r"truth: expected at least 4 dimensions, found shape \(2, 8, 8\)"):
            ssim(torch.zeros(2, 8, 8), torch.zeros(2, 8, 8))

    def test_constant_truth_is_refused(self):
        truth = torch.rand(3, 1, 8, 8)
        truth[1] = 0.5
        with pytest.raises(ValueError, match=r"truth: expected images with a data range max - min > 0, found constant images at \[1\]"):
            psnr(truth, truth)


# --------------------------------------------------------------------------
# user errors: one line and exit 2; bugs: a traceback and exit 1
# --------------------------------------------------------------------------

def test_user_error_types():
    from pirecon.data.validate import SpecError
    from pirecon.errors import ArgumentError, ConfigError, PireconUserError

    for cls in (ArgumentError, ConfigError, SpecError):
        assert issubclass(cls, PireconUserError)
    assert issubclass(PireconUserError, ValueError)  # every pytest.raises(ValueError) still holds


@pytest.mark.parametrize("error", [ValueError("a bug deep inside"), RuntimeError("a bug deep inside"),
                                   OSError(5, "Input/output error")])
def test_a_bug_keeps_its_traceback(tmp_path, monkeypatch, error):
    import pirecon.demo

    def broken(*args, **kwargs):
        raise error

    monkeypatch.setattr(pirecon.demo, "run_ct_demo", broken)
    with pytest.raises(type(error)) as info:
        main(["demo", "--out", str(tmp_path), "--quiet"])
    assert info.value is error


def test_a_bug_exits_1_with_a_traceback(tmp_path):
    script = ("import sys, pirecon.demo\n"
              "def broken(*args, **kwargs):\n"
              "    raise ValueError('a bug deep inside')\n"
              "pirecon.demo.run_ct_demo = broken\n"
              "from pirecon.cli import main\n"
              f"sys.exit(main(['demo', '--out', {str(tmp_path)!r}, '--quiet']))\n")
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert proc.returncode == 1
    assert "Traceback" in proc.stderr and proc.stderr.strip().endswith("ValueError: a bug deep inside")


@pytest.mark.parametrize("error_type", ["ArgumentError", "ConfigError", "PireconUserError"])
def test_a_user_error_raised_deep_inside_is_one_line(tmp_path, monkeypatch, capsys, error_type):
    import pirecon.demo
    import pirecon.errors

    def broken(*args, **kwargs):
        raise getattr(pirecon.errors, error_type)("x: expected something, found something else")

    monkeypatch.setattr(pirecon.demo, "run_ct_demo", broken)
    assert main(["demo", "--out", str(tmp_path), "--quiet"]) == 2
    assert capsys.readouterr().err == "pirecon demo: error: x: expected something, found something else\n"


def test_a_spec_error_is_one_line(tmp_path, capsys):
    bad = tmp_path / "bad.h5"
    bad.write_bytes(b"not HDF5")
    assert main(["reconstruct", str(bad), "--method", "fbp", "--out", str(tmp_path / "r.h5"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"pirecon reconstruct: error: {bad}: file: expected an HDF5 file, found ")
    assert len(err.strip().splitlines()) == 1


@pytest.fixture(scope="module")
def ct_raw_file(tmp_path_factory):
    from pirecon.data.simulate import simulate

    return simulate(tmp_path_factory.mktemp("raw") / "ct.h5", modality="ct", image_size=32, num_angles=10, n=1,
                    progress=False)


@pytest.mark.parametrize("arguments, message", [
    (["--method", "tv"], "method 'tv': expected --param lam=<regularisation weight>, found none"),
    (["--method", "tv", "--param", "lam"], "--param: expected key=value, found 'lam'"),
    (["--method", "tv", "--param", "lam=x"], "--param lam: expected float, found 'x'"),
    (["--method", "fbp", "--param", "lam=1"], "--param lam: method 'fbp' accepts filter, frequency_scaling"),
    (["--method", "zero-filled"], "method 'zero-filled': expected MRI data, found CT data (use fbp)"),
    (["--checkpoint", "none.ckpt", "--param", "lam=1"], "--param: expected with --method (a classical method), found it "
                                                         "with --checkpoint"),
])
def test_bad_reconstruct_arguments_are_one_line(ct_raw_file, tmp_path, capsys, arguments, message):
    out = tmp_path / "r.h5"
    assert main(["reconstruct", str(ct_raw_file), *arguments, "--out", str(out), "--quiet"]) == 2
    assert capsys.readouterr().err == f"pirecon reconstruct: error: {message}\n"
    assert not out.exists()


def test_missing_job_checkpoint_is_an_argument_error(tmp_path, monkeypatch, capsys):
    import pirecon.job

    monkeypatch.setattr(pirecon.job, "prepare_data", lambda *a, **k: pytest.fail("the job started its work"))
    assert main(["job", "--out", str(tmp_path), "--checkpoint", str(tmp_path / "none.ckpt")]) == 2
    assert capsys.readouterr().err == (f"pirecon job: error: checkpoint: expected an existing checkpoint file, "
                                       f"found no file at {str(tmp_path / 'none.ckpt')!r}\n")
