"""The plain-PyTorch multi-step LIF: a loop over T, differentiated by autograd.

This is the ground truth that every fast backend is tested against. The charge, fire and reset
arithmetic is written once here, in the order SpikingJelly uses, so that other backends can repeat the
same floating-point operations and produce identical spikes.
"""

from __future__ import annotations

import torch

from .surrogate import Surrogate


def _multi_step(x_seq, charge, v_threshold, v_reset, detach_reset, surrogate, return_membrane):
    """The loop over T of both neurons: H = charge(V, X), then fire and reset."""
    v = _initial_membrane(x_seq[0], 0.0 if v_reset is None else v_reset)
    spikes, membranes = [], []
    for x in x_seq:
        h = charge(v, x)
        s = surrogate.spike(h - v_threshold)
        s_r = s.detach() if detach_reset else s
        if v_reset is None:
            v = h - s_r * v_threshold
        else:
            v = h * (1.0 - s_r) + v_reset * s_r if v_reset != 0.0 else h * (1.0 - s_r)
        spikes.append(s)
        if return_membrane:
            membranes.append(v)
    s_seq = torch.stack(spikes)
    return (s_seq, torch.stack(membranes)) if return_membrane else s_seq


def _initial_membrane(x: torch.Tensor, value: float) -> torch.Tensor:
    """A membrane of ``value`` shaped as ``x``. The ONNX tracer records ``full_like`` with the traced
    shape as a constant, so while tracing it is computed from ``x`` (its batch axis stays dynamic)."""
    return x * 0.0 + value if torch.jit.is_tracing() else torch.full_like(x, value)


def lif_reference(
    x_seq: torch.Tensor,
    tau: float | torch.Tensor,
    v_threshold: float,
    v_reset: float | None,
    decay_input: bool,
    detach_reset: bool,
    surrogate: Surrogate,
    return_membrane: bool = False,
):
    """Multi-step LIF over x_seq [T, ...]; returns spikes [T, ...] (and the membrane after reset)."""
    to_zero = v_reset is None or v_reset == 0.0

    def charge(v, x):
        if decay_input:
            return v + (x - v) / tau if to_zero else v + (x - (v - v_reset)) / tau
        return v - v / tau + x if to_zero else v - (v - v_reset) / tau + x

    return _multi_step(x_seq, charge, v_threshold, v_reset, detach_reset, surrogate, return_membrane)


def if_reference(x_seq, v_threshold, v_reset, detach_reset, surrogate, return_membrane=False):
    """Multi-step integrate-and-fire (no leak): H = V + X."""
    return _multi_step(
        x_seq, lambda v, x: v + x, v_threshold, v_reset, detach_reset, surrogate, return_membrane
    )
