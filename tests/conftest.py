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
