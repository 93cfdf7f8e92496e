"""Execute every tutorial notebook in ``notebooks/`` and fail on the first cell that raises.

The kernel is a ``python3`` kernelspec written to a temporary ``JUPYTER_PATH``
entry whose ``argv`` is this interpreter (``sys.executable``), so the notebooks
run in the same environment as the tests whatever kernelspecs the machine or
the user has installed elsewhere. System matrices are cached in a temporary
``PIRECON_CACHE_DIR``; figures are not saved (``PIRECON_NOTEBOOK_OUT`` unset).
"""

from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

NOTEBOOK_DIR = Path(__file__).resolve().parent.parent / "notebooks"
NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("*.ipynb"))
CELL_TIMEOUT = 600  # seconds per cell
ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;]*m")


@pytest.fixture
def kernel_env(tmp_path, monkeypatch):
    """A ``python3`` kernelspec for ``sys.executable`` first on ``JUPYTER_PATH``, and a private cache dir."""
    import pirecon

    spec_dir = tmp_path / "jupyter" / "kernels" / "python3"
    spec_dir.mkdir(parents=True)
    spec = {
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "Python 3 (pirecon tests)",
        "language": "python",
        "metadata": {"debugger": False},
    }
    (spec_dir / "kernel.json").write_text(json.dumps(spec, indent=1))
    jupyter_path = [str(tmp_path / "jupyter")]
    if os.environ.get("JUPYTER_PATH"):
        jupyter_path.append(os.environ["JUPYTER_PATH"])
    monkeypatch.setenv("JUPYTER_PATH", os.pathsep.join(jupyter_path))
    # The kernel imports the same pirecon as the tests, installed or not.
    source_root = str(Path(pirecon.__file__).resolve().parent.parent)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [source_root, os.environ.get("PYTHONPATH")])))
    cache = tmp_path / "pirecon-cache"
    cache.mkdir()
    monkeypatch.setenv("PIRECON_CACHE_DIR", str(cache))
    monkeypatch.delenv("PIRECON_NOTEBOOK_OUT", raising=False)
    return tmp_path


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_runs(path, kernel_env):
    nb = nbformat.read(path, as_version=4)
    # A last cell reports the kernel's interpreter, to check it is the tests' one.
    nb.cells.append(nbformat.v4.new_code_cell("import sys\nprint(sys.prefix)"))
    client = nbclient.NotebookClient(
        nb,
        kernel_name="python3",
        timeout=CELL_TIMEOUT,
        resources={"metadata": {"path": str(NOTEBOOK_DIR)}},
    )
    failure = None
    try:
        client.execute()
    except nbclient.exceptions.CellExecutionError as err:
        # The message holds the failing cell's source and the kernel's traceback.
        failure = ANSI_ESCAPE.sub("", str(err))
    if failure is not None:
        pytest.fail(f"{path.name}: a cell raised\n{failure}", pytrace=False)
    printed = "".join(o.get("text", "") for o in nb.cells[-1].outputs if o.output_type == "stream").strip()
    assert Path(printed).resolve() == Path(sys.prefix).resolve(), (
        f"{path.name}: expected the kernel to run in {sys.prefix}, found {printed!r}"
    )


def test_notebooks_exist():
    assert NOTEBOOKS, f"no notebooks found in {NOTEBOOK_DIR}"


def test_notebooks_match_generator():
    """The committed notebooks are what ``notebooks/make_notebooks.py`` writes (run it after editing)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("make_notebooks", NOTEBOOK_DIR / "make_notebooks.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    for name, cells in module.NOTEBOOKS:
        path = NOTEBOOK_DIR / name
        assert path.exists(), f"{name}: missing; run python notebooks/make_notebooks.py"
        assert path.read_text(encoding="utf-8") == module.render(cells), (
            f"{name}: out of date with make_notebooks.py; run python notebooks/make_notebooks.py"
        )
