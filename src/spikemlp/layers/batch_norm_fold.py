"""BatchNorm in inference as an affine map, and its fold into the layer before it.

Used by the MFI fold (``spikemlp.mfi.fold``, which removes every BN from a model) and by the spike-driven
inference path (``spike_matmul``, which applies BNs as epilogues or folds them into the axial maps).
"""

from __future__ import annotations

import torch
from torch import nn


def batch_norm_affine(bn: nn.modules.batchnorm._BatchNorm) -> tuple[torch.Tensor, torch.Tensor]:
    """(a, d) with BN(z) = a z + d in eval mode, in float64."""
    if not bn.track_running_stats or bn.running_mean is None:
        raise ValueError("cannot fold a BatchNorm without running statistics (track_running_stats=False)")
    var = bn.running_var.detach().double()
    mean = bn.running_mean.detach().double()
    gamma = bn.weight.detach().double() if bn.weight is not None else torch.ones_like(var)
    beta = bn.bias.detach().double() if bn.bias is not None else torch.zeros_like(var)
    a = gamma / torch.sqrt(var + bn.eps)
    return a, beta - a * mean


def inference_affine(bn: nn.Module) -> tuple[torch.Tensor, torch.Tensor] | None:
    """``batch_norm_affine(bn)`` if bn is a BatchNorm that normalises with its running statistics (eval
    mode); None otherwise (batch statistics, or not a BatchNorm)."""
    if not isinstance(bn, nn.modules.batchnorm._BatchNorm) or bn.training or bn.running_mean is None:
        return None
    return batch_norm_affine(bn)


def fold_rows(weight: torch.Tensor, bias: torch.Tensor | None, a: torch.Tensor, d: torch.Tensor):
    """Output-feature-wise fold: W' = a W (row-wise), b' = a b + d, computed in float64."""
    w = weight.detach().double()
    b = bias.detach().double() if bias is not None else torch.zeros(w.shape[0], dtype=torch.float64)
    w = w * a.view(-1, *([1] * (w.dim() - 1)))
    return w, a * b + d
