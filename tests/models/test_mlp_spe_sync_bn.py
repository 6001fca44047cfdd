"""--sync-bn swaps every BatchNorm of a model for a synchronised one; MLP-SPE must compute the same thing.

Without a process group the synchronised BN takes its local path, which is plain training-mode BatchNorm,
so the converted model must reproduce the original's logits, gradients and running statistics exactly.
This catches layers that special-case ``nn.BatchNorm2d`` (or pass it extra arguments) and so break when
another BatchNorm class stands in its place.
"""

from __future__ import annotations

import copy

import pytest
import timm
import torch
from torch import nn

import spikemlp  # noqa: F401  (registers the models)
from spikemlp.train.sync_batchnorm import DistributedBatchNorm, convert_sync_batchnorm


@pytest.mark.parametrize("kwargs", [dict(), dict(spe=False), dict(channel_bn="channel")], ids=str)
def test_synchronised_batchnorm_changes_nothing_on_one_process(kwargs):
    torch.manual_seed(0)
    model = timm.create_model("mlp_spe_xt_cifar", embed_dim=6, depths=(1, 1, 1, 1), T=2, **kwargs).double()
    synced = convert_sync_batchnorm(copy.deepcopy(model))
    assert not any(
        isinstance(m, nn.modules.batchnorm._BatchNorm) and not isinstance(m, DistributedBatchNorm)
        for m in synced.modules()
    )
    images = torch.randn(4, 3, 32, 32, dtype=torch.float64)
    model.train(), synced.train()
    out, out_synced = model(images), synced(images)
    torch.testing.assert_close(out_synced, out)
    out.square().sum().backward()
    out_synced.square().sum().backward()
    for (name, p), q in zip(model.named_parameters(), synced.parameters()):
        torch.testing.assert_close(q.grad, p.grad, msg=name)
    for (name, b), c in zip(model.named_buffers(), synced.buffers()):
        if name == "stem.bn.running_var":
            # The stem's BN sees one copy of the T identical steps: its unbiased running variance uses
            # n = B*H*W instead of T*B*H*W (documented in PatchStem.forward).
            continue
        torch.testing.assert_close(c, b, msg=name)
