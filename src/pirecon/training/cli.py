"""``pirecon fit|validate|test|predict --config experiments/X.yaml``: LightningCLI over
:class:`ReconstructionModule` and :class:`pirecon.data.ReconstructionDataModule`.

Defaults added to every run: checkpoints of the best validation PSNR and of the last step
(``CHECKPOINT_DEFAULTS``), atomic checkpoint writes
that load with ``weights_only=True`` (:class:`AtomicCheckpointIO`), seeding of everything
(``seed_everything: 0`` unless the config says otherwise), the reconstruction writer of
``pirecon predict`` (``--writer.output_dir``). ``--ckpt_path`` resumes a run or picks the weights
to evaluate. Before Lightning starts, the config's model and data paths (and data paths given as
options) are checked, so a typo gets one line, not a traceback: user errors
(:class:`pirecon.errors.PireconUserError`, a missing backend, OS errors about a path) print
``pirecon <subcommand>: error: <message>`` and return 2; anything else keeps its traceback.
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import yaml

from ..errors import PATH_ERRORS, ArgumentError, ConfigError, PireconUserError

__all__ = ["run_lightning", "check_config", "check_data_options", "SUBCOMMANDS"]

SUBCOMMANDS = ("fit", "validate", "test", "predict")


def _config_paths(argv: list[str]) -> list[Path]:
    paths = []
    for i, arg in enumerate(argv):
        if arg in ("--config", "-c") and i + 1 < len(argv):
            paths.append(Path(argv[i + 1]))
        elif arg.startswith("--config="):
            paths.append(Path(arg.split("=", 1)[1]))
    return paths


_DATA_KEYS = ("train", "val", "test", "predict")


def check_config(path: Path) -> None:
    """Raise :class:`~pirecon.errors.ConfigError` (one line, naming the file and key) for a missing
    config, an unknown model or missing data files."""
    from .datamodule import resolve_files
    from ..models.registry import resolve_model_class

    if not path.is_file():
        raise ConfigError(f"--config: expected an existing YAML file, found no file at {str(path)!r}")
    try:
        config = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: expected YAML, found a syntax error ({str(err).splitlines()[0]})") from None
    if not isinstance(config, dict):
        raise ConfigError(f"{path}: expected a mapping of sections (trainer, model, data), "
                          f"found {type(config).__name__}")
    model = (config.get("model") or {}).get("model")
    if isinstance(model, dict) and isinstance(model.get("class_path"), str):
        try:
            resolve_model_class(model["class_path"])
        except ValueError as err:  # resolve_model_class only looks the name up
            raise ConfigError(f"{path}: model.{err}") from None
    data = config.get("data") or {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: data: expected a mapping, found {type(data).__name__}")
    for key in _DATA_KEYS:
        if data.get(key) is not None:
            try:
                resolve_files(data[key], f"data.{key}")
            except ValueError as err:  # resolve_files only checks that the files exist
                raise ConfigError(f"{path}: {err}") from None


def check_data_options(argv: list[str]) -> None:
    """Raise :class:`~pirecon.errors.ArgumentError` for data files given as options
    (``--data.test FILE``, ``--data.train=PATTERN``, ``--data.val "[a.h5, b.h5]"``) that do not exist."""
    from .datamodule import resolve_files

    for i, arg in enumerate(argv):
        option, sep, value = arg.partition("=")
        if option not in {f"--data.{key}" for key in _DATA_KEYS}:
            continue
        if not sep:
            if i + 1 >= len(argv):
                continue  # jsonargparse reports the missing value
            value = argv[i + 1]
        if value.strip().lower() in ("null", "none", ""):
            continue
        if value.lstrip().startswith("["):
            try:
                value = yaml.safe_load(value)
            except yaml.YAMLError:
                continue  # jsonargparse reports the malformed list
        try:
            resolve_files(value, option)
        except ValueError as err:  # resolve_files only checks that the files exist
            raise ArgumentError(str(err)) from None


CHECKPOINT_DEFAULTS = {
    "best_checkpoint.monitor": "val/psnr", "best_checkpoint.mode": "max", "best_checkpoint.save_top_k": 1,
    "best_checkpoint.filename": "best-{epoch:03d}-{step:07d}", "best_checkpoint.auto_insert_metric_name": False,
    "last_checkpoint.save_top_k": 0, "last_checkpoint.save_last": True, "last_checkpoint.every_n_train_steps": 100,
}
"""The two checkpoints of every run: the best validation PSNR, and ``last.ckpt`` every 100 steps (both
adjustable in a config's ``best_checkpoint:`` / ``last_checkpoint:`` sections)."""


def run_lightning(subcommand: str, argv: list[str]) -> int:
    """Run ``pirecon <subcommand> ARGS`` through LightningCLI; user errors print one line and return 2."""
    from pytorch_lightning.callbacks import ModelCheckpoint
    from pytorch_lightning.cli import LightningCLI

    from .card import ModelCardWriter
    from .datamodule import ReconstructionDataModule
    from .checkpoints import use_atomic_checkpoints
    from .module import ReconstructionModule
    from .writer import ReconstructionWriter

    class PireconCLI(LightningCLI):
        def add_arguments_to_parser(self, parser) -> None:
            parser.add_lightning_class_args(ReconstructionWriter, "writer")
            parser.add_lightning_class_args(ModelCheckpoint, "best_checkpoint")
            parser.add_lightning_class_args(ModelCheckpoint, "last_checkpoint")
            parser.set_defaults(CHECKPOINT_DEFAULTS)

        def _parse_ckpt_path(self) -> None:
            """The config, not the checkpoint, defines the model: nothing to merge (and nothing unpickled)."""

        def instantiate_trainer(self, **kwargs):
            trainer = super().instantiate_trainer(**kwargs)
            use_atomic_checkpoints(trainer)
            if not any(isinstance(callback, ModelCardWriter) for callback in trainer.callbacks):
                trainer.callbacks.append(ModelCardWriter())
            return trainer

    # LightningCLI warns when sys.argv also holds arguments; they are the same ones (and DDP re-launches
    # from sys.argv, so it stays as it is)
    warnings.filterwarnings("ignore", message="LightningCLI's args parameter is intended")
    try:
        for path in _config_paths(argv):
            check_config(path)
        check_data_options(argv)
        PireconCLI(ReconstructionModule, ReconstructionDataModule, args=[subcommand, *argv],
                   seed_everything_default=0, save_config_kwargs={"overwrite": True},
                   parser_kwargs={"prog": "pirecon"}, load_from_checkpoint_support=False)
    except (PireconUserError, *PATH_ERRORS) as err:
        print(f"pirecon {subcommand}: error: {err}", file=sys.stderr)
        return 2
    return 0
