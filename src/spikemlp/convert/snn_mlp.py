"""SNN-MLP weights: the authors' layout (huawei-noah/Efficient-AI-Backbones, docs/snn_mlp.md#weight-layout)
<-> spikemlp.

The two layouts hold the same tensors one to one (353 for SNN-MLP-T); only names differ:

    authors                                        spikemlp.models.snn_mlp.SNNMLP
    patch_embed.proj / .norm                       patch_embed.proj / .norm
    layers.{i}.blocks.{j}.norm1 / norm2 / mlp.*    stages.{i}.blocks.{j}.norm1 / norm2 / mlp.*
    layers.{i}.blocks.{j}.lif_module.conv1         stages.{i}.blocks.{j}.token_mixing.proj_in
      .norm1 / .dw1 / .norm2                         .norm_in / .dwconv / .norm_dw
      .lif1.{tau,Vth} (along H) / .lif2 (along W)    .lif_h.{tau,v_th} / .lif_w.{tau,v_th}
      .conv2_1 / .conv2_2 / .norm3 / .conv3          .proj_h / .proj_w / .norm_out / .proj_out
    layers.{i}.downsample.{norm,reduction}         stages.{i+1}.downsample.{norm,reduction}
    norm / head                                    norm / head

(the authors end stage i with the patch merging; we start stage i + 1 with it, as timm does).
Both directions check the key set against the complete layout of the variant (depths given, or
read off the keys) and raise ``KeyMismatchError`` listing missing and unexpected keys.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from . import KeyMismatchError

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
    "patch_embed.proj.weight",
    "patch_embed.proj.bias",
    "patch_embed.norm.weight",
    "patch_embed.norm.bias",
    "norm.weight",
    "norm.bias",
    "head.weight",
    "head.bias",
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
    expected = set(authors_keys(depths))
    missing = expected - set(state_dict)
    unexpected = set(state_dict) - expected
    if missing or unexpected:
        raise KeyMismatchError(f"SNN-MLP (authors' layout, depths {tuple(depths)})", missing, unexpected)
    return {_authors_to_ours_key(k): v for k, v in state_dict.items()}


def from_spikemlp(state_dict: dict, depths: Sequence[int] | None = None) -> dict:
    """Our SNN-MLP state dict -> the authors' layout (loads into their ``SNNMLP`` with ``lif=4``)."""
    if depths is None:
        depths = _infer_depths(state_dict, r"stages\.(\d+)\.blocks\.(\d+)\.")
    theirs = authors_keys(depths)
    mapping = {_authors_to_ours_key(k): k for k in theirs}
    missing = set(mapping) - set(state_dict)
    unexpected = set(state_dict) - set(mapping)
    if missing or unexpected:
        raise KeyMismatchError(f"SNN-MLP (spikemlp layout, depths {tuple(depths)})", missing, unexpected)
    return {mapping[k]: v for k, v in state_dict.items()}


__all__ = ["authors_keys", "to_spikemlp", "from_spikemlp"]
