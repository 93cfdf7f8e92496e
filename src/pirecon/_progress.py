"""What long work shows while it runs: one line per stage, and progress bars only on a terminal.

    with stage("training LPD, 4000 steps"):      # "training LPD, 4000 steps ..."
        ...                                      # "training LPD, 4000 steps: done in 251.3 s"

Bars (``tqdm``) are drawn only when stderr is a terminal; written to a log file they would add a line
per update. Stage lines go to stdout and are flushed at once, so a log shows where a job is.
"""

from __future__ import annotations

import sys
import time
from contextlib import contextmanager

__all__ = ["stage", "bar_enabled", "progress_bar"]


def bar_enabled(progress: bool) -> bool:
    """Whether to draw a progress bar: asked for, and stderr is a terminal."""
    return bool(progress) and sys.stderr.isatty()


def progress_bar(iterable=None, *, progress: bool = True, **options):
    """A ``tqdm`` bar over ``iterable`` (``total``, ``desc``, ... as for tqdm), drawn only on a terminal."""
    from tqdm.auto import tqdm

    return tqdm(iterable, disable=not bar_enabled(progress), **options)


@contextmanager
def stage(what: str, *, enabled: bool = True, stream=None):
    """Print ``what`` when the stage starts and its duration when it ends (stdout unless ``stream``)."""
    if not enabled:
        yield
        return
    out = stream if stream is not None else sys.stdout
    start = time.perf_counter()
    print(f"{what} ...", file=out, flush=True)
    yield
    print(f"{what}: done in {time.perf_counter() - start:.1f} s", file=out, flush=True)
