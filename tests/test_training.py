"""The Lightning module, losses, batch physics, resumable loaders, checkpoints and the prediction writer."""

import math

import numpy as np
import pytest
import pytorch_lightning as pl
import torch

from pirecon.training.datamodule import ReconstructionDataModule, ResumableSampler
from pirecon.data.datasets import H5SliceDataset, SimulationDataset
from pirecon.data.simulate import simulate
from pirecon.training import (BatchPhysics, ReconstructionLoss, ReconstructionModule, center_crop, load_checkpoint,
                              load_module, nmse, target_and_prediction)
from pirecon.training.checkpoints import AtomicCheckpointIO
from pirecon.training.losses import ssim_per_image
from pirecon.models.registry import build_model

TINY_LPD = {"class_path": "lpd", "init_args": {"iterations": 2, "hidden": 8}}
CT_SIM = {"modality": "ct", "phantom": "ellipses", "image_size": 32, "num_angles": 10, "seed": 0}


def tiny_trainer(tmp_path, **options):
    defaults = dict(accelerator="cpu", devices=1, max_steps=4, logger=False, enable_progress_bar=False,
                    enable_model_summary=False, enable_checkpointing=False, default_root_dir=tmp_path,
                    limit_val_batches=1, num_sanity_val_steps=0)
    defaults.update(options)
    return pl.Trainer(**defaults)


# ---- losses and metrics ------------------------------------------------------

class TestLoss:
    def test_weighted_sum(self):
        torch.manual_seed(0)
        x, t = torch.rand(2, 1, 16, 16), torch.rand(2, 1, 16, 16)
        loss = ReconstructionLoss(mse=2.0, l1=0.5, ssim=0.25)(x, t)
        expected = 2 * ((x - t) ** 2).mean() + 0.5 * (x - t).abs().mean() + 0.25 * (1 - ssim_per_image(x, t)).mean()
        assert torch.allclose(loss, expected)

    def test_complex_mse_is_squared_modulus(self):
        x = torch.zeros(1, 1, 4, 4, dtype=torch.complex64)
        t = torch.full((1, 1, 4, 4), 3 + 4j, dtype=torch.complex64)
        assert float(ReconstructionLoss()(x, t)) == pytest.approx(25.0)

    def test_ssim_of_equal_images_is_zero_loss(self):
        x = torch.rand(2, 1, 32, 32)
        assert float(ReconstructionLoss(mse=0, ssim=1)(x, x)) == pytest.approx(0.0, abs=1e-5)

    def test_ssim_is_scale_invariant_per_image(self):
        torch.manual_seed(1)
        x, t = torch.rand(1, 1, 32, 32), torch.rand(1, 1, 32, 32)
        assert torch.allclose(ssim_per_image(x, t), ssim_per_image(7 * x, 7 * t), atol=1e-5)

    @pytest.mark.parametrize("weights, message", [
        ({"mse": -1.0}, r"loss.mse: expected a non-negative weight, found -1.0"),
        ({"mse": 0.0}, r"loss: expected at least one positive weight among mse, l1, ssim"),
    ])
    def test_bad_weights(self, weights, message):
        with pytest.raises(ValueError, match=message):
            ReconstructionLoss(**weights)

    def test_shape_mismatch(self):
        with pytest.raises(ValueError, match=r"loss: expected the reconstruction to have the target's shape"):
            ReconstructionLoss()(torch.zeros(1, 1, 4, 4), torch.zeros(1, 1, 4, 5))

    def test_nmse(self):
        t = torch.ones(2, 1, 4, 4)
        x = torch.stack([t[0] * 1.5, t[1]])
        assert torch.allclose(nmse(x, t), torch.tensor([0.25, 0.0]))


# ---- batch physics and targets ----------------------------------------------------

class TestBatchPhysics:
    def test_ct_physics_is_built_once(self):
        from pirecon.ct import ParallelBeam2D

        builder = BatchPhysics("ct", ParallelBeam2D((16, 16), 1.0, 8))
        assert builder({}) is builder({})
        assert builder({}).operator.geometry == ParallelBeam2D((16, 16), 1.0, 8)

    def test_mri_physics_uses_the_batch_maps_and_mask(self):
        data = SimulationDataset("mri", "ellipses", 0, image_size=16, coils=3)
        item = next(iter(data))
        batch = {k: v[None] for k, v in item.items() if isinstance(v, torch.Tensor)}
        physics = BatchPhysics("mri")(batch)
        assert torch.equal(physics.operator.coil_maps, batch["coil_maps"])
        # the stored k-space is the operator applied to the (noise-free) ground truth
        assert torch.allclose(physics(batch["ground_truth"]), batch["kspace"], atol=1e-5)

    def test_ct_needs_a_geometry(self):
        with pytest.raises(ValueError, match=r"geometry: expected a CT geometry for CT batches, found None"):
            BatchPhysics("ct")

    def test_fastmri_target_is_the_cropped_magnitude(self):
        image = torch.randn(2, 1, 8, 8, dtype=torch.complex64)
        target, prediction = target_and_prediction({"reconstruction_rss": torch.ones(2, 1, 4, 4)}, image)
        assert torch.equal(prediction, image.abs()[..., 2:6, 2:6])
        assert target.shape == prediction.shape

    def test_center_crop_too_large(self):
        with pytest.raises(ValueError, match=r"center_crop: expected a crop of at most \(4, 4\), found \(5, 4\)"):
            center_crop(torch.zeros(4, 4), (5, 4))


# ---- model specs ---------------------------------------------------------------------

class TestModelSpec:
    @pytest.mark.parametrize("name", ["lpd", "LearnedPrimalDual", "pirecon.models.LearnedPrimalDual"])
    def test_names(self, name):
        from pirecon.models import LearnedPrimalDual

        assert isinstance(build_model({"class_path": name, "init_args": {"iterations": 1}}), LearnedPrimalDual)

    def test_unknown_model(self):
        from pirecon.models import MODELS

        with pytest.raises(ValueError, match=rf"model.class_path: expected one of {', '.join(sorted(MODELS))} .*"
                                             r"found 'lpdd'"):
            build_model({"class_path": "lpdd"})

    def test_bad_arguments(self):
        with pytest.raises(ValueError, match=r"model.init_args: LearnedPrimalDual does not take these arguments"):
            build_model({"class_path": "lpd", "init_args": {"depth": 3}})


# ---- resumable loaders -----------------------------------------------------------------

def _indices(loader) -> list[int]:
    return [i for batch in loader for i in batch["index"].tolist()]


@pytest.mark.parametrize("num_workers", [0, 2])
def test_simulation_loader_resumes_mid_epoch(num_workers):
    """After load_state_dict({epoch, batches: k}) the next pass yields exactly the rest of that epoch."""
    dm = ReconstructionDataModule(simulation=dict(CT_SIM, length=24, block_size=3), batch_size=2,
                                  num_workers=num_workers)
    dm.setup("fit")
    full = _indices(dm.train_dataloader())
    assert sorted(full) == list(range(24))
    for k in (1, 4, 5):
        loader = dm.train_dataloader()
        loader.load_state_dict({"epoch": 0, "batches": k})
        assert _indices(loader) == full[2 * k:]


def test_file_loader_resumes_mid_epoch(tmp_path):
    path = simulate(tmp_path / "train.h5", n=10, progress=False, **CT_SIM)
    dm = ReconstructionDataModule(train=str(path), batch_size=3, seed=5)
    dm.setup("fit")
    first = [i for b in dm.train_dataloader() for i in b["slice"].tolist()]
    assert sorted(first) == list(range(10)) and first != list(range(10))  # shuffled
    loader = dm.train_dataloader()
    loader.load_state_dict({"epoch": 0, "batches": 2})
    assert [i for b in loader for i in b["slice"].tolist()] == first[6:]


def test_resumable_sampler_splits_ranks():
    data = list(range(10))
    ranks = [list(ResumableSampler(data, shuffle=True, seed=1, num_replicas=2, rank=r)) for r in range(2)]
    assert not set(ranks[0]) & set(ranks[1]) and set(ranks[0]) | set(ranks[1]) == set(data)


# ---- the module ------------------------------------------------------------------------

@pytest.fixture(scope="module")
def ct_files(tmp_path_factory):
    root = tmp_path_factory.mktemp("ct")
    train = simulate(root / "train.h5", n=8, progress=False, **CT_SIM)
    val = simulate(root / "val.h5", n=4, progress=False, **dict(CT_SIM, seed=1))
    return train, val


def test_fit_lowers_the_validation_error_and_logs(tmp_path, ct_files):
    train, val = ct_files
    dm = ReconstructionDataModule(train=str(train), val=str(val), batch_size=4)
    module = ReconstructionModule(TINY_LPD, lr=1e-2, schedule="constant", log_images_every_n_epochs=0)
    trainer = tiny_trainer(tmp_path, max_steps=1, limit_val_batches=1)
    before = trainer.validate(module, datamodule=dm, verbose=False)[0]
    tiny_trainer(tmp_path, max_steps=40, limit_val_batches=0).fit(module, datamodule=dm)
    after = tiny_trainer(tmp_path).validate(module, datamodule=dm, verbose=False)[0]
    assert set(after) >= {"val/psnr", "val/ssim", "val/nmse", "val/loss"}
    assert after["val/nmse"] < 0.7 * before["val/nmse"]
    assert after["val/psnr"] > before["val/psnr"] + 1


def test_cosine_schedule_decays_to_zero(tmp_path, ct_files):
    train, val = ct_files
    module = ReconstructionModule(TINY_LPD, lr=1e-3)
    trainer = tiny_trainer(tmp_path, max_steps=4, limit_val_batches=0)
    trainer.fit(module, datamodule=ReconstructionDataModule(train=str(train), batch_size=2))
    scheduler = trainer.lr_scheduler_configs[0].scheduler
    assert trainer.lr_scheduler_configs[0].interval == "step"
    assert scheduler.get_last_lr()[0] == pytest.approx(0.0, abs=1e-12)


def test_onecycle_warms_up_then_decays():
    from pirecon.training.module import learning_rate_factor

    factors = [learning_rate_factor("onecycle", step, 100) for step in range(101)]
    assert factors[0] == pytest.approx(1 / 25) and factors[10] == pytest.approx(1.0)
    assert all(a < b for a, b in zip(factors[:10], factors[1:11]))  # linear warm-up over the first 10%
    assert all(a > b for a, b in zip(factors[10:], factors[11:]))  # then the cosine to 0
    assert factors[55] == pytest.approx(0.5) and factors[100] == pytest.approx(0.0, abs=1e-12)
    assert learning_rate_factor("cosine", 50, 100) == pytest.approx(0.5)
    assert learning_rate_factor("constant", 50, 100) == 1.0


def test_fit_with_the_speed_ups_keeps_a_plain_checkpoint(tmp_path, ct_files):
    """channels_last and compile apply when fitting starts; the checkpoint loads into the plain model."""
    from pirecon.models.acceleration import cpp_compiler_found

    if not cpp_compiler_found():
        pytest.skip("torch.compile on CPU needs a C++ compiler")
    train, _ = ct_files
    module = ReconstructionModule(TINY_LPD, log_images_every_n_epochs=0, channels_last=True, compile=True,
                                  schedule="onecycle")
    trainer = tiny_trainer(tmp_path, max_steps=2, limit_val_batches=0)
    trainer.fit(module, datamodule=ReconstructionDataModule(train=str(train), batch_size=2))
    assert module.model.primal_blocks[0]._compiled_call_impl is not None
    path = tmp_path / "fast.ckpt"
    trainer.save_checkpoint(path)
    loaded = load_module(path)
    assert loaded.model.primal_blocks[0]._compiled_call_impl is None  # evaluation runs the plain model
    assert loaded.hparams["compile"] and loaded.hparams["channels_last"]
    for key, value in module.model.state_dict().items():
        assert torch.equal(loaded.model.state_dict()[key], value)


def _checkpoint_naming(tmp_path, ct_files, class_path):
    """A real checkpoint of a tiny LPD whose stored model spec is rewritten to name ``class_path``."""
    train, _ = ct_files
    module = ReconstructionModule(TINY_LPD, log_images_every_n_epochs=0)
    trainer = tiny_trainer(tmp_path, max_steps=1, limit_val_batches=0)
    trainer.fit(module, datamodule=ReconstructionDataModule(train=str(train), batch_size=2))
    path = tmp_path / "model.ckpt"
    trainer.save_checkpoint(path)
    checkpoint = torch.load(path, weights_only=True)
    checkpoint["hyper_parameters"]["model"] = {"class_path": class_path, "init_args": TINY_LPD["init_args"]}
    torch.save(checkpoint, path)
    return path


@pytest.mark.parametrize("class_path", ["os.system", "beside.Model"])
def test_a_checkpoint_naming_code_is_refused_without_importing_it(tmp_path, ct_files, monkeypatch, class_path):
    """Loading is data only: a dotted path in a checkpoint is never imported, even from beside the file."""
    import sys

    (tmp_path / "beside.py").write_text("import pathlib\npathlib.Path(__file__).with_name('imported').touch()\n"
                                        "from pirecon.models import LearnedPrimalDual as Model\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    path = _checkpoint_naming(tmp_path, ct_files, class_path)
    with pytest.raises(ValueError) as info:
        load_module(path)
    from pirecon.models import MODELS

    assert str(info.value) == (
        f"{path}: model.class_path: expected one of {', '.join(sorted(MODELS))} (or a pirecon.models class name), "
        f"or a class passed in models=, found {class_path!r}; pirecon does not import code that a checkpoint names")
    assert not (tmp_path / "imported").exists() and "beside" not in sys.modules


def test_a_checkpoint_of_a_class_passed_by_the_caller_loads(tmp_path, ct_files):
    from pirecon.models import LearnedPrimalDual

    class MyLPD(LearnedPrimalDual):
        pass

    path = _checkpoint_naming(tmp_path, ct_files, "mypackage.MyLPD")
    loaded = load_module(path, models={"mypackage.MyLPD": MyLPD})
    assert type(loaded.model) is MyLPD
    assert loaded.hparams["model"]["class_path"] == "mypackage.MyLPD"  # saved again, the spec stays data


def test_validation_figure_is_written(tmp_path, ct_files):
    from pytorch_lightning.loggers import CSVLogger, TensorBoardLogger

    train, val = ct_files
    loggers = [CSVLogger(tmp_path, name="", version=""), TensorBoardLogger(tmp_path, name="", version="")]
    trainer = tiny_trainer(tmp_path, max_steps=2, logger=loggers, val_check_interval=2, check_val_every_n_epoch=None)
    trainer.fit(ReconstructionModule(TINY_LPD), datamodule=ReconstructionDataModule(train=str(train), val=str(val),
                                                                                    batch_size=2))
    figures = sorted((tmp_path / "images").glob("val_epoch*_step*.png"))
    assert figures and figures[0].stat().st_size > 1000
    assert (tmp_path / "metrics.csv").read_text().startswith("epoch,step")
    assert list(tmp_path.glob("events.out.tfevents.*"))


def test_checkpoint_round_trip_is_weights_only(tmp_path, ct_files):
    train, val = ct_files
    trainer = tiny_trainer(tmp_path, max_steps=2, limit_val_batches=0)
    dm = ReconstructionDataModule(train=str(train), batch_size=2)
    module = ReconstructionModule(TINY_LPD, loss={"mse": 1.0, "l1": 0.1})
    trainer.fit(module, datamodule=dm)
    path = tmp_path / "model.ckpt"
    trainer.save_checkpoint(path)
    checkpoint = load_checkpoint(path)  # torch.load(weights_only=True) inside
    assert checkpoint["hyper_parameters"]["model"] == TINY_LPD
    loaded = load_module(path)
    batch = next(iter(dm.train_dataloader()))
    with torch.no_grad():
        expected = module.eval()(batch["sinogram"], module.batch_physics(batch)).image
        found = loaded(batch["sinogram"], loaded.batch_physics(batch)).image
    assert torch.equal(expected, found)


def test_resuming_on_data_of_another_geometry_names_both_unless_the_data_physics_is_asked_for(tmp_path, ct_files):
    train, _ = ct_files
    trainer = tiny_trainer(tmp_path, max_steps=2, limit_val_batches=0)
    trainer.fit(ReconstructionModule(TINY_LPD), datamodule=ReconstructionDataModule(train=str(train), batch_size=2))
    path = tmp_path / "model.ckpt"
    trainer.save_checkpoint(path)
    other = simulate(tmp_path / "other.h5", n=4, progress=False, **dict(CT_SIM, num_angles=12))
    with pytest.raises(ValueError, match=r"^physics mismatch in geometry: the checkpoint .*model.ckpt has "
                                         r"ParallelBeam2D\(image_shape=\(32, 32\), pixel_size=1.0, num_angles=10, .*\), "
                                         r"the data \(set physics_mismatch='use_data' to use the data's physics\) has "
                                         r"ParallelBeam2D\(image_shape=\(32, 32\), pixel_size=1.0, num_angles=12, .*\)$"):
        tiny_trainer(tmp_path, max_steps=4, limit_val_batches=0).fit(
            ReconstructionModule(TINY_LPD), datamodule=ReconstructionDataModule(train=str(other), batch_size=2),
            ckpt_path=path)
    # a geometry-agnostic use: the data's physics, explicitly
    module = ReconstructionModule(TINY_LPD, physics_mismatch="use_data")
    tiny_trainer(tmp_path, max_steps=4, limit_val_batches=0).fit(
        module, datamodule=ReconstructionDataModule(train=str(other), batch_size=2), ckpt_path=path)
    assert module.batch_physics.geometry.num_angles == 12
    # the same data as the checkpoint's resumes as before
    tiny_trainer(tmp_path, max_steps=4, limit_val_batches=0).fit(
        ReconstructionModule(TINY_LPD), datamodule=ReconstructionDataModule(train=str(train), batch_size=2),
        ckpt_path=path)


@pytest.mark.parametrize("content, message", [
    (b"not a checkpoint", r"expected a PyTorch checkpoint \(zip file of tensors\), found a corrupt or truncated file"),
    (None, r"expected a PyTorch checkpoint \(zip file of tensors\), found a corrupt or truncated file"),
])
def test_corrupt_checkpoint(tmp_path, content, message):
    path = tmp_path / "bad.ckpt"
    if content is None:  # a real checkpoint cut in half
        torch.save({"state_dict": {"w": torch.zeros(1000)}}, path)
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])
    else:
        path.write_bytes(content)
    with pytest.raises(ValueError, match=message):
        load_checkpoint(path)
    with pytest.raises(ValueError, match=message):
        AtomicCheckpointIO().load_checkpoint(path)


def test_missing_checkpoint(tmp_path):
    with pytest.raises(ValueError, match=r"checkpoint: expected an existing checkpoint file, found no file at"):
        load_checkpoint(tmp_path / "none.ckpt")


def test_atomic_save_leaves_no_partial_file(tmp_path, monkeypatch):
    def broken_save(obj, f):
        with open(f, "wb") as handle:
            handle.write(b"partial")
        raise RuntimeError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(RuntimeError, match="disk full"):
        AtomicCheckpointIO().save_checkpoint({"state_dict": {}}, tmp_path / "last.ckpt")
    assert list(tmp_path.iterdir()) == []


def test_predict_writes_one_file_per_input(tmp_path, ct_files, capsys):
    from pirecon.data.formats import read_reconstruction
    from pirecon.training import ReconstructionWriter

    train, val = ct_files
    writer = ReconstructionWriter(str(tmp_path / "out"))
    trainer = tiny_trainer(tmp_path, callbacks=[writer])
    dm = ReconstructionDataModule(predict=[str(train), str(val)], batch_size=3)
    module = ReconstructionModule(TINY_LPD)
    trainer.predict(module, datamodule=dm, return_predictions=False)
    printed = capsys.readouterr().out.splitlines()
    for source, n in ((train, 8), (val, 4)):
        assert f"wrote {tmp_path / 'out' / f'{source.stem}_LearnedPrimalDual.h5'} ({n} slices of {source})" in printed
        result = read_reconstruction(tmp_path / "out" / f"{source.stem}_LearnedPrimalDual.h5")
        assert result.image.shape == (n, 32, 32)
        assert result.provenance["method"] == "LearnedPrimalDual"
        assert result.provenance["source_file"] == str(source)
    dataset = H5SliceDataset(val)
    with torch.no_grad():
        batch = {"sinogram": torch.stack([dataset[i]["sinogram"] for i in range(4)])}
        expected = module(batch["sinogram"], module.batch_physics(batch)).image[:, 0].numpy()
    np.testing.assert_allclose(read_reconstruction(tmp_path / "out" / "val_LearnedPrimalDual.h5").image, expected,
                               atol=1e-6)


def test_module_without_physics_says_so():
    module = ReconstructionModule(TINY_LPD)
    with pytest.raises(ValueError, match=r"ReconstructionModule: no physics; call set_physics"):
        module.training_step({"sinogram": torch.zeros(1, 1, 10, 46)}, 0)


def test_bad_options():
    with pytest.raises(ValueError, match=r"schedule: expected one of"):
        ReconstructionModule(TINY_LPD, schedule="linear")
    with pytest.raises(ValueError, match=r"betas: expected two numbers in \[0, 1\), found \(0.9, 1.5\)"):
        ReconstructionModule(TINY_LPD, betas=(0.9, 1.5))


@pytest.mark.parametrize("accelerator", ["cpu", pytest.param("gpu", marks=pytest.mark.cuda)])
def test_bf16_mixed_precision(tmp_path, ct_files, accelerator):
    """bf16 autocast: the networks run in bfloat16, the operators in float32; the loss stays finite."""
    if accelerator == "gpu" and not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    train, val = ct_files
    module = ReconstructionModule(TINY_LPD, log_images_every_n_epochs=0)
    trainer = tiny_trainer(tmp_path, accelerator=accelerator, max_steps=2, precision="bf16-mixed",
                           limit_val_batches=1, val_check_interval=2, check_val_every_n_epoch=None)
    trainer.fit(module, datamodule=ReconstructionDataModule(train=str(train), val=str(val), batch_size=2))
    assert math.isfinite(trainer.callback_metrics["val/psnr"].item())
    assert all(torch.isfinite(p).all() for p in module.parameters())


def test_a_bad_value_for_a_pirecon_model_is_a_config_error():
    from pirecon.errors import ConfigError

    with pytest.raises(ConfigError, match=r"^model.init_args: iterations: expected a positive integer, found -1$"):
        build_model({"class_path": "lpd", "init_args": {"iterations": -1}})


def test_the_data_module_refuses_to_train_on_held_out_files(tmp_path):
    from pirecon.errors import PireconUserError

    held_out = simulate(tmp_path / "test.h5", n=2, progress=False, split="test", **CT_SIM)
    with pytest.raises(PireconUserError, match=r"found split 'test' \(held out from training\)$"):
        ReconstructionDataModule(train=str(held_out), batch_size=2).setup("fit")
    dm = ReconstructionDataModule(test=str(held_out), batch_size=2)  # evaluation reads it
    dm.setup("test")
    assert len(dm.test_dataset) == 2
