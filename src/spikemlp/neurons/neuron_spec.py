"""What a multi-step neuron computes, in the plain numbers the fused kernels take.

The reference reads the same settings directly; the kernels (C++ and Triton) receive the charge mode, the
reset and the surrogate as small integers and floats, defined here once so that both agree.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from . import surrogate as sg

# Charge modes (the same numbers in ops/csrc/lif_cpu.cpp and ops/triton_lif.py).
CHARGE_IF = 0  # H = V + X
CHARGE_DECAY_INPUT = 1  # H = V + (X - (V - V_reset)) / tau
CHARGE_NO_DECAY = 2  # H = V - (V - V_reset) / tau + X

# Surrogates with a kernel implementation, by exact type (a subclass may change grad, so it is excluded).
_KERNEL_SURROGATES = {sg.Sigmoid: 0, sg.ATan: 1, sg.Triangle: 2, sg.StraightThrough: 3}


@dataclass(frozen=True)
class NeuronSpec:
    """Charge mode, threshold, reset and surrogate of one neuron call (tau is passed separately)."""

    mode: int
    v_threshold: float
    v_reset: float | None
    detach_reset: bool
    surrogate: sg.Surrogate

    @property
    def hard_reset(self) -> bool:
        return self.v_reset is not None

    @property
    def reset_value(self) -> float:
        """V_reset in the charge equation; soft reset charges towards 0."""
        return 0.0 if self.v_reset is None else float(self.v_reset)

    @property
    def kernel_surrogate(self) -> tuple[int, float, float] | None:
        """(kernel id, alpha, pi/2 * alpha) for a built-in surrogate, None for a custom one."""
        sg_id = _KERNEL_SURROGATES.get(type(self.surrogate))
        if sg_id is None:
            return None
        alpha = float(getattr(self.surrogate, "alpha", 1.0))
        return sg_id, alpha, math.pi / 2 * alpha
