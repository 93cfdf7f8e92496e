"""Diagnostic-task heads, and task-adapted reconstruction (Adler, Lunz, Verdier, Schönlieb & Öktem 2018).

    model = TaskAdapted({"class_path": "lpd", "init_args": {...}}, task_weight=0.5)
    result = model(y, physics)       # result.task["segmentation"] (B, 1, H, W), result.task["label"] (B,)
    loss = (1 - C) * reconstruction_loss + C * model.task_loss(result, segmentation, label)

A reconstruction network and the task heads on its image are trained jointly on the weighted sum, ``C =
task_weight`` in ``[0, 1]``. The training modes of the trade-off study are settings of one class:

* ``joint``: ``TaskAdapted(backbone, task_weight=C)``, gradients of the task loss reach the backbone;
* ``sequential``: a trained backbone, frozen (``freeze_reconstruction=True``; its weights come from
  ``ReconstructionModule(pretrained_reconstruction=CKPT)``), the heads trained alone;
* ``fbp``: the backbone ``{"class_path": "classical"}``, FBP for CT or the zero-filled image for MRI, without
  parameters;
* ``oracle``: ``task_input="truth"``, the heads on the ground-truth image (the upper bound; it needs the
  truth at every call).

Task outputs are probabilities (``segmentation``, per pixel; ``label``, lesion present) and their logits
(``segmentation_logit``, ``label_logit``), which temperature scaling and the losses use. A backbone that
draws samples (``mc_dropout``, ``ensemble``: ``Reconstruction.samples``) adds, at inference, the spread of the
task across them: the heads run on every sample image the backbone's forward drew (no second draw), and
``label_spread`` ``(B,)`` and ``segmentation_spread`` ``(B, 1, H, W)`` are the standard deviations of the
probabilities over the samples.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .._validation import check_choice, check_positive
from .layers import UNet
from .physics_tools import initial_image
from .reconstruction import Reconstruction

__all__ = ["SegmentationHead", "ClassificationHead", "ClassicalReconstruction", "TaskAdapted", "soft_dice_loss",
           "TASK_INPUTS"]

TASK_INPUTS = ("reconstruction", "truth")


def _magnitude(x: torch.Tensor) -> torch.Tensor:
    return (x.abs() if x.is_complex() else x).float()


def soft_dice_loss(probabilities: torch.Tensor, target: torch.Tensor, smooth: float = 1.0) -> torch.Tensor:
    """``1 - (2 sum(p t) + s) / (sum p + sum t + s)`` per image ``(B, 1, H, W)``, averaged over the batch
    (``s = smooth`` makes an empty prediction of an empty mask a loss of 0)."""
    dims = tuple(range(1, probabilities.ndim))
    overlap = (probabilities * target).sum(dims)
    return (1 - (2 * overlap + smooth) / (probabilities.sum(dims) + target.sum(dims) + smooth)).mean()


class SegmentationHead(nn.Module):
    """U-Net from the image (and, with ``use_uncertainty``, the interval width) to a lesion logit per pixel:
    ``(B, 1 or 2, H, W) -> (B, 1, H, W)``."""

    def __init__(self, channels: int = 16, depth: int = 3, use_uncertainty: bool = False):
        super().__init__()
        self.use_uncertainty = bool(use_uncertainty)
        self.unet = UNet(2 if self.use_uncertainty else 1, 1, channels, depth)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.unet(features)


class ClassificationHead(nn.Module):
    """A small CNN from the image to the lesion-present logit: ``depth`` blocks of two 3x3 convolutions (leaky
    ReLU, which keeps units from dying at high learning rates) and 2x2 max pooling, doubling ``channels``, then
    global max and mean pooling and a linear layer: ``(B, inputs, H, W) -> (B,)``, the inputs the image, the
    interval width (``use_uncertainty``) and the segmentation head's probabilities (``reads_segmentation``).
    Max pooling keeps a small lesion's response from being averaged away. With ``reads_segmentation`` the
    linear layer also reads the segmentation head's largest logit, the usual case-level score of a detector."""

    def __init__(self, channels: int = 16, depth: int = 3, use_uncertainty: bool = False,
                 reads_segmentation: bool = False):
        super().__init__()
        check_positive(channels, "channels", integer=True)
        check_positive(depth, "depth", integer=True)
        self.use_uncertainty = bool(use_uncertainty)
        self.reads_segmentation = bool(reads_segmentation)
        layers, width = [], 1 + self.use_uncertainty + self.reads_segmentation
        for level in range(depth):
            out = channels * 2 ** level
            layers += [nn.Conv2d(width, out, 3, padding=1), nn.LeakyReLU(0.1, inplace=True),
                       nn.Conv2d(out, out, 3, padding=1), nn.LeakyReLU(0.1, inplace=True)]
            if level < depth - 1:
                layers.append(nn.MaxPool2d(2))
            width = out
        self.features = nn.Sequential(*layers)
        self.linear = nn.Linear(2 * width + self.reads_segmentation, 1)

    def forward(self, features: torch.Tensor, segmentation_logit: torch.Tensor | None = None) -> torch.Tensor:
        h = self.features(features)
        pooled = [h.amax(dim=(-2, -1)), h.mean(dim=(-2, -1))]
        if self.reads_segmentation:
            if segmentation_logit is None:
                raise ValueError("ClassificationHead: expected segmentation_logit for reads_segmentation=True, "
                                 "found None")
            pooled.append(segmentation_logit.flatten(1).amax(dim=1, keepdim=True))
        return self.linear(torch.cat(pooled, dim=1))[:, 0]


class ClassicalReconstruction(nn.Module):
    """The classical image as a backbone without parameters: FBP (``filter``) for CT, the zero-filled
    (adjoint) image for MRI; ``(B, 1, H, W)``."""

    def __init__(self, filter: str = "hann"):
        super().__init__()
        self.filter = filter

    def forward(self, y, physics) -> Reconstruction:
        return Reconstruction(initial_image(y, physics, self.filter))


class _ScaleGradient(torch.autograd.Function):
    """Identity forward; the backward multiplies the gradient by ``scale``."""

    @staticmethod
    def forward(ctx, x, scale: float):
        ctx.scale = scale
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        return grad * ctx.scale, None


HEAD_GRADIENTS = ("weighted", "full")


class TaskAdapted(nn.Module):
    """A reconstruction model with task heads on its image, trained on ``(1 - C) l_rec + C l_task``.

    Parameters
    ----------
    reconstruction : dict or nn.Module
        Any model called as ``model(y, physics)`` (a spec from the registry, an uncertainty head included, or
        ``{"class_path": "classical"}``).
    segmentation, classification : dict or None
        Options of :class:`SegmentationHead` / :class:`ClassificationHead` (``{}`` for the defaults), or None
        for no such head. At least one.
    task_weight : float
        ``C`` in ``[0, 1]``: 0 trains the reconstruction alone, 1 the task alone.
    freeze_reconstruction : bool
        Keep the backbone's weights and its batch statistics fixed, and no gradient through it (sequential
        training; the heads learn on a trained reconstruction).
    task_input : {"reconstruction", "truth"}
        What the heads see: the reconstruction, or the ground truth (the oracle, called with ``truth=``).
    use_uncertainty : bool
        Give the heads the reconstruction's interval width as a second channel (a backbone with an
        uncertainty head).
    classification_reads_segmentation : bool
        With both heads, the classification head also reads the segmentation head's probabilities (default):
        the label learns from the pixel-wise supervision of the masks instead of from one bit per image.
    head_gradient : {"weighted", "full"}
        ``"weighted"``: the heads descend ``C l_task`` as the objective reads. ``"full"``: the heads descend
        ``l_task`` itself and C scales only the task gradient that reaches the backbone (the image's gradient
        is multiplied by C on its way back); for C > 0 the minimisers over the heads are the same, the heads
        just do not learn C times slower, and at C = 0 they still learn (on a backbone trained for the image
        alone). :meth:`loss_weights` gives the weights of the two losses.
    """

    def __init__(self, reconstruction, segmentation: dict | None = None, classification: dict | None = None,
                 task_weight: float = 0.5, freeze_reconstruction: bool = False, task_input: str = "reconstruction",
                 use_uncertainty: bool = False, classification_reads_segmentation: bool = True,
                 head_gradient: str = "weighted"):
        super().__init__()
        from .registry import build_model

        if segmentation is None and classification is None:
            segmentation, classification = {}, {}
        self.reconstruction = build_model(reconstruction, allow_import=False) if isinstance(reconstruction, dict) \
            else reconstruction
        task_weight = float(task_weight)
        if not 0 <= task_weight <= 1:
            raise ValueError(f"task_weight: expected C in [0, 1], found {task_weight!r}")
        self.task_weight = task_weight
        self.freeze_reconstruction = bool(freeze_reconstruction)
        self.task_input = check_choice(task_input, "task_input", TASK_INPUTS)
        self.use_uncertainty = bool(use_uncertainty)
        self.head_gradient = check_choice(head_gradient, "head_gradient", HEAD_GRADIENTS)
        options = {"use_uncertainty": self.use_uncertainty}
        self.segmentation = None if segmentation is None else SegmentationHead(**{**segmentation, **options})
        reads = bool(classification_reads_segmentation) and segmentation is not None
        self.classification = None if classification is None else \
            ClassificationHead(**{**classification, **options, "reads_segmentation": reads})
        if self.freeze_reconstruction:
            self.reconstruction.requires_grad_(False)

    def train(self, mode: bool = True):
        super().train(mode)
        if self.freeze_reconstruction:
            self.reconstruction.eval()
        return self

    def forward(self, y, physics, truth: torch.Tensor | None = None) -> Reconstruction:
        if self.freeze_reconstruction:
            with torch.no_grad():
                result = self.reconstruction(y, physics)
        else:
            result = self.reconstruction(y, physics)
        if self.task_input == "truth":
            if truth is None:
                raise ValueError("TaskAdapted: expected truth= for task_input='truth' (the oracle reads the ground "
                                 "truth), found none")
            image = _magnitude(truth)
        else:
            image = _magnitude(result.image)
        if self.head_gradient == "full" and self.training and torch.is_grad_enabled():
            image = _ScaleGradient.apply(image, self.task_weight)
        features = image
        if self.use_uncertainty:
            interval = result.uncertainty
            if not hasattr(interval, "width"):
                raise ValueError(f"TaskAdapted: expected an interval from the reconstruction for use_uncertainty=True, "
                                 f"found {type(interval).__name__}")
            features = torch.cat([image, interval.width.float().to(image.device)], dim=1)
        task = self._heads(features)
        if not self.training and self.task_input == "reconstruction" and result.samples is not None:
            task.update(self._spread(result))
        return Reconstruction(result.image, result.uncertainty, task)

    def loss_weights(self) -> tuple[float, float]:
        """``(w_rec, w_task)`` of the training loss ``w_rec l_rec + w_task l_task``: ``(1 - C, C)``, or
        ``(1 - C, 1)`` with ``head_gradient="full"`` (C then scales the task gradient inside the model)."""
        return 1.0 - self.task_weight, 1.0 if self.head_gradient == "full" else self.task_weight

    def _heads(self, features: torch.Tensor) -> dict:
        out = {}
        if self.segmentation is not None:
            logit = self.segmentation(features)
            out.update(segmentation=torch.sigmoid(logit), segmentation_logit=logit)
        if self.classification is not None:
            if self.classification.reads_segmentation:
                logit = self.classification(torch.cat([features, out["segmentation"]], dim=1),
                                            out["segmentation_logit"])
            else:
                logit = self.classification(features)
            out.update(label=torch.sigmoid(logit), label_logit=logit)
        return out

    @torch.no_grad()
    def _spread(self, result: Reconstruction) -> dict:
        """The standard deviation of the task probabilities over the sample images the reconstruction drew."""
        samples = result.samples.float()  # (S, B, 1, H, W)
        count, batch = samples.shape[:2]
        features = samples.flatten(0, 1)
        if self.use_uncertainty:
            width = result.uncertainty.width.float().to(features.device)
            features = torch.cat([features, width.repeat(count, *([1] * (width.ndim - 1)))], dim=1)
        outputs = self._heads(features)
        spread = {}
        for key in ("segmentation", "label"):
            if key in outputs:
                spread[f"{key}_spread"] = outputs[key].unflatten(0, (count, batch)).std(dim=0)
        return spread

    def task_loss(self, result: Reconstruction, segmentation: torch.Tensor | None,
                  label: torch.Tensor | None) -> torch.Tensor:
        """Soft Dice plus BCE of the segmentation against ``segmentation (B, 1, H, W)`` in {0, 1}, plus BCE of
        the label logit against ``label (B,)`` in {0, 1}; the heads this model has, each needing its target."""
        loss = result.image.new_zeros((), dtype=torch.float32)
        if self.segmentation is not None:
            if segmentation is None:
                raise ValueError("TaskAdapted: expected segmentation targets for the segmentation head (data with "
                                 "a 'segmentation' dataset, e.g. simulate --phantom lesions), found none")
            target = segmentation.float()
            logit = result.task["segmentation_logit"]
            loss = loss + soft_dice_loss(result.task["segmentation"], target) + \
                F.binary_cross_entropy_with_logits(logit, target)
        if self.classification is not None:
            if label is None:
                raise ValueError("TaskAdapted: expected labels for the classification head (data with 'labels', "
                                 "e.g. simulate --phantom lesions), found none")
            loss = loss + F.binary_cross_entropy_with_logits(result.task["label_logit"], label.float().reshape(-1))
        return loss

    def load_reconstruction(self, state_dict: dict) -> None:
        """Load the backbone's weights from a checkpoint's ``state_dict`` (keys ``model.<name>`` of a plain
        reconstruction run; into the wrapped network of an uncertainty head such as ``mc_dropout`` when they are
        its weights); names missing or left over are an error naming them."""
        weights = {key[len("model."):]: value for key, value in state_dict.items() if key.startswith("model.")}
        target = self.reconstruction
        inner = getattr(target, "backbone", None)
        if isinstance(inner, nn.Module) and set(weights) == set(inner.state_dict()):
            target = inner  # a plain run's weights into the backbone of an uncertainty head (mc_dropout, ...)
        missing, unexpected = target.load_state_dict(weights, strict=False)
        if missing or unexpected:
            raise ValueError(f"pretrained_reconstruction: expected the weights of {type(target).__name__}, "
                             f"found {len(missing)} missing ({', '.join(missing[:3])}) and {len(unexpected)} "
                             f"unexpected ({', '.join(unexpected[:3])})")
