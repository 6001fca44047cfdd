"""The MLP-SPE blocks with their BatchNorms folded away: what ``fold`` swaps in for the dense blocks.

Each twin has the dense block's child modules (``fold`` has already put the BNs into the maps' weights,
a neuron's threshold or per-token copies of fc2, and left ``nn.Identity`` where a BN was), and a forward
without BatchNorm: every layer takes its input where the previous one left it.
"""

from __future__ import annotations

import torch

from ..layers import AxialTokenMixing, ChannelMLP
from ..neurons.spike_storage import mark_binary


class FoldedTokenMixing(AxialTokenMixing):
    """Token block, folded: each branch is map -> neuron (BN in the map's rows); MLP-S's identity branch
    is its threshold neuron on x; the fuse convolution carries fuse_norm."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        T = x.shape[0]
        xm = x.flatten(0, 1)
        identity = x if self.identity_lif is None else self.identity_lif(x)
        x_h = self.lif_h(self.proj_h(xm).unflatten(0, (T, -1)))
        x_w = self.lif_w(self.proj_w(xm).unflatten(0, (T, -1)))
        spikes = torch.cat((identity, x_h, x_w), dim=2).flatten(0, 1)
        return self.fuse(mark_binary(spikes)).unflatten(0, (T, -1))


class FoldedChannelMLP(ChannelMLP):
    """Channel block, folded: fc1 -> neuron (the first BN in the neuron's per-token threshold and bias, or
    in fc1 per channel) -> fc2 (the second BN in per-token copies of fc2, or in fc2 per channel)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        T, B, C, H, W = x.shape
        y = self.lif(self.fc1(self._tokens(x)).unflatten(0, (T, B))).flatten(0, 1)
        return self.fc2(y).transpose(1, 2).unflatten(2, (H, W)).unflatten(0, (T, B))
