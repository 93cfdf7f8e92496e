"""Timing shared by the benchmark scripts."""

from __future__ import annotations

import shutil
import statistics
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path


def median_time(fn, repeats: int) -> float:
    """Median wall time of ``fn()`` over ``repeats`` calls, after one warm-up call (caches, allocator)."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def timed(fn):
    """``(fn(), seconds)`` for one call."""
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


@contextmanager
def scratch_directory(out: Path | None, prefix: str):
    """``out`` if given (kept afterwards), else a temporary directory removed at the end."""
    if out is not None:
        yield Path(out)
        return
    root = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)
