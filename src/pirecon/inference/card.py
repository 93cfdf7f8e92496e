"""The model card of a trained model: plain JSON data, rendered as Markdown, written beside its checkpoints.

``pirecon fit`` (and :func:`pirecon.training.fit.fit_on_simulation`) writes ``model_card.json`` and
``model_card.md`` into the checkpoint directory when training ends, and every checkpoint carries the
card as it stood when the checkpoint was saved (``checkpoint["pirecon_card"]``). ``pirecon test`` adds
the test metrics; :func:`add_known_limits` adds what an evaluation found. This module is Lightning-free:
the card is read, rendered and updated without the training stack.

    card = ModelCard.read("runs/lpd/checkpoints")      # a directory or its model_card.json
    print(card.summary())
    add_known_limits("runs/lpd/checkpoints", ["Streaks at 10 angles and fewer"], metrics={"test": {...}})

The JSON object (``card_format`` 1) has these keys; every value is plain JSON data (numbers, strings,
lists, objects, ``null``; non-finite numbers are stored as ``null``):

``card_format``
    ``1``: the layout described here.
``model``
    ``class`` (the network's class name), ``spec`` (its ``{"class_path", "init_args"}`` dict, ``null``
    for a model passed as a ready module), ``parameters`` (number of parameters of the network) and
    ``trainable_parameters`` (those with ``requires_grad``).
``physics``
    ``modality`` (``"ct"`` or ``"mri"``), ``geometry`` (the CT geometry's dict, millimetres and radians;
    ``null`` for MRI), ``noise`` (the noise model's dict or ``null``): exactly what a checkpoint stores as
    ``pirecon_physics``; and ``description``, the same in one line of words.
``training_data``
    ``source`` (``"simulation"``, ``"files"``, ``"lodopab"`` or ``"other"``), ``description`` (one line),
    ``train`` and ``validation``. A simulation's ``train`` is ``{"stream": true, "protocol": {...},
    "samples_per_epoch": n or null}`` (the protocol: ``modality``, ``phantom``, ``seed`` and the other
    options of the data module's ``simulation`` dict); files are ``{"files": [{"path", "sha256"}, ...]}``
    (``validation`` also gives the ``simulation`` options of a simulated validation file); LoDoPaB-CT is
    ``{"root", "part", "units"}``. ``validation`` is ``null`` when there was none.
``schedule``
    ``optimizer`` (``"Adam"``), ``lr``, ``betas``, ``weight_decay``, ``schedule`` (``"cosine"``,
    ``"onecycle"`` or ``"constant"``), ``loss`` (the loss weights), ``max_steps``, ``max_epochs``,
    ``batch_size`` (per device), ``precision``, ``accumulate_grad_batches``, ``gradient_clip_val``.
``training``
    ``steps`` (optimiser steps done), ``epochs`` (Lightning's epoch counter: passes over the training
    data, where the pass that ``max_steps`` cuts short counts once training has ended),
    ``seconds`` (wall-clock seconds of training, summed over the sessions of a resumed run),
    ``started`` / ``finished`` (UTC, ISO 8601; ``finished`` is ``null`` in a checkpoint's card),
    ``resumed_from`` (the checkpoint file name a resumed run started from, else ``null``),
    ``accelerator`` and ``devices``. No host name or user name is recorded.
``metrics``
    ``validation``: the last validation's ``psnr`` (dB), ``ssim``, ``nmse`` and ``loss`` (means over the
    validation images) and ``validation_step`` (the step it ran at, ``null`` when unknown); ``test``
    (same keys) and ``test_checkpoint`` (the file tested) once a test ran. Other evaluations may add
    sections of their own (an object of numbers each).
``versions``
    ``pirecon``, ``torch``, ``lightning``, ``python``.
``checkpoints``
    ``best`` (``{"file", "sha256", "monitor", "mode", "score"}``: the checkpoint of the best monitored
    validation score) and ``last`` (``{"file", "sha256"}``), each ``null`` when the run kept none.
    File names only, relative to the card's directory; in a checkpoint's own card the ``sha256``
    entries are absent (a file cannot hold its own digest).
``known_limits``
    Strings, one per limit an evaluation found; empty until one has run.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .._atomic import atomic_path
from ..errors import PireconUserError

__all__ = ["ModelCard", "add_known_limits", "update_card", "plain_data", "describe_physics_line",
           "describe_simulation_line", "CARD_FORMAT", "CARD_KEYS", "CARD_JSON", "CARD_MARKDOWN", "METRIC_NAMES"]

CARD_FORMAT = 1
"""The layout of the card's JSON this pirecon writes and reads (``card["card_format"]``)."""

CARD_KEYS = ("card_format", "model", "physics", "training_data", "schedule", "training", "metrics", "versions",
             "checkpoints", "known_limits")
"""The top-level keys of a card, in the order they are written."""

CARD_JSON = "model_card.json"
CARD_MARKDOWN = "model_card.md"

METRIC_NAMES = {"psnr": "PSNR (dB)", "ssim": "SSIM", "nmse": "NMSE", "loss": "Loss"}
"""The metrics of the ``validation`` and ``test`` sections, with the names the Markdown table shows."""

NO_EVALUATION = ("No evaluation has run yet: the limits of this model (the anatomy, doses, geometries "
                 "and artefacts it fails on) are unknown. The metrics above are averages over the validation "
                 "data only, which comes from the same source as the training data.")


# ---------------------------------------------------------------------------------------------------
# plain data
# ---------------------------------------------------------------------------------------------------

def plain_data(value: Any) -> Any:
    """``value`` as JSON data: dicts (string keys), lists, strings, finite numbers, booleans and ``None``.

    Subclasses of str, int and float become the base type, tuples and sets lists, paths strings, NumPy and
    torch scalars and arrays numbers and (nested) lists, objects with ``as_dict()`` (argument namespaces)
    dicts; non-finite floats become ``None``; anything else becomes its ``repr()``, so a card never holds an
    object that needs unpickling.
    """
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, str):
        return str(value)  # str subclasses (torch.__version__ is a TorchVersion) are not plain data
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): plain_data(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain_data(v) for v in value]
    if isinstance(value, (set, frozenset)):
        return [plain_data(v) for v in sorted(value, key=repr)]
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if hasattr(value, "tolist") and callable(value.tolist):  # NumPy and torch scalars and arrays
        return plain_data(value.tolist())
    if hasattr(value, "as_dict") and callable(value.as_dict):  # jsonargparse namespaces
        return plain_data(value.as_dict())
    if hasattr(value, "items") and callable(value.items):  # other mappings
        return {str(k): plain_data(v) for k, v in value.items()}
    return repr(value)


# ---------------------------------------------------------------------------------------------------
# words for the physics, the data and the numbers
# ---------------------------------------------------------------------------------------------------

def _number(value, digits: int = 4) -> str:
    """``value`` in at most ``digits`` significant digits, ``—`` for ``None``."""
    if value is None:
        return "—"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, int):
        return f"{value:,}"
    return f"{value:.{digits}g}"


def _duration(seconds) -> str:
    """``"2 h 05 min"``, ``"12 min 03 s"`` or ``"41.2 s"``."""
    if not isinstance(seconds, (int, float)) or isinstance(seconds, bool):
        return "unknown"
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(int(round(seconds)), 60)
    if minutes < 60:
        return f"{minutes} min {secs:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


def _degrees(angles) -> str:
    if not angles:
        return ""
    low, high = math.degrees(min(angles)), math.degrees(max(angles))
    return f"{low:.4g}° to {high:.4g}°"


def _geometry_words(geometry: dict | None, *, short: bool) -> str:
    """A CT geometry dict in words (``short``: kind and sinogram size only)."""
    if not isinstance(geometry, dict):
        return "no geometry"
    kind = geometry.get("type")
    angles = geometry.get("angles") or []
    n = len(angles)
    if kind in ("parallel2d", "fan2d"):
        name = "parallel beam" if kind == "parallel2d" else "fan beam"
        head = f"{name} {n} angles x {geometry.get('num_detectors')} detectors"
        if short:
            return head
        h, w = (geometry.get("image_shape") or [None, None])[:2]
        words = (f"{head} ({_number(geometry.get('detector_spacing'))} mm apart), angles {_degrees(angles)}, "
                 f"{h} x {w} image of {_number(geometry.get('pixel_size'))} mm pixels")
        if kind == "fan2d":
            words += (f", source {_number(geometry.get('source_distance'))} mm and detector "
                      f"{_number(geometry.get('detector_distance'))} mm from the centre")
        return words
    if kind == "cone3d":
        rows, cols = (geometry.get("detector_shape") or [None, None])[:2]
        head = f"cone beam {n} angles x {rows} x {cols} detector"
        if short:
            return head
        volume = " x ".join(str(s) for s in geometry.get("volume_shape") or [])
        return (f"{head}, angles {_degrees(angles)}, {volume} volume of {_number(geometry.get('voxel_size'))} mm "
                f"voxels, source {_number(geometry.get('source_distance'))} mm and detector "
                f"{_number(geometry.get('detector_distance'))} mm from the centre")
    return f"geometry {kind!r}"


def _noise_words(noise: dict | None) -> str:
    if not isinstance(noise, dict):
        return "no noise model"
    kind = noise.get("type")
    if kind == "gaussian":
        if noise.get("sigma") is not None:
            return f"Gaussian noise, sigma {_number(noise['sigma'])}"
        return f"Gaussian noise, sigma {_number(noise.get('relative'))} x the mean |measurement|"
    if kind == "transmission_poisson":
        return f"Poisson (transmission) noise, {_number(noise.get('photon_count'))} photons per ray"
    if kind == "complex_gaussian":
        coils = " with correlated coils" if noise.get("covariance") is not None else ""
        return f"complex Gaussian k-space noise, sigma {_number(noise.get('sigma'))}{coils}"
    return f"noise model {kind!r}"


def describe_physics_line(description: dict, *, short: bool = False) -> str:
    """One line of words for a physics description ``{"modality", "geometry", "noise"}`` (what
    ``BatchPhysics.description()`` returns): ``"CT parallel beam 30 angles x 183 detectors ..."``."""
    modality = description.get("modality")
    if modality == "ct":
        words = f"CT {_geometry_words(description.get('geometry'), short=short)}"
    elif modality == "mri":
        words = "MRI" if short else "MRI, Cartesian k-space, coil maps and sampling masks of each batch"
    else:
        words = f"modality {modality!r}"
    if not short:
        words += f"; {_noise_words(description.get('noise'))}"
    return words


def describe_simulation_line(protocol: dict) -> str:
    """One line for a simulation protocol: ``"ellipses CT simulation (seed 0)"``."""
    phantom = protocol.get("phantom", "ellipses")
    modality = str(protocol.get("modality", "ct")).upper()
    return f"{phantom} {modality} simulation (seed {protocol.get('seed', 0)})"


# ---------------------------------------------------------------------------------------------------
# the card
# ---------------------------------------------------------------------------------------------------

def _card_json_path(path) -> Path:
    """``model_card.json`` of ``path``: the file itself, the ``.json`` beside a ``model_card.md``, or inside a
    directory."""
    path = Path(path)
    if path.is_dir():
        return path / CARD_JSON
    if path.suffix == ".md":
        return path.with_suffix(".json")
    return path


@dataclass
class ModelCard:
    """A model card: ``data`` is the JSON object described in :mod:`pirecon.inference.card`.

    The top-level entries read as attributes (``card.model["parameters"]``, ``card.metrics``);
    :attr:`model_name`, :attr:`parameters`, :attr:`steps` and :attr:`validation_psnr` are shortcuts.
    """

    data: dict[str, Any] = field(default_factory=dict)

    def __getattr__(self, name: str):
        if name in CARD_KEYS and name in self.__dict__.get("data", {}):
            return self.__dict__["data"][name]
        raise AttributeError(f"{type(self).__name__} has no attribute {name!r}")

    # ---- shortcuts ----------------------------------------------------------------------------------

    @property
    def model_name(self) -> str:
        """The network's class name, ``"unknown model"`` when the card lacks it."""
        return (self.data.get("model") or {}).get("class") or "unknown model"

    @property
    def parameters(self) -> int | None:
        """The network's number of parameters."""
        return (self.data.get("model") or {}).get("parameters")

    @property
    def steps(self) -> int | None:
        """Optimiser steps trained."""
        return (self.data.get("training") or {}).get("steps")

    @property
    def validation_psnr(self) -> float | None:
        """The last validation PSNR in dB, ``None`` when no validation ran."""
        return ((self.data.get("metrics") or {}).get("validation") or {}).get("psnr")

    # ---- reading and writing ----------------------------------------------------------------------------

    @classmethod
    def read(cls, path) -> "ModelCard":
        """The card in ``path``: a ``model_card.json``, the ``model_card.md`` beside it or their directory.

        Raises :class:`~pirecon.errors.PireconUserError` naming the file for a missing file, invalid JSON,
        a JSON value that is not a card, or a card format newer than this pirecon reads.
        """
        file = _card_json_path(path)
        if not file.is_file():
            found = "a directory" if file.is_dir() else "no file"
            raise PireconUserError(f"model card: expected a {CARD_JSON} written by pirecon fit, found {found} at "
                                   f"{str(file)!r}")
        try:
            data = json.loads(file.read_text(encoding="utf-8"))
        except UnicodeDecodeError:
            raise PireconUserError(f"{file}: expected a model card in JSON (UTF-8 text), found binary data") from None
        except json.JSONDecodeError as err:
            raise PireconUserError(f"{file}: expected a model card in JSON, found invalid JSON ({err.msg} at line "
                                   f"{err.lineno} column {err.colno})") from None
        if not isinstance(data, dict):
            raise PireconUserError(f"{file}: expected a model card (a JSON object with the keys "
                                   f"{', '.join(CARD_KEYS)}), found a JSON {_json_type(data)}")
        missing = [key for key in CARD_KEYS if key not in data]
        if missing:
            raise PireconUserError(f"{file}: expected a model card with the keys {', '.join(CARD_KEYS)}, found no "
                                   f"{', '.join(missing)}")
        version = data["card_format"]
        if isinstance(version, bool) or not isinstance(version, int) or not 1 <= version <= CARD_FORMAT:
            raise PireconUserError(f"{file}: expected card_format 1 to {CARD_FORMAT}, found {version!r} "
                                   "(a newer pirecon wrote it; upgrade pirecon to read it)")
        return cls(data)

    def to_json(self) -> str:
        """The card as indented JSON text (strict JSON: no NaN or infinity), ending with a newline."""
        return json.dumps(plain_data(self.data), indent=2, allow_nan=False, ensure_ascii=False) + "\n"

    def write(self, directory) -> tuple[Path, Path]:
        """Write ``model_card.md`` and ``model_card.json`` into ``directory`` (created if missing), each
        atomically (a reader sees the old file or the new one, never a part). Returns ``(md_path, json_path)``."""
        directory = Path(directory)
        md_path, json_path = directory / CARD_MARKDOWN, directory / CARD_JSON
        markdown, text = self.to_markdown(), self.to_json()
        with atomic_path(md_path) as tmp:
            Path(tmp).write_text(markdown, encoding="utf-8")
        with atomic_path(json_path) as tmp:
            Path(tmp).write_text(text, encoding="utf-8")
        return md_path, json_path

    # ---- words ---------------------------------------------------------------------------------------------

    def _physics_line(self, *, short: bool) -> str:
        physics = self.data.get("physics") or {}
        if not short and physics.get("description"):
            return physics["description"]
        return describe_physics_line(physics, short=short) if physics else "unknown physics"

    def _data_line(self) -> str:
        data = self.data.get("training_data") or {}
        if data.get("description"):
            return data["description"]
        if data.get("source") == "simulation":
            return describe_simulation_line((data.get("train") or {}).get("protocol") or {})
        return "unknown data"

    def summary(self) -> str:
        """One line: model, parameters, physics, steps, data and the last PSNR, e.g. ``"LearnedPrimalDual
        (12,345 parameters), CT parallel beam 30 angles x 183 detectors, trained 2,400 steps on ellipses CT
        simulation (seed 0); validation PSNR 33.5 dB"``."""
        parameters = self.parameters
        head = self.model_name + (f" ({parameters:,} parameters)" if isinstance(parameters, int) else "")
        steps = self.steps
        trained = f"trained {steps:,} steps" if isinstance(steps, int) else "trained"
        line = f"{head}, {self._physics_line(short=True)}, {trained} on {self._data_line()}"
        metrics = self.data.get("metrics") or {}
        scores = []
        for section, name in (("validation", "validation"), ("test", "test")):
            psnr = (metrics.get(section) or {}).get("psnr")
            if isinstance(psnr, (int, float)) and not isinstance(psnr, bool):
                scores.append(f"{name} PSNR {psnr:.1f} dB")
        if scores:
            line += "; " + ", ".join(scores)
        return " ".join(line.split())  # one line, whatever the strings inside held

    def to_markdown(self) -> str:
        """The card as Markdown: title, summary paragraph, then Model, Physics, Training data, Schedule and
        training time, Metrics (a table), Versions, Checkpoints and Known limits."""
        d = self.data
        lines = [f"# Model card: {self.model_name}", "", self._paragraph(), ""]
        lines += self._model_section(d.get("model") or {})
        lines += self._physics_section(d.get("physics") or {})
        lines += self._data_section(d.get("training_data") or {})
        lines += self._schedule_section(d.get("schedule") or {}, d.get("training") or {})
        metrics = dict(d.get("metrics") or {})
        calibration = metrics.pop("calibration", None)
        task_calibration = metrics.pop("task_calibration", None)
        lines += self._metrics_section(metrics)
        if isinstance(calibration, dict):
            lines += self._calibration_section(calibration)
        if isinstance(task_calibration, dict):
            lines += self._task_section(task_calibration)
        lines += self._versions_section(d.get("versions") or {})
        lines += self._checkpoints_section(d.get("checkpoints") or {})
        lines += self._limits_section(d.get("known_limits") or [])
        return "\n".join(lines).rstrip("\n") + "\n"

    def _paragraph(self) -> str:
        d = self.data
        training, schedule = d.get("training") or {}, d.get("schedule") or {}
        versions = d.get("versions") or {}
        parameters = self.parameters
        text = f"A {self.model_name} reconstruction network"
        if isinstance(parameters, int):
            text += f" with {parameters:,} parameters"
        text += f", trained with pirecon {versions.get('pirecon', '(unknown version)')}"
        if isinstance(self.steps, int):
            text += f" for {self.steps:,} optimiser steps"
        if training.get("seconds") is not None:
            text += f" ({_duration(training['seconds'])} of training"
            text += f", finished {training['finished']})" if training.get("finished") else ")"
        text += f" on {self._data_line()}"
        if schedule.get("lr") is not None:
            text += (f" with Adam at a learning rate of {_number(schedule['lr'])} "
                     f"({schedule.get('schedule', 'unknown')} schedule)")
        text += f". It reconstructs {self._physics_line(short=False)}."
        psnr = self.validation_psnr
        validation = (d.get("metrics") or {}).get("validation") or {}
        if psnr is not None:
            text += f" On its validation data it reaches a PSNR of {psnr:.2f} dB"
            if validation.get("ssim") is not None:
                text += f" and an SSIM of {validation['ssim']:.3f}"
            text += "."
        else:
            text += " No validation has been recorded."
        limits = d.get("known_limits") or []
        text += (f" An evaluation found {len(limits)} known limit{'s' if len(limits) != 1 else ''} (below)."
                 if limits else " It has not been evaluated beyond validation yet.")
        return text

    @staticmethod
    def _model_section(model: dict) -> list[str]:
        lines = ["## Model", "", f"- Class: `{model.get('class', 'unknown')}`",
                 f"- Parameters: {_number(model.get('parameters'))}"
                 + (f" ({_number(model.get('trainable_parameters'))} trainable)"
                    if model.get("trainable_parameters") not in (None, model.get("parameters")) else "")]
        spec = model.get("spec")
        if spec is not None:
            lines += ["- Specification (`class_path` / `init_args`, as a config's `model.model`):", "",
                      "```json", json.dumps(spec, indent=2, allow_nan=False), "```"]
        else:
            lines.append("- Specification: none (the model was passed as a ready module)")
        return lines + [""]

    def _physics_section(self, physics: dict) -> list[str]:
        lines = ["## Physics", "", f"- Modality: {str(physics.get('modality', 'unknown')).upper()}"]
        if physics.get("modality") == "ct" or physics.get("geometry") is not None:
            lines.append(f"- Geometry: {_geometry_words(physics.get('geometry'), short=False)}")
        else:
            lines.append("- Geometry: none (MRI physics comes with each batch: coil maps and sampling masks)")
        lines.append(f"- Noise model: {_noise_words(physics.get('noise'))}")
        lines += ["", "The network was trained for this physics only. pirecon refuses to resume or test it on data "
                  "of another modality, geometry or noise model unless `physics_mismatch=\"use_data\"` is set.", ""]
        return lines

    @staticmethod
    def _files_lines(files: list) -> list[str]:
        out = []
        for entry in files:
            entry = entry if isinstance(entry, dict) else {"path": entry}
            digest = entry.get("sha256")
            out.append(f"  - `{entry.get('path')}`" + (f" (SHA-256 `{digest}`)" if digest else ""))
        return out

    def _data_section(self, data: dict) -> list[str]:
        lines = ["## Training data", "", f"{self._data_line()[:1].upper()}{self._data_line()[1:]}.", ""]
        source, train = data.get("source"), data.get("train") or {}
        if source == "simulation":
            protocol = train.get("protocol") or {}
            per_epoch = train.get("samples_per_epoch")
            lines.append("- Training: a stream of samples simulated on the fly, never repeated"
                         + (f" ({per_epoch:,} samples per epoch)" if isinstance(per_epoch, int) else ""))
            lines.append("- Protocol: " + ", ".join(f"{k} `{json.dumps(v)}`" for k, v in protocol.items()))
        elif source == "files":
            lines.append(f"- Training files ({len(train.get('files') or [])}):")
            lines += self._files_lines(train.get("files") or [])
        elif source == "lodopab":
            lines.append(f"- Training: LoDoPaB-CT part `{train.get('part')}` in `{train.get('root')}` "
                         f"(units {train.get('units', 'mm')})")
        else:
            lines.append(f"- Training: {json.dumps(train) if train else 'not recorded'}")
        validation = data.get("validation")
        if not validation:
            lines.append("- Validation: none")
        elif validation.get("files"):
            lines.append(f"- Validation files ({len(validation['files'])}):")
            lines += self._files_lines(validation["files"])
            if validation.get("simulation"):
                lines.append("  - simulated with " + ", ".join(f"{k} `{json.dumps(v)}`"
                                                              for k, v in validation["simulation"].items()))
        elif validation.get("part") is not None:
            lines.append(f"- Validation: LoDoPaB-CT part `{validation.get('part')}` in `{validation.get('root')}`")
        else:
            lines.append(f"- Validation: {json.dumps(validation)}")
        return lines + [""]

    @staticmethod
    def _schedule_section(schedule: dict, training: dict) -> list[str]:
        rows = [
            ("Optimiser", schedule.get("optimizer")),
            ("Learning rate", _number(schedule.get("lr"))),
            ("Betas", ", ".join(_number(b) for b in schedule.get("betas") or []) or None),
            ("Weight decay", _number(schedule.get("weight_decay"))),
            ("Learning-rate schedule", schedule.get("schedule")),
            ("Loss weights", ", ".join(f"{k} {_number(v)}" for k, v in (schedule.get("loss") or {}).items()) or None),
            ("Maximum steps", _number(schedule.get("max_steps"))),
            ("Maximum epochs", _number(schedule.get("max_epochs"))),
            ("Batch size (per device)", _number(schedule.get("batch_size"))),
            ("Gradient accumulation", _number(schedule.get("accumulate_grad_batches"))),
            ("Gradient clipping (norm)", _number(schedule.get("gradient_clip_val"))),
            ("Precision", schedule.get("precision")),
            ("Steps trained", _number(training.get("steps"))),
            ("Epochs", _number(training.get("epochs"))),
            ("Training time", _duration(training.get("seconds"))),
            ("Started (UTC)", training.get("started")),
            ("Finished (UTC)", training.get("finished") or "not finished"),
            ("Resumed from", training.get("resumed_from") or "—"),
            ("Hardware", f"{training.get('devices', '?')} x {training.get('accelerator', '?')}"
             if training.get("accelerator") else None),
        ]
        lines = ["## Schedule and training time", "", "| Setting | Value |", "|---|---|"]
        lines += [f"| {name} | {value if value is not None else '—'} |" for name, value in rows]
        return lines + [""]

    @staticmethod
    def _metrics_section(metrics: dict) -> list[str]:
        lines = ["## Metrics", ""]
        sections = [name for name, values in metrics.items() if isinstance(values, dict) and values]
        if not sections:
            return lines + ["No validation or test metrics have been recorded.", ""]
        names = list(METRIC_NAMES)
        for section in sections:
            names += [k for k in metrics[section] if k not in names]
        lines.append("| Metric | " + " | ".join(s.capitalize() for s in sections) + " |")
        lines.append("|---|" + "---|" * len(sections))
        for name in names:
            if any(name in metrics[s] for s in sections):
                cells = [_number(metrics[s].get(name), 5) for s in sections]
                lines.append(f"| {METRIC_NAMES.get(name, name)} | " + " | ".join(cells) + " |")
        notes = []
        if metrics.get("validation_step") is not None:
            notes.append(f"validation at step {metrics['validation_step']:,}")
        if metrics.get("test_checkpoint"):
            notes.append(f"test of `{metrics['test_checkpoint']}`")
        lines.append("")
        lines.append("Means over the images of each set" + (f" ({'; '.join(notes)})." if notes else "."))
        return lines + [""]

    @staticmethod
    def _calibration_section(calibration: dict) -> list[str]:
        """The intervals' calibration (``pirecon calibrate``): method, lambda-hat, the guarantee and its data."""
        method = str(calibration.get("method", "")).upper()
        bound = calibration.get("bound")
        lines = ["## Calibration", "",
                 f"{method}{f' ({bound.upper()} bound)' if bound else ''}: intervals scaled by lambda-hat "
                 f"{_number(calibration.get('lambda_hat'))} on {_number(calibration.get('n'))} held-out calibration "
                 f"{calibration.get('unit', 'images')} (empirical risk {_number(calibration.get('risk_hat'))}, bound "
                 f"{_number(calibration.get('upper_bound'))}). Guarantee: the expected fraction of pixels outside "
                 f"the interval is at most {_number(calibration.get('alpha'))}"
                 + (f" with probability at least {_number(1 - calibration['delta'])} over the calibration set"
                    if calibration.get("delta") is not None else " in expectation")
                 + ", for test data exchangeable with the calibration data.", ""]
        lines += [f"- `{f.get('path')}` (sha256 `{str(f.get('sha256', ''))[:16]}`, {f.get('units')} units)"
                  for f in calibration.get("files") or [] if isinstance(f, dict)]
        return lines + [""]

    @staticmethod
    def _task_section(calibration: dict) -> list[str]:
        """The lesion task (``pirecon calibrate --task``): the calibrated label, its guarantee, and the metrics
        measured on held-out test cases with their 95% bootstrap intervals."""
        def interval(value) -> str:
            if not isinstance(value, (list, tuple)) or len(value) != 3 or value[0] is None or value[0] != value[0]:
                return "—"
            return f"{_number(value[0], 3)} [{_number(value[1], 3)}, {_number(value[2], 3)}]"

        alpha = calibration.get("alpha")
        level = _number(1 - alpha) if isinstance(alpha, (int, float)) and not isinstance(alpha, bool) else "—"
        lines = ["## Diagnostic task", "",
                 f"Lesion label calibrated by {calibration.get('method', 'temperature scaling + split conformal')}: "
                 f"temperature {_number(calibration.get('temperature'))}, bias "
                 f"{_number(calibration.get('bias', 0.0))} and operating point "
                 f"{_number(calibration.get('threshold'))} from {_number(calibration.get('n_temperature'))} held-out "
                 f"cases, conformal threshold qhat {_number(calibration.get('qhat'))} from "
                 f"{_number(calibration.get('n_conformal'))} others. Guarantee: the prediction set holds the true "
                 f"label with probability at least {level}, for cases exchangeable with the calibration cases.", ""]
        lines += [f"- `{f.get('path')}` (sha256 `{str(f.get('sha256', ''))[:16]}`, {f.get('cases')} cases)"
                  for f in calibration.get("files") or [] if isinstance(f, dict)]
        test = calibration.get("test")
        if isinstance(test, dict):
            lines += ["", f"Measured on {_number(test.get('cases'))} held-out test cases "
                          f"({_number(test.get('lesion_cases'))} with lesions), 95% bootstrap intervals:", "",
                      "| metric | value |", "|---|---:|",
                      f"| Dice (cases with lesions) | {interval(test.get('dice'))} |",
                      f"| HD95 (pixels) | {interval(test.get('hd95'))} |",
                      f"| ROC AUC | {interval(test.get('auc'))} |",
                      f"| sensitivity / specificity | {_number(test.get('sensitivity'), 3)} / "
                      f"{_number(test.get('specificity'), 3)} |",
                      f"| ECE (after calibration) | {_number(test.get('ece'), 3)} |",
                      f"| ECE of a calibrated model on as many cases (mean / 95th percentile) | "
                      f"{_number((test.get('ece_floor') or {}).get('mean'), 3)} / "
                      f"{_number((test.get('ece_floor') or {}).get('p95'), 3)} |",
                      f"| conformal set coverage / mean size | {_number(test.get('set_coverage'), 3)} / "
                      f"{_number(test.get('set_size'), 3)} |"]
            lines += [f"- test file `{f.get('path')}` (sha256 `{str(f.get('sha256', ''))[:16]}`)"
                      for f in test.get("files") or [] if isinstance(f, dict)]
        return lines + [""]

    @staticmethod
    def _versions_section(versions: dict) -> list[str]:
        lines = ["## Versions", ""]
        lines += [f"- {name}: {versions.get(key, 'unknown')}" for key, name in
                  (("pirecon", "pirecon"), ("torch", "PyTorch"), ("lightning", "Lightning"), ("python", "Python"))]
        return lines + [""]

    @staticmethod
    def _checkpoints_section(checkpoints: dict) -> list[str]:
        lines = ["## Checkpoints", ""]
        best, last = checkpoints.get("best"), checkpoints.get("last")
        if best:
            score = best.get("score")
            lines.append(f"- Best: `{best.get('file')}`"
                         + (f" ({best.get('monitor')} {_number(score, 5)}, {best.get('mode')})" if score is not None
                            else "")
                         + (f", SHA-256 `{best['sha256']}`" if best.get("sha256") else ""))
        if last:
            lines.append(f"- Last: `{last.get('file')}`" + (f", SHA-256 `{last['sha256']}`" if last.get("sha256")
                                                           else ""))
        if not best and not last:
            lines.append("No checkpoint file recorded.")
        return lines + [""]

    @staticmethod
    def _limits_section(limits: list) -> list[str]:
        lines = ["## Known limits", ""]
        if not limits:
            return lines + [NO_EVALUATION, ""]
        return lines + [f"- {limit}" for limit in limits] + [""]


def _json_type(value) -> str:
    return {list: "array", str: "string", bool: "boolean", int: "number", float: "number",
            type(None): "null"}.get(type(value), type(value).__name__)


def _check_limits(limits) -> list[str]:
    if isinstance(limits, str) or not isinstance(limits, (list, tuple)) \
            or not all(isinstance(x, str) and x.strip() for x in limits):
        raise PireconUserError(f"limits: expected a list of non-empty strings, found {limits!r}")
    return [" ".join(x.split()) for x in limits]


def update_card(directory_or_card_path, *, known_limits: list[str] | None = None, metrics: dict | None = None,
                replace_limits: bool = False) -> ModelCard:
    """Update the card on disk (a directory or its ``model_card.json`` / ``.md``) and write both files again.

    ``known_limits`` are added after those already there (a limit already listed is not repeated), or
    replace them with ``replace_limits=True``. ``metrics`` entries are merged into the card's
    ``metrics``: a dict merges into the section of that name (``{"test": {"psnr": 31.2}}``), anything
    else replaces the entry. Returns the updated card.
    """
    card = ModelCard.read(directory_or_card_path)
    if known_limits is not None:
        new = _check_limits(known_limits)
        old = [] if replace_limits else list(card.data.get("known_limits") or [])
        card.data["known_limits"] = old + [x for i, x in enumerate(new) if x not in old and x not in new[:i]]
    if metrics is not None:
        if not isinstance(metrics, dict):
            raise PireconUserError(f"metrics: expected a dict of metric sections, found {type(metrics).__name__}")
        section = card.data.setdefault("metrics", {})
        for key, value in plain_data(metrics).items():
            if isinstance(value, dict) and isinstance(section.get(key), dict):
                section[key] = {**section[key], **value}
            else:
                section[key] = value
    card.write(_card_json_path(directory_or_card_path).parent)
    return card


def add_known_limits(directory_or_card_path, limits: list[str], metrics: dict | None = None) -> ModelCard:
    """Add the limits an evaluation found (and its ``metrics``, merged as in :func:`update_card`) to the card
    on disk; ``model_card.md`` and ``model_card.json`` are both rewritten. Returns the updated card."""
    return update_card(directory_or_card_path, known_limits=limits, metrics=metrics)
