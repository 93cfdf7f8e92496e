"""``pirecon.load(checkpoint) -> Reconstructor``; ``Reconstructor.reconstruct(source) -> Reconstruction``.

    recon = pirecon.load("runs/lpd/checkpoints/last.ckpt").reconstruct("scan.h5")
    pirecon.save(recon, "scan.nii.gz")

    tv = pirecon.reconstructor("tv", lam=0.5, iterations=300)      # classical methods: the same interface

A checkpoint is data: it is read with ``weights_only=True`` and its model is built from pirecon's model
registry, or from classes the caller passes in ``models=`` (nothing the checkpoint names is imported).
Lightning is neither imported nor needed.
"""

from __future__ import annotations

import dataclasses
import json
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .._validation import BackendUnavailableError
from ..errors import ArgumentError, ConfigError, PireconUserError
from ..models.reconstruction import Reconstruction
from ..uncertainty import Interval
from .checkpoint import CheckpointError, read_checkpoint

__all__ = ["Reconstructor", "load", "reconstructor", "PHYSICS_MISMATCH"]

PHYSICS_MISMATCH = ("error", "use_data")


def _device(device) -> torch.device:
    """``device`` as a ``torch.device`` this machine has; :class:`BackendUnavailableError` otherwise."""
    try:
        found = torch.device(device)
    except (RuntimeError, TypeError):
        raise ArgumentError(f"device: expected 'cpu', 'cuda' or 'cuda:N', found {device!r}") from None
    if found.type == "cuda":
        if not torch.cuda.is_available():
            raise BackendUnavailableError(f"device {str(found)!r}: expected a CUDA device, found none on this machine "
                                          "(torch.cuda.is_available() is False); use device='cpu'")
        if found.index is not None and found.index >= torch.cuda.device_count():
            raise BackendUnavailableError(f"device {str(found)!r}: expected one of the "
                                          f"{torch.cuda.device_count()} CUDA devices, found index {found.index}")
    elif found.type != "cpu":
        raise ArgumentError(f"device: expected 'cpu', 'cuda' or 'cuda:N', found {device!r}")
    return found


class Reconstructor:
    """A model (learned or classical) with everything needed to reconstruct data: its physics, its card.

    Attributes
    ----------
    model : nn.Module
        ``model(y, physics) -> Reconstruction``, in eval mode.
    physics_description : dict or None
        ``{"modality", "geometry", "noise"}`` the model was trained for (None: any physics, classical methods).
    card : pirecon.inference.card.ModelCard or None
        The model card (:mod:`pirecon.inference.card`).
    calibration : dict or None
        ``{"lambda_hat", "alpha", "delta", "method", ...}`` of a calibrated checkpoint (``pirecon calibrate``):
        its intervals are scaled by lambda-hat.
    task_calibration : dict or None
        ``{"temperature", "threshold", "qhat", "alpha", ...}`` of a task-calibrated checkpoint (``pirecon
        calibrate --task``): its label is calibrated (``sigmoid(logit / T + b)``) and comes with a conformal set and a decision.
    ood_calibration : dict or None
        Thresholds of the out-of-distribution flag (:mod:`pirecon.inference.ood`), set by
        :meth:`calibrate_ood` or stored in the checkpoint: then every reconstruction's
        ``provenance["ood"]["flag"]`` flags each slice.
    device : torch.device
    """

    def __init__(self, model: nn.Module, *, name: str, physics_description: dict | None = None, card=None,
                 provenance: dict | None = None, backend: str = "auto", missing_coil_maps: str = "espirit",
                 device="cpu", calibration: dict | None = None, task_calibration: dict | None = None,
                 ood_calibration: dict | None = None):
        self.model = model.eval()
        self.name = name
        self.physics_description = physics_description
        self.card = card
        self.calibration = calibration
        self.task_calibration = task_calibration
        self.ood_calibration = ood_calibration
        self.backend, self.missing_coil_maps = backend, missing_coil_maps
        self._provenance = dict(provenance or {})
        self._ct_physics: dict[str, Any] = {}
        self.device = torch.device("cpu")
        self.to(device)

    def __repr__(self) -> str:
        trained = "" if self.physics_description is None else f", modality={self.physics_description['modality']!r}"
        return f"Reconstructor({self.name}{trained}, device={str(self.device)!r})"

    def to(self, device) -> "Reconstructor":
        """Move the model to ``device`` (``"cpu"``, ``"cuda"``, ``"cuda:1"``); returns ``self``."""
        self.device = _device(device)
        self.model.to(self.device)
        return self

    @property
    def identity(self) -> dict:
        """What tells this reconstructor from another of the same name, as plain data: ``{"model",
        "checkpoint_sha256"}`` for a trained model, ``{"model", "config"}`` (method and parameters as JSON) for
        a classical one."""
        return {key: self._provenance[key] for key in ("model", "checkpoint_sha256", "config")
                if key in self._provenance}

    @property
    def physics(self):
        """The :class:`pirecon.physics.Physics` the model was trained for (CT: its ray transform and noise
        model); ``None`` for MRI (coil maps and masks come with each slice) and for classical methods."""
        description = self.physics_description
        if description is None or description.get("geometry") is None:
            return None
        from ..ct import geometry_from_dict
        from ..noise import noise_from_dict

        noise = None if description.get("noise") is None else noise_from_dict(description["noise"])
        return self._physics_of(geometry_from_dict(description["geometry"]), noise)

    def _lodopab_units(self) -> str:
        """The LoDoPaB-CT units the model was trained in (its card's training data), else pirecon's ``"mm"``."""
        train = ((self.card.data.get("training_data") or {}).get("train") if self.card is not None else None)
        units = train.get("units") if isinstance(train, dict) else None
        return units if isinstance(units, str) else "mm"

    def _physics_of(self, geometry, noise):
        """The CT physics of ``(geometry, noise)``, built once per reconstructor (building a ray transform is
        the slow part of a small file; the model's own physics is one of these)."""
        from ..data.acquisition import BatchPhysics, describe_physics

        key = json.dumps(describe_physics("ct", geometry, noise), sort_keys=True)
        if key not in self._ct_physics:
            self._ct_physics[key] = BatchPhysics("ct", geometry, noise, backend=self.backend)({})
        return self._ct_physics[key]

    def open(self, source, *, physics=None, physics_mismatch: str = "error", seed: int = 0, metrics: bool = False,
             progress: bool = True):
        """``source`` opened and checked, before any reconstruction: the file against its spec, its physics
        against the model's (unless ``physics_mismatch="use_data"``), its modality against a classical method's.
        Returns a :class:`pirecon.inference.sources.Source` that :meth:`reconstruct` takes; arguments as there."""
        from .._validation import check_choice
        from ..data.acquisition import check_same_physics
        from .sources import open_source

        check_choice(physics_mismatch, "physics_mismatch", PHYSICS_MISMATCH)
        data = open_source(source, physics=physics, model_physics=self.physics, ct_physics=self._physics_of,
                           missing_coil_maps=self.missing_coil_maps, seed=seed, progress=progress,
                           ground_truth=metrics, lodopab_units=self._lodopab_units())
        if self.physics_description is not None and physics_mismatch == "error":
            check_same_physics(self.physics_description, data.description, stored_name=f"the model ({self.name})",
                               found_name=f"{data.name} (pass physics_mismatch='use_data', --physics-mismatch "
                                          "use_data, to reconstruct anyway)")
        if hasattr(self.model, "check_modality"):
            self.model.check_modality(data.description["modality"])
        data.physics_mismatch, data.metrics = physics_mismatch, metrics
        return data

    def calibrate_ood(self, source, *, alpha: float | None = None, batch_size: int = 8, progress: bool = True) -> dict:
        """Fit the out-of-distribution flag (:func:`pirecon.inference.ood.fit_ood`) on ``source``, in-distribution
        slices disjoint from the data to be flagged (a calibration file), and keep it; returns the thresholds."""
        from .ood import OOD_ALPHA, fit_ood

        self.ood_calibration = None
        features = self.reconstruct(source, batch_size=batch_size, progress=progress, ood=True).provenance["ood"]
        self.ood_calibration = fit_ood(features, OOD_ALPHA if alpha is None else alpha)
        return self.ood_calibration

    def reconstruct(self, source, *, physics=None, batch_size: int = 8, progress: bool = True,
                    physics_mismatch: str = "error", seed: int = 0, metrics: bool = False,
                    ood: bool | None = None) -> Reconstruction:
        """Reconstruct every slice of ``source``, ``batch_size`` slices at a time.

        Parameters
        ----------
        source : path, list of paths, tensor or Source
            A raw file (pirecon's CT or MRI spec, fastMRI, a LoDoPaB-CT ``observation_*.hdf5``); a DICOM
            series (directory or files) or NIfTI volume, simulated with ``physics`` (default: the model's);
            measurements ``(N, 1, angles, detectors)`` / ``(N, coils, H, W)`` with their ``physics``; or what
            :meth:`open` returned (then ``physics``, ``physics_mismatch``, ``seed`` and ``metrics`` are its).
        physics : Physics, optional
            The measurements' physics (tensors) or the physics to simulate images with.
        batch_size : int
            Slices per model call; a raw file is read one batch of slices at a time (memory holds one batch of
            inputs, and the outputs).
        progress : bool
            A progress bar over the slices (on a terminal).
        physics_mismatch : {"error", "use_data"}
            Data whose physics (modality, CT geometry, noise model) differs from the model's: refuse with an
            error naming both, or reconstruct anyway.
        seed : int
            Noise seed of simulated images (slice ``k`` uses ``seed + k``).
        metrics : bool
            When the source has ground truth (or was simulated from images): PSNR and SSIM per slice in
            ``provenance["metrics"]`` (SSIM costs about as much as FBP, so it is asked for).
        ood : bool, optional
            The out-of-distribution features in ``provenance["ood"]`` (one forward operator per batch, about
            the cost of FBP); default: when the flag is calibrated (``ood_calibration``), which adds the flag.

        Returns
        -------
        Reconstruction
            ``image (N, 1, H, W)`` on the CPU (real for CT, complex for MRI), ``uncertainty`` and ``task``
            when the model fills them, and ``provenance`` (model, checkpoint and its SHA-256, source, geometry,
            pirecon version; ``metrics`` when asked for; ``ood`` with ``ood``: each slice's data consistency
            relative to the noise level and interval width, and its out-of-distribution ``flag`` once
            calibrated, see :mod:`pirecon.inference.ood`).
        """
        from .._progress import progress_bar
        from .._validation import check_positive
        from .._version import __version__
        from .calibrate_task import apply_task_calibration
        from .sources import Source

        check_positive(batch_size, "batch_size", integer=True)
        data = source if isinstance(source, Source) else \
            self.open(source, physics=physics, physics_mismatch=physics_mismatch, seed=seed, metrics=metrics,
                      progress=progress)
        from .ood import apply_ood, consistency

        images, uncertainties, tasks, scores = [], [], {}, {"psnr_db": [], "ssim": []}
        if ood is None:
            ood = self.ood_calibration is not None
        features: dict[str, list] | None = {"consistency": [], "width": []} if ood else None
        if hasattr(self.model, "progress"):
            self.model.progress = False
        bar = progress_bar(total=data.num_slices, progress=progress, unit="slice", desc=f"reconstructing {self.name}")
        try:
            with torch.no_grad():
                for _, y, batch_physics, truth in data.batches(batch_size):
                    result = self.model(y.to(self.device), batch_physics)
                    if self.calibration is not None and isinstance(result.uncertainty, Interval):
                        result.uncertainty = dataclasses.replace(
                            result.uncertainty.scaled(self.calibration["lambda_hat"]), calibration=self.calibration)
                    if self.task_calibration is not None and "label_logit" in result.task:
                        result.task = apply_task_calibration(result.task, self.task_calibration)
                    image = result.image.detach().cpu()
                    images.append(image)
                    if features is not None:
                        features["consistency"] += consistency(y.to(self.device), batch_physics,
                                                               result.image).cpu().tolist()
                        if isinstance(result.uncertainty, Interval):
                            features["width"] += result.uncertainty.width.flatten(1).double().mean(dim=1).cpu().tolist()
                    if result.uncertainty is not None:
                        uncertainties.append(result.uncertainty.detach("cpu") if isinstance(
                            result.uncertainty, Interval) else result.uncertainty.detach().cpu())
                    for key, value in result.task.items():
                        tasks.setdefault(key, []).append(value.detach().cpu())
                    if data.metrics and truth is not None:
                        _score(image, truth, scores)
                    bar.update(y.shape[0])
        finally:
            bar.close()
        provenance = {**self._provenance, "source_file": data.name, "source_kind": data.kind,
                      "physics": data.description, "physics_mismatch": data.physics_mismatch,
                      "pirecon_version": __version__, **data.facts}
        if data.description.get("geometry") is not None:
            provenance["geometry"] = data.description["geometry"]
        if scores["psnr_db"]:
            provenance["metrics"] = {**scores, "mean_psnr_db": sum(scores["psnr_db"]) / len(scores["psnr_db"]),
                                     "mean_ssim": sum(scores["ssim"]) / len(scores["ssim"])}
        uncertainty = None
        if uncertainties:
            uncertainty = Interval.concatenate(uncertainties) if isinstance(uncertainties[0], Interval) else \
                torch.cat(uncertainties)
            if isinstance(uncertainty, Interval):
                provenance["uncertainty"] = uncertainty.describe()
        if features is not None:
            if not features["width"]:
                del features["width"]
            if self.ood_calibration is not None:
                features["flag"] = apply_ood(features, self.ood_calibration).tolist()
                features["thresholds"] = self.ood_calibration
            provenance["ood"] = features
        if self.task_calibration is not None and tasks:
            provenance["task_calibration"] = {key: self.task_calibration.get(key, 0.0 if key == "bias" else None)
                                              for key in ("temperature", "bias", "threshold", "qhat", "alpha",
                                                          "method")}
        return Reconstruction(torch.cat(images), uncertainty,
                              {key: torch.cat(values) for key, values in tasks.items()}, provenance)


def _score(image: torch.Tensor, truth: torch.Tensor, scores: dict) -> None:
    from ..metrics import psnr, ssim

    shown = (image.abs() if image.is_complex() else image).float()
    reference = (truth.abs() if truth.is_complex() else truth).float()
    if shown.shape != reference.shape:
        return
    scores["psnr_db"].extend(psnr(shown, reference).tolist())
    scores["ssim"].extend(ssim(shown, reference).tolist())


def load(path, map_location=None, device=None, *, models: dict[str, type] | None = None) -> Reconstructor:
    """The trained model of a checkpoint written by ``pirecon fit``, ready to reconstruct.

    Parameters
    ----------
    path : checkpoint file (``.ckpt``)
    map_location : as for ``torch.load``; default ``"cpu"``, so a checkpoint trained on a GPU loads anywhere.
    device : where the model runs (default ``"cpu"``); a device this machine lacks is refused before reading.
    models : ``{"mypackage.MyNet": MyNet}``, model classes of your own that the checkpoint may name.

    Raises
    ------
    CheckpointError, CheckpointVersionError, CheckpointDeviceError
        A missing, corrupt or foreign file; a format newer than this pirecon; tensors on a missing device.
    ConfigError
        A model that is neither pirecon's nor passed in ``models`` (nothing is imported), or whose weights do
        not fit its spec.
    """
    from ..models.registry import build_model

    target = _device("cpu" if device is None else device)
    path = Path(path)
    checkpoint, sha256 = read_checkpoint(path, map_location="cpu" if map_location is None else map_location)
    hparams = checkpoint.get("hyper_parameters") or {}
    spec = hparams.get("model") if isinstance(hparams, dict) else None
    if not isinstance(spec, dict):
        raise CheckpointError(f"{path}: expected the model's class_path/init_args in the checkpoint's "
                              f"hyper_parameters, found {type(spec).__name__} (was the module built from a ready "
                              "nn.Module?)")
    try:
        model = build_model(spec, allow_import=False, models=models)
    except ValueError as err:
        raise ConfigError(f"{path}: {err}") from None
    prefix = "model."
    weights = {key[len(prefix):]: value for key, value in checkpoint["state_dict"].items() if key.startswith(prefix)}
    missing, unexpected = _key_differences(model, weights)
    if missing or unexpected:
        raise CheckpointError(f"{path}: expected the weights of {type(model).__name__}({_args(spec)}), found "
                              f"{len(missing)} missing ({', '.join(missing[:3])}) and {len(unexpected)} unexpected "
                              f"({', '.join(unexpected[:3])}) tensors")
    try:
        model.load_state_dict(weights)
    except RuntimeError as err:  # shapes differ
        reason = str(err).strip().splitlines()[-1].strip()
        raise CheckpointError(f"{path}: expected weights of the shapes {type(model).__name__}({_args(spec)}) "
                              f"has, found {reason[:300]}") from None
    card = _card(path, checkpoint, sha256)
    name = type(model).__name__
    provenance = {"model": name, "model_spec": json.loads(json.dumps(spec)), "checkpoint": str(path),
                  "checkpoint_sha256": sha256, "method": name}
    return Reconstructor(model, name=name, physics_description=checkpoint.get("pirecon_physics"), card=card,
                         provenance=provenance, backend=hparams.get("backend", "auto"),
                         missing_coil_maps=hparams.get("missing_coil_maps", "espirit"), device=target,
                         calibration=checkpoint.get("pirecon_calibration"),
                         task_calibration=checkpoint.get("pirecon_task_calibration"),
                         ood_calibration=checkpoint.get("pirecon_ood_calibration"))


def _card(path: Path, checkpoint: dict, sha256: str):
    """The checkpoint's model card: ``model_card.json`` beside it when that card lists this checkpoint (it may
    hold test metrics and known limits added after training), else the card stored in the checkpoint."""
    from .card import CARD_JSON, ModelCard

    beside = path.parent / CARD_JSON
    if beside.is_file():
        try:
            card = ModelCard.read(beside)
        except PireconUserError as err:
            warnings.warn(f"{err}; using the card stored in the checkpoint", stacklevel=3)
        else:
            if sha256 in json.dumps(card.data.get("checkpoints")):
                return card
    stored = checkpoint.get("pirecon_card")
    return ModelCard(stored) if isinstance(stored, dict) else None


def _key_differences(model: nn.Module, weights: dict[str, Any]) -> tuple[list[str], list[str]]:
    expected = set(model.state_dict())
    return sorted(expected - set(weights)), sorted(set(weights) - expected)


def _args(spec: dict) -> str:
    return ", ".join(f"{k}={v!r}" for k, v in (spec.get("init_args") or {}).items())


def reconstructor(method: str, *, device="cpu", backend: str = "auto", **params) -> Reconstructor:
    """A classical reconstruction with the interface of :func:`load`'s: ``reconstructor("tv", lam=0.5,
    iterations=300).reconstruct("scan.h5")``. Methods and parameters: :mod:`pirecon.inference.classical`."""
    from .classical import ClassicalMethod

    model = ClassicalMethod(method, **params)
    config = {"method": method, "params": params}
    provenance = {"model": method, "method": method, "config": json.dumps(config, sort_keys=True)}
    return Reconstructor(model, name=method, provenance=provenance, backend=backend, device=device)
