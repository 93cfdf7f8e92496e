"""Models from configuration: ``{"class_path": ..., "init_args": {...}}`` to an ``nn.Module``.

``class_path`` is a short name (``"lpd"``, ``"lgd"``, ``"modl"``, ``"varnet"``, ``"unet"``), a class
name of :mod:`pirecon.models` (``"LearnedPrimalDual"``) or, in a config the user runs, a dotted import
path to any ``torch.nn.Module`` subclass called as ``model(y, physics)``. The spec is plain data, so it
is what checkpoints store (they load with ``weights_only=True``).

A checkpoint is data, not code: building a model from one (``allow_import=False``) never imports what
it names. Its ``class_path`` must be one of pirecon's models or a key of the ``models`` the caller
passes (``{"mypackage.MyNet": MyNet}``); a dotted path such as ``os.system`` is refused.
"""

from __future__ import annotations

import importlib
import inspect
from typing import Any

from torch import nn

from ..errors import ConfigError

__all__ = ["build_model", "resolve_model_class", "known_models"]


def known_models() -> dict[str, type]:
    """Short names and class names of the package's models."""
    from . import MODELS

    names = dict(MODELS)
    names.update({cls.__name__: cls for cls in MODELS.values()})
    return names


def resolve_model_class(class_path: str, *, allow_import: bool = True,
                        models: dict[str, type] | None = None) -> type:
    """The model class a ``class_path`` names; :class:`~pirecon.errors.ConfigError` (a ``ValueError``)
    listing the known names otherwise.

    ``models``: further classes by name, passed by the caller. ``allow_import``: whether a dotted path
    may be imported (a config the user runs); ``False`` for anything read from a checkpoint.
    """
    known = known_models()
    if class_path in known:
        return known[class_path]
    short = class_path.rsplit(".", 1)[-1]
    if class_path.startswith("pirecon.models.") and short in known:
        return known[short]
    if models and class_path in models:
        return models[class_path]
    choices = ", ".join(sorted(k for k in known if k.islower())) + " (or a pirecon.models class name)"
    if not allow_import:
        raise ConfigError(f"model.class_path: expected one of {choices}, or a class passed in models=, found "
                          f"{class_path!r}; pirecon does not import code that a checkpoint names")
    module_name, _, name = class_path.rpartition(".")
    cls = None
    if module_name:
        try:
            cls = getattr(importlib.import_module(module_name), name, None)
        except ImportError:
            cls = None
    if not (isinstance(cls, type) and issubclass(cls, nn.Module)):
        raise ConfigError(f"model.class_path: expected one of {choices}, or an importable torch.nn.Module "
                         f"subclass, found {class_path!r}")
    return cls


def build_model(spec: dict[str, Any] | nn.Module, *, allow_import: bool = True,
                models: dict[str, type] | None = None) -> nn.Module:
    """The model of a spec (a ready ``nn.Module`` is returned as is); ``allow_import`` and ``models`` as for
    :func:`resolve_model_class`."""
    if isinstance(spec, nn.Module):
        return spec
    if not isinstance(spec, dict) or not isinstance(spec.get("class_path"), str):
        raise ConfigError(f"model: expected {{'class_path': NAME, 'init_args': {{...}}}} or an nn.Module, "
                          f"found {spec!r}")
    unknown = sorted(set(spec) - {"class_path", "init_args"})
    if unknown:
        raise ConfigError(f"model: expected only the keys 'class_path' and 'init_args', found {unknown}")
    cls = resolve_model_class(spec["class_path"], allow_import=allow_import, models=models)
    init_args = spec.get("init_args") or {}
    if not isinstance(init_args, dict):
        raise ConfigError(f"model.init_args: expected a mapping of {cls.__name__} arguments, found {init_args!r}")
    try:  # the arguments against the signature only: a TypeError raised inside the constructor is a bug
        inspect.signature(cls).bind(**init_args)
    except TypeError as err:
        raise ConfigError(f"model.init_args: {cls.__name__} does not take these arguments: {err}") from None
    except ValueError:  # no signature to check against (a class implemented in C)
        pass
    if cls not in known_models().values():
        return cls(**init_args)
    try:  # pirecon's models only check their arguments in their constructors: a ValueError is a bad value
        return cls(**init_args)
    except ValueError as err:
        raise ConfigError(f"model.init_args: {err}") from None
