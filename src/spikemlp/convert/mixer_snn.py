"""The authors' MLP-SPE / MLP-S weights (EMI-Group/mixer-snn) <-> spikemlp's ``MLPSPE``.

A one-to-one renaming (table: docs/mlp_spe.md#weight-layout); no tensor is changed. The authors number
token and channel blocks over all stages (``token_mix.{k}``); spikemlp groups them per stage
(``stages.{i}.blocks.{j}``), and the stage of block k is read from the checkpoint itself (the block's
width, which doubles at every stage). Both directions check the whole key set against the layout implied
by the checkpoint (number of stages, blocks, SPE or not) and raise ``KeyMismatchError``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import torch

from . import rename

BN_ENTRIES = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")
SPE_NODES = ("cell2node.0", "cell2node.1", "cell2node.2", "node1_node2", "node2_node3")

_BN, _W, _WB = BN_ENTRIES, ("weight",), ("weight", "bias")  # the tensors of a BN, a conv, a layer with bias

# Authors' sub-keys within one block and ours: (authors, ours, tensors).
_TOKEN_PARTS = [
    ("proj_w.1", "proj_w", _WB),
    ("proj_w.2", "norm_w", _BN),
    ("proj_h.1", "proj_h", _WB),
    ("proj_h.2", "norm_h", _BN),
    ("fuse.0", "fuse", _W),
    ("fuse.1", "fuse_norm", _BN),
]
_CHANNEL_PARTS = [
    ("1.net.0", "fc1", _WB),
    ("1.net.1", "norm1", _BN),
    ("1.net.3", "fc2", _WB),
    ("1.net.4", "norm2", _BN),
]


def _layout_pairs(num_stages: int, depths: list[int], spe: bool) -> list[tuple[str, str]]:
    """(authors' key, our key) for every tensor of a model with this structure."""
    pairs: list[tuple[str, str]] = []

    def add(theirs: str, ours: str, tensors: tuple[str, ...]) -> None:
        pairs.extend((f"{theirs}.{t}", f"{ours}.{t}") for t in tensors)

    add("to_patch_embedding.0.0", "stem.conv", _W)
    add("to_patch_embedding.0.1", "stem.bn", _BN)
    for i in range(1, num_stages):
        for node in [f".{n}" for n in SPE_NODES] if spe else [""]:  # MLP-S: one conv + BN
            add(f"to_patch_embedding.{i}{node}.0", f"stages.{i}.encoder{node}.conv", _W)
            add(f"to_patch_embedding.{i}{node}.1", f"stages.{i}.encoder{node}.bn", _BN)
    blocks = [f"stages.{i}.blocks.{j}" for i, depth in enumerate(depths) for j in range(depth)]
    for k, ours in enumerate(blocks):
        for theirs_part, ours_part, tensors in _TOKEN_PARTS:
            add(f"token_mix.{k}.{theirs_part}", f"{ours}.token_mix.{ours_part}", tensors)
        if not spe:
            add(f"token_mix.{k}.BN", f"{ours}.token_mix.identity_norm", _BN)
        for theirs_part, ours_part, tensors in _CHANNEL_PARTS:
            add(f"channel_mix.{k}.{theirs_part}", f"{ours}.channel_mix.{ours_part}", tensors)
    add("batch_norm", "head_norm", _BN)
    add("mlp_head.1", "head", _WB)
    return pairs


def _indices(keys, pattern: str) -> list[int]:
    rx = re.compile(pattern)
    return sorted({int(m.group(1)) for key in keys if (m := rx.match(key))})


def _structure_from_authors(sd: Mapping[str, torch.Tensor]) -> tuple[int, list[int], bool]:
    """Number of stages, blocks per stage and SPE-or-not of an authors' state dict."""
    keys = list(sd)
    num_stages = max(_indices(keys, r"to_patch_embedding\.(\d+)\."), default=0) + 1
    spe = any(".cell2node." in key for key in keys)
    blocks = _indices(keys, r"(?:token_mix|channel_mix)\.(\d+)\.")
    num_blocks = blocks[-1] + 1 if blocks else 0
    # A block's width (its fuse conv's output channels, else its first linear's input) gives its stage.
    widths = []
    for k in range(num_blocks):
        w = sd.get(f"token_mix.{k}.fuse.0.weight", sd.get(f"channel_mix.{k}.1.net.0.weight"))
        widths.append(None if w is None else int(w.shape[0] if w.dim() == 4 else w.shape[1]))
    known = sorted({w for w in widths if w is not None})
    stage_of_width = {w: i for i, w in enumerate(known)}
    depths = [0] * max(num_stages, len(known))
    stage = 0
    for w in widths:
        # A block with neither tensor stays in the stage of the block before it (and is reported missing).
        stage = stage_of_width.get(w, stage)
        depths[stage] += 1
    return len(depths), depths, spe


def _structure_from_ours(sd: Mapping[str, torch.Tensor]) -> tuple[int, list[int], bool]:
    keys = list(sd)
    stages = _indices(keys, r"stages\.(\d+)\.")
    num_stages = stages[-1] + 1 if stages else 1
    depths = []
    for i in range(num_stages):
        blocks = _indices(keys, rf"stages\.{i}\.blocks\.(\d+)\.")
        depths.append(blocks[-1] + 1 if blocks else 0)
    spe = any(".cell2node." in key for key in keys) or not any(".identity_norm." in key for key in keys)
    return num_stages, depths, spe


def to_spikemlp(sd: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Authors' MLP-SPE/MLP-S state dict -> a state dict for ``spikemlp.models.mlp_spe.MLPSPE``."""
    num_stages, depths, spe = _structure_from_authors(sd)
    mapping = dict(_layout_pairs(num_stages, depths, spe))
    return rename(sd, mapping, "mixer-snn (authors' MLP-SPE) checkpoint")


def from_spikemlp(sd: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A spikemlp ``MLPSPE`` state dict -> the authors' key layout (docs/mlp_spe.md#weight-layout)."""
    num_stages, depths, spe = _structure_from_ours(sd)
    mapping = {ours: theirs for theirs, ours in _layout_pairs(num_stages, depths, spe)}
    return rename(sd, mapping, "spikemlp MLP-SPE state dict")


__all__ = ["to_spikemlp", "from_spikemlp"]
