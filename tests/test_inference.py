"""pirecon.load / Reconstructor.reconstruct / pirecon.reconstructor: the door for downstream code."""

import json
import subprocess
import sys
import zipfile

import pytest
import pytorch_lightning as pl
import torch

import pirecon
from pirecon.data.simulate import simulate
from pirecon.data.acquisition import PhysicsMismatchError, read_acquisition
from pirecon.inference import CheckpointDeviceError, CheckpointError, CheckpointVersionError, file_sha256, load_checkpoint
from pirecon.training import ReconstructionDataModule, ReconstructionModule, load_module

TINY_LPD = {"class_path": "lpd", "init_args": {"iterations": 2, "hidden": 8}}
CT_SIM = {"modality": "ct", "phantom": "ellipses", "image_size": 32, "num_angles": 10, "seed": 0}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A checkpoint of a tiny LPD trained for a few steps, and a held-out file of 5 slices of its physics."""
    root = tmp_path_factory.mktemp("inference")
    train = simulate(root / "train.h5", n=4, progress=False, **CT_SIM)
    test = simulate(root / "test.h5", n=5, progress=False, split="test", **CT_SIM)
    module = ReconstructionModule(TINY_LPD, log_images_every_n_epochs=0)
    trainer = pl.Trainer(accelerator="cpu", max_steps=2, logger=False, enable_progress_bar=False,
                         enable_model_summary=False, enable_checkpointing=False, default_root_dir=root,
                         limit_val_batches=0)
    trainer.fit(module, datamodule=ReconstructionDataModule(train=str(train), batch_size=2))
    path = root / "model.ckpt"
    trainer.save_checkpoint(path)
    return path, test


def _rewritten(tmp_path, path, change):
    checkpoint = torch.load(path, weights_only=True)
    change(checkpoint)
    out = tmp_path / "changed.ckpt"
    torch.save(checkpoint, out)
    return out


def test_load_reconstructs_a_raw_file_as_the_model_called_directly(trained):
    path, test = trained
    model = pirecon.load(path)
    recon = model.reconstruct(test, batch_size=2, progress=False, metrics=True)
    acquisition = read_acquisition(test)
    with torch.no_grad():
        expected = load_module(path)(acquisition.y, acquisition.physics).image
    assert recon.image.shape == (5, 1, 32, 32) and recon.image.device.type == "cpu"
    torch.testing.assert_close(recon.image, expected, rtol=1e-5, atol=1e-6)
    p = recon.provenance
    assert p["model"] == "LearnedPrimalDual" and p["checkpoint"] == str(path)
    assert p["checkpoint_sha256"] == file_sha256(path) and p["source_file"] == str(test)
    assert p["geometry"] == acquisition.physics.metadata["geometry"].to_dict()
    assert p["pirecon_version"] == pirecon.__version__ and len(p["metrics"]["psnr_db"]) == 5
    assert "metrics" not in model.reconstruct(test, progress=False).provenance  # asked for, or not computed


def test_the_result_does_not_depend_on_the_batch_size_and_batches_are_bounded(trained):
    path, test = trained
    model = pirecon.load(path)
    seen = []
    forward = model.model.forward
    model.model.forward = lambda y, physics: (seen.append(y.shape[0]), forward(y, physics))[1]
    one = model.reconstruct(test, batch_size=1, progress=False).image
    assert seen == [1] * 5
    seen.clear()
    three = model.reconstruct(test, batch_size=3, progress=False).image
    assert seen == [3, 2]
    torch.testing.assert_close(one, three, rtol=1e-5, atol=1e-6)


def test_physics_and_card_and_device(trained):
    path, test = trained
    model = pirecon.load(path)
    assert model.physics.modality == "ct"
    assert model.physics.metadata["geometry"] == read_acquisition(test).physics.metadata["geometry"]
    assert model.to("cpu") is model and model.device == torch.device("cpu")
    assert repr(model) == "Reconstructor(LearnedPrimalDual, modality='ct', device='cpu')"


def test_measurements_with_their_physics(trained):
    path, test = trained
    acquisition = read_acquisition(test)
    model = pirecon.load(path)
    from_tensor = model.reconstruct(acquisition.y, physics=acquisition.physics, progress=False)
    from_file = model.reconstruct(test, progress=False)
    torch.testing.assert_close(from_tensor.image, from_file.image)
    default_physics = model.reconstruct(acquisition.y, progress=False)  # a CT model's own physics
    torch.testing.assert_close(default_physics.image, from_file.image)


def test_data_of_another_geometry_is_refused_naming_both(trained, tmp_path):
    path, _ = trained
    other = simulate(tmp_path / "other.h5", n=2, progress=False, **dict(CT_SIM, num_angles=12))
    model = pirecon.load(path)
    with pytest.raises(PhysicsMismatchError) as info:
        model.reconstruct(other, progress=False)
    message = str(info.value)
    assert message.startswith("physics mismatch in geometry: the model (LearnedPrimalDual) has ParallelBeam2D(")
    assert "num_angles=10" in message and "num_angles=12" in message
    assert f"{other} (pass physics_mismatch='use_data', --physics-mismatch use_data, to reconstruct anyway)" in message
    assert model.reconstruct(other, physics_mismatch="use_data", progress=False).image.shape == (2, 1, 32, 32)


def test_classical_methods_take_the_same_road(trained):
    from pirecon.ct import fbp
    from pirecon.solvers import tv_pdhg

    _, test = trained
    acquisition = read_acquisition(test)
    recon = pirecon.reconstructor("fbp", filter="hann").reconstruct(test, batch_size=2, progress=False)
    torch.testing.assert_close(recon.image, fbp(acquisition.y, acquisition.physics.operator, filter="hann"))
    assert recon.provenance["method"] == "fbp" and "checkpoint_sha256" not in recon.provenance
    tv = pirecon.reconstructor("tv", lam=0.5, iterations=20)
    assert tv.physics is None and tv.card is None
    torch.testing.assert_close(tv.reconstruct(test, progress=False).image,
                               tv_pdhg(acquisition.y, acquisition.physics.operator, lam=0.5, iterations=20).image)
    with pytest.raises(ValueError, match=r"^method 'tv': expected lam=<regularisation weight>, found none$"):
        pirecon.reconstructor("tv")
    with pytest.raises(ValueError, match=r"^method 'fbp': expected parameters among filter, frequency_scaling, "
                                         r"found lam$"):
        pirecon.reconstructor("fbp", lam=1.0)


def test_loading_and_reconstructing_import_no_lightning(trained):
    path, test = trained
    code = (f"import sys, pirecon; r = pirecon.load({str(path)!r}).reconstruct({str(test)!r}, progress=False); "
            "assert r.image.shape[0] == 5; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('pytorch_lightning', 'lightning_fabric', "
            "'lightning')))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


# ---- checkpoints: safe, and one clear error per problem -----------------------------------------

def test_a_checkpoint_saved_on_a_gpu_loads_on_a_cpu(trained, tmp_path):
    """Tensors tagged with location 'cuda:0' (as a GPU run writes them) load with pirecon.load on any machine."""
    path, test = trained
    checkpoint = torch.load(path, weights_only=True)
    from torch import serialization

    registry = serialization._package_registry
    entry = (-1, lambda storage: "cuda:0", lambda storage, location: None)
    registry.append(entry)
    registry.sort(key=lambda item: item[0])
    try:
        gpu = tmp_path / "gpu.ckpt"
        torch.save(checkpoint, gpu)
    finally:
        registry.remove(entry)
    with zipfile.ZipFile(gpu) as archive:
        assert b"cuda:0" in archive.read(next(n for n in archive.namelist() if n.endswith("data.pkl")))
    model = pirecon.load(gpu)
    for key, value in load_module(path).model.state_dict().items():
        assert torch.equal(model.model.state_dict()[key], value)
    torch.testing.assert_close(model.reconstruct(test, progress=False).image,
                               pirecon.load(path).reconstruct(test, progress=False).image)
    if not torch.cuda.is_available():
        with pytest.raises(CheckpointDeviceError) as info:
            load_checkpoint(gpu)
        assert str(info.value) == (
            f"{gpu}: expected tensors this machine can hold, found tensors saved on a GPU and no CUDA device here; "
            "load with map_location='cpu' (pirecon.load does unless map_location is given)")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message of a machine without CUDA")
def test_a_missing_device_is_named_before_anything_is_read(tmp_path):
    with pytest.raises(pirecon.BackendUnavailableError) as info:
        pirecon.load(tmp_path / "missing.ckpt", device="cuda")
    assert str(info.value) == ("device 'cuda': expected a CUDA device, found none on this machine "
                               "(torch.cuda.is_available() is False); use device='cpu'")


def test_a_newer_checkpoint_format_is_named(trained, tmp_path):
    path, _ = trained
    assert torch.load(path, weights_only=True)["pirecon"]["checkpoint_format"] == 1
    newer = _rewritten(tmp_path, path, lambda c: c.update(pirecon={"checkpoint_format": 2, "pirecon_version": "9.0"}))
    with pytest.raises(CheckpointVersionError) as info:
        pirecon.load(newer)
    assert str(info.value) == (f"{newer}: expected checkpoint format 1 or older (pirecon {pirecon.__version__}), "
                               "found format 2 written by pirecon 9.0; upgrade pirecon to load it")


@pytest.mark.parametrize("content, message", [
    (b"not a checkpoint", "found a corrupt or truncated file (not a readable zip archive)"),
    (None, "expected a Lightning checkpoint with a 'state_dict', found Tensor without one"),
])
def test_files_that_are_not_checkpoints(tmp_path, content, message):
    path = tmp_path / "file.ckpt"
    if content is None:
        torch.save(torch.zeros(2), path)
    else:
        path.write_bytes(content)
    with pytest.raises(CheckpointError) as info:
        pirecon.load(path)
    assert str(info.value).startswith(f"{path}: ") and str(info.value).endswith(message)


def test_a_truncated_checkpoint(trained, tmp_path):
    path, _ = trained
    truncated = tmp_path / "truncated.ckpt"
    truncated.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="found a corrupt or truncated file"):
        pirecon.load(truncated)


@pytest.mark.parametrize("class_path", ["os.system", "beside.Model"])
def test_a_checkpoint_naming_code_is_refused_on_every_loading_path(trained, tmp_path, monkeypatch, class_path):
    path, _ = trained
    (tmp_path / "beside.py").write_text("import pathlib\npathlib.Path(__file__).with_name('imported').touch()\n"
                                        "from pirecon.models import LearnedPrimalDual as Model\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    named = _rewritten(tmp_path, path, lambda c: c["hyper_parameters"].update(
        model={"class_path": class_path, "init_args": TINY_LPD["init_args"]}))
    from pirecon.models import MODELS

    expected = (f"{named}: model.class_path: expected one of {', '.join(sorted(MODELS))} (or a pirecon.models class "
                f"name), or a class passed in models=, found {class_path!r}; pirecon does not import code that a "
                "checkpoint names")
    for loader in (pirecon.load, load_module, ReconstructionModule.load_from_checkpoint):
        with pytest.raises(ValueError) as info:
            loader(named)
        assert str(info.value) == expected
    assert not (tmp_path / "imported").exists() and "beside" not in sys.modules


def test_a_class_passed_by_the_caller_loads(trained, tmp_path):
    from pirecon.models import LearnedPrimalDual

    class MyLPD(LearnedPrimalDual):
        pass

    path, _ = trained
    named = _rewritten(tmp_path, path, lambda c: c["hyper_parameters"].update(
        model={"class_path": "mypackage.MyLPD", "init_args": TINY_LPD["init_args"]}))
    assert type(pirecon.load(named, models={"mypackage.MyLPD": MyLPD}).model) is MyLPD
    assert type(ReconstructionModule.load_from_checkpoint(named, models={"mypackage.MyLPD": MyLPD}).model) is MyLPD


def test_weights_that_do_not_fit_the_model_are_named(trained, tmp_path):
    path, _ = trained
    wider = _rewritten(tmp_path, path, lambda c: c["hyper_parameters"]["model"]["init_args"].update(hidden=16))
    with pytest.raises(CheckpointError, match=r"expected weights of the shapes LearnedPrimalDual\(iterations=2, "
                                              r"hidden=16\) has, found .*size mismatch"):
        pirecon.load(wider)
    longer = _rewritten(tmp_path, path, lambda c: c["hyper_parameters"]["model"]["init_args"].update(iterations=3))
    with pytest.raises(CheckpointError, match=r"expected the weights of LearnedPrimalDual\(iterations=3, hidden=8\), "
                                              r"found \d+ missing \(.*\) and 0 unexpected"):
        pirecon.load(longer)


# ---- command line -------------------------------------------------------------------------------

def test_cli_reconstructs_with_a_checkpoint_and_never_overwrites_unasked(trained, tmp_path, capsys):
    from pirecon.cli import main
    from pirecon.data.readers import read_nifti

    path, test = trained
    out = tmp_path / "recon.nii.gz"
    command = ["reconstruct", str(test), "--checkpoint", str(path), "--out", str(out), "--batch-size", "2", "--quiet"]
    assert main(command) == 0
    printed = capsys.readouterr().out.splitlines()
    assert printed[0].startswith("model: LearnedPrimalDual")
    assert printed[1].startswith(f"wrote {out} (LearnedPrimalDual): PSNR ")
    volume, _, _ = read_nifti(out)
    expected = pirecon.load(path).reconstruct(test, progress=False).image[:, 0].numpy()
    assert volume.shape == (5, 32, 32) and abs(volume - expected).max() < 1e-6
    before = out.read_bytes()
    assert main(command) == 2
    assert capsys.readouterr().err.strip() == (f"pirecon reconstruct: error: {out}: expected a new output path, found "
                                               "a file that exists; pass overwrite=True (--overwrite) to replace it")
    assert out.read_bytes() == before
    assert main(command + ["--overwrite"]) == 0


def test_cli_checks_the_checkpoint_before_reading_the_data(tmp_path, capsys):
    from pirecon.cli import main

    corrupt = tmp_path / "corrupt.ckpt"
    corrupt.write_bytes(b"garbage")
    out = tmp_path / "out.h5"
    assert main(["reconstruct", str(tmp_path / "missing.h5"), "--checkpoint", str(corrupt), "--out", str(out)]) == 2
    assert capsys.readouterr().err.strip() == (f"pirecon reconstruct: error: {corrupt}: expected a PyTorch checkpoint "
                                               "(zip file of tensors), found a corrupt or truncated file (not a "
                                               "readable zip archive)")
    assert not out.exists()


def test_predict_needs_only_the_checkpoint_and_says_what_it_wrote(trained, tmp_path, capsys, monkeypatch):
    from pirecon.cli import main
    from pirecon.data import read_reconstruction

    path, test = trained
    monkeypatch.chdir(tmp_path)
    assert main(["predict", "--ckpt_path", str(path), "--data.predict", str(test), "--writer.output_dir", "out",
                 "--quiet"]) == 0
    written = tmp_path / "out" / "test_LearnedPrimalDual.h5"
    assert capsys.readouterr().out.splitlines()[-1] == f"wrote out/test_LearnedPrimalDual.h5 (5 slices of {test})"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no logs, no simulated files
    result = read_reconstruction(written)
    assert result.provenance["checkpoint_sha256"] == file_sha256(path)
    assert main(["predict", "--ckpt_path", str(path), "--data.predict", str(test), "--writer.output_dir", "out"]) == 2
    assert "expected a new output path" in capsys.readouterr().err


# ---- image volumes: simulated with the model's physics, written back in the source's units and geometry ----

def test_resampling_keeps_the_patient_geometry():
    """A ramp along the columns, resampled to another grid, reads the source column the output affine names."""
    import numpy as np

    from pirecon.inference.sources import _square_transform, _to_grid

    side, transform = _square_transform((30, 40), (32, 32))
    ramp = torch.arange(40, dtype=torch.float32).expand(1, 1, 30, 40) + 100.0
    out = _to_grid(ramp, side, (32, 32))[0, 0]
    columns = np.arange(4, 28)
    source_columns = transform[2, 2] * columns + transform[2, 3]
    error = out[16, columns].numpy() - (source_columns + 100.0)
    assert abs(error.mean()) < 5e-3 and np.abs(error).max() < 0.05  # no offset; the antialiasing filter's ripple
    assert side == 40 and transform[1, 3] == pytest.approx(0.5 * 40 / 32 - 0.5 - 5)  # 5 rows of padding on top


def test_a_dicom_series_is_simulated_reconstructed_and_written_back_in_hu(trained, tmp_path):
    import numpy as np
    import pydicom

    from pirecon.data.readers import read_dicom_series, read_nifti
    from test_export import ORIENTATION, make_ct_source, positions_along_normal

    path, _ = trained
    hu = np.full((3, 40, 40), -1000.0)
    yy, xx = np.mgrid[:40, :40]
    for d in range(3):
        hu[d][(yy - 20) ** 2 + (xx - 18 - d) ** 2 < 15 ** 2] = 40.0 * d
    files = make_ct_source(tmp_path / "source", hu, positions_along_normal([0.0, 2.5, 5.0]))
    _, _, source = read_dicom_series(tmp_path / "source")
    model = pirecon.load(path)
    recon = model.reconstruct(tmp_path / "source", batch_size=2, progress=False, metrics=True)
    p = recon.provenance
    assert recon.image.shape == (3, 1, 32, 32) and p["source_kind"] == "dicom"
    assert p["intensity"]["units"] == "HU" and p["source_files"] == [str(f) for f in files]
    assert p["pixel_spacing_mm"] == pytest.approx([0.8 * 40 / 32, 0.7 * 40 / 32])
    assert len(p["metrics"]["psnr_db"]) == 3
    written = pirecon.save(recon, tmp_path / "out", format="dicom")
    volume, _, metadata = read_dicom_series(tmp_path / "out")
    expected = recon.image[:, 0].numpy() * p["intensity"]["scale"] + p["intensity"]["offset"]
    first = pydicom.dcmread(written[0])
    assert np.abs(volume - expected).max() <= 0.5 * float(first.RescaleSlope) + 1e-3
    assert metadata["units"] == "HU" and first.SOPClassUID == "1.2.840.10008.5.1.4.1.1.2"
    source_first = pydicom.dcmread(files[0])
    assert first.StudyInstanceUID == source_first.StudyInstanceUID
    assert first.SeriesInstanceUID != source_first.SeriesInstanceUID
    assert first.PatientID == source_first.PatientID and list(first.ImageType)[:2] == ["DERIVED", "SECONDARY"]
    assert p["checkpoint_sha256"] in first.DerivationDescription
    np.testing.assert_allclose(metadata["affine"], p["affine_lps"], atol=1e-4)
    np.testing.assert_allclose(metadata["orientation"], ORIENTATION, atol=1e-6)
    nifti = pirecon.save(recon, tmp_path / "out.nii.gz")
    values, _, affine = read_nifti(nifti)
    np.testing.assert_allclose(affine, np.diag([-1.0, -1.0, 1.0, 1.0]) @ np.asarray(p["affine_lps"]), atol=1e-4)
    np.testing.assert_allclose(values, expected, atol=1e-3)


def test_same_seed_same_simulation_and_a_model_without_physics_needs_one(trained, tmp_path):
    from test_export import make_ct_source, positions_along_normal

    import numpy as np

    path, _ = trained
    make_ct_source(tmp_path / "source", np.zeros((2, 32, 32)), positions_along_normal([0.0, 2.0]))
    model = pirecon.load(path)
    one = model.reconstruct(tmp_path / "source", batch_size=1, progress=False).image
    two = model.reconstruct(tmp_path / "source", batch_size=2, progress=False).image
    torch.testing.assert_close(one, two, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError) as info:
        pirecon.reconstructor("fbp").reconstruct(tmp_path / "source", progress=False)
    assert str(info.value) == (f"physics: expected the physics to simulate measurements of {tmp_path / 'source'} "
                               "with, found None (the model has no physics of its own; pass physics=)")


def test_a_raw_file_has_no_patient_geometry_and_the_writers_say_so(trained, tmp_path):
    import nibabel
    import pydicom

    path, test = trained
    recon = pirecon.load(path).reconstruct(test, progress=False)
    with pytest.warns(UserWarning, match="no patient"):
        files = pirecon.save(recon, tmp_path / "dicom", format="dicom")
    ds = pydicom.dcmread(files[0])
    assert ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.7" and "ImageOrientationPatient" not in ds
    assert "no patient geometry: no positions and orientation were given" in ds.ImageComments
    assert [float(v) for v in ds.PixelSpacing] == [recon.provenance["pixel_spacing_mm"][0]] * 2
    with pytest.warns(UserWarning, match="no patient orientation"):
        nifti = pirecon.save(recon, tmp_path / "out.nii")
    header = nibabel.load(nifti).header
    assert int(header["qform_code"]) == 0 and int(header["sform_code"]) == 0


# ---- MRI, and heads' outputs ----------------------------------------------------------------------

def test_an_mri_checkpoint_reconstructs_an_mri_file_slice_batches_with_their_own_physics(tmp_path):
    """The per-slice coil maps and masks of an MRI file reach the model batch by batch (no KeyError: 'kspace')."""
    from pirecon.data.acquisition import BatchPhysics
    from pirecon.data.datasets import H5SliceDataset

    raw = simulate(tmp_path / "mri.h5", modality="mri", image_size=32, coils=4, n=3, progress=False, split="test")
    module = ReconstructionModule({"class_path": "varnet", "init_args": {"cascades": 2, "channels": 4,
                                                                        "sens_channels": 4, "depth": 2,
                                                                        "sens_depth": 2}})
    module.set_physics("mri")
    checkpoint = {"state_dict": module.state_dict(), "hyper_parameters": dict(module.hparams)}
    module.on_save_checkpoint(checkpoint)
    torch.save(checkpoint, tmp_path / "varnet.ckpt")
    model = pirecon.load(tmp_path / "varnet.ckpt")
    assert model.physics is None and model.physics_description["modality"] == "mri"
    recon = model.reconstruct(raw, batch_size=2, progress=False)
    dataset = H5SliceDataset(raw)
    batch = torch.utils.data.default_collate([dataset[i] for i in range(3)])
    with torch.no_grad():
        expected = module.eval()(batch["kspace"], BatchPhysics("mri")(batch)).image
    assert recon.image.dtype == torch.complex64 and recon.image.shape == (3, 1, 32, 32)
    torch.testing.assert_close(recon.image, expected, rtol=1e-4, atol=1e-5)
    with pytest.raises(PhysicsMismatchError, match=r"^physics mismatch in modality: the model \(VarNet\) has 'mri', "):
        model.reconstruct(simulate(tmp_path / "ct.h5", n=1, progress=False, **CT_SIM), progress=False)


def test_uncertainty_and_task_outputs_are_kept_and_written(trained, tmp_path):
    from pirecon.data import read_reconstruction
    from pirecon.inference import Reconstructor
    from pirecon.models import Reconstruction

    class WithHeads(torch.nn.Module):
        def forward(self, y, physics):
            image = physics.adjoint(y)
            return Reconstruction(image, uncertainty=image.abs(), task={"score": image.mean(dim=(1, 2, 3))})

    _, test = trained
    acquisition = read_acquisition(test)
    recon = Reconstructor(WithHeads(), name="with-heads").reconstruct(acquisition.y, physics=acquisition.physics,
                                                                        batch_size=2, progress=False)
    assert recon.uncertainty.shape == (5, 1, 32, 32) and recon.task["score"].shape == (5,)
    written = read_reconstruction(pirecon.save(recon, tmp_path / "heads.h5"))
    assert (written.uncertainty == recon.uncertainty[:, 0].numpy()).all()
    assert (written.task["score"] == recon.task["score"].numpy()).all()


def test_a_lodopab_observation_file_is_read_in_pirecons_units(tmp_path):
    """LoDoPaB-CT observation files (post-log, path length in metres) are reconstructed as line integrals in mm."""
    import h5py
    import numpy as np

    from pirecon.ct import RayTransform, fbp
    from pirecon.data.readers import LODOPAB_SINOGRAM_SHAPE, lodopab_geometry

    observations = np.random.default_rng(0).uniform(0, 0.01, size=(2, *LODOPAB_SINOGRAM_SHAPE)).astype(np.float32)
    path = tmp_path / "observation_test_000.hdf5"
    with h5py.File(path, "w") as f:
        f["data"] = observations
    recon = pirecon.reconstructor("fbp", backend="astra").reconstruct(path, batch_size=1, progress=False)
    expected = fbp(torch.from_numpy(observations * 1000)[:, None], RayTransform(lodopab_geometry(), backend="astra"))
    assert recon.provenance["source_kind"] == "lodopab" and recon.image.shape == (2, 1, 362, 362)
    torch.testing.assert_close(recon.image, expected, rtol=1e-4, atol=1e-4)
    assert recon.provenance["geometry"] == lodopab_geometry().to_dict()


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message of a machine without CUDA")
def test_cli_names_a_missing_device_in_one_line(trained, tmp_path, capsys):
    from pirecon.cli import main

    path, test = trained
    out = tmp_path / "out.h5"
    assert main(["reconstruct", str(test), "--checkpoint", str(path), "--out", str(out), "--device", "cuda"]) == 2
    assert capsys.readouterr().err.strip() == (
        "pirecon reconstruct: error: device 'cuda': expected a CUDA device, found none on this machine "
        "(torch.cuda.is_available() is False); use device='cpu'")
    assert not out.exists()


# ---- what a review of the door found ----------------------------------------------------------------

def test_a_checkpoint_of_pickled_objects_is_named_as_such(tmp_path):
    path = tmp_path / "objects.ckpt"
    torch.save({"state_dict": {}, "hook": torch.nn.Linear(2, 2)}, path)
    with pytest.raises(CheckpointError) as info:
        pirecon.load(path)
    assert str(info.value) == (f"{path}: expected tensors and plain data, found pickled Python objects "
                               "(torch.nn.modules.linear.Linear); pirecon never unpickles code")


def test_the_provenance_hash_is_that_of_the_bytes_loaded(trained):
    from pirecon.inference.checkpoint import read_checkpoint

    path, _ = trained
    checkpoint, sha256 = read_checkpoint(path)
    assert sha256 == file_sha256(path) and "state_dict" in checkpoint


def test_a_broken_card_beside_the_checkpoint_falls_back_to_the_stored_one(trained, tmp_path):
    import shutil

    path, _ = trained
    copy = tmp_path / "model.ckpt"
    shutil.copy(path, copy)
    (tmp_path / "model_card.json").write_text("{ not json")
    with pytest.warns(UserWarning, match="using the card stored in the checkpoint"):
        model = pirecon.load(copy)
    assert model.card is None  # the fixture's checkpoint (a bare Trainer) carries no card of its own


def test_physics_for_a_raw_file_is_refused(trained):
    path, test = trained
    model = pirecon.load(path)
    with pytest.raises(ValueError) as info:
        model.reconstruct(test, physics=model.physics, progress=False)
    assert str(info.value) == (f"physics: expected none for the raw file {test} (its physics comes from the file), "
                               "found one")


def test_a_nifti_without_orientation_stays_without_one(trained, tmp_path):
    import nibabel
    import numpy as np
    import pydicom

    from pirecon.inference import write_nifti

    path, _ = trained
    with pytest.warns(UserWarning, match="no patient orientation"):
        source = write_nifti(tmp_path / "plain.nii", np.zeros((2, 40, 40), np.float32), spacing=(3.0, 0.8, 0.8))
    recon = pirecon.load(path).reconstruct(source, progress=False)
    assert recon.provenance["affine_lps"] is None and recon.provenance["pixel_spacing_mm"] == pytest.approx([1, 1])
    with pytest.warns(UserWarning, match="no patient"):
        files = pirecon.save(recon, tmp_path / "dicom", format="dicom")
    assert pydicom.dcmread(files[0]).SOPClassUID == "1.2.840.10008.5.1.4.1.1.7"
    with pytest.warns(UserWarning, match="no patient orientation"):
        out = pirecon.save(recon, tmp_path / "again.nii.gz")
    header = nibabel.load(out).header
    assert int(header["qform_code"]) == 0 and int(header["sform_code"]) == 0
    assert header.get_zooms() == pytest.approx((1.0, 1.0, 3.0))
    stored = json.loads(header.extensions[0].get_content())
    assert stored["source_file"] == str(source) and stored["simulated"]["seed"] == 0


def test_the_source_slice_thickness_is_kept_apart_from_the_slice_spacing(trained, tmp_path):
    import numpy as np
    import pydicom

    from test_export import make_ct_source, positions_along_normal

    path, _ = trained
    make_ct_source(tmp_path / "source", np.zeros((2, 32, 32)), positions_along_normal([0.0, 4.0]))  # 2.5 mm thick
    recon = pirecon.load(path).reconstruct(tmp_path / "source", progress=False)
    ds = pydicom.dcmread(pirecon.save(recon, tmp_path / "out", format="dicom")[0])
    assert float(ds.SliceThickness) == 2.5 and float(ds.SpacingBetweenSlices) == pytest.approx(4.0)


def test_lodopab_units_follow_the_models_training(tmp_path):
    import h5py
    import numpy as np

    from pirecon.ct import RayTransform, fbp
    from pirecon.data.readers import LODOPAB_SINOGRAM_SHAPE, lodopab_geometry
    from pirecon.inference import ClassicalMethod, ModelCard, Reconstructor

    observations = np.random.default_rng(1).uniform(0, 0.01, size=(1, *LODOPAB_SINOGRAM_SHAPE)).astype(np.float32)
    path = tmp_path / "observation_validation_000.h5"
    with h5py.File(path, "w") as f:
        f["data"] = observations
    card = ModelCard({"training_data": {"source": "lodopab", "train": {"units": "normalized"}}})
    model = Reconstructor(ClassicalMethod("fbp"), name="fbp", card=card, backend="astra")
    recon = model.reconstruct(path, progress=False)
    expected = fbp(torch.from_numpy(observations)[:, None], RayTransform(lodopab_geometry(), backend="astra"))
    torch.testing.assert_close(recon.image, expected, rtol=1e-4, atol=1e-6)
    assert recon.provenance["lodopab_units"] == "normalized"


def test_outputs_the_source_cannot_give_are_refused_before_any_work(trained, tmp_path, capsys, monkeypatch):
    from pirecon.cli import main
    from pirecon.inference import Reconstructor

    path, test = trained
    monkeypatch.setattr(Reconstructor, "reconstruct", lambda *a, **k: pytest.fail("reconstructed before refusing"))
    assert main(["reconstruct", str(test), "--checkpoint", str(path), "--out", str(tmp_path / "x.h5"),
                 "--format", "nifti"]) == 2
    assert capsys.readouterr().err.strip() == (f"pirecon reconstruct: error: out: expected a path ending in .nii or "
                                               f".nii.gz for format 'nifti', found {str(tmp_path / 'x.h5')!r}")
    mri = simulate(tmp_path / "mri.h5", modality="mri", image_size=32, coils=4, n=1, progress=False)
    assert main(["reconstruct", str(mri), "--method", "zero-filled", "--out", str(tmp_path / "m.nii.gz")]) == 2
    assert capsys.readouterr().err.strip() == (
        f"pirecon reconstruct: error: {tmp_path / 'm.nii.gz'}: expected a source with a pixel size to write NIfTI, "
        "found none (raw MRI files carry none); write .h5 instead")


def test_cli_reconstructs_data_of_another_geometry_when_told_to(trained, tmp_path, capsys):
    from pirecon.cli import main

    path, _ = trained
    other = simulate(tmp_path / "other.h5", n=2, progress=False, **dict(CT_SIM, num_angles=12))
    command = ["reconstruct", str(other), "--checkpoint", str(path), "--out", str(tmp_path / "o.h5"), "--quiet"]
    assert main(command) == 2 and "--physics-mismatch use_data" in capsys.readouterr().err
    assert main(command + ["--physics-mismatch", "use_data"]) == 0


def test_predict_refuses_inputs_that_would_share_an_output_before_writing_any(trained, tmp_path, capsys):
    import shutil

    from pirecon.cli import main

    path, test = trained
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    first, second = shutil.copy(test, tmp_path / "a" / "scan.h5"), shutil.copy(test, tmp_path / "b" / "scan.h5")
    out = tmp_path / "out"
    assert main(["predict", "--ckpt_path", str(path), "--data.predict", str(first), str(second),
                 "--writer.output_dir", str(out), "--quiet"]) == 2
    assert capsys.readouterr().err.strip() == (
        f"pirecon predict: error: --data.predict: expected inputs with distinct names, found {first} and {second}, "
        f"which would both be written to {out / 'scan_LearnedPrimalDual.h5'}")
    assert not out.exists()
