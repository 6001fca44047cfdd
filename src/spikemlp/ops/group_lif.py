"""SNN-MLP's group LIF (``spikemlp.neurons.group_lif``) as two ``torch.library`` operators:
``spikemlp::group_lif_forward`` and ``spikemlp::group_lif_backward``.

The CPU implementation is plain PyTorch: the scans below, in which the groups are a batch dimension and
only the in-group steps are a Python loop (``neurons.group_lif`` also runs them directly on the CPU,
through its own autograd function). The CUDA implementation is the Triton kernel in
``triton_group_lif`` (registered when triton imports). Each operator has a fake implementation, and the
forward has registered autograd whose backward calls ``group_lif_backward`` (the authors' hand-written
gradient): under torch.compile each is one node of the graph.

The operators take x (any shape; the LIF runs along ``axis``), tau and V_th as 1-element tensors in the
compute dtype (float32; float64 for a float64 input) and the group size (0: one group of the whole axis;
``group_lif`` has already handled -1 and axes shorter than one group). Only x is saved for the backward,
which recomputes the membrane.
"""

from __future__ import annotations

import torch


def group_layout(length: int, group_size: int) -> tuple[int, int]:
    """(number of whole groups, group size) for an axis of this length; group_size 0 = the whole axis."""
    s = length if group_size == 0 else group_size
    if s <= 0:
        return 0, 0
    return length // s, s


def _step_views(t: torch.Tensor, axis: int, groups: int, s: int) -> torch.Tensor:
    """A view of the grouped part of ``t`` with the in-group step on dimension ``axis + 1``."""
    return t.narrow(axis, 0, groups * s).unflatten(axis, (groups, s))


def _copy_rest(out: torch.Tensor, src: torch.Tensor, axis: int, n: int) -> None:
    """Positions past the last whole group pass through (values forward, gradients backward)."""
    if n < src.shape[axis]:
        out.narrow(axis, n, src.shape[axis] - n).copy_(src.narrow(axis, n, src.shape[axis] - n))


def membranes(x: torch.Tensor, tau: torch.Tensor, v_th: torch.Tensor, axis: int, groups: int, s: int):
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


def scan_forward(x: torch.Tensor, tau: torch.Tensor, v_th: torch.Tensor, axis: int, groups: int, s: int):
    """Forward that writes each step straight into the output.

    y_t = max(u_t, V_th) equals "u_t if u_t > V_th else V_th" for every number (up to the sign of an
    exact zero when u_t = V_th = 0). A NaN membrane propagates NaN here where the spec's select would
    output V_th; the masked products likewise turn an infinite membrane into NaN. Both only occur in a
    training run that has already diverged.
    """
    out = torch.empty_like(x, memory_format=torch.contiguous_format)
    og = _step_views(out, axis, groups, s)
    same_dtype = out.dtype == tau.dtype
    for t, (u, _, _) in enumerate(membranes(x, tau, v_th, axis, groups, s)):
        if same_dtype:
            torch.clamp_min(u, v_th, out=og.select(axis + 1, t))
        else:
            og.select(axis + 1, t).copy_(torch.clamp_min(u, v_th))
    _copy_rest(out, x, axis, groups * s)
    return out


def scan_backward(x, grad_y, tau, v_th, axis: int, groups: int, s: int, needs=(True, True, True)):
    """(dL/dx or None, dL/dtau [1], dL/dV_th [1]): the reverse scan of the module docs of
    ``neurons.group_lif``, with the membrane recomputed by the forward's operations."""
    need_x, need_tau, need_v_th = needs
    steps = list(membranes(x, tau, v_th, axis, groups, s))
    gg = _step_views(grad_y, axis, groups, s)
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
        _copy_rest(grad_x, grad_y, axis, groups * s)
    return grad_x, grad_tau.reshape(1), grad_v_th.reshape(1)


# --- the operators -------------------------------------------------------------------------------------


@torch.library.custom_op("spikemlp::group_lif_forward", mutates_args=(), device_types="cpu")
def group_lif_forward(
    x: torch.Tensor, tau: torch.Tensor, v_th: torch.Tensor, axis: int, group_size: int
) -> torch.Tensor:
    """The group LIF's output y (x's shape and dtype, contiguous)."""
    return scan_forward(x, tau, v_th, axis, *group_layout(x.shape[axis], group_size))


@group_lif_forward.register_fake
def _(x, tau, v_th, axis, group_size):
    return torch.empty_like(x, memory_format=torch.contiguous_format)


@torch.library.custom_op("spikemlp::group_lif_backward", mutates_args=(), device_types="cpu")
def group_lif_backward(
    x: torch.Tensor, grad_y: torch.Tensor, tau: torch.Tensor, v_th: torch.Tensor, axis: int, group_size: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(dL/dx, dL/dtau, dL/dV_th) from the forward's input x and dL/dy."""
    return scan_backward(x, grad_y, tau, v_th, axis, *group_layout(x.shape[axis], group_size))


@group_lif_backward.register_fake
def _(x, grad_y, tau, v_th, axis, group_size):
    return (
        torch.empty_like(x, memory_format=torch.contiguous_format),
        torch.empty_like(tau),
        torch.empty_like(v_th),
    )


def _setup_context(ctx, inputs, output) -> None:
    x, tau, v_th, ctx.axis, ctx.group_size = inputs
    ctx.save_for_backward(x, tau, v_th)


def _forward_backward(ctx, grad_y):
    x, tau, v_th = ctx.saved_tensors
    grads = group_lif_backward(x, grad_y, tau, v_th, ctx.axis, ctx.group_size)
    return *(g if need else None for g, need in zip(grads, ctx.needs_input_grad)), None, None


group_lif_forward.register_autograd(_forward_backward, setup_context=_setup_context)
