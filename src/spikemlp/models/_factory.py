"""Creating spikemlp models by name, with an error that lists close matches for an unknown name.

The models live in timm's registry (``timm.create_model`` works after ``import spikemlp``); this module
restricts the listing to the families defined in ``spikemlp.models`` and gives a clear error for a typo,
where timm's own message names no alternatives. The command line and the trainer use ``create``.
"""

from __future__ import annotations

import difflib
import fnmatch
import pkgutil

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


__all__ = ["create", "family_modules", "list_models"]
