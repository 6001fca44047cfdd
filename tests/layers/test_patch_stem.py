"""The stem is computed once and repeated over T, with the authors' (T*B-batch) BatchNorm semantics."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from spikemlp.layers import PatchStem, TimeRepeatedBatchNorm2d

T = 4


@pytest.mark.parametrize("momentum", [0.1, None])
def test_repeated_bn_equals_bn_on_the_repeated_batch(momentum):
    ours = TimeRepeatedBatchNorm2d(5, momentum=momentum).double()
    naive = nn.BatchNorm2d(5, momentum=momentum).double()
    plain = nn.BatchNorm2d(5, momentum=momentum).double()  # BN of one copy, without the T*B correction
    with torch.no_grad():
        for bn in (ours, naive):
            bn.weight.copy_(torch.linspace(0.5, 2.0, 5))
            bn.bias.copy_(torch.linspace(-1.0, 1.0, 5))
    for step in range(3):  # several steps: the running statistics accumulate
        x = (torch.randn(3, 5, 4, 4, dtype=torch.float64) * (step + 1)).requires_grad_(True)
        x_rep = x.detach().clone().requires_grad_(True)
        g = torch.randn(T, 3, 5, 4, 4, dtype=torch.float64)
        out = ours(x, repeats=T)
        ref = naive(x_rep.repeat(T, 1, 1, 1))
        plain(x.detach())
        torch.testing.assert_close(out.expand(T, *out.shape).flatten(0, 1), ref)
        (out * g.sum(0)).sum().backward()  # each of the T copies receives its own gradient
        (ref * g.flatten(0, 1)).sum().backward()
        torch.testing.assert_close(x.grad, x_rep.grad)
        torch.testing.assert_close(ours.weight.grad, naive.weight.grad)
        torch.testing.assert_close(ours.bias.grad, naive.bias.grad)
        ours.zero_grad()
        naive.zero_grad()
    for name in ("running_mean", "running_var", "num_batches_tracked"):
        torch.testing.assert_close(getattr(ours, name), getattr(naive, name), msg=name)
    # the correction matters: a plain BN of one copy updates its running variance differently
    assert not torch.allclose(plain.running_var, naive.running_var, rtol=1e-4, atol=0)
    ours.eval()
    naive.eval()
    x = torch.randn(2, 5, 4, 4, dtype=torch.float64)
    torch.testing.assert_close(ours(x, repeats=T), naive(x))


def test_stem_is_computed_once_and_repeated_over_time():
    stem = PatchStem(3, 6, 4).double()
    images = torch.randn(2, 3, 16, 16, dtype=torch.float64)
    h = stem(images, T)
    assert h.shape == (T, 2, 6, 4, 4)
    assert h.stride(0) == 0  # a view: one computation serves every time step
    ref = nn.functional.conv2d(images, stem.conv.weight, stride=4)
    ref = (ref - ref.mean((0, 2, 3), keepdim=True)) / torch.sqrt(
        ref.var((0, 2, 3), unbiased=False, keepdim=True) + 1e-5
    )
    torch.testing.assert_close(h[2], ref)


def test_a_synchronised_bn_in_place_of_the_stems_works():
    # --sync-bn swaps every BatchNorm for one that takes no ``repeats``; the stem must still run, with the
    # same output (the batch statistics of one copy equal those of the T copies).
    from spikemlp.train.sync_batchnorm import DistributedBatchNorm, convert_sync_batchnorm

    stem = PatchStem(3, 6, 4).double()
    images = torch.randn(2, 3, 16, 16, dtype=torch.float64)
    expected = stem(images, T)
    synced = convert_sync_batchnorm(stem)
    assert isinstance(synced.bn, DistributedBatchNorm)
    torch.testing.assert_close(synced(images, T), expected)
