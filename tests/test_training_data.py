"""Real-data training inputs: LoDoPaB-CT parts and fastMRI files undersampled on the fly, up to a training step."""

import numpy as np
import pytest
import torch

from pirecon.training.datamodule import ReconstructionDataModule
from pirecon.data.datasets import H5SliceDataset
from pirecon.data.readers import LoDoPaBFiles, lodopab_geometry
from pirecon.training import ReconstructionModule

from test_data_formats import fastmri_file
from test_data_readers import write_lodopab


@pytest.fixture(scope="module")
def lodopab(tmp_path_factory):
    root = tmp_path_factory.mktemp("lodopab")
    write_lodopab(root, "train", [2, 1])
    write_lodopab(root, "validation", [1], seed=1)
    write_lodopab(root, "test", [1], seed=2)
    return root


def test_lodopab_parts_become_train_val_test(lodopab):
    dm = ReconstructionDataModule(lodopab={"root": str(lodopab)}, batch_size=2)
    dm.setup(None)
    assert (len(dm.train_dataset), len(dm.val_dataset), len(dm.test_dataset)) == (3, 1, 1)
    reference = LoDoPaBFiles(lodopab, "train", units="mm")
    batch = next(iter(dm.val_dataloader()))
    assert batch["sinogram"].shape == (1, 1, 1000, 513) and batch["ground_truth"].shape == (1, 1, 362, 362)
    item = dm.train_dataset[2]
    np.testing.assert_array_equal(item["sinogram"][0].numpy(), reference[2][0])
    np.testing.assert_array_equal(item["ground_truth"][0].numpy(), reference[2][1])
    assert dm.physics_description() == ("ct", lodopab_geometry(), None)


def test_lodopab_root_must_exist(tmp_path):
    with pytest.raises(ValueError, match=r"lodopab.root: expected a directory with the LoDoPaB-CT files, "
                                         r"found no directory at"):
        ReconstructionDataModule(lodopab={"root": str(tmp_path / "missing")})


@pytest.fixture(scope="module")
def fastmri(tmp_path_factory):
    return fastmri_file(tmp_path_factory.mktemp("fastmri") / "file1000001.h5")


UNDERSAMPLING = {"mask": "equispaced", "center_fractions": [0.2], "accelerations": [2], "seed": 3}


def test_fully_sampled_files_are_undersampled_per_slice(fastmri):
    dm = ReconstructionDataModule(train=str(fastmri), undersampling=UNDERSAMPLING, kind="mri", batch_size=1)
    dm.setup("fit")
    raw = H5SliceDataset(fastmri)
    for index in range(len(raw)):
        item, full = dm.train_dataset[index], raw[index]
        mask = item["mask"]
        assert mask.shape == (1, 1, full["kspace"].shape[-1])
        assert 0 < float(mask.mean()) < 1
        assert torch.equal(item["kspace"], full["kspace"] * mask)
        assert torch.equal(dm.train_dataset[index]["mask"], mask)  # a slice always gets the same mask


def test_bad_undersampling():
    with pytest.raises(ValueError, match=r"undersampling.mask: expected 'random' or 'equispaced', found 'radial'"):
        ReconstructionDataModule(simulation={"modality": "mri"}, undersampling={"mask": "radial"})


def test_varnet_trains_on_fastmri_files_against_the_rss_target(fastmri, tmp_path):
    """Uniform physics maps (VarNet estimates its own), the loss on the magnitude cropped to reconstruction_rss."""
    import pytorch_lightning as pl

    dm = ReconstructionDataModule(train=str(fastmri), val=str(fastmri), undersampling=UNDERSAMPLING, kind="mri",
                                  batch_size=2)
    spec = {"class_path": "varnet", "init_args": {"cascades": 2, "channels": 4, "sens_channels": 2, "depth": 1,
                                                  "sens_depth": 1}}
    module = ReconstructionModule(spec, loss={"mse": 1.0, "ssim": 0.1}, missing_coil_maps="uniform",
                                  log_images_every_n_epochs=0)
    trainer = pl.Trainer(accelerator="cpu", max_steps=2, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                         default_root_dir=tmp_path)
    trainer.fit(module, datamodule=dm)
    metrics = trainer.validate(module, datamodule=dm, verbose=False)[0]
    assert np.isfinite(metrics["val/psnr"]) and np.isfinite(metrics["val/ssim"])
    batch = next(iter(dm.train_dataloader()))
    physics = module.batch_physics(batch)
    assert physics.metadata["coil_maps_source"] == "uniform"
    assert torch.allclose(physics.operator.coil_maps.abs(), torch.full_like(physics.operator.coil_maps.abs(), 0.5))
