"""The spike-driven product as the ``torch.library`` operator ``spikemlp::spike_matmul`` (inference only).

The CPU implementation is the C++ kernel ``csrc/spike_matmul_cpu.cpp``: for each output row it adds the
packed weight rows of its active inputs only. The operator takes the weights already packed ([K, Dp], Dp
= D rounded up to 16), the optional grouped-sums table, the padded bias, the optional affine epilogues
and the fused neuron as numbers (``T = 0``: none). It has a fake implementation (one node under
torch.compile) and no autograd. Its Python entry point, which validates the arguments, is
``spikemlp.layers.spike_matmul.spike_matmul``.
"""

from __future__ import annotations

import ctypes
from pathlib import Path

import torch

from ._build import NativeLibrary, data_ptr

DTYPE_CODES = {torch.float32: 0, torch.float64: 1}
DTYPES = tuple(DTYPE_CODES)
MAX_SEGMENTS = 3


def _declare(lib: ctypes.CDLL) -> None:
    i64, ptr, i32, f64 = ctypes.c_int64, ctypes.c_void_p, ctypes.c_int, ctypes.c_double
    lib.spikemlp_spike_matmul.restype = i32
    lib.spikemlp_spike_matmul.argtypes = [
        i32, i32, ptr, ptr, ptr, ptr, i32, i64, i64, i64, ptr, ptr, ptr, i64, i64, ptr, ptr, ptr, ptr,
        ptr, ptr, ptr, i32, i64, i32, i32, f64, f64, f64, i32,
    ]  # fmt: skip


_LIBRARY = NativeLibrary(Path(__file__).with_name("csrc") / "spike_matmul_cpu.cpp", _declare)


def unavailable_reason() -> str | None:
    """None if the kernel is ready (built on first call), else why not."""
    return _LIBRARY.unavailable_reason()


def out_shape(segments, planar_in: bool, planar_out: bool, out_features: int) -> tuple[int, int, int]:
    M, P = segments[0].shape[0], segments[0].shape[2 if planar_in else 1]
    return (M, out_features, P) if planar_out else (M, P, out_features)


def _out_dtype(segments, dtype: torch.dtype | None, T: int) -> torch.dtype:
    return torch.uint8 if T > 0 else (dtype or segments[0].dtype)


@torch.library.custom_op("spikemlp::spike_matmul", mutates_args=(), device_types="cpu")
def spike_matmul(
    segments: list[torch.Tensor],
    weight_t: torch.Tensor,
    table: torch.Tensor | None,
    bias: torch.Tensor | None,
    col_scale: torch.Tensor | None,
    col_shift: torch.Tensor | None,
    row_scale: torch.Tensor | None,
    row_shift: torch.Tensor | None,
    addend: torch.Tensor | None,
    keep_values: bool,
    out_features: int,
    planar_in: bool,
    planar_out: bool,
    dtype: torch.dtype | None,
    T: int,
    charge_mode: int,
    hard_reset: bool,
    tau: float,
    v_threshold: float,
    v_reset: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """epilogue(x @ W^T + b) for x the channel concatenation of ``segments`` (each [M, K_s, P] planar,
    else [M, P, K_s]); [M, D, P] if ``planar_out`` else [M, P, D], in ``dtype`` (default: the segments'),
    or the neuron's spikes as uint8 when ``T > 0``. Column epilogue tensors have Dp entries, row ones P.
    ``addend`` (the output's shape, contiguous) is added after the epilogue. Returns (output, values):
    with ``keep_values`` (and a neuron) values are the neuron's inputs in the output's shape and the
    compute dtype, else an empty tensor."""
    inner = (2, 1) if planar_in else (1, 2)  # (position, channel) dims
    segs = list(segments)
    # The kernel reads segments that share their channel stride and have a dense last dim.
    if len({s.stride(inner[1]) for s in segs}) > 1 or any(s.stride(2) != 1 for s in segs):
        segs = [s.contiguous() for s in segs]
    M, P = segs[0].shape[0], segs[0].shape[inner[0]]
    out_dtype = _out_dtype(segs, dtype, T)
    compute = dtype or segs[0].dtype
    shape = out_shape(segs, planar_in, planar_out, out_features)
    out = torch.empty(shape, dtype=out_dtype)
    values = torch.empty(shape if keep_values else (0,), dtype=compute)
    bases = (ctypes.c_void_p * MAX_SEGMENTS)(*[s.data_ptr() for s in segs])
    counts = (ctypes.c_int64 * MAX_SEGMENTS)(*[s.shape[inner[1]] for s in segs])
    image_strides = (ctypes.c_int64 * MAX_SEGMENTS)(*[s.stride(0) for s in segs])
    position_strides = (ctypes.c_int64 * MAX_SEGMENTS)(*[s.stride(inner[0]) for s in segs])
    status = _LIBRARY.get().spikemlp_spike_matmul(
        DTYPE_CODES[compute], int(segs[0].dtype == torch.uint8), bases, counts, image_strides,
        position_strides, len(segs), M, P, segs[0].stride(inner[1]), data_ptr(weight_t), data_ptr(table),
        data_ptr(bias), out_features, weight_t.shape[1], data_ptr(col_scale), data_ptr(col_shift),
        data_ptr(row_scale), data_ptr(row_shift), data_ptr(addend), data_ptr(values if keep_values else None),
        data_ptr(out), int(planar_out), T, charge_mode, int(hard_reset), tau, v_threshold, v_reset,
        torch.get_num_threads(),
    )  # fmt: skip
    if status != 0:
        raise RuntimeError(f"spikemlp spike matmul failed with status {status}")
    return out, values


@spike_matmul.register_fake
def _(segments, weight_t, table, bias, col_scale, col_shift, row_scale, row_shift, addend, keep_values,
      out_features, planar_in, planar_out, dtype, T, charge_mode, hard_reset, tau, v_threshold,
      v_reset):  # fmt: skip
    shape = out_shape(segments, planar_in, planar_out, out_features)
    compute = dtype or segments[0].dtype
    values = segments[0].new_empty(shape if keep_values else (0,), dtype=compute)
    return segments[0].new_empty(shape, dtype=_out_dtype(segments, dtype, T)), values
