"""Axial token mixing: MLP-SPE's token block, dense N x N maps along W and along H (docs/mlp_spe.md#network).

The authors write each branch as a 1x1 Conv2d with one spatial axis in the channel slot: the tensor is
permuted to [T * B, W, C, H], convolved (weight [N, N, 1, 1], bias [N]), batch-normalised over the W
positions (BatchNorm2d(N)), spiked, and permuted back; the H branch likewise. Here the same maps are
computed on the [T * B, C, H, W] layout directly, without permuting or copying:

- W branch: y[m, c, h, :] = W_w @ x[m, c, h, :] + b, a matmul on the last axis (one GEMM);
- H branch: y[m, c, :, w] = W_h @ x[m, c, :, w] + b, a batched matmul over the (m, c) planes;
- BatchNorm over positions: the statistic of position p pools every other axis. BN(N) runs on a copy
  laid out [T, N, rest] (positions in the channel slot, T leading for the neuron): [T, W, B * C * H, 1]
  for W, [T, H, B * C, W] for H. The views that would need no copy ([M * C * H, W, 1, 1]) make PyTorch's
  CPU BatchNorm several times slower, which costs far more than the copy. The branch's spikes come back as
  a strided [T, B, C, H, W] view, and the concatenation that follows is the one copy back.

``AxialProjection`` subclasses ``nn.Conv2d`` so that its parameters are shaped as the authors' and tools
that recognise convolutions (MAC counts, binary-input checks) see it as one ((output elements) x N MACs).

The block's output u = BN(Conv1x1(concat[x, x_h, x_w])) is real-valued; the model adds it to the stage
state before a neuron. Its memory use is ``memory``'s (``layers.memory_saving``); the folded and the
spike-kernel blocks are twins with the same children (``spikemlp.mfi.fold``, ``layers.spike_kernel_blocks``).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import torch
import torch.nn.functional as F
from torch import nn

from ..neurons.spike_storage import mark_binary
from .memory_saving import MemorySaving


def axial_map(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, axis: str) -> torch.Tensor:
    """The dense map along ``axis`` of x [..., H, W] with a [N, N, 1, 1] weight (AxialProjection's op)."""
    n = weight.shape[0]
    weight = weight.view(n, n)
    if axis == "w":
        return F.linear(x, weight, bias)
    # W_h @ x[m, c] for every (m, c) plane; bias per output row.
    y = torch.matmul(weight, x)
    return y if bias is None else y + bias.view(n, 1)


def _w_to_bn(y: torch.Tensor, T: int) -> torch.Tensor:
    """[M, C, H, W] -> [T, W, B * C * H, 1] (a copy): BatchNorm2d(W) normalises per W position."""
    return y.view(T, -1, y.shape[-1]).transpose(1, 2).contiguous().unsqueeze(-1)


def _w_from_bn(z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """_w_to_bn's layout back to [T, B, C, H, W] (a strided view), for y [M, C, H, W]. The batch is
    left to ``view`` (-1): a size computed from y's would be a constant in a traced graph."""
    _, C, H, W = y.shape
    return z.view(z.shape[0], W, -1, C, H).permute(0, 2, 3, 4, 1)


def _h_to_bn(y: torch.Tensor, T: int) -> torch.Tensor:
    """[M, C, H, W] -> [T, H, B * C, W] (a copy): BatchNorm2d(H) normalises per H position."""
    return y.view(T, -1, y.shape[-2], y.shape[-1]).transpose(1, 2).contiguous()


def _h_from_bn(z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """_h_to_bn's layout back to [T, B, C, H, W] (a strided view), for y [M, C, H, W]."""
    _, C, H, W = y.shape
    return z.view(z.shape[0], H, -1, C, W).permute(0, 2, 3, 1, 4)


_PROJECT = {"w": partial(axial_map, axis="w"), "h": partial(axial_map, axis="h")}
_TO_BN = {"w": _w_to_bn, "h": _h_to_bn}
_FROM_BN = {"w": _w_from_bn, "h": _h_from_bn}


class AxialProjection(nn.Conv2d):
    """A dense map over the N positions of one spatial axis, shared over channels and the other axis.

    Stored as the authors' 1x1 Conv2d(N, N) (weight [N, N, 1, 1], bias [N]) but applied to x [M, C, H, W]
    along ``axis`` ("w": the last axis, "h": the one before) without permuting x. Output has x's shape.
    """

    def __init__(self, num_positions: int, axis: str) -> None:
        if axis not in ("h", "w"):
            raise ValueError(f"axis must be 'h' or 'w', got {axis!r}")
        super().__init__(num_positions, num_positions, kernel_size=1, bias=True)
        self.axis = axis

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = self.in_channels
        dim = -1 if self.axis == "w" else -2
        if x.shape[dim] != n:
            raise ValueError(
                f"axial projection along {self.axis.upper()} expects {n} positions, "
                f"got input {tuple(x.shape)}"
            )
        return axial_map(x, self.weight, self.bias, self.axis)

    def extra_repr(self) -> str:
        return f"positions={self.in_channels}, axis={self.axis!r}"


def positional_batch_norm(bn: nn.BatchNorm2d, y: torch.Tensor, axis: str) -> torch.Tensor:
    """BN with the positions along ``axis`` of y [M, C, H, W] as its features (output shaped as y)."""
    return _FROM_BN[axis](bn(_TO_BN[axis](y, 1)), y).reshape_as(y)


class AxialTokenMixing(nn.Module):
    """Token block: spikes x [T, B, C, N, N] -> real-valued u [T, B, C, N, N].

    ``identity_norm=True`` gives MLP-S's identity branch LIF(BN(x)) (docs/mlp_spe.md#variants), not x.
    """

    def __init__(
        self,
        dim: int,
        num_positions: int,
        neuron_layer: Callable[[], nn.Module],
        identity_norm: bool = False,
        memory: MemorySaving | None = None,
    ) -> None:
        super().__init__()
        n = num_positions
        self.num_positions = n
        self.proj_w = AxialProjection(n, "w")
        self.norm_w = nn.BatchNorm2d(n)
        self.lif_w = neuron_layer()
        self.proj_h = AxialProjection(n, "h")
        self.norm_h = nn.BatchNorm2d(n)
        self.lif_h = neuron_layer()
        self.identity_norm = nn.BatchNorm2d(dim) if identity_norm else None
        self.identity_lif = neuron_layer() if identity_norm else None
        self.fuse = nn.Conv2d(3 * dim, dim, kernel_size=1, bias=False)
        self.fuse_norm = nn.BatchNorm2d(dim)
        self.memory = memory or MemorySaving()

    def _branch(self, xm: torch.Tensor, proj: AxialProjection, bn: nn.Module, lif: nn.Module, T: int):
        """Spikes [T, B, C, H, W] (possibly a strided view) of one axis: projection, BN over the positions
        of that axis (in the _TO_BN layout), then the neuron, fused as ``self.memory`` says."""
        to_bn, from_bn = partial(_TO_BN[proj.axis], T=T), _FROM_BN[proj.axis]
        return self.memory.projection_bn_lif(xm, proj, _PROJECT[proj.axis], to_bn, bn, lif, T, from_bn)

    def _identity(self, x: torch.Tensor) -> torch.Tensor:
        if self.identity_norm is None:
            return x
        return self.identity_lif(self.identity_norm(x.flatten(0, 1)).unflatten(0, (x.shape[0], -1)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        T = x.shape[0]
        xm = x.flatten(0, 1)
        identity = self._identity(x)
        x_h = self._branch(xm, self.proj_h, self.norm_h, self.lif_h, T)
        x_w = self._branch(xm, self.proj_w, self.norm_w, self.lif_w, T)
        # All three parts are spikes, so the concatenation is too: autograd may keep it as bool.
        spikes = torch.cat((identity, x_h, x_w), dim=2).flatten(0, 1)
        u = self.fuse_norm(self.fuse(mark_binary(spikes)))
        return u.unflatten(0, (T, -1))
