"""The package's layers (``[tool.importlinter]`` in pyproject.toml) hold, and a broken one fails."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LINT = [sys.executable, "-c", "import sys; from importlinter.cli import lint_imports_command; "
        "sys.exit(lint_imports_command())"]


def lint(config: Path, pythonpath: Path | None = None, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    if pythonpath is not None:
        env["PYTHONPATH"] = str(pythonpath)
    return subprocess.run([*LINT, "--config", str(config), "--no-cache"], capture_output=True, text=True, cwd=cwd,
                          env=env, timeout=300)


def test_the_import_contracts_are_kept():
    done = lint(ROOT / "pyproject.toml")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Contracts: 3 kept, 0 broken." in done.stdout


@pytest.mark.parametrize("module, line, contract", [
    ("physics.py", "from .data import formats", "Physics, operators, modalities and models stand on no file"),
    ("models/lpd.py", "import pytorch_lightning", "Physics, operators, modalities and models stand on no file"),
    ("data/simulate.py", "import pytorch_lightning", "Lightning is imported only under pirecon.training"),
    ("ct/geometry.py", "from ..physics import Physics", "Layers:"),
])
def test_a_forbidden_import_breaks_a_contract(tmp_path, module, line, contract):
    shutil.copytree(ROOT / "src" / "pirecon", tmp_path / "src" / "pirecon",
                    ignore=shutil.ignore_patterns("__pycache__"))
    target = tmp_path / "src" / "pirecon" / module
    target.write_text(target.read_text() + f"\n{line}\n")
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    done = lint(tmp_path / "pyproject.toml", pythonpath=tmp_path / "src", cwd=tmp_path)
    assert done.returncode == 1, done.stdout + done.stderr
    broken = [chunk for chunk in done.stdout.split("\n\n") if "BROKEN" in chunk]
    assert any(contract in chunk.replace("\n", " ") for chunk in broken), done.stdout
