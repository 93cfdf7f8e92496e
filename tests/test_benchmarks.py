"""The benchmark scripts run and report what the README quotes (no timing assertions)."""

from pathlib import Path

import pytest

from conftest import load_script

BENCHMARKS = Path(__file__).resolve().parents[1] / "experiments" / "benchmarks"


@pytest.fixture(autouse=True)
def restore_threads():
    """The scripts set 2 threads for their protocol; give the rest of the session its own setting back."""
    import torch

    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def load(name):
    """Import a benchmark script as its own command line would: with its directory on the path (``_timing``)."""
    import sys

    if str(BENCHMARKS) not in sys.path:
        sys.path.insert(0, str(BENCHMARKS))
    return load_script(BENCHMARKS / f"{name}.py")


def test_ct_operators_quick(tmp_path, capsys):
    results = load("ct_operators").main(["--quick", "--repeats", "1", "--json", str(tmp_path / "r.json")])
    assert [r["backend"] for r in results["backends"]] == ["sparse", "astra", "odl"]
    for row in results["backends"]:
        assert row["seconds"] > 0 and row["vs_astra_cpu"] > 0
        assert row["adjoint_error_float64"] < 1e-5
    assert results["backends"][0]["adjoint_error_float64"] < 1e-12
    assert results["sparse_nonzeros"] > 0
    out = capsys.readouterr().out
    assert "| pirecon `sparse` |" in out and (tmp_path / "r.json").exists()


@pytest.mark.slow
def test_fbp_vs_odl_rows():
    rows = load("fbp_vs_odl").main()
    assert len(rows) == 10
    assert all(abs(r["pirecon"] - r["odl"]) < 0.3 for r in rows)


def test_mri_operators_small():
    pytest.importorskip("sigpy")
    results = load("mri_operators").main(["--size", "32", "--repeats", "1"])
    rows = {r["operator"]: r for r in results["rows"]}
    assert rows["pirecon SenseOperator"]["seconds"] > 0
    assert rows["sigpy mri.linop.Sense"]["difference"] < 1e-5
    assert rows["torch with fftshift"]["difference"] < 1e-5


@pytest.mark.slow
def test_classical_small():
    results = load("classical").main(["--num-test", "2", "--tv-iterations", "8"])
    assert [r["method"] for r in results["ct"]] == ["FBP", "CGLS", "SIRT", "TV (PDHG)"]
    assert [r["method"] for r in results["mri"]] == ["zero-filled (SENSE adjoint)", "CG-SENSE", "TV (PDHG)"]
    fbp_row = results["ct"][0]
    # the LPD-ellipses Hann FBP of Shepp-Logan (19.68 dB in the README) does not depend on the test-set size
    assert fbp_row["parameter"] == "filter = hann"
    assert abs(fbp_row["Shepp-Logan"][0] - 19.68) < 0.05


def test_inference_small(tmp_path):
    results = load("inference").main(["--slices", "3", "--repeats", "1", "--tv-iterations", "2",
                                      "--json", str(tmp_path / "r.json")])
    assert [r["method"] for r in results["rows"]] == ["LPD (checkpoint)", "FBP (Hann)", "TV (2 iterations)"]
    for row in results["rows"]:
        assert row["api_seconds"] > 0 and row["plain_seconds"] > 0
        assert row["api_slices_per_second"] == pytest.approx(3 / row["api_seconds"])
    assert (tmp_path / "r.json").exists()


def test_uncertainty_small(tmp_path):
    results = load("uncertainty").main(["--setups", "ct", "--heads", "quantile", "--steps", "4", "--image-size",
                                        "32", "--calibration", "24", "--test", "6", "--splits", "3",
                                        "--out", str(tmp_path)])
    rows = results["setups"]["ct"]
    assert list(rows) == ["constant width (plain backbone)", "quantile"]
    assert rows["constant width (plain backbone)"]["width_vs_constant"] == 1.0
    assert 0 <= rows["quantile"]["violation_fraction"] <= 1 and rows["quantile"]["training_cost"] > 0
    assert (tmp_path / "uncertainty.md").exists() and (tmp_path / "risk_violin_ct.png").exists()
    shift = load("uncertainty_shift").main(["--runs", str(tmp_path), "--setups", "ct", "--n", "3", "--image-size",
                                            "32"])["setups"]["ct"]
    constant = shift["constant width (plain backbone)"]  # a unit-width interval scaled up to 20 certifies a scale
    assert list(constant) == ["in distribution", "noise 0.10 (x2)", "20 angles", "10 angles", "Shepp-Logan phantom",
                              "real CT slice"]
    assert constant["in distribution"]["images"] == 6 and constant["real CT slice"]["images"] == 48
    assert all(0 <= row["mean_risk"] <= 1 for row in constant.values())
    assert (tmp_path / "uncertainty_shift.md").exists() and (tmp_path / "shift_ct.png").exists()
