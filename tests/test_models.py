"""Learned reconstructions: shapes, gradients, batching, checkpointing, weight sharing, saving, training, errors."""

import pytest
import torch
from torch import nn

from conftest import relative_error, requires_cuda
from pirecon.ct import ParallelBeam2D, RayTransform, fbp
from pirecon.models import (MODELS, LearnedGradientDescent, LearnedPrimalDual, MoDL, PostProcessingUNet,
                            Reconstruction, VarNet, calibration_mask, conjugate_gradient, operator_scale)
from pirecon.mri import RandomMask, SenseOperator, birdcage_maps
from pirecon.noise import GaussianNoise
from pirecon.phantoms import random_ellipses, shepp_logan
from pirecon.physics import Physics

SIZE, ANGLES, COILS, BATCH = 32, 16, 4, 3


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """The models here are tiny: one intra-op thread is as fast, and far faster on a busy machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# --------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------

@pytest.fixture(scope="module")
def ct():
    """Physics, noisy sinograms ``(2, 1, 16, D)`` and images ``(2, 1, 32, 32)`` of a small parallel-beam CT."""
    physics = Physics(RayTransform(ParallelBeam2D((SIZE, SIZE), pixel_size=1.0, num_angles=ANGLES)),
                      GaussianNoise(relative=0.05), "ct")
    x = random_ellipses((SIZE, SIZE), 2, seed=0)
    return physics, physics.simulate(x, seed=1), x


def mri_physics(maps, mask):
    return Physics(SenseOperator(maps, mask), None, "mri")


@pytest.fixture(scope="module")
def mri():
    """4-coil Cartesian MRI with per-sample maps ``(3, 4, 32, 32)`` and per-sample line masks ``(3, 1, 1, 32)``."""
    phases = torch.exp(1j * torch.tensor([0.0, 1.0, 2.5]))[:, None, None, None]
    maps = (birdcage_maps(COILS, (SIZE, SIZE))[None] * phases).to(torch.complex64)
    mask = RandomMask([0.125], [4])((SIZE, SIZE), batch_size=BATCH, seed=0).mask
    x = random_ellipses((SIZE, SIZE), BATCH, seed=2).to(torch.complex64)
    x = x * torch.exp(1j * torch.linspace(-1, 1, SIZE))[None, None, None, :].to(torch.complex64)
    physics = mri_physics(maps, mask)
    return physics, physics(x), x


def small(name, modality):
    """A small model of each kind for ``"ct"`` or ``"mri"`` data."""
    complex_data = modality == "mri"
    if name == "lpd":
        return LearnedPrimalDual(iterations=2, hidden=8, complex_data=complex_data,
                                 coils=COILS if complex_data else 1)
    if name == "lgd":
        return LearnedGradientDescent(iterations=2, memory=2, hidden=8, complex_data=complex_data)
    if name == "modl":
        return MoDL(iterations=2, cg_iterations=3, hidden=8, layers=3, complex_data=complex_data)
    if name == "unet":
        return PostProcessingUNet(channels=4, depth=2, complex_data=complex_data)
    if name == "varnet":
        return VarNet(cascades=2, channels=4, sens_channels=4, depth=2, sens_depth=2)
    raise AssertionError(name)


CASES = [("lpd", "ct"), ("lgd", "ct"), ("modl", "ct"), ("unet", "ct"),
         ("lpd", "mri"), ("lgd", "mri"), ("modl", "mri"), ("unet", "mri"), ("varnet", "mri")]


def data(modality, ct, mri):
    return ct if modality == "ct" else mri


def mse(a, b):
    return (a - b).abs().square().mean()


def gradients(model):
    return {name: p.grad.clone() for name, p in model.named_parameters()}


# --------------------------------------------------------------------------
# Shapes, dtypes, gradients
# --------------------------------------------------------------------------

@pytest.mark.parametrize("name, modality", CASES)
def test_output_shape_dtype_and_finite_gradients(name, modality, ct, mri):
    physics, y, x = data(modality, ct, mri)
    torch.manual_seed(0)
    model = small(name, modality)
    out = model(y, physics)
    assert isinstance(out, Reconstruction)
    assert out.image.shape == x.shape == (y.shape[0], 1, SIZE, SIZE)
    assert out.image.dtype == (torch.complex64 if modality == "mri" else torch.float32)
    assert out.uncertainty is None and out.task == {}
    mse(out.image, x).backward()
    grads = gradients(model)
    assert len(grads) == len(list(model.parameters())) > 0  # every parameter is used
    assert all(torch.isfinite(g).all() for g in grads.values())
    assert sum(float(g.abs().sum()) for g in grads.values()) > 0


def test_varnet_accepts_shared_maps_shared_mask_and_full_sampling(mri):
    physics, y, _ = mri
    model = small("varnet", "mri")
    maps = physics.operator.coil_maps
    for op in (SenseOperator(maps[0], physics.operator.mask[:1]), SenseOperator(maps)):
        y_op = op(torch.ones(BATCH, 1, SIZE, SIZE, dtype=torch.complex64)) + y
        image = model(y_op, Physics(op, None, "mri")).image
        assert image.shape == (BATCH, 1, SIZE, SIZE) and torch.isfinite(torch.view_as_real(image)).all()


def test_varnet_is_scale_equivariant(mri):
    """The U-Nets normalise their inputs, so k-space of any scale gives the same image up to that scale."""
    physics, y, _ = mri
    torch.manual_seed(0)
    model = small("varnet", "mri")
    with torch.no_grad():
        reference = model(y, physics).image
        scaled = model(1e3 * y, physics).image
    assert relative_error(torch.view_as_real(scaled), torch.view_as_real(1e3 * reference)) < 1e-4


def test_varnet_output_is_zero_for_zero_kspace(mri):
    physics, y, _ = mri
    model = small("varnet", "mri")
    zero = torch.zeros_like(y, requires_grad=True)
    image = model(zero, physics).image
    assert torch.equal(image, torch.zeros_like(image))
    image.abs().sum().backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_lgd_starts_from_fbp_or_zero(ct):
    physics, y, _ = ct
    torch.manual_seed(0)
    model = LearnedGradientDescent(iterations=1, memory=0, hidden=4, initial="zeros")
    nn.init.zeros_(model.blocks[0].net[-1].weight)
    nn.init.zeros_(model.blocks[0].net[-1].bias)
    with torch.no_grad():
        assert torch.equal(model(y, physics).image, torch.zeros(2, 1, SIZE, SIZE))  # zero update from zero
        model.initial = "fbp"
        torch.testing.assert_close(model(y, physics).image, fbp(y, physics.operator, "hann"))


def test_lpd_identity_init_returns_the_fbp_untrained_and_its_zero_layers_get_gradients(ct):
    physics, y, x = ct
    torch.manual_seed(0)
    model = LearnedPrimalDual(iterations=3, hidden=8, initial="fbp", identity_init=True)
    output = model(y, physics).image
    torch.testing.assert_close(output, fbp(y, physics.operator, "hann"))
    mse(output, x).backward()
    last = model.primal_blocks[-1].net[-1].weight
    assert last.grad is not None and last.grad.abs().max() > 0  # the zero layer gets a gradient
    default = LearnedPrimalDual(iterations=3, hidden=8, initial="fbp")
    assert default.primal_blocks[0].net[-1].weight.abs().max() > 0  # the paper's Xavier start by default


def test_varnet_identity_init_returns_the_coil_combined_data_untrained_and_learns_its_scales(mri):
    """With ``identity_init`` every cascade starts as data consistency alone (its refinement scale gamma is 0):
    k stays y, so the untrained VarNet returns ``sum_c conj(S_c) ifft2c(y_c)`` with its estimated maps."""
    from pirecon.mri.fft import ifft2c

    physics, y, x = mri
    torch.manual_seed(0)
    model = VarNet(cascades=3, channels=4, sens_channels=4, depth=2, sens_depth=2, identity_init=True)
    output = model(y, physics).image
    maps = model.sensitivity(y, physics.operator.mask)
    torch.testing.assert_close(output, (maps.conj() * ifft2c(y)).sum(dim=1, keepdim=True))
    mse(output, x).backward()
    assert all(cascade.gamma.grad.abs() > 0 for cascade in model.cascades)  # the scales leave 0 at the first step
    default = VarNet(cascades=3, channels=4, sens_channels=4, depth=2, sens_depth=2)
    assert all(cascade.gamma is None for cascade in default.cascades)  # the paper's cascade by default


class _ChannelConstants(nn.Module):
    """A stand-in CNN block whose update puts ``offset + c`` in output channel ``c`` (and records its input)."""

    def __init__(self, channels, offset):
        super().__init__()
        self.channels, self.offset, self.inputs = channels, offset, []

    def forward(self, stacked):
        self.inputs.append(stacked.detach().clone())
        shape = (stacked.shape[0], self.channels, *stacked.shape[2:])
        values = self.offset + torch.arange(self.channels, dtype=stacked.dtype)
        return values.view(1, -1, *([1] * (stacked.ndim - 2))).expand(shape)


class _Recording(RayTransform):
    """A ray transform that records the images it projects and the measurements it back-projects."""

    def __init__(self, geometry):
        super().__init__(geometry)
        self.forward_inputs, self.adjoint_inputs = [], []

    def _forward(self, x):
        self.forward_inputs.append(x.detach().clone())
        return super()._forward(x)

    def _adjoint(self, y):
        self.adjoint_inputs.append(y.detach().clone())
        return super()._adjoint(y)


def test_lpd_follows_algorithm_3_forward_on_f2_adjoint_on_h1_output_f1():
    """Adler & Oktem (2018), Algorithm 3: h <- Gamma(h, K f^(2), g); f <- Lambda(f, K* h^(1)); return f^(1)."""
    operator = _Recording(ParallelBeam2D((SIZE, SIZE), pixel_size=1.0, num_angles=ANGLES))
    physics = Physics(operator, None, "ct")
    y = physics(random_ellipses((SIZE, SIZE), 1, seed=0))
    model = LearnedPrimalDual(iterations=2, primal_channels=3, dual_channels=2, hidden=4)
    model.primal_blocks[0] = _ChannelConstants(3, offset=1.0)   # f after iteration 1: channels 1, 2, 3
    model.dual_blocks[0] = _ChannelConstants(2, offset=10.0)    # h after iteration 1: channels 10, 11
    operator.forward_inputs.clear(), operator.adjoint_inputs.clear()
    with torch.no_grad():
        model(y, physics)
    # iteration 2 projects f^(2) = 2 (iteration 1 projects the zero start), and back-projects h^(1)
    torch.testing.assert_close(operator.forward_inputs[1], torch.full((1, 1, SIZE, SIZE), 2.0))
    assert operator.forward_inputs[0].abs().max() == 0
    h1 = operator.adjoint_inputs[0]
    torch.testing.assert_close(h1, torch.full_like(h1, 10.0))
    # the output is f^(1): 1 from iteration 1 plus 100 from iteration 2 (f^(2) would be 2 + 101)
    model.primal_blocks[1] = _ChannelConstants(3, offset=100.0)
    with torch.no_grad():
        image = model(y, physics).image
    torch.testing.assert_close(image, torch.full((1, 1, SIZE, SIZE), 101.0))


# --------------------------------------------------------------------------
# MoDL's data consistency
# --------------------------------------------------------------------------

def test_conjugate_gradient_solves_each_sample_with_its_own_steps():
    gen = torch.Generator().manual_seed(0)
    n = 6
    a = torch.complex(torch.randn(3, n, n, generator=gen, dtype=torch.float64),
                      torch.randn(3, n, n, generator=gen, dtype=torch.float64))
    matrices = a @ a.mH + torch.tensor([0.1, 1.0, 10.0], dtype=torch.float64)[:, None, None] * torch.eye(n)
    rhs = torch.complex(torch.randn(3, 1, n, generator=gen, dtype=torch.float64),
                        torch.randn(3, 1, n, generator=gen, dtype=torch.float64))
    expected = torch.linalg.solve(matrices, rhs[:, 0, :, None])[:, None, :, 0]
    start = torch.zeros_like(rhs)
    start[2] = expected[2]  # sample 2 starts at its solution: a zero residual must stay put, without NaN
    apply = lambda v: (matrices @ v[:, 0, :, None])[:, None, :, 0]  # noqa: E731
    solution = conjugate_gradient(apply, rhs, start, iterations=n)
    torch.testing.assert_close(solution, expected, rtol=1e-8, atol=1e-8)


def test_conjugate_gradient_gradient_is_finite_when_converged():
    rhs = torch.ones(2, 1, 4, requires_grad=True)
    solution = conjugate_gradient(lambda v: 2 * v, rhs, rhs.detach() / 2, iterations=3)  # already solved
    solution.sum().backward()
    torch.testing.assert_close(solution, rhs.detach() / 2)
    assert torch.isfinite(rhs.grad).all()


def test_modl_lam_is_positive_and_sets_data_consistency(ct):
    physics, y, _ = ct
    model = MoDL(iterations=1, cg_iterations=20, hidden=4, layers=2, lam_init=1e4)
    torch.testing.assert_close(model.lam, torch.tensor([1e4]))
    nn.init.zeros_(model.denoisers[0].net[-1].weight)
    nn.init.zeros_(model.denoisers[0].net[-1].bias)
    with torch.no_grad():  # identity denoiser and a huge lam: the output stays at x_0 = K^H g
        x0 = physics.adjoint(y) * operator_scale(physics) ** 2
        assert relative_error(model(y, physics).image, x0) < 1e-3


# --------------------------------------------------------------------------
# VarNet's calibration region
# --------------------------------------------------------------------------

def test_calibration_mask_keeps_the_central_run_of_sampled_columns_per_sample():
    width = 16  # centre column 8
    lines = torch.zeros(3, 1, 1, width)
    lines[0, ..., [2, 6, 7, 8, 9, 12]] = 1
    lines[1, ..., [0, 5, 8, 15]] = 1  # the centre alone
    lines[2, ..., [3, 7, 9]] = 1  # centre not sampled: everything is kept
    result = calibration_mask(lines, width)
    assert result.shape == (3, 1, 1, width)
    assert result[0, 0, 0].nonzero().flatten().tolist() == [6, 7, 8, 9]
    assert result[1, 0, 0].nonzero().flatten().tolist() == [8]
    torch.testing.assert_close(result[2], lines[2])
    # a 1D mask and a 2D one whose centre row is sampled on columns 7..9
    assert calibration_mask(lines[0, 0, 0], width).shape == (1, 1, 1, width)
    points = torch.zeros(1, 1, 8, width)
    points[0, 0, 4, 7:10] = 1
    points[0, 0, 0, [7, 11]] = 1
    expected = torch.zeros_like(points)
    expected[0, 0, 4, 7:10] = expected[0, 0, 0, 7] = 1
    torch.testing.assert_close(calibration_mask(points, width), expected)


# --------------------------------------------------------------------------
# Batching, checkpointing, weight sharing, saving
# --------------------------------------------------------------------------

@pytest.mark.parametrize("name, modality", [("lpd", "ct"), ("lpd", "mri"), ("varnet", "mri"), ("lgd", "mri"),
                                            ("modl", "mri")])
def test_batch_equals_samples_one_by_one(name, modality, ct, mri):
    physics, y, _ = data(modality, ct, mri)
    torch.manual_seed(0)
    model = small(name, modality)
    with torch.no_grad():
        batched = model(y, physics).image
        for i in range(y.shape[0]):
            if modality == "mri":
                op = physics.operator
                single_physics = mri_physics(op.coil_maps[i:i + 1], op.mask[i:i + 1])
            else:
                single_physics = physics
            single = model(y[i:i + 1], single_physics).image
            as_real = torch.view_as_real if single.is_complex() else (lambda t: t)
            assert relative_error(as_real(batched[i:i + 1]), as_real(single)) < 1e-5


@pytest.mark.parametrize("name, modality", [("lpd", "ct"), ("lpd", "mri"), ("varnet", "mri"), ("lgd", "ct"),
                                            ("modl", "ct")])
def test_checkpointing_gives_the_same_output_and_gradients(name, modality, ct, mri):
    physics, y, x = data(modality, ct, mri)
    torch.manual_seed(0)
    plain = small(name, modality)
    checkpointed = small(name, modality)
    checkpointed.load_state_dict(plain.state_dict())
    checkpointed.checkpointing = True
    outputs = []
    for model in (plain, checkpointed):
        image = model(y, physics).image
        mse(image, x).backward()
        outputs.append((image.detach(), gradients(model)))
    (image_plain, grads_plain), (image_ckpt, grads_ckpt) = outputs
    torch.testing.assert_close(image_ckpt, image_plain, rtol=1e-6, atol=1e-7)
    assert grads_ckpt.keys() == grads_plain.keys()
    for key in grads_plain:
        torch.testing.assert_close(grads_ckpt[key], grads_plain[key], rtol=1e-5, atol=1e-7, msg=key)


def count(model):
    return sum(p.numel() for p in model.parameters())


def test_weight_sharing_divides_the_iteration_parameters_by_the_iterations():
    for iterations in (1, 4):
        lpd = LearnedPrimalDual(iterations=iterations, hidden=8)
        assert count(LearnedPrimalDual(iterations=iterations, hidden=8, share_weights=True)) * iterations == count(lpd)
        lgd = LearnedGradientDescent(iterations=iterations, hidden=8, complex_data=True)
        shared = LearnedGradientDescent(iterations=iterations, hidden=8, complex_data=True, share_weights=True)
        assert count(shared) * iterations == count(lgd)
        modl_shared = MoDL(iterations=iterations, hidden=8)
        assert count(MoDL(iterations=iterations, hidden=8, share_weights=False)) == iterations * count(modl_shared)
        varnet = VarNet(cascades=iterations, channels=4, sens_channels=4, depth=2, sens_depth=2)
        varnet_shared = VarNet(cascades=iterations, channels=4, sens_channels=4, depth=2, sens_depth=2,
                               share_weights=True)
        sensitivity = count(varnet.sensitivity)
        assert count(varnet) - sensitivity == iterations * (count(varnet_shared) - sensitivity)
    # LPD by hand: one primal and one dual block of (in*9 + 1) * out weights per layer, iterations of each
    lpd = LearnedPrimalDual(iterations=3, primal_channels=5, dual_channels=5, hidden=8, layers=3)
    per_block = lambda i, o: (i * 9 + 1) * 8 + 8 + (8 * 9 + 1) * 8 + 8 + (8 * 9 + 1) * o  # noqa: E731 (PReLUs: 8)
    assert count(lpd) == 3 * (per_block(6, 5) + per_block(7, 5))


@pytest.mark.parametrize("name, modality", CASES)
def test_state_dict_round_trip(name, modality, ct, mri, tmp_path):
    physics, y, _ = data(modality, ct, mri)
    torch.manual_seed(0)
    model = small(name, modality)
    torch.save(model.state_dict(), tmp_path / "model.pt")
    torch.manual_seed(1)
    fresh = small(name, modality)
    fresh.load_state_dict(torch.load(tmp_path / "model.pt", weights_only=True))
    with torch.no_grad():
        assert torch.equal(fresh(y, physics).image, model(y, physics).image)


def test_models_registry():
    from pirecon.models import (ClassicalReconstruction, ConstantWidthHead, DeepEnsemble, GaussianHead,
                                MCDropoutHead, QuantileHead, TaskAdapted)

    assert MODELS == {"lpd": LearnedPrimalDual, "lgd": LearnedGradientDescent, "modl": MoDL, "varnet": VarNet,
                      "unet": PostProcessingUNet, "gaussian_head": GaussianHead, "quantile_head": QuantileHead,
                      "mc_dropout": MCDropoutHead, "constant_width": ConstantWidthHead, "ensemble": DeepEnsemble,
                      "classical": ClassicalReconstruction, "task_adapted": TaskAdapted}


# --------------------------------------------------------------------------
# Training: one sample is learned far past the classical reconstruction
# --------------------------------------------------------------------------

@pytest.fixture(scope="module")
def ct_sample():
    """Shepp-Logan 64 x 64, 20 angles, 5% noise, and the MSE of its Hann-filtered FBP."""
    physics = Physics(RayTransform(ParallelBeam2D((64, 64), pixel_size=1.0, num_angles=20)),
                      GaussianNoise(relative=0.05), "ct")
    x = shepp_logan((64, 64))
    y = physics.simulate(x, seed=0)
    return physics, y, x, float(mse(fbp(y, physics.operator, "hann"), x))


def fit(model, physics, y, x, target, lr, max_steps=300):
    """Adam steps until the MSE is below ``target``; the last MSE."""
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    for _ in range(max_steps):
        optimizer.zero_grad()
        loss = mse(model(y, physics).image, x)
        if loss.item() < target:
            break
        loss.backward()
        optimizer.step()
    return loss.item()


@pytest.mark.parametrize("name, make, lr", [
    ("lpd", lambda: LearnedPrimalDual(iterations=5, hidden=16), 2e-3),
    ("modl", lambda: MoDL(iterations=3, cg_iterations=5, hidden=16), 1e-3),
])
def test_overfits_one_ct_sample_far_below_fbp(name, make, lr, ct_sample):
    physics, y, x, fbp_mse = ct_sample
    torch.manual_seed(0)
    assert fit(make(), physics, y, x, target=fbp_mse / 4, lr=lr) < fbp_mse / 4


# --------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------

NAMES = {"lpd": "LearnedPrimalDual", "lgd": "LearnedGradientDescent", "modl": "MoDL", "unet": "PostProcessingUNet",
         "varnet": "VarNet"}


@pytest.mark.parametrize("name", NAMES)
def test_wrong_physics_type(name, mri):
    _, y, _ = mri
    model = small(name, "mri")
    with pytest.raises(TypeError, match=f"^{NAMES[name]}: expected physics to be a pirecon.physics.Physics, "
                                        f"found SenseOperator$"):
        model(y, SenseOperator(mri[0].operator.coil_maps))


@pytest.mark.parametrize("name", ["lpd", "lgd", "modl", "unet"])
def test_real_measurements_for_a_complex_model(name, ct, mri):
    physics, y, _ = ct
    with pytest.raises(ValueError, match=rf"^{NAMES[name]}: expected complex measurements \(complex_data=True\), "
                                         rf"found torch.float32$"):
        small(name, "mri")(y, physics)
    physics, y, _ = mri
    with pytest.raises(ValueError, match=rf"^{NAMES[name]}: expected real measurements \(complex_data=False\), "
                                         rf"found torch.complex64$"):
        small(name, "ct")(y, physics)


def test_varnet_needs_cartesian_mri_physics(ct):
    physics, y, _ = ct
    with pytest.raises(TypeError, match=r"^VarNet: expected Cartesian MRI physics \(a SenseOperator\), "
                                        r"found RayTransform$"):
        small("varnet", "mri")(y, physics)


def test_wrong_coil_count(mri):
    physics, y, _ = mri
    model = LearnedPrimalDual(iterations=1, hidden=4, complex_data=True, coils=8)
    with pytest.raises(ValueError, match=r"^LearnedPrimalDual: expected measurements with 8 channel\(s\) "
                                         r"\(coils=8\), found 4 in shape \(3, 4, 32, 32\)$"):
        model(y, physics)
    eight = torch.cat([y, y], dim=1)
    with pytest.raises(ValueError, match=r"^VarNet: expected measurements of shape \(B, \.\.\., 4, 32, 32\) "
                                         r"for SenseOperator\(coils=4, image_shape=\(32, 32\)\), "
                                         r"found \(3, 8, 32, 32\)$"):
        small("varnet", "mri")(eight, physics)


def test_option_errors():
    with pytest.raises(ValueError, match=r"^initial: expected one of 'fbp', 'zeros', found 'adjoint'$"):
        LearnedGradientDescent(initial="adjoint")
    with pytest.raises(ValueError, match=r"^memory: expected a non-negative integer, found -1$"):
        LearnedGradientDescent(memory=-1)
    with pytest.raises(ValueError, match=r"^lam_init: expected a positive number, found 0$"):
        MoDL(lam_init=0)
    with pytest.raises(ValueError, match=r"^cg_iterations: expected a positive integer, found 2.5$"):
        MoDL(cg_iterations=2.5)
    with pytest.raises(ValueError, match=r"^cascades: expected a positive integer, found 0$"):
        VarNet(cascades=0)
    with pytest.raises(ValueError, match=r"^filter: expected one of .*, found 'box'$"):
        PostProcessingUNet(filter="box")


# --------------------------------------------------------------------------
# CUDA
# --------------------------------------------------------------------------

@requires_cuda
@pytest.mark.cuda
@pytest.mark.parametrize("name, modality", CASES)
def test_runs_on_cuda_like_on_cpu(name, modality, ct, mri):
    physics, y, x = data(modality, ct, mri)
    torch.manual_seed(0)
    model = small(name, modality)
    with torch.no_grad():
        reference = model(y, physics).image
    model = model.cuda()
    image = model(y.cuda(), physics).image
    assert image.device.type == "cuda" and image.dtype == reference.dtype
    mse(image, x.cuda()).backward()
    assert all(p.grad is not None and p.grad.device.type == "cuda" and torch.isfinite(p.grad).all()
               for p in model.parameters())
    as_real = torch.view_as_real if image.is_complex() else (lambda t: t)
    assert relative_error(as_real(image.detach().cpu()), as_real(reference)) < 1e-3
    model.checkpointing = True
    torch.testing.assert_close(model(y.cuda(), physics).image.detach(), image.detach())
