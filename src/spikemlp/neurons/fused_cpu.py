"""The fused CPU backend's Python entry points (kept for existing callers); the kernel and its
operators live in ``spikemlp.ops.lif``."""

from __future__ import annotations

import torch

from ..ops import lif as _ops
from .neuron_spec import NeuronSpec

DTYPE_CODES = _ops.DTYPE_CODES
DTYPES = _ops.DTYPES


def unavailable_reason() -> str | None:
    """Build or load the kernel once per process; None if it is ready, else why it cannot be used."""
    return _ops.unavailable_reason()


def forward_kernel(x_seq: torch.Tensor, tau: float, spec: NeuronSpec, return_membrane: bool = False):
    """The forward operator on x_seq [T, ...], no autograd: (spikes, membrane or None)."""
    with torch.no_grad():
        out = _ops.run(x_seq, tau, spec, return_membrane)
    return out if return_membrane else (out, None)


def backward_from_input(x_seq, grad_spikes, grad_v, tau: float, spec: NeuronSpec, want_tau: bool = False):
    """dL/dX (and dL/dtau, fp64, if ``want_tau``) from the forward's input X [T, ...] and dL/dS (and
    dL/dV); the charge is recomputed from X inside the kernel."""
    return _ops.backward(x_seq, grad_spikes, grad_v, tau, spec, want_tau)


def lif_fused_cpu(
    x_seq: torch.Tensor, tau: float | torch.Tensor | None, spec: NeuronSpec, return_membrane: bool = False
):
    """Run the fused operator; ``tau`` is a float, a 0-dim tensor (learnable) or None for IF."""
    return _ops.run(x_seq, tau, spec, return_membrane)
