"""The deployed model's blocks: every layer on spikes by the spike-driven operator, weights packed once.

``deployed_blocks(model)`` swaps, in place, the token and channel blocks of an eval-mode MLP-SPE for
their spike-kernel twins (``spikemlp.layers.spike_kernels``) and packs each product's weights in the
kernel's layout at once, so that the first image pays no packing.
"""

from __future__ import annotations

from torch import nn

from ..layers.spike_kernel_blocks import SpikeKernelChannelMLP, SpikeKernelTokenMixing, spike_kernels


def _pack(model: nn.Module) -> None:
    dtype = next(model.parameters()).dtype
    for block in model.modules():
        if isinstance(block, SpikeKernelTokenMixing):
            block._packed[0].get(block.fuse.weight, block.fuse.bias, dtype)
        elif isinstance(block, SpikeKernelChannelMLP):
            block._packed[0].get(block.fc1.weight, block.fc1.bias, dtype, grouped=True)
            block._packed[1].get(block.fc2.weight, block.fc2.bias, dtype)


def deployed_blocks(model: nn.Module) -> nn.Module:
    """Swap in the deployed blocks and pack their weights; returns ``model``."""
    spike_kernels(model, True)
    model.spike_kernels = True
    _pack(model)
    return model
