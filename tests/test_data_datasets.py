"""Datasets over raw HDF5 files and on-the-fly simulation, and the Lightning data module."""

import pickle

import h5py
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from pirecon.ct import ParallelBeam2D
from pirecon.data.datasets import H5SliceDataset, SimulationDataset
from pirecon.data.formats import read_ct_raw, read_mri_raw, write_ct_raw, write_mri_raw
from pirecon.data.simulate import simulate
from pirecon.data.validate import SpecError, main_validate
from pirecon.errors import PireconUserError
from pirecon.training.datamodule import ReconstructionDataModule

CT = dict(image_size=32, num_angles=16)
MRI = dict(modality="mri", image_size=32, coils=4)


@pytest.fixture(scope="module")
def ct_files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("ct")
    return [simulate(folder / f"part{i}.h5", n=n, seed=i, phantom="lesions", progress=False,
                     lesion_options={"radius_range": (0.1, 0.2)}, **CT)
            for i, n in enumerate((3, 5, 2))]


@pytest.fixture(scope="module")
def mri_file(tmp_path_factory):
    return simulate(tmp_path_factory.mktemp("mri") / "mri.h5", n=4, seed=0, noise="gaussian:0.01",
                    progress=False, **MRI)


def collect(loader):
    batches = list(loader)
    return {key: torch.cat([b[key] for b in batches]) for key in batches[0]}


# --------------------------------------------------------------------------
# H5SliceDataset
# --------------------------------------------------------------------------

def test_slices_across_files_equal_the_files(ct_files):
    ds = H5SliceDataset(ct_files)
    assert ds.kind == "ct" and len(ds) == 10 and ds.num_slices == (3, 5, 2)
    assert [ds.locate(i) for i in (0, 2, 3, 7, 8, 9, -1)] == [(0, 0), (0, 2), (1, 0), (1, 4), (2, 0), (2, 1), (2, 1)]
    with pytest.raises(IndexError):
        ds[10]
    raws = [read_ct_raw(p) for p in ct_files]
    for i in range(len(ds)):
        item = ds[i]
        f, s = ds.locate(i)
        assert (item["file"], item["slice"]) == (f, s)
        assert item["sinogram"].shape == (1, 16, raws[0].geometry.num_detectors)
        assert item["sinogram"].dtype == torch.float32 and item["segmentation"].dtype == torch.uint8
        assert np.array_equal(item["sinogram"][0].numpy(), raws[f].sinogram[s])
        assert np.array_equal(item["ground_truth"][0].numpy(), raws[f].ground_truth[s])
        assert np.array_equal(item["segmentation"][0].numpy(), raws[f].segmentation[s])
        assert int(item["label"]) == raws[f].labels[s]
    assert ds.geometry(1) == raws[1].geometry and ds.noise(0) == raws[0].noise


def test_mri_items(mri_file):
    ds = H5SliceDataset(mri_file, kind="mri")
    raw = read_mri_raw(mri_file)
    item = ds[2]
    assert item["kspace"].shape == (4, 32, 32) and item["kspace"].dtype == torch.complex64
    assert item["ground_truth"].shape == (1, 32, 32) and item["ground_truth"].dtype == torch.complex64
    assert item["coil_maps"].shape == (4, 32, 32) and item["reconstruction_rss"].shape == (1, 32, 32)
    assert item["mask"].shape == (1, 1, 32)
    assert np.array_equal(item["kspace"].numpy(), raw.kspace[2])
    assert np.array_equal(item["mask"].numpy(), raw.mask[2])
    assert np.array_equal(item["ground_truth"][0].numpy(), raw.ground_truth[2])
    assert np.array_equal(item["reconstruction_rss"][0].numpy(), raw.reconstruction_rss[2])
    batch = next(iter(DataLoader(ds, batch_size=4)))
    assert batch["kspace"].shape == (4, 4, 32, 32) and batch["mask"].shape == (4, 1, 1, 32)


@pytest.mark.parametrize("case", ["ct", "mri", "fastmri"])
def test_a_block_of_slices_is_the_collated_items(ct_files, mri_file, tmp_path, case):
    """read_slices reads each dataset once per block and gives what a DataLoader collates from the items."""
    from torch.utils.data import default_collate

    if case == "ct":
        ds, file_index = H5SliceDataset(ct_files), 1
    elif case == "mri":
        ds, file_index = H5SliceDataset(mri_file), 0
    else:  # single-coil k-space without maps or mask, complex128 as fastMRI stores it
        raw = read_mri_raw(mri_file)
        path = write_mri_raw(tmp_path / "single.h5", raw.kspace[:, 0].astype(np.complex128))
        ds, file_index = H5SliceDataset(path), 0
    offset = sum(ds.num_slices[:file_index])
    block = ds.read_slices(file_index, 1, 3)
    expected = default_collate([ds[offset + 1], ds[offset + 2]])
    assert sorted(block) == sorted(expected)
    for key, value in expected.items():
        assert block[key].dtype == value.dtype and torch.equal(block[key], value), key
    with pytest.raises(IndexError, match=r"^read_slices: expected 0 <= start < stop <= \d+, found start 2, stop 2$"):
        ds.read_slices(file_index, 2, 2)


def test_kind_mismatch_and_missing_file(ct_files, mri_file, tmp_path):
    with pytest.raises(SpecError) as err:
        H5SliceDataset([ct_files[0], mri_file])
    assert str(err.value) == (f"{mri_file}: attrs/pirecon_format: expected a CT raw file like {ct_files[0]}, "
                              "found 'mri_raw'")
    with pytest.raises(SpecError) as err:
        H5SliceDataset(mri_file, kind="ct")
    assert str(err.value) == f"{mri_file}: attrs/pirecon_format: expected a CT raw file (kind='ct'), found 'mri_raw'"
    with pytest.raises(FileNotFoundError) as err:
        H5SliceDataset([ct_files[0], tmp_path / "nope.h5"])
    assert str(err.value) == f"paths[1]: expected an existing HDF5 file, found no file at {str(tmp_path / 'nope.h5')!r}"


def test_workers_give_the_same_items_and_handles_are_not_pickled(ct_files):
    ds = H5SliceDataset(ct_files)
    ds[0]  # opens a file in this process before the workers start
    assert ds._handles and not pickle.loads(pickle.dumps(ds))._handles
    serial = collect(DataLoader(ds, batch_size=3, num_workers=0))
    parallel = collect(DataLoader(ds, batch_size=3, num_workers=2))
    assert serial.keys() == parallel.keys()
    for key in serial:
        assert torch.equal(serial[key], parallel[key]), key
    assert serial["file"].tolist() == [0, 0, 0, 1, 1, 1, 1, 1, 2, 2]


# --------------------------------------------------------------------------
# H5SliceDataset checks its files at setup, as ``pirecon check`` does
# --------------------------------------------------------------------------

GEOMETRY = ParallelBeam2D((16, 16), num_angles=8)  # sinogram (8, 25)
LINE_MASK = np.array([1, 0, 0, 1, 1, 1, 0, 1, 0, 0], dtype=np.float32)  # W = 10


def small_ct(path, geometry=GEOMETRY, n=3, **kwargs):
    r = np.random.default_rng(0)
    return write_ct_raw(path, r.random((n, *geometry.sinogram_shape), dtype=np.float32), geometry,
                        ground_truth=r.random((n, *geometry.image_shape), dtype=np.float32), **kwargs)


def small_mri(path, coils=4, shape=(12, 10), mask=LINE_MASK, maps=True, n=3):
    r = np.random.default_rng(1)
    k = (r.standard_normal((n, coils, *shape)) + 1j * r.standard_normal((n, coils, *shape))).astype(np.complex64)
    maps = (r.standard_normal((n, coils, *shape)) + 0j).astype(np.complex64) if maps else None
    return write_mri_raw(path, k * mask, mask=mask, coil_maps=maps)


def replace(f, name, data):
    del f[name]
    f.create_dataset(name, data=data)


def set_nan(f):
    data = f["sinogram"][()]
    data[2, 5, 7] = np.nan
    f["sinogram"][...] = data


BAD_FILES = {
    # name: (file maker, edit with h5py, the one line after "{path}: ")
    "sinogram of the wrong shape": (
        small_ct, lambda f: replace(f, "sinogram", np.zeros((3, 8, 24), np.float32)),
        "sinogram: expected shape (N, 8, 25) (geometry.sinogram_shape of attrs/geometry), found (3, 8, 24)"),
    "real-valued k-space": (
        small_mri, lambda f: replace(f, "kspace", np.zeros((3, 4, 12, 10), np.float32)),
        "kspace: expected dtype complex64, found dtype float32"),
    "NaN in the sinogram": (small_ct, set_nan, "sinogram: expected finite values, found NaN at index (2, 5, 7)"),
    "mask of the wrong length": (small_mri, lambda f: replace(f, "mask", np.ones(8, np.float32)),
                                 "mask: expected shape (10,) (the kspace width W), found (8,)"),
    "missing sinogram": (small_ct, lambda f: f.__delitem__("sinogram"),
                         "sinogram: expected a float32 (N, 8, 25) dataset, found no such dataset"),
    "kspace that is a group": (small_mri, lambda f: (f.__delitem__("kspace"), f.create_group("kspace")),
                               "kspace: expected a dataset, found a group"),
    "scalar kspace": (small_mri, lambda f: replace(f, "kspace", np.complex64(1)),
                      "kspace: expected shape (N, coils, H, W) or single-coil (N, H, W), found ()"),
    "bad geometry JSON": (
        small_ct, lambda f: f.attrs.__setitem__("geometry", '{"type": "parallel2d", "angles": [0.0,'),
        "attrs/geometry: expected a JSON object, found invalid JSON (Expecting value at character 38)"),
}


@pytest.mark.parametrize("case", list(BAD_FILES))
def test_a_bad_file_gets_the_error_of_pirecon_check(tmp_path, capsys, case):
    make, edit, message = BAD_FILES[case]
    good = make(tmp_path / "good.h5")
    bad = make(tmp_path / "bad.h5")
    with h5py.File(bad, "a") as f:
        edit(f)
    line = f"{bad}: {message}"
    assert main_validate(str(bad)) == 2  # pirecon check FILE
    assert capsys.readouterr().err == line + "\n"
    with pytest.raises(SpecError) as err:
        H5SliceDataset([good, bad])
    assert str(err.value) == line
    with pytest.raises(SpecError) as err:
        H5SliceDataset(bad, role="train")
    assert str(err.value) == line


def test_values_are_checked_at_setup_once_per_file_version(tmp_path):
    path = small_ct(tmp_path / "ct.h5")
    H5SliceDataset(path)
    assert len(H5SliceDataset(path)) == 3  # checked before: its values are not read again
    with h5py.File(path, "a") as f:  # a changed file is checked again
        set_nan(f)
    with pytest.raises(SpecError) as err:
        H5SliceDataset(path)
    assert str(err.value) == f"{path}: sinogram: expected finite values, found NaN at index (2, 5, 7)"


def test_files_with_different_geometries_are_refused(tmp_path):
    a = small_ct(tmp_path / "a.h5")
    other = ParallelBeam2D((16, 16), num_angles=10)
    b = small_ct(tmp_path / "b.h5", geometry=other)
    with pytest.raises(PireconUserError) as err:
        H5SliceDataset([a, b])
    assert str(err.value) == (f"{b}: attrs/geometry: expected the geometry of {a}, {GEOMETRY!r}, found {other!r} "
                              "(the files of one dataset share one geometry)")
    shifted = ParallelBeam2D((16, 16), angles=np.asarray(GEOMETRY.angles) + 0.01)  # same repr, other angles
    c = small_ct(tmp_path / "c.h5", geometry=shifted)
    with pytest.raises(PireconUserError) as err:
        H5SliceDataset([a, c])
    assert str(err.value) == (f"{c}: attrs/geometry: expected the geometry of {a}, {GEOMETRY!r}, found {shifted!r} "
                              "with other values (angles or spacings) (the files of one dataset share one geometry)")
    assert len(H5SliceDataset([a, small_ct(tmp_path / "d.h5", n=5)])) == 8  # slice counts may differ


def test_mri_files_must_batch_together_but_masks_may_differ(tmp_path):
    a = small_mri(tmp_path / "a.h5")
    other_mask = small_mri(tmp_path / "m.h5", mask=LINE_MASK[::-1].copy())
    ds = H5SliceDataset([a, other_mask])
    batch = next(iter(DataLoader(ds, batch_size=6)))
    assert batch["kspace"].shape == (6, 4, 12, 10) and batch["mask"].shape == (6, 1, 1, 10)
    assert not torch.equal(batch["mask"][0], batch["mask"][3])
    suffix = "(the files of one dataset give items that batch together)"
    cases = [
        (small_mri(tmp_path / "coils.h5", coils=2),
         "kspace: expected kspace with per-slice shape (4, 12, 10) as in {a}, "
         "found kspace with per-slice shape (2, 12, 10)"),
        (small_mri(tmp_path / "size.h5", shape=(12, 12), mask=np.ones(12, np.float32)),
         "kspace: expected kspace with per-slice shape (4, 12, 10) as in {a}, "
         "found kspace with per-slice shape (4, 12, 12)"),
        (small_mri(tmp_path / "nomaps.h5", maps=False),
         "coil_maps: expected coil_maps with per-slice shape (4, 12, 10) as in {a}, found no such dataset"),
        (small_mri(tmp_path / "2d.h5", mask=np.random.default_rng(0).random((3, 1, 12, 10)) > 0.5),
         "sampling_mask: expected mask with per-slice shape (1, 1, 10) as in {a}, "
         "found sampling_mask with per-slice shape (1, 12, 10)"),
    ]
    for b, message in cases:
        with pytest.raises(PireconUserError) as err:
            H5SliceDataset([a, b])
        assert str(err.value) == f"{b}: {message.format(a=a)} {suffix}"


def test_a_training_dataset_refuses_held_out_files(tmp_path):
    calibration = simulate(tmp_path / "calibration.h5", n=1, split="calibration", progress=False, image_size=16,
                           num_angles=8)
    with pytest.raises(PireconUserError) as err:
        H5SliceDataset(calibration, role="train")
    assert str(err.value) == (f"{calibration}: attrs/split: expected a file that may train a model (split 'train', "
                              "or no split), found split 'calibration' (held out from training)")
    for split in ("validation", "test", "panel"):
        path = small_ct(tmp_path / f"{split}.h5", attrs={"split": split})
        with pytest.raises(PireconUserError, match=f"found split '{split}' \\(held out from training\\)$"):
            H5SliceDataset([small_ct(tmp_path / "train.h5", attrs={"split": "train"}), path], role="train")
        for role in ("val", "test", "predict", None):  # evaluation reads held-out files
            assert len(H5SliceDataset(path, role=role)) == 3
    for split in ("train", None):
        path = small_ct(tmp_path / f"ok-{split}.h5", attrs={} if split is None else {"split": split})
        assert len(H5SliceDataset(path, role="train")) == 3
    with pytest.raises(ValueError) as err:
        H5SliceDataset(path, role="fit")
    assert str(err.value) == "role: expected one of 'train', 'val', 'test', 'predict' or None, found 'fit'"


# --------------------------------------------------------------------------
# SimulationDataset
# --------------------------------------------------------------------------

def test_simulation_workers_are_distinct_and_reproducible(tmp_path):
    ds = SimulationDataset("ct", "ellipses", seed=4, length=12, block_size=2, noise="none", **CT)
    assert len(ds) == 12
    parallel = collect(DataLoader(ds, batch_size=4, num_workers=2))
    assert sorted(parallel["index"].tolist()) == list(range(12))
    sinograms = parallel["sinogram"].flatten(1)
    assert torch.cdist(sinograms, sinograms).add(torch.eye(12) * 1e9).min() > 0  # no two samples alike
    again = collect(DataLoader(ds, batch_size=4, num_workers=2))
    assert torch.equal(again["index"], parallel["index"]) and torch.equal(again["sinogram"], parallel["sinogram"])
    # the same samples as without workers, and as the file simulate() writes with that seed
    serial = collect(DataLoader(ds, batch_size=4, num_workers=0))
    order = parallel["index"].argsort()
    assert torch.equal(serial["index"], torch.arange(12))
    assert torch.equal(serial["sinogram"], parallel["sinogram"][order])
    raw = read_ct_raw(simulate(tmp_path / "same.h5", n=12, seed=4, noise="none", progress=False, **CT))
    assert np.array_equal(serial["ground_truth"][:, 0].numpy(), raw.ground_truth)
    # the projector's float32 sums may round differently for another number of samples at once
    np.testing.assert_allclose(serial["sinogram"][:, 0].numpy(), raw.sinogram, rtol=0, atol=1e-5)
    # a new epoch draws new samples
    ds.set_epoch(1)
    assert set(collect(DataLoader(ds, batch_size=4))["index"].tolist()).isdisjoint(range(12))


def test_ddp_ranks_draw_distinct_samples(monkeypatch):
    def first(ds, n):
        return [item for _, item in zip(range(n), ds)]

    mri = dict(image_size=32, coils=4)
    ranks = [SimulationDataset("mri", "ellipses", seed=0, rank=r, world_size=2, block_size=2, **mri) for r in (0, 1)]
    samples = [first(ds, 4) for ds in ranks]
    assert {s["index"] for s in samples[0]}.isdisjoint(s["index"] for s in samples[1])
    for a in samples[0]:
        for b in samples[1]:
            assert not torch.equal(a["kspace"], b["kspace"])
    # the rank can come from the environment (as torchrun sets it), with the same result
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    from_env = first(SimulationDataset("mri", "ellipses", seed=0, block_size=2, **mri), 4)
    assert all(torch.equal(a["kspace"], b["kspace"]) for a, b in zip(from_env, samples[1]))
    # epoch-sized: the ranks split the epoch evenly and disjointly
    finite = [SimulationDataset("ct", seed=0, length=7, rank=r, world_size=2, block_size=3, noise="none", **CT)
              for r in (0, 1)]
    indices = [[item["index"] for item in ds] for ds in finite]
    assert [len(i) for i in indices] == [4, 4] == [len(ds) for ds in finite]
    assert set(indices[0]).isdisjoint(indices[1])
    with pytest.raises(ValueError, match="rank: expected a rank below world_size 2, found 2"):
        SimulationDataset("ct", rank=2, world_size=2, **CT)


def test_simulation_items_match_the_file_items(ct_files):
    file_item = H5SliceDataset(ct_files[0])[0]
    sim_item = next(iter(SimulationDataset("ct", "lesions", seed=0, lesion_options={"radius_range": (0.1, 0.2)},
                                           **CT)))
    assert set(file_item) - {"file", "slice"} == set(sim_item) - {"index"}
    for key in ("ground_truth", "segmentation", "label"):
        assert torch.equal(file_item[key], sim_item[key]), key
    # the projector's float32 sums may round differently for another number of samples at once
    torch.testing.assert_close(file_item["sinogram"], sim_item["sinogram"], rtol=0, atol=1e-5)


# --------------------------------------------------------------------------
# ReconstructionDataModule
# --------------------------------------------------------------------------

def test_datamodule_from_files(ct_files):
    folder = ct_files[0].parent
    dm = ReconstructionDataModule(train=str(folder / "part*.h5"), val=[ct_files[2]], test=ct_files[1],
                                  batch_size=4)
    dm.setup("fit")
    assert len(dm.train_dataset) == 10 and len(dm.val_dataset) == 2
    batch = next(iter(dm.train_dataloader()))
    assert batch["sinogram"].shape == (4, 1, 16, 47) and batch["ground_truth"].shape == (4, 1, 32, 32)
    assert next(iter(dm.val_dataloader()))["label"].shape == (2,)
    dm.setup("test")
    assert len(next(iter(dm.test_dataloader()))["slice"]) == 4


def test_datamodule_missing_paths(ct_files, tmp_path):
    missing = str(tmp_path / "missing.h5")
    dm = ReconstructionDataModule(train=[ct_files[0], missing], val=ct_files[1])
    with pytest.raises(ValueError) as err:
        dm.setup("fit")
    assert str(err.value) == f"train: expected an existing HDF5 file, found no file at {missing!r}"
    pattern = str(tmp_path / "nothing_*.h5")
    with pytest.raises(ValueError) as err:
        ReconstructionDataModule(test=pattern).setup("test")
    assert str(err.value) == f"test: expected files matching the pattern {pattern!r}, found none"


def test_datamodule_with_simulation_and_a_fixed_validation_file(tmp_path):
    import pytorch_lightning as pl

    val_file = tmp_path / "val.h5"
    dm = ReconstructionDataModule(
        simulation=dict(modality="ct", phantom="ellipses", seed=0, length=8, block_size=4, noise="none", **CT),
        val_simulation=dict(out=str(val_file), n=4), batch_size=4, num_workers=0)
    with pytest.raises(ValueError, match="^val_simulation\\['out'\\]: expected an existing HDF5 file"):
        dm.setup("fit")  # prepare_data has not written it yet
    dm.prepare_data()
    assert val_file.exists()
    dm.setup("fit")
    assert read_ct_raw(val_file).sinogram.shape == (4, 16, 47)

    seen: dict[int, list[int]] = {}

    class Probe(pl.LightningModule):
        def __init__(self):
            super().__init__()
            self.layer = torch.nn.Linear(1, 1)

        def training_step(self, batch, batch_idx):
            seen.setdefault(self.current_epoch, []).extend(batch["index"].tolist())
            return self.layer(batch["sinogram"].mean((1, 2, 3))[:, None]).mean()

        def validation_step(self, batch, batch_idx):
            assert batch["sinogram"].shape == (4, 1, 16, 47)

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.0)

    trainer = pl.Trainer(max_epochs=2, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0)
    trainer.fit(Probe(), datamodule=dm)
    assert sorted(seen[0]) == list(range(8))
    assert len(seen[1]) == 8 and set(seen[1]).isdisjoint(seen[0])  # fresh samples in the second epoch


def test_rank_is_not_frozen_by_pickling_before_the_process_group(monkeypatch):
    """A dataset pickled where no rank is known (a launcher, ddp_spawn) takes the rank of the process it lands in."""
    import pickle

    from pirecon.data.datasets import SimulationDataset

    for name in ("RANK", "LOCAL_RANK", "WORLD_SIZE"):
        monkeypatch.delenv(name, raising=False)
    dataset = SimulationDataset("ct", "ellipses", seed=0, length=8, image_size=32, num_angles=8)
    payload = pickle.dumps(dataset)
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    landed = pickle.loads(payload)
    assert landed._layout() == (4, 4)  # rank 1 of 2 owns indices 4..7
    monkeypatch.setenv("RANK", "0")
    assert pickle.loads(payload)._layout() == (0, 4)
