"""Plain-tensor re-implementations used as references by the layer tests (no spikemlp code).

The LIF is docs/mlp_spe.md#neuron-and-time written out (tau 2, decay input, V_th 1, hard reset to 0);
BatchNorm is written from its definition: normalise with the batch mean and biased variance over the given
dims.
"""

from __future__ import annotations

import torch
from torch import nn


def lif(x: torch.Tensor) -> torch.Tensor:
    """Spikes of the LIF of docs/mlp_spe.md#neuron-and-time for inputs x [T, ...]."""
    v = torch.zeros_like(x[0])
    out = []
    for xt in x:
        h = v + (xt - v) / 2.0
        s = (h >= 1.0).to(x.dtype)
        v = h * (1.0 - s)
        out.append(s)
    return torch.stack(out)


def bn_train(x: torch.Tensor, bn: nn.modules.batchnorm._BatchNorm, channel_dim: int) -> torch.Tensor:
    """Training-mode BN of x with `bn`'s affine parameters; statistics pool every dim but channel_dim."""
    dims = [d for d in range(x.dim()) if d != channel_dim % x.dim()]
    mean = x.mean(dims, keepdim=True)
    var = x.var(dims, unbiased=False, keepdim=True)
    shape = [1] * x.dim()
    shape[channel_dim] = -1
    return (x - mean) / torch.sqrt(var + bn.eps) * bn.weight.view(shape) + bn.bias.view(shape)


def expected_running_stats(x, channel_dim, mean_before, var_before, momentum=0.1):
    """BN running (mean, var) after one training step on x: the unbiased variance enters the update."""
    dims = [d for d in range(x.dim()) if d != channel_dim % x.dim()]
    mean = (1 - momentum) * mean_before + momentum * x.mean(dims)
    var = (1 - momentum) * var_before + momentum * x.var(dims, unbiased=True)
    return mean, var


def randomize_bn(module: nn.Module, generator: torch.Generator | None = None) -> None:
    """Give every BN non-trivial affine parameters and running statistics, so that tests see them act."""
    for m in module.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            n = m.num_features
            with torch.no_grad():
                m.weight.copy_(torch.rand(n, generator=generator) * 2 + 0.5)
                m.bias.copy_(torch.randn(n, generator=generator) * 0.5 + 0.5)
                m.running_mean.copy_(torch.randn(n, generator=generator) * 0.2)
                m.running_var.copy_(torch.rand(n, generator=generator) + 0.5)


def random_spikes(*shape, p: float = 0.3, dtype=torch.float64) -> torch.Tensor:
    return (torch.rand(*shape) < p).to(dtype)
