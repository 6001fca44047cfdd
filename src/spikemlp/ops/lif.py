"""The fused multi-step LIF/IF as the operators ``spikemlp::lif_forward`` and ``spikemlp::lif_backward``.

CPU: the C++ kernel ``csrc/lif_cpu.cpp``; CUDA: the Triton kernel in ``triton_lif``. Each has a fake
implementation, and the forward's registered autograd calls ``lif_backward``, so the compiler sees both as
single nodes and the arithmetic stays the kernels' own (bit for bit the reference's spikes).

What the forward keeps for the backward (``saved``) depends on the device: on the CPU its input X (the
backward recomputes the charge H block by block in cache), on CUDA the charge H (its third output, empty
on the CPU). The neuron comes as ``NeuronSpec``'s plain numbers; a learnable tau as a 0-dim tensor, a
fixed one as a number. Both operators are functional: fresh outputs, no input mutated.
"""

from __future__ import annotations

import ctypes
import math
from pathlib import Path

import torch

from ..neurons.neuron_spec import NeuronSpec
from ._build import NativeLibrary, data_ptr

# Storage dtype codes of the C interface.
DTYPE_CODES = {torch.float32: 0, torch.float64: 1, torch.bfloat16: 2, torch.float16: 3}
DTYPES = tuple(DTYPE_CODES)


def _declare(lib: ctypes.CDLL) -> None:
    i64, f64, ptr, i32 = ctypes.c_int64, ctypes.c_double, ctypes.c_void_p, ctypes.c_int
    lib.spikemlp_lif_block_size.restype = i64
    lib.spikemlp_lif_forward.restype = i32
    lib.spikemlp_lif_forward.argtypes = [i32, ptr, ptr, ptr, i64, i64, i64, i32, f64, f64, f64, i32]
    lib.spikemlp_lif_backward.restype = i32
    lib.spikemlp_lif_backward.argtypes = [
        i32, ptr, ptr, ptr, ptr, i64, i64, i64, i32, i32, i64, f64, f64, f64, f64, f64, ptr, i32,
    ]  # fmt: skip


_LIBRARY = NativeLibrary(Path(__file__).with_name("csrc") / "lif_cpu.cpp", _declare)


def unavailable_reason() -> str | None:
    """Build or load the CPU kernel once per process; None if it is ready, else why it cannot be used."""
    return _LIBRARY.unavailable_reason()


def _tau(tau: torch.Tensor | None, tau_value: float) -> float:
    # The reference divides by tau as a float32/64 number (what PyTorch reads from a 0-dim tensor too).
    return tau_value if tau is None else float(tau.detach())


@torch.library.custom_op("spikemlp::lif_forward", mutates_args=(), device_types="cpu")
def lif_forward(
    x: torch.Tensor,
    tau: torch.Tensor | None,
    tau_value: float,
    mode: int,
    v_threshold: float,
    v_reset: float,
    hard_reset: bool,
    detach_reset: bool,
    surrogate: int,
    alpha: float,
    return_membrane: bool,
    keep_charge: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(spikes, membrane after reset or empty, charge or empty) of the neurons x [T, ...].

    ``tau``: a 0-dim tensor (learnable tau; ``tau_value`` is then ignored) or None (``tau_value``).
    ``v_reset``: the charge equation's V_reset (0 for a soft reset). ``detach_reset``, ``surrogate`` and
    ``alpha`` are for the backward (registered autograd). ``keep_charge``: CUDA keeps H for the backward.
    """
    x = x.contiguous()
    spikes = torch.empty_like(x)
    v_seq = torch.empty_like(x) if return_membrane else x.new_empty(0)
    T = x.shape[0]
    status = _LIBRARY.get().spikemlp_lif_forward(
        DTYPE_CODES[x.dtype], data_ptr(x), data_ptr(spikes), data_ptr(v_seq if return_membrane else None), T,
        x.numel() // T, mode, hard_reset, _tau(tau, tau_value), v_threshold, v_reset, torch.get_num_threads(),
    )  # fmt: skip
    if status != 0:
        raise RuntimeError(f"spikemlp fused LIF forward failed with status {status}")
    return spikes, v_seq, x.new_empty(0)


@lif_forward.register_fake
def _(x, tau, tau_value, mode, v_threshold, v_reset, hard_reset, detach_reset, surrogate, alpha,
      return_membrane, keep_charge):  # fmt: skip
    full = x.new_empty(x.shape)
    membrane = x.new_empty(x.shape) if return_membrane else x.new_empty(0)
    charge = x.new_empty(x.shape) if keep_charge and x.device.type == "cuda" else x.new_empty(0)
    return full, membrane, charge


@torch.library.custom_op("spikemlp::lif_backward", mutates_args=(), device_types="cpu")
def lif_backward(
    saved: torch.Tensor,
    grad_spikes: torch.Tensor,
    grad_membrane: torch.Tensor | None,
    tau: torch.Tensor | None,
    tau_value: float,
    mode: int,
    v_threshold: float,
    v_reset: float,
    hard_reset: bool,
    detach_reset: bool,
    surrogate: int,
    alpha: float,
    want_tau: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(dL/dX, dL/dtau as a 0-dim float64 tensor, 0 unless ``want_tau``) from what the forward kept
    (``saved``: X on the CPU, H on CUDA), dL/dS and dL/dV (None: no membrane gradient)."""
    lib = _LIBRARY.get()
    x = saved.contiguous()
    T = x.shape[0]
    N = x.numel() // T
    grad_s = grad_spikes.to(x.dtype).contiguous()
    grad_v = None if grad_membrane is None else grad_membrane.to(x.dtype).contiguous()
    grad_x = torch.empty_like(x)
    block = lib.spikemlp_lif_block_size()
    partials = torch.zeros((N + block - 1) // block if want_tau else 0, dtype=torch.float64)
    status = lib.spikemlp_lif_backward(
        DTYPE_CODES[x.dtype], data_ptr(grad_s), data_ptr(grad_v), data_ptr(x), data_ptr(grad_x), T, N,
        mode, hard_reset, detach_reset, surrogate, _tau(tau, tau_value), v_threshold, v_reset, alpha,
        math.pi / 2 * alpha, data_ptr(partials) if want_tau else None, torch.get_num_threads(),
    )  # fmt: skip
    if status != 0:
        raise RuntimeError(f"spikemlp fused LIF backward failed with status {status}")
    return grad_x, partials.sum()


@lif_backward.register_fake
def _(saved, grad_spikes, grad_membrane, tau, tau_value, mode, v_threshold, v_reset, hard_reset,
      detach_reset, surrogate, alpha, want_tau):  # fmt: skip
    return saved.new_empty(saved.shape), saved.new_empty((), dtype=torch.float64)


def _setup_context(ctx, inputs, output) -> None:
    x, tau, *numbers = inputs
    ctx.numbers = numbers  # tau_value ... keep_charge
    ctx.return_membrane = numbers[-2]
    # What the device's backward reads: X on the CPU, the charge H on CUDA (see the module docs).
    saved = output[2] if x.device.type == "cuda" else x
    ctx.has_tau = tau is not None
    ctx.save_for_backward(saved, tau) if tau is not None else ctx.save_for_backward(saved)


def _lif_forward_backward(ctx, grad_spikes, grad_membrane, _grad_charge):
    saved, *rest = ctx.saved_tensors
    tau = rest[0] if ctx.has_tau else None
    if grad_spikes is None:
        grad_spikes = torch.zeros_like(saved)
    if not ctx.return_membrane:
        grad_membrane = None
    want_tau = tau is not None and ctx.needs_input_grad[1]
    # ctx.numbers[:8]: tau_value ... alpha, the arguments the two operators share.
    grad_x, grad_tau = lif_backward(saved, grad_spikes, grad_membrane, tau, *ctx.numbers[:8], want_tau)
    return grad_x, (grad_tau.to(tau.dtype) if want_tau else None), *([None] * 10)


lif_forward.register_autograd(_lif_forward_backward, setup_context=_setup_context)


def neuron_args(tau: float | torch.Tensor | None, spec: NeuronSpec) -> tuple:
    """The arguments the two operators share (``tau`` ... ``alpha``), for ``tau`` a float, a 0-dim tensor
    (learnable) or None (IF)."""
    sg_id, alpha, _ = spec.kernel_surrogate
    tau_tensor = tau if isinstance(tau, torch.Tensor) else None
    tau_value = 1.0 if tau is None or tau_tensor is not None else float(tau)
    numbers = (spec.mode, spec.v_threshold, spec.reset_value, spec.hard_reset, spec.detach_reset)
    return tau_tensor, tau_value, *numbers, sg_id, alpha


def forward_args(x_seq: torch.Tensor, tau, spec: NeuronSpec, return_membrane: bool) -> tuple:
    """``lif_forward``'s arguments for x_seq [T, ...] (``tau`` as for :func:`neuron_args`)."""
    needs_grad = torch.is_grad_enabled() and (
        x_seq.requires_grad or (isinstance(tau, torch.Tensor) and tau.requires_grad)
    )
    return x_seq.contiguous(), *neuron_args(tau, spec), return_membrane, needs_grad


def run(x_seq: torch.Tensor, tau: float | torch.Tensor | None, spec: NeuronSpec, return_membrane=False):
    """Spikes (and the membrane if ``return_membrane``) of x_seq [T, ...] by the ``lif_forward`` operator on
    x's device. The caller has checked that the kernel applies (``ops.select``)."""
    spikes, v_seq, _ = torch.ops.spikemlp.lif_forward(*forward_args(x_seq, tau, spec, return_membrane))
    return (spikes, v_seq) if return_membrane else spikes


def backward(saved, grad_spikes, grad_v, tau: float, spec: NeuronSpec, want_tau: bool = False):
    """``lif_backward`` for a fixed tau and a built-in surrogate: (dL/dX, dL/dtau in float64 or None)."""
    args = neuron_args(float(tau), spec)
    grad_x, grad_tau = torch.ops.spikemlp.lif_backward(saved, grad_spikes, grad_v, *args, want_tau)
    return grad_x, (grad_tau if want_tau else None)
