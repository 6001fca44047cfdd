"""Channel MLP: MLP-SPE's channel block with its per-token BatchNorm (docs/mlp_spe.md#network).

On the spikes viewed as tokens [T * B, N * N, C]: Linear C -> alpha C (bias), BatchNorm1d(N * N), LIF,
Linear alpha C -> C (bias), BatchNorm1d(N * N). BatchNorm1d(N * N) on a [T * B, N * N, alpha C] tensor
keeps one statistic per token position, pooled over time, batch and channels: the authors' design, which
ties the model to one input resolution. ``channel_bn="channel"`` is an option (not the authors'):
one statistic per channel, pooled over time, batch and positions, as usual for a Linear layer.

The tokens view of a [T * B, C, H, W] tensor is a transpose; one token-major copy of the spikes is made
for the first Linear (PyTorch would make it inside the Linear otherwise; made here, it is declared binary
so that autograd can keep it compactly), and everything after it is token-major and contiguous.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from ..neurons.bn_lif import batch_norm_lif, projection_batch_norm_lif
from ..neurons.spike_storage import mark_binary
from . import spike_matmul

CHANNEL_BN_MODES = ("token", "channel")


def _same(y: torch.Tensor) -> torch.Tensor:
    return y


def _rows(y: torch.Tensor) -> torch.Tensor:
    """[M, L, D] -> [M * L, D]: BatchNorm1d(D) then normalises per channel."""
    return y.flatten(0, 1)


class ChannelMLP(nn.Module):
    """Channel block: spikes x [T, B, C, H, W] -> real-valued [T, B, C, H, W]."""

    def __init__(
        self,
        dim: int,
        num_tokens: int,
        neuron_layer: Callable[[], nn.Module],
        mlp_ratio: int = 3,
        channel_bn: str = "token",
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
        # Training memory: recompute fc1 in the backward from the (compactly saved) input spikes, and BN
        # in the backward instead of keeping its output for the neuron (fused BN + LIF).
        self.recompute_projection = True
        self.fuse_bn_lif = True
        # Inference on the CPU by the spike kernel (an option; see _spike_driven).
        self.spike_kernels = False
        self._packed = (spike_matmul.PackedWeight(), spike_matmul.PackedWeight())

    def _norm(self, bn: nn.BatchNorm1d, y: torch.Tensor) -> torch.Tensor:
        # y: [M, L, D] contiguous. Token mode: BN1d(L) on the 3D tensor (statistic per token);
        # channel mode: BN1d(D) on the [M * L, D] view (statistic per channel).
        if self.channel_bn == "token":
            return bn(y)
        return bn(y.flatten(0, 1)).view_as(y)

    def _spike_driven(self, x: torch.Tensor) -> torch.Tensor | None:
        """The block in inference by the spike kernel (``spike_kernels``), or None where it does not apply.

        fc1 reads the spikes in their NCHW planes (no token-major copy), adds grouped weight sums on
        dense rows, applies norm1 and, unless it is observed or not a plain LIF, runs the hidden neuron
        in its epilogue, writing only the neuron's spikes as token rows of bytes; fc2 reads those rows
        and writes NCHW planes with norm2 applied (no transpose back). Same values as the layers run
        one by one, up to float rounding.
        """
        bypassed = (self.fc1, self.fc2, self.norm1, self.norm2)
        if not (self.spike_kernels and type(self.fc1) is nn.Linear and type(self.fc2) is nn.Linear):
            return None
        affine1 = spike_matmul.inference_affine(self.norm1)
        affine2 = spike_matmul.inference_affine(self.norm2)
        if affine1 is None or affine2 is None or not spike_matmul.applies(bypassed, x):
            return None
        T, B, C, H, W = x.shape
        per = "row_affine" if self.channel_bn == "token" else "col_affine"  # BN per token or per channel
        planes = x.reshape(T * B, C, H * W)
        fc1 = (self.fc1.weight, self.fc1.bias, self._packed[0])
        if spike_matmul.fused_neuron(self.lif) is not None:
            # The neuron in fc1's epilogue: its spikes come out as bytes, fc1's outputs are never stored.
            spikes = spike_matmul.spike_matmul(
                [planes], *fc1, planar_in=True, planar_out=False, grouped=True, neuron=(T, self.lif),
                **{per: affine1},
            )  # fmt: skip
        else:
            y = spike_matmul.spike_matmul([planes], *fc1, planar_in=True, planar_out=False, grouped=True,
                                          **{per: affine1})  # fmt: skip
            spikes = self.lif(y.unflatten(0, (T, B))).flatten(0, 1)  # [T * B, H * W, hidden]
        y = spike_matmul.spike_matmul(
            [spikes], self.fc2.weight, self.fc2.bias, self._packed[1], planar_in=False, planar_out=True,
            dtype=x.dtype, **{per: affine2},
        )  # fmt: skip
        return y.view(T, B, C, H, W)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        T, B, C, H, W = x.shape
        if self.channel_bn == "token" and H * W != self.num_tokens:
            raise ValueError(
                f"the channel block's per-token BatchNorm was built for {self.num_tokens} tokens, "
                f"got a {H}x{W} grid; build the model for this input size"
            )
        y = self._spike_driven(x)
        if y is not None:
            return y
        tokens = mark_binary(x.flatten(0, 1).flatten(2).transpose(1, 2).contiguous())  # [T*B, H*W, C]
        if isinstance(self.norm1, nn.BatchNorm1d):
            # fc1, BN and the neuron, fused in training: only the input spikes (recompute_projection) or
            # fc1's output are kept for the backward, not the normalised values and the charge too.
            view = _same if self.channel_bn == "token" else _rows
            if self.recompute_projection:
                y = projection_batch_norm_lif(tokens, self.fc1, F.linear, view, self.norm1, self.lif, T)
            else:
                y = self.fc1(tokens)
                y = batch_norm_lif(view(y), self.norm1, self.lif, T, self.fuse_bn_lif).view_as(y)
        else:  # BN folded into the neuron (MFI)
            y = self.lif(self._norm(self.norm1, self.fc1(tokens)).unflatten(0, (T, B))).flatten(0, 1)
        y = self._norm(self.norm2, self.fc2(y))
        return y.transpose(1, 2).unflatten(2, (H, W)).unflatten(0, (T, B))
