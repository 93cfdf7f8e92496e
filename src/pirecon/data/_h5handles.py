"""Per-process HDF5 handles for datasets read by DataLoader workers.

HDF5 handles must never cross a process boundary: a forked worker starts
with none (the parent's are dropped when the pid changes), and pickling
(spawned workers, DDP launchers) drops them too. Files reopen lazily on the
next access in each process.
"""

from __future__ import annotations

import os
from typing import Any, Hashable


class LazyH5Handles:
    """Mixin: ``self._h5(key, path)`` returns this process's read-only handle for ``path``."""

    _handles: dict[Hashable, Any]
    _pid: int

    def _reset_handles(self) -> None:
        """Start with no open files (call from ``__init__``)."""
        self._handles, self._pid = {}, os.getpid()

    def _h5(self, key: Hashable, path):
        import h5py

        if getattr(self, "_pid", None) != os.getpid():  # inherited through fork: not ours
            self._reset_handles()
        handle = self._handles.get(key)
        if handle is None:
            handle = self._handles[key] = h5py.File(path, "r")
        return handle

    def close(self) -> None:
        """Close the files this process opened (they reopen on the next access)."""
        if getattr(self, "_pid", None) == os.getpid():
            for handle in self._handles.values():
                try:
                    handle.close()
                except Exception:  # already closed by h5py at shutdown
                    pass
        self._handles = {}

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_handles"] = {}
        state.pop("_pid", None)
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._pid = os.getpid()

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass
