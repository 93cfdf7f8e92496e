import os

import pytest
import torch


@pytest.fixture(scope="session", autouse=True)
def isolated_matrix_cache(tmp_path_factory):
    """System matrices built by the tests go to a fresh directory, never the user's cache."""
    path = tmp_path_factory.mktemp("pirecon-cache")
    previous = os.environ.get("PIRECON_CACHE_DIR")
    os.environ["PIRECON_CACHE_DIR"] = str(path)
    yield path
    if previous is None:
        os.environ.pop("PIRECON_CACHE_DIR", None)
    else:
        os.environ["PIRECON_CACHE_DIR"] = previous


requires_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def relative_error(a, b) -> float:
    """``||a - b|| / ||b||`` for tensors or arrays."""
    a, b = torch.as_tensor(a, dtype=torch.float64), torch.as_tensor(b, dtype=torch.float64)
    return float(torch.linalg.vector_norm(a - b) / torch.linalg.vector_norm(b))


def load_script(path):
    """Import the Python script at ``path`` (an experiment, a benchmark, the notebook generator) as a module
    named after its file, without putting it on ``sys.path``."""
    import importlib.util
    from pathlib import Path

    path = Path(path)
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def fastmri_reference_script():
    """``tests/data/make_fastmri_reference.py`` as a module: the fastMRI calls behind the stored values."""
    from pathlib import Path

    return load_script(Path(__file__).resolve().parent / "data" / "make_fastmri_reference.py")


def installed_fastmri_version() -> str | None:
    """The version of ``fastmri`` if it imports, else ``None``."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        import fastmri.data.mri_data  # noqa: F401
        return version("fastmri")
    except (ImportError, PackageNotFoundError):
        return None


@pytest.fixture(scope="session")
def fastmri_reference(fastmri_reference_script):
    """fastMRI's own values for the cases the MRI tests compare with (``tests/data/make_fastmri_reference.py``).

    Always available: the values stored in ``tests/data/fastmri_reference.npz``. Where ``fastmri``
    imports, they are computed live instead, and, for the version that produced the stored ones,
    checked against them first.
    """
    reference = fastmri_reference_script
    stored = reference.load()
    installed = installed_fastmri_version()
    if installed is None:
        return stored
    live = reference.fastmri_values()
    if installed == reference.FASTMRI_VERSION:
        differ = reference.differences(live, stored)
        assert not differ, f"fastmri {installed} gives other values than the stored ones for {differ}"
    return live
