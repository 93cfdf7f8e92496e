"""Simulated raw data files: validity, determinism, inverse crime, lesions, image directories, atomicity, errors."""

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import time

import h5py
import numpy as np
import pytest
import torch

from pirecon.ct import RayTransform
from pirecon.data.formats import read_ct_raw, read_mri_raw
from pirecon.data.simulate import Simulator, add_simulate_arguments, simulate, simulate_main
from pirecon.data.validate import validate
from pirecon.mri import SenseOperator
from pirecon.phantoms import body_mask, lesions, random_ellipses

CT = dict(image_size=32, num_angles=16, progress=False)
MRI = dict(modality="mri", image_size=32, coils=4, progress=False)


def relative(a, b) -> float:
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


# --------------------------------------------------------------------------
# files that validate, with consistent contents
# --------------------------------------------------------------------------

def test_ct_file_validates_and_is_the_projection_of_its_ground_truth(tmp_path):
    path = simulate(tmp_path / "ct.h5", n=5, seed=0, noise="none", **CT)
    summary = validate(path)
    assert summary["kind"] == "ct_raw" and summary["num_slices"] == 5
    raw = read_ct_raw(path)
    assert raw.sinogram.shape == (5, 16, raw.geometry.num_detectors) and raw.sinogram.dtype == np.float32
    assert raw.ground_truth.shape == (5, 32, 32) and raw.noise is None
    projected = RayTransform(raw.geometry)(torch.from_numpy(raw.ground_truth)[:, None])[:, 0].numpy()
    assert relative(raw.sinogram, projected) < 1e-5
    # the default noise follows the LPD-ellipses protocol: 5 % of the mean |data|
    noisy = read_ct_raw(simulate(tmp_path / "noisy.h5", n=5, seed=0, **CT))
    assert noisy.noise.to_dict()["relative"] == 0.05
    std = (noisy.sinogram - raw.sinogram).std(axis=(1, 2)) / np.abs(raw.sinogram).mean(axis=(1, 2))
    assert np.allclose(std, 0.05, rtol=0.25)


def test_ct_default_geometry_at_128_is_lpd_ellipses():
    from pirecon.ct import lpd_ellipses_geometry

    assert Simulator("ct").geometry == lpd_ellipses_geometry()
    assert Simulator("ct", image_size=64).geometry.sinogram_shape[0] == 30


def test_mri_file_validates_and_is_sense_of_its_ground_truth(tmp_path):
    path = simulate(tmp_path / "mri.h5", n=4, seed=0, noise="none", **MRI)
    summary = validate(path)
    assert summary["kind"] == "mri_raw" and summary["num_coils"] == 4
    raw = read_mri_raw(path)
    assert raw.kspace.shape == (4, 4, 32, 32) and raw.kspace.dtype == np.complex64
    assert raw.mask.shape == (4, 1, 1, 32) and raw.coil_maps.shape == (4, 4, 32, 32)
    assert raw.ground_truth.dtype == np.complex64 and np.iscomplexobj(raw.ground_truth)
    assert np.abs(np.angle(raw.ground_truth[np.abs(raw.ground_truth) > 0.05])).std() > 0.1  # a real phase
    x = torch.from_numpy(raw.ground_truth)[:, None]
    expected = SenseOperator(torch.from_numpy(raw.coil_maps), torch.from_numpy(raw.mask))(x).numpy()
    assert relative(raw.kspace, expected) < 1e-5
    # fully sampled, noise-free: RSS of the coil images is |x| (maps have unit RSS)
    assert np.allclose(raw.reconstruction_rss, np.abs(raw.ground_truth), atol=1e-5)
    sampled = raw.mask[:, 0, 0].mean(axis=1)
    assert 0.1 < sampled.mean() < 0.45 and len({tuple(m) for m in raw.mask[:, 0, 0]}) > 1


def test_mri_noise_is_complex_gaussian_of_the_given_std():
    clean = Simulator("mri", image_size=32, coils=4, noise="none").simulate(3, 0, 2)
    noisy = Simulator("mri", image_size=32, coils=4, noise="gaussian:0.02").simulate(3, 0, 2)
    sampled = np.broadcast_to(clean["mask"], clean["kspace"].shape) > 0
    diff = (noisy["kspace"] - clean["kspace"])[sampled]
    assert abs(diff.real.std() - 0.02 / np.sqrt(2)) < 0.002 and abs(diff.imag.std() - 0.02 / np.sqrt(2)) < 0.002
    assert np.all(noisy["kspace"][~sampled] == 0)



def test_mri_noise_is_the_complex_gaussian_model_and_is_stored(tmp_path):
    from pirecon.data.formats import read_mri_noise
    from pirecon.noise import ComplexGaussianNoise

    sim = Simulator("mri", image_size=32, coils=4, noise="gaussian:0.02")
    assert sim.noise == ComplexGaussianNoise(0.02) and Simulator("mri", image_size=32, coils=4).noise is None
    path = simulate(tmp_path / "mri.h5", n=2, seed=0, noise="gaussian:0.02", **MRI)
    assert read_mri_raw(path).noise == ComplexGaussianNoise(0.02) == read_mri_noise(path)
    assert read_mri_raw(simulate(tmp_path / "clean.h5", n=2, seed=0, **MRI)).noise is None


# --------------------------------------------------------------------------
# CT transmission noise: attenuation in 1/mm
# --------------------------------------------------------------------------

def test_ct_poisson_default_scale_is_water(tmp_path):
    """With Poisson noise phantom value 1 is water (0.02 / mm): every ray through the object detects photons."""
    from pirecon.noise import MU_WATER_PER_MM, TransmissionPoisson

    assert Simulator("ct", noise="poisson:1e4").intensity_scale == MU_WATER_PER_MM == 0.02
    assert Simulator("ct").intensity_scale == 1.0 and Simulator("ct", noise="none").intensity_scale == 1.0
    assert Simulator("ct", noise="poisson:1e4", intensity_scale=0.5).intensity_scale == 0.5
    path = simulate(tmp_path / "poisson.h5", n=4, seed=0, noise="poisson:1e4", progress=False)  # LPD-ellipses geometry
    raw = read_ct_raw(path)
    assert raw.noise == TransmissionPoisson(1e4)
    phantoms = random_ellipses((128, 128), 4, seed=0)[:, 0].numpy()
    np.testing.assert_allclose(raw.ground_truth, 0.02 * phantoms, rtol=1e-6, atol=0)  # ground truth in 1/mm
    clean = RayTransform(raw.geometry)(torch.from_numpy(raw.ground_truth)[:, None])[:, 0].double()
    through = clean > 0
    assert float(clean.max()) < 10
    cap = np.log(1e4 / 0.1)
    assert int((raw.sinogram[through.numpy()] >= cap - 1e-3).sum()) == 0  # no zero-count ray
    z = ((torch.from_numpy(raw.sinogram).double() - clean) * torch.sqrt(1e4 * torch.exp(-clean)))[through]
    assert abs(float(z.var()) - 1) < 0.05
    with h5py.File(path) as f:
        assert json.loads(f.attrs["simulation"])["intensity_scale"] == 0.02


def test_ct_poisson_on_phantom_units_is_refused(tmp_path):
    with pytest.raises(ValueError) as err:
        simulate(tmp_path / "starved.h5", n=2, seed=0, noise="poisson:1e4", intensity_scale=1.0, progress=False)
    assert re.fullmatch(r"y: TransmissionPoisson: \d+\.\d% of the \d+ rays through the object would get zero photons "
                        r"at I0 = 10000 \(line integrals up to \d+\.\d\), expected at most 1%; expected attenuation "
                        r"in 1/mm \(water about 0\.02 / mm\) - scale the image \(intensity_scale\) or raise I0 "
                        r"\(allow_photon_starvation=True accepts such data\)", str(err.value)), str(err.value)
    assert not (tmp_path / "starved.h5").exists()


# --------------------------------------------------------------------------
# determinism
# --------------------------------------------------------------------------

@pytest.mark.parametrize("options", [dict(CT), dict(MRI, noise="gaussian:0.01")], ids=["ct", "mri"])
def test_same_seed_same_bytes_and_different_seed_different_data(tmp_path, options):
    read = read_ct_raw if options.get("modality", "ct") == "ct" else read_mri_raw
    key = "sinogram" if read is read_ct_raw else "kspace"
    a = read(simulate(tmp_path / "a.h5", n=5, seed=7, chunk_size=2, **options))
    b = read(simulate(tmp_path / "b.h5", n=5, seed=7, chunk_size=3, **options))
    c = read(simulate(tmp_path / "c.h5", n=5, seed=8, **options))
    for name in (key, "ground_truth"):
        assert getattr(a, name).tobytes() == getattr(b, name).tobytes(), name
    assert not np.array_equal(getattr(a, key), getattr(c, key))
    assert not np.array_equal(a.ground_truth, c.ground_truth)
    # sample i depends on (seed, i) only: a longer run starts with the same samples
    d = read(simulate(tmp_path / "d.h5", n=3, seed=7, **options))
    assert np.array_equal(getattr(d, key), getattr(a, key)[:3])


# --------------------------------------------------------------------------
# inverse crime
# --------------------------------------------------------------------------

@pytest.mark.parametrize("modality", ["ct", "mri"])
def test_oversampling_gives_different_but_close_data(modality):
    options = dict(image_size=32, noise="none", **({"num_angles": 16} if modality == "ct" else {"coils": 4}))
    key = "sinogram" if modality == "ct" else "kspace"
    crime = Simulator(modality, "shepp-logan", **options).simulate(0, 0, 1)
    fine2 = Simulator(modality, "shepp-logan", oversample=2, **options).simulate(0, 0, 1)
    fine4 = Simulator(modality, "shepp-logan", oversample=4, **options).simulate(0, 0, 1)
    assert np.array_equal(crime["ground_truth"], fine2["ground_truth"])  # the truth lives on the recon grid
    error = relative(crime[key], fine4[key])
    assert 0.01 < error < 0.5
    # the finer the simulation grid, the closer to the continuous object: 2x is closer to 4x than 1x is
    assert relative(fine2[key], fine4[key]) < 0.6 * error


def test_oversampled_mri_kspace_matches_a_smooth_object_exactly():
    """For a smooth image, cropping the fine k-space (scaled, phase-corrected) gives the coarse k-space."""
    from pirecon.data.simulate import _pixel_coords

    def smooth(shape, seed, start, count):  # a Gaussian blob: (nearly) band-limited
        y, x = _pixel_coords(shape[0])[:, None], _pixel_coords(shape[1])[None, :]
        image = torch.exp(-((x - 0.1) ** 2 + 2 * (y + 0.2) ** 2) / 0.08)
        return image.float().expand(count, 1, *shape), None, None

    sim = Simulator("mri", image_size=32, coils=4, noise="none", oversample=2)
    sim._phantom = smooth
    fine = sim.simulate(0, 0, 1)
    sim.oversample = 1
    coarse = sim.simulate(0, 0, 1)
    assert relative(fine["kspace"], coarse["kspace"]) < 1e-4


# --------------------------------------------------------------------------
# lesions
# --------------------------------------------------------------------------

def test_lesions_phantom_segmentation_labels_and_seeding():
    kwargs = dict(radius_range=(0.1, 0.2), contrast=0.05)
    images, seg, present = lesions((48, 48), 12, seed=3, **kwargs)
    assert images.shape == (12, 1, 48, 48) and seg.dtype == torch.uint8 and present.dtype == torch.int64
    assert set(present.tolist()) == {0, 1}
    background = random_ellipses((48, 48), 12, seed=3)
    assert torch.allclose(images - background, 0.05 * seg.float(), atol=1e-6)
    assert torch.equal(present, (seg.flatten(1).sum(1) > 0).long())
    # inside the object: the background is positive under the lesions (tested at 37 points of each disc)
    assert float((background[seg.bool()] > 0).float().mean()) > 0.97
    # seeded per sample
    again, seg2, present2 = lesions((48, 48), 4, seed=3, start_index=8, **kwargs)
    assert torch.equal(again, images[8:]) and torch.equal(seg2, seg[8:]) and torch.equal(present2, present[8:])
    sl, seg_sl, p_sl = lesions((48, 48), 3, seed=0, background="shepp-logan", presence_probability=1.0, **kwargs)
    assert p_sl.tolist() == [1, 1, 1] and int(seg_sl.sum()) > 0


def test_lesion_file_has_segmentation_and_labels_consistent_with_images(tmp_path):
    path = simulate(tmp_path / "lesions.h5", n=10, seed=5, phantom="lesions", noise="none",
                    lesion_options={"radius_range": (0.1, 0.2), "contrast": 0.1}, **CT)
    validate(path)
    raw = read_ct_raw(path)
    assert raw.segmentation.shape == (10, 32, 32) and raw.labels.shape == (10,)
    assert set(raw.labels.tolist()) == {0, 1}
    assert np.array_equal(raw.labels, (raw.segmentation.reshape(10, -1).max(1) > 0).astype(np.int64))
    background = random_ellipses((32, 32), 10, seed=5)[:, 0].numpy()
    assert np.allclose(raw.ground_truth - background, 0.1 * raw.segmentation, atol=1e-6)


# --------------------------------------------------------------------------
# images:DIR
# --------------------------------------------------------------------------

def test_images_directory(tmp_path):
    from PIL import Image

    folder = tmp_path / "images"
    folder.mkdir()
    yy, xx = np.mgrid[0:40, 0:50]
    Image.fromarray((xx * 5).astype(np.uint8)).save(folder / "a_gradient.png")  # 40 x 50, values 0..245
    disc = ((yy[:, :40] - 20) ** 2 + (xx[:, :40] - 20) ** 2 < 15 ** 2).astype(np.uint8) * 200 + 20
    Image.fromarray(disc).save(folder / "b_disc.png")
    path = simulate(tmp_path / "img.h5", phantom=f"images:{folder}", seed=0, noise="none", **CT)
    validate(path)
    raw = read_ct_raw(path)
    assert raw.ground_truth.shape == (2, 32, 32)
    assert raw.ground_truth.min() >= 0 and raw.ground_truth.max() <= 1
    disc_gt = raw.ground_truth[1]
    assert disc_gt[16, 16] == pytest.approx(1.0) and disc_gt[0, 0] == pytest.approx(0.0)
    gradient = raw.ground_truth[0, 16]  # a row through the middle: increasing from left to right
    assert np.all(np.diff(gradient[2:-2]) > 0)
    with pytest.raises(ValueError) as err:
        simulate(tmp_path / "x.h5", phantom=f"images:{folder}", n=3, **CT)
    assert str(err.value) == f"n: expected at most 2 (the number of images in {str(folder)!r}), found 3"


# --------------------------------------------------------------------------
# lesions:images:DIR
# --------------------------------------------------------------------------

LESION_OPTIONS = {"radius_range": (0.1, 0.2), "contrast": 0.1, "presence_probability": 0.7}


def _anatomy_directory(folder):
    """Three PNGs (48 x 40, padded to squares): a body (an ellipse with a dark hole) above a separate bright table."""
    from PIL import Image

    folder.mkdir()
    yy, xx = np.mgrid[0:48, 0:40]
    for k in range(3):
        body = ((yy - 19) / (14 - k)) ** 2 + ((xx - 20) / 15) ** 2 <= 1
        hole = (yy - 18) ** 2 + (xx - 24 + k) ** 2 <= 16
        image = np.where(body & ~hole, 120 + 20 * k, 10).astype(np.uint8)
        image[39:47, 1:39] = 250  # the table, apart from the body
        Image.fromarray(image).save(folder / f"slice_{k}.png")
    return folder


def test_lesions_on_image_directory(tmp_path):
    folder = _anatomy_directory(tmp_path / "anatomy")
    path = simulate(tmp_path / "lesions.h5", phantom=f"lesions:images:{folder}", n=7, seed=3, noise="none",
                    lesion_options=LESION_OPTIONS, **CT)
    validate(path)
    raw = read_ct_raw(path)
    assert raw.ground_truth.shape == raw.segmentation.shape == (7, 32, 32) and raw.labels.shape == (7,)
    assert raw.segmentation.dtype == np.uint8 and raw.labels.dtype == np.int64
    assert set(raw.labels.tolist()) == {0, 1}
    assert np.array_equal(raw.labels, (raw.segmentation.reshape(7, -1).max(1) > 0).astype(np.int64))
    with h5py.File(path) as f:
        assert json.loads(f.attrs["simulation"])["phantom"] == f"lesions:images:{folder}"
    # sample i is image i % 3 plus lesions of contrast 0.1; more samples than images: new lesions on each pass
    images = read_ct_raw(simulate(tmp_path / "images.h5", phantom=f"images:{folder}", noise="none", **CT))
    background = images.ground_truth[np.arange(7) % 3]
    assert np.allclose(raw.ground_truth - background, 0.1 * raw.segmentation, atol=1e-6)
    assert not np.array_equal(raw.segmentation[0], raw.segmentation[3])
    # inside the body: never on the table (the bottom rows), in the hole or in the air
    lesion = raw.segmentation.astype(bool)
    body = body_mask(torch.from_numpy(background)[:, None])[:, 0].numpy()
    assert lesion.any() and not (lesion & ~body).any()
    assert not lesion[:, 24:].any()


def test_lesions_on_images_samples_depend_on_seed_and_index_only(tmp_path):
    from pirecon._validation import split_seed
    from pirecon.data.datasets import SimulationDataset

    folder = _anatomy_directory(tmp_path / "anatomy")
    phantom = f"lesions:images:{folder}"
    options = dict(phantom=phantom, noise="none", lesion_options=LESION_OPTIONS, **CT)
    a = read_ct_raw(simulate(tmp_path / "a.h5", n=5, seed=7, chunk_size=2, **options))
    b = read_ct_raw(simulate(tmp_path / "b.h5", n=5, seed=7, chunk_size=3, **options))
    c = read_ct_raw(simulate(tmp_path / "c.h5", n=5, seed=8, **options))
    for name in ("sinogram", "ground_truth", "segmentation", "labels"):
        assert getattr(a, name).tobytes() == getattr(b, name).tobytes(), name
    assert not np.array_equal(a.segmentation, c.segmentation)
    d = read_ct_raw(simulate(tmp_path / "d.h5", n=2, seed=7, **options))  # a longer run starts the same
    assert np.array_equal(d.segmentation, a.segmentation[:2]) and np.array_equal(d.ground_truth, a.ground_truth[:2])
    # sample i of the file is sample i of the Simulator stream and of the on-the-fly dataset
    sim = Simulator("ct", phantom, image_size=32, num_angles=16, noise="none", lesion_options=LESION_OPTIONS)
    for i in range(5):
        one = sim.simulate(split_seed(7, "train"), i, 1)
        assert np.array_equal(one["ground_truth"][0], a.ground_truth[i])
        assert np.array_equal(one["segmentation"][0], a.segmentation[i]) and one["labels"][0] == a.labels[i]
    dataset = SimulationDataset("ct", phantom, seed=7, length=5, block_size=2, image_size=32, num_angles=16,
                                noise="none", lesion_options=LESION_OPTIONS)
    for item in dataset:
        i = item["index"]
        assert np.array_equal(item["ground_truth"][0].numpy(), a.ground_truth[i])
        assert np.array_equal(item["segmentation"][0].numpy(), a.segmentation[i]) and int(item["label"]) == a.labels[i]


def test_lesions_on_images_oversampled_get_the_same_lesions(tmp_path):
    """The lesions are placed in the body of the reconstruction-grid image, so the fine rendering has them too."""
    folder = _anatomy_directory(tmp_path / "anatomy")
    options = dict(image_size=32, num_angles=16, noise="none",
                   lesion_options=dict(LESION_OPTIONS, presence_probability=1.0))
    plain = Simulator("ct", f"lesions:images:{folder}", **options)
    fine = Simulator("ct", f"lesions:images:{folder}", oversample=2, **options)
    a, b = plain.simulate(0, 0, 6), fine.simulate(0, 0, 6)
    for key in ("ground_truth", "segmentation", "labels"):
        assert np.array_equal(a[key], b[key]), key
    assert relative(b["sinogram"], a["sinogram"]) < 0.1
    _, seg, labels = fine._phantom((32, 32), 0, 0, 6)
    _, seg_fine, labels_fine = fine._phantom((64, 64), 0, 0, 6)
    assert torch.equal(labels_fine, labels) and labels.tolist() == [1] * 6
    covered = torch.nn.functional.avg_pool2d(seg_fine.float(), 2) > 0  # the fine discs cover the coarse ones
    assert bool((covered | ~seg.bool()).all())


def test_lesions_on_images_errors(tmp_path):
    from PIL import Image

    folder = _anatomy_directory(tmp_path / "anatomy")
    with pytest.raises(ValueError) as err:
        Simulator("ct", f"lesions:images:{folder}", image_size=32, lesion_options={"background": "ellipses"})
    assert str(err.value) == (f"lesion_options: 'background' only applies to phantom 'lesions', "
                              f"found phantom 'lesions:images:{folder}'")
    with pytest.raises(ValueError) as err:
        Simulator("ct", f"lesions:images:{folder}", image_size=32, lesion_options={"body_threshold": 1.5})
    assert str(err.value) == "body_threshold: expected a number in [0, 1), found 1.5"
    blank = tmp_path / "blank"
    blank.mkdir()
    for k in range(2):
        Image.fromarray(np.full((16, 16), 40 * k, np.uint8)).save(blank / f"{k}.png")
    with pytest.raises(ValueError) as err:
        simulate(tmp_path / "blank.h5", phantom=f"lesions:images:{blank}", **CT)
    assert str(err.value) == (f"phantom: expected images with a body (pixels above body_threshold after scaling "
                              f"to [0, 1]) in {str(blank)!r} to place lesions in, found only constant images")
    assert not (tmp_path / "blank.h5").exists()
    # a constant image among others: its samples get no lesion (label 0, empty segmentation)
    Image.fromarray(np.full((16, 16), 40, np.uint8)).save(folder / "slice_9_blank.png")
    out = Simulator("ct", f"lesions:images:{folder}", image_size=32, num_angles=8, noise="none",
                    lesion_options={"presence_probability": 1.0}).simulate(0, 3, 4)
    # samples 3, 4, 5, 6: images 3 (the constant one, last in the reader's order), 0, 1, 2
    assert out["labels"].tolist() == [0, 1, 1, 1] and not out["segmentation"][0].any()


# --------------------------------------------------------------------------
# atomicity: a killed run leaves nothing that looks whole
# --------------------------------------------------------------------------

def test_killed_simulation_leaves_no_file(tmp_path):
    out = tmp_path / "killed.h5"
    log = tmp_path / "stderr.txt"
    code = ("import sys; from pirecon.data.simulate import simulate; "
            "simulate(sys.argv[1], n=20000, seed=0, image_size=32, num_angles=16, chunk_size=16)")
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    with open(log, "wb") as stderr:
        proc = subprocess.Popen([sys.executable, "-c", code, str(out)], stderr=stderr, env=env)
    try:
        deadline = time.monotonic() + 60
        started = re.compile(r"\b[1-9]\d*/20000\b")  # the progress bar has counted simulated slices
        while not started.search(log.read_text(errors="replace")):
            assert proc.poll() is None, f"simulate ended early: {log.read_text()}"
            assert time.monotonic() < deadline, "simulate did not start"
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert not out.exists()
    for leftover in tmp_path.iterdir():
        if leftover.name != log.name:
            with pytest.raises((ValueError, OSError)):
                validate(leftover)


# --------------------------------------------------------------------------
# errors and the command line
# --------------------------------------------------------------------------

@pytest.mark.parametrize("kwargs, message", [
    (dict(modality="pet"), "modality: expected 'ct' or 'mri', found 'pet'"),
    (dict(phantom="cubes"), "phantom: expected one of 'ellipses', 'shepp-logan', 'lesions', 'images:DIR' or "
                            "'lesions:images:DIR', found 'cubes'"),
    (dict(phantom="lesions:ellipses"), "phantom: expected one of 'ellipses', 'shepp-logan', 'lesions', 'images:DIR' "
                                       "or 'lesions:images:DIR', found 'lesions:ellipses'"),
    (dict(phantom="images:/no/such/dir"), "phantom: expected an existing image directory after 'images:', "
                                          "found no directory at '/no/such/dir'"),
    (dict(phantom="lesions:images:/no/such/dir"), "phantom: expected an existing image directory after "
                                                  "'lesions:images:', found no directory at '/no/such/dir'"),
    (dict(phantom="lesions:images:"), "phantom: expected 'lesions:images:DIR' with a directory, "
                                      "found 'lesions:images:'"),
    (dict(n=0), "n: expected a positive integer, found 0"),
    (dict(noise="laplace:1"), "noise: expected 'none', 'gaussian:LEVEL' or 'poisson:I0', found 'laplace:1'"),
    (dict(noise="gaussian:-1"), "noise: expected a positive finite level after 'gaussian':, found 'gaussian:-1'"),
    (dict(modality="mri", noise="poisson:1000"), "noise: expected 'none' or 'gaussian:SIGMA', found 'poisson:1000'"),
    (dict(oversample=0), "oversample: expected a positive integer, found 0"),
    (dict(modality="mri", num_angles=30),
     "num_angles: only applies to modality 'ct', found it set with modality 'mri'"),
    (dict(coils=8), "coils: only applies to modality 'mri', found it set with modality 'ct'"),
    (dict(modality="mri", mask="spiral"), "mask: expected 'random' or 'equispaced', found 'spiral'"),
    (dict(modality="mri", acceleration=4, center_fraction=0.5),
     "center_fraction: expected at most 1/acceleration = 0.25 (the centre alone would exceed the sampled "
     "fraction), found 0.5"),
    (dict(chunk_size=0), "chunk_size: expected a positive integer, found 0"),
    (dict(phantom="ellipses", lesion_options={"contrast": 0.1}),
     "lesion_options: only applies to phantom 'lesions' or 'lesions:images:DIR', found phantom 'ellipses'"),
    (dict(phantom="lesions", lesion_options={"body_threshold": 0.1}),
     "lesion_options: 'body_threshold' only applies to phantom 'lesions:images:DIR', found phantom 'lesions'"),
    (dict(phantom="lesions", lesion_options={"size": 0.1}),
     "lesion_options: expected keys among 'num_lesions', 'radius_range', 'contrast', 'presence_probability', "
     "'background', 'body_threshold', found 'size'"),
])
def test_bad_options_give_clear_errors(tmp_path, kwargs, message):
    args = dict(n=2, seed=0, image_size=32, progress=False)
    args.update(kwargs)
    with pytest.raises(ValueError) as err:
        simulate(tmp_path / "bad.h5", **args)
    assert str(err.value) == message
    assert not (tmp_path / "bad.h5").exists()


def test_command_line_functions(tmp_path, capsys):
    parser = add_simulate_arguments(argparse.ArgumentParser(prog="pirecon simulate"))
    out = tmp_path / "cli.h5"
    args = parser.parse_args(["--modality", "mri", "--phantom", "shepp-logan", "--n", "2", "--seed", "3",
                              "--out", str(out), "--image-size", "32", "--coils", "2", "--acceleration", "2",
                              "--mask", "equispaced", "--noise", "gaussian:0.01", "--quiet"])
    assert simulate_main(args) == 0
    assert f"wrote {out}" in capsys.readouterr().out
    assert validate(out)["num_coils"] == 2
    assert read_mri_raw(out).noise.to_dict() == {"type": "complex_gaussian", "format_version": 1, "sigma": 0.01}
    args = parser.parse_args(["--modality", "ct", "--phantom", "ellipses", "--n", "2", "--out", str(out),
                              "--image-size", "32", "--num-angles", "8", "--oversample", "2",
                              "--noise", "poisson:1e4", "--intensity-scale", "0.02", "--quiet"])
    assert simulate_main(args) == 0
    raw = read_ct_raw(out)
    assert raw.sinogram.shape[1] == 8 and raw.noise.to_dict()["photon_count"] == 1e4
    assert "lesions:images:DIR" in parser.format_help()
    folder = _anatomy_directory(tmp_path / "anatomy")
    args = parser.parse_args(["--phantom", f"lesions:images:{folder}", "--n", "4", "--out", str(out),
                              "--image-size", "32", "--num-angles", "8", "--quiet"])
    assert simulate_main(args) == 0
    raw = read_ct_raw(out)
    assert raw.segmentation.shape == (4, 32, 32) and raw.labels.shape == (4,)
    bad = parser.parse_args(["--modality", "spect", "--n", "1", "--out", str(tmp_path / "no.h5")])
    with pytest.raises(ValueError, match=r"^modality: expected 'ct' or 'mri', found 'spect'$"):
        simulate_main(bad)


def test_the_cli_takes_lesion_options_as_json(tmp_path):
    import h5py

    from pirecon.cli import main

    out = tmp_path / "lesions.h5"
    options = '{"radius_range": [0.1, 0.2], "contrast": 0.3, "presence_probability": 1.0}'
    assert main(["simulate", "--modality", "ct", "--phantom", "lesions", "--image-size", "32", "--num-angles", "10",
                 "--n", "3", "--lesion-options", options, "--out", str(out), "--quiet"]) == 0
    with h5py.File(out, "r") as f:
        described = json.loads(f.attrs["simulation"])
        assert f["labels"].shape == (3,) and f["segmentation"].shape == (3, 32, 32)
    assert described["lesion_options"] == {"radius_range": [0.1, 0.2], "contrast": 0.3, "presence_probability": 1.0}
    assert main(["simulate", "--modality", "ct", "--phantom", "lesions", "--n", "1", "--lesion-options", "[1, 2]",
                 "--out", str(tmp_path / "bad.h5"), "--quiet"]) == 2
    assert not (tmp_path / "bad.h5").exists()
