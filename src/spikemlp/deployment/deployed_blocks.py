"""The deployed model's blocks: every product on spikes, each neuron in the epilogue of the product that
feeds it, spikes kept as bytes between them.

An MLP-SPE block is, with h the stage's state and x its input spikes (docs/mlp_spe.md#network):

    x_h = LIF(BN_h(map_h(x))),  x_w = LIF(BN_w(map_w(x)))        the axial token mixing
    hu  = h + fuse_norm(fuse([x, x_h, x_w]))                        the skip from h
    x'  = LIF(hu)
    out = LIF(hu + norm2(fc2(LIF(norm1(fc1(x'))))))                 the channel MLP and the skip

``DeployedBlock`` runs it as five calls of ``spikemlp::spike_matmul``, one per product: the axial maps
(their BNs folded into the maps' rows, as ``mfi.fold`` does) and fc1 with their neurons in the
epilogue; the fuse convolution with fuse_norm, the skip h and the token neuron in its epilogue, keeping
hu; fc2 with norm2, the skip hu and the channel neuron. Only spikes (uint8) and hu reach memory: no
BatchNorm, addition or neuron pass of its own, no float copy of a spike tensor. The values are the eval
model's up to the order of the sums (tests/deployment).

Where the kernel cannot take a block (hooks on its layers, as the analysis tools set, or another
device), the block runs as the dense ``MLPSPEBlock``. A block whose neurons the kernel cannot run
(``spike_matmul.fused_neuron``: a learnable tau, another neuron) is left to the spike-kernel twins.
"""

from __future__ import annotations

import torch
from torch import nn

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
        self._packs = tuple(sm.PackedWeight() for _ in range(5))
        weights = [
            *maps,
            (t.fuse.weight, t.fuse.bias),
            (c.fc1.weight, c.fc1.bias),
            (c.fc2.weight, c.fc2.bias),
        ]
        for packed, (weight, bias), grouped in zip(self._packs, weights, (False, True, False, True, False)):
            packed.get(weight, bias, dtype, grouped)

    def _layers(self) -> tuple[nn.Module, ...]:
        t, c = self.token_mix, self.channel_mix
        layers = (t.proj_h, t.proj_w, t.norm_h, t.norm_w, t.fuse, t.fuse_norm, c.fc1, c.fc2, c.norm1, c.norm2,
                  t.identity_norm, t.identity_lif, *_neurons(self))  # fmt: skip
        return tuple(m for m in layers if m is not None)

    def _token_spikes(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The fuse convolution's three inputs as uint8 planes [T * B, C, H * W]: x, x_h, x_w."""
        t = self.token_mix
        T, B, C, H, W = x.shape
        dtype = self._maps[0][0].dtype
        identity = t._identity(x.to(dtype)) if t.identity_norm is not None else x
        planes = x.to(torch.uint8).reshape(T * B * C, H, W)
        (wh, bh), (ww, bw) = self._maps
        # Along h a plane's rows are the inputs (planar: position w, channel h). Along w its columns are:
        # token rows, all planes of a step as one image, so that the kernel's blocks are full.
        x_h = sm.spike_matmul([planes], wh, bh, self._packs[0], planar_in=True, planar_out=True,
                              neuron=(T, t.lif_h), dtype=dtype)  # fmt: skip
        x_w = sm.spike_matmul([planes.view(T, -1, W)], ww, bw, self._packs[1], planar_in=False,
                              planar_out=False, grouped=True, neuron=(T, t.lif_w), dtype=dtype)  # fmt: skip
        return [part.to(torch.uint8).reshape(T * B, C, H * W) for part in (identity, x_h, x_w)]

    def forward(self, x: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        if not sm.applies(self._layers(), h):
            return super().forward(x.to(h.dtype), h)
        t, c = self.token_mix, self.channel_mix
        T, B, C, H, W = x.shape
        c._check_grid(H, W)
        dtype = self._maps[0][0].dtype
        fuse_affine, affine1, affine2 = self._affines
        h_planes = h.reshape(T * B, C, H * W)
        spikes, hu = sm.spike_matmul(
            self._token_spikes(x), t.fuse.weight, t.fuse.bias, self._packs[2], planar_in=True,
            planar_out=True, col_affine=fuse_affine, addend=h_planes, neuron=(T, self.token_lif),
            keep_values=True, dtype=dtype,
        )  # fmt: skip
        hidden = sm.spike_matmul(
            [spikes], c.fc1.weight, c.fc1.bias, self._packs[3], planar_in=True, planar_out=False,
            grouped=True, neuron=(T, c.lif), dtype=dtype, **{self._per: affine1},
        )  # fmt: skip
        out = sm.spike_matmul(
            [hidden], c.fc2.weight, c.fc2.bias, self._packs[4], planar_in=False, planar_out=True,
            addend=hu, neuron=(T, self.channel_lif), dtype=dtype, **{self._per: affine2},
        )  # fmt: skip
        return out.view(T, B, C, H, W)


class DeployedStage(MLPSPEStage):
    """A stage of deployed blocks: spikes pass between them as bytes and leave the stage as floats."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.encoder(x)
        x = self.lif(h)
        for block in self.blocks:
            x = block(x, h)
        return x.to(h.dtype)


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
