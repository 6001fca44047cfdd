"""The Triton kernels of the fused multi-step LIF/IF: the CUDA implementation of ``ops.lif``'s operators.

One program handles BLOCK neurons for all T steps with the membrane in registers: the forward reads X and
writes the spikes and the charge H once; the backward reads the incoming gradients and H once.

The forward repeats PyTorch's CUDA arithmetic for the reference loop, rounding to the storage dtype after
each elementwise operation (bf16/fp16 compute in fp32): on CUDA, ``tensor / python_float`` multiplies by
the fp32 reciprocal and ``tensor - python_float`` subtracts the fp32 number, while a tensor tau is a true
division. The host passes the constants accordingly (``_constants``); a learnable tau goes as a pointer
to its 0-dim tensor, read (and rounded as CUDA rounds it) in the kernel, so that no call waits for the
device to hand tau to the host. The same kernels reproduce the CPU arithmetic on CPU tensors in Triton's
interpreter (TRITON_INTERPRET=1): how they are tested without a GPU (:func:`lif_triton` runs them on any
device). FMA contraction is off (enable_fp_fusion=False).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from ..neurons.neuron_spec import CHARGE_IF, NeuronSpec
from . import lif

try:
    import triton
    import triton.language as tl

    _IMPORT_ERROR: str | None = None
except ImportError as err:  # triton is optional: CPU-only installs do not have it
    triton = tl = None
    _IMPORT_ERROR = f"triton is not installed ({err}); pip install triton"

BLOCK = 1024
_ROUND_NONE, _ROUND_BF16, _ROUND_FP16 = 0, 1, 2
_ROUND_CODES = {torch.float32: _ROUND_NONE, torch.bfloat16: _ROUND_BF16, torch.float16: _ROUND_FP16}


def unavailable_reason() -> str | None:
    return _IMPORT_ERROR or (None if torch.cuda.is_available() else "no CUDA device is available")


if triton is not None:

    @triton.jit
    def _round(x, ROUND: tl.constexpr):
        # What PyTorch stores after each bf16/fp16 elementwise op: the fp32 result rounded to nearest even.
        if ROUND == 1:
            # bf16 rounding written with integer ops (as c10::BFloat16 does it): exact on the GPU and in
            # Triton's interpreter alike (the interpreter's own fp32 -> bf16 cast does not round to even).
            bits = x.to(tl.uint32, bitcast=True)
            bits = (bits + (0x7FFF + ((bits >> 16) & 1))) & 0xFFFF0000
            return tl.where(x != x, x, bits.to(tl.float32, bitcast=True))
        elif ROUND == 2:
            return x.to(tl.float16).to(tl.float32)
        else:
            return x

    @triton.jit
    def _div_tau(a, tau, TRUE_DIV: tl.constexpr):
        # tau holds tau itself for a true division, else its fp32 reciprocal (PyTorch's CUDA scalar path).
        if TRUE_DIV:
            return tl.math.div_rn(a, tau)
        else:
            return a * tau

    @triton.jit
    def _load_tau(tau_ptr, TAU_ROUND: tl.constexpr):
        # A tensor tau as ATen divides by it: on CUDA cast to the input's dtype first (TAU_ROUND), on the
        # CPU read as its float32.
        return _round(tl.load(tau_ptr).to(tl.float32), TAU_ROUND)

    @triton.jit
    def _reset(h, s, v_reset_mul, v_th_mul, HARD: tl.constexpr, ROUND: tl.constexpr):
        if HARD:
            return _round(h * (1.0 - s) + v_reset_mul * s, ROUND)
        else:
            return _round(h - s * v_th_mul, ROUND)

    @triton.jit
    def _surrogate_grad(u, alpha, atan_scale, SG: tl.constexpr):
        if SG == 0:
            sig = 1.0 / (1.0 + tl.exp(-(u * alpha)))
            return (1.0 - sig) * sig * alpha
        elif SG == 1:
            z = atan_scale * u
            return alpha / 2.0 / (1.0 + z * z)
        elif SG == 2:
            return tl.maximum(alpha - alpha * alpha * tl.abs(u), 0.0)
        else:
            return u * 0.0 + 1.0

    @triton.jit(do_not_specialize=["T", "N"])
    def _lif_forward_kernel(
        x_ptr, s_ptr, h_ptr, v_ptr, T, N,
        tau, v_th_sub, v_reset_sub, v_reset_mul, v_th_mul, v_init,
        MODE: tl.constexpr, HARD: tl.constexpr, TRUE_DIV: tl.constexpr, ROUND: tl.constexpr,
        SAVE_H: tl.constexpr, RET_V: tl.constexpr, TAU_PTR: tl.constexpr, TAU_ROUND: tl.constexpr,
        BLOCK: tl.constexpr,
    ):  # fmt: skip
        if TAU_PTR:  # tau is the pointer to a learnable tau
            tau = _load_tau(tau, TAU_ROUND)
        pid = tl.program_id(0)
        offs = pid.to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
        mask = offs < N
        v = tl.zeros([BLOCK], dtype=tl.float32) + v_init
        for t in range(T):
            idx = offs + t * N.to(tl.int64)
            x = tl.load(x_ptr + idx, mask=mask, other=0.0).to(tl.float32)
            if MODE == 0:  # IF: H = V + X
                h = _round(v + x, ROUND)
            elif MODE == 1:  # H = V + (X - (V - V_reset)) / tau
                a = _round(v - v_reset_sub, ROUND)
                c = _round(_div_tau(_round(x - a, ROUND), tau, TRUE_DIV), ROUND)
                h = _round(v + c, ROUND)
            else:  # H = V - (V - V_reset) / tau + X
                a = _round(v - v_reset_sub, ROUND)
                c = _round(_div_tau(a, tau, TRUE_DIV), ROUND)
                h = _round(_round(v - c, ROUND) + x, ROUND)
            u = _round(h - v_th_sub, ROUND)
            s = tl.where(u >= 0.0, 1.0, 0.0)
            tl.store(s_ptr + idx, s.to(s_ptr.dtype.element_ty), mask=mask)
            if SAVE_H:
                tl.store(h_ptr + idx, h.to(h_ptr.dtype.element_ty), mask=mask)
            v = _reset(h, s, v_reset_mul, v_th_mul, HARD, ROUND)
            if RET_V:
                tl.store(v_ptr + idx, v.to(v_ptr.dtype.element_ty), mask=mask)

    @triton.jit(do_not_specialize=["T", "N"])
    def _lif_backward_kernel(
        gs_ptr, gv_ptr, h_ptr, gx_ptr, partial_ptr, T, N,
        tau, tau_value, v_th_sub, v_reset_value, v_reset_mul, v_th_mul, v_init, alpha, atan_scale,
        MODE: tl.constexpr, HARD: tl.constexpr, DETACH: tl.constexpr, SG: tl.constexpr,
        TRUE_DIV: tl.constexpr, ROUND: tl.constexpr, HAS_GV: tl.constexpr, TAU_GRAD: tl.constexpr,
        TAU_PTR: tl.constexpr, TAU_ROUND: tl.constexpr, BLOCK: tl.constexpr,
    ):  # fmt: skip
        if TAU_PTR:  # tau is the pointer to a learnable tau (then divided by truly: tau_value is tau)
            tau = _load_tau(tau, TAU_ROUND)
            tau_value = tau
        pid = tl.program_id(0)
        offs = pid.to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
        mask = offs < N
        carry = tl.zeros([BLOCK], dtype=tl.float32)
        tau_acc = tl.zeros([BLOCK], dtype=tl.float32)
        for step in range(T):
            t = T - 1 - step
            idx = offs + t * N.to(tl.int64)
            h = tl.load(h_ptr + idx, mask=mask, other=0.0).to(tl.float32)
            u = _round(h - v_th_sub, ROUND)
            s = tl.where(u >= 0.0, 1.0, 0.0)
            sg = _surrogate_grad(u, alpha, atan_scale, SG)
            if HARD:
                dv_dh = 1.0 - s
                if not DETACH:
                    dv_dh = dv_dh + (v_reset_mul - h) * sg
            else:
                dv_dh = tl.zeros([BLOCK], dtype=tl.float32) + 1.0
                if not DETACH:
                    dv_dh = dv_dh - v_th_mul * sg
            if HAS_GV:
                carry = tl.load(gv_ptr + idx, mask=mask, other=0.0).to(tl.float32) + carry
            g = tl.load(gs_ptr + idx, mask=mask, other=0.0).to(tl.float32) * sg + carry * dv_dh
            g_over_tau = _div_tau(g, tau, TRUE_DIV)
            if MODE == 1:
                tl.store(gx_ptr + idx, g_over_tau.to(gx_ptr.dtype.element_ty), mask=mask)
            else:
                tl.store(gx_ptr + idx, g.to(gx_ptr.dtype.element_ty), mask=mask)
            if MODE == 0:
                carry = g
            else:
                carry = g - g_over_tau
            if TAU_GRAD:
                # The membrane V[t-1] before this step, recomputed from H[t-1] (or the initial value).
                has_prev = t > 0
                hp = tl.load(h_ptr + idx - N, mask=mask & has_prev, other=0.0).to(tl.float32)
                sp = tl.where(_round(hp - v_th_sub, ROUND) >= 0.0, 1.0, 0.0)
                v_prev = tl.where(has_prev, _reset(hp, sp, v_reset_mul, v_th_mul, HARD, ROUND), v_init)
                if MODE == 1:
                    dh_dtau = -(h - v_prev) / tau_value
                else:
                    dh_dtau = (v_prev - v_reset_value) / (tau_value * tau_value)
                tau_acc += tl.where(mask, g * dh_dtau, 0.0)
        if TAU_GRAD:
            tl.store(partial_ptr + pid, tl.sum(tau_acc, axis=0))


def _as_storage(value: float, dtype: torch.dtype) -> float:
    """A number rounded to ``dtype`` the way PyTorch converts a Python float (via fp32)."""
    return float(torch.tensor(value, dtype=torch.float32).to(dtype).float())


def _constants(x: torch.Tensor, tau, tau_value, mode, v_threshold, v_reset, hard_reset, device_type=None):
    """Kernel constants reproducing PyTorch's arithmetic for this device (``device_type``, default x's: the
    tests ask for CUDA's on CPU tensors), dtype and kind of tau (the operators' arguments: ``tau`` a 0-dim
    tensor, else the number ``tau_value``; none for IF)."""
    dtype, on_cuda = x.dtype, (device_type or x.device.type) == "cuda"
    tensor_tau = tau is not None and mode != CHARGE_IF
    tau_value = 1.0 if tensor_tau or mode == CHARGE_IF else float(tau_value)  # a tensor tau: in the kernel
    # CPU divides by the number; CUDA multiplies by the fp32 reciprocal of a Python number, but divides by
    # a tensor tau.
    true_div = not on_cuda or tensor_tau
    v_reset = v_reset if hard_reset else 0.0
    if on_cuda:  # `tensor - number` uses the fp32 number
        v_th_sub, v_reset_sub = float(np.float32(v_threshold)), float(np.float32(v_reset))
    else:  # the CPU narrows the number to the tensor's dtype first
        v_th_sub, v_reset_sub = _as_storage(v_threshold, dtype), _as_storage(v_reset, dtype)
    v_reset_mul = _as_storage(v_reset, dtype)
    reciprocal = float(np.float32(1.0) / np.float32(tau_value))
    return {
        "tau": tau.detach().to(x.device) if tensor_tau else tau_value if true_div else reciprocal,
        "tau_value": tau_value,
        "true_div": true_div,
        "v_th_sub": v_th_sub,
        "v_reset_sub": v_reset_sub,
        "v_reset_value": v_reset,
        "v_reset_mul": v_reset_mul,
        "v_th_mul": _as_storage(v_threshold, dtype),
        "v_init": v_reset_mul if hard_reset else 0.0,
        "round": _ROUND_CODES[dtype],
        "tau_ptr": tensor_tau,
        # CUDA casts a tensor tau to x's dtype before dividing (the CPU reads a 0-dim tensor as its float32)
        "tau_round": _ROUND_CODES[dtype] if on_cuda else _ROUND_NONE,
    }


def _lif_forward_cuda(x, tau, tau_value, mode, v_threshold, v_reset, hard_reset, detach_reset,
                      surrogate, alpha, return_membrane, keep_charge):  # fmt: skip
    """``lif_forward`` by the Triton kernel (on any device: see the module docs)."""
    x = x.contiguous()
    c = _constants(x, tau, tau_value, mode, v_threshold, v_reset, hard_reset)
    T = x.shape[0]
    N = x.numel() // T
    spikes = torch.empty_like(x)
    h_seq = torch.empty_like(x) if keep_charge else spikes  # an unused pointer when not kept
    v_seq = torch.empty_like(x) if return_membrane else spikes
    _lif_forward_kernel[(triton.cdiv(N, BLOCK),)](
        x, spikes, h_seq, v_seq, T, N,
        c["tau"], c["v_th_sub"], c["v_reset_sub"], c["v_reset_mul"], c["v_th_mul"], c["v_init"],
        MODE=mode, HARD=hard_reset, TRUE_DIV=c["true_div"], ROUND=c["round"],
        SAVE_H=keep_charge, RET_V=return_membrane, TAU_PTR=c["tau_ptr"], TAU_ROUND=c["tau_round"],
        BLOCK=BLOCK, enable_fp_fusion=False,
    )  # fmt: skip
    return spikes, v_seq if return_membrane else x.new_empty(0), h_seq if keep_charge else x.new_empty(0)


def _lif_backward_cuda(saved, grad_spikes, grad_membrane, tau, tau_value, mode, v_threshold, v_reset,
                       hard_reset, detach_reset, surrogate, alpha, want_tau):  # fmt: skip
    """``lif_backward`` by the Triton kernel, from the forward's charge H (``saved``)."""
    h_seq = saved.contiguous()
    c = _constants(h_seq, tau, tau_value, mode, v_threshold, v_reset, hard_reset)
    T = h_seq.shape[0]
    N = h_seq.numel() // T
    grad_s = grad_spikes.to(h_seq.dtype).contiguous()
    grad_v = None if grad_membrane is None else grad_membrane.to(h_seq.dtype).contiguous()
    grad_x = torch.empty_like(h_seq)
    n_programs = triton.cdiv(N, BLOCK)
    partials = torch.zeros(n_programs, dtype=torch.float32, device=h_seq.device)
    _lif_backward_kernel[(n_programs,)](
        grad_s, grad_s if grad_v is None else grad_v, h_seq, grad_x, partials, T, N,
        c["tau"], c["tau_value"], c["v_th_sub"], c["v_reset_value"], c["v_reset_mul"], c["v_th_mul"],
        c["v_init"], alpha, math.pi / 2 * alpha,
        MODE=mode, HARD=hard_reset, DETACH=detach_reset, SG=surrogate,
        TRUE_DIV=c["true_div"], ROUND=c["round"], HAS_GV=grad_v is not None, TAU_GRAD=want_tau,
        TAU_PTR=c["tau_ptr"], TAU_ROUND=c["tau_round"], BLOCK=BLOCK, enable_fp_fusion=False,
    )  # fmt: skip
    return grad_x, partials.double().sum()


if triton is not None:
    torch.library.register_kernel("spikemlp::lif_forward", "cuda", _lif_forward_cuda)
    torch.library.register_kernel("spikemlp::lif_backward", "cuda", _lif_backward_cuda)


class _TritonLIF(torch.autograd.Function):
    """The two CUDA implementations with autograd, for :func:`lif_triton` (the operator has its own)."""

    @staticmethod
    def forward(ctx, x, tau, *numbers):
        spikes, v_seq, h_seq = _lif_forward_cuda(x, tau, *numbers)
        ctx.save_for_backward(h_seq, tau)
        ctx.numbers = numbers  # tau_value ... keep_charge
        return spikes, v_seq, h_seq

    @staticmethod
    @torch.autograd.function.once_differentiable  # a kernel, not autograd ops: no double backward
    def backward(ctx, grad_spikes, grad_v, _grad_charge):
        h_seq, tau = ctx.saved_tensors
        *numbers, return_membrane, _ = ctx.numbers
        want_tau = tau is not None and ctx.needs_input_grad[1]
        grad_v = grad_v if return_membrane else None
        grad_x, grad_tau = _lif_backward_cuda(h_seq, grad_spikes, grad_v, tau, *numbers, want_tau)
        return grad_x, (grad_tau.to(tau.dtype) if want_tau else None), *([None] * len(ctx.numbers))


def lif_triton(x_seq: torch.Tensor, tau, spec: NeuronSpec, return_membrane: bool = False):
    """Run the Triton kernels on x's device, with autograd; ``tau`` is a float, a 0-dim tensor (learnable)
    or None for IF."""
    args = lif.forward_args(x_seq, None if spec.mode == CHARGE_IF else tau, spec, return_membrane)
    spikes, v_seq, _ = _TritonLIF.apply(*args)
    return (spikes, v_seq) if return_membrane else spikes
