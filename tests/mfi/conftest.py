"""Small MLP-SPE models whose neurons fire at every depth, for the MFI tests.

A freshly initialised MLP-SPE barely spikes past stage 0 (its BN statistics are the identity), which
would make fold/accumulate checks vacuous. Here every BatchNorm gets random running statistics and
affine parameters, one negative and one zero scale per layer included, so the folding of negative and
zero BN scales into thresholds is exercised too.
"""

from __future__ import annotations

import pytest
import timm
import torch
from torch import nn

import spikemlp  # noqa: F401  (registers the models)
from lively_bn import randomize_bn_lively


def lively_mlp_spe(seed: int = 0, dtype=torch.float64, **kwargs) -> nn.Module:
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    model = timm.create_model("mlp_spe_xt_cifar", embed_dim=6, depths=(1, 1, 1, 1), **kwargs)
    randomize_bn_lively(model, g)
    with torch.no_grad():
        for bn in model.modules():
            if isinstance(bn, nn.modules.batchnorm._BatchNorm):
                n = bn.num_features
                bn.weight[0] *= -1  # a negative scale: the folded neuron sees -z
                if n > 2:
                    bn.weight[1] = 0.0  # a zero scale: the neuron sees a constant
    return model.to(dtype).eval()


@pytest.fixture
def make_lively():
    return lively_mlp_spe
