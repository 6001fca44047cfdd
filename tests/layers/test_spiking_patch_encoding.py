"""The SPE cell and MLP-S's conv encoder against plain-op re-computations of docs/mlp_spe.md#network
and #variants."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from mlp_spe_reference_ops import bn_train, lif, random_spikes, randomize_bn

from spikemlp.layers import ConvDownsample, SpikingPatchEncoding
from spikemlp.neurons import LIF

T, B, C_IN, C_OUT, N = 2, 2, 4, 6, 3


def conv_bn(x, cb, stride):
    return bn_train(F.conv2d(x, cb.conv.weight, stride=stride, padding=1), cb.bn, 1)


def test_spe_cell_matches_spec():
    cell = SpikingPatchEncoding(C_IN, C_OUT, lambda: LIF(backend="reference")).double()
    randomize_bn(cell)
    x = random_spikes(T, B, C_IN, 2 * N, 2 * N, p=0.5)
    xm = x.flatten(0, 1)
    n1, n2, n3 = (conv_bn(xm, cell.cell2node[k], 2) for k in range(3))
    s1 = lif(n1.unflatten(0, (T, B))).flatten(0, 1)
    n2 = n2 + conv_bn(s1, cell.node1_node2, 1)
    s2 = lif(n2.unflatten(0, (T, B))).flatten(0, 1)
    n3 = n3 + n1 + conv_bn(s2, cell.node2_node3, 1)
    ref = torch.cat([n1, n2, n3], dim=1).unflatten(0, (T, B))
    assert 0.05 < s1.mean().item() < 0.95 and 0.05 < s2.mean().item() < 0.95

    h = cell(x)
    assert h.shape == (T, B, C_OUT, N, N)
    torch.testing.assert_close(h, ref, rtol=1e-10, atol=1e-10)
    # the three node convolutions see spikes and have C_OUT / 3 outputs each
    assert [cb.conv.weight.shape for cb in cell.cell2node] == [(2, C_IN, 3, 3)] * 3
    assert cell.node1_node2.conv.weight.shape == (2, 2, 3, 3)


def test_conv_downsample_is_conv2x2_then_bn():
    enc = ConvDownsample(C_IN, C_OUT).double()
    randomize_bn(enc)
    x = random_spikes(T, B, C_IN, 2 * N, 2 * N)
    ref = bn_train(F.conv2d(x.flatten(0, 1), enc.conv.weight, stride=2), enc.bn, 1).unflatten(0, (T, B))
    torch.testing.assert_close(enc(x), ref)


def test_channels_not_divisible_by_three():
    with pytest.raises(ValueError, match="must be divisible by 3.*multiple of 3"):
        SpikingPatchEncoding(4, 8, LIF)
