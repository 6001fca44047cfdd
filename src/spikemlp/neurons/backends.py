"""Backend dispatch for the multi-step LIF.

For now only the plain reference exists; fused CPU and Triton backends plug in here.
"""

from __future__ import annotations

import torch

from .reference import lif_reference

BACKENDS = ("reference",)


def run_lif(x_seq: torch.Tensor, *, tau, v_threshold, v_reset, decay_input, detach_reset, surrogate,
            backend="auto", return_membrane=False):
    if backend not in ("auto",) + BACKENDS:
        raise ValueError(f"unknown LIF backend {backend!r}; choose 'auto' or one of {BACKENDS}")
    return lif_reference(x_seq, tau, v_threshold, v_reset, decay_input, detach_reset, surrogate, return_membrane)
