"""Training speed-ups change how the networks run, never what they compute or what a checkpoint holds."""

import pytest
import torch

from pirecon.ct import RayTransform, lpd_ellipses_geometry
from pirecon.models import (ConvBlock, LearnedPrimalDual, PostProcessingUNet, UNet, accelerate, cnn_blocks,
                            fast_training_options)
from pirecon.models.acceleration import cpp_compiler_found, cpu_bf16_native
from pirecon.noise import GaussianNoise
from pirecon.phantoms import random_ellipses
from pirecon.physics import Physics

HAS_COMPILER = cpp_compiler_found()


@pytest.fixture(scope="module")
def data():
    physics = Physics(RayTransform(lpd_ellipses_geometry(), backend="sparse"), GaussianNoise(relative=0.05))
    x = random_ellipses((128, 128), 2, seed=0)
    return physics.simulate(x, seed=1), physics, x


def _lpd(seed=0):
    torch.manual_seed(seed)
    return LearnedPrimalDual(iterations=2, hidden=8, initial="fbp")


def test_cnn_blocks_are_the_outermost_blocks():
    lpd = _lpd()
    assert cnn_blocks(lpd) == list(lpd.primal_blocks) + list(lpd.dual_blocks)
    unet = PostProcessingUNet(channels=4, depth=2)
    assert cnn_blocks(unet) == [unet.unet] and isinstance(unet.unet, UNet)


def test_channels_last_computes_the_same(data):
    y, physics, _ = data
    plain, fast = _lpd(), accelerate(_lpd(), channels_last=True)
    assert fast.primal_blocks[0].net[0].weight.is_contiguous(memory_format=torch.channels_last)
    assert plain.state_dict().keys() == fast.state_dict().keys()
    with torch.no_grad():
        expected, found = plain(y, physics).image, fast(y, physics).image
    assert torch.allclose(found, expected, rtol=1e-4, atol=1e-5)


@pytest.mark.skipif(not HAS_COMPILER, reason="torch.compile on CPU needs a C++ compiler")
def test_compiled_blocks_compute_the_same_and_keep_the_state_dict(data):
    y, physics, x = data
    plain, fast = _lpd(), accelerate(_lpd(), channels_last=True, compile=True)
    assert list(plain.state_dict()) == list(fast.state_dict())
    image = fast(y, physics).image
    assert torch.allclose(image, plain(y, physics).image, rtol=1e-4, atol=1e-4)
    loss = torch.nn.functional.mse_loss(image, x)
    loss.backward()  # gradients reach every weight through the compiled backward graphs
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in fast.parameters())
    restored = _lpd(seed=1)
    restored.load_state_dict(fast.state_dict())
    assert torch.equal(restored.primal_blocks[1].net[0].weight, fast.primal_blocks[1].net[0].weight)


def test_bfloat16_autocast_leaves_the_ray_transform_in_float32(data):
    y, physics, _ = data
    model = _lpd()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert physics.operator(torch.ones(1, 1, 128, 128)).dtype == torch.float32
        image = model(y, physics).image
    assert image.dtype == torch.float32  # the primal memory stays float32; only the CNN updates are bfloat16
    with torch.no_grad():
        reference = model(y, physics).image
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = model(y, physics).image
    assert (low - reference).norm() / reference.norm() < 2e-2


def test_fast_training_options():
    options = fast_training_options("cpu")
    assert set(options) == {"precision", "channels_last", "compile"}
    assert options["precision"] == ("bf16-mixed" if cpu_bf16_native() else "32-true")
    assert options["compile"] == HAS_COMPILER
    with pytest.raises(ValueError, match=r"^device: expected 'cpu' or 'cuda', found 'tpu'$"):
        fast_training_options("tpu")


def test_accelerate_needs_a_module():
    with pytest.raises(TypeError, match=r"^model: expected a torch.nn.Module, found method$"):
        accelerate(ConvBlock(1, 1, 4).forward)  # the block's forward, not the block


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_fast_options_on_cuda_compute_the_same(data):
    y, physics, _ = data
    device = torch.device("cuda")
    y = y.to(device)
    plain = _lpd().to(device)
    fast = accelerate(_lpd().to(device), channels_last=True, compile=True)
    with torch.no_grad():
        assert torch.allclose(fast(y, physics).image, plain(y, physics).image, rtol=1e-3, atol=1e-3)


def test_compiling_keeps_room_for_several_models_in_one_process():
    """Each block shape, batch size and grad mode is one compiled variant; several models need more than 8."""
    from pirecon.models.acceleration import RECOMPILE_LIMIT

    accelerate(ConvBlock(1, 1, 4), compile=True)  # compiling is lazy: nothing runs here
    config = torch._dynamo.config
    limit = config.recompile_limit if hasattr(config, "recompile_limit") else config.cache_size_limit
    assert limit >= RECOMPILE_LIMIT == 64
