"""Compact storage of spike tensors that autograd keeps for the backward pass.

Every conv/linear after a neuron saves its input, a spike tensor of 0s and 1s, for its weight gradient;
in fp32 that is 4 bytes per 1 bit of information, and most of a spiking network's training memory.
Inside :func:`compact_saved_spikes`, tensors declared binary with :func:`mark_binary` (the neurons' outputs,
and copies of them such as a concatenation of spike maps) are saved by autograd as ``torch.bool`` (1 byte) and
turned back into their dtype when the backward needs them. Values are exactly 0 and 1, so the backward
computes the same numbers; only the saved memory changes.

How a saved tensor is recognised: by its storage. ``mark_binary(t)`` records the storage of ``t`` (and
keeps a weak reference to ``t``); any view of that storage that autograd saves (``x.flatten(0, 1)``, a
transpose) is binary too. The bool copy is made once per storage and shared by every op that saves a view
of it. A record is dropped when ``t`` is garbage-collected, so a storage address reused by a new tensor
is never mistaken for spikes. Tensors saved outside the context, or never marked, are saved as usual.
"""

from __future__ import annotations

import threading
import weakref
from contextlib import contextmanager

import torch

__all__ = ["compact_saved_spikes", "mark_binary", "is_compacting"]


class _Registry:
    def __init__(self) -> None:
        self.spikes: dict[int, weakref.ref] = {}  # storage address -> the marked (contiguous) tensor
        self.packed: dict[int, torch.Tensor] = {}  # storage address -> its bool copy

    def mark(self, t: torch.Tensor) -> None:
        key = t.untyped_storage().data_ptr()
        self.spikes[key] = weakref.ref(t, lambda _ref, key=key: self._forget(key))
        self.packed.pop(key, None)

    def _forget(self, key: int) -> None:
        self.spikes.pop(key, None)
        self.packed.pop(key, None)

    def pack(self, t: torch.Tensor):
        if not t.is_floating_point() or t.layout != torch.strided:
            return t
        key = t.untyped_storage().data_ptr()
        ref = self.spikes.get(key)
        base = None if ref is None else ref()
        if base is None or base.dtype != t.dtype:
            return t
        bits = self.packed.get(key)
        if bits is None:
            bits = self.packed[key] = base.to(torch.bool)
        # The saved tensor as a view of the base: the same sizes, strides and offset into the storage.
        return bits, tuple(t.shape), t.stride(), t.storage_offset() - base.storage_offset(), t.dtype

    @staticmethod
    def unpack(saved):
        if isinstance(saved, torch.Tensor):
            return saved
        bits, shape, stride, offset, dtype = saved
        return bits.to(dtype).as_strided(shape, stride, offset)


class _Local(threading.local):
    def __init__(self) -> None:
        self.stack: list[_Registry] = []  # per thread, as PyTorch's saved-tensor hooks are


_local = _Local()


def is_compacting() -> bool:
    """True inside :func:`compact_saved_spikes` with gradients enabled."""
    return bool(_local.stack) and torch.is_grad_enabled()


def mark_binary(t: torch.Tensor) -> torch.Tensor:
    """Declare ``t`` (contiguous, values 0 and 1) a spike tensor and return it; no-op outside the context."""
    if _local.stack and torch.is_grad_enabled() and t.is_contiguous():
        _local.stack[-1].mark(t)
    return t


@contextmanager
def compact_saved_spikes(enabled: bool = True):
    """Save marked spike tensors as bool for the backward pass (see the module docs).

    Off while torch.compile traces: the compiled graph decides itself what it saves (saved-tensor hooks
    keyed on storages cannot be traced), so a compiled model trains with its usual memory."""
    if not enabled or not torch.is_grad_enabled() or torch.compiler.is_compiling():
        yield
        return
    registry = _Registry()
    stack = _local.stack
    stack.append(registry)
    try:
        with torch.autograd.graph.saved_tensors_hooks(registry.pack, registry.unpack):
            yield
    finally:
        stack.pop()
