"""The group LIF of SNN-MLP: hand-computed sequences, the plain loop, gradients, dtypes, errors."""

from __future__ import annotations

import pytest
import torch

from spikemlp.neurons import GroupLIF, group_lif
from spikemlp.neurons.group_lif import _scan_traceable, group_lif_reference

# A hand-worked sequence, tau = 0.5, V_th = 1 (all values exact in binary floating point).
SEQ = [0.5, 1.0, 2.0, 0.25, 3.0, -1.0]
# s = 4: u = 0.5 (silent, y = V_th), 0.25 + 1 = 1.25 (fires), 2 (fires, after a reset), 0.25 (silent);
# the last two positions are past the only whole group and pass through.
SEQ_S4 = [1.0, 1.25, 2.0, 1.0, 3.0, -1.0]
# s = 0, one group: as s = 4, then 0.5 * 0.25 + 3 = 3.125 (fires) and -1 after the reset (silent).
SEQ_S0 = [1.0, 1.25, 2.0, 1.0, 3.125, 1.0]
# s = 2: groups (0.5, 1) -> (V_th, 1.25); (2, 0.25) -> (2, V_th); (3, -1) -> (3, V_th).
SEQ_S2 = [1.0, 1.25, 2.0, 1.0, 3.0, 1.0]
# A second channel that fires at every position: the output is the input.
ALWAYS = [2.0] * 6


def _on_axis(values: list[list[float]], axis: int) -> torch.Tensor:
    """Sequences (one per channel) laid along H (axis 2) or W (axis 3) of a [1, C, *, *] tensor."""
    t = torch.tensor(values, dtype=torch.float64)  # [C, L]
    return t[None, :, :, None] if axis == 2 else t[None, :, None, :]


@pytest.mark.parametrize("axis", [2, 3])
@pytest.mark.parametrize(
    "group_size, expected",
    [(4, SEQ_S4), (0, SEQ_S0), (2, SEQ_S2), (-1, SEQ)],
)
def test_hand_computed_sequences(axis, group_size, expected):
    x = _on_axis([SEQ, ALWAYS], axis)
    y = group_lif(x, 0.5, 1.0, axis=axis, group_size=group_size)
    torch.testing.assert_close(y, _on_axis([expected, ALWAYS], axis), rtol=0, atol=0)


@pytest.mark.parametrize("axis", [2, 3])
def test_threshold_is_strict(axis):
    # u_0 = 1.0 equals V_th, so it does not fire and is carried: u_1 = 0.5 * 1 + 0.75 = 1.25 fires.
    # (With >= it would reset and u_1 = 0.75 would give V_th.)
    x = _on_axis([[1.0, 0.75, 0.0, 0.0]], axis)
    y = group_lif(x, 0.5, 1.0, axis=axis, group_size=4)
    torch.testing.assert_close(y, _on_axis([[1.0, 1.25, 1.0, 1.0]], axis), rtol=0, atol=0)


@pytest.mark.parametrize("axis", [2, 3])
@pytest.mark.parametrize(
    "group_size, grad_x, grad_tau, grad_v_th",
    [
        # s = 4, fired = (0, 1, 1, 0), g = 1..6: dL/du = (0.5 * 2, 2, 3, 0); remainder gets g;
        # dL/dtau = dL/du_1 * m_1 = 2 * 0.5; dL/dV_th = g_0 + g_3.
        (4, [1.0, 2.0, 3.0, 0.0, 5.0, 6.0], 1.0, 5.0),
        # s = 0, fired = (0, 1, 1, 0, 1, 0): dL/du_3 = 0.5 * 5; dL/dtau = 2 * 0.5 + 5 * 0.25.
        (0, [1.0, 2.0, 3.0, 2.5, 5.0, 0.0], 2.25, 11.0),
    ],
)
def test_hand_computed_gradients(axis, group_size, grad_x, grad_tau, grad_v_th):
    x = _on_axis([SEQ], axis).requires_grad_()
    tau = torch.tensor([0.5], dtype=torch.float64, requires_grad=True)
    v_th = torch.tensor([1.0], dtype=torch.float64, requires_grad=True)
    y = group_lif(x, tau, v_th, axis=axis, group_size=group_size)
    y.backward(_on_axis([[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]], axis))
    torch.testing.assert_close(x.grad, _on_axis([grad_x], axis), rtol=0, atol=0)
    assert tau.grad.item() == grad_tau
    assert v_th.grad.item() == grad_v_th


SHAPES = [(2, 3, 7, 9), (2, 4, 8, 8), (1, 2, 14, 14), (3, 1, 5, 12)]
GROUP_SIZES = [0, 1, 2, 3, 4, 7]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16])
def test_vectorised_equals_plain_loop(dtype):
    """Forward exactly equal (same arithmetic, float32 membrane for half inputs); gradients close."""
    gen = torch.Generator().manual_seed(1)
    for shape in SHAPES:
        for s in GROUP_SIZES:
            for axis in (2, 3):
                x = (0.5 * torch.randn(shape, generator=gen)).to(dtype)
                g = torch.randn(shape, generator=gen).to(dtype)
                tau0, v_th0 = 0.2 + 0.5 * torch.rand(1, generator=gen), 0.1 * torch.randn(1, generator=gen)
                results = []
                for fn in (group_lif, group_lif_reference):
                    xi = x.clone().requires_grad_()
                    tau = tau0.clone().requires_grad_()
                    v_th = v_th0.clone().requires_grad_()
                    y = fn(xi, tau, v_th, axis, s)
                    y.backward(g)
                    results.append((y.detach(), xi.grad, tau.grad, v_th.grad))
                (y, gx, gt, gv), (y_ref, gx_ref, gt_ref, gv_ref) = results
                where = f"shape {shape}, s={s}, axis={axis}"
                assert y.dtype == dtype
                torch.testing.assert_close(y, y_ref, rtol=0, atol=0, msg=where)
                torch.testing.assert_close(gx, gx_ref, msg=where)
                # None = no gradient path (s = 1 never uses tau; an axis shorter than one group is the
                # identity): the same as a zero gradient.
                zero = torch.zeros(1)
                gt, gt_ref, gv, gv_ref = (zero if t is None else t for t in (gt, gt_ref, gv, gv_ref))
                torch.testing.assert_close(gt, gt_ref, rtol=1e-5, atol=1e-5, msg=where)
                torch.testing.assert_close(gv, gv_ref, rtol=1e-5, atol=1e-5, msg=where)


@pytest.mark.parametrize("dtype, tol", [(torch.float16, 1e-3), (torch.bfloat16, 8e-3), (torch.float32, 1e-6)])
def test_low_precision_against_float64_loop(dtype, tol):
    """The half-precision op stays within the dtype's rounding of the float64 loop on the same input."""
    x = (0.5 * torch.randn(4, 8, 12, 12, generator=torch.Generator().manual_seed(2))).to(dtype)
    for axis in (2, 3):
        y = group_lif(x, 0.25, 0.1, axis, 4)
        y64 = group_lif_reference(x.double(), 0.25, 0.1, axis, 4)
        torch.testing.assert_close(y.double(), y64, rtol=tol, atol=tol)


def test_backward_equals_autograd_at_the_threshold():
    """Ties (u == V_th exactly) and zero inputs: the hand-written backward still equals autograd."""
    x = torch.tensor([[0.1, 0.0, 0.1, 0.2, 0.1, 0.1, 0.0, 0.0]], dtype=torch.float64)[None, None]
    x = x.expand(2, 3, 1, 8).contiguous()
    grads = []
    for fn in (group_lif, group_lif_reference):
        xi = x.clone().requires_grad_()
        tau = torch.tensor([0.25], dtype=torch.float64, requires_grad=True)
        v_th = torch.tensor([0.1], dtype=torch.float64, requires_grad=True)
        fn(xi, tau, v_th, 3, 4).pow(2).sum().backward()
        grads.append((xi.grad, tau.grad, v_th.grad))
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b)


def _membrane_margin(x: torch.Tensor, tau: float, v_th: float, axis: int, s: int) -> float:
    """min |u - V_th| over the grouped positions, with the recurrence written out independently."""
    xm = x.movedim(axis, -1)
    s = s or xm.shape[-1]
    n = (xm.shape[-1] // s) * s
    margin = float("inf")
    for start in range(0, n, s):
        u = torch.zeros_like(xm[..., 0])
        fired = torch.zeros_like(u, dtype=torch.bool)
        for p in range(start, start + s):
            u = tau * u * (~fired) + xm[..., p]
            fired = u > v_th
            margin = min(margin, (u - v_th).abs().min().item())
    return margin


@pytest.mark.parametrize("axis, s", [(2, 4), (3, 4), (3, 0), (2, 3)])
def test_gradcheck_where_firing_is_stable(axis, s):
    """Finite differences agree with the analytic gradient when no perturbation flips a spike.

    The authors' backward treats o_t as a constant, which is the true derivative wherever the firing
    pattern is locally constant; the inputs are chosen with every membrane at least 1e-3 from V_th.
    """
    tau0, v_th0 = 0.3, 0.1
    gen = torch.Generator().manual_seed(3)
    for _ in range(100):
        x = torch.randn(2, 2, 6, 7, generator=gen, dtype=torch.float64)
        if _membrane_margin(x, tau0, v_th0, axis, s) > 1e-3:
            break
    else:
        pytest.fail("no input with a stable firing pattern found")
    x.requires_grad_()
    tau = torch.tensor([tau0], dtype=torch.float64, requires_grad=True)
    v_th = torch.tensor([v_th0], dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, b, c: group_lif(a, b, c, axis, s), (x, tau, v_th), eps=1e-6)


def test_half_precision_keeps_float32_parameters_and_returns_input_dtype():
    lif = GroupLIF(axis=3)
    x = torch.randn(2, 3, 4, 8, dtype=torch.bfloat16, requires_grad=True)
    y = lif(x)
    y.float().sum().backward()
    assert y.dtype == torch.bfloat16 and x.grad.dtype == torch.bfloat16
    assert lif.tau.grad.dtype == torch.float32 and lif.v_th.grad.dtype == torch.float32


def test_identity_cases_return_the_input():
    x = torch.randn(2, 3, 3, 5)
    assert group_lif(x, 0.25, 0.1, 2, -1) is x  # switched off
    assert group_lif(x, 0.25, 0.1, 2, 4) is x  # H = 3 is shorter than one group


def test_module_parameters_match_the_authors_layout():
    lif = GroupLIF(axis=2)
    assert lif.group_size == 4
    assert isinstance(lif.tau, torch.nn.Parameter) and isinstance(lif.v_th, torch.nn.Parameter)
    assert lif.tau.shape == (1,) and lif.v_th.shape == (1,) and lif.tau.dtype == torch.float32
    assert lif.tau.item() == 0.25 and lif.v_th.item() == pytest.approx(0.1)
    assert list(lif.state_dict()) == ["tau", "v_th"]


def test_fixed_tau_and_threshold_are_buffers_with_the_same_keys():
    lif = GroupLIF(axis=3, tau=0.5, v_th=0.2, learn_tau=False, learn_v_th=False)
    assert list(lif.parameters()) == []
    assert sorted(lif.state_dict()) == ["tau", "v_th"]
    x = torch.randn(1, 2, 4, 8, requires_grad=True)
    lif(x).sum().backward()  # no parameter wants a gradient; the input still gets one
    assert x.grad is not None


@pytest.mark.parametrize("axis, s", [(2, 4), (3, 4), (3, 0), (2, 3)])
def test_export_forward_equals_fast_forward(axis, s):
    """The out-of-place forward used while tracing for ONNX computes the same numbers as the fast one."""
    x = torch.randn(2, 3, 7, 11)
    tau, v_th = torch.tensor([0.25]), torch.tensor([0.1])
    groups = x.shape[axis] // (s or x.shape[axis])
    traceable = _scan_traceable(x, tau, v_th, axis, groups, s or x.shape[axis])
    torch.testing.assert_close(traceable, group_lif(x, tau, v_th, axis, s), rtol=0, atol=0)


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (dict(group_size=-2), ValueError, "group_size must be an integer >= -1"),
        (dict(group_size=2.0), ValueError, "group_size must be an integer"),
        (dict(axis=4), ValueError, "axis 4 is out of range"),
        (dict(axis=2.5), ValueError, "axis must be an integer, got 2.5"),
        (dict(axis=True), ValueError, "axis must be an integer"),
        (dict(tau=torch.ones(2)), ValueError, "tau and v_th are scalars"),
    ],
)
def test_bad_arguments_are_named(kwargs, error, match):
    args = dict(x=torch.randn(1, 2, 4, 4), tau=0.25, v_th=0.1, axis=2, group_size=4)
    args.update(kwargs)
    with pytest.raises(error, match=match):
        group_lif(**args)


def test_integer_input_is_refused():
    with pytest.raises(TypeError, match="floating-point input"):
        group_lif(torch.ones(1, 1, 4, 4, dtype=torch.int64), 0.25, 0.1, 2, 4)


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_cuda_equals_cpu(dtype):
    x = (0.5 * torch.randn(2, 8, 14, 14)).to(dtype)
    g = torch.randn(2, 8, 14, 14).to(dtype)
    outs = []
    for device in ("cpu", "cuda"):
        lif = GroupLIF(axis=2).to(device)
        xi = x.to(device).requires_grad_()
        y = lif(xi)
        y.backward(g.to(device))
        outs.append((y.detach().cpu(), xi.grad.cpu(), lif.tau.grad.cpu(), lif.v_th.grad.cpu()))
    (y, gx, gt, gv), (yc, gxc, gtc, gvc) = outs
    torch.testing.assert_close(yc, y)
    torch.testing.assert_close(gxc, gx)
    torch.testing.assert_close(gtc, gt, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(gvc, gv, rtol=1e-4, atol=1e-4)


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("axis, s", [(2, 4), (3, 4), (3, 0), (2, 1)])
def test_triton_operator_on_cuda_equals_the_reference_on_cuda(dtype, axis, s):
    # The same arithmetic on the same device: the forward bit for bit, the gradients close.
    x = (0.5 * torch.randn(2, 8, 15, 13)).to(dtype).cuda()
    g = torch.randn(x.shape).to(dtype).cuda()
    outs = []
    for fn in (group_lif, group_lif_reference):
        xi = x.clone().requires_grad_()
        tau, v_th = (
            torch.tensor([0.37], device="cuda", requires_grad=True),
            torch.tensor([0.05], device="cuda"),
        )
        v_th.requires_grad_()
        y = fn(xi, tau, v_th, axis, s)
        y.backward(g)
        outs.append((y.detach(), xi.grad, tau.grad if s != 1 else torch.zeros(1, device="cuda"), v_th.grad))
    (y, gx, gt, gv), (y_ref, gx_ref, gt_ref, gv_ref) = outs
    assert torch.equal(y, y_ref)
    torch.testing.assert_close(gx, gx_ref)
    torch.testing.assert_close(gt, gt_ref, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(gv, gv_ref, rtol=1e-4, atol=1e-4)
