"""experiments/task_sweep.py: every mode trains, is measured on held-out data, and a second run resumes."""

import json
from pathlib import Path

import h5py

from conftest import load_script

SCRIPT = Path(__file__).resolve().parents[1] / "experiments" / "task_sweep.py"


def test_a_tiny_sweep_reports_every_mode_and_resumes(tmp_path):
    argv = ["--steps", "3", "--image-size", "32", "--weights", "0.5", "--validation", "12", "--calibration", "20",
            "--test", "16", "--threads", "1", "--out", str(tmp_path),
            "--lesion-options", json.dumps({"radius_range": [0.1, 0.2], "contrast": 0.3})]
    sweep = load_script(SCRIPT)
    first = sweep.main(argv)
    modes = ["sequential", "fbp", "oracle", "joint:0.5", "mc_dropout:0.5"]
    assert list(first["results"]) == modes
    assert sorted(first["differences"]) == ["fbp", "joint:0.5", "mc_dropout:0.5", "oracle"]
    spread = first["results"]["mc_dropout:0.5"]  # the task's spread over dropout samples, against its errors
    assert -1 <= spread["spread_spearman"] <= 1 and spread["misclassified"] >= 0
    assert "spread_spearman" not in first["results"]["joint:0.5"]
    with h5py.File(tmp_path / "test.h5", "r") as f:
        lesion_images = int(f["segmentation"][()].reshape(16, -1).any(axis=1).sum())
    assert 0 < lesion_images < 16
    for mode in modes:
        result = first["results"][mode]
        assert 0 <= result["dice"][1] <= result["dice"][0] <= result["dice"][2] <= 1
        assert 0 <= result["auc"][0] <= 1 and len(result["per_case"]["dice"]) == lesion_images
        assert 0 <= result["conformal_coverage"] <= 1
        assert 0 <= result["ece_platt"] <= 1 and set(result["platt"]) == {"temperature", "bias"}
    # the sequential heads sat on the frozen backbone: its images are the backbone's
    assert first["results"]["sequential"]["psnr"] == first["results"]["oracle"]["psnr"]
    table = (tmp_path / "sweep.md").read_text()
    assert "| joint:0.5 |" in table and "mc_dropout:0.5: spread of the label over 8 dropout samples" in table
    assert "- Joint beats sequential (some 0 < C < 1" in table and "- Ordering on AUC: oracle " in table
    assert "| joint:0.5 |" in table and (tmp_path / "tradeoff.png").exists() and (tmp_path / "examples.png").exists()
    assert all((tmp_path / mode.replace(":", "_") / "example.npz").is_file() for mode in modes)
    assert "- A calibrated model with each mode's probabilities shows an ECE of " in table
    stamps = {mode: (tmp_path / mode.replace(":", "_") / "result.json").stat().st_mtime_ns for mode in modes}
    second = load_script(SCRIPT).main(argv)  # resumed: nothing retrained or re-measured
    assert second["results"] == first["results"]
    assert stamps == {mode: (tmp_path / mode.replace(":", "_") / "result.json").stat().st_mtime_ns for mode in modes}


def test_the_targets_are_judged_from_the_paired_intervals_and_the_psnr():
    sweep = load_script(SCRIPT)

    def result(psnr, dice, auc, coverage=0.9, ece=0.03, ece_platt=0.02):
        return {"psnr": (psnr, psnr - 0.1, psnr + 0.1), "dice": (dice, dice - 0.05, dice + 0.05),
                "auc": (auc, auc - 0.02, auc + 0.02), "conformal_coverage": coverage, "ece": ece,
                "ece_platt": ece_platt}

    results = {"sequential": result(30.0, 0.60, 0.90), "fbp": result(25.0, 0.40, 0.80),
               "oracle": result(99.0, 0.80, 0.99), "joint:0.5": result(29.5, 0.65, 0.91),
               "joint:0.9": result(28.0, 0.70, 0.95, coverage=0.85, ece=0.08, ece_platt=0.06), "joint:1": result(20.0, 0.75, 0.96)}
    differences = {"joint:0.5": {"dice": (0.05, 0.01, 0.09), "auc": (0.01, -0.01, 0.03)},  # met: Dice, PSNR close
                   "joint:0.9": {"dice": (0.10, 0.05, 0.15), "auc": (0.05, 0.02, 0.08)},  # 2 dB below: not met
                   "joint:1": {"dice": (0.15, 0.10, 0.20), "auc": (0.06, 0.03, 0.09)}}  # C = 1 does not count
    lines = sweep.targets(results, differences)
    assert lines[2] == ("- Joint beats sequential (some 0 < C < 1: Dice + 0.03 or AUC + 0.02 with the paired 95% "
                        "interval above 0, PSNR within 1 dB of sequential): met by joint:0.5.")
    assert lines[3] == ("- Ordering on Dice: oracle 0.800, joint 0.650 to 0.700, fbp 0.400: oracle >= joint holds "
                        "(2 of 2 C), joint >= fbp holds (2 of 2 C).")
    assert lines[5] == "- Conformal label sets cover >= 0.88 on average over 100 splits: fails for joint:0.9."
    assert lines[6] == "- ECE after temperature scaling <= 0.05: fails for joint:0.9 (0.080)."
    assert lines[7] == ("- ECE after Platt scaling (temperature and bias, on the same calibration cases) <= 0.05: "
                        "fails for joint:0.9 (0.060).")
    assert len(lines) == 9  # no ECE floors measured: no line on them
    results["joint:0.9"]["ece_floor"] = {"mean": 0.04, "p95": 0.07}  # 0.080 is beyond a calibrated model's draws
    results["joint:0.5"]["ece_floor"] = {"mean": 0.02, "p95": 0.04}
    assert sweep.targets(results, differences)[8] == (
        "- A calibrated model with each mode's probabilities shows an ECE of 0.020 to 0.040 on these test cases "
        "(labels drawn from the probabilities); the measured ECE is above that draw's 95th percentile for joint:0.9.")
    differences["joint:0.5"]["dice"] = (0.05, -0.01, 0.11)  # the interval reaches 0
    assert sweep.targets(results, differences)[2].endswith("not met by any C.")
