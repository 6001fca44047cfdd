"""The MLP-SPE blocks for CPU inference by the spike kernel, and the transform that swaps them in.

``spike_kernels(model, True)`` replaces every token and channel block by its twin here: the same child
modules (parameters, buffers, state-dict keys), another ``forward``, which runs the block by
``spikemlp::spike_matmul`` (``layers.spike_matmul``): the BatchNorms are epilogues or are folded into the
axial maps, and the channel MLP's hidden neuron runs inside its first product. Where the kernel cannot
take the call (``spike_matmul.applies``: gradients, hooks, BatchNorm on batch statistics, not the CPU,
another dtype) the twin runs the dense block's forward. Same values up to float rounding
(tests/models/test_spike_kernels.py). ``spike_kernels(model, False)`` puts the dense blocks back.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from . import spike_matmul
from .axial_token_mixing import AxialProjection, AxialTokenMixing, axial_map
from .batch_norm_fold import fold_rows
from .channel_mlp import ChannelMLP

# Grids up to this size run their axial maps as one GEMM on the flattened planes (see _folded_map).
_PLANE_MAP_MAX = 8


def _folded_map(x: torch.Tensor, proj: AxialProjection, affine) -> torch.Tensor:
    """proj(x) followed by an inference BN over the positions of its axis, (a, d) per output position
    folded into the map's rows and bias (as the MFI fold does)."""
    weight, bias = fold_rows(proj.weight, proj.bias, *affine)
    return folded_axial_map(x, proj, weight.to(x.dtype), bias.to(x.dtype))


def folded_axial_map(x: torch.Tensor, proj: AxialProjection, weight: torch.Tensor, bias: torch.Tensor):
    """The axial map of ``proj`` with another weight and bias (its folded ones), on x [M, C, N, N]."""
    n = proj.in_channels
    if n > _PLANE_MAP_MAX:
        return axial_map(x, weight, bias, proj.axis)
    # On small grids the map along one axis of an n x n plane is one [n^2, n^2] matrix on the flattened
    # plane (its Kronecker product with the identity on the other axis): one GEMM over all planes
    # instead of a batch of tiny ones (faster at n <= 8, slower above; BENCHMARKS.md). The extra terms
    # are exact zeros, so the values are the map's up to the order of the sums.
    eye = torch.eye(n, dtype=x.dtype)
    square = weight.view(n, n)
    if proj.axis == "h":  # y[i, w] = sum_j W[i, j] x[j, w] + b[i]
        plane_weight, plane_bias = torch.kron(square, eye), bias.repeat_interleave(n)
    else:  # y[h, i] = sum_j W[i, j] x[h, j] + b[i]
        plane_weight, plane_bias = torch.kron(eye, square), bias.repeat(n)
    return F.linear(x.flatten(-2), plane_weight, plane_bias).view_as(x)


def twin(block: nn.Module, cls: type[nn.Module]) -> nn.Module:
    """A module of class ``cls`` with ``block``'s children, parameters, buffers, hooks and settings (shared,
    not copied): the same state under another forward. ``cls`` subclasses ``type(block)``'s base block."""
    new = cls.__new__(cls)
    new.__dict__.update({k: v.copy() if isinstance(v, (dict, set)) else v for k, v in vars(block).items()})
    return new


def swap_blocks(model: nn.Module, convert: Callable[[nn.Module], nn.Module | None]) -> None:
    """Replace, in place, each child that ``convert`` maps to a module (None: keep the child)."""
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            new = convert(child)
            if new is not None:
                setattr(parent, name, new)


class SpikeKernelTokenMixing(AxialTokenMixing):
    """The token block by the spike kernel: each axis's BatchNorm (an affine map per position in
    inference) folded into its N x N map, so a branch is map -> neuron in x's own layout, with no copy to
    the BN layout; the fuse convolution reads the three spike tensors where they lie (no concatenation)
    and applies fuse_norm on the way out."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        affines = [spike_matmul.inference_affine(bn) for bn in (self.norm_h, self.norm_w, self.fuse_norm)]
        layers = (self.proj_h, self.proj_w, self.norm_h, self.norm_w, self.fuse, self.fuse_norm)
        if any(a is None for a in affines) or not spike_matmul.applies(layers, x):
            return super().forward(x)
        T, B, C, H, W = x.shape
        xm = x.flatten(0, 1)
        x_h = self.lif_h(_folded_map(xm, self.proj_h, affines[0]).unflatten(0, (T, B)))
        x_w = self.lif_w(_folded_map(xm, self.proj_w, affines[1]).unflatten(0, (T, B)))
        parts = [part.reshape(T * B, C, H * W) for part in (self._identity(x), x_h, x_w)]
        u = spike_matmul.spike_matmul(
            parts, self.fuse.weight, self.fuse.bias, self._packed[0], planar_in=True, planar_out=True,
            col_affine=affines[2],
        )  # fmt: skip
        return u.view(T, B, C, H, W)


class SpikeKernelChannelMLP(ChannelMLP):
    """The channel block by the spike kernel: fc1 reads the spikes in their NCHW planes (no token-major
    copy), adds grouped weight sums on dense rows, applies norm1 and, unless it is observed or not a
    plain LIF, runs the hidden neuron in its epilogue, writing only the neuron's spikes as token rows of
    bytes; fc2 reads those rows and writes NCHW planes with norm2 applied (no transpose back)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check_grid(*x.shape[-2:])
        affine1, affine2 = (spike_matmul.inference_affine(bn) for bn in (self.norm1, self.norm2))
        layers = (self.fc1, self.fc2, self.norm1, self.norm2)
        if affine1 is None or affine2 is None or not spike_matmul.applies(layers, x):
            return super().forward(x)
        T, B, C, H, W = x.shape
        per = "row_affine" if self.channel_bn == "token" else "col_affine"  # BN per token or per channel
        planes = x.reshape(T * B, C, H * W)
        # The neuron in fc1's epilogue where it can be: its spikes come out as bytes, fc1's outputs are
        # never stored. Otherwise it runs as itself on fc1's outputs.
        fused = spike_matmul.fused_neuron(self.lif) is not None
        y = spike_matmul.spike_matmul(
            [planes], self.fc1.weight, self.fc1.bias, self._packed[0], planar_in=True, planar_out=False,
            grouped=True, neuron=(T, self.lif) if fused else None, **{per: affine1},
        )  # fmt: skip
        spikes = y if fused else self.lif(y.unflatten(0, (T, B))).flatten(0, 1)  # [T * B, H * W, hidden]
        y = spike_matmul.spike_matmul(
            [spikes], self.fc2.weight, self.fc2.bias, self._packed[1], planar_in=False, planar_out=True,
            dtype=x.dtype, **{per: affine2},
        )  # fmt: skip
        return y.view(T, B, C, H, W)


_DENSE_TO_KERNEL = {AxialTokenMixing: (SpikeKernelTokenMixing, 1), ChannelMLP: (SpikeKernelChannelMLP, 2)}
_KERNEL_TO_DENSE = {kernel: dense for dense, (kernel, _) in _DENSE_TO_KERNEL.items()}


def _to_kernel(block: nn.Module) -> nn.Module | None:
    if type(block) not in _DENSE_TO_KERNEL:
        return None
    cls, layers = _DENSE_TO_KERNEL[type(block)]
    new = twin(block, cls)
    new._packed = tuple(spike_matmul.PackedWeight() for _ in range(layers))  # one per product
    return new


def _to_dense(block: nn.Module) -> nn.Module | None:
    if type(block) not in _KERNEL_TO_DENSE:
        return None
    for packed in block._packed:
        packed.release()
    new = twin(block, _KERNEL_TO_DENSE[type(block)])
    del new._packed
    return new


def spike_kernels(model: nn.Module, enable: bool = True) -> nn.Module:
    """Swap, in place, the token and channel blocks of ``model`` for their spike-kernel twins (``enable``)
    or back to the dense blocks; returns ``model``."""
    swap_blocks(model, _to_kernel if enable else _to_dense)
    return model
