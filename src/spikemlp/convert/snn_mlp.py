"""SNN-MLP weights: the authors' layout (huawei-noah/Efficient-AI-Backbones) <-> spikemlp's ``SNNMLP``.

The two layouts hold the same tensors one to one; only names differ (table:
docs/snn_mlp.md#weight-layout). The authors end stage i with the patch merging; we start stage i + 1 with
it, as timm does. Both directions check the key set against the complete layout of the variant (depths
given, or read off the keys) and raise ``KeyMismatchError`` listing missing and unexpected keys.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from . import rename

# Per block: (authors' module, our module, parameter names in the authors' / our module).
_BLOCK_MODULES = [
    ("norm1", "norm1", ("weight", "bias")),
    ("lif_module.conv1", "token_mixing.proj_in", ("weight", "bias")),
    ("lif_module.norm1", "token_mixing.norm_in", ("weight", "bias")),
    ("lif_module.dw1", "token_mixing.dwconv", ("weight", "bias")),
    ("lif_module.norm2", "token_mixing.norm_dw", ("weight", "bias")),
    ("lif_module.lif1", "token_mixing.lif_h", ("tau", "Vth")),
    ("lif_module.lif2", "token_mixing.lif_w", ("tau", "Vth")),
    ("lif_module.conv2_1", "token_mixing.proj_h", ("weight", "bias")),
    ("lif_module.conv2_2", "token_mixing.proj_w", ("weight", "bias")),
    ("lif_module.norm3", "token_mixing.norm_out", ("weight", "bias")),
    ("lif_module.conv3", "token_mixing.proj_out", ("weight", "bias")),
    ("norm2", "norm2", ("weight", "bias")),
    ("mlp.fc1", "mlp.fc1", ("weight", "bias")),
    ("mlp.fc2", "mlp.fc2", ("weight", "bias")),
]
_PARAM_TO_OURS = {"weight": "weight", "bias": "bias", "tau": "tau", "Vth": "v_th"}
_TOP_LEVEL = [
    f"{m}.{p}" for m in ("patch_embed.proj", "patch_embed.norm", "norm", "head") for p in ("weight", "bias")
]
_MERGE = ["norm.weight", "norm.bias", "reduction.weight"]


def authors_keys(depths: Sequence[int]) -> list[str]:
    """Every key of the authors' state dict for a model with these depths (353 for 2, 2, 6, 2)."""
    keys = _TOP_LEVEL[:4]
    for i, depth in enumerate(depths):
        for j in range(depth):
            for theirs, _, params in _BLOCK_MODULES:
                keys += [f"layers.{i}.blocks.{j}.{theirs}.{p}" for p in params]
        if i < len(depths) - 1:
            keys += [f"layers.{i}.downsample.{k}" for k in _MERGE]
    return keys + _TOP_LEVEL[4:]


def _authors_to_ours_key(key: str) -> str | None:
    if key in _TOP_LEVEL:
        return key
    m = re.fullmatch(r"layers\.(\d+)\.downsample\.(.+)", key)
    if m:
        return f"stages.{int(m.group(1)) + 1}.downsample.{m.group(2)}" if m.group(2) in _MERGE else None
    m = re.fullmatch(r"layers\.(\d+)\.blocks\.(\d+)\.(.+)\.([A-Za-z_0-9]+)", key)
    if m:
        stage, block, module, param = m.groups()
        for theirs, ours, params in _BLOCK_MODULES:
            if module == theirs and param in params:
                return f"stages.{stage}.blocks.{block}.{ours}.{_PARAM_TO_OURS[param]}"
    return None


def _infer_depths(keys, pattern: str) -> list[int]:
    """Depths read off the block indices present (a gap shows up as missing keys later)."""
    depth: dict[int, int] = {}
    for k in keys:
        m = re.match(pattern, k)
        if m:
            i, j = int(m.group(1)), int(m.group(2))
            depth[i] = max(depth.get(i, 0), j + 1)
    return [depth.get(i, 0) for i in range(max(depth) + 1)] if depth else []


def to_spikemlp(state_dict: dict, depths: Sequence[int] | None = None) -> dict:
    """The authors' SNN-MLP state dict -> ours (same tensors, new names)."""
    if depths is None:
        depths = _infer_depths(state_dict, r"layers\.(\d+)\.blocks\.(\d+)\.")
    mapping = {k: _authors_to_ours_key(k) for k in authors_keys(depths)}
    return rename(state_dict, mapping, f"SNN-MLP (authors' layout, depths {tuple(depths)})")


def from_spikemlp(state_dict: dict, depths: Sequence[int] | None = None) -> dict:
    """Our SNN-MLP state dict -> the authors' layout (loads into their ``SNNMLP`` with ``lif=4``)."""
    if depths is None:
        depths = _infer_depths(state_dict, r"stages\.(\d+)\.blocks\.(\d+)\.")
    mapping = {_authors_to_ours_key(k): k for k in authors_keys(depths)}
    return rename(state_dict, mapping, f"SNN-MLP (spikemlp layout, depths {tuple(depths)})")


__all__ = ["authors_keys", "to_spikemlp", "from_spikemlp"]
