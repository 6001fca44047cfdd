"""Channel MLP: MLP-SPE's channel block with its per-token BatchNorm (docs/mlp_spe.md#network).

On the spikes viewed as tokens [T * B, N * N, C]: Linear C -> alpha C (bias), BatchNorm1d(N * N), LIF,
Linear alpha C -> C (bias), BatchNorm1d(N * N). BatchNorm1d(N * N) on a [T * B, N * N, alpha C] tensor
keeps one statistic per token position, pooled over time, batch and channels: the authors' design, which
ties the model to one input resolution. ``channel_bn="channel"`` is an option (not the authors'):
one statistic per channel, pooled over time, batch and positions, as usual for a Linear layer.

The tokens view of a [T * B, C, H, W] tensor is a transpose; one token-major copy of the spikes is made
for the first Linear (PyTorch would make it inside the Linear otherwise; made here, it is declared binary
so that autograd can keep it compactly), and everything after it is token-major and contiguous. The
folded and the spike-kernel blocks are twins (``spikemlp.mfi.fold``, ``layers.spike_kernel_blocks``).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from ..neurons.spike_storage import mark_binary
from .memory_saving import MemorySaving

CHANNEL_BN_MODES = ("token", "channel")


# How norm1 sees fc1's output [M, L, D]: as is (BN1d(L), per token), or as rows [M * L, D] (per channel).
_BN_VIEW = {"token": lambda y: y, "channel": lambda y: y.flatten(0, 1)}


class ChannelMLP(nn.Module):
    """Channel block: spikes x [T, B, C, H, W] -> real-valued [T, B, C, H, W]."""

    def __init__(
        self,
        dim: int,
        num_tokens: int,
        neuron_layer: Callable[[], nn.Module],
        mlp_ratio: int = 3,
        channel_bn: str = "token",
        memory: MemorySaving | None = None,
    ) -> None:
        super().__init__()
        if channel_bn not in CHANNEL_BN_MODES:
            raise ValueError(f"channel_bn must be one of {CHANNEL_BN_MODES}, got {channel_bn!r}")
        hidden = int(dim * mlp_ratio)
        self.channel_bn = channel_bn
        self.num_tokens = num_tokens
        self.fc1 = nn.Linear(dim, hidden)
        self.norm1 = nn.BatchNorm1d(num_tokens if channel_bn == "token" else hidden)
        self.lif = neuron_layer()
        self.fc2 = nn.Linear(hidden, dim)
        self.norm2 = nn.BatchNorm1d(num_tokens if channel_bn == "token" else dim)
        self.memory = memory or MemorySaving()

    def _norm(self, bn: nn.BatchNorm1d, y: torch.Tensor) -> torch.Tensor:
        # y: [M, L, D] contiguous. Token mode: BN1d(L) on the 3D tensor (statistic per token);
        # channel mode: BN1d(D) on the [M * L, D] view (statistic per channel).
        if self.channel_bn == "token":
            return bn(y)
        return bn(y.flatten(0, 1)).view_as(y)

    def _check_grid(self, H: int, W: int) -> None:
        if self.channel_bn == "token" and H * W != self.num_tokens:
            raise ValueError(
                f"the channel block's per-token BatchNorm was built for {self.num_tokens} tokens, "
                f"got a {H}x{W} grid; build the model for this input size"
            )

    def _tokens(self, x: torch.Tensor) -> torch.Tensor:
        """Spikes [T, B, C, H, W] -> token rows [T * B, H * W, C] (a copy, declared binary)."""
        self._check_grid(*x.shape[-2:])
        return mark_binary(x.flatten(0, 1).flatten(2).transpose(1, 2).contiguous())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        T, H, W = x.shape[0], *x.shape[-2:]
        tokens = self._tokens(x)
        # fc1, BN and the neuron, fused in training as ``self.memory`` says.
        view = _BN_VIEW[self.channel_bn]
        y = self.memory.projection_bn_lif(tokens, self.fc1, F.linear, view, self.norm1, self.lif, T)
        y = self._norm(self.norm2, self.fc2(y))
        # -1, not the batch size: a traced graph (ONNX) would record that as a constant.
        return y.transpose(1, 2).unflatten(2, (H, W)).unflatten(0, (T, -1))
