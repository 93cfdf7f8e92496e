"""PyTorch datasets: slices of raw HDF5 files, and an endless stream of on-the-fly simulations.

Both yield the same items, dicts of tensors shaped for a batch ``(B, C, ...)``
after collation:

============================  ===========================  =================================
key                           CT                           MRI
============================  ===========================  =================================
measurement                   ``sinogram`` (1, A, D)       ``kspace`` (coils, H, W) complex64
                              float32                      (masked); non-Cartesian
                                                           ``(coils, K)`` with ``trajectory``
``mask``                      --                           ``(1, 1, W)`` line mask or
                                                           ``(1, h, W)`` 2D mask, float32
``ground_truth`` (if stored)  ``(1, H, W)`` float32        ``(1, H, W)`` complex64
``coil_maps`` (if stored)     --                           ``(coils, H, W)`` complex64
``reconstruction_rss``        --                           ``(1, h, w)`` float32
``segmentation`` (if stored)  ``(1, H, W)`` uint8          ``(1, H, W)`` uint8
``label`` (if stored)         ``()`` int64                 ``()`` int64
============================  ===========================  =================================

plus ``file`` and ``slice`` (:class:`H5SliceDataset`) or ``index``
(:class:`SimulationDataset`), Python ints.
"""

from __future__ import annotations

import dataclasses
import math
import os
from bisect import bisect_right
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import numpy as np
import torch
from torch.utils.data import Dataset, IterableDataset, get_worker_info

from .._validation import split_seed
from ..errors import PireconUserError
from ._h5handles import LazyH5Handles
from ._spec import decode_attr as _decode_attr
from ._spec import fmt_shape
from .validate import SpecError, checked_file, validate

__all__ = ["H5SliceDataset", "SimulationDataset", "LoDoPaBDataset", "Undersample", "resolve_rank", "KIND_OF_FORMAT",
           "ROLES", "HELD_OUT_SPLITS"]

#: Dataset kind of each raw file format (``formats.file_kind``).
KIND_OF_FORMAT = {"ct_raw": "ct", "mri_raw": "mri", "fastmri": "mri"}

#: HDF5 datasets read per slice, and the item key each becomes.
_CT_KEYS = (("sinogram", "sinogram"), ("ground_truth", "ground_truth"), ("segmentation", "segmentation"))
_MRI_KEYS = (("kspace", "kspace"), ("coil_maps", "coil_maps"), ("ground_truth", "ground_truth"),
             ("reconstruction_rss", "reconstruction_rss"), ("reconstruction_esc", "reconstruction_rss"),
             ("segmentation", "segmentation"), ("sampling_mask", "mask"))

# channel axis added to per-slice arrays that are images (H, W) in the file
_ADD_CHANNEL = ("sinogram", "ground_truth", "segmentation", "reconstruction_rss")


def _as_paths(paths, name: str = "paths") -> list[Path]:
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    if not isinstance(paths, Iterable):
        raise ValueError(f"{name}: expected a path or a list of paths, found {type(paths).__name__}")
    out = []
    for p in paths:
        if not isinstance(p, (str, os.PathLike)):
            raise ValueError(f"{name}: expected paths (str or PathLike), found {type(p).__name__}")
        out.append(Path(p))
    if not out:
        raise ValueError(f"{name}: expected at least one file, found an empty list")
    return out


def _item_tensor(key: str, array: np.ndarray) -> torch.Tensor:
    t = torch.from_numpy(np.ascontiguousarray(array))
    if key in _ADD_CHANNEL:
        t = t.unsqueeze(0)
    return t


# --------------------------------------------------------------------------
# Slices of HDF5 files
# --------------------------------------------------------------------------

class H5SliceDataset(LazyH5Handles, Dataset):
    """Map-style dataset over the slices of many raw HDF5 files (``ct_raw``, ``mri_raw`` or fastMRI).

    Item ``i`` is slice ``s`` of file ``f`` in the order of ``paths``, then of
    slices. Each item reads its own slice from disk (one chunk per dataset).
    Files are opened lazily, once per process: the handles are not pickled and
    are reopened after ``fork`` or ``spawn``, so the dataset is safe with
    ``DataLoader(num_workers > 0)`` and under DDP.

    Every file is checked against its spec when the dataset is built, as
    ``pirecon check`` does (:func:`pirecon.data.validate.validate`), and a bad
    file raises the same :class:`~pirecon.data.validate.SpecError`, naming the
    file, the key, what was expected and what was found. First the attributes,
    dtypes and shapes of all files (no array is read), then the files' mutual
    consistency, then the values of every dataset (finite, in range), read a
    block of slices at a time (at most 64 MiB at once; roughly 100-200 MiB/s of
    uncompressed data on one core, gzip decompression being most of it: a few
    seconds for 200 slices of 8-coil 320 x 320 k-space), with a progress bar
    when that takes more than a second. A file whose values were checked once
    in this process (same path, size and modification time) is not read again.

    The files of one dataset must give items that batch together: the same
    kind, for CT the same geometry, and the same per-slice datasets with the
    same per-slice shapes (for MRI: coils and image grid of ``kspace``,
    Cartesian or not, the kind of mask (line or 2D), coil maps, ground truth,
    reconstruction grid, segmentation, labels). Mask values, noise models and
    slice counts may differ between files.

    Parameters
    ----------
    paths : path or sequence of paths
    kind : {"ct", "mri"}, optional
        Expected kind of every file; by default that of the first file.
    transform : callable, optional
        Applied to each item dict (``transform(item) -> item``).
    role : {"train", "val", "test", "predict"}, optional
        What the dataset is for. ``"train"`` refuses held-out files: those
        whose root attribute ``split`` (written by :func:`pirecon.data.simulate.simulate`)
        is ``"validation"``, ``"test"``, ``"calibration"`` or ``"panel"``. The other roles, and
        ``None`` (the default), accept every split.
    progress : bool
        Show a progress bar (on a terminal, rank 0) while the values are checked,
        if that takes more than a second.
    """

    def __init__(self, paths, *, kind: str | None = None, transform: Callable[[dict], Any] | None = None,
                 role: str | None = None, progress: bool = True):
        self.paths = _as_paths(paths)
        if kind is not None and (not isinstance(kind, str) or kind.lower() not in ("ct", "mri")):
            raise ValueError(f"kind: expected 'ct', 'mri' or None, found {kind!r}")
        if transform is not None and not callable(transform):
            raise ValueError(f"transform: expected a callable or None, found {type(transform).__name__}")
        if role is not None and role not in ROLES:
            raise ValueError(f"role: expected one of {', '.join(repr(r) for r in ROLES)} or None, found {role!r}")
        self.transform = transform
        self.role = role
        self.kind = None if kind is None else kind.lower()
        for i, path in enumerate(self.paths):
            if not path.is_file():
                raise FileNotFoundError(f"paths[{i}]: expected an existing HDF5 file, found no file at {str(path)!r}")
        # 1. each file's attributes, dtypes and shapes (no array read), in order: a broken file fails at once
        infos = [_file_info(path) for path in self.paths]
        # 2. the files together
        first = infos[0]
        if self.kind is None:
            self.kind = first.kind
        for info in infos:
            if info.kind != self.kind:
                like = f"like {first.path}" if kind is None else f"(kind={self.kind!r})"
                raise SpecError(info.path, "attrs/pirecon_format", f"a {self.kind.upper()} raw file {like}",
                                repr(info.format))
            if role == "train" and info.split in HELD_OUT_SPLITS:
                raise PireconUserError(
                    f"{info.path}: attrs/split: expected a file that may train a model (split 'train', or no "
                    f"split), found split {info.split!r} (held out from training)")
        for info in infos[1:]:
            _check_batchable(first, info)
        # 3. the values of every file not checked before in this process
        _check_values([info for info in infos if info.stat not in _VALUES_CHECKED], progress)
        self.num_slices = tuple(info.num_slices for info in infos)
        self._geometries = [info.geometry for info in infos]
        self._noises = [info.noise for info in infos]
        self._items = [info.items for info in infos]
        self._line_masks: dict[int, np.ndarray] = {i: _line_mask(info) for i, info in enumerate(infos)
                                                  if info.items.get("mask", ("",))[0] == "mask"}
        self._offsets = np.concatenate([[0], np.cumsum(self.num_slices)]).astype(np.int64)
        self._reset_handles()

    # ---- indexing -------------------------------------------------------

    def __len__(self) -> int:
        return int(self._offsets[-1])

    def locate(self, index: int) -> tuple[int, int]:
        """``(file index, slice index)`` of item ``index`` (negative indices count from the end)."""
        n = len(self)
        if isinstance(index, (bool, np.bool_)) or not isinstance(index, (int, np.integer)):
            raise TypeError(f"index: expected an integer, found {type(index).__name__}")
        if not -n <= index < n:
            raise IndexError(f"index: expected -{n} <= index < {n}, found {index}")
        index = int(index) % n
        f = bisect_right(self._offsets, index) - 1
        return f, index - int(self._offsets[f])

    # ---- file handles (per process, never pickled) ------------------------

    def _file(self, i: int):
        return self._h5(i, self.paths[i])

    # ---- metadata -------------------------------------------------------

    def _file_index(self, file_index: int) -> int:
        n = len(self.paths)
        if isinstance(file_index, (bool, np.bool_)) or not isinstance(file_index, (int, np.integer)) \
                or not -n <= file_index < n:
            raise IndexError(f"file_index: expected an integer in -{n}..{n - 1}, found {file_index!r}")
        return int(file_index) % n

    def geometry(self, file_index: int = 0):
        """The CT geometry of file ``file_index`` (the files of a dataset share one)."""
        if self.kind != "ct":
            raise ValueError(f"geometry: only CT files have a geometry, found kind {self.kind!r}")
        return self._geometries[self._file_index(file_index)]

    def noise(self, file_index: int = 0):
        """The noise model of file ``file_index`` (its ``noise`` attribute), or ``None``."""
        return self._noises[self._file_index(file_index)]

    # ---- items ----------------------------------------------------------

    def __getitem__(self, index: int) -> dict:
        file_index, slice_index = self.locate(index)
        f = self._file(file_index)
        item: dict[str, Any] = {}
        for key, (name, _) in self._items[file_index].items():
            if key == "mask" and file_index in self._line_masks:
                item["mask"] = torch.from_numpy(self._line_masks[file_index]).view(1, 1, -1)
                continue
            ds = f[name]
            if key == "label":
                item["label"] = torch.tensor(int(ds[slice_index]), dtype=torch.int64)
            elif key == "trajectory" and ds.ndim == 2 or key == "coil_maps" and ds.ndim == 3:
                item[key] = torch.from_numpy(np.asarray(ds[()]))  # stored once for every slice
            else:
                item[key] = _item_tensor(key, ds[slice_index])
        if self.kind == "mri":
            if "trajectory" not in item and item["kspace"].ndim == 2:  # single-coil file: (H, W)
                item["kspace"] = item["kspace"][None]
            for key in ("kspace", "coil_maps", "ground_truth"):
                if key in item and item[key].dtype != torch.complex64:
                    item[key] = item[key].to(torch.complex64)  # fastMRI: complex128
            if "reconstruction_rss" in item and item["reconstruction_rss"].dtype != torch.float32:
                item["reconstruction_rss"] = item["reconstruction_rss"].to(torch.float32)  # fastMRI: float64
        item["file"] = file_index
        item["slice"] = slice_index
        return self.transform(item) if self.transform is not None else item

    def read_slices(self, file_index: int, start: int, stop: int, *, skip: Iterable[str] = ()) -> dict:
        """Slices ``start:stop`` of file ``file_index`` as one batch: the tensors of
        ``default_collate([dataset[i] for i in those slices])``, each dataset read with one call (a block of
        slices, not one slice at a time), leaving out the item keys in ``skip`` (e.g. ``ground_truth`` when
        only reconstructing). With a ``transform``, the items are read and collated one by one."""
        file_index = self._file_index(file_index)
        n = self.num_slices[file_index]
        if not 0 <= start < stop <= n:
            raise IndexError(f"read_slices: expected 0 <= start < stop <= {n}, found start {start}, stop {stop}")
        if self.transform is not None:
            offset = int(self._offsets[file_index])
            return torch.utils.data.default_collate([self[offset + i] for i in range(start, stop)])
        f, count = self._file(file_index), stop - start
        batch: dict[str, Any] = {}
        skip = set(skip)
        for key, (name, _) in self._items[file_index].items():
            if key in skip:
                continue
            if key == "mask" and file_index in self._line_masks:
                batch["mask"] = torch.from_numpy(self._line_masks[file_index]).view(1, 1, 1, -1).repeat(count, 1, 1, 1)
                continue
            ds = f[name]
            if key == "label":
                batch["label"] = torch.from_numpy(np.asarray(ds[start:stop]).astype(np.int64))
            elif key == "trajectory" and ds.ndim == 2 or key == "coil_maps" and ds.ndim == 3:
                shared = torch.from_numpy(np.asarray(ds[()]))  # stored once for every slice
                batch[key] = shared.unsqueeze(0).repeat(count, *([1] * shared.ndim))
            else:
                block = torch.from_numpy(np.ascontiguousarray(ds[start:stop]))
                batch[key] = block.unsqueeze(1) if key in _ADD_CHANNEL else block
        if self.kind == "mri":
            if "trajectory" not in batch and batch["kspace"].ndim == 3:  # single-coil file: (N, H, W)
                batch["kspace"] = batch["kspace"][:, None]
            for key in ("kspace", "coil_maps", "ground_truth"):
                if key in batch and batch[key].dtype != torch.complex64:
                    batch[key] = batch[key].to(torch.complex64)
            if "reconstruction_rss" in batch and batch["reconstruction_rss"].dtype != torch.float32:
                batch["reconstruction_rss"] = batch["reconstruction_rss"].to(torch.float32)
        batch["file"] = torch.full((count,), file_index, dtype=torch.int64)
        batch["slice"] = torch.arange(start, stop, dtype=torch.int64)
        return batch

    def __repr__(self) -> str:
        return f"H5SliceDataset(kind={self.kind!r}, files={len(self.paths)}, slices={len(self)})"


#: Roles of an :class:`H5SliceDataset`.
ROLES = ("train", "val", "test", "predict")

#: Values of a file's ``split`` attribute that a training dataset refuses.
HELD_OUT_SPLITS = ("validation", "test", "calibration", "panel")

#: Raw file formats a :class:`H5SliceDataset` reads.
_RAW_FORMATS = ("ct_raw", "mri_raw", "fastmri")

#: ``(path, device, inode, size, mtime, ctime)`` of the files whose values were checked in this process.
_VALUES_CHECKED: set[tuple] = set()


@dataclasses.dataclass
class _FileInfo:
    """What :class:`H5SliceDataset` learns of a file from its metadata (no array is read)."""

    path: Path
    stat: tuple
    format: str
    kind: str
    num_slices: int
    value_bytes: int
    items: dict  # item key -> (HDF5 dataset name, per-slice shape of the item)
    geometry: Any = None
    noise: Any = None
    split: str | None = None


def _file_info(path: Path) -> _FileInfo:
    """Check ``path``'s attributes, dtypes and shapes against its spec and describe its items."""
    stat = path.stat()
    with checked_file(path, expect=_RAW_FORMATS) as (f, summary):
        fmt, checked = summary["kind"], set(summary["checked"])  # read only what the spec checked
        info = _FileInfo(path=path, format=fmt, kind=KIND_OF_FORMAT[fmt], num_slices=int(summary["num_slices"]),
                         value_bytes=int(summary["value_bytes"]), items={},
                         stat=(str(path.resolve()), stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns,
                               stat.st_ctime_ns))
        split = _decode_attr(f.attrs["split"]) if "split" in f.attrs else None
        info.split = split.strip().lower() if isinstance(split, str) else None
        for name, key in (_CT_KEYS if info.kind == "ct" else _MRI_KEYS):
            if name in checked and key not in info.items:
                shape = tuple(int(s) for s in f[name].shape)
                if name == "coil_maps" and len(shape) == 3:  # maps stored once for every slice
                    shape = (0, *shape)
                shape = shape[1:]
                if key in _ADD_CHANNEL:
                    shape = (1, *shape)
                info.items[key] = (name, shape)
        if "labels" in checked:
            info.items["label"] = ("labels", ())
        if summary.get("noise") is not None:
            from ..noise import noise_from_dict

            info.noise = noise_from_dict(summary["noise"])
        if info.kind == "ct":
            from ..ct import geometry_from_dict

            info.geometry = geometry_from_dict(summary["geometry"])
        else:
            name, shape = info.items["kspace"]
            if summary["cartesian"] and len(shape) == 2:  # single-coil (H, W)
                info.items["kspace"] = (name, (1, *shape))
            if "trajectory" in checked:
                info.items["trajectory"] = ("trajectory", tuple(int(s) for s in f["trajectory"].shape[-2:]))
            if "mask" in checked:  # a line mask shared by all slices (read once its values are checked)
                info.items["mask"] = ("mask", (1, 1, int(f["mask"].shape[-1])))
    return info


def _line_mask(info: _FileInfo) -> np.ndarray:
    """The line mask ``mask`` of a checked MRI file (small: read once)."""
    with checked_file(info.path, expect=_RAW_FORMATS) as (f, _):
        return np.asarray(f["mask"][()], dtype=np.float32)


def _describe(items: dict, key: str) -> str:
    if key not in items:
        return "no such dataset"
    name, shape = items[key]
    return f"{name} with per-slice shape {fmt_shape(shape)}" if shape else f"{name} (one value per slice)"


def _check_batchable(first: _FileInfo, other: _FileInfo) -> None:
    """Refuse ``other`` unless its items batch with those of ``first`` (same geometry for CT)."""
    if first.geometry is not None and other.geometry != first.geometry:
        found = repr(other.geometry)
        if found == repr(first.geometry):
            found += " with other values (angles or spacings)"
        raise PireconUserError(f"{other.path}: attrs/geometry: expected the geometry of {first.path}, "
                               f"{first.geometry!r}, found {found} (the files of one dataset share one geometry)")
    for key in list(first.items) + [k for k in other.items if k not in first.items]:
        a, b = first.items.get(key), other.items.get(key)
        if a is None or b is None or a[1] != b[1]:
            name = (a or b)[0]
            raise PireconUserError(
                f"{other.path}: {b[0] if b else name}: expected {_describe(first.items, key)} as in {first.path}, "
                f"found {_describe(other.items, key)} (the files of one dataset give items that batch together)")


def _check_values(infos: list[_FileInfo], progress: bool) -> None:
    """The value checks of :func:`~pirecon.data.validate.validate` on ``infos``' files, with a progress bar."""
    if not infos:
        return
    bar = None
    if progress:
        from tqdm.auto import tqdm

        try:
            rank = resolve_rank()[0]
        except ValueError:
            rank = 0
        total = sum(info.value_bytes for info in infos)
        bar = tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, delay=1.0, leave=False,
                   disable=None if rank == 0 else True,
                   desc=f"checking {len(infos)} file{'s' if len(infos) != 1 else ''}")
    try:
        for info in infos:
            validate(info.path, expect=_RAW_FORMATS, progress=bar.update if bar is not None else None)
            _VALUES_CHECKED.add(info.stat)
    finally:
        if bar is not None:
            bar.close()


# --------------------------------------------------------------------------
# On-the-fly simulation
# --------------------------------------------------------------------------

def _env_int(*names: str) -> int | None:
    for name in names:
        value = os.environ.get(name)
        if value not in (None, ""):
            try:
                return int(value)
            except ValueError:
                raise ValueError(f"{name}: expected an integer environment variable, found {value!r}") from None
    return None


def _rank_is_known() -> bool:
    """True when this process has a rank of its own: an initialised process group or ``RANK``/``LOCAL_RANK``."""
    dist = torch.distributed
    return (dist.is_available() and dist.is_initialized()) or _env_int("RANK", "LOCAL_RANK") is not None


def resolve_rank(rank: int | None = None, world_size: int | None = None) -> tuple[int, int | None]:
    """``(rank, world_size)``: the explicit values, else ``torch.distributed``'s if initialised, else the
    environment (``RANK`` / ``LOCAL_RANK``, ``WORLD_SIZE``), else ``(0, 1)``. ``world_size`` may be ``None``
    when only a rank is known."""
    dist = torch.distributed
    initialised = dist.is_available() and dist.is_initialized()
    if rank is None:
        rank = dist.get_rank() if initialised else _env_int("RANK", "LOCAL_RANK")
    if world_size is None:
        world_size = dist.get_world_size() if initialised else _env_int("WORLD_SIZE")
    if rank is None:
        rank = 0
        if world_size is None:
            world_size = 1
    if isinstance(rank, bool) or not isinstance(rank, int) or rank < 0:
        raise ValueError(f"rank: expected a non-negative integer, found {rank!r}")
    if world_size is not None:
        if isinstance(world_size, bool) or not isinstance(world_size, int) or world_size < 1:
            raise ValueError(f"world_size: expected a positive integer, found {world_size!r}")
        if rank >= world_size:
            raise ValueError(f"rank: expected a rank below world_size {world_size}, found {rank}")
    return rank, world_size


class SimulationDataset(IterableDataset):
    """An endless (or epoch-sized) stream of samples simulated on the fly (:class:`pirecon.data.simulate.Simulator`).

    Every sample is sample ``g`` of the simulator's training stream for ``seed``
    (``split_seed(seed, "train")``), a pure function of ``(seed, g)``. The
    validation, test and calibration streams of every seed are other inputs to
    the seeding (:func:`pirecon._validation.split_seed`), so no index, epoch,
    rank or worker count ever yields a held-out sample. The global index ``g`` is determined by
    ``(epoch, rank, worker, position)``, so different DataLoader workers and
    DDP ranks never produce the same sample, and the same seed reproduces the
    same samples:

    * each rank owns its own range of indices: without ``length``,
      ``g = epoch * 2**48 + rank * 2**40 + j`` for ``j = 0, 1, ...``; with
      ``length = L`` (samples per epoch over all ranks, like a sampler),
      each rank yields ``ceil(L / world_size)`` samples,
      ``g = epoch * P + rank * ceil(L / world_size) + j`` with ``P`` the
      per-epoch total. Rank 0 of a single process thus yields samples
      ``0, 1, ...``, the samples ``simulate(..., seed=seed)`` writes to a file.
    * within a rank, the rank's stream is cut in blocks of ``block_size``
      consecutive samples (simulated together), dealt round-robin to the
      DataLoader workers. The set of samples of a rank does not depend on
      the number of workers; only their order does.

    The rank and world size come from the arguments, else from
    ``torch.distributed`` if it is initialised when iteration starts, else
    from the environment (``RANK`` or ``LOCAL_RANK``, ``WORLD_SIZE``), else
    0 of 1. Call :meth:`set_epoch` (as :class:`ReconstructionDataModule`'s
    loaders do) to draw fresh samples each epoch.

    Parameters
    ----------
    modality, phantom : str
        As for :func:`pirecon.data.simulate.simulate`.
    seed : int
    length : int, optional
        Samples per epoch over all ranks; ``None`` for an endless stream.
    block_size : int
        Samples simulated at once.
    rank, world_size : int, optional
        Override the detected values.
    transform : callable, optional
        Applied to each item dict.
    **options
        The other keyword arguments of ``simulate`` (``image_size``,
        ``geometry``, ``num_angles``, ``noise``, ``coils``, ``acceleration``,
        ``oversample``, ``lesion_options``, ...).
    """

    def __init__(self, modality: str = "ct", phantom: str = "ellipses", seed: int = 0, *, length: int | None = None,
                 block_size: int = 8, rank: int | None = None, world_size: int | None = None,
                 transform: Callable[[dict], Any] | None = None, **options):
        from .simulate import Simulator

        if isinstance(seed, bool) or not isinstance(seed, int):
            raise ValueError(f"seed: expected an integer, found {seed!r}")
        if length is not None and (isinstance(length, bool) or not isinstance(length, int) or length < 1):
            raise ValueError(f"length: expected a positive integer or None, found {length!r}")
        if isinstance(block_size, bool) or not isinstance(block_size, int) or block_size < 1:
            raise ValueError(f"block_size: expected a positive integer, found {block_size!r}")
        if transform is not None and not callable(transform):
            raise ValueError(f"transform: expected a callable or None, found {type(transform).__name__}")
        if rank is not None or world_size is not None:
            resolve_rank(rank, world_size)  # check them now
        self.simulator = Simulator(modality, phantom, **options)
        self.modality = self.simulator.modality
        self.seed = seed
        self.length = length
        self.block_size = block_size
        self.rank = rank
        self.world_size = world_size
        self.transform = transform
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Draw the samples of epoch ``epoch`` on the next iteration."""
        if isinstance(epoch, bool) or not isinstance(epoch, int) or epoch < 0:
            raise ValueError(f"epoch: expected a non-negative integer, found {epoch!r}")
        self.epoch = epoch

    def __getstate__(self):
        # Resolve the rank in the process that sends the dataset to its DataLoader workers: spawned workers
        # see neither its torch.distributed state nor, always, its environment.
        # Only a real rank travels: a dataset pickled before the process group exists (ddp_spawn, a launcher)
        # must not freeze rank 0 of 1 into every rank's copy.
        state = self.__dict__.copy()
        state.pop("_detected", None)
        if (self.rank is None or self.world_size is None) and _rank_is_known():
            try:
                state["_detected"] = resolve_rank(self.rank, self.world_size)
            except ValueError:
                pass
        return state

    def _layout(self) -> tuple[int, int | None]:
        """``(first global index of this rank in this epoch, samples of this rank or None)``."""
        detected = self.__dict__.get("_detected")
        if detected is not None and self.rank is None and self.world_size is None and not _rank_is_known():
            rank, world = detected
        else:
            rank, world = resolve_rank(self.rank, self.world_size)
        if self.length is None:
            return self.epoch * 2**48 + rank * 2**40, None
        if world is None:
            raise ValueError(f"world_size: expected a world size with rank {rank} to split length={self.length} "
                             f"between ranks, found none (set WORLD_SIZE or pass world_size)")
        per_rank = math.ceil(self.length / world)
        return self.epoch * per_rank * world + rank * per_rank, per_rank

    def __len__(self) -> int:
        if self.length is None:
            raise TypeError("SimulationDataset without length is endless and has no len()")
        return self._layout()[1]

    def resume_after(self, batches: int, batch_size: int) -> None:
        """Make the next iteration skip the first ``batches`` batches of ``batch_size`` samples its DataLoader
        would yield (over all workers, in the loader's round-robin order), e.g. to resume mid-epoch."""
        for name, value in (("batches", batches), ("batch_size", batch_size)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"{name}: expected a non-negative integer, found {value!r}")
        self._resume = (batches, batch_size)

    def _blocks(self, worker: int, num_workers: int) -> Iterator[tuple[int, int]]:
        """``(first global index, size)`` of the blocks worker ``worker`` of ``num_workers`` simulates, in order."""
        base, count = self._layout()
        block = worker
        while count is None or block * self.block_size < count:
            start = block * self.block_size
            size = self.block_size if count is None else min(self.block_size, count - start)
            yield base + start, size
            block += num_workers

    def _role_and_skip(self, worker: int, num_workers: int) -> tuple[int, int]:
        """The worker whose stream this worker yields, and how many of its samples to skip.

        A DataLoader takes batch ``j`` from worker ``j % num_workers``; after skipping ``k`` batches the
        first batch must come from worker ``k % num_workers``, so worker ``w`` yields the stream of
        worker ``(w + k) % num_workers`` from its ``len(range(role, k, num_workers))``-th batch on.
        """
        batches, batch_size = self.__dict__.get("_resume") or (0, 1)
        role = (worker + batches) % num_workers
        return role, len(range(role, batches, num_workers)) * batch_size

    def global_indices(self, worker: int = 0, num_workers: int = 1) -> Iterator[int]:
        """The global sample indices worker ``worker`` of ``num_workers`` yields, in order."""
        role, skip = self._role_and_skip(worker, num_workers)
        for start, size in self._blocks(role, num_workers):
            for index in range(start, start + size):
                if skip:
                    skip -= 1
                    continue
                yield index

    def __iter__(self) -> Iterator[dict]:
        info = get_worker_info()
        worker, num_workers = (0, 1) if info is None else (info.id, info.num_workers)
        role, skip = self._role_and_skip(worker, num_workers)  # now, not at the first next()
        return self._samples(role, num_workers, skip)

    def _samples(self, role: int, num_workers: int, skip: int) -> Iterator[dict]:
        for start, size in self._blocks(role, num_workers):
            if skip >= size:
                skip -= size
                continue
            chunk = self.simulator.simulate(split_seed(self.seed, "train"), start, size)
            for i in range(skip, size):
                yield self._item(chunk, i, start + i)
            skip = 0

    def _item(self, chunk: dict, i: int, index: int) -> dict:
        item: dict[str, Any] = {}
        for key, value in chunk.items():
            if key == "labels":
                item["label"] = torch.tensor(int(value[i]), dtype=torch.int64)
            elif key == "mask":
                item["mask"] = torch.from_numpy(value[i].copy())  # (1, 1, W)
            else:
                item[key] = _item_tensor(key, value[i].copy())
        if self.modality == "mri":
            item["coil_maps"] = self.simulator.coil_maps.clone()
        item["index"] = index
        return self.transform(item) if self.transform is not None else item

    def __repr__(self) -> str:
        return (f"SimulationDataset(modality={self.modality!r}, phantom={self.simulator.phantom!r}, "
                f"seed={self.seed}, length={self.length}, block_size={self.block_size})")


# --------------------------------------------------------------------------
# Real-data adapters: LoDoPaB-CT parts, retrospective undersampling of fully sampled k-space
# --------------------------------------------------------------------------

class LoDoPaBDataset(Dataset):
    """A LoDoPaB-CT part as training items: ``sinogram (1, 1000, 513)``, ``ground_truth (1, 362, 362)``
    float32 and ``index``, in pirecon's units (``units="mm"``: line integrals in mm of the normalised
    attenuation images, consistent with :func:`pirecon.data.readers.lodopab_geometry`).

    Parameters
    ----------
    root : path
        Directory with the unzipped ``observation_{part}_NNN.hdf5`` / ``ground_truth_{part}_NNN.hdf5`` files.
    part : {"train", "validation", "test"}
    units : {"mm", "normalized", "attenuation"}
        As for :class:`pirecon.data.readers.LoDoPaBFiles`.
    """

    def __init__(self, root, part: str = "train", *, units: str = "mm"):
        from .readers import LoDoPaBFiles

        self.files = LoDoPaBFiles(root, part, units=units)

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> dict:
        observation, ground_truth = self.files[index]
        return {"sinogram": torch.from_numpy(observation)[None], "ground_truth": torch.from_numpy(ground_truth)[None],
                "index": int(index)}

    def __repr__(self) -> str:
        return f"LoDoPaBDataset(part={self.files.part!r}, samples={len(self)})"


class Undersample:
    """Transform of MRI items: retrospective Cartesian undersampling of fully sampled k-space.

    Items without a ``mask`` (fastMRI training files store fully sampled k-space) get the mask
    ``mask_function((H, W), seed=seed, start_index=g)`` with ``g`` the item's position
    (``file * 2**32 + slice``), so a slice always gets the same mask; ``kspace`` becomes the masked
    k-space and ``mask`` is added ``(1, 1, W)`` (or ``(1, H, W)`` for 2D masks). Items that
    already have a mask are returned unchanged.

    Parameters
    ----------
    mask_function : a :mod:`pirecon.mri.masks` mask (``RandomMask``, ``EquispacedMask``, ...)
    seed : int
    """

    def __init__(self, mask_function, seed: int = 0):
        if not callable(mask_function):
            raise ValueError(f"mask_function: expected a pirecon.mri mask, found {type(mask_function).__name__}")
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise ValueError(f"seed: expected an integer, found {seed!r}")
        self.mask_function, self.seed = mask_function, seed

    def __call__(self, item: dict) -> dict:
        if "mask" in item or "kspace" not in item:
            return item
        kspace = item["kspace"]
        position = item.get("file", 0) * 2**32 + item.get("slice", item.get("index", 0))
        mask = self.mask_function(tuple(kspace.shape[-2:]), seed=self.seed, start_index=position).mask[0]
        item = dict(item)
        item["kspace"] = kspace * mask
        item["mask"] = mask
        return item
