"""``ReconstructionDataModule``: train / val / test loaders from raw HDF5 files or on-the-fly simulation.

    # files (paths or glob patterns)
    dm = ReconstructionDataModule(train="data/train_*.h5", val="data/val.h5", batch_size=8, num_workers=4)

    # endless simulated training data, a fixed simulated validation file written once by prepare_data()
    dm = ReconstructionDataModule(
        simulation={"modality": "ct", "phantom": "ellipses", "seed": 0, "length": 10_000},
        val_simulation={"out": "data/val.h5", "n": 64},   # the seed's validation split; other options as simulation's
        batch_size=8)

File datasets are :class:`H5SliceDataset` (map-style: Lightning adds a
``DistributedSampler`` under DDP); simulated training data is a
:class:`SimulationDataset` whose loader calls ``set_epoch`` with the
trainer's epoch at the start of each epoch, so every epoch sees fresh samples
and a resumed run the same ones as an uninterrupted run.
"""

from __future__ import annotations

import glob
import os
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from torch.utils.data import DataLoader, DistributedSampler

from ..data.acquisition import check_same_physics, describe_physics
from ..data.datasets import H5SliceDataset, LoDoPaBDataset, SimulationDataset, Undersample, resolve_rank
from ..errors import ConfigError

__all__ = ["ReconstructionDataModule", "ResumableSampler", "resolve_files"]

_SIMULATE_ONLY = ("out", "n", "chunk_size", "progress")
_DATASET_ONLY = ("length", "block_size", "rank", "world_size", "transform")


def resolve_files(spec, name: str) -> list[Path]:
    """Paths from a path, a glob pattern or a list of them (patterns sorted); ``ValueError`` naming what is missing."""
    if isinstance(spec, (str, os.PathLike)):
        spec = [spec]
    if not isinstance(spec, (list, tuple)) or not spec:
        raise ConfigError(f"{name}: expected a path, a glob pattern or a non-empty list of them, found {spec!r}")
    out: list[Path] = []
    for entry in spec:
        if not isinstance(entry, (str, os.PathLike)):
            raise ConfigError(f"{name}: expected paths or glob patterns, found {type(entry).__name__}")
        text = os.fspath(entry)
        if glob.has_magic(text):
            matches = sorted(glob.glob(os.path.expanduser(text)))
            if not matches:
                raise ConfigError(f"{name}: expected files matching the pattern {text!r}, found none")
            out.extend(Path(m) for m in matches)
        else:
            path = Path(text).expanduser()
            if not path.is_file():
                raise ConfigError(f"{name}: expected an existing HDF5 file, found no file at {text!r}")
            out.append(path)
    return out


def _undersampling(options: dict) -> Undersample:
    from ..mri import EquispacedMask, RandomMask

    if not isinstance(options, dict) or set(options) - {"mask", "center_fractions", "accelerations", "seed"}:
        raise ConfigError(f"undersampling: expected keys among 'mask', 'center_fractions', 'accelerations', 'seed', "
                         f"found {options!r}")
    kinds = {"random": RandomMask, "equispaced": EquispacedMask}
    kind = options.get("mask", "random")
    if kind not in kinds:
        raise ConfigError(f"undersampling.mask: expected 'random' or 'equispaced', found {kind!r}")
    mask = kinds[kind](options.get("center_fractions", [0.08]), options.get("accelerations", [4]))
    return Undersample(mask, options.get("seed", 0))


class ResumableSampler(DistributedSampler):
    """A ``DistributedSampler`` (shuffled per epoch from ``seed``, split between ranks) that can start
    mid-epoch: ``skip`` samples of this rank's order are left out of the next pass, then it is reset.

    Being a ``DistributedSampler``, Lightning keeps it under DDP instead of inserting its own.
    """

    def __init__(self, dataset, *, shuffle: bool, seed: int = 0, num_replicas: int = 1, rank: int = 0):
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=shuffle, seed=seed, drop_last=False)
        self.skip = 0

    def __iter__(self):
        indices = list(super().__iter__())
        skip, self.skip = self.skip, 0
        return iter(indices[skip:])

    def __len__(self) -> int:
        return super().__len__() - self.skip


class _TrainLoader(DataLoader):
    """The training loader: tells its data the epoch before each pass, and resumes mid-epoch.

    Lightning stores ``state_dict()`` in checkpoints and calls ``load_state_dict`` when a run resumes;
    the next pass then skips the batches the interrupted run had already trained on, so a resumed
    run sees exactly the samples of an uninterrupted one (simulated streams are skipped without
    simulating them; file orders are reshuffled from the same epoch seed and cut).
    """

    def __init__(self, *args, epoch_fn=None, done_fn=None, **kwargs):
        super().__init__(*args, **kwargs)
        self._epoch_fn = epoch_fn
        self._done_fn = done_fn
        self._passes = 0
        self._resume: dict | None = None

    def state_dict(self) -> dict:
        epoch = self._epoch_fn() if self._epoch_fn is not None else self._passes
        return {"epoch": int(epoch), "batches": int(self._done_fn()) if self._done_fn is not None else 0}

    def load_state_dict(self, state: dict) -> None:
        self._resume = dict(state)

    def __iter__(self):
        epoch = self._epoch_fn() if self._epoch_fn is not None else None
        epoch = self._passes if epoch is None else int(epoch)
        skip = 0
        if self._resume is not None and self._resume.get("epoch") == epoch:
            skip = int(self._resume.get("batches", 0))
        self._resume = None
        self._passes += 1
        if isinstance(self.dataset, SimulationDataset):
            self.dataset.set_epoch(epoch)
            self.dataset.resume_after(skip, self.batch_size)
        elif isinstance(self.sampler, DistributedSampler):
            self.sampler.set_epoch(epoch)
            self.sampler.skip = skip * self.batch_size
        iterator = super().__iter__()
        if isinstance(self.dataset, SimulationDataset):
            self.dataset.resume_after(0, self.batch_size)  # workers and the iterator hold their copy
        return iterator


class ReconstructionDataModule(pl.LightningDataModule):
    """Loaders of raw data for reconstruction training.

    Parameters
    ----------
    train, val, test, predict : path, glob pattern or list of them, optional
        Raw HDF5 files (``ct_raw``, ``mri_raw`` or fastMRI), read slice by slice. ``predict`` files
        are reconstructed by ``pirecon predict``.
    simulation : dict, optional
        Keyword arguments of :class:`SimulationDataset` (``modality``,
        ``phantom``, ``seed``, ``length``, ``block_size``, and ``simulate``
        options); used for training when ``train`` is not given.
    val_simulation : dict, optional
        Keyword arguments of :func:`pirecon.data.simulate.simulate` for a
        fixed validation file, with ``out`` (the file) and ``n`` required;
        options not given are taken from ``simulation``, and ``split`` defaults
        to ``"validation"``: the training seed's validation stream, which no
        training stream reaches (``"train"`` is refused). ``prepare_data``
        writes the file if it does not exist yet; it is then the validation
        set (unless ``val`` is given too, then both are used).
    batch_size, num_workers, pin_memory :
        Of every loader.
    kind : {"ct", "mri"}, optional
        Expected kind of the files.
    seed : int
        Seed of the training files' shuffled order (epoch ``e`` uses ``seed + e``).
    lodopab : dict, optional
        ``{"root": DIR, "units": "mm"}``: LoDoPaB-CT's train / validation / test parts in ``DIR``
        (:class:`LoDoPaBDataset`) for the stages without files of their own.
    undersampling : dict, optional
        Retrospective undersampling of fully sampled MRI files (fastMRI training data):
        ``{"mask": "random" | "equispaced", "center_fractions": [0.08], "accelerations": [4], "seed": 0}``
        (:class:`Undersample`; files that store a mask keep it).
    """

    def __init__(self, train: str | list[str] | None = None, val: str | list[str] | None = None,
                 test: str | list[str] | None = None, predict: str | list[str] | None = None, *,
                 simulation: dict | None = None, val_simulation: dict | None = None, batch_size: int = 8,
                 num_workers: int = 0, pin_memory: bool = False, kind: str | None = None, seed: int = 0,
                 lodopab: dict | None = None, undersampling: dict | None = None):
        super().__init__()
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ConfigError(f"batch_size: expected a positive integer, found {batch_size!r}")
        if isinstance(num_workers, bool) or not isinstance(num_workers, int) or num_workers < 0:
            raise ConfigError(f"num_workers: expected a non-negative integer, found {num_workers!r}")
        if simulation is not None and not isinstance(simulation, dict):
            raise ConfigError(f"simulation: expected a dict of SimulationDataset arguments, found {simulation!r}")
        if val_simulation is not None:
            if not isinstance(val_simulation, dict):
                raise ConfigError(f"val_simulation: expected a dict of simulate() arguments, found {val_simulation!r}")
            missing = [k for k in ("out", "n") if k not in val_simulation]
            if missing:
                raise ConfigError(f"val_simulation: expected the keys 'out' and 'n', found no {missing[0]!r}")
        if lodopab is not None and (not isinstance(lodopab, dict) or "root" not in lodopab
                                    or set(lodopab) - {"root", "units"}):
            raise ConfigError(f"lodopab: expected {{'root': DIR, 'units': 'mm'}}, found {lodopab!r}")
        if lodopab is not None and not Path(lodopab["root"]).expanduser().is_dir():
            raise ConfigError(f"lodopab.root: expected a directory with the LoDoPaB-CT files, "
                             f"found no directory at {str(lodopab['root'])!r}")
        self.lodopab = None if lodopab is None else dict(lodopab)
        self.transform = None if undersampling is None else _undersampling(undersampling)
        if all(v is None for v in (train, val, test, predict, simulation, val_simulation, lodopab)):
            raise ConfigError("ReconstructionDataModule: expected train/val/test/predict files or a simulation, "
                             "found none")
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise ConfigError(f"seed: expected an integer, found {seed!r}")
        self.train_files, self.val_files, self.test_files, self.predict_files = train, val, test, predict
        self.seed = seed
        self.simulation = dict(simulation) if simulation is not None else None
        self.val_simulation = dict(val_simulation) if val_simulation is not None else None
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.pin_memory = bool(pin_memory)
        self.kind = kind
        self.train_dataset = self.val_dataset = self.test_dataset = self.predict_dataset = None

    # ---- data preparation (rank 0) --------------------------------------

    def _val_simulation_arguments(self) -> dict[str, Any]:
        args = {k: v for k, v in (self.simulation or {}).items() if k not in _DATASET_ONLY}
        args.update(self.val_simulation)
        args.setdefault("split", "validation")  # the training seed's validation stream, disjoint from training
        if args["split"] == "train":
            raise ConfigError("val_simulation: expected a held-out split ('validation', 'test', 'calibration' or "
                             "'panel'), found 'train'")
        args.setdefault("progress", False)
        return args

    def prepare_data(self) -> None:
        """Write the validation file of ``val_simulation`` unless it exists (Lightning runs this once per node)."""
        if self.val_simulation is None:
            return
        args = self._val_simulation_arguments()
        out = Path(args.pop("out"))
        if not out.exists():
            from ..data.simulate import simulate

            simulate(out, **args)

    # ---- setup ----------------------------------------------------------

    def _files(self, stage: str) -> list[Path] | None:
        spec = {"train": self.train_files, "val": self.val_files, "test": self.test_files,
                "predict": self.predict_files}[stage]
        files = resolve_files(spec, stage) if spec is not None else []
        if stage == "val" and self.val_simulation is not None:
            files += resolve_files(self.val_simulation["out"], "val_simulation['out']")
        return files or None

    def setup(self, stage: str | None = None) -> None:
        """Build the datasets of ``stage`` ("fit", "validate", "test", or None for all); missing files raise
        ``ValueError`` naming the path."""
        if stage not in (None, "fit", "validate", "test", "predict"):
            raise ValueError(f"stage: expected 'fit', 'validate', 'test', 'predict' or None, found {stage!r}")
        if stage in (None, "fit"):
            files = self._files("train")
            if files is not None:
                self.train_dataset = H5SliceDataset(files, kind=self.kind, transform=self.transform, role="train")
            elif self.simulation is not None:
                self.train_dataset = SimulationDataset(**self.simulation)
            elif self.lodopab is not None:
                self.train_dataset = self._lodopab("train")
            elif stage == "fit":
                raise ConfigError("train: expected training files or a simulation, found neither")
        if stage in (None, "fit", "validate"):
            self.val_dataset = self._evaluation_dataset("val", "validation")
            if self.val_dataset is None and stage == "validate":
                raise ConfigError("val: expected validation files or val_simulation, found neither")
        if stage in (None, "test"):
            self.test_dataset = self._evaluation_dataset("test", "test")
            if self.test_dataset is None and stage == "test":
                raise ConfigError("test: expected test files, found none")
        if stage == "predict":
            files = self._files("predict")
            if files is None:
                raise ConfigError("predict: expected raw files to reconstruct (data.predict), found none")
            self.predict_dataset = H5SliceDataset(files, kind=self.kind, transform=self.transform, role="predict")

    def _evaluation_dataset(self, stage: str, lodopab_part: str):
        """The stage's files, else its LoDoPaB-CT part, else ``None``."""
        files = self._files(stage)
        if files is not None:
            return H5SliceDataset(files, kind=self.kind, transform=self.transform, role=stage)
        return self._lodopab(lodopab_part) if self.lodopab is not None else None

    def _lodopab(self, part: str):
        return LoDoPaBDataset(self.lodopab["root"], part, units=self.lodopab.get("units", "mm"))

    # ---- loaders --------------------------------------------------------

    def _current_epoch(self):
        trainer = getattr(self, "trainer", None)
        return None if trainer is None else trainer.current_epoch

    def _batches_done(self) -> int:
        """Training batches of the current epoch whose step has run (what a resumed run skips)."""
        trainer = getattr(self, "trainer", None)
        if trainer is None:
            return 0
        return int(trainer.fit_loop.epoch_loop.batch_progress.current.processed)

    def _rank(self) -> tuple[int, int]:
        trainer = getattr(self, "trainer", None)
        if trainer is not None:
            return trainer.global_rank, trainer.world_size
        rank, world = resolve_rank()
        return rank, world or 1

    def _loader(self, dataset, *, train: bool = False) -> DataLoader:
        options = dict(batch_size=self.batch_size, num_workers=self.num_workers, pin_memory=self.pin_memory)
        if not train:  # validation, test and prediction read files in order
            return DataLoader(dataset, shuffle=False, **options)
        if isinstance(dataset, SimulationDataset):
            return _TrainLoader(dataset, epoch_fn=self._current_epoch, done_fn=self._batches_done, **options)
        rank, world = self._rank()
        sampler = ResumableSampler(dataset, shuffle=True, seed=self.seed, num_replicas=world, rank=rank)
        return _TrainLoader(dataset, sampler=sampler, epoch_fn=self._current_epoch, done_fn=self._batches_done,
                            **options)

    def _need(self, dataset, name: str):
        if dataset is None:
            raise ValueError(f"{name}: no dataset; give {name} files (and call setup) before asking for its loader")
        return dataset

    def train_dataloader(self) -> DataLoader:
        return self._loader(self._need(self.train_dataset, "train"), train=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self._need(self.val_dataset, "val"))

    def test_dataloader(self) -> DataLoader:
        return self._loader(self._need(self.test_dataset, "test"))

    def predict_dataloader(self) -> DataLoader:
        return self._loader(self._need(self.predict_dataset, "predict"))

    # ---- physics ----------------------------------------------------------

    def physics_description(self) -> tuple[str, object, object]:
        """``(modality, geometry, noise)`` of the data: from the files (train, val, test, predict; the
        first file of each, which must all agree: a dataset's own files are checked when it is built),
        else from the simulation. CT data need the geometry; MRI physics comes per batch."""
        found = None
        for stage, spec in (("train", self.train_files), ("val", self.val_files), ("test", self.test_files),
                            ("predict", self.predict_files)):
            if spec is None:
                continue
            first = resolve_files(spec, stage)[0]
            dataset = H5SliceDataset([first], kind=self.kind, progress=False)
            physics = ("ct", dataset.geometry(0), dataset.noise(0)) if dataset.kind == "ct" else ("mri", None, None)
            if found is None:
                found = physics, first
            else:
                check_same_physics(describe_physics(*found[0]), describe_physics(*physics),
                                   stored_name=str(found[1]), found_name=str(first))
        if found is not None:
            return found[0]
        if self.lodopab is not None:
            from ..data.readers import lodopab_geometry

            return "ct", lodopab_geometry(), None
        options = self.simulation or self.val_simulation
        if options is None:
            raise ConfigError("data: expected files or a simulation to take the physics from, found neither")
        from ..data.simulate import Simulator

        simulator = Simulator(**{k: v for k, v in options.items()
                                 if k not in _SIMULATE_ONLY + _DATASET_ONLY + ("seed",)})
        if simulator.modality == "ct":
            return "ct", simulator.geometry, simulator.noise
        return "mri", None, None
