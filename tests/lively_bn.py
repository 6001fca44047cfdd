"""Random BatchNorm statistics and affine parameters, so that a small MLP-SPE fires at every depth.

A freshly initialised MLP-SPE barely spikes past stage 0 (its BN statistics are the identity), which makes
checks of later layers, the head or the neurons' export vacuous. The analysis, MFI and export tests share
this one recipe (the model tests use their own, `mlp_spe_reference_ops.randomize_bn`).
"""

from __future__ import annotations

import torch
from torch import nn


def randomize_bn_lively(model: nn.Module, generator: torch.Generator) -> nn.Module:
    """Draw every BN's running mean, running variance, weight and bias (in that order) from ``generator``."""
    with torch.no_grad():
        for bn in model.modules():
            if isinstance(bn, nn.modules.batchnorm._BatchNorm):
                n = bn.num_features
                bn.running_mean.copy_(torch.rand(n, generator=generator) - 0.5)
                bn.running_var.copy_(torch.rand(n, generator=generator) * 1.5 + 0.2)
                bn.weight.copy_(torch.rand(n, generator=generator) * 2 + 0.5)
                bn.bias.copy_(torch.rand(n, generator=generator) * 1.2 - 0.2)
    return model
