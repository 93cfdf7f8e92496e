"""Faster training of the unrolled networks without changing what they compute.

    accelerate(model, channels_last=True, compile=True)

* ``channels_last``: convolution weights in the NHWC memory format, so that oneDNN (CPU) and cuDNN
  (GPU) run the convolutions without reordering their inputs; the activations follow the weights.
* ``compile``: every CNN block (:class:`ConvBlock`, :class:`UNet`) is compiled in place with
  ``torch.compile`` (inductor), which fuses convolution, bias and PReLU and the element-wise work
  between convolutions. The operators between the blocks stay eager, so nothing in the physics is
  traced. The state dict keeps its keys: a compiled model saves and loads like the plain one.

Mixed precision is not set here: the trainer's ``precision="bf16-mixed"`` runs the networks under
bfloat16 autocast on CPU and GPU while every :class:`pirecon.operators.LinearOperator` computes in
its input's precision (float32). ``experiments/benchmarks/cpu_roofline.py`` measures each option.
"""

from __future__ import annotations

import shutil

import torch
from torch import nn

from .layers import ConvBlock, UNet

__all__ = ["accelerate", "cnn_blocks", "fast_training_options", "cpu_bf16_native", "cpp_compiler_found"]


def cnn_blocks(model: nn.Module) -> list[nn.Module]:
    """The outermost :class:`ConvBlock` and :class:`UNet` modules of ``model``, in registration order."""
    blocks: list[nn.Module] = []

    def visit(module: nn.Module) -> None:
        for child in module.children():
            if isinstance(child, (ConvBlock, UNet)):
                blocks.append(child)
            else:
                visit(child)

    visit(model)
    return blocks


def accelerate(model: nn.Module, *, channels_last: bool = False, compile: bool = False) -> nn.Module:
    """``model`` itself, changed in place: NHWC convolution weights and/or compiled CNN blocks.

    ``compile`` needs a C++ compiler on CPU (inductor generates and builds C++ kernels); the first
    steps after it take longer (about 10 s for the LPD of ``ct_lpd_ellipses_cpu.yaml``), every new
    input shape compiles again.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model: expected a torch.nn.Module, found {type(model).__name__}")
    if channels_last:
        model.to(memory_format=torch.channels_last)
    if compile:
        _allow_recompiles(RECOMPILE_LIMIT)
        for block in cnn_blocks(model):
            block.compile(dynamic=False)
    return model


RECOMPILE_LIMIT = 64
"""Compiled variants kept per CNN block class (torch's default is 8). Blocks of one class share their compiled
code; each input shape, batch size, grad mode and ``requires_grad`` pattern is one variant (an LPD has about 6
per run), so a process that trains several models (an ablation, a notebook) would otherwise fall back to eager
mode after its first model or two."""


def _allow_recompiles(limit: int) -> None:
    config = torch._dynamo.config
    name = "recompile_limit" if hasattr(config, "recompile_limit") else "cache_size_limit"  # older torch
    setattr(config, name, max(getattr(config, name), limit))


def fast_training_options(device: str = "cpu") -> dict:
    """The fastest settings this machine supports for training on ``device`` (``"cpu"`` or ``"cuda"``):
    ``{"precision": "bf16-mixed" | "32-true", "channels_last": bool, "compile": bool}``.

    bfloat16 only where the hardware computes it natively (AVX512-BF16 or AMX on CPU, compute
    capability 8.0 and up on GPU; elsewhere it is emulated and slower than float32); ``compile`` only
    where inductor finds a C++ compiler (CPU) or runs Triton (GPU).
    """
    if device == "cuda":
        bf16 = torch.cuda.is_available() and torch.cuda.is_bf16_supported()
        compiler = torch.cuda.is_available()
    elif device == "cpu":
        bf16, compiler = cpu_bf16_native(), cpp_compiler_found()
    else:
        raise ValueError(f"device: expected 'cpu' or 'cuda', found {device!r}")
    return {"precision": "bf16-mixed" if bf16 else "32-true", "channels_last": True, "compile": compiler}


def cpu_bf16_native() -> bool:
    """Whether this CPU computes bfloat16 natively (AVX512-BF16 or AMX, as oneDNN reports it)."""
    return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())


def cpp_compiler_found() -> bool:
    """Whether a C++ compiler is on the PATH (``torch.compile`` on CPU builds its kernels with one)."""
    return any(shutil.which(name) for name in ("c++", "g++", "clang++"))
