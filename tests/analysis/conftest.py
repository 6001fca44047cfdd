"""Small models for the analysis tests: an MLP-SPE whose neurons fire at every depth, and an SNN-MLP."""

from __future__ import annotations

import pytest
import timm
import torch
from torch import nn

import spikemlp  # noqa: F401  (registers the models)


def _lively(model: nn.Module, seed: int = 0) -> nn.Module:
    # Random BN statistics and affine parameters, so that spikes reach the last stage and the head
    # (a fresh MLP-SPE barely fires past stage 0).
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for bn in model.modules():
            if isinstance(bn, nn.modules.batchnorm._BatchNorm):
                n = bn.num_features
                bn.running_mean.copy_(torch.rand(n, generator=g) - 0.5)
                bn.running_var.copy_(torch.rand(n, generator=g) * 1.5 + 0.2)
                bn.weight.copy_(torch.rand(n, generator=g) * 2 + 0.5)
                bn.bias.copy_(torch.rand(n, generator=g) * 1.2 - 0.2)
    return model.eval()


@pytest.fixture(scope="module")
def tiny_mlp_spe() -> nn.Module:
    torch.manual_seed(0)
    return _lively(timm.create_model("mlp_spe_xt_cifar", embed_dim=6, depths=(1, 1, 1, 1), T=3))


@pytest.fixture(scope="module")
def tiny_snn_mlp() -> nn.Module:
    torch.manual_seed(0)
    return timm.create_model("snn_mlp_xt_cifar", embed_dim=8, depths=(1, 1, 1, 1)).eval()


@pytest.fixture(scope="module")
def random_batches():
    g = torch.Generator().manual_seed(3)
    return [
        (torch.randn(6, 3, 32, 32, generator=g), torch.randint(0, 10, (6,), generator=g)) for _ in range(2)
    ]
