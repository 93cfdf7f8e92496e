"""Checks for arguments at the public boundary.

Every message says what was expected, what was found, and which argument it
concerns, so that a user can fix the call without reading the source.
"""

from __future__ import annotations

import math
import numbers
from typing import Sequence

import torch

from .errors import PireconUserError

__all__ = [
    "BackendUnavailableError",
    "check_tensor",
    "check_choice",
    "check_positive",
    "make_generator",
    "sample_generators",
    "SPLITS",
    "split_seed",
    "seed_split",
]


class BackendUnavailableError(PireconUserError):
    """A requested backend or device is not available on this machine (a user error: one line on the command line)."""


_KINDS = {
    "real": (torch.float16, torch.bfloat16, torch.float32, torch.float64),
    "complex": (torch.complex64, torch.complex128),
}
_KINDS["any"] = _KINDS["real"] + _KINDS["complex"]


def check_tensor(
    x,
    name: str,
    *,
    kind: str = "real",
    trailing_shape: Sequence[int] | None = None,
    min_ndim: int = 0,
    finite: bool = True,
    device: torch.device | None = None,
) -> torch.Tensor:
    """Validate a tensor argument and return it unchanged.

    Parameters
    ----------
    x : object
        The argument to check; must be a ``torch.Tensor``.
    name : str
        How the argument is named in messages (``"x"``, ``"sinogram"``).
    kind : {"real", "complex", "any"}
        Which floating dtypes are accepted.
    trailing_shape : sequence of int, optional
        The last dimensions ``x`` must have; any leading (batch) dimensions
        are allowed in front of them.
    min_ndim : int
        The least number of dimensions.
    finite : bool
        Reject NaN and Inf.
    device : torch.device, optional
        The device ``x`` must live on.
    """
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor, found {type(x).__name__}")
    allowed = _KINDS[kind]
    if x.dtype not in allowed:
        names = ", ".join(str(d).replace("torch.", "") for d in allowed)
        raise TypeError(f"{name}: expected a {kind} floating tensor ({names}), found dtype {str(x.dtype).replace('torch.', '')}")
    if trailing_shape is not None:
        trailing_shape = tuple(int(s) for s in trailing_shape)
        k = len(trailing_shape)
        if x.ndim < k or tuple(x.shape[x.ndim - k:]) != trailing_shape:
            raise ValueError(
                f"{name}: expected shape (..., {', '.join(map(str, trailing_shape))}), "
                f"found {tuple(x.shape)}"
            )
    if x.ndim < min_ndim:
        raise ValueError(f"{name}: expected at least {min_ndim} dimensions, found shape {tuple(x.shape)}")
    if device is not None and x.device != torch.device(device):
        raise ValueError(f"{name}: expected a tensor on device {torch.device(device)}, found {x.device}")
    if finite and x.numel() and x.device.type != "meta":
        # one cheap reduction: NaN and Inf propagate into the sum; count them only when it is not finite
        if not bool(torch.isfinite(x.sum())):
            parts = (x.real, x.imag) if x.is_complex() else (x,)
            n_nan = sum(int(torch.isnan(p).sum()) for p in parts)
            n_inf = sum(int(torch.isinf(p).sum()) for p in parts)
            if n_nan or n_inf:  # otherwise the sum merely overflowed
                raise ValueError(f"{name}: expected finite values, found {n_nan} NaN and {n_inf} Inf entries")
    return x


def check_choice(value: str, name: str, choices: Sequence[str]) -> str:
    """Return ``value`` lower-cased if it is one of ``choices``, else raise ``ValueError``."""
    if not isinstance(value, str) or value.lower() not in choices:
        raise ValueError(f"{name}: expected one of {', '.join(repr(c) for c in choices)}, found {value!r}")
    return value.lower()


def check_positive(value, name: str, *, integer: bool = False):
    """Return ``value`` if it is a finite positive number (an integer when ``integer``); NumPy scalars count."""
    kind = numbers.Integral if integer else numbers.Real
    if isinstance(value, bool) or not isinstance(value, kind) or not value > 0 or not math.isfinite(value):
        what = "a positive integer" if integer else "a positive number"
        raise ValueError(f"{name}: expected {what}, found {value!r}")
    return value


def make_generator(seed: int | torch.Generator | None, device: torch.device | str = "cpu") -> torch.Generator:
    """A ``torch.Generator`` from a seed, an existing generator, or ``None`` (fresh entropy).

    Integer seeds give CPU generators so that the same seed draws the same
    numbers on every machine; draw on the CPU and move the result.
    """
    if isinstance(seed, torch.Generator):
        return seed
    gen = torch.Generator(device=device)
    if seed is None:
        gen.seed()
    elif isinstance(seed, int) and not isinstance(seed, bool):
        gen.manual_seed(_torch_seed(seed))
    else:
        raise TypeError(f"seed: expected an int, a torch.Generator or None, found {type(seed).__name__}")
    return gen


def sample_generators(seed: int | torch.Generator | None, batch_size: int, start_index: int = 0,
                      stream: int | None = None) -> list[torch.Generator]:
    """One CPU generator per sample: sample ``i`` depends only on ``(seed, start_index + i, stream)``.

    An int seed is used as it is; a generator or ``None`` contributes one drawn
    int64. Samples are mixed by NumPy's ``SeedSequence`` (no Python ``hash``),
    so the same seed gives the same samples on every machine and in any batch
    size. ``stream`` keeps different kinds of draws (masks, trajectories)
    independent of each other under the same seed.
    """
    import numpy as np

    if isinstance(seed, int) and not isinstance(seed, bool):
        base = _stream_base(seed)
    else:
        gen = make_generator(seed)
        base = int(torch.randint(0, 2**63 - 1, (1,), generator=gen, device=gen.device).item())
    generators = []
    for i in range(batch_size):
        key = (start_index + i,) if stream is None else (start_index + i, stream)
        state = np.random.SeedSequence(base, spawn_key=key).generate_state(1, dtype=np.uint64)
        generators.append(torch.Generator().manual_seed(int(state[0])))
    return generators


# --------------------------------------------------------------------------
# Disjoint data splits under one seed
# --------------------------------------------------------------------------

SPLITS = {"train": 0, "validation": 1, "test": 2, "calibration": 3, "panel": 4}
"""Data splits and their tags. Fixed forever: changing a tag changes every image of its split."""


def split_seed(seed: int, split: str) -> int:
    """The integer seed of ``split``'s stream under ``seed``: streams of different splits never meet.

    ``"train"`` is the seed itself reduced to 64 bits (what every seeded function uses today);
    any other split is ``seed mod 2^64 + tag * 2^64``, an integer no training seed can equal. NumPy's
    ``SeedSequence`` reads a seed as 32-bit words, zero-padded to four: a training seed gives
    ``[lo, hi, 0, 0]``, a seed of split ``tag`` gives ``[lo, hi, tag, 0]``, so whatever the sample
    index, the epoch, the rank or the worker, a training sample and a held-out sample are never drawn
    from the same input. Pass the result wherever a function takes an integer seed.
    """
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
        raise ValueError(f"seed: expected an integer, found {seed!r}")
    if split not in SPLITS:
        raise ValueError(f"split: expected one of {', '.join(repr(k) for k in SPLITS)}, found {split!r}")
    return int(seed) % (1 << 64) + (SPLITS[split] << 64)


def seed_split(seed: int) -> str:
    """The split whose stream an integer seed (as given to a seeded function) draws from."""
    tag = seed >> 64 if 0 <= seed < (len(SPLITS) << 64) else 0
    return next(name for name, value in SPLITS.items() if value == tag)


def _stream_base(seed: int) -> int:
    """The ``SeedSequence`` entropy of an integer seed: a split seed as it is, any other seed mod 2^64."""
    return seed if seed_split(seed) != "train" else seed % (1 << 64)


def _torch_seed(seed: int) -> int:
    """A ``torch.Generator`` seed: a 64-bit seed as it is, a split seed hashed to 64 bits."""
    import numpy as np

    base = _stream_base(seed)
    if base < (1 << 64):
        return seed
    return int(np.random.SeedSequence(base).generate_state(1, dtype=np.uint64)[0])
