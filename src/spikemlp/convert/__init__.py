"""Converters between the authors' released state dicts and spikemlp models, one to one.

Each format module defines ``to_spikemlp(state_dict) -> state_dict`` and
``from_spikemlp(state_dict) -> state_dict``, and raises ``KeyMismatchError`` listing missing or unexpected
keys. Formats are looked up by name so that the command line and Python share one table.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping

FORMATS = {
    "mixer-snn": "spikemlp.convert.mixer_snn",  # MLP-SPE, EMI-Group/mixer-snn (docs/mlp_spe.md#weight-layout)
    # SNN-MLP, huawei-noah/Efficient-AI-Backbones (docs/snn_mlp.md#weight-layout)
    "snn-mlp": "spikemlp.convert.snn_mlp",
}


class KeyMismatchError(KeyError):
    """A state dict whose keys do not match the expected layout; the message lists the differences."""

    def __init__(self, what: str, missing, unexpected):
        self.missing = sorted(missing)
        self.unexpected = sorted(unexpected)

        def show(keys):
            head = ", ".join(keys[:10])
            return head + (f", ... ({len(keys) - 10} more)" if len(keys) > 10 else "")

        parts = [f"{what}: the state dict does not match the expected layout."]
        if self.missing:
            parts.append(f"Missing {len(self.missing)} key(s): {show(self.missing)}.")
        if self.unexpected:
            parts.append(f"Unexpected {len(self.unexpected)} key(s): {show(self.unexpected)}.")
        parts.append("Check that the checkpoint and the model variant (depths, width, classes) agree.")
        super().__init__(" ".join(parts))

    def __str__(self) -> str:
        return self.args[0]


def rename(state_dict: Mapping, mapping: Mapping[str, str], what: str) -> dict:
    """``state_dict`` with every key renamed by ``mapping``, whose keys must be exactly the state dict's."""
    missing, unexpected = set(mapping) - set(state_dict), set(state_dict) - set(mapping)
    if missing or unexpected:
        raise KeyMismatchError(what, missing, unexpected)
    return {mapping[key]: value for key, value in state_dict.items()}


def get_format(name: str):
    if name not in FORMATS:
        raise ValueError(f"unknown weight format {name!r}; known formats: {', '.join(sorted(FORMATS))}")
    return importlib.import_module(FORMATS[name])


__all__ = ["FORMATS", "KeyMismatchError", "get_format", "rename"]
