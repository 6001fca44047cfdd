"""The fused BatchNorm -> LIF of training equals ``lif(bn(x))``: spikes, running statistics and gradients."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from spikemlp.neurons import LIF, bn_lif
from spikemlp.neurons.bn_lif import batch_norm_lif
from spikemlp.ops.lif import unavailable_reason

pytestmark = pytest.mark.skipif(unavailable_reason() is not None, reason="the C++ LIF kernel cannot be built")

T = 3
# (BN type, input shape with T * B leading): BN1d over tokens [M, L, D], over channels [M * L, D];
# BN2d over positions as the axial branches view them [M * C * H, W, 1, 1].
CASES = [
    (nn.BatchNorm1d, (T * 2, 5, 7)),
    (nn.BatchNorm1d, (T * 2 * 5, 7)),
    (nn.BatchNorm2d, (T * 2 * 4 * 6, 6, 1, 1)),
]


def _modules(bn_type, shape, dtype, momentum=0.1):
    bn = bn_type(shape[1], momentum=momentum).to(dtype)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        bn.weight.copy_(torch.rand(shape[1], generator=g) + 0.5)
        bn.bias.copy_(torch.randn(shape[1], generator=g) * 0.5 + 0.8)
        bn.running_mean.copy_(torch.randn(shape[1], generator=g))
    return bn, LIF(backend="cpp")


def _run(fn, bn, lif, x, grad_out):
    x = x.clone().requires_grad_(True)
    out = fn(x, bn, lif)
    out.backward(grad_out)
    return out, x.grad, bn.weight.grad, bn.bias.grad


def _unfused(x, bn, lif):
    y = bn(x)
    return lif(y.unflatten(0, (T, -1))).flatten(0, 1)


def _fused(x, bn, lif):
    return batch_norm_lif(x, bn, lif, T)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("bn_type,shape", CASES)
@pytest.mark.parametrize("momentum", [0.1, None])
def test_fused_equals_unfused(bn_type, shape, dtype, momentum):
    bn, lif = _modules(bn_type, shape, dtype, momentum)
    bn_ref = copy.deepcopy(bn)
    x = torch.randn(shape, dtype=dtype, generator=torch.Generator().manual_seed(1)) * 1.5
    grad_out = torch.randn(shape, dtype=dtype, generator=torch.Generator().manual_seed(2))
    ref = _run(_unfused, bn_ref, lif, x, grad_out)
    got = _run(_fused, bn, lif, x, grad_out)
    assert 0.05 < ref[0].mean().item() < 0.95  # the neurons fire and stay silent
    torch.testing.assert_close(got[0], ref[0], rtol=0, atol=0)
    for name, a, b in zip(("x", "weight", "bias"), got[1:], ref[1:]):
        torch.testing.assert_close(a, b, rtol=0, atol=0, msg=name)
    torch.testing.assert_close(bn.running_mean, bn_ref.running_mean, rtol=0, atol=0)
    torch.testing.assert_close(bn.running_var, bn_ref.running_var, rtol=0, atol=0)
    assert bn.num_batches_tracked.item() == bn_ref.num_batches_tracked.item() == 1


def test_fused_keeps_only_the_bn_input_for_backward():
    bn, lif = _modules(nn.BatchNorm1d, (T * 4, 8, 16), torch.float32)
    x = torch.randn(T * 4, 8, 16, requires_grad=True)
    saved = []

    def pack(t):
        saved.append(t)
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        bn_lif.batch_norm_lif(x, bn, lif, T)
    full = [t for t in saved if t.numel() == x.numel()]
    assert len(full) == 1 and full[0].data_ptr() == x.data_ptr()


def test_eval_mode_and_other_neurons_take_the_plain_path():
    bn, lif = _modules(nn.BatchNorm1d, (T * 2, 5, 7), torch.float32)
    x = torch.randn(T * 2, 5, 7)
    bn.eval()
    torch.testing.assert_close(batch_norm_lif(x, bn, lif, T), _unfused(x, bn, lif), rtol=0, atol=0)
    ref_lif = LIF(backend="reference")
    bn.train()
    assert not bn_lif._fusable(x.requires_grad_(), bn, ref_lif)
    assert bn_lif._fusable(x, bn, lif)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("token_bn", [True, False])
def test_projection_recomputed_in_backward_equals_unfused(dtype, token_bn):
    """Linear -> BN -> LIF keeping only the Linear's input: same spikes, buffers and every gradient."""
    M, L, C, D = T * 2, 5, 4, 9
    g = torch.Generator().manual_seed(3)
    fc = nn.Linear(C, D).to(dtype)
    bn, lif = _modules(nn.BatchNorm1d, (M, L, D) if token_bn else (M * L, D), dtype)
    view = (lambda y: y) if token_bn else (lambda y: y.flatten(0, 1))
    inp = (torch.rand(M, L, C, generator=g) < 0.4).to(dtype).requires_grad_(True)
    grad_out = torch.randn(M, L, D, generator=g, dtype=dtype)
    fc_ref, bn_ref = copy.deepcopy(fc), copy.deepcopy(bn)
    inp_ref = inp.detach().clone().requires_grad_(True)

    out = bn_lif.projection_batch_norm_lif(inp, fc, torch.nn.functional.linear, view, bn, lif, T)
    out.backward(grad_out)
    y = fc_ref(inp_ref)
    ref = lif(bn_ref(view(y)).unflatten(0, (T, -1))).flatten(0, 1).view_as(y)
    ref.backward(grad_out)

    assert 0.05 < ref.mean().item() < 0.95
    torch.testing.assert_close(out, ref, rtol=0, atol=0)
    pairs = [(inp.grad, inp_ref.grad), (fc.weight.grad, fc_ref.weight.grad), (fc.bias.grad, fc_ref.bias.grad)]
    pairs += [(bn.weight.grad, bn_ref.weight.grad), (bn.bias.grad, bn_ref.bias.grad)]
    pairs += [(bn.running_mean, bn_ref.running_mean), (bn.running_var, bn_ref.running_var)]
    for a, b in pairs:
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_projection_with_hooks_runs_as_a_module():
    """Forward hooks (MAC counts, recordings) see the projection run, so the fused path steps aside."""
    fc = nn.Linear(4, 6)
    bn, lif = _modules(nn.BatchNorm1d, (T * 2, 3, 6), torch.float32)
    inp = (torch.rand(T * 2, 3, 4) < 0.5).float().requires_grad_(True)
    seen = []
    fc.register_forward_hook(lambda mod, i, o: seen.append(o.requires_grad))
    out = bn_lif.projection_batch_norm_lif(inp, fc, torch.nn.functional.linear, lambda y: y, bn, lif, T)
    assert seen == [True] and out.grad_fn is not None
