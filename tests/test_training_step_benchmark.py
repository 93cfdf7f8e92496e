"""Smoke test of experiments/benchmarks/training_step.py: three rows, positive times and memory, equal losses."""

import csv
import math
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "experiments" / "benchmarks" / "training_step.py"
LABELS = {"sparse": "pirecon `sparse`", "astra": "pirecon `astra`", "odl": "ODL OperatorModule (`astra_cpu`)"}


def table_rows(stdout: str, header: str = "| backend | s/step |") -> dict[str, list[str]]:
    """The data rows of the Markdown table whose header starts with ``header``, by backend label."""
    rows, inside = {}, False
    for line in stdout.splitlines():
        if line.startswith(header):
            inside = True
        elif inside and line.startswith("| ") and not line.startswith("|---"):
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            rows[cells[0]] = cells[1:]
        elif inside and not line.startswith("|"):
            break
    return rows


@pytest.mark.slow
def test_training_step_small(tmp_path):
    pytest.importorskip("odl")
    pytest.importorskip("astra")
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--repeats", "1", "--batch", "1", "--rows", "sparse", "astra", "odl",
         "--out", str(tmp_path)],
        capture_output=True, text=True, timeout=900,
    )
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "| backend | s/step | x slower than sparse | peak RSS increase (MiB) | process peak RSS (MiB) |" in out
    rows = table_rows(out)
    assert list(rows) == list(LABELS.values())
    for cells in rows.values():
        seconds, ratio, increase, peak = map(float, cells)
        assert all(math.isfinite(v) and v > 0 for v in (seconds, ratio, increase, peak))
        assert increase < peak
    assert float(rows[LABELS["sparse"]][1]) == 1.0
    operator = table_rows(out, "| backend | operator s/step |")
    assert list(operator) == list(LABELS.values())
    for seconds, ratio, share in operator.values():
        assert float(seconds) > 0 and float(ratio) > 0 and 0 < float(share.rstrip("%")) <= 100
    assert "**ODL OperatorModule / sparse:" in out and "Command: `python " in out and "torch " in out

    assert "odl `OperatorFunctionBackward`" in out  # the odl row differentiates through ODL's autograd
    assert "sparse `_ApplyLinearBackward`" in out

    with open(tmp_path / "training_step.csv", newline="") as f:
        records = list(csv.DictReader(f))
    assert [r["backend"] for r in records] == ["sparse", "astra", "odl"]
    for key in ("loss_first", "loss_last", "probe_loss"):
        values = [float(r[key]) for r in records]
        assert all(math.isfinite(v) and v > 0 for v in values)
        assert max(abs(v - values[0]) / values[0] for v in values) < 1e-3, (key, values)
    assert all(float(r["probe_grad_norms_largest_relative_difference"]) < 1e-2 for r in records)
    assert (tmp_path / "training_step.md").read_text().count("| pirecon `") == 4  # two rows in each of the two tables
