"""experiments/lesion_difficulty.py: the heads trained per contrast, measured on validation data, the rule."""

import json
from pathlib import Path

from conftest import load_script

SCRIPT = Path(__file__).resolve().parents[1] / "experiments" / "lesion_difficulty.py"


def test_the_rule_picks_the_lowest_contrast_that_learns_and_stays_imperfect():
    choose = load_script(SCRIPT).choose
    rows = [{"contrast": 0.1, "dice": 0.72, "auc": 0.95}, {"contrast": 0.05, "dice": 0.0, "auc": 0.46},
            {"contrast": 0.07, "dice": 0.54, "auc": 0.93}, {"contrast": 0.085, "dice": 0.6, "auc": 0.94}]
    assert choose(rows, 0.2, 0.7, 0.7)["contrast"] == 0.07
    assert choose(rows, 0.2, 0.99, 0.7) is None


def test_a_tiny_run_writes_the_table_and_resumes(tmp_path):
    argv = ["--steps", "2", "--contrasts", "0.3", "0.5", "--validation", "12", "--image-size", "32",
            "--threads", "1", "--out", str(tmp_path), "--lesion-options",
            json.dumps({"background": "shepp-logan", "radius_range": [0.1, 0.2]})]
    first = load_script(SCRIPT).main(argv)
    assert [row["contrast"] for row in first["rows"]] == [0.3, 0.5]
    assert all(0 <= row["dice"] <= 1 and 0 <= row["auc"] <= 1 and 0 < row["lesion_images"] < 12
               for row in first["rows"])
    table = (tmp_path / "difficulty.md").read_text()
    assert "| 0.3 | " in table and "| 0.5 | " in table and "Rule: the lowest contrast" in table
    stamp = (tmp_path / "contrast_0.3" / "result.json").stat().st_mtime_ns
    assert load_script(SCRIPT).main(argv)["rows"] == first["rows"]  # read back, not retrained
    assert (tmp_path / "contrast_0.3" / "result.json").stat().st_mtime_ns == stamp
