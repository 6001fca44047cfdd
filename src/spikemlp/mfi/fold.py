"""Fold every BatchNorm of an MLP-SPE model away, leaving accumulations on spikes plus the encoding layer.

At inference a BatchNorm is an affine map y = a z + d per feature. ``fold(model)`` returns a copy in which
each BN has been absorbed by a neighbour: a conv's or axial map's rows and bias (W' = a W, b' = a b + d),
a following LIF's per-token threshold and bias (``ThresholdLIF``), per-token copies of fc2
(``PerTokenLinear``) or the classifier; docs/mlp_spe.md#network explains each case and why it is exact.
``accumulate_only(folded)`` then swaps every synaptic layer on spikes for its gather-and-add version.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from ..layers import AxialTokenMixing, ChannelMLP, ConvBN, ConvDownsample, PatchStem
from ..layers.axial_token_mixing import AxialProjection
from ..layers.batch_norm_fold import batch_norm_affine, fold_rows
from ..layers.spike_kernel_blocks import swap_blocks, twin
from ..models.mlp_spe import MLPSPE
from .accumulate import (
    AccumulateAxialProjection,
    AccumulateConv2d,
    AccumulateLinear,
    AccumulatePerTokenLinear,
    PerTokenLinear,
    check_binary,
    gather_sum,
)
from .folded_blocks import FoldedChannelMLP, FoldedTokenMixing
from .neurons import ThresholdLIF

bn_affine = batch_norm_affine  # (a, d) with BN(z) = a z + d in eval mode, in float64


def _set(param_holder: nn.Module, name: str, value: torch.Tensor, like: torch.Tensor) -> None:
    setattr(param_holder, name, nn.Parameter(value.to(like), requires_grad=False))


def _fold_into_rows(block: nn.Module, *pairs: tuple[nn.Module, str]) -> None:
    """For each (layer, BN name): the BN, per output feature of the layer, into its rows and bias."""
    for layer, bn_name in pairs:
        w, b = fold_rows(layer.weight, layer.bias, *bn_affine(getattr(block, bn_name)))
        _set(layer, "weight", w, layer.weight)
        _set(layer, "bias", b, layer.weight)
        setattr(block, bn_name, nn.Identity())


def _threshold_lif(lif: nn.Module, bn: nn.Module, shape: tuple[int, ...], like: torch.Tensor) -> ThresholdLIF:
    """``lif(bn(z))`` as a ``ThresholdLIF`` of z (the BN's a, d viewed as ``shape``), in ``like``'s dtype."""
    a, d = bn_affine(bn)
    new = ThresholdLIF.from_lif(lif, a.view(shape), d.view(shape))
    for name, buf in new.named_buffers():
        setattr(new, name, buf.to(like))
    return new


class _StemIdentity(nn.Module):
    """Stands in for the stem's BN (folded into the stem conv); accepts the ``repeats`` argument."""

    def forward(self, x: torch.Tensor, repeats: int = 1) -> torch.Tensor:
        return x


class FoldedMLPSPE(MLPSPE):
    """An MLP-SPE with its BatchNorms folded (made by ``fold``). In accumulate-only mode the readout sums
    one weight column per spike of the last stage and scales by 1 / (N*N) once per class."""

    accumulate_only: bool = False

    def forward_head_steps(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        if not self.accumulate_only or pre_logits or not isinstance(self.head, nn.Linear):
            return super().forward_head_steps(x, pre_logits)
        check_binary(x, "readout")
        T, B, _, H, W = x.shape
        t, b, c, _, _ = x.nonzero(as_tuple=True)  # sorted by output row t * B + b
        summed = gather_sum(t * B + b, c, self.head.weight.t(), T * B)  # one column of W' per spike
        # One scaling per class and step turns the spike counts into the grid mean.
        return (summed * (1.0 / (H * W))).view(T, B, -1) + self.head.bias


def _fold_channel_mlp(block: ChannelMLP) -> None:
    if block.channel_bn == "channel":
        _fold_into_rows(block, (block.fc1, "norm1"), (block.fc2, "norm2"))
        return
    # First per-token BN -> per-token threshold/bias of the following LIF (input laid out [T, B, P, D]).
    block.lif = _threshold_lif(block.lif, block.norm1, (-1, 1), block.fc1.weight)
    block.norm1 = nn.Identity()
    # Second per-token BN -> per-token copies of fc2.
    a2, d2 = bn_affine(block.norm2)
    w = block.fc2.weight.detach().double()
    b = block.fc2.bias.detach().double() if block.fc2.bias is not None else w.new_zeros(w.shape[0])
    weight = a2.view(-1, 1, 1) * w.unsqueeze(0)  # [P, D, K]
    bias = a2.view(-1, 1) * b.unsqueeze(0) + d2.view(-1, 1)  # [P, D]
    block.fc2 = PerTokenLinear(weight.to(block.fc2.weight), bias.to(block.fc2.weight))
    block.norm2 = nn.Identity()


def _fold_token_mixing(block: AxialTokenMixing) -> None:
    _fold_into_rows(block, (block.proj_w, "norm_w"), (block.proj_h, "norm_h"), (block.fuse, "fuse_norm"))
    if block.identity_norm is not None:
        block.identity_lif = _threshold_lif(
            block.identity_lif, block.identity_norm, (-1, 1, 1), block.fuse.weight
        )
        block.identity_norm = nn.Identity()


def require_mlp_spe(model: nn.Module, what: str) -> None:
    """TypeError, naming ``what`` and why, unless ``model`` is an MLP-SPE/MLP-S model."""
    if isinstance(model, MLPSPE):
        return
    hint = (
        " SNN-MLP normalises with GroupNorm, whose statistics are computed per sample at inference, so "
        "it has no fixed affine map to fold, and its token mixing runs on real values, not spikes (it is "
        "not MFI); run it as model.eval()"
        if "SNNMLP" in type(model).__name__
        else ""
    )
    raise TypeError(
        f"{what} supports MLP-SPE/MLP-S models (spikemlp.models.mlp_spe.MLPSPE), got "
        f"{type(model).__name__}.{hint}"
    )


@torch.no_grad()
def fold_dense_batch_norms(model: MLPSPE) -> MLPSPE:
    """Fold, in place, the BatchNorms that follow a convolution (the stem's, the stage encoders') into its
    weights and bias, and the head's BN into the classifier: those folds never enlarge the model. The
    token and channel blocks' BNs are left to the caller (``fold``; the spike kernels' epilogues)."""
    stem: PatchStem = model.stem
    _fold_into_rows(stem, (stem.conv, "bn"))
    stem.bn = _StemIdentity()
    for module in list(model.modules()):
        if isinstance(module, (ConvBN, ConvDownsample)):  # forward: bn(conv(x))
            _fold_into_rows(module, (module.conv, "bn"))
    # The head: BN2d on spikes, grid mean, Linear -> a Linear with W' = W diag(a), b' = b + W d.
    a, d = bn_affine(model.head_norm)
    w = model.head.weight.detach().double()
    b = model.head.bias.detach().double() if model.head.bias is not None else w.new_zeros(w.shape[0])
    like = model.head.weight
    _set(model.head, "weight", w * a.view(1, -1), like)
    _set(model.head, "bias", b + w @ d, like)
    model.head_norm = nn.Identity()
    return model


@torch.no_grad()
def fold(model: nn.Module) -> FoldedMLPSPE:
    """An inference copy of an MLP-SPE/MLP-S model with every BatchNorm folded (see the module docs).

    The copy is in eval mode; its logits equal ``model.eval()(images)`` up to floating-point rounding.
    """
    require_mlp_spe(model, "fold")
    if isinstance(model, FoldedMLPSPE):
        raise ValueError("this model is already folded")
    if not isinstance(model.head, nn.Linear):
        raise ValueError(
            "fold needs the classifier to absorb the head's BatchNorm, but this model has none "
            "(num_classes=0); fold the model with its classifier, e.g. reset_classifier(num_classes)"
        )
    folded = copy.deepcopy(model).eval()
    folded.__class__ = FoldedMLPSPE
    folded.accumulate_only = False
    for p in folded.parameters():
        p.requires_grad_(False)

    fold_dense_batch_norms(folded)
    for module in list(folded.modules()):
        if isinstance(module, AxialTokenMixing):
            _fold_token_mixing(module)
        elif isinstance(module, ChannelMLP):
            _fold_channel_mlp(module)
    swap_blocks(folded, _folded_twin)
    left = [name for name, m in folded.named_modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if left:
        raise RuntimeError(f"fold left BatchNorm layers behind: {', '.join(left)}")
    return folded


def _folded_twin(block: nn.Module) -> nn.Module | None:
    """The folded block's twin with the forward that has no BatchNorm (``folded_blocks``)."""
    for base, cls in ((AxialTokenMixing, FoldedTokenMixing), (ChannelMLP, FoldedChannelMLP)):
        if isinstance(block, base):
            new = twin(block, cls)
            new.__dict__.pop("_packed", None)  # a spike-kernel block's packed weights: not the folded ones
            return new
    return None


@torch.no_grad()
def accumulate_only(folded: FoldedMLPSPE) -> FoldedMLPSPE:
    """A copy of a folded model whose layers on spikes add gathered weight columns (no multiplications).

    The stem conv (the encoding layer, on real pixels, computed once) stays a dense convolution. Every
    other conv/linear raises ``NonBinaryInputError`` if it ever receives a value other than 0 or 1.
    """
    if not isinstance(folded, FoldedMLPSPE):
        raise TypeError("accumulate_only needs a folded model: call spikemlp.mfi.fold(model) first")
    acc = copy.deepcopy(folded).eval()
    acc.accumulate_only = True
    stem_conv = acc.stem.conv
    for parent in list(acc.modules()):
        for name, child in list(parent.named_children()):
            if child is stem_conv or child is acc.head:
                continue
            if isinstance(child, AxialProjection):
                setattr(parent, name, AccumulateAxialProjection(child))
            elif type(child) is nn.Conv2d:
                setattr(parent, name, AccumulateConv2d(child))
            elif type(child) is nn.Linear:
                setattr(parent, name, AccumulateLinear(child))
            elif isinstance(child, PerTokenLinear):
                setattr(parent, name, AccumulatePerTokenLinear(child))
    return acc


__all__ = ["FoldedMLPSPE", "accumulate_only", "bn_affine", "fold"]
