"""The group LIF of SNN-MLP (CVPR 2022): a full-precision LIF that runs along a spatial axis.

Spatial positions play the role of time steps. The axis (H = 2 or W = 3 of [B, C, H, W]) is cut into
consecutive groups of ``group_size`` positions and, inside each group, with u_{-1} = 0 and o_{-1} = 0:

    u_t = tau * u_{t-1} * (1 - o_{t-1}) + x_t      o_t = [u_t > V_th]      y_t = u_t if o_t else V_th

Positions past the last whole group pass through unchanged; ``group_size = -1`` is the identity and
``group_size = 0`` makes one group of the whole axis (docs/snn_mlp.md#group-lif).

The gradient is the authors' hand-written one: o_t is a constant (there is no surrogate), so

    dL/du_t = o_t g_t + tau (1 - o_t) dL/du_{t+1}       (a reverse scan; dL/dx_t = dL/du_t)
    dL/dtau = sum_t dL/du_t * m_t,   m_t = u_{t-1} (1 - o_{t-1})   (the carried membrane)
    dL/dV_th = sum over positions that did not fire of g_t

which is also exactly what autograd computes through the plain loop, because the comparison u > V_th
carries no gradient. ``group_lif_reference`` is that plain loop, one position at a time; ``group_lif``
is the fast version: on CUDA the Triton operator ``spikemlp::group_lif_forward`` (``ops.triton_group_lif``),
elsewhere the PyTorch scans of ``ops.group_lif``: the groups are a batch dimension and only the
``group_size`` steps are a Python loop, with a custom autograd function that saves only its input (shared
by the H and W ops of a block) instead of the loop's graph, and recomputes the membrane in the backward
pass. Both write the select as max(u, V_th) or its equal (see ``ops.group_lif.scan_forward``). While
tracing for ONNX the forward uses plain Greater/Where nodes instead.

Precision: the membrane is computed in float32 for float16/bfloat16/float32 inputs (float64 stays
float64) and the output is cast back to the input dtype; tau and V_th are float32 parameters. Firing
decisions are therefore the same for a half-precision input as for its float32 copy.
"""

from __future__ import annotations

import numbers

import torch
from torch import nn
from torch.autograd.function import once_differentiable

from ..ops import select
from ..ops.group_lif import group_layout, scan_backward, scan_forward

__all__ = ["group_lif", "group_lif_reference", "GroupLIF"]


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.promote_types(dtype, torch.float32)


def _check_args(x: torch.Tensor, axis: int, group_size: int) -> int:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"group_lif expects a tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(f"group_lif expects a floating-point input, got {x.dtype}; convert with x.float()")
    if x.dim() == 0:
        raise ValueError("group_lif needs an input with at least one axis, got a 0-d tensor")
    if isinstance(axis, bool) or not isinstance(axis, numbers.Integral):  # 2.5 must not become 2
        raise ValueError(f"group_lif axis must be an integer, got {axis!r}")
    if not -x.dim() <= axis < x.dim():
        raise ValueError(
            f"group_lif axis {axis} is out of range for an input of shape {tuple(x.shape)}; "
            "use axis=2 (H) or axis=3 (W) for [B, C, H, W]"
        )
    if isinstance(group_size, bool) or not isinstance(group_size, int) or group_size < -1:
        raise ValueError(
            f"group_lif group_size must be an integer >= -1 (got {group_size!r}); "
            "-1 turns the LIF off, 0 makes one group of the whole axis, 4 is the released setting"
        )
    return axis % x.dim()


def _as_scalar_tensor(value, like: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """tau or V_th as a 1-element tensor in the compute dtype, on the input's device."""
    if isinstance(value, torch.Tensor):
        if value.numel() != 1:
            raise ValueError(
                "group_lif tau and v_th are scalars (one per LIF op); "
                f"got a tensor of shape {tuple(value.shape)}"
            )
        return value.reshape(1).to(device=like.device, dtype=dtype)
    return torch.tensor([float(value)], device=like.device, dtype=dtype)


def _to_steps(x: torch.Tensor, axis: int, groups: int, s: int, dtype: torch.dtype) -> torch.Tensor:
    """The grouped part of the axis as [s, ..., groups, ...]: step t of every group, contiguous."""
    grouped = x.narrow(axis, 0, groups * s).unflatten(axis, (groups, s)).movedim(axis + 1, 0)
    return grouped.to(dtype=dtype, memory_format=torch.contiguous_format)


def _from_steps(steps: torch.Tensor, x: torch.Tensor, axis: int) -> torch.Tensor:
    """Inverse of ``_to_steps``: put the steps back on the axis and append the pass-through rest."""
    grouped = steps.movedim(0, axis + 1).flatten(axis, axis + 1).to(x.dtype)
    n, length = steps.shape[0] * steps.shape[axis + 1], x.shape[axis]
    if n == length:
        return grouped.contiguous()
    return torch.cat([grouped, x.narrow(axis, n, length - n)], dim=axis)


def _scan_traceable(x: torch.Tensor, tau: torch.Tensor, v_th: torch.Tensor, axis: int, groups: int, s: int):
    """Forward built from out-of-place ops only (stack and concatenate), for ONNX export and tracing."""
    xs = _to_steps(x, axis, groups, s, tau.dtype)
    ys = []
    carried = None
    for t in range(s):
        u = xs[t] if carried is None else tau * carried + xs[t]
        fired = u > v_th
        ys.append(torch.where(fired, u, v_th))
        carried = torch.where(fired, 0.0, u)
    return _from_steps(torch.stack(ys), x, axis)


class _GroupLIFFunction(torch.autograd.Function):
    """Exact forward, the authors' backward (o_t constant).

    Only the input is saved (it is usually saved anyway: the H and W ops of a block share it); the
    backward recomputes the membrane with the same operations, so it sees the forward's firing.
    """

    @staticmethod
    def forward(ctx, x, tau, v_th, axis: int, groups: int, s: int):
        ctx.save_for_backward(x, tau, v_th)
        ctx.axis, ctx.groups, ctx.s = axis, groups, s
        return scan_forward(x, tau, v_th, axis, groups, s)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_y):
        x, tau, v_th = ctx.saved_tensors
        grads = scan_backward(x, grad_y, tau, v_th, ctx.axis, ctx.groups, ctx.s, ctx.needs_input_grad[:3])
        return *(g if need else None for g, need in zip(grads, ctx.needs_input_grad)), None, None, None


def group_lif(
    x: torch.Tensor,
    tau: float | torch.Tensor,
    v_th: float | torch.Tensor,
    axis: int,
    group_size: int = 4,
) -> torch.Tensor:
    """The group LIF of SNN-MLP along ``axis`` of ``x`` (any shape; [B, C, H, W] with axis 2 or 3).

    ``tau`` and ``v_th`` are scalars or 1-element tensors (trainable parameters get gradients).
    Runs on any device and in float16, bfloat16, float32 and float64.
    """
    axis = _check_args(x, axis, group_size)
    if group_size == -1:
        return x
    groups, s = group_layout(x.shape[axis], group_size)
    if groups == 0:
        return x  # the axis is shorter than one group: every position passes through
    dtype = _compute_dtype(x.dtype)
    tau_t = tau if isinstance(tau, torch.Tensor) else _as_scalar_tensor(tau, x, torch.float32)
    v_th_t = v_th if isinstance(v_th, torch.Tensor) else _as_scalar_tensor(v_th, x, torch.float32)
    if not torch.jit.is_tracing() and (tau_t.numel() != 1 or v_th_t.numel() != 1):
        raise ValueError(
            "group_lif tau and v_th are scalars (one per LIF op); got tensors of shapes "
            f"{tuple(tau_t.shape)} and {tuple(v_th_t.shape)}"
        )
    if tau_t.device != x.device or v_th_t.device != x.device:
        raise ValueError(
            f"group_lif tau/v_th live on {tau_t.device}/{v_th_t.device} but the input is on {x.device}; "
            "move the module to the input's device"
        )
    # tau and V_th in the compute dtype; .to() is differentiable, so their gradients flow back.
    tau_c, v_th_c = tau_t.reshape(1).to(dtype), v_th_t.reshape(1).to(dtype)
    if torch.jit.is_tracing() or torch.onnx.is_in_onnx_export():
        return _scan_traceable(x, tau_c, v_th_c, axis, groups, s)
    if select.group_lif_kernel_ready(x):  # CUDA: the Triton operator
        return torch.ops.spikemlp.group_lif_forward(x, tau_c, v_th_c, axis, group_size)
    needs_grad = torch.is_grad_enabled() and (x.requires_grad or tau_c.requires_grad or v_th_c.requires_grad)
    if not needs_grad:
        return scan_forward(x, tau_c, v_th_c, axis, groups, s)
    return _GroupLIFFunction.apply(x, tau_c, v_th_c, axis, groups, s)


def group_lif_reference(
    x: torch.Tensor,
    tau: float | torch.Tensor,
    v_th: float | torch.Tensor,
    axis: int,
    group_size: int = 4,
) -> torch.Tensor:
    """The plain loop, one position at a time, differentiated by autograd: the ground truth.

    Same arithmetic and precision as ``group_lif`` (float32 membrane for half-precision inputs), so
    the two agree bit for bit in the forward pass on finite inputs.
    """
    axis = _check_args(x, axis, group_size)
    if group_size == -1:
        return x
    length = x.shape[axis]
    groups, s = group_layout(length, group_size)
    if groups == 0:
        return x
    dtype = _compute_dtype(x.dtype)
    tau_t = (
        _as_scalar_tensor(tau, x, dtype) if not isinstance(tau, torch.Tensor) else tau.reshape(1).to(dtype)
    )
    v_th_t = (
        _as_scalar_tensor(v_th, x, dtype) if not isinstance(v_th, torch.Tensor) else v_th.reshape(1).to(dtype)
    )
    outputs = []
    u = fired = None
    for p in range(length):
        x_p = x.select(axis, p)
        if p >= groups * s:
            outputs.append(x_p)  # past the last whole group: pass through
            continue
        x_p = x_p.to(dtype)
        if p % s == 0:
            u = x_p  # a new group: the membrane restarts at 0
        else:
            u = torch.addcmul(x_p, tau_t, torch.where(fired, 0.0, u))  # x_t + tau * m_t
        fired = u > v_th_t
        outputs.append(torch.where(fired, u, v_th_t).to(x.dtype))
    return torch.stack(outputs, dim=axis)


class GroupLIF(nn.Module):
    """A group LIF op with its own trainable tau and V_th (shape [1], float32, as the authors' keys).

    ``learn_tau=False`` / ``learn_v_th=False`` keep the value fixed (stored as a buffer, so the state
    dict keeps the same keys). ``group_size=-1`` switches the op off (identity).
    """

    def __init__(
        self,
        axis: int,
        group_size: int = 4,
        tau: float = 0.25,
        v_th: float = 0.1,
        learn_tau: bool = True,
        learn_v_th: bool = True,
    ) -> None:
        super().__init__()
        if isinstance(group_size, bool) or not isinstance(group_size, int) or group_size < -1:
            raise ValueError(
                f"GroupLIF group_size must be an integer >= -1 (got {group_size!r}); "
                "-1 turns the LIF off, 0 makes one group of the whole axis, 4 is the released setting"
            )
        self.axis = int(axis)
        self.group_size = group_size
        tau_t = torch.tensor([float(tau)], dtype=torch.float32)
        v_th_t = torch.tensor([float(v_th)], dtype=torch.float32)
        if learn_tau:
            self.tau = nn.Parameter(tau_t)
        else:
            self.register_buffer("tau", tau_t)
        if learn_v_th:
            self.v_th = nn.Parameter(v_th_t)
        else:
            self.register_buffer("v_th", v_th_t)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return group_lif(x, self.tau, self.v_th, self.axis, self.group_size)

    def extra_repr(self) -> str:
        learn_tau, learn_v_th = isinstance(self.tau, nn.Parameter), isinstance(self.v_th, nn.Parameter)
        return (
            f"axis={self.axis}, group_size={self.group_size}, learn_tau={learn_tau}, learn_v_th={learn_v_th}"
        )
