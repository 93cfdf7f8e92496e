import math

import numpy as np
import pytest
import torch

from conftest import requires_cuda
from pirecon.mri.coils import birdcage_maps, espirit_maps
from pirecon.mri.fft import fft2c
from pirecon.phantoms import shepp_logan

NC, H, W = 8, 96, 96


def _object(shape, *, phase_scale=1.0):
    """Shepp-Logan times a smooth phase, (H, W) complex64, and its support mask."""
    h, w = shape
    img = shepp_logan(shape)[0, 0].double()
    y = 1.0 - (2.0 * torch.arange(h, dtype=torch.float64) + 1.0) / h
    x = (2.0 * torch.arange(w, dtype=torch.float64) + 1.0) / w - 1.0
    phase = phase_scale * (1.5 * x.view(1, w) + 0.8 * y.view(h, 1) ** 2 - 0.5 * x.view(1, w) * y.view(h, 1))
    return torch.polar(img, phase).to(torch.complex64), img > 0.05


def _agreement(a, b):
    """Per-pixel |<a, b>| over coils (dim -3)."""
    return (a.conj() * b).sum(-3).abs()


@pytest.fixture(scope="module")
def simulated():
    img, support = _object((H, W))
    maps = birdcage_maps(NC, (H, W))
    ksp = fft2c(maps * img)
    est, eig = espirit_maps(ksp, return_eigenvalues=True)
    return dict(img=img, support=support, maps=maps, ksp=ksp, est=est, eig=eig)


# --------------------------------------------------------------------------
# birdcage_maps
# --------------------------------------------------------------------------

class TestBirdcage:
    def test_shape_dtype_and_normalisation(self):
        maps = birdcage_maps(6, (40, 52))
        assert maps.shape == (6, 40, 52) and maps.dtype == torch.complex64
        rss = maps.abs().pow(2).sum(0)
        assert torch.allclose(rss, torch.ones_like(rss), atol=1e-5)
        assert birdcage_maps(3, (8, 8), dtype=torch.complex128).dtype == torch.complex128

    @pytest.mark.parametrize("nc, shape, radius", [(8, (96, 96), 1.5), (5, (33, 47), 1.5), (4, (64, 80), 1.2)])
    def test_equals_sigpy(self, nc, shape, radius):
        sigpy_mri = pytest.importorskip("sigpy.mri")
        h, w = shape
        ours = birdcage_maps(nc, shape, radius=radius, dtype=torch.complex128).numpy()
        # sigpy samples x = 2 i / n - 1 with y growing downwards: on the doubled grid the odd
        # samples are our pixel centres, and a row flip turns its y into ours (y up).
        ref = sigpy_mri.birdcage_maps((nc, 2 * h, 2 * w), r=radius)[:, 1::2, 1::2][:, ::-1, :]
        assert np.abs(ours - ref).max() < 1e-5
        ours64 = birdcage_maps(nc, shape, radius=radius).numpy()
        assert np.abs(ours64 - ref).max() < 1e-5

    def test_orientation(self):
        # coil 0 sits at +x (right), coil 1 of 4 at +y (top row), coil 2 at -x, coil 3 at -y
        maps = birdcage_maps(4, (32, 32)).abs()
        assert maps[0, :, -1].mean() > maps[0, :, 0].mean()
        assert maps[1, 0, :].mean() > maps[1, -1, :].mean()
        assert maps[2, :, 0].mean() > maps[2, :, -1].mean()
        assert maps[3, -1, :].mean() > maps[3, 0, :].mean()

    def test_bad_arguments(self):
        with pytest.raises(ValueError, match="num_coils"):
            birdcage_maps(0, (8, 8))
        with pytest.raises(ValueError, match="image_shape"):
            birdcage_maps(4, (8, 8, 8))
        with pytest.raises(ValueError, match="radius"):
            birdcage_maps(4, (8, 8), radius=-1.0)
        with pytest.raises(TypeError, match="dtype"):
            birdcage_maps(4, (8, 8), dtype=torch.float32)


# --------------------------------------------------------------------------
# espirit_maps
# --------------------------------------------------------------------------

class TestEspirit:
    def test_agrees_with_ground_truth(self, simulated):
        s = simulated
        kept = s["est"].abs().pow(2).sum(0) > 0
        inside = s["support"]
        assert bool(kept[inside].all()), "maps cropped inside the object"
        agree = _agreement(s["maps"], s["est"])[inside]
        assert agree.min() > 0.98
        assert agree.median() > 0.999

    def test_agrees_with_sigpy(self, simulated):
        sigpy_mri = pytest.importorskip("sigpy.mri")
        s = simulated
        # sigpy's centred FFT (ifftshift, orthonormal FFT, fftshift) is fft2c: the same k-space array
        ref = sigpy_mri.app.EspiritCalib(s["ksp"].numpy(), calib_width=24, thresh=0.02, kernel_width=6,
                                         crop=0.95, show_pbar=False).run()
        ref = torch.from_numpy(np.asarray(ref))
        ours = s["est"]
        kept_ours = ours.abs().pow(2).sum(0) > 0
        kept_ref = ref.abs().pow(2).sum(0) > 0
        # same crop almost everywhere (they can only differ where the eigenvalue is at the threshold)
        assert (kept_ours ^ kept_ref).float().mean() < 0.01
        region = s["support"] & kept_ours & kept_ref
        agree = _agreement(ours, ref)[region]
        assert agree.median() > 0.99
        assert agree.min() > 0.98

    def test_normalisation_and_crop(self, simulated):
        est, eig = simulated["est"], simulated["eig"]
        energy = est.abs().pow(2).sum(0)
        kept = eig > 0.95
        assert kept.any() and (~kept).any()
        assert torch.allclose(energy[kept], torch.ones_like(energy[kept]), atol=1e-4)
        assert bool((est[:, ~kept] == 0).all())
        # the first coil is real and non-negative where kept
        first = est[0][kept]
        assert first.imag.abs().max() < 1e-6 and first.real.min() >= 0
        # eigenvalues of the ESPIRiT operator lie in [0, 1] (up to rounding), close to 1 in the object
        assert eig.max() < 1.0 + 1e-4 and eig.min() > -1e-4
        assert eig[simulated["support"]].min() > 0.99

    def test_layouts_and_dtype(self, simulated):
        ksp, est = simulated["ksp"], simulated["est"]
        batched = espirit_maps(ksp.unsqueeze(0))
        assert batched.shape == (1, NC, H, W) and est.shape == (NC, H, W)
        assert torch.allclose(batched[0], est, atol=1e-5)
        assert simulated["eig"].shape == (H, W)
        est128 = espirit_maps(ksp.to(torch.complex128))
        assert est128.dtype == torch.complex128
        kept = est.abs().pow(2).sum(0) > 0
        assert (est128.to(torch.complex64) - est)[:, kept].abs().max() < 1e-4

    def test_batch_equals_separate_calls(self):
        h, w = 64, 64
        img_a, _ = _object((h, w))
        img_b, _ = _object((h, w), phase_scale=-2.0)
        maps = birdcage_maps(6, (h, w))
        ksp = torch.stack([fft2c(maps * img_a), fft2c(maps.roll(1, 0) * img_b * 3.0)])
        both = espirit_maps(ksp, calibration_width=20, kernel_width=5)
        for i in range(2):
            single = espirit_maps(ksp[i], calibration_width=20, kernel_width=5)
            assert torch.allclose(both[i], single, atol=1e-5)

    def test_power_iteration_matches_eigh(self, simulated):
        est = simulated["est"]
        power = espirit_maps(simulated["ksp"], max_iterations=100)
        kept = est.abs().pow(2).sum(0) > 0
        assert _agreement(power, est)[simulated["support"]].min() > 0.9999
        assert ((power.abs().pow(2).sum(0) > 0) ^ kept).float().mean() < 0.01

    def test_rectangular_and_tuple_widths(self):
        h, w = 64, 80
        img, support = _object((h, w))
        maps = birdcage_maps(6, (h, w))
        est = espirit_maps(fft2c(maps * img), calibration_width=(20, 24), kernel_width=(5, 6))
        assert est.shape == (6, h, w)
        assert _agreement(maps, est)[support].min() > 0.98

    def test_zero_kspace_is_all_cropped(self):
        est = espirit_maps(torch.zeros(4, 32, 32, dtype=torch.complex64), calibration_width=12, kernel_width=4)
        assert bool((est == 0).all()) and bool(torch.isfinite(est.real).all())

    def test_bad_input(self, simulated):
        ksp = simulated["ksp"]
        with pytest.raises(TypeError) as info:
            espirit_maps(ksp.real)
        assert str(info.value) == (
            "kspace: expected a complex floating tensor (complex64, complex128), found dtype float32"
        )
        with pytest.raises(ValueError, match=r"calibration_width: expected at most the k-space size "
                                             r"\(H, W\) = \(96, 96\), found \(128, 128\)"):
            espirit_maps(ksp, calibration_width=128)
        with pytest.raises(ValueError, match=r"kernel_width: expected at most calibration_width "
                                             r"\(24, 24\), found \(30, 30\)"):
            espirit_maps(ksp, kernel_width=30)
        bad = ksp.clone()
        bad[0, 3, 5] = complex(math.nan, 0.0)
        with pytest.raises(ValueError, match="kspace: expected finite values, found 1 NaN"):
            espirit_maps(bad)
        with pytest.raises(ValueError, match="kspace: expected shape"):
            espirit_maps(ksp[0])
        with pytest.raises(ValueError, match="threshold"):
            espirit_maps(ksp, threshold=1.5)
        with pytest.raises(ValueError, match="crop"):
            espirit_maps(ksp, crop=-0.1)
        with pytest.raises(ValueError, match="max_iterations"):
            espirit_maps(ksp, max_iterations=0)
        with pytest.raises(ValueError, match="calibration_width"):
            espirit_maps(ksp, calibration_width=(24, 24, 24))
        with pytest.raises(TypeError, match="kspace"):
            espirit_maps(ksp.numpy())


@requires_cuda
def test_espirit_cuda_matches_cpu(simulated):
    ksp = simulated["ksp"]
    est = espirit_maps(ksp.cuda())
    assert est.device.type == "cuda"
    kept = simulated["est"].abs().pow(2).sum(0) > 0
    agree = _agreement(est.cpu(), simulated["est"])[simulated["support"] & kept]
    assert agree.min() > 0.9999
    maps = birdcage_maps(NC, (H, W), device="cuda")
    assert maps.device.type == "cuda"
    assert torch.allclose(maps.cpu(), simulated["maps"], atol=1e-6)
