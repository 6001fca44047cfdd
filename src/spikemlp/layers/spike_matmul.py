"""Spike-driven products for inference on the CPU: Linear and 1x1 convolution that skip zero inputs.

``spike_matmul`` computes what a Linear or a 1x1 convolution computes with the operator
``spikemlp::spike_matmul`` (``spikemlp.ops.spike_matmul``), which adds, for each output, the weight rows
of its active inputs only: the work falls with the firing rate, and on 0/1 inputs no weight is multiplied
(other inputs are still computed correctly). It reads its input where it lies (token rows or NCHW
planes, a concatenation as its separate parts), writes either layout, and can apply an inference
BatchNorm on the way out, so the layers around it need no transposes, concatenations or BN passes. For
the layers that feed a neuron, ``grouped`` adds precomputed sums of weight rows on dense rows, and
``neuron`` runs the LIF that follows in the kernel's epilogue, writing only its spikes (as bytes).

Results differ from PyTorch's dense path only by float rounding (sums in another order). An inference
path: no autograd, CPU, float32 and float64; ``available(x)`` says whether it applies. In eager mode a
:class:`PackedWeight` keeps each layer's packed weights between calls; while torch.compile traces, the
packing is plain tensor ops in the graph (:func:`pack`; a cache keyed on storage addresses cannot be
traced), so the product traces with ``fullgraph=True``.
"""

from __future__ import annotations

import weakref
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..neurons.bn_lif import observed
from ..neurons.lif import LIF, lif_spec
from ..neurons.neuron_spec import NeuronSpec
from ..ops import select
from ..ops import spike_matmul as _op
from .batch_norm_fold import inference_affine

__all__ = [
    "PackedWeight", "applies", "available", "fused_neuron", "grouped_sums", "inference_affine",
    "spike_conv1x1", "spike_linear", "spike_matmul", "unavailable_reason",
]  # fmt: skip


def unavailable_reason() -> str | None:
    """None if the kernel is ready (built on first call), else why not."""
    return select.spike_matmul_unavailable_reason()


def available(x: torch.Tensor) -> bool:
    """Whether the kernel applies to x: CPU, float32/float64, no gradient wanted, kernel built
    (``spikemlp.ops.select``). Also while torch.compile traces: the operator is one node of the graph."""
    return not (torch.is_grad_enabled() and x.requires_grad) and select.spike_matmul_ready(x)


def fused_neuron(layer: nn.Module) -> NeuronSpec | None:
    """What the kernel's epilogue computes for ``layer``, or None if it cannot: an :class:`LIF` (exactly;
    a subclass may compute something else) with a fixed tau and no membrane output, that no hook observes
    (analysis tools then see it run as itself)."""
    if type(layer) is not LIF or layer.tau_logit is not None or layer.return_membrane or observed(layer):
        return None
    return lif_spec(layer)


def applies(layers: Sequence[nn.Module], x: torch.Tensor) -> bool:
    """``available(x)``, no gradient wanted for the layers' parameters, and no hook observes them
    (analysis tools that hook synaptic layers then see them run as themselves)."""
    if not available(x) or any(observed(m) for m in layers):
        return False
    return not torch.is_grad_enabled() or not any(p.requires_grad for m in layers for p in m.parameters())


class PackedWeight:
    """A weight [D, K, ...] transposed to [K, Dp] (Dp: D rounded up to 16, zero columns) and its bias
    padded to Dp: the kernel's layout; and, once asked for (``grouped``), its table of grouped sums.
    Rebuilt when the weight or bias changes: another tensor (held by weak reference, so a freed one
    never matches), new storage, or an in-place update (version counter). Copies of a module
    (deepcopy, pickle) repack for their own weights on first use."""

    def __init__(self) -> None:
        self._refs: tuple = (None, None)  # weak references to the packed weight and bias
        self._key = None
        self.wt = self.bias = self.table = None

    def release(self) -> None:
        """Drop the packed copies (they are rebuilt on next use)."""
        self.__init__()

    def __reduce__(self):
        # Copies and pickles start empty: a copy's weights are other tensors (packed on first use),
        # and a pickle carries no weak references or duplicate weights.
        return (PackedWeight, ())

    @staticmethod
    def _state(t: torch.Tensor | None):
        return None if t is None else (t.data_ptr(), t._version, tuple(t.shape))

    def get(
        self, weight: torch.Tensor, bias: torch.Tensor | None, dtype: torch.dtype, grouped: bool = False
    ) -> PackedWeight:
        key = (self._state(weight), self._state(bias), dtype)
        packed = [None if ref is None else ref() for ref in self._refs]
        if packed[0] is not weight or packed[1] is not bias or key != self._key:
            with torch.no_grad():
                self.wt, self.bias, self.table = pack(weight, bias, dtype)  # the table: on demand, below
            self._refs = tuple(None if t is None else weakref.ref(t) for t in (weight, bias))
            self._key = key
        if grouped and self.table is None:
            self.table = grouped_sums(self.wt)
        return self


def pack(weight: torch.Tensor, bias: torch.Tensor | None, dtype: torch.dtype, grouped: bool = False):
    """(wt [K, Dp], bias [Dp] or None, grouped sums or None): the kernel's layout of a weight [D, K, ...]
    and its bias, as plain tensor ops (what :class:`PackedWeight` caches; traced as is by torch.compile)."""
    wt = _pad_columns(weight.detach().reshape(weight.shape[0], -1).t().to(dtype))
    padded = None if bias is None else _pad_columns(bias.detach().to(dtype))
    return wt, padded, (grouped_sums(wt) if grouped else None)


def grouped_sums(wt: torch.Tensor) -> torch.Tensor:
    """The kernel's table of grouped sums for packed weights wt [K, Dp]: row 16 * g + c is the sum of
    the rows 4 g + b of wt for the bits b of c (added from the lowest bit up; zero rows past K), so
    [ceil(K / 4) * 16, Dp], four times wt."""
    K, Dp = wt.shape
    quads = F.pad(wt, (0, 0, 0, -K % 4)).view(-1, 4, Dp)
    table = wt.new_zeros(quads.shape[0], 16, Dp)
    for c in range(1, 16):
        top = c.bit_length() - 1  # c = (c without its top bit) + that bit, so the sum runs in bit order
        table[:, c] = table[:, c ^ (1 << top)] + quads[:, top]
    return table.view(-1, Dp)


def _pad_columns(t: torch.Tensor) -> torch.Tensor:
    return F.pad(t, (0, -t.shape[-1] % 16)).contiguous()


def spike_matmul(
    segments: Sequence[torch.Tensor],
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    packed: PackedWeight,
    planar_in: bool,
    planar_out: bool,
    col_affine: tuple[torch.Tensor, torch.Tensor] | None = None,
    row_affine: tuple[torch.Tensor, torch.Tensor] | None = None,
    grouped: bool = False,
    neuron: tuple[int, nn.Module] | None = None,
    dtype: torch.dtype | None = None,
    addend: torch.Tensor | None = None,
    keep_values: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """y = x @ weight^T + bias over the channels of x, then optional inference affines, for spikes x.

    x is the channel concatenation of ``segments`` (1 to 3 tensors, not copied): each [M, K_s, P] if
    ``planar_in`` (NCHW planes, P = H * W), else [M, P, K_s]. ``weight``: [D, sum K_s] (or a 1x1
    convolution's [D, K, 1, 1]). ``col_affine`` (scale, shift) [D] applies per output channel, then
    ``row_affine`` [P] per position. Returns [M, D, P] if ``planar_out``, else [M, P, D]. ``grouped``:
    rows of 0/1 inputs with at least 20% of them active add precomputed sums of up to four weight rows
    (``grouped_sums``, kept in ``packed``) instead of the rows one by one; same values up to rounding.

    ``neuron`` (T, an LIF layer that ``fused_neuron`` accepts): the outputs, images ordered [T, B], charge
    the neuron in the kernel and its spikes come back instead, as uint8 0/1 in the output layout (the
    outputs are never stored). Segments may be uint8 spikes; ``dtype`` then gives the compute dtype.

    ``addend`` (a tensor of the output's shape in the compute dtype) is added after the affines, before
    the neuron: a residual sum that needs no pass of its own. ``keep_values`` (with ``neuron``) returns
    (spikes, the neuron's inputs) instead of the spikes alone.
    """
    dtype = _checked_dtype(segments, weight, bias, planar_in, dtype, col_affine, row_affine)
    if torch.compiler.is_compiling():
        wt, padded_bias, table = pack(weight, bias, dtype, grouped)
    else:
        packed = packed.get(weight, bias, dtype, grouped)
        wt, padded_bias, table = packed.wt, packed.bias, packed.table if grouped else None
    col = (None, None) if col_affine is None else [_pad_columns(t.to(dtype)) for t in col_affine]
    row = (None, None) if row_affine is None else [t.to(dtype).contiguous() for t in row_affine]
    T, mode, hard, tau, v_th, v_reset = _neuron_numbers(neuron, segments[0].shape[0])
    shape = _op.out_shape(segments, planar_in, planar_out, weight.shape[0])
    if addend is not None:
        if tuple(addend.shape) != shape or addend.dtype != dtype or addend.device.type != "cpu":
            raise ValueError(
                f"spike_matmul: addend must be a {dtype} CPU tensor of the output's shape {shape}, got "
                f"{addend.dtype} {tuple(addend.shape)} on {addend.device}"
            )
        addend = addend.contiguous()
    if keep_values and neuron is None:
        raise ValueError("spike_matmul: keep_values returns the neuron's inputs; it needs neuron=")
    out, values = torch.ops.spikemlp.spike_matmul(
        list(segments), wt, table, padded_bias, *col, *row, addend, keep_values, weight.shape[0], planar_in,
        planar_out, dtype, T, mode, hard, tau, v_th, v_reset,
    )  # fmt: skip
    return (out, values) if keep_values else out


def _checked_dtype(segments, weight, bias, planar_in: bool, dtype, col_affine, row_affine) -> torch.dtype:
    """The compute dtype, after checking the segments (count, device, dtype, shape), weight and affines."""
    if not 1 <= len(segments) <= _op.MAX_SEGMENTS:
        raise ValueError(f"spike_matmul takes 1 to {_op.MAX_SEGMENTS} input segments, got {len(segments)}")
    first = segments[0]
    dtype = dtype or first.dtype
    if dtype not in _op.DTYPE_CODES or not (first.dtype == torch.uint8 or dtype == first.dtype):
        raise ValueError(
            f"spike_matmul computes in float32 or float64 on inputs of that dtype or uint8 spikes, got "
            f"{first.dtype} inputs and dtype {dtype}; pass dtype= (float32 or float64) with uint8 spikes"
        )
    position, channel = (2, 1) if planar_in else (1, 2)
    M, P = first.shape[0], first.shape[position]
    for s in segments:
        if s.device.type != "cpu":
            raise ValueError(f"spike_matmul runs on the CPU; a segment is on {s.device}")
        if s.dim() != 3 or s.shape[0] != M or s.shape[position] != P or s.dtype != first.dtype:
            raise ValueError(f"spike_matmul segments must share M={M}, P={P} and dtype; got {tuple(s.shape)}")
    if weight.device.type != "cpu" or (bias is not None and bias.device.type != "cpu"):
        raise ValueError(f"spike_matmul runs on the CPU; the weight is on {weight.device}")
    channels, K = sum(s.shape[channel] for s in segments), weight[0].numel()
    if channels != K:
        raise ValueError(f"spike_matmul: the input has {channels} channels, the weight expects {K}")
    for name, affine, n in (("col_affine", col_affine, weight.shape[0]), ("row_affine", row_affine, P)):
        if affine is not None and any(t.shape != (n,) for t in affine):
            shapes = [tuple(t.shape) for t in affine]
            raise ValueError(f"spike_matmul: {name} must be two tensors [{n}], got {shapes}")
    return dtype


def _neuron_numbers(neuron: tuple[int, nn.Module] | None, M: int):
    """(T, mode, hard reset, tau, V_th, V_reset) of the fused neuron; T = 0 for none."""
    if neuron is None:
        return 0, 0, False, 0.0, 0.0, 0.0
    T, layer = neuron
    spec = fused_neuron(layer)
    if spec is None:
        raise ValueError(f"spike_matmul cannot fuse {type(layer).__name__}: see fused_neuron")
    if T < 1 or M % T:
        raise ValueError(f"spike_matmul: {M} images are not T = {T} steps of a batch")
    return T, spec.mode, spec.hard_reset, float(layer.tau), spec.v_threshold, spec.reset_value


def spike_linear(x: torch.Tensor, layer: nn.Linear, packed: PackedWeight) -> torch.Tensor:
    """``layer(x)`` for spikes x [..., K] by the kernel (callers check ``applies`` first)."""
    rows = x.reshape(1, -1, x.shape[-1])
    y = spike_matmul([rows], layer.weight, layer.bias, packed, planar_in=False, planar_out=False)
    return y.view(*x.shape[:-1], layer.out_features)


def spike_conv1x1(x: torch.Tensor, layer: nn.Conv2d, packed: PackedWeight) -> torch.Tensor:
    """``layer(x)`` for a 1x1 convolution (stride 1, groups 1) on spikes x [M, K, H, W], NCHW in and out
    (callers check ``applies`` first)."""
    M, K, H, W = x.shape
    planes = x.reshape(M, K, H * W)
    y = spike_matmul([planes], layer.weight, layer.bias, packed, planar_in=True, planar_out=True)
    return y.view(M, -1, H, W)
