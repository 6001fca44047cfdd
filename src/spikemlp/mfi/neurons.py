"""The LIF neuron after a folded BatchNorm: an affine input map moved into a per-neuron threshold.

The LIF charge, fire and reset are linear in (membrane, input) apart from the comparison with the
threshold, so dividing everything by k = |a| changes no spike (docs/mlp_spe.md#network):

    LIF(a z + d; V_th, V_reset)  ==  LIF(sign(a) z + d / k; V_th / k, V_reset / k)

sign(a) z is z, -z or 0 (no multiplication); where a = 0 the input is the constant d and k is taken as 1.
"""

from __future__ import annotations

import torch
from torch import nn

from ..neurons import LIF


def apply_sign(sign: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """sign * z for sign in {-1, 0, 1}, as a selection (negate or zero), not a multiplication."""
    return torch.where(
        sign > 0, z, torch.where(sign < 0, -z, torch.zeros((), dtype=z.dtype, device=z.device))
    )


class ThresholdLIF(nn.Module):
    """Multi-step LIF on ``sign * x + bias`` with a per-neuron threshold (and reset), for inference.

    ``sign``, ``bias``, ``threshold`` and ``reset`` broadcast against one step of the input [B, ...].
    The arithmetic repeats ``spikemlp.neurons.reference.lif_reference`` step for step.
    """

    def __init__(
        self,
        tau: float,
        decay_input: bool,
        sign: torch.Tensor,
        bias: torch.Tensor,
        threshold: torch.Tensor,
        reset: torch.Tensor | None,
    ) -> None:
        super().__init__()
        self.tau = float(tau)
        self.decay_input = bool(decay_input)
        self.register_buffer("sign", sign)
        self.register_buffer("bias", bias)
        self.register_buffer("threshold", threshold)
        self.register_buffer("reset", reset)

    @classmethod
    def from_lif(cls, lif: LIF, scale: torch.Tensor, shift: torch.Tensor) -> ThresholdLIF:
        """The neuron equal to ``lif(scale * z + shift)`` as a function of z (scale, shift broadcastable)."""
        if not isinstance(lif, LIF):
            raise TypeError(f"can only fold a BatchNorm into an spikemlp LIF, got {type(lif).__name__}")
        tau = lif.current_tau()
        tau = float(tau.detach()) if isinstance(tau, torch.Tensor) else float(tau)
        scale = scale.detach()
        k = torch.where(scale == 0, torch.ones_like(scale), scale.abs())
        sign = torch.sign(scale)
        shift = shift.detach() / k
        threshold = lif.v_threshold / k
        reset = None if lif.v_reset is None else lif.v_reset / k
        return cls(tau, lif.decay_input, sign, shift, threshold, reset)

    @torch.no_grad()
    def forward(self, x_seq: torch.Tensor) -> torch.Tensor:
        tau, thr, reset = self.tau, self.threshold, self.reset
        v = torch.zeros_like(x_seq[0]) if reset is None else reset.expand_as(x_seq[0]).clone()
        spikes = []
        for x in x_seq:
            x = apply_sign(self.sign, x) + self.bias
            if self.decay_input:
                h = v + (x - v) / tau if reset is None else v + (x - (v - reset)) / tau
            else:
                h = v - v / tau + x if reset is None else v - (v - reset) / tau + x
            s = (h - thr >= 0).to(h.dtype)
            v = h - s * thr if reset is None else h * (1.0 - s) + reset * s
            spikes.append(s)
        return torch.stack(spikes)

    def extra_repr(self) -> str:
        return f"tau={self.tau}, per-neuron threshold {tuple(self.threshold.shape)}"


__all__ = ["ThresholdLIF", "apply_sign"]
