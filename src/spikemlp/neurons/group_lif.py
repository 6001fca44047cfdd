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
is the fast version: the groups are a batch dimension and only the ``group_size`` steps are a Python
loop, with a custom autograd function that saves only its input (shared by the H and W ops of a block)
instead of the loop's graph, and recomputes the membrane in the backward pass. It writes the select
and the reset as max(u, V_th) and u * (1 - o) with a 0/1 mask held as numbers (several times faster on
the CPU than boolean selects); this is the same for every finite membrane (see ``_scan_fast``). While
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


def _group_layout(length: int, group_size: int) -> tuple[int, int]:
    """(number of whole groups, group size) for an axis of this length; group_size 0 = the whole axis."""
    s = length if group_size == 0 else group_size
    if s <= 0:
        return 0, 0
    return length // s, s


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


def _step_views(t: torch.Tensor, axis: int, groups: int, s: int) -> torch.Tensor:
    """A view of the grouped part of ``t`` with the in-group step on dimension ``axis + 1``."""
    return t.narrow(axis, 0, groups * s).unflatten(axis, (groups, s))


def _membranes(x: torch.Tensor, tau: torch.Tensor, v_th: torch.Tensor, axis: int, groups: int, s: int):
    """Yield (u_t, silent_t, m_t) for t = 0..s-1 over all groups at once.

    silent_t = 1 - o_t as 0/1 numbers in the compute dtype; m_t is the membrane carried into step t
    (None for t = 0: the membrane starts at 0 in every group, so u_0 = x_0 exactly). Works on strided
    views of x (no reordering copy), in the compute dtype of tau.
    """
    xg = _step_views(x, axis, groups, s)
    carried = None
    for t in range(s):
        x_t = xg.select(axis + 1, t)
        u = x_t.to(tau.dtype) if carried is None else torch.addcmul(x_t, tau, carried)  # x_t + tau * m_t
        # The mask as numbers, not booleans: comparisons into a float tensor and multiplications are
        # vectorised on the CPU, where torch.where/masked_fill with a boolean mask run several times slower.
        silent = torch.le(u, v_th, out=torch.empty_like(u))  # not u > V_th: the threshold is strict
        yield u, silent, carried
        if t < s - 1:
            carried = u * silent  # a neuron that fired resets to 0


def _scan_fast(x: torch.Tensor, tau: torch.Tensor, v_th: torch.Tensor, axis: int, groups: int, s: int):
    """Forward that writes each step straight into the output.

    y_t = max(u_t, V_th) equals "u_t if u_t > V_th else V_th" for every number (up to the sign of an
    exact zero when u_t = V_th = 0). A NaN membrane propagates NaN here where the spec's select would
    output V_th; the masked products below likewise turn an infinite membrane into NaN. Both only occur
    in a training run that has already diverged.
    """
    out = torch.empty_like(x, memory_format=torch.contiguous_format)
    og = _step_views(out, axis, groups, s)
    same_dtype = out.dtype == tau.dtype
    for t, (u, _, _) in enumerate(_membranes(x, tau, v_th, axis, groups, s)):
        if same_dtype:
            torch.clamp_min(u, v_th, out=og.select(axis + 1, t))
        else:
            og.select(axis + 1, t).copy_(torch.clamp_min(u, v_th))
    n = groups * s
    if n < x.shape[axis]:
        out.narrow(axis, n, x.shape[axis] - n).copy_(x.narrow(axis, n, x.shape[axis] - n))
    return out


class _GroupLIFFunction(torch.autograd.Function):
    """Exact forward, the authors' backward (o_t constant).

    Only the input is saved (it is usually saved anyway: the H and W ops of a block share it); the
    backward recomputes the membrane with the same operations, so it sees the forward's firing.
    """

    @staticmethod
    def forward(ctx, x, tau, v_th, axis: int, groups: int, s: int):
        ctx.save_for_backward(x, tau, v_th)
        ctx.axis, ctx.groups, ctx.s = axis, groups, s
        return _scan_fast(x, tau, v_th, axis, groups, s)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_y):
        x, tau, v_th = ctx.saved_tensors
        axis, groups, s = ctx.axis, ctx.groups, ctx.s
        steps = list(_membranes(x, tau, v_th, axis, groups, s))
        gg = _step_views(grad_y, axis, groups, s)

        need_x, need_tau, need_v_th = ctx.needs_input_grad[:3]
        grad_x = torch.empty_like(x, memory_format=torch.contiguous_format) if need_x else None
        gx = _step_views(grad_x, axis, groups, s) if need_x else None
        grad_tau = torch.zeros((), dtype=tau.dtype, device=tau.device)
        grad_v_th = torch.zeros((), dtype=tau.dtype, device=tau.device)
        acc = None
        for t in range(s - 1, -1, -1):
            u, silent, carried = steps[t]
            g_t = gg.select(axis + 1, t).to(tau.dtype)
            g_silent = g_t * silent
            fired_g = g_t - g_silent  # o_t g_t (exact: either g_t - 0 or g_t - g_t)
            if acc is None:
                acc = fired_g  # the last step: a silent neuron outputs V_th only
            else:
                # dL/du_t = o_t g_t + tau (1 - o_t) dL/du_{t+1}: a reset cuts the path to later steps.
                acc = torch.addcmul(fired_g, tau, acc * silent)
            if need_x:
                gx.select(axis + 1, t).copy_(acc)
            if need_tau and carried is not None:
                grad_tau += (acc * carried).sum()  # dL/du_t * m_t
            if need_v_th:
                grad_v_th += g_silent.sum()
        if need_x:
            n = groups * s
            if n < x.shape[axis]:
                rest = x.shape[axis] - n
                grad_x.narrow(axis, n, rest).copy_(grad_y.narrow(axis, n, rest))
        return (
            grad_x,
            grad_tau.reshape(1) if need_tau else None,
            grad_v_th.reshape(1) if need_v_th else None,
            None,
            None,
            None,
        )


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
    groups, s = _group_layout(x.shape[axis], group_size)
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
    needs_grad = torch.is_grad_enabled() and (x.requires_grad or tau_c.requires_grad or v_th_c.requires_grad)
    if not needs_grad:
        return _scan_fast(x, tau_c, v_th_c, axis, groups, s)
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
    groups, s = _group_layout(length, group_size)
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
