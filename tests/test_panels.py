"""Test panels: deterministic bytes, a manifest that vouches for them, lazy builds, verification, the CLI."""

import json
import math
import subprocess
import sys

import h5py
import numpy as np
import pytest

from pirecon._validation import SPLITS
from pirecon.errors import ArgumentError
from pirecon.evaluation import PanelError, build_panel, panel_conditions, verify_panel
from pirecon.evaluation.panels import LESION_CONTRASTS, LESION_RADII, SMALL_CASES


@pytest.fixture(scope="module")
def ct_panel(tmp_path_factory):
    directory = tmp_path_factory.mktemp("ct-v1")
    return directory, build_panel("ct-v1", directory, small=True, progress=False)


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "pirecon.cli", *map(str, args)], capture_output=True, text=True,
                          timeout=600)


def test_ct_v1_holds_every_condition_of_its_definition_drawn_from_the_panel_stream(ct_panel):
    directory, manifest = ct_panel
    names = [c["name"] for c in manifest["conditions"]]
    assert names[:9] == ["in_distribution", "noise_2x", "noise_4x", "angles_20", "angles_10", "limited_angle_120",
                         "pixel_detector", "poisson_low_dose", "shepp_logan"]
    assert names[-1] == "small_features" and len(names) == 9 + len(LESION_RADII) * len(LESION_CONTRASTS) + 1
    assert manifest["skipped"] == [{"name": "real_images",
                                    "reason": "no --images DIR given (a directory of DICOM or PNG slices)"}]
    assert (manifest["panel"], manifest["version"], manifest["small"], manifest["complete"]) == ("ct-v1", 1, True, True)
    assert len({c["seed"] for c in manifest["conditions"]}) == len(names)  # every condition its own stream
    for record in manifest["conditions"]:
        with h5py.File(directory / record["file"], "r") as f:
            assert f.attrs["split"] == "panel" and int(f.attrs["seed"]) == record["seed"]
            assert f["sinogram"].shape[0] == SMALL_CASES == record["n"]
    with h5py.File(directory / "in_distribution.h5", "r") as f:  # the LPD-ellipses protocol
        geometry = json.loads(f.attrs["geometry"])
        assert (len(geometry["angles"]), geometry["num_detectors"], geometry["image_shape"]) == (30, 183, [128, 128])
    with h5py.File(directory / "limited_angle_120.h5", "r") as f:
        angles = json.loads(f.attrs["geometry"])["angles"]
        assert len(angles) == 30 and angles[0] == 0 and max(angles) == pytest.approx(math.radians(116))
    with h5py.File(directory / "angles_10.h5", "r") as f:
        assert f["sinogram"].shape[1] == 10
    with h5py.File(directory / "lesions_r0.08_c0.2.h5", "r") as f:
        labels, masks = f["labels"][()], f["segmentation"][()]
        area = math.pi * (0.08 * 64) ** 2  # radius 0.08 of the half-width 64 pixels
        assert all(abs(m.sum() - area) < 0.35 * area for m, label in zip(masks, labels) if label)
        assert not masks[labels == 0].any()
    with h5py.File(directory / "small_features.h5", "r") as f:
        assert f["labels"][()].all()  # features in every case: a test of recall


def test_the_manifest_satisfies_its_schema_and_the_schema_rejects_a_broken_one(ct_panel):
    from pathlib import Path

    import jsonschema

    directory, _ = ct_panel
    schema = json.loads((Path(__file__).resolve().parents[1] / "data_specs" / "panel.schema.json").read_text())
    manifest = json.loads((directory / "panel.json").read_text())
    jsonschema.validate(manifest, schema)
    broken = json.loads(json.dumps(manifest))
    broken["conditions"][0]["sha256"] = "xyz"
    with pytest.raises(jsonschema.ValidationError, match="does not match"):
        jsonschema.validate(broken, schema)
    broken = {**manifest, "split": "train"}
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(broken, schema)


def test_a_panel_is_the_same_bytes_when_built_again_and_a_build_keeps_the_files_it_vouches_for(ct_panel, tmp_path):
    directory, manifest = ct_panel
    again = build_panel("ct-v1", tmp_path / "again", small=True, progress=False)
    assert [c["sha256"] for c in again["conditions"]] == [c["sha256"] for c in manifest["conditions"]]
    stamps = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "again").glob("*.h5")}
    (tmp_path / "again" / "noise_2x.h5").write_bytes(b"tampered")
    rebuilt = build_panel("ct-v1", tmp_path / "again", small=True, progress=False)  # lazy: only the bad file
    assert rebuilt["conditions"] == again["conditions"]
    changed = {p.name for p in (tmp_path / "again").glob("*.h5") if p.stat().st_mtime_ns != stamps[p.name]}
    assert changed == {"noise_2x.h5"}
    with pytest.raises(PanelError, match=r"expected an empty directory or panel 'mri-v1' \(small=True\), found "
                                         r"panel 'ct-v1' \(small=True\)$"):
        build_panel("mri-v1", tmp_path / "again", small=True, progress=False)


def test_verify_names_each_difference_from_the_manifest_and_the_definition(ct_panel, tmp_path):
    import shutil

    directory, _ = ct_panel
    assert verify_panel(directory)["panel"] == "ct-v1"
    copy = tmp_path / "copy"
    shutil.copytree(directory, copy)
    with h5py.File(copy / "angles_20.h5", "r+") as f:
        f["sinogram"][0, 0, 0] += 1.0
    manifest = json.loads((copy / "panel.json").read_text())
    manifest["conditions"][1]["parameters"]["noise"] = "gaussian:0.11"
    (copy / "panel.json").write_text(json.dumps(manifest))
    (copy / "angles_10.h5").unlink()
    with pytest.raises(PanelError) as err:
        verify_panel(copy)
    message = str(err.value)
    assert message.startswith(f"{copy}: expected panel ct-v1 as its manifest and definition give, found 3 "
                              "difference(s): ")
    assert "noise_2x: parameters differ from ct-v1's definition" in message
    assert "angles_20: angles_20.h5 has SHA-256 " in message and "angles_10: file angles_10.h5 missing" in message
    manifest["complete"] = False
    (copy / "panel.json").write_text(json.dumps(manifest))
    with pytest.raises(PanelError, match=r"expected a complete panel, found a build that stopped after 26 "
                                         r"conditions \(run `pirecon panel build` again\)$"):
        verify_panel(copy)
    with pytest.raises(PanelError, match=r"expected a panel directory with panel.json, found none"):
        verify_panel(tmp_path)


def test_the_panel_stream_is_not_a_training_validation_calibration_or_test_stream():
    assert SPLITS["panel"] not in {SPLITS[k] for k in ("train", "validation", "test", "calibration")}
    conditions = panel_conditions("mri-v1", small=True)
    assert [c.name for c in conditions][:6] == ["in_distribution", "acceleration_8x", "equispaced_mask", "coils_4",
                                                "low_snr", "shepp_logan"]
    assert {c.parameters["modality"] for c in conditions} == {"mri"}
    with pytest.raises(ArgumentError, match=r"^panel: expected one of ct-v1, mri-v1, found 'ct-v2'$"):
        panel_conditions("ct-v2")


def test_real_images_become_a_condition_of_every_slice(tmp_path):
    from PIL import Image

    folder = tmp_path / "slices"
    folder.mkdir()
    yy, xx = np.mgrid[:40, :40]
    for k in range(3):
        Image.fromarray((((xx - 20) ** 2 + (yy - 20) ** 2 < (10 + 3 * k) ** 2) * 200).astype(np.uint8)).save(
            folder / f"{k}.png")
    manifest = build_panel("ct-v1", tmp_path / "panel", small=True, images=folder, progress=False)
    real = manifest["conditions"][-1]
    assert (real["name"], real["kind"], real["n"], manifest["skipped"]) == ("real_images", "user_images", None, [])
    with h5py.File(tmp_path / "panel" / "real_images.h5", "r") as f:
        assert f["sinogram"].shape[0] == 3
    assert verify_panel(tmp_path / "panel")["complete"]


def test_the_cli_builds_and_verifies_and_refuses_a_bad_directory_in_one_line(tmp_path):
    built = _cli("panel", "build", "ct-v1", "--out", tmp_path / "p", "--small", "--quiet")
    assert built.returncode == 0, built.stderr
    assert built.stdout.startswith(f"wrote {tmp_path / 'p'}/panel.json: ct-v1, 26 conditions, {26 * SMALL_CASES} "
                                   "cases; skipped real_images")
    verified = _cli("panel", "verify", tmp_path / "p")
    assert verified.stdout.strip() == (f"OK {tmp_path / 'p'}: ct-v1 (small, 26 conditions), every file as its "
                                       "manifest and definition give")
    bad = _cli("panel", "verify", tmp_path)
    assert bad.returncode == 2 and bad.stderr.strip() == (
        f"pirecon panel: error: {tmp_path}: expected a panel directory with panel.json, found none (build one with "
        f"`pirecon panel build NAME --out {tmp_path}`)")
