"""The fused CPU backend: a small C++ kernel (csrc/lif_cpu.cpp) behind a torch.autograd.Function.

The kernel depends only on the C++ standard library; it is compiled on first use and cached (see
``spikemlp._native``: 15-30 s once, no build tool, no torch headers). If there is no compiler,
:func:`unavailable_reason` says so and the dispatcher falls back to the reference.

The build keeps the arithmetic IEEE and identical to PyTorch's (no FMA contraction by the compiler, no
-ffast-math; the source asks for one FMA only in the backward's exp polynomial), so the tests compare
spikes bit for bit with the reference.

Memory and traffic: in training the forward writes only the spikes and keeps only its input X for the
backward (a reference, not a copy: 4 bytes per neuron per step in fp32, 2 in bf16/fp16, 8 in fp64). The
backward recomputes the charge H from X block by block in cache (the forward's own arithmetic, so bit for
bit the same H), then spike, reset and membrane from H. Saving H instead would cost the forward a second
full-size output for no saving in memory. Outputs larger than the caches are written with streaming
stores (see csrc/lif_cpu.cpp).
"""

from __future__ import annotations

import ctypes
from pathlib import Path

import torch

from .._native import NativeLibrary, data_ptr
from .neuron_spec import NeuronSpec

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


def _lib() -> ctypes.CDLL:
    return _LIBRARY.get()


def unavailable_reason() -> str | None:
    """Build or load the kernel once per process; None if it is ready, else why it cannot be used."""
    return _LIBRARY.unavailable_reason()


def forward_kernel(x_seq: torch.Tensor, tau: float, spec: NeuronSpec, return_membrane: bool = False):
    """The forward kernel on a contiguous x_seq [T, ...]: (spikes, membrane or None)."""
    spikes = torch.empty_like(x_seq)
    v_seq = torch.empty_like(x_seq) if return_membrane else None
    T = x_seq.shape[0]
    status = _lib().spikemlp_lif_forward(
        DTYPE_CODES[x_seq.dtype], data_ptr(x_seq), data_ptr(spikes), data_ptr(v_seq), T, x_seq.numel() // T,
        spec.mode, spec.hard_reset, tau, spec.v_threshold, spec.reset_value, torch.get_num_threads(),
    )  # fmt: skip
    if status != 0:
        raise RuntimeError(f"spikemlp fused LIF forward failed with status {status}")
    return spikes, v_seq


class _FusedLIF(torch.autograd.Function):
    """Spikes (and optionally the membrane) of the whole sequence; backward in one reverse pass."""

    @staticmethod
    def forward(ctx, x_seq, tau_tensor, tau: float, spec: NeuronSpec, return_membrane: bool):
        spikes, v_seq = forward_kernel(x_seq, tau, spec, return_membrane)
        ctx.save_for_backward(x_seq)
        ctx.tau = tau
        ctx.spec = spec
        ctx.tau_dtype = None if tau_tensor is None else tau_tensor.dtype
        if return_membrane:
            return spikes, v_seq
        return spikes

    @staticmethod
    @torch.autograd.function.once_differentiable  # a kernel, not autograd ops: no double backward
    def backward(ctx, grad_spikes, grad_v=None):
        (x_seq,) = ctx.saved_tensors
        want_tau = ctx.tau_dtype is not None and ctx.needs_input_grad[1]
        grad_x, grad_tau = backward_from_input(x_seq, grad_spikes, grad_v, ctx.tau, ctx.spec, want_tau)
        grad_tau = grad_tau.to(ctx.tau_dtype) if want_tau else None
        return grad_x, grad_tau, None, None, None


def backward_from_input(x_seq, grad_spikes, grad_v, tau: float, spec: NeuronSpec, want_tau: bool = False):
    """dL/dX (and dL/dtau, fp64, if ``want_tau``) from the forward's contiguous input X [T, ...] and dL/dS
    (and dL/dV); the charge is recomputed from X inside the kernel."""
    sg_id, alpha, atan_scale = spec.kernel_surrogate
    lib = _lib()
    T = x_seq.shape[0]
    N = x_seq.numel() // T
    grad_s = grad_spikes.to(x_seq.dtype).contiguous()
    grad_v = None if grad_v is None else grad_v.to(x_seq.dtype).contiguous()
    grad_x = torch.empty_like(x_seq)
    block = lib.spikemlp_lif_block_size()
    partials = torch.zeros((N + block - 1) // block, dtype=torch.float64) if want_tau else None
    status = lib.spikemlp_lif_backward(
        DTYPE_CODES[x_seq.dtype], data_ptr(grad_s), data_ptr(grad_v), data_ptr(x_seq), data_ptr(grad_x), T, N,
        spec.mode, spec.hard_reset, spec.detach_reset, sg_id, tau, spec.v_threshold,
        spec.reset_value, alpha, atan_scale, data_ptr(partials), torch.get_num_threads(),
    )  # fmt: skip
    if status != 0:
        raise RuntimeError(f"spikemlp fused LIF backward failed with status {status}")
    return grad_x, (partials.sum() if want_tau else None)


def lif_fused_cpu(
    x_seq: torch.Tensor, tau: float | torch.Tensor | None, spec: NeuronSpec, return_membrane: bool = False
):
    """Run the fused kernel; ``tau`` is a float, a 0-dim tensor (learnable) or None for IF."""
    x_seq = x_seq.contiguous()
    tau_tensor = tau if isinstance(tau, torch.Tensor) else None
    # The reference divides by tau as a float32/64 number (what PyTorch reads from a 0-dim tensor too).
    tau_value = 1.0 if tau is None else float(tau.detach() if tau_tensor is not None else tau)
    needs_grad = torch.is_grad_enabled() and (
        x_seq.requires_grad or (tau_tensor is not None and tau_tensor.requires_grad)
    )
    if not needs_grad:
        spikes, v_seq = forward_kernel(x_seq, tau_value, spec, return_membrane)
        return (spikes, v_seq) if return_membrane else spikes
    return _FusedLIF.apply(x_seq, tau_tensor, tau_value, spec, return_membrane)
