"""Multi-step LIF and IF neurons as stateless modules.

A node takes [T, ...] and returns spikes [T, ...]; the membrane lives only inside the call (after
Norse), so there is nothing to reset between batches and the module is safe under DDP and
torch.compile. ``backend`` picks the implementation; all backends compute the same arithmetic.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .._checks import check_real
from ..ops.select import check_backend_name, run_neuron
from . import surrogate as sg
from .neuron_spec import CHARGE_DECAY_INPUT, CHARGE_IF, CHARGE_NO_DECAY, NeuronSpec
from .spike_storage import mark_binary


def _check_input(x_seq: torch.Tensor, name: str) -> None:
    if not isinstance(x_seq, torch.Tensor):
        raise TypeError(f"{name} expects a tensor [T, ...], got {type(x_seq).__name__}")
    if x_seq.dim() < 2:
        raise ValueError(
            f"{name} expects input with a leading time axis [T, ...] (at least 2 dims), got shape "
            f"{tuple(x_seq.shape)}; add the time axis, e.g. x.unsqueeze(0).repeat(T, 1, ...)"
        )
    if x_seq.shape[0] == 0:
        raise ValueError(f"{name} got T = 0 time steps (shape {tuple(x_seq.shape)}); T must be at least 1")
    if not x_seq.is_floating_point():
        raise TypeError(f"{name} expects a floating-point input, got {x_seq.dtype}; convert with x.float()")


def _mark_spikes(out):
    """Declare the spikes binary, so that autograd may keep them compactly (``spike_storage``)."""
    mark_binary(out[0] if isinstance(out, tuple) else out)
    return out


def lif_spec(lif: LIF) -> NeuronSpec:
    """What an LIF layer computes, as the fused kernels take it."""
    mode = CHARGE_DECAY_INPUT if lif.decay_input else CHARGE_NO_DECAY
    return NeuronSpec(mode, float(lif.v_threshold), lif.v_reset, bool(lif.detach_reset), lif.surrogate)


class LIF(nn.Module):
    """Multi-step leaky integrate-and-fire neuron.

    Charge H[t] = V[t-1] + (X[t] - (V[t-1] - V_reset)) / tau (decay_input) or
    H[t] = V[t-1] - (V[t-1] - V_reset) / tau + X[t]; spike S[t] = Heaviside(H[t] - V_th);
    reset V[t] = H[t] (1 - S[t]) + V_reset S[t] (hard) or H[t] - V_th S[t] (v_reset=None, soft).
    The defaults equal SpikingJelly's LIFNode(tau=2.0, detach_reset=True) and MLP-SPE's neuron.

    ``backend``: "auto" (the fused kernel for the tensor's device: "cpp" on CPU, "triton" on CUDA; the
    reference where none applies, with one warning if a kernel cannot run), "reference", "cpp" or
    "triton" (an error saying why if it cannot run). All give the same spikes and membranes as the
    reference. ``learnable_tau``: PLIF-style tau = 1 / sigmoid(w), trained with the network.
    ``return_membrane``: also return the membrane after reset, [T, ...], for analysis.
    """

    def __init__(
        self,
        tau: float = 2.0,
        v_threshold: float = 1.0,
        v_reset: float | None = 0.0,
        detach_reset: bool = True,
        surrogate: str | sg.Surrogate | None = None,
        decay_input: bool = True,
        learnable_tau: bool = False,
        backend: str = "auto",
        return_membrane: bool = False,
    ) -> None:
        super().__init__()
        check_backend_name(backend)
        tau = check_real(tau, "LIF tau", above=1.0)  # a NaN tau would never spike
        self.v_threshold = check_real(v_threshold, "LIF v_threshold")
        self.v_reset = None if v_reset is None else float(v_reset)
        self.detach_reset = bool(detach_reset)
        self.surrogate = sg.get(surrogate)
        self.decay_input = bool(decay_input)
        self.backend = backend
        self.return_membrane = return_membrane
        # PLIF: 1/tau = sigmoid(w), w initialised so that tau starts at the given value.
        self.tau_logit = nn.Parameter(torch.tensor(-math.log(tau - 1.0))) if learnable_tau else None
        if not learnable_tau:
            self.tau = float(tau)

    def current_tau(self) -> float | torch.Tensor:
        """tau as a float, or as a 0-dim tensor (1 / sigmoid(tau_logit)) when it is learnable."""
        return self.tau if self.tau_logit is None else 1.0 / torch.sigmoid(self.tau_logit)

    def forward(self, x_seq: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Spikes [T, ...] (same dtype as the input), or (spikes, membrane after reset) if return_membrane."""
        _check_input(x_seq, "LIF")
        if self.tau_logit is not None and self.tau_logit.device != x_seq.device:
            raise ValueError(
                f"LIF input is on {x_seq.device} but its learnable tau is on {self.tau_logit.device}; move "
                f"the module to the input's device with .to({str(x_seq.device)!r})"
            )
        out = run_neuron(x_seq, self.current_tau(), lif_spec(self), self.backend, self.return_membrane)
        return _mark_spikes(out)

    def extra_repr(self) -> str:
        tau = "learnable" if self.tau_logit is not None else self.tau
        return (
            f"tau={tau}, v_threshold={self.v_threshold}, v_reset={self.v_reset}, "
            f"detach_reset={self.detach_reset}, surrogate={self.surrogate}, backend={self.backend}"
        )


class IF(nn.Module):
    """Multi-step integrate-and-fire neuron: H[t] = V[t-1] + X[t], then fire and reset as LIF.

    ``backend`` as for :class:`LIF`.
    """

    def __init__(
        self,
        v_threshold: float = 1.0,
        v_reset: float | None = 0.0,
        detach_reset: bool = True,
        surrogate: str | sg.Surrogate | None = None,
        return_membrane: bool = False,
        backend: str = "auto",
    ) -> None:
        super().__init__()
        check_backend_name(backend)
        self.v_threshold = float(v_threshold)
        self.v_reset = None if v_reset is None else float(v_reset)
        self.detach_reset = bool(detach_reset)
        self.surrogate = sg.get(surrogate)
        self.return_membrane = return_membrane
        self.backend = backend

    def forward(self, x_seq: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        _check_input(x_seq, "IF")
        spec = NeuronSpec(
            CHARGE_IF, float(self.v_threshold), self.v_reset, bool(self.detach_reset), self.surrogate
        )
        return _mark_spikes(run_neuron(x_seq, None, spec, self.backend, self.return_membrane))

    def extra_repr(self) -> str:
        return (
            f"v_threshold={self.v_threshold}, v_reset={self.v_reset}, detach_reset={self.detach_reset}, "
            f"surrogate={self.surrogate}, backend={self.backend}"
        )
