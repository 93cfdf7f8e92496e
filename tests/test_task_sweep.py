"""experiments/task_sweep.py: every mode trains, is measured on held-out data, and a second run resumes."""

import importlib.util
import json
from pathlib import Path

import h5py

SCRIPT = Path(__file__).resolve().parents[1] / "experiments" / "task_sweep.py"


def _sweep():
    spec = importlib.util.spec_from_file_location("task_sweep", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_a_tiny_sweep_reports_every_mode_and_resumes(tmp_path):
    argv = ["--steps", "3", "--image-size", "32", "--weights", "0.5", "--validation", "12", "--calibration", "20",
            "--test", "16", "--threads", "1", "--out", str(tmp_path),
            "--lesion-options", json.dumps({"radius_range": [0.1, 0.2], "contrast": 0.3})]
    sweep = _sweep()
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
    # the sequential heads sat on the frozen backbone: its images are the backbone's
    assert first["results"]["sequential"]["psnr"] == first["results"]["oracle"]["psnr"]
    table = (tmp_path / "sweep.md").read_text()
    assert "| joint:0.5 |" in table and "mc_dropout:0.5: spread of the label over 8 dropout samples" in table
    assert "| joint:0.5 |" in table and (tmp_path / "tradeoff.png").exists() and (tmp_path / "examples.png").exists()
    stamps = {mode: (tmp_path / mode.replace(":", "_") / "result.json").stat().st_mtime_ns for mode in modes}
    second = _sweep().main(argv)  # resumed: nothing retrained or re-measured
    assert second["results"] == first["results"]
    assert stamps == {mode: (tmp_path / mode.replace(":", "_") / "result.json").stat().st_mtime_ns for mode in modes}
