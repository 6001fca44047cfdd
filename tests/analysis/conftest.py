"""Small models for the analysis tests: an MLP-SPE whose neurons fire at every depth, and an SNN-MLP."""

from __future__ import annotations

import pytest
import timm
import torch
from torch import nn

import spikemlp  # noqa: F401  (registers the models)
from lively_bn import randomize_bn_lively


def _lively(model: nn.Module, seed: int = 0) -> nn.Module:
    # Spikes reach the last stage and the head (a fresh MLP-SPE barely fires past stage 0).
    return randomize_bn_lively(model, torch.Generator().manual_seed(seed)).eval()


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
