"""The validation figure: ground truth, classical input, reconstruction and error, one row per image."""

from __future__ import annotations

import io

import numpy as np
import torch

from .._atomic import atomic_path

__all__ = ["image_grid_figure", "log_image_grid"]


def image_grid_figure(truth: torch.Tensor, start: torch.Tensor, reconstruction: torch.Tensor, num_images: int,
                      title: str = ""):
    """A matplotlib ``Figure``: rows of (truth, input, reconstruction, error) for up to ``num_images`` real
    images ``(B, 1, H, W)``; truth, input and reconstruction share the grey scale of the truth."""
    from matplotlib.figure import Figure  # no pyplot: leaves the caller's backend alone

    rows = min(num_images, truth.shape[0])
    fig = Figure(figsize=(10, 2.6 * rows))
    fig.subplots_adjust(left=0.02, right=0.92, bottom=0.02, top=0.9 if title else 0.95, wspace=0.05, hspace=0.1)
    axes = np.atleast_2d(fig.subplots(rows, 4))
    for r in range(rows):
        t, s, x = (v[r, 0].detach().float().cpu().numpy() for v in (truth, start, reconstruction))
        lo, hi = float(t.min()), float(t.max())
        error = x - t
        bound = max(float(np.abs(error).max()), 1e-12)
        panels = [(t, "ground truth", dict(cmap="gray", vmin=lo, vmax=hi)),
                  (s, "input (FBP / adjoint)", dict(cmap="gray", vmin=lo, vmax=hi)),
                  (x, "reconstruction", dict(cmap="gray", vmin=lo, vmax=hi)),
                  (error, "error", dict(cmap="RdBu_r", vmin=-bound, vmax=bound))]
        for ax, (image, name, kwargs) in zip(axes[r], panels):
            shown = ax.imshow(image, **kwargs)
            ax.set_title(name if r == 0 else "")
            ax.set_xticks([])
            ax.set_yticks([])
            if name == "error":
                fig.colorbar(shown, ax=ax, shrink=0.8)
    if title:
        fig.suptitle(title)
    return fig


def _png_bytes(fig) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=80)
    return buffer.getvalue()


def log_image_grid(module, truth, start, reconstruction, num_images: int) -> None:
    """Write the figure as ``images/val_epoch{E}_step{S}.png`` in the run's log directory and to TensorBoard."""
    from pytorch_lightning.loggers import TensorBoardLogger

    epoch, step = module.current_epoch, module.global_step
    fig = image_grid_figure(truth, start, reconstruction, num_images, title=f"validation, epoch {epoch}, step {step}")
    png = _png_bytes(fig)
    path = module.log_directory() / "images" / f"val_epoch{epoch:04d}_step{step:07d}.png"
    with atomic_path(path) as tmp:
        tmp.write_bytes(png)
    for logger in module.loggers:
        if isinstance(logger, TensorBoardLogger):
            from PIL import Image

            array = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))
            logger.experiment.add_image("val/images", array, global_step=step, dataformats="HWC")
