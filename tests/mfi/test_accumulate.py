"""Accumulate-only execution: gather-and-add layers equal their dense versions, refuse non-binary input,
and the whole accumulate-only model equals the dense folded model."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from spikemlp.layers import AxialProjection
from spikemlp.mfi import NonBinaryInputError, accumulate_only, fold
from spikemlp.mfi.accumulate import (
    AccumulateAxialProjection,
    AccumulateConv2d,
    AccumulateLinear,
    AccumulatePerTokenLinear,
    PerTokenLinear,
)


def _integer_weights(module: nn.Module) -> nn.Module:
    # Small integer weights make every sum exact in float64, so dense and accumulated results must be
    # bit-identical whatever the summation order.
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randint(-4, 5, p.shape).to(p.dtype))
    return module


def _spikes(*shape, rate=0.3):
    return (torch.rand(*shape) < rate).double()


@pytest.mark.parametrize(
    "conv",
    [
        nn.Conv2d(5, 7, 3, stride=2, padding=1, bias=False),
        nn.Conv2d(5, 7, 3, stride=1, padding=1),
        nn.Conv2d(5, 7, 1),
        nn.Conv2d(5, 7, 2, stride=2, bias=False),
    ],
)
def test_accumulate_conv_equals_dense(conv):
    conv = _integer_weights(conv.double())
    x = _spikes(3, 5, 8, 8)
    assert torch.equal(AccumulateConv2d(conv)(x), conv(x))


def test_accumulate_linear_and_axial_equal_dense():
    fc = _integer_weights(nn.Linear(6, 4).double())
    x = _spikes(2, 3, 5, 6)
    assert torch.equal(AccumulateLinear(fc)(x), fc(x))
    for axis in ("w", "h"):
        proj = _integer_weights(AxialProjection(5, axis).double())
        x = _spikes(3, 4, 5, 5)
        assert torch.equal(AccumulateAxialProjection(proj)(x), proj(x))


def test_accumulate_per_token_linear_equals_dense_and_dense_matches_definition():
    weight = torch.randint(-4, 5, (5, 3, 6)).double()  # [tokens, out, in]
    bias = torch.randint(-4, 5, (5, 3)).double()
    layer = PerTokenLinear(weight, bias)
    x = _spikes(4, 5, 6)
    expected = torch.stack([x[:, p] @ weight[p].T + bias[p] for p in range(5)], dim=1)
    assert torch.equal(layer(x), expected)
    assert torch.equal(AccumulatePerTokenLinear(layer)(x), expected)


def test_accumulate_refuses_non_binary_input():
    layer = AccumulateLinear(nn.Linear(3, 2))
    with pytest.raises(NonBinaryInputError, match=r"needs binary spikes, but 1 of 6 input values"):
        layer(torch.tensor([[0.0, 1.0, 0.5], [1.0, 0.0, 0.0]]))


@pytest.mark.parametrize("kwargs", [dict(), dict(spe=False)], ids=["mlp_spe", "mlp_s"])
def test_accumulate_only_model_equals_dense_folded(make_lively, kwargs):
    model = make_lively(**kwargs)
    folded = fold(model)
    acc = accumulate_only(folded)
    # Only the encoding conv stays a dense convolution. The head keeps its folded weights, but the
    # readout gathers them per spike instead of calling it: a dense call would raise here.
    dense = [n for n, m in acc.named_modules() if type(m) in (nn.Conv2d, nn.Linear, AxialProjection)]
    assert dense == ["stem.conv", "head"]
    acc.head.forward = lambda x: (_ for _ in ()).throw(AssertionError("dense readout used"))
    images = torch.randn(5, 3, 32, 32, dtype=torch.float64)
    with torch.no_grad():
        expected, got = folded(images), acc(images)
    assert float((got - expected).abs().max() / expected.abs().max()) < 1e-9
    assert torch.equal(got.argmax(-1), expected.argmax(-1))
