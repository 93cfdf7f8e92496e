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

from conftest import load_script

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
    module = load_script(NOTEBOOK_DIR / "make_notebooks.py")
    for name, cells in module.NOTEBOOKS:
        path = NOTEBOOK_DIR / name
        assert path.exists(), f"{name}: missing; run python notebooks/make_notebooks.py"
        assert path.read_text(encoding="utf-8") == module.render(cells), (
            f"{name}: out of date with make_notebooks.py; run python notebooks/make_notebooks.py"
        )


# --------------------------------------------------------------------------
# Every module the notebooks and the tests import is declared in pyproject.toml
# --------------------------------------------------------------------------

REPO = NOTEBOOK_DIR.parent
TESTS_DIR = REPO / "tests"


def _imports(source: str, where: str) -> set[str]:
    """Top-level modules that ``source`` imports, leaving out the imports of a ``try`` that catches
    ``ImportError`` and their fallbacks (optional packages such as fastmri, used only where they import)."""
    import ast

    def guards_import_error(handler: ast.ExceptHandler) -> bool:
        names = handler.type.elts if isinstance(handler.type, ast.Tuple) else [handler.type]
        return any(isinstance(n, ast.Name) and n.id in ("ImportError", "ModuleNotFoundError") for n in names)

    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.Try) and any(guards_import_error(h) for h in node.handlers):
            for child in node.orelse + node.finalbody:
                visit(child)
            return
        if isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module.split(".")[0])
        for child in ast.iter_child_nodes(node):
            visit(child)

    try:
        visit(ast.parse(source))
    except SyntaxError as err:
        pytest.fail(f"{where}: expected Python source, found a syntax error ({err})", pytrace=False)
    return found


def _notebook_sources() -> dict[str, str]:
    """Code cells of every notebook (IPython magics and shell lines left out), the generator, and the test
    modules (not the scripts in ``tests/data``, which regenerate stored values from optional packages)."""
    sources = {}
    for path in NOTEBOOKS:
        cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
        for i, cell in enumerate(cells):
            if cell["cell_type"] == "code":
                text = "".join(cell["source"])
                lines = [line for line in text.splitlines() if not line.lstrip().startswith(("%", "!"))]
                sources[f"{path.name}, cell {i}"] = "\n".join(lines)
    for path in [NOTEBOOK_DIR / "make_notebooks.py", *sorted(TESTS_DIR.glob("*.py"))]:
        sources[str(path.relative_to(REPO))] = path.read_text(encoding="utf-8")
    return sources


def _declared_distributions() -> set[str]:
    """Canonical names of the distributions pyproject.toml declares: dependencies and every extra."""
    try:
        import tomllib
    except ModuleNotFoundError:  # Python < 3.11: the dev extra installs tomli
        import tomli as tomllib
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    project = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    requirements = list(project["dependencies"])
    for extra in project.get("optional-dependencies", {}).values():
        requirements.extend(extra)
    return {canonicalize_name(Requirement(r).name) for r in requirements}


def test_imports_are_declared_dependencies():
    """A notebook cell or a test that imports a module which no declared distribution provides fails on
    a fresh ``pip install -e ".[dev]"``; find it here instead."""
    from importlib.metadata import packages_distributions

    from packaging.utils import canonicalize_name

    declared = _declared_distributions()
    assert {"torch", "pytest", "nbclient", "pandas"} <= declared  # the parsing found the lists
    provided = packages_distributions()
    local = {path.stem for path in TESTS_DIR.glob("*.py")}  # conftest, test modules imported by others
    local |= {path.stem for path in (REPO / "experiments").glob("*.py")}  # scripts a notebook imports (task_sweep)
    problems = []
    for where, source in _notebook_sources().items():
        for module in sorted(_imports(source, where)):
            if module in sys.stdlib_module_names or module == "pirecon" or module in local:
                continue
            distributions = provided.get(module)
            if not distributions:
                problems.append(f"{where}: imports {module!r}, which no installed distribution provides")
            elif not declared & {canonicalize_name(d) for d in distributions}:
                problems.append(f"{where}: imports {module!r} from {', '.join(distributions)}, which "
                                f"pyproject.toml declares neither as a dependency nor in an extra")
    assert not problems, "\n".join(problems)


def test_import_scan_sees_what_it_must():
    source = ("import numpy.linalg\nfrom scipy import sparse\nfrom . import local\n"
              "try:\n    import fastmri\nexcept ImportError:\n    import fastmri_fallback\n"
              "def f():\n    import pandas as pd\n")
    assert _imports(source, "example") == {"numpy", "scipy", "pandas"}
