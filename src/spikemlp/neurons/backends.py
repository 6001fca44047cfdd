"""Backend dispatch for the multi-step LIF and IF neurons.

Backends (all compute the same arithmetic; ``reference`` is the ground truth the others are tested against):

- ``reference``: plain PyTorch loop over T, differentiated by autograd (any device, dtype, surrogate).
- ``cpp``: fused C++ kernel for CPU tensors (fp32, fp64, bf16, fp16), forward and backward in one pass each.
- ``triton``: fused Triton kernel for CUDA tensors (fp32, bf16, fp16), the loop over T inside the kernel.

``auto`` picks the fused backend for the tensor's device. When it cannot run (no compiler, triton missing,
a custom surrogate without a kernel) ``auto`` uses the reference and warns once, naming the cause; asking
for an unavailable backend by name raises an error that says why. Under torch.compile ``auto`` uses the
reference, which the compiler fuses itself.
"""

from __future__ import annotations

import warnings

import torch

from . import fused_cpu
from .neuron_spec import CHARGE_DECAY_INPUT, CHARGE_IF, CHARGE_NO_DECAY, NeuronSpec
from .reference import if_reference, lif_reference
from .surrogate import Surrogate

BACKENDS = ("reference", "cpp", "triton")
TRITON_DTYPES = (torch.float32, torch.bfloat16, torch.float16)

_warned: set[str] = set()


def check_backend_name(backend: str) -> None:
    if backend not in ("auto",) + BACKENDS:
        raise ValueError(f"unknown LIF backend {backend!r}; choose 'auto' or one of {BACKENDS}")


def _triton_unavailable_reason() -> str | None:
    from . import triton_lif

    return triton_lif.unavailable_reason()


def _why_not(backend: str, x_seq: torch.Tensor, spec: NeuronSpec) -> str | None:
    """Why ``backend`` cannot run this call, or None if it can."""
    if backend == "reference":
        return None
    if spec.kernel_surrogate is None:
        return (
            f"the surrogate {type(spec.surrogate).__name__} has no fused kernel (kernels exist for "
            "Sigmoid, ATan, Triangle and StraightThrough)"
        )
    if backend == "cpp":
        if x_seq.device.type != "cpu":
            return f"backend 'cpp' runs on CPU tensors, the input is on {x_seq.device}"
        if x_seq.dtype not in fused_cpu.DTYPES:
            return f"backend 'cpp' supports {[str(d) for d in fused_cpu.DTYPES]}, the input is {x_seq.dtype}"
        return fused_cpu.unavailable_reason()
    # triton
    if x_seq.device.type != "cuda":
        return f"backend 'triton' runs on CUDA tensors, the input is on {x_seq.device}"
    if x_seq.dtype not in TRITON_DTYPES:
        return f"backend 'triton' supports {[str(d) for d in TRITON_DTYPES]}, the input is {x_seq.dtype}"
    return _triton_unavailable_reason()


def select_backend(backend: str, x_seq: torch.Tensor, spec: NeuronSpec) -> str:
    """The backend that will run: the named one (or an error saying why it cannot), or auto's choice."""
    check_backend_name(backend)
    if backend != "auto":
        reason = _why_not(backend, x_seq, spec)
        if reason is not None:
            raise RuntimeError(f"LIF backend {backend!r} is unavailable: {reason}")
        return backend
    if torch.compiler.is_compiling():
        return "reference"
    if x_seq.device.type == "cpu":
        wanted = "cpp"
    elif x_seq.device.type == "cuda":
        wanted = "triton"
    else:
        return "reference"
    if wanted == "cpp" and x_seq.dtype not in fused_cpu.DTYPES:
        return "reference"
    if wanted == "triton" and x_seq.dtype not in TRITON_DTYPES:
        return "reference"  # fp64 on the GPU: the reference is the intended path
    reason = _why_not(wanted, x_seq, spec)
    if reason is None:
        return wanted
    message = f"spikemlp LIF: the {wanted!r} backend cannot run ({reason}); using the slower 'reference'"
    if message not in _warned:
        _warned.add(message)
        warnings.warn(message, RuntimeWarning, stacklevel=4)
    return "reference"


def _run(x_seq, tau, spec: NeuronSpec, backend: str, return_membrane: bool):
    chosen = select_backend(backend, x_seq, spec)
    if chosen == "cpp":
        return fused_cpu.lif_fused_cpu(x_seq, tau, spec, return_membrane)
    if chosen == "triton":
        from . import triton_lif

        return triton_lif.lif_triton(x_seq, tau, spec, return_membrane)
    if spec.mode == CHARGE_IF:
        return if_reference(
            x_seq, spec.v_threshold, spec.v_reset, spec.detach_reset, spec.surrogate, return_membrane
        )
    return lif_reference(
        x_seq,
        tau,
        spec.v_threshold,
        spec.v_reset,
        spec.mode == CHARGE_DECAY_INPUT,
        spec.detach_reset,
        spec.surrogate,
        return_membrane,
    )


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
    return _run(x_seq, tau, spec, backend, return_membrane)


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
    return _run(x_seq, None, spec, backend, return_membrane)
