"""The one place that chooses between a spikemlp kernel (operator) and the reference PyTorch code.

LIF/IF neurons (:func:`select_backend`, :func:`run_neuron`): ``auto`` picks the fused operator for the
tensor's device (the C++ kernel on the CPU, Triton on CUDA) and falls back to the reference, with one
warning naming the cause, where it cannot run (no compiler, triton missing, a custom surrogate, a dtype
the kernel lacks); a backend asked for by name raises an error that says why it cannot run. The device
and dtype checks are made here, once per call, not by the operators' callers. Under torch.compile the
same choice is made (the operators are single nodes of the graph, with a fake implementation).

SNN-MLP's group LIF (:func:`group_lif_kernel_ready`): the Triton operator on CUDA float32/bfloat16/
float16 tensors where triton imports; elsewhere (the CPU, float64) ``neurons.group_lif`` runs its PyTorch
scans.

Spike products (:func:`spike_matmul_ready`): the inference kernel applies to CPU float32/float64 inputs
when it could be built. Whether a kernel could be built is read once per process; while torch.compile
traces, that answer is a constant of the graph (``torch.compiler.assume_constant_result``).
"""

from __future__ import annotations

import warnings

import torch

from ..neurons.neuron_spec import CHARGE_DECAY_INPUT, CHARGE_IF, NeuronSpec
from ..neurons.reference import if_reference, lif_reference
from . import lif as lif_ops
from . import spike_matmul as spike_matmul_ops
from . import triton_lif

BACKENDS = ("reference", "cpp", "triton")
CPP_DTYPES = lif_ops.DTYPES
TRITON_DTYPES = (torch.float32, torch.bfloat16, torch.float16)

_warned: set[str] = set()


def check_backend_name(backend: str) -> None:
    if backend not in ("auto",) + BACKENDS:
        raise ValueError(f"unknown LIF backend {backend!r}; choose 'auto' or one of {BACKENDS}")


@torch.compiler.assume_constant_result
def _cpp_reason() -> str | None:
    return lif_ops.unavailable_reason()


@torch.compiler.assume_constant_result
def _triton_reason() -> str | None:
    return triton_lif.unavailable_reason()


@torch.compiler.assume_constant_result
def _spike_matmul_reason() -> str | None:
    return spike_matmul_ops.unavailable_reason()


def _why_not(backend: str, x_seq: torch.Tensor, spec: NeuronSpec) -> str | None:
    """Why ``backend`` cannot run this call, or None if it can."""
    if backend == "reference":
        return None
    if spec.kernel_surrogate is None:
        return (
            f"the surrogate {type(spec.surrogate).__name__} has no fused kernel (kernels exist for "
            "Sigmoid, ATan, Triangle and StraightThrough)"
        )
    device, dtypes = ("cpu", CPP_DTYPES) if backend == "cpp" else ("cuda", TRITON_DTYPES)
    if x_seq.device.type != device:
        return f"backend {backend!r} runs on {device.upper()} tensors, the input is on {x_seq.device}"
    if x_seq.dtype not in dtypes:
        return f"backend {backend!r} supports {[str(d) for d in dtypes]}, the input is {x_seq.dtype}"
    return _cpp_reason() if backend == "cpp" else _triton_reason()


def select_backend(backend: str, x_seq: torch.Tensor, spec: NeuronSpec) -> str:
    """The backend that will run: the named one (or an error saying why it cannot), or auto's choice."""
    check_backend_name(backend)
    if backend != "auto":
        reason = _why_not(backend, x_seq, spec)
        if reason is not None:
            raise RuntimeError(f"LIF backend {backend!r} is unavailable: {reason}")
        return backend
    wanted = {"cpu": "cpp", "cuda": "triton"}.get(x_seq.device.type)
    if wanted is None or x_seq.dtype not in (CPP_DTYPES if wanted == "cpp" else TRITON_DTYPES):
        return "reference"  # e.g. fp64 on the GPU: the reference is the intended path
    reason = _why_not(wanted, x_seq, spec)
    if reason is None:
        return wanted
    message = f"spikemlp LIF: the {wanted!r} backend cannot run ({reason}); using the slower 'reference'"
    if message not in _warned and not torch.compiler.is_compiling():
        _warned.add(message)
        warnings.warn(message, RuntimeWarning, stacklevel=5)
    return "reference"


def run_neuron(x_seq, tau, spec: NeuronSpec, backend: str, return_membrane: bool):
    """Spikes (and membrane) of a multi-step LIF/IF over x_seq [T, ...] on the chosen backend."""
    chosen = select_backend(backend, x_seq, spec)
    if chosen != "reference":  # the operator runs its CPU (C++) or CUDA (Triton) kernel
        return lif_ops.run(x_seq, tau, spec, return_membrane)
    if spec.mode == CHARGE_IF:
        return if_reference(
            x_seq, spec.v_threshold, spec.v_reset, spec.detach_reset, spec.surrogate, return_membrane
        )
    return lif_reference(
        x_seq, tau, spec.v_threshold, spec.v_reset, spec.mode == CHARGE_DECAY_INPUT, spec.detach_reset,
        spec.surrogate, return_membrane,
    )  # fmt: skip


def group_lif_kernel_ready(x: torch.Tensor) -> bool:
    """Whether the group LIF of x runs the Triton operator (``ops.triton_group_lif``)."""
    return x.device.type == "cuda" and x.dtype in TRITON_DTYPES and _triton_reason() is None


def spike_matmul_ready(x: torch.Tensor) -> bool:
    """Whether the spike-product kernel applies to x: a CPU float32/float64 tensor, kernel built."""
    return x.device.type == "cpu" and x.dtype in spike_matmul_ops.DTYPES and _spike_matmul_reason() is None


def spike_matmul_unavailable_reason() -> str | None:
    return _spike_matmul_reason()
