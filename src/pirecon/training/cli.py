"""``pirecon fit|validate|test|predict --config experiments/X.yaml``: LightningCLI over
:class:`ReconstructionModule` and :class:`pirecon.data.ReconstructionDataModule`.

Defaults added to every run: checkpoints of the best validation PSNR and of the last step
(``CHECKPOINT_DEFAULTS``), atomic checkpoint writes
that load with ``weights_only=True`` (:class:`AtomicCheckpointIO`), seeding of everything
(``seed_everything: 0`` unless the config says otherwise), the reconstruction writer of
``pirecon predict`` (``--writer.output_dir``). ``--ckpt_path`` resumes a run or picks the weights
to evaluate. ``pirecon fit --ensemble K`` trains K members of one configuration (:func:`run_ensemble`).
Before Lightning starts, the config's model and data paths (and data paths given as
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

__all__ = ["run_lightning", "run_ensemble", "split_ensemble", "check_config", "check_data_options", "SUBCOMMANDS"]

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


def _member_config(config, member: int) -> None:
    """Member ``k`` of an ensemble: seed ``seed_everything + k``; logs and checkpoints under
    ``<default_root_dir>/member_<k>`` (the loggers' ``save_dir`` and explicit checkpoint directories follow)."""
    seed = config.get("seed_everything")
    config.seed_everything = (seed if isinstance(seed, int) and not isinstance(seed, bool) else 0) + member
    root = Path(config.trainer.get("default_root_dir") or ".") / f"member_{member}"
    config.trainer.default_root_dir = str(root)
    loggers = config.trainer.get("logger")
    for logger in loggers if isinstance(loggers, list) else [loggers]:
        init_args = getattr(logger, "init_args", None)
        if init_args is not None and init_args.get("save_dir") is not None:
            init_args.save_dir = str(root)
    for section in ("best_checkpoint", "last_checkpoint"):
        if config.get(section) is not None and config[section].get("dirpath") is not None:
            config[section].dirpath = str(root / "checkpoints")


def _run_cli(subcommand: str, argv: list[str], member: int | None = None):
    """The LightningCLI run of ``pirecon <subcommand> ARGS`` (``member``: that member of an ensemble)."""
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

        def parse_arguments(self, parser, args) -> None:
            super().parse_arguments(parser, args)
            if member is not None:  # before the seed is set and anything is built
                _member_config(self.config[self.config["subcommand"]], member)

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
    for path in _config_paths(argv):
        check_config(path)
    check_data_options(argv)
    return PireconCLI(ReconstructionModule, ReconstructionDataModule, args=[subcommand, *argv],
                      seed_everything_default=0, save_config_kwargs={"overwrite": True},
                      parser_kwargs={"prog": "pirecon"}, load_from_checkpoint_support=False)


def run_lightning(subcommand: str, argv: list[str]) -> int:
    """Run ``pirecon <subcommand> ARGS`` through LightningCLI; user errors print one line and return 2."""
    try:
        _run_cli(subcommand, argv)
    except (PireconUserError, *PATH_ERRORS) as err:
        print(f"pirecon {subcommand}: error: {err}", file=sys.stderr)
        return 2
    return 0


def split_ensemble(argv: list[str]) -> tuple[int | None, list[str]]:
    """``--ensemble K`` (or ``--ensemble=K``, K >= 2) taken out of ``pirecon fit``'s arguments: ``(K or None,
    the rest)``."""
    members, rest, i = None, [], 0
    while i < len(argv):
        option, sep, value = argv[i].partition("=")
        if option != "--ensemble":
            rest.append(argv[i])
            i += 1
            continue
        if not sep:
            value = argv[i + 1] if i + 1 < len(argv) else ""
            i += 1
        i += 1
        try:
            members = int(value)
        except ValueError:
            members = None
        if members is None or members < 2:
            raise ArgumentError(f"--ensemble: expected an integer K >= 2 (members to train), found {value!r}")
    return members, rest


def run_ensemble(members: int, argv: list[str]) -> int:
    """``pirecon fit --ensemble K ARGS``: K runs of one configuration, member ``k`` seeded
    ``seed_everything + k`` with its logs and checkpoints in ``<default_root_dir>/member_<k>``, then their deep
    ensemble (:func:`pirecon.inference.ensemble.combine`) written to ``<default_root_dir>/ensemble.ckpt``.
    Members with Gaussian heads give the aleatoric/epistemic split. User errors print one line and return 2."""
    from ..inference.ensemble import combine

    try:
        checkpoints, root = [], None
        for member in range(members):
            print(f"pirecon fit: ensemble member {member + 1} of {members}", file=sys.stderr)
            cli = _run_cli("fit", argv, member=member)
            last = [callback.last_model_path for callback in cli.trainer.checkpoint_callbacks
                    if getattr(callback, "last_model_path", "")]
            if not last:
                raise PireconUserError(f"--ensemble: expected member {member} to write last.ckpt, found none "
                                       "(keep last_checkpoint.save_last: true)")
            checkpoints.append(last[0])
            root = Path(cli.trainer.default_root_dir).parent
        out = combine(checkpoints, root / "ensemble.ckpt", overwrite=True)
    except (PireconUserError, *PATH_ERRORS) as err:
        print(f"pirecon fit: error: {err}", file=sys.stderr)
        return 2
    print(f"wrote {out}: a deep ensemble of {members} members ({', '.join(map(str, checkpoints))})")
    return 0
