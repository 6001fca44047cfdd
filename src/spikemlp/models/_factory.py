"""Creating models by name, with an error that lists close matches for an unknown name (timm's names
none). The one place models are built: ``create`` (a spikemlp model), ``build`` (any timm model, for a
number of classes), ``from_config`` (a run's configuration) and ``from_checkpoint`` (a trained one).
"""

from __future__ import annotations

import difflib
import fnmatch
import pkgutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import timm
from torch import nn


def family_modules() -> list[str]:
    """Names of the model-family modules in spikemlp.models (one file per family, e.g. "mlp_spe")."""
    from . import __path__ as models_path

    return sorted(
        m.name
        for m in pkgutil.iter_modules(models_path)
        if not m.name.startswith("_") and m.name != "commands"
    )


def list_models(pattern: str = "") -> list[str]:
    """Registered spikemlp model names, optionally filtered by a shell-style pattern ("mlp_spe*")."""
    names = timm.list_models(module=family_modules())
    if pattern:
        names = [n for n in names if fnmatch.fnmatchcase(n, pattern)]
    return sorted(names)


def create(name: str, **kwargs) -> nn.Module:
    """``timm.create_model(name, **kwargs)`` for a spikemlp model; an unknown name lists close matches."""
    known = list_models()
    if name not in known:
        close = difflib.get_close_matches(name, known, n=5, cutoff=0.5)
        hint = f"did you mean {', '.join(close)}? " if close else ""
        raise ValueError(f"unknown model {name!r}; {hint}known spikemlp models: {', '.join(known)}")
    return timm.create_model(name, **kwargs)


def build(name: str, num_classes: int, **options) -> nn.Module:
    """The model ``name`` (any timm model; ours included) for ``num_classes`` classes, with ``options``
    passed to its constructor. An unknown name lists the close matches; options the model does not take
    are one clear error."""
    names = timm.list_models()
    if name not in names:
        close = difflib.get_close_matches(name, names, n=4, cutoff=0.6)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        ours = ", ".join(list_models()) or "(none registered)"
        raise ValueError(
            f"unknown model '{name}'.{hint} spikemlp models: {ours}; any timm model name also works"
        )
    try:
        return timm.create_model(name, num_classes=num_classes, **options)
    except TypeError as err:
        raise ValueError(
            f"model '{name}' does not take the arguments {sorted(options)} ({err}); for models without "
            "time steps set T: null, and check model_kwargs"
        ) from None


def from_config(config: Mapping[str, Any], num_classes: int) -> nn.Module:
    """The model a run's configuration describes: its keys ``model``, ``T``, ``img_size``, ``drop_path``,
    ``model_kwargs`` and ``dtype`` (the training configuration's names, as checkpoints record them). A key
    that is missing or null (``drop_path``: 0) leaves the model's own default."""
    options = dict(config.get("model_kwargs") or {})
    for key in ("T", "img_size"):
        if config.get(key) is not None:
            options[key] = config[key]
    if (config.get("drop_path") or 0.0) > 0:
        options["drop_path_rate"] = config["drop_path"]
    model = build(config["model"], num_classes, **options)
    return model.double() if config.get("dtype") == "float64" else model


def from_checkpoint(path: str | Path, ema: bool = False) -> tuple[nn.Module, dict[str, Any], dict[str, str]]:
    """The model stored at ``path`` by ``spikemlp train`` (a run folder: its ``last``; a checkpoint folder;
    a weights file), in eval mode, with the run's configuration (a dict) and the weights' metadata."""
    from .. import checkpoint as ckpt

    weights, meta = ckpt.load_weights(path, ema=ema)
    config = ckpt.run_config(meta, path)
    model = from_config(config, int(meta["num_classes"]))
    missing, unexpected = model.load_state_dict(weights, strict=False)
    if missing or unexpected:
        raise ckpt.CheckpointError(
            f"weights in {path} do not fit model '{config['model']}': missing {list(missing)[:5]}, "
            f"unexpected {list(unexpected)[:5]}"
        )
    return model.eval(), config, meta


__all__ = ["build", "create", "family_modules", "from_checkpoint", "from_config", "list_models"]
