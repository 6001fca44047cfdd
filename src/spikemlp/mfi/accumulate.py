"""Accumulate-only execution of synaptic layers on binary input: gather the weight columns that active
spikes select and add them up. No multiplication touches a weight.

Each layer refuses input that is not 0/1, then computes out[row] = bias + sum of W[:, i] over the active
inputs i of that row with ``embedding_bag(mode="sum")``. A demonstration and a check of MFI, not a fast
path: the dense folded model computes the same values with matrix products.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..layers.axial_token_mixing import AxialProjection


class NonBinaryInputError(ValueError):
    """An accumulate-only layer was given input other than 0/1 spikes."""


def _frozen(t: torch.Tensor | None) -> nn.Parameter | None:
    return None if t is None else nn.Parameter(t.detach().contiguous().clone(), requires_grad=False)


def check_binary(x: torch.Tensor, where: str) -> None:
    bad = (x != 0) & (x != 1)
    if bool(bad.any()):
        raise NonBinaryInputError(
            f"{where}: accumulate-only execution needs binary spikes, but {int(bad.sum())} of {x.numel()} "
            "input values are neither 0 nor 1; this layer is not multiplication-free in this model"
        )


def gather_sum(rows: torch.Tensor, cols: torch.Tensor, weight_t: torch.Tensor, num_rows: int) -> torch.Tensor:
    """out[r] = sum of weight_t[cols[j]] over the spikes j with rows[j] == r; out is [num_rows, D].

    ``rows`` must be sorted (the order ``nonzero`` returns). ``embedding_bag(mode="sum")`` is exactly this
    gather-and-add, one bag of weight rows per output row, without materialising the gathered rows.
    """
    if cols.numel() == 0:
        return weight_t.new_zeros(num_rows, weight_t.shape[1])
    counts = torch.bincount(rows, minlength=num_rows)
    offsets = torch.zeros(num_rows, dtype=torch.long, device=rows.device)
    torch.cumsum(counts[:-1], 0, out=offsets[1:])
    return F.embedding_bag(cols, weight_t, offsets, mode="sum")


def accumulate_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """Linear map of binary x [..., K] by weight [D, K]: bias + sum of the columns of active inputs."""
    x2 = x.reshape(-1, x.shape[-1])
    rows, cols = x2.nonzero(as_tuple=True)
    out = gather_sum(rows, cols, weight.t(), x2.shape[0])
    if bias is not None:
        out = out + bias
    return out.view(*x.shape[:-1], weight.shape[0])


class AccumulateLinear(nn.Module):
    def __init__(self, linear: nn.Linear) -> None:
        super().__init__()
        self.weight = _frozen(linear.weight)
        self.bias = _frozen(linear.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_binary(x, "AccumulateLinear")
        return accumulate_linear(x, self.weight, self.bias)


class AccumulateAxialProjection(nn.Module):
    """An ``AxialProjection`` on binary input: the W map on the last axis, the H map on the one before."""

    def __init__(self, proj: AxialProjection) -> None:
        super().__init__()
        n = proj.in_channels
        self.axis = proj.axis
        self.weight = _frozen(proj.weight.reshape(n, n))
        self.bias = _frozen(proj.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_binary(x, f"AccumulateAxialProjection({self.axis})")
        if self.axis == "w":
            return accumulate_linear(x, self.weight, self.bias)
        return accumulate_linear(x.transpose(-1, -2), self.weight, self.bias).transpose(-1, -2)


class AccumulateConv2d(nn.Module):
    """A Conv2d (groups 1, zero padding) on binary input, one kernel tap at a time: for tap (i, j) the
    inputs it reads form a strided slice of the padded input, and each active input there adds the
    column W[:, c, i, j] to its output position. The taps' partial sums are added."""

    def __init__(self, conv: nn.Conv2d) -> None:
        super().__init__()
        if conv.groups != 1 or conv.padding_mode != "zeros" or isinstance(conv.padding, str):
            raise ValueError("AccumulateConv2d supports groups=1, zero padding and integer padding only")
        self.out_channels = conv.out_channels
        self.kernel_size, self.stride = conv.kernel_size, conv.stride
        self.padding, self.dilation = conv.padding, conv.dilation
        self.weight = _frozen(conv.weight)  # [D, C, kh, kw]
        self.bias = _frozen(conv.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_binary(x, "AccumulateConv2d")
        (kh, kw), (sh, sw), (ph, pw), (dh, dw) = self.kernel_size, self.stride, self.padding, self.dilation
        ho = (x.shape[2] + 2 * ph - dh * (kh - 1) - 1) // sh + 1
        wo = (x.shape[3] + 2 * pw - dw * (kw - 1) - 1) // sw + 1
        xp = F.pad(x, (pw, pw, ph, ph)) if ph or pw else x  # zero padding adds no spikes
        out = None
        for i in range(kh):
            for j in range(kw):
                rows = slice(i * dh, i * dh + sh * (ho - 1) + 1, sh)
                cols = slice(j * dw, j * dw + sw * (wo - 1) + 1, sw)
                tap = xp[:, :, rows, cols]  # [M, C, ho, wo]: the inputs tap (i, j) reads
                part = accumulate_linear(tap.permute(0, 2, 3, 1), self.weight[:, :, i, j], None)
                out = part if out is None else out + part
        if self.bias is not None:
            out = out + self.bias
        return out.permute(0, 3, 1, 2).contiguous()


class PerTokenLinear(nn.Module):
    """A Linear with one weight matrix per token position: x [M, P, K] -> [M, P, D].

    What a Linear followed by a per-token BatchNorm becomes when the BN's scale is folded into the weights
    (weight [P, D, K] = scale[p] * W, bias [P, D]). Dense execution, for the folded inference model.
    """

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor) -> None:
        super().__init__()
        self.weight = nn.Parameter(weight, requires_grad=False)
        self.bias = nn.Parameter(bias, requires_grad=False)
        self.in_features, self.out_features = weight.shape[2], weight.shape[1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 3 or x.shape[1] != self.weight.shape[0]:
            expected = f"[M, {self.weight.shape[0]}, {self.in_features}]"
            raise ValueError(f"PerTokenLinear expects {expected}, got {tuple(x.shape)}")
        return torch.matmul(x.transpose(0, 1), self.weight.transpose(1, 2)).transpose(0, 1) + self.bias


class AccumulatePerTokenLinear(nn.Module):
    """``PerTokenLinear`` on binary input: each spike adds a column of its own token's weight matrix."""

    def __init__(self, layer: PerTokenLinear) -> None:
        super().__init__()
        self.weight_t = _frozen(layer.weight.transpose(1, 2))
        self.bias = _frozen(layer.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_binary(x, "AccumulatePerTokenLinear")
        M, P, K = x.shape
        m, p, k = x.nonzero(as_tuple=True)  # sorted by output row m * P + p
        D = self.weight_t.shape[-1]
        flat_w = self.weight_t.reshape(P * K, D)  # row p * K + k is column k of token p's matrix
        out = gather_sum(m * P + p, p * K + k, flat_w, M * P)
        return (out.view(M, P, D) + self.bias).view(M, P, D)


__all__ = [
    "AccumulateAxialProjection",
    "AccumulateConv2d",
    "AccumulateLinear",
    "AccumulatePerTokenLinear",
    "NonBinaryInputError",
    "PerTokenLinear",
    "accumulate_linear",
    "check_binary",
    "gather_sum",
]
