"""pirecon calibrate --task: a task model's label calibrated on held-out data, used by pirecon.load, exported."""

import json

import h5py
import numpy as np
import pytest
import torch

import pirecon
from pirecon.cli import main
from pirecon.data.simulate import simulate
from pirecon.errors import PireconUserError
from pirecon.inference.calibrate_task import calibrate_task, task_outputs
from pirecon.tasks import calibrate_label, prediction_sets

LESIONS = {"modality": "ct", "phantom": "lesions", "image_size": 32, "num_angles": 10, "seed": 0,
           "noise": "gaussian:0.05",
           "lesion_options": {"radius_range": (0.1, 0.2), "contrast": 0.3, "background": "shepp-logan"}}
HEADS = {"segmentation": {"channels": 4, "depth": 2}, "classification": {"channels": 4, "depth": 2}}
FBP_TASK = {"class_path": "task_adapted", "init_args": {"reconstruction": {"class_path": "classical"}, **HEADS,
                                                        "task_weight": 1.0}}


@pytest.fixture(scope="module")
def task_model(tmp_path_factory):
    """The heads on FBP, trained 600 steps on the lesion stream (enough for an informative, imperfect label)."""
    from pirecon.training.fit import fit_on_simulation

    root = tmp_path_factory.mktemp("task_calibration")
    files = {split: simulate(root / f"{split}.h5", n=n, progress=False, split=split, **LESIONS)
             for split, n in (("validation", 8), ("calibration", 60), ("test", 40), ("train", 4))}
    checkpoint = fit_on_simulation(root / "fbp", files["validation"], model=FBP_TASK, simulation=LESIONS,
                                   steps=600, lr=3e-3, batch_size=4, progress=False,
                                   schedule="constant")
    return checkpoint, files


def test_calibrate_task_stores_the_fit_of_the_held_out_cases_and_the_card_states_the_test_metrics(
        task_model, tmp_path, capsys):
    checkpoint, files = task_model
    out, report = tmp_path / "calibrated.ckpt", tmp_path / "report"
    assert main(["calibrate", "--task", "--checkpoint", str(checkpoint), "--data", str(files["calibration"]),
                 "--out", str(out), "--test", str(files["test"]), "--report", str(report), "--quiet"]) == 0
    printed = capsys.readouterr().out
    stored = torch.load(out, weights_only=True)["pirecon_task_calibration"]
    assert f"wrote {out}: temperature {stored['temperature']:.3f}" in printed
    # the same split and fit, recomputed from the model's logits on the calibration file
    outputs, _ = task_outputs(pirecon.load(checkpoint), [files["calibration"]], progress=False)
    expected = calibrate_label(outputs["label_logit"], outputs["true_label"], 0.1)
    for key in ("temperature", "threshold", "qhat", "n_temperature", "n_conformal", "temperature_note"):
        assert stored[key] == (expected[key] if isinstance(expected[key], (str, type(None))) else
                               pytest.approx(expected[key]))
    assert stored["n_temperature"] + stored["n_conformal"] == 60
    assert stored["files"][0]["cases"] == 60 and len(stored["files"][0]["sha256"]) == 64
    test = stored["test"]
    assert test["cases"] == 40 and 0 < test["lesion_cases"] < 40
    assert test["auc"][1] <= test["auc"][0] <= test["auc"][2] and test["auc"][0] > 0.6  # the heads learnt
    assert 0 <= test["set_coverage"] <= 1 and 0 <= test["set_size"] <= 2
    assert (report / "report.md").is_file() and (report / "reliability.png").stat().st_size > 1000
    card = (tmp_path / "model_card.md").read_text()
    assert "## Diagnostic task" in card
    assert f"qhat {stored['qhat']:.4g}" in card and "| ROC AUC | " in card
    assert "probability at least 0.9, for cases exchangeable with the calibration cases" in card
    floor = test["ece_floor"]  # what a calibrated model shows on 40 cases, beside the measured ECE
    assert 0 < floor["mean"] <= floor["p95"] < 0.5
    assert "| ECE of a calibrated model on as many cases (mean / 95th percentile) | 0.0" in card
    assert f"| {floor['mean']:.3f} / {floor['p95']:.3f} |" in (report / "report.md").read_text()


def test_platt_calibration_is_stored_applied_by_load_and_stated(task_model, tmp_path, capsys):
    checkpoint, files = task_model
    out = tmp_path / "platt.ckpt"
    assert main(["calibrate", "--task", "--checkpoint", str(checkpoint), "--data", str(files["calibration"]),
                 "--out", str(out), "--label-calibration", "platt", "--quiet"]) == 0
    stored = torch.load(out, weights_only=True)["pirecon_task_calibration"]
    assert stored["label_calibration"] == "platt" and stored["method"] == "platt scaling + split conformal"
    assert f"temperature {stored['temperature']:.3f}, bias {stored['bias']:.3f}," in capsys.readouterr().out
    outputs, _ = task_outputs(pirecon.load(checkpoint), [files["calibration"]], progress=False)
    expected = calibrate_label(outputs["label_logit"], outputs["true_label"], 0.1, method="platt")
    assert stored["temperature_note"] is None, stored["temperature_note"]
    assert stored["bias"] == pytest.approx(expected["bias"]) and stored["bias"] != 0.0
    recon = pirecon.load(out).reconstruct(files["test"], progress=False)
    torch.testing.assert_close(recon.task["label"],
                               torch.sigmoid(recon.task["label_logit"] / stored["temperature"] + stored["bias"]))
    assert recon.provenance["task_calibration"]["bias"] == stored["bias"]
    assert "Lesion label calibrated by platt scaling + split conformal" in (tmp_path / "model_card.md").read_text()


def test_a_calibrated_task_model_returns_scaled_labels_sets_and_decisions_and_exports_them(task_model, tmp_path):
    import nibabel

    from pirecon.data import read_reconstruction

    checkpoint, files = task_model
    stored = calibrate_task(checkpoint, files["calibration"], tmp_path / "c.ckpt", progress=False)
    plain = pirecon.load(checkpoint).reconstruct(files["test"], progress=False)
    recon = pirecon.load(tmp_path / "c.ckpt").reconstruct(files["test"], progress=False)
    logit = plain.task["label_logit"]
    torch.testing.assert_close(recon.task["label_logit"], logit)
    torch.testing.assert_close(recon.task["label"], torch.sigmoid(logit / stored["temperature"]))
    np.testing.assert_array_equal(recon.task["label_set"].numpy(),
                                  prediction_sets(recon.task["label"].numpy(), stored["qhat"]).numpy())
    np.testing.assert_array_equal(recon.task["label_decision"].numpy(),
                                  (recon.task["label"] >= stored["threshold"]).numpy().astype(np.uint8))
    assert recon.provenance["task_calibration"]["qhat"] == stored["qhat"]
    written = read_reconstruction(pirecon.save(recon, tmp_path / "r.h5"))
    assert written.task["label_set"].dtype == bool
    np.testing.assert_array_equal(written.task["label_set"], recon.task["label_set"].numpy())
    pirecon.save(recon, tmp_path / "r.nii.gz")
    meta = json.loads(nibabel.load(tmp_path / "r.nii.gz").header.extensions[0].get_content())
    sets = recon.task["label_set"].numpy()
    assert meta["task"]["label_set"] == [[n for n, k in zip(("absent", "present"), row) if k] for row in sets]
    assert meta["task"]["label_decision"] == recon.task["label_decision"].tolist()
    assert meta["task_calibration"]["alpha"] == 0.1


@pytest.mark.filterwarnings("ignore:.*no patient:UserWarning")
def test_dicom_images_carry_each_slice_label_in_their_comments(task_model, tmp_path):
    import pydicom

    checkpoint, files = task_model
    calibrate_task(checkpoint, files["calibration"], tmp_path / "c.ckpt", progress=False)
    recon = pirecon.load(tmp_path / "c.ckpt").reconstruct(files["test"], progress=False)
    written = pirecon.save(recon, tmp_path / "dicom", format="dicom")
    first = pydicom.dcmread(written[0])
    p = float(recon.task["label"][0])
    names = [n for n, k in zip(("absent", "present"), recon.task["label_set"][0].tolist()) if k]
    decision = "present" if int(recon.task["label_decision"][0]) else "absent"
    assert first.ImageComments.endswith(f"pirecon lesion probability {p:.4f}; conformal set {{{', '.join(names)}}} "
                                        f"(alpha 0.1); decision {decision}")
    # no patient geometry (a raw file): no frame of reference for a SEG, the mask is a NIfTI label map
    assert (tmp_path / "dicom_segmentation.nii.gz").is_file() and not (tmp_path / "dicom_segmentation.dcm").exists()


def test_calibrate_task_refuses_the_oracle_other_files_and_models_without_a_label(task_model, tmp_path):
    from pirecon.training import ReconstructionModule

    checkpoint, files = task_model
    with pytest.raises(PireconUserError, match=r"split 'train', a stream training runs read"):
        calibrate_task(checkpoint, files["train"], tmp_path / "a.ckpt", progress=False)
    volume = tmp_path / "volume.h5"  # a file that is not pirecon simulate's: one volume, not cases
    with h5py.File(files["test"], "r") as src, h5py.File(volume, "w") as dst:
        for name in src:
            src.copy(name, dst)
        for key, value in src.attrs.items():
            if key != "simulation":
                dst.attrs[key] = value
    with pytest.raises(PireconUserError) as err:
        calibrate_task(checkpoint, volume, tmp_path / "b.ckpt", progress=False)
    assert str(err.value) == (f"{volume}: expected a file of pirecon simulate (independent slices, the cases of task "
                              "calibration), found a file without the 'simulation' attribute (the slices of one "
                              "volume are not exchangeable cases)")
    stored = torch.load(checkpoint, weights_only=True)
    oracle_spec = {**FBP_TASK, "init_args": {**FBP_TASK["init_args"], "task_input": "truth"}}
    stored["hyper_parameters"] = {**stored["hyper_parameters"], "model": oracle_spec}
    torch.save(stored, tmp_path / "oracle.ckpt")
    with pytest.raises(PireconUserError, match=r"found an oracle \(task_input='truth'"):
        calibrate_task(tmp_path / "oracle.ckpt", files["calibration"], tmp_path / "c.ckpt", progress=False)
    module = ReconstructionModule({"class_path": "task_adapted", "init_args": {
        "reconstruction": {"class_path": "classical"}, "segmentation": {"channels": 4, "depth": 2},
        "classification": None}})
    from pirecon.data.acquisition import read_acquisition

    physics = read_acquisition(files["test"]).physics
    module.set_physics("ct", physics.metadata["geometry"], physics.noise)
    plain = {"state_dict": module.state_dict(), "hyper_parameters": dict(module.hparams)}
    module.on_save_checkpoint(plain)
    torch.save(plain, tmp_path / "segmentation_only.ckpt")
    with pytest.raises(PireconUserError, match=r"^TaskAdapted: expected a task model with a classification head "
                                               r"\(task output 'label_logit'\), found task outputs "):
        calibrate_task(tmp_path / "segmentation_only.ckpt", files["calibration"], tmp_path / "d.ckpt",
                       progress=False)
    assert not any((tmp_path / name).exists() for name in ("a.ckpt", "b.ckpt", "c.ckpt", "d.ckpt"))


def test_a_dicom_seg_references_every_image_and_reads_back_as_the_mask(tmp_path):
    highdicom = pytest.importorskip("highdicom")
    from pirecon.inference.dicom import write_dicom_series
    from pirecon.inference.dicom_seg import seg_supported, write_dicom_seg

    volume = np.random.default_rng(0).random((3, 24, 24)).astype(np.float32)
    images = write_dicom_series(tmp_path / "series", volume, modality="CT", units="arbitrary",
                                pixel_spacing=(0.8, 0.8), slice_thickness=2.0, orientation=[1, 0, 0, 0, 1, 0],
                                positions=np.array([[0.0, 0.0, 2.0 * k] for k in range(3)]))
    assert seg_supported(images)
    mask = np.zeros((3, 24, 24), np.uint8)
    mask[1, 5:9, 10:16] = 1
    path = write_dicom_seg(tmp_path / "seg.dcm", mask, images, model="TaskAdapted", version="0.0")
    seg = highdicom.seg.segread(path)
    import pydicom

    sources = [pydicom.dcmread(f) for f in images]
    assert seg.StudyInstanceUID == sources[0].StudyInstanceUID
    assert seg.FrameOfReferenceUID == sources[0].FrameOfReferenceUID
    back = seg.get_pixels_by_source_instance([s.SOPInstanceUID for s in sources], segment_numbers=[1])
    np.testing.assert_array_equal(back[..., 0], mask)
    assert seg.SegmentSequence[0].SegmentLabel == "lesion"
    with pytest.raises(PireconUserError, match=r"^.*seg.dcm: expected a new output path, found a file that exists"):
        write_dicom_seg(tmp_path / "seg.dcm", mask, images, model="TaskAdapted", version="0.0")
    with pytest.raises(PireconUserError, match=r"^mask: expected \(D, H, W\) with one slice per image \(3\), found "
                                               r"shape \(2, 24, 24\)$"):
        write_dicom_seg(tmp_path / "other.dcm", mask[:2], images, model="TaskAdapted", version="0.0")


def test_a_dicom_source_gets_its_segmentation_as_a_dicom_seg_of_the_written_series(task_model, tmp_path):
    highdicom = pytest.importorskip("highdicom")
    import pydicom

    from test_export import make_ct_source, positions_along_normal

    checkpoint, _ = task_model
    hu = np.full((3, 40, 40), -1000.0)
    yy, xx = np.mgrid[:40, :40]
    for d in range(3):
        hu[d][(yy - 20) ** 2 + (xx - 20) ** 2 < 15 ** 2] = 40.0
    make_ct_source(tmp_path / "source", hu, positions_along_normal([0.0, 2.5, 5.0]))
    recon = pirecon.load(checkpoint).reconstruct(tmp_path / "source", progress=False)
    recon.task["segmentation"][1, 0, 10:14, 12:15] = 0.9  # some foreground to find in the SEG
    images = pirecon.save(recon, tmp_path / "out", format="dicom")
    seg = highdicom.seg.segread(tmp_path / "out_segmentation.dcm")
    written = [pydicom.dcmread(f) for f in images]
    assert seg.FrameOfReferenceUID == written[0].FrameOfReferenceUID
    assert seg.StudyInstanceUID == written[0].StudyInstanceUID
    mask = seg.get_pixels_by_source_instance([ds.SOPInstanceUID for ds in written], segment_numbers=[1])[..., 0]
    np.testing.assert_array_equal(mask, (recon.task["segmentation"][:, 0] > 0.5).numpy())
    assert not (tmp_path / "out_segmentation.nii.gz").exists()
    (tmp_path / "again_segmentation.dcm").write_bytes(b"")  # an existing SEG: refused before any write
    with pytest.raises(PireconUserError, match=r"again_segmentation.dcm: expected a new output path"):
        pirecon.save(recon, tmp_path / "again", format="dicom")
    assert not (tmp_path / "again").exists()
