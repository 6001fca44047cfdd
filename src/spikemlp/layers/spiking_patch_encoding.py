"""Stage encoders between MLP-SPE stages: the Spiking Patch Encoding (SPE) cell, and MLP-S's plain conv.

Both take the previous stage's spikes [T, B, C_in, 2N, 2N] and return the next stage's real-valued state
h [T, B, C_out, N, N] (docs/mlp_spe.md#network and #variants). Convolutions and BatchNorm are stateless, so
they run on the merged [T * B, ...] batch (BN statistics shared across time steps, as in the authors' code).

SPE cell, with three nodes of C_out / 3 channels each (ConvBN = 3x3 conv, no bias, then BN):
    n1, n2, n3 = ConvBN_s2(x) each
    n2 = n2 + ConvBN_s1(LIF(n1))
    n3 = n3 + n1 + ConvBN_s1(LIF(n2))
    h = concat(n1, n2, n3)
Every convolution sees binary spikes; the sums add BN outputs, so inference needs additions only.
Module names (cell2node, node1_node2, node2_node3) follow the authors' so weights map one to one.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn


class ConvBN(nn.Module):
    """Conv2d (no bias) then BatchNorm2d, applied to a [T * B, C, H, W] batch."""

    def __init__(self, in_chans: int, out_chans: int, kernel_size: int, stride: int, padding: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_chans, out_chans, kernel_size, stride, padding, bias=False)
        self.bn = nn.BatchNorm2d(out_chans)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(self.conv(x))


class SpikingPatchEncoding(nn.Module):
    """The SPE cell: spikes [T, B, C_in, 2N, 2N] -> state h [T, B, C_out, N, N], C_out divisible by 3."""

    def __init__(self, in_chans: int, out_chans: int, neuron_layer: Callable[[], nn.Module]) -> None:
        super().__init__()
        if out_chans % 3:
            raise ValueError(
                f"the spiking patch encoding splits its {out_chans} output channels into three nodes, so "
                "they must be divisible by 3; choose a base width (embed_dim) that is a multiple of 3, "
                "e.g. 78 or 96"
            )
        node = out_chans // 3
        self.cell2node = nn.ModuleList([ConvBN(in_chans, node, 3, 2, 1) for _ in range(3)])
        self.node1_node2 = ConvBN(node, node, 3, 1, 1)
        self.node2_node3 = ConvBN(node, node, 3, 1, 1)
        self.lif1 = neuron_layer()
        self.lif2 = neuron_layer()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        T = x.shape[0]
        xm = x.flatten(0, 1)  # [T * B, ...]: the stateless layers see all steps as one batch
        n1, n2, n3 = (branch(xm) for branch in self.cell2node)
        s1 = self.lif1(n1.unflatten(0, (T, -1))).flatten(0, 1)
        n2 = n2 + self.node1_node2(s1)
        s2 = self.lif2(n2.unflatten(0, (T, -1))).flatten(0, 1)
        n3 = n3 + n1 + self.node2_node3(s2)
        return torch.cat((n1, n2, n3), dim=1).unflatten(0, (T, -1))


class ConvDownsample(nn.Module):
    """MLP-S's stage encoder (the no-SPE ablation): Conv 2x2 stride 2 (no bias) + BN of the spikes."""

    def __init__(self, in_chans: int, out_chans: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_chans, out_chans, 2, 2, bias=False)
        self.bn = nn.BatchNorm2d(out_chans)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        T = x.shape[0]
        return self.bn(self.conv(x.flatten(0, 1))).unflatten(0, (T, -1))
