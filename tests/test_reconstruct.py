import json
import subprocess
import sys

import pytest

from pirecon.cli import main
from pirecon.data import read_reconstruction, validate
from pirecon.data.simulate import simulate
from pirecon.reconstruct import parse_params, reconstruct_file


@pytest.fixture(scope="module")
def ct_file(tmp_path_factory):
    return simulate(tmp_path_factory.mktemp("ct") / "ct.h5", modality="ct", phantom="ellipses", n=3, seed=0,
                    progress=False)


@pytest.fixture(scope="module")
def mri_file(tmp_path_factory):
    return simulate(tmp_path_factory.mktemp("mri") / "mri.h5", modality="mri", phantom="shepp-logan", n=2, seed=0,
                    image_size=48, progress=False)


def test_fbp_writes_a_valid_reconstruction_with_provenance(ct_file, tmp_path):
    out = tmp_path / "rec.h5"
    provenance = reconstruct_file(ct_file, out, "fbp", {"filter": "hann"}, progress=False)
    assert validate(out)["kind"] == "reconstruction"
    rec = read_reconstruction(out)
    assert rec.image.shape == (3, 128, 128)
    assert rec.provenance["method"] == "fbp" and rec.provenance["source_file"] == str(ct_file)
    assert json.loads(rec.provenance["config"]) == {"method": "fbp", "params": {"filter": "hann"}}
    metrics = provenance["metrics"]
    # LPD-ellipses protocol with 5% noise: Hann FBP of random ellipses scores about 28 dB
    assert 25 < metrics["mean_psnr_db"] < 32


def test_zero_filled_mri(mri_file, tmp_path):
    out = tmp_path / "rec.h5"
    provenance = reconstruct_file(mri_file, out, "zero-filled", progress=False)
    rec = read_reconstruction(out)
    assert rec.image.shape == (2, 48, 48) and rec.image.dtype.kind == "c"
    assert provenance["metrics"]["mean_psnr_db"] > 10


def test_cli_prints_one_line_and_errors_are_one_line(ct_file, tmp_path, capsys):
    assert main(["reconstruct", str(ct_file), "--method", "fbp", "--out", str(tmp_path / "r.h5"), "--quiet"]) == 0
    assert capsys.readouterr().out.startswith(f"wrote {tmp_path / 'r.h5'} (fbp): PSNR ")
    proc = subprocess.run([sys.executable, "-m", "pirecon.cli", "reconstruct", str(ct_file), "--method", "zero-filled",
                           "--out", str(tmp_path / "x.h5")], capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.strip() == ("pirecon reconstruct: error: method 'zero-filled': expected MRI data, "
                                   "found CT data (use fbp)")
    assert not (tmp_path / "x.h5").exists()


def test_parameters_are_typed_and_checked():
    assert parse_params("tv", ["lam=0.5", "iterations=20", "nonnegative=true"]) == \
        {"lam": 0.5, "iterations": 20, "nonnegative": True}
    with pytest.raises(ValueError, match="--param lam: method 'fbp' accepts filter, frequency_scaling"):
        parse_params("fbp", ["lam=1"])
    with pytest.raises(ValueError, match="--param iterations: expected int, found 'ten'"):
        parse_params("cgls", ["iterations=ten"])
    with pytest.raises(ValueError, match="--param: expected key=value, found 'lam'"):
        parse_params("tv", ["lam"])


def test_missing_input_is_one_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError) as info:
        reconstruct_file(tmp_path / "missing.h5", tmp_path / "out.h5", "fbp", progress=False)
    assert str(info.value) == (f"input: expected an existing raw file or image volume, found nothing at "
                               f"{str(tmp_path / 'missing.h5')!r}")


@pytest.mark.parametrize("method, params", [("cgls", ["iterations=10"]), ("sirt", ["iterations=50", "nonnegative=false"]),
                                            ("tv", ["lam=1.0", "iterations=100"])])
def test_iterative_methods_beat_nothing_and_record_their_parameters(ct_file, tmp_path, method, params, capsys):
    out = tmp_path / f"{method}.h5"
    assert main(["reconstruct", str(ct_file), "--method", method, "--out", str(out), "--quiet",
                 *[a for p in params for a in ("--param", p)]]) == 0
    rec = read_reconstruction(out)
    assert json.loads(rec.provenance["config"])["params"] == parse_params(method, params)
    metrics = rec.provenance["metrics"]
    assert metrics["mean_psnr_db"] > 20
    assert capsys.readouterr().out.startswith(f"wrote {out} ({method})")


def test_tv_needs_lambda(ct_file, tmp_path):
    with pytest.raises(ValueError, match="method 'tv': expected lam=<regularisation weight>, found none"):
        reconstruct_file(ct_file, tmp_path / "tv.h5", "tv", {"iterations": 5}, progress=False)
