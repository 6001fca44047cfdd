"""Backend dispatch for the multi-step LIF and IF neurons.

Backends (all compute the same arithmetic; ``reference`` is the ground truth the others are tested against):

- ``reference``: plain PyTorch loop over T, differentiated by autograd (any device, dtype, surrogate).
- ``cpp``: the ``spikemlp::lif_forward`` operator's C++ kernel for CPU tensors (fp32, fp64, bf16, fp16),
  forward and backward in one pass each.
- ``triton``: the same operator's Triton kernel for CUDA tensors (fp32, bf16, fp16).

``auto`` picks the fused backend for the tensor's device, also under torch.compile (the operator is one
node of the graph). The choice, with its fallbacks and errors, is made in ``spikemlp.ops.select``.
"""

from __future__ import annotations

import torch

from ..ops.select import BACKENDS, TRITON_DTYPES, check_backend_name, run_neuron, select_backend
from .neuron_spec import CHARGE_DECAY_INPUT, CHARGE_IF, CHARGE_NO_DECAY, NeuronSpec
from .surrogate import Surrogate

__all__ = ["BACKENDS", "TRITON_DTYPES", "check_backend_name", "run_if", "run_lif", "select_backend"]


def run_lif(
    x_seq: torch.Tensor,
    *,
    tau: float | torch.Tensor,
    v_threshold: float,
    v_reset: float | None,
    decay_input: bool,
    detach_reset: bool,
    surrogate: Surrogate,
    backend: str = "auto",
    return_membrane: bool = False,
):
    """Multi-step LIF over x_seq [T, ...] on the chosen backend; spikes (and membrane) [T, ...]."""
    mode = CHARGE_DECAY_INPUT if decay_input else CHARGE_NO_DECAY
    spec = NeuronSpec(mode, float(v_threshold), v_reset, bool(detach_reset), surrogate)
    return run_neuron(x_seq, tau, spec, backend, return_membrane)


def run_if(
    x_seq: torch.Tensor,
    *,
    v_threshold: float,
    v_reset: float | None,
    detach_reset: bool,
    surrogate: Surrogate,
    backend: str = "auto",
    return_membrane: bool = False,
):
    """Multi-step IF (H = V + X) over x_seq [T, ...] on the chosen backend."""
    spec = NeuronSpec(CHARGE_IF, float(v_threshold), v_reset, bool(detach_reset), surrogate)
    return run_neuron(x_seq, None, spec, backend, return_membrane)
