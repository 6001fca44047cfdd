"""SNN-MLP's token mixing: a pointwise projection, a depthwise conv, then group LIFs along H and W.

This is the authors' ``LIFModule`` (docs/snn_mlp.md#block), layer for layer:

    proj_in (1x1) -> norm_in -> GELU -> dwconv (3x3 depthwise) -> norm_dw -> GELU
      -> [lif_h -> proj_h (1x1) -> GELU] + [lif_w -> proj_w (1x1) -> GELU] -> norm_out -> proj_out (1x1)

The two LIF branches read the same tensor; tokens communicate along each axis only through the
membrane carried from one position to the next inside a group. Names map one to one onto the
authors' keys (``spikemlp.convert.snn_mlp``): conv1, norm1, dw1, norm2, lif1, lif2, conv2_1, conv2_2,
norm3, conv3.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from ..neurons.group_lif import GroupLIF


def group_norm1(num_channels: int) -> nn.GroupNorm:
    """GroupNorm with one group: per-sample statistics over (C, H, W), per-channel affine."""
    return nn.GroupNorm(1, num_channels)


class GroupLIFTokenMixing(nn.Module):
    """Token mixing of SNN-MLP on [B, C, H, W] (the authors' LIFModule)."""

    def __init__(
        self,
        dim: int,
        group_size: int = 4,
        tau: float = 0.25,
        v_th: float = 0.1,
        learn_tau: bool = True,
        learn_v_th: bool = True,
        bias: bool = True,
        norm_layer: Callable[[int], nn.Module] = group_norm1,
        act_layer: Callable[[], nn.Module] = nn.GELU,
    ) -> None:
        super().__init__()
        self.dim = dim
        lif = dict(group_size=group_size, tau=tau, v_th=v_th, learn_tau=learn_tau, learn_v_th=learn_v_th)
        self.proj_in = nn.Conv2d(dim, dim, 1, bias=bias)
        self.norm_in = norm_layer(dim)
        self.dwconv = nn.Conv2d(dim, dim, 3, padding=1, groups=dim, bias=bias)
        self.norm_dw = norm_layer(dim)
        self.lif_h = GroupLIF(axis=2, **lif)
        self.lif_w = GroupLIF(axis=3, **lif)
        self.proj_h = nn.Conv2d(dim, dim, 1, bias=bias)
        self.proj_w = nn.Conv2d(dim, dim, 1, bias=bias)
        self.norm_out = norm_layer(dim)
        self.proj_out = nn.Conv2d(dim, dim, 1, bias=bias)
        self.act = act_layer()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act(self.norm_in(self.proj_in(x)))
        x = self.act(self.norm_dw(self.dwconv(x)))
        x_h = self.act(self.proj_h(self.lif_h(x)))
        x_w = self.act(self.proj_w(self.lif_w(x)))
        return self.proj_out(self.norm_out(x_h + x_w))

    def flops(self, num_tokens: int) -> int:
        """The authors' count for ``num_tokens`` positions: 4 pointwise convs, the 3x3 depthwise conv,
        and one term of C per token for each of norm_in, norm_dw, the branch sum and norm_out. The LIFs,
        GELUs and biases are not counted."""
        n, c = num_tokens, self.dim
        return 4 * n * c * c + n * c * 9 + 4 * n * c

    def extra_repr(self) -> str:
        return f"dim={self.dim}"
