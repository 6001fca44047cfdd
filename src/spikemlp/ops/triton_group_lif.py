"""The Triton kernels of SNN-MLP's group LIF: the CUDA implementation of the ``spikemlp::group_lif_forward``
/ ``group_lif_backward`` operators (``ops.group_lif``), registered here when triton imports.

x is read as [outer, L, inner] (L: the LIF's axis). One lane is one group of one (outer, inner) pair; a
program handles BLOCK lanes and walks the group's s steps with the membrane in registers (u_t = x_t +
tau * m_t, m_t = u_{t-1} if it did not fire else 0, y_t = u_t if u_t > V_th else V_th). The backward
walks the group twice: forward, writing the membrane u_t (float32) into a work buffer, then backward,
reading it to form dL/du_t = o_t g_t + tau (1 - o_t) dL/du_{t+1}, dL/dtau = sum dL/du_t m_t and
dL/dV_th = sum (1 - o_t) g_t (partial sums per program, added on the host in float64). tau and V_th are
read from device memory (no host synchronisation).

The arithmetic is PyTorch's on the tensor's device (``ops.group_lif``'s scans and
``neurons.group_lif.group_lif_reference``): float32, the charge x + tau * m fused on the CPU (the
interpreter) and not on CUDA, FMA contraction otherwise off, the output rounded once to the input's
dtype; so the forward equals the reference bit for bit and the gradients differ only by the summation
order of dL/dtau and dL/dV_th.
Offsets are int64 (lanes are int64 from the program id on; a group's positions are reached by adding the
int64 stride): a tensor past 2^31 elements is indexed correctly. The kernels run on CPU tensors in
Triton's interpreter (TRITON_INTERPRET=1), which is how they are tested without a GPU.
"""

from __future__ import annotations

import math

import torch

from .group_lif import _copy_rest, group_layout, scan_backward, scan_forward
from .triton_lif import _ROUND_CODES, triton

BLOCK = 256

if triton is not None:
    import triton.language as tl

    from .triton_lif import _round

    @triton.jit
    def _group_start(lane, inner, groups, s, length):
        # The offset of a lane's first position: lanes run over (outer, group, inner), inner fastest.
        i = lane % inner
        og = lane // inner
        return ((og // groups) * length + (og % groups) * s) * inner + i

    @triton.jit
    def _charge(x, tau, m, FMA: tl.constexpr):
        # u = x + tau * m as PyTorch's addcmul computes it: one rounding on the CPU (a fused multiply-add;
        # here exact products in float64, whose second rounding to float32 almost never differs), two on
        # CUDA (ATen's kernel rounds the product first).
        if FMA:
            return (x.to(tl.float64) + tau.to(tl.float64) * m.to(tl.float64)).to(tl.float32)
        else:
            return x + tau * m

    @triton.jit
    def _group_lif_forward_kernel(
        x_ptr, y_ptr, tau_ptr, v_th_ptr, lanes, inner, groups, s, length,
        ROUND: tl.constexpr, FMA: tl.constexpr, BLOCK: tl.constexpr,
    ):  # fmt: skip
        lane = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
        mask = lane < lanes
        off = _group_start(lane, inner, groups, s, length)
        tau = tl.load(tau_ptr).to(tl.float32)
        v_th = tl.load(v_th_ptr).to(tl.float32)
        m = tl.zeros([BLOCK], dtype=tl.float32)
        for _ in range(s):
            u = _charge(tl.load(x_ptr + off, mask=mask, other=0.0).to(tl.float32), tau, m, FMA)
            fired = u > v_th
            y = _round(tl.where(fired, u, v_th), ROUND)
            tl.store(y_ptr + off, y.to(y_ptr.dtype.element_ty), mask=mask)
            m = tl.where(fired, 0.0, u)
            off += inner

    @triton.jit
    def _group_lif_backward_kernel(
        x_ptr, gy_ptr, work_ptr, gx_ptr, partial_ptr, tau_ptr, v_th_ptr, lanes, inner, groups, s, length,
        ROUND: tl.constexpr, FMA: tl.constexpr, BLOCK: tl.constexpr,
    ):  # fmt: skip
        pid = tl.program_id(0)
        lane = pid.to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
        mask = lane < lanes
        off = _group_start(lane, inner, groups, s, length)
        tau = tl.load(tau_ptr).to(tl.float32)
        v_th = tl.load(v_th_ptr).to(tl.float32)
        m = tl.zeros([BLOCK], dtype=tl.float32)
        for _ in range(s):  # the forward again, keeping u_t (work may be gx itself in float32)
            u = _charge(tl.load(x_ptr + off, mask=mask, other=0.0).to(tl.float32), tau, m, FMA)
            tl.store(work_ptr + off, u, mask=mask)
            m = tl.where(u > v_th, 0.0, u)
            off += inner
        acc = tl.zeros([BLOCK], dtype=tl.float32)
        tau_acc = tl.zeros([BLOCK], dtype=tl.float32)
        v_th_acc = tl.zeros([BLOCK], dtype=tl.float32)
        for k in range(s):  # t = s - 1 - k
            off -= inner
            u = tl.load(work_ptr + off, mask=mask, other=0.0)
            silent = tl.where(u > v_th, 0.0, 1.0)
            g = tl.load(gy_ptr + off, mask=mask, other=0.0).to(tl.float32)
            g_silent = g * silent
            acc = (g - g_silent) + tau * (acc * silent)  # as ops.group_lif.scan_backward
            # m_t from u_{t-1}, still in the work buffer (overwritten only at step t - 1)
            has_prev = mask & (k < s - 1)
            u_prev = tl.load(work_ptr + off - inner, mask=has_prev, other=0.0)
            tau_acc += acc * tl.where(has_prev & (u_prev <= v_th), u_prev, 0.0)
            v_th_acc += g_silent
            tl.store(gx_ptr + off, _round(acc, ROUND).to(gx_ptr.dtype.element_ty), mask=mask)
        tl.store(partial_ptr + 2 * pid, tl.sum(tau_acc, axis=0))
        tl.store(partial_ptr + 2 * pid + 1, tl.sum(v_th_acc, axis=0))


def _launch(kernel, x: torch.Tensor, axis: int, group_size: int, *tensors) -> None:
    """Run ``kernel`` over the groups of x (contiguous) with these tensor arguments (one program per
    BLOCK lanes; none when the axis holds no whole group)."""
    length = x.shape[axis]
    groups, s = group_layout(length, group_size)
    inner = math.prod(x.shape[axis + 1 :])
    lanes = math.prod(x.shape[:axis]) * groups * inner
    programs = triton.cdiv(lanes, BLOCK)
    if programs:
        kernel[(programs,)](
            *tensors, lanes, inner, groups, s, length, ROUND=_ROUND_CODES[x.dtype],
            FMA=x.device.type == "cpu", BLOCK=BLOCK, enable_fp_fusion=False,
        )  # fmt: skip


def group_lif_forward_triton(x, tau, v_th, axis: int, group_size: int) -> torch.Tensor:
    """The forward kernel on x's device (CUDA, or CPU tensors under TRITON_INTERPRET=1)."""
    layout = group_layout(x.shape[axis], group_size)
    if x.dtype not in _ROUND_CODES:  # float64: the PyTorch scan, on any device
        return scan_forward(x, tau, v_th, axis, *layout)
    x = x.contiguous()
    y = torch.empty_like(x)
    _launch(_group_lif_forward_kernel, x, axis, group_size, x, y, tau, v_th)
    _copy_rest(y, x, axis, layout[0] * layout[1])
    return y


def group_lif_backward_triton(x, grad_y, tau, v_th, axis: int, group_size: int):
    """(dL/dx, dL/dtau, dL/dV_th) by the backward kernel."""
    layout = group_layout(x.shape[axis], group_size)
    if x.dtype not in _ROUND_CODES:
        return scan_backward(x, grad_y, tau, v_th, axis, *layout)
    x, grad_y = x.contiguous(), grad_y.to(x.dtype).contiguous()
    grad_x = torch.empty_like(x)
    work = grad_x if x.dtype == torch.float32 else torch.empty(x.shape, dtype=torch.float32, device=x.device)
    partials = torch.zeros(triton.cdiv(max(x.numel(), 1), BLOCK), 2, dtype=torch.float32, device=x.device)
    _launch(_group_lif_backward_kernel, x, axis, group_size, x, grad_y, work, grad_x, partials, tau, v_th)
    _copy_rest(grad_x, grad_y, axis, layout[0] * layout[1])
    sums = partials.sum(0, dtype=torch.float64)
    return grad_x, sums[:1].to(tau.dtype), sums[1:].to(v_th.dtype)


if triton is not None:
    torch.library.register_kernel("spikemlp::group_lif_forward", "cuda")(group_lif_forward_triton)
    torch.library.register_kernel("spikemlp::group_lif_backward", "cuda")(group_lif_backward_triton)
