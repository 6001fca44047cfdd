"""Spikes saved for the backward as bool: same gradients, a quarter of the fp32 memory, no false matches."""

from __future__ import annotations

import gc

import torch
import torch.nn.functional as F

from spikemlp.neurons import spike_storage
from spikemlp.neurons.spike_storage import compact_saved_spikes, mark_binary


def _spikes(*shape):
    return (torch.rand(*shape, generator=torch.Generator().manual_seed(0)) < 0.3).float()


def _grads(compact: bool):
    g = torch.Generator().manual_seed(1)
    w = torch.randn(6, 8, generator=g, requires_grad=True)
    u = torch.randn(5, 2, generator=g, requires_grad=True)
    x = torch.randn(4, 5, 8, generator=g, requires_grad=True)
    with compact_saved_spikes(compact):
        s = mark_binary(_spikes(4, 5, 8) * (x > -100))  # spikes that depend on x (a non-leaf)
        y = F.linear(s.flatten(0, 1), w).square().sum() + torch.matmul(s.transpose(1, 2), u).square().sum()
        packed = dict(spike_storage._local.stack[-1].packed) if compact else {}
    y.backward()
    return (w.grad, u.grad), packed


def test_gradients_are_unchanged_and_spikes_are_saved_as_bool():
    ref, _ = _grads(False)
    got, packed = _grads(True)
    for a, b in zip(got, ref):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    # One bool copy shared by both ops that saved a view of the spikes (flatten and transpose).
    assert len(packed) == 1
    (bits,) = packed.values()
    assert bits.dtype == torch.bool and bits.shape == (4, 5, 8)


def test_unmarked_tensors_are_saved_as_they_are():
    w = torch.randn(3, 4, requires_grad=True)
    x = torch.rand(2, 4)
    with compact_saved_spikes():
        F.linear(x, w).sum().backward()
        assert not spike_storage._local.stack[-1].packed
    torch.testing.assert_close(w.grad, x.sum(0).expand(3, 4))


def test_a_freed_spike_tensor_is_forgotten():
    with compact_saved_spikes():
        registry = spike_storage._local.stack[-1]
        s = mark_binary(_spikes(16, 16).requires_grad_(False))
        assert len(registry.spikes) == 1
        del s
        gc.collect()
        assert not registry.spikes  # a new tensor at the same address is not taken for spikes


def test_outside_the_context_or_without_grad_nothing_is_marked():
    s = _spikes(3, 3)
    assert mark_binary(s) is s and not spike_storage._local.stack
    with torch.no_grad(), compact_saved_spikes():
        assert not spike_storage.is_compacting()
