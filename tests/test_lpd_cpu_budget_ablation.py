"""experiments/ablations/lpd_cpu_budget.py at a tiny scale: one row per variant, scores kept, a rerun skips them."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "experiments" / "ablations" / "lpd_cpu_budget.py"


def run(*arguments):
    return subprocess.run([sys.executable, str(SCRIPT), *arguments], capture_output=True, text=True, timeout=900)


@pytest.mark.slow
def test_ablation_rows_and_resume(tmp_path):
    done = run("--scale", "0.002", "--num-test", "2", "--out", str(tmp_path))
    assert done.returncode == 0, done.stderr
    table = (tmp_path / "lpd_cpu_budget_architecture.md").read_text()  # the default set
    rows = [line for line in table.splitlines()[2:] if line.startswith("| ")]
    names = [row.split(" | ")[0].lstrip("| ") for row in rows]
    marked = [name for name in names if name.endswith(" (chosen)")]
    assert len(marked) == 1
    names = [name.removesuffix(" (chosen)").strip("*") for name in names]
    assert names == [
        "10 it, lr 1e-3", "10 it, lr 3e-3", "10 it, lr 3e-3, identity init", "5 it, lr 3e-3",
        "5 it, lr 3e-3, identity init", "5 it, 32 hidden, lr 3e-3, identity init"]
    records = [json.loads(path.read_text()) for path in sorted(tmp_path.glob("*/score.json"))]
    by_validation = max(records, key=lambda r: r["psnr_validation"])["variant"]
    assert marked[0] == f"**{by_validation}** (chosen)"  # chosen on validation images, whatever the test scores
    assert [int(row.split(" | ")[1]) for row in rows] == [2, 2, 2, 4, 4, 2]
    scores = sorted(tmp_path.glob("*/score.json"))
    assert len(scores) == 6
    first = {path: path.stat().st_mtime_ns for path in scores}
    record = json.loads(scores[0].read_text())
    assert 0 < record["psnr_shepp_logan"] < 60 and 0 < record["psnr_ellipses"] < 60

    again = run("--scale", "0.002", "--num-test", "2", "--out", str(tmp_path))
    assert again.returncode == 0, again.stderr
    assert {path: path.stat().st_mtime_ns for path in scores} == first  # nothing retrained
    assert again.stdout.strip() == table.strip()


def test_bad_scale_is_one_clear_error(tmp_path):
    done = run("--scale", "0", "--out", str(tmp_path))
    assert done.returncode == 2
    assert "--scale: expected a positive number, found 0.0" in done.stderr
