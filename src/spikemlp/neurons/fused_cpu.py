"""The fused CPU backend: a small C++ kernel (csrc/lif_cpu.cpp) behind a torch.autograd.Function.

The kernel depends only on the C++ standard library. It is compiled on first use with the system C++
compiler (``$CXX``, default ``c++``; about 15-30 s) into a shared library cached under the torch extensions
directory ($TORCH_EXTENSIONS_DIR, default ~/.cache/torch_extensions), named by a hash of the source, the
flags and the compiler, and called through ctypes (which releases the GIL). No build tool and no
torch headers are needed, so the cache does not depend on the torch version. If there is no compiler,
:func:`unavailable_reason` says so and the dispatcher falls back to the reference.

The flags keep the arithmetic IEEE and identical to PyTorch's: -O3 -ffp-contract=off (the compiler
fuses no multiply-add; the source asks for one only in the backward's exp polynomial), no -ffast-math.
-fno-trapping-math only tells the compiler that no program inspects floating-point exception flags, so
it may vectorise the select in "spike = H >= V_th"; values are unchanged
(the tests compare spikes bit for bit with the reference).

Memory and traffic: in training the forward writes only the spikes and keeps only its input X for the
backward (a reference, not a copy: 4 bytes per neuron per step in fp32, 2 in bf16/fp16, 8 in fp64). The
backward recomputes the charge H from X block by block in cache (the forward's own arithmetic, so bit for
bit the same H), then spike, reset and membrane from H. Saving H instead would cost the forward a second
full-size output for no saving in memory. Outputs larger than the caches are written with streaming
stores (see csrc/lif_cpu.cpp).
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import shutil
import subprocess
import tempfile
import threading
from pathlib import Path

import torch

from .neuron_spec import NeuronSpec

_SOURCE = Path(__file__).with_name("csrc") / "lif_cpu.cpp"
_CFLAGS = ["-std=c++17", "-O3", "-ffp-contract=off", "-fno-fast-math", "-fno-trapping-math", "-fPIC"]
_LDFLAGS = ["-shared", "-pthread"]
# Storage dtype codes of the C interface.
DTYPE_CODES = {torch.float32: 0, torch.float64: 1, torch.bfloat16: 2, torch.float16: 3}
DTYPES = tuple(DTYPE_CODES)

_lock = threading.Lock()
_state: dict[str, object] = {"lib": None, "error": None}


def _cache_dir() -> Path:
    root = os.environ.get("TORCH_EXTENSIONS_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "torch_extensions"
    )
    return Path(root) / "spikemlp"


def _cflags() -> list[str]:
    """Vector extensions the CPU has (PyTorch's own dispatch says which).

    AVX2 lets the loops vectorise and the outputs be written with streaming stores; AVX-512 (mask
    registers, twice the lanes) makes the sigmoid surrogate's backward about 1.4x faster on a CPU that
    has it. The forward's values are the same with any of them (IEEE operations, lane by lane; with
    -ffp-contract=off the compiler fuses no multiply-add); FMA is used only where the source asks for it,
    in the backward's exp polynomial.
    """
    capability = torch.backends.cpu.get_cpu_capability()
    flags = list(_CFLAGS)
    if capability in ("AVX2", "AVX512"):
        flags += ["-mavx2", "-mfma"]
    if capability == "AVX512":
        flags += ["-mavx512f", "-mavx512vl", "-mavx512bw", "-mavx512dq"]
    return flags


def _build(compiler: str) -> Path:
    """Compile the library once per source/flags/compiler; a finished file is reused, never rebuilt."""
    cflags = _cflags()
    version = subprocess.run([compiler, "--version"], capture_output=True, text=True, timeout=60).stdout
    key = hashlib.sha256(_SOURCE.read_bytes() + " ".join(cflags + _LDFLAGS).encode() + version.encode())
    target = _cache_dir() / f"lif_cpu_{key.hexdigest()[:16]}.so"
    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    # Build under a temporary name and rename: concurrent processes never load a half-written file.
    fd, tmp = tempfile.mkstemp(suffix=".so", dir=target.parent)
    os.close(fd)
    try:
        cmd = [compiler, *cflags, str(_SOURCE), "-o", tmp, *_LDFLAGS]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
        if done.returncode != 0:
            lines = [line for line in done.stderr.strip().splitlines() if line.strip()]
            raise RuntimeError(f"{compiler} failed: {lines[-1] if lines else done.returncode}")
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return target


def _load() -> ctypes.CDLL:
    compiler = os.environ.get("CXX", "c++")
    if shutil.which(compiler) is None:
        raise RuntimeError(f"no C++ compiler: {compiler!r} is not on PATH (install g++, or set CXX)")
    lib = ctypes.CDLL(str(_build(compiler)))
    i64, f64, ptr, i32 = ctypes.c_int64, ctypes.c_double, ctypes.c_void_p, ctypes.c_int
    lib.spikemlp_lif_block_size.restype = i64
    lib.spikemlp_lif_forward.restype = i32
    lib.spikemlp_lif_forward.argtypes = [i32, ptr, ptr, ptr, i64, i64, i64, i32, f64, f64, f64, i32]
    lib.spikemlp_lif_backward.restype = i32
    lib.spikemlp_lif_backward.argtypes = [
        i32, ptr, ptr, ptr, ptr, i64, i64, i64, i32, i32, i64, f64, f64, f64, f64, f64, ptr, i32,
    ]  # fmt: skip
    return lib


def unavailable_reason() -> str | None:
    """Build or load the kernel once per process; None if it is ready, else why it cannot be used."""
    with _lock:
        if _state["lib"] is None and _state["error"] is None:
            try:
                _state["lib"] = _load()
            except Exception as err:  # any build or load failure means "not available", with its cause
                _state["error"] = f"the C++ kernel could not be built: {err}"
        return None if _state["lib"] is not None else str(_state["error"])


def _lib() -> ctypes.CDLL:
    reason = unavailable_reason()
    if reason is not None:
        raise RuntimeError(reason)
    return _state["lib"]


def _ptr(t: torch.Tensor | None) -> int | None:
    return None if t is None else t.data_ptr()


def forward_kernel(x_seq: torch.Tensor, tau: float, spec: NeuronSpec, return_membrane: bool = False):
    """The forward kernel on a contiguous x_seq [T, ...]: (spikes, membrane or None)."""
    spikes = torch.empty_like(x_seq)
    v_seq = torch.empty_like(x_seq) if return_membrane else None
    T = x_seq.shape[0]
    status = _lib().spikemlp_lif_forward(
        DTYPE_CODES[x_seq.dtype], _ptr(x_seq), _ptr(spikes), _ptr(v_seq), T, x_seq.numel() // T,
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
        DTYPE_CODES[x_seq.dtype], _ptr(grad_s), _ptr(grad_v), _ptr(x_seq), _ptr(grad_x), T, N,
        spec.mode, spec.hard_reset, spec.detach_reset, sg_id, tau, spec.v_threshold,
        spec.reset_value, alpha, atan_scale, _ptr(partials), torch.get_num_threads(),
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
