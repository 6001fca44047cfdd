"""torch.library.opcheck for every spikemlp operator: schema, fake implementation, registered autograd
and AOT dispatch agree with the real kernels, for each dtype, charge mode, reset and option."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from spikemlp.layers.spike_matmul import grouped_sums, pack
from spikemlp.ops import lif as fused_cpu
from spikemlp.ops import spike_matmul as spike_matmul_op

# (mode, v_threshold, v_reset, hard_reset, detach_reset, surrogate id, alpha): every charge mode (IF,
# decay input, no decay), hard and soft reset, detached or not, every built-in surrogate.
NEURONS = [
    (0, 1.0, 0.0, True, True, 0, 4.0),
    (1, 1.0, 0.0, True, True, 0, 4.0),
    (1, 0.7, 0.3, True, False, 1, 2.0),
    (2, 0.7, 0.0, False, False, 2, 1.0),
    (2, 1.0, -0.2, True, True, 3, 1.0),
]
DTYPES = [torch.float32, torch.float64]


@pytest.fixture(autouse=True)
def lif_built():
    if (reason := fused_cpu.unavailable_reason()) is not None:
        pytest.skip(reason)


def _x(dtype, shape=(4, 3, 10)):
    return (torch.randn(shape, generator=torch.Generator().manual_seed(0)) * 1.5 + 0.6).to(dtype)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("neuron", NEURONS, ids=str)
@pytest.mark.parametrize("return_membrane", [False, True])
def test_lif_forward(dtype, neuron, return_membrane):
    mode, vth, vr, hard, detach, sg, alpha = neuron
    x = _x(dtype).requires_grad_()
    args = (x, None, 2.0, mode, vth, vr, hard, detach, sg, alpha, return_membrane, True)
    torch.library.opcheck(torch.ops.spikemlp.lif_forward.default, args)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("mode", [1, 2])
def test_lif_forward_with_learnable_tau(dtype, mode):
    x = _x(dtype).requires_grad_()
    tau = torch.tensor(3.0, dtype=dtype, requires_grad=True)
    args = (x, tau, 0.0, mode, 1.0, 0.0, True, True, 0, 4.0, False, True)
    torch.library.opcheck(torch.ops.spikemlp.lif_forward.default, args)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("neuron", NEURONS, ids=str)
@pytest.mark.parametrize("with_membrane_grad", [False, True])
def test_lif_backward(dtype, neuron, with_membrane_grad):
    mode, vth, vr, hard, detach, sg, alpha = neuron
    x = _x(dtype)
    g = torch.randn(x.shape, generator=torch.Generator().manual_seed(1), dtype=dtype)
    grad_v = g.flip(0) if with_membrane_grad else None
    tau = torch.tensor(2.5, dtype=dtype) if mode else None  # the tau gradient where there is a tau
    args = (x, g, grad_v, tau, 2.0, mode, vth, vr, hard, detach, sg, alpha, mode != 0)
    torch.library.opcheck(torch.ops.spikemlp.lif_backward.default, args)


def _spike_matmul_args(dtype, planar_in, planar_out, grouped, neuron, affine, n_segments, u8, residual=False):
    gen = torch.Generator().manual_seed(2)
    M, P, D, ks = 4, 5, 7, [6, 3, 5][:n_segments]
    shape = (lambda k: (M, k, P)) if planar_in else (lambda k: (M, P, k))
    segments = [(torch.rand(shape(k), generator=gen) < 0.4).to(torch.uint8 if u8 else dtype) for k in ks]
    weight = torch.randn(D, sum(ks), generator=gen, dtype=dtype)
    bias = torch.randn(D, generator=gen, dtype=dtype)
    wt, padded_bias, table = pack(weight, bias, dtype, grouped)
    cols = [F.pad(t, (0, -D % 16)) for t in torch.randn(2, D, generator=gen, dtype=dtype)]  # Dp entries
    rows = list(torch.randn(2, P, generator=gen, dtype=dtype))
    col = cols if affine == "col" else [None, None]
    row = rows if affine == "row" else [None, None]
    lif = (2, 1, True, 2.0, 1.0, 0.0) if neuron else (0, 0, False, 0.0, 0.0, 0.0)
    out_dtype = dtype if u8 else None
    out_shape = (M, D, P) if planar_out else (M, P, D)
    addend = torch.randn(out_shape, generator=gen, dtype=dtype) if residual else None
    keep = residual and neuron
    return (segments, wt, table, padded_bias, *col, *row, addend, keep, D, planar_in, planar_out, out_dtype,
            *lif)  # fmt: skip


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("planar_in,planar_out", [(True, True), (True, False), (False, False), (False, True)])
@pytest.mark.parametrize(
    "grouped,neuron,affine,n_segments,u8,residual",
    [(False, False, None, 1, False, False), (True, True, "row", 1, False, False),
     (False, False, "col", 3, False, False), (True, False, "col", 2, True, False),
     (False, True, "col", 3, True, True), (False, False, "row", 1, False, True)],
    ids=["plain", "grouped-neuron-row", "three-segments-col", "uint8-grouped-col",
         "uint8-residual-neuron-values", "residual"],
)  # fmt: skip
def test_spike_matmul(dtype, planar_in, planar_out, grouped, neuron, affine, n_segments, u8, residual):
    if (reason := spike_matmul_op.unavailable_reason()) is not None:
        pytest.skip(reason)
    args = _spike_matmul_args(dtype, planar_in, planar_out, grouped, neuron, affine, n_segments, u8, residual)
    torch.library.opcheck(torch.ops.spikemlp.spike_matmul.default, args)


def test_spike_matmul_operator_computes_the_product():
    # opcheck compares the operator with itself; this pins what it computes (planar in, rows out).
    args = _spike_matmul_args(torch.float64, True, False, True, False, "col", 2, False)
    segments, wt, table, bias = args[:4]
    scale, shift = args[4][:7], args[5][:7]
    x = torch.cat(segments, dim=1).transpose(1, 2)  # [M, P, K]
    want = (x @ wt[:, :7] + bias[:7]) * scale + shift
    assert torch.equal(table, grouped_sums(wt))
    torch.testing.assert_close(torch.ops.spikemlp.spike_matmul(*args)[0], want, rtol=1e-12, atol=1e-12)


# SNN-MLP's group LIF: the H and W axes, a group of one, one group of the whole axis, a pass-through tail.
GROUP_LIF = [(2, 4), (3, 0), (3, 1), (2, 3)]


def _group_lif_args(dtype, axis, group_size, grad: bool):
    x = _x(dtype, (2, 3, 7, 9)) * 0.3
    tau, v_th = torch.tensor([0.37], dtype=dtype), torch.tensor([0.05], dtype=dtype)
    return [t.requires_grad_(grad) for t in (x, tau, v_th)] + [axis, group_size]


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("axis,group_size", GROUP_LIF)
def test_group_lif_forward(dtype, axis, group_size):
    args = _group_lif_args(dtype, axis, group_size, grad=True)
    torch.library.opcheck(torch.ops.spikemlp.group_lif_forward.default, tuple(args))


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("axis,group_size", GROUP_LIF)
def test_group_lif_backward(dtype, axis, group_size):
    x, tau, v_th, *rest = _group_lif_args(dtype, axis, group_size, grad=False)
    g = torch.randn(x.shape, generator=torch.Generator().manual_seed(1), dtype=dtype)
    torch.library.opcheck(torch.ops.spikemlp.group_lif_backward.default, (x, g, tau, v_th, *rest))


def test_group_lif_operators_compute_the_reference():
    # opcheck compares the operators with themselves; this pins what they compute.
    from spikemlp.neurons.group_lif import group_lif_reference

    x, tau, v_th, axis, s = _group_lif_args(torch.float64, 3, 4, grad=True)
    y = torch.ops.spikemlp.group_lif_forward(x, tau, v_th, axis, s)
    g = torch.randn(x.shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    grads = torch.autograd.grad(y, (x, tau, v_th), g)
    y_ref = group_lif_reference(x, tau, v_th, axis, s)
    assert torch.equal(y, y_ref)
    for got, want in zip(grads, torch.autograd.grad(y_ref, (x, tau, v_th), g)):
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
