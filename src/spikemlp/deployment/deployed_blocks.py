"""The deployed model's blocks: every product on spikes, each neuron in the epilogue of the product that
feeds it, spikes kept as bytes between them.

An MLP-SPE block is, with h the stage's state and x its input spikes (docs/mlp_spe.md#network):

    x_h = LIF(BN_h(map_h(x))),  x_w = LIF(BN_w(map_w(x)))        the axial token mixing
    hu  = h + fuse_norm(fuse([x, x_h, x_w]))                        the skip from h
    x'  = LIF(hu)
    out = LIF(hu + norm2(fc2(LIF(norm1(fc1(x'))))))                 the channel MLP and the skip

``DeployedBlock`` runs its three large products on ``spikemlp::spike_matmul``: the fuse convolution
with fuse_norm, the skip h and the token neuron in its epilogue (keeping hu); fc1 with norm1 and the
hidden neuron; fc2 with norm2, the skip hu and the channel neuron. Between them only spikes (as uint8)
and hu reach memory: no BatchNorm, addition or neuron pass of its own. The axial maps (N x N, N the
grid side) have their BNs folded into their rows, as ``mfi.fold`` does, and run as small dense GEMMs
followed by their neurons: at N <= 56 each output sums too few inputs for the kernel's per-row work to
pay (measured: 2-7x slower on the kernel; BENCHMARKS.md). The values are the eval model's up to the
order of the sums (tests/deployment).

Where the kernel cannot take a block (hooks on its layers, as the analysis tools set, or another
device), the block runs as the dense ``MLPSPEBlock``. A block whose neurons the kernel cannot run
(``spike_matmul.fused_neuron``: a learnable tau, another neuron) is left to the spike-kernel twins.
"""

from __future__ import annotations

import torch
from torch import nn

from ..layers import spike_kernel_blocks as kernel_blocks
from ..layers import spike_matmul as sm
from ..layers.batch_norm_fold import fold_rows, inference_affine
from ..layers.spike_kernel_blocks import (
    SpikeKernelChannelMLP,
    SpikeKernelTokenMixing,
    spike_kernels,
    swap_blocks,
    twin,
)
from ..models.mlp_spe import MLPSPEBlock, MLPSPEStage


def _neurons(block: MLPSPEBlock) -> list[nn.Module]:
    t, c = block.token_mix, block.channel_mix
    return [t.lif_h, t.lif_w, block.token_lif, c.lif, block.channel_lif]


def deployable(block: MLPSPEBlock) -> bool:
    """Whether every neuron of the block can run in a product's epilogue."""
    return all(sm.fused_neuron(n) is not None for n in _neurons(block))


class DeployedBlock(MLPSPEBlock):
    """An MLP-SPE block as five spike-driven products (see the module documentation). Takes spikes as
    bytes or floats; returns the block's spikes as uint8 (the stage turns them back into floats)."""

    def prepare(self) -> None:
        """Fold the axial maps' BNs, read the other BNs' affines and pack every weight (once)."""
        t, c = self.token_mix, self.channel_mix
        dtype = t.fuse.weight.dtype
        maps = []
        for proj, bn in ((t.proj_h, t.norm_h), (t.proj_w, t.norm_w)):
            weight, bias = fold_rows(proj.weight, proj.bias, *inference_affine(bn))
            maps.append((weight.to(dtype), bias.to(dtype)))
        self._maps = tuple(maps)
        self._affines = tuple(
            tuple(a.to(dtype) for a in inference_affine(bn)) for bn in (t.fuse_norm, c.norm1, c.norm2)
        )
        self._per = "row_affine" if c.channel_bn == "token" else "col_affine"  # BN per token or channel
        self._packs = tuple(sm.PackedWeight() for _ in range(3))
        weights = [(t.fuse.weight, t.fuse.bias), (c.fc1.weight, c.fc1.bias), (c.fc2.weight, c.fc2.bias)]
        for packed, (weight, bias), grouped in zip(self._packs, weights, (False, True, False)):
            packed.get(weight, bias, dtype, grouped)

    def _layers(self) -> tuple[nn.Module, ...]:
        t, c = self.token_mix, self.channel_mix
        layers = (t.proj_h, t.proj_w, t.norm_h, t.norm_w, t.fuse, t.fuse_norm, c.fc1, c.fc2, c.norm1, c.norm2,
                  t.identity_norm, t.identity_lif, *_neurons(self))  # fmt: skip
        return tuple(m for m in layers if m is not None)

    def _token_spikes(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The fuse convolution's three inputs as planes [T * B, C, H * W]: x, x_h and x_w. The axial maps
        run dense (their N x N products are too small for the kernel's per-row work to pay)."""
        t = self.token_mix
        T, B, C, H, W = x.shape
        x = x.to(self._maps[0][0].dtype, memory_format=torch.contiguous_format)
        xm = x.flatten(0, 1)
        (wh, bh), (ww, bw) = self._maps
        x_h = t.lif_h(kernel_blocks.folded_axial_map(xm, t.proj_h, wh, bh).unflatten(0, (T, B)))
        x_w = t.lif_w(kernel_blocks.folded_axial_map(xm, t.proj_w, ww, bw).unflatten(0, (T, B)))
        return [part.reshape(T * B, C, H * W) for part in (t._identity(x), x_h, x_w)]

    def forward(self, x: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        return self.run(x, h, token_rows(h))

    def run(self, x: torch.Tensor, h: torch.Tensor, h_rows: torch.Tensor) -> torch.Tensor:
        """``forward(x, h)`` given h also as token rows [T * B, H * W, C] (``token_rows(h)``, which the
        stage makes once for its blocks). Returns the spikes [T, B, C, H, W] as a uint8 view of token
        rows."""
        if not sm.applies(self._layers(), h):
            return super().forward(x.to(h.dtype, memory_format=torch.contiguous_format), h)
        t, c = self.token_mix, self.channel_mix
        T, B, C, H, W = x.shape
        c._check_grid(H, W)
        dtype = self._maps[0][0].dtype
        fuse_affine, affine1, affine2 = self._affines
        # Token rows from the fuse convolution on: a row's outputs are contiguous, so the epilogue reads
        # the skip, keeps hu and writes the spikes without touching a cache line per channel.
        spikes, hu = sm.spike_matmul(
            self._token_spikes(x), t.fuse.weight, t.fuse.bias, self._packs[0], planar_in=True,
            planar_out=False, col_affine=fuse_affine, addend=h_rows, neuron=(T, self.token_lif),
            keep_values=True, dtype=dtype,
        )  # fmt: skip
        hidden = sm.spike_matmul(
            [spikes], c.fc1.weight, c.fc1.bias, self._packs[1], planar_in=False, planar_out=False,
            grouped=True, neuron=(T, c.lif), dtype=dtype, **{self._per: affine1},
        )  # fmt: skip
        out = sm.spike_matmul(
            [hidden], c.fc2.weight, c.fc2.bias, self._packs[2], planar_in=False, planar_out=False,
            addend=hu, neuron=(T, self.channel_lif), dtype=dtype, **{self._per: affine2},
        )  # fmt: skip
        return out.transpose(1, 2).unflatten(2, (H, W)).unflatten(0, (T, B))


def token_rows(h: torch.Tensor) -> torch.Tensor:
    """A stage state h [T, B, C, H, W] as contiguous token rows [T * B, H * W, C]."""
    return h.flatten(0, 1).flatten(2).transpose(1, 2).contiguous()


class DeployedStage(MLPSPEStage):
    """A stage of deployed blocks: spikes pass between them as bytes and leave the stage as floats."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.encoder(x)
        x = self.lif(h)
        h_rows = token_rows(h)
        for block in self.blocks:
            x = block.run(x, h, h_rows) if isinstance(block, DeployedBlock) else block(x, h)
        return x.to(h.dtype, memory_format=torch.contiguous_format)


def _to_deployed(module: nn.Module) -> nn.Module | None:
    if type(module) is MLPSPEStage:
        return twin(module, DeployedStage)
    if type(module) is MLPSPEBlock:
        block = twin(module, DeployedBlock)
        block.prepare()
        return block
    return None


def _pack_twins(model: nn.Module) -> None:
    dtype = next(model.parameters()).dtype
    for block in model.modules():
        if isinstance(block, SpikeKernelTokenMixing):
            block._packed[0].get(block.fuse.weight, block.fuse.bias, dtype)
        elif isinstance(block, SpikeKernelChannelMLP):
            block._packed[0].get(block.fc1.weight, block.fc1.bias, dtype, grouped=True)
            block._packed[1].get(block.fc2.weight, block.fc2.bias, dtype)


def deployed_blocks(model: nn.Module) -> nn.Module:
    """Swap in the deployed stages and blocks, or, if a block's neurons cannot run in the kernel, the
    spike-kernel twins for the whole model; weights packed. Returns ``model``."""
    blocks = [m for m in model.modules() if type(m) is MLPSPEBlock]
    if all(deployable(b) for b in blocks):
        swap_blocks(model, _to_deployed)
    else:
        spike_kernels(model, True)
        _pack_twins(model)
    model.spike_kernels = True
    return model
