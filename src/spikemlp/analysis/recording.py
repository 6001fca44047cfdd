"""Forward hooks that record what every synaptic layer receives and what every neuron layer emits.

One ``ActivityRecorder`` watches a model over many batches and keeps running sums only (no activations
are stored except a short spike raster of one image), so it can run over a whole test set.

Time layout. spikemlp's stateless layers see the T steps merged into the batch ([T*B, ...], T outer) or
as a leading axis ([T, B, ...]); a layer fed the image once for all steps (the stage-0 conv) sees [B, ...].
The recorder tells these apart from T and the batch size B of the current forward pass, which the caller
sets with ``recorder.batch(B)``. Neuron layers always take and return [T, ...].
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
from torch import nn

from ..neurons import IF, LIF
from ..neurons.group_lif import GroupLIF
from .sops import is_synaptic, sops_from_mask, synaptic_macs

# cls -> (fired(module, output) -> bool tensor: which outputs count as a spike, steps_first: whether the
# output is [T, ...] (spiking nodes) or [B, ...] with no time axis (SNN-MLP's group LIF)).
_NEURONS: dict[type, tuple[Callable, bool]] = {}


def register_neuron(cls: type, fired: Callable | None = None, steps_first: bool = True) -> None:
    """Count ``cls`` as a neuron layer; ``fired(module, out)`` says which outputs are spikes."""
    _NEURONS[cls] = (fired or (lambda m, out: out != 0), steps_first)


def _group_lif_fired(module, out: torch.Tensor) -> torch.Tensor:
    # y = max(u, V_th) and a position fired iff u > V_th, i.e. iff y > V_th. Only positions inside a
    # whole group are neurons; the L mod s positions past the last group pass through and are left out.
    axis = module.axis % out.dim()
    length = out.shape[axis]
    s = length if module.group_size == 0 else module.group_size
    n = (length // s) * s if s > 0 else 0
    return out.narrow(axis, 0, n) > module.v_th.to(out.dtype)


register_neuron(LIF)
register_neuron(IF)
register_neuron(GroupLIF, _group_lif_fired, steps_first=False)


def is_neuron(module: nn.Module) -> bool:
    return type(module) in _NEURONS


def _first_tensor(out):
    if isinstance(out, torch.Tensor):
        return out
    if isinstance(out, (tuple, list)) and out and isinstance(out[0], torch.Tensor):
        return out[0]  # e.g. (spikes, membrane) with return_membrane=True
    return None


def split_steps(x: torch.Tensor, T: int, B: int) -> torch.Tensor:
    """View a synaptic layer's input as [S, B, *sample]: S = T for per-step input, 1 for a shared one."""
    n0 = x.shape[0]
    if T > 1 and n0 == T * B:
        return x.reshape(T, B, *x.shape[1:])
    if T > 1 and x.dim() >= 2 and n0 == T and x.shape[1] == B:
        return x
    if n0 == B:
        return x.unsqueeze(0)
    raise ValueError(
        f"cannot tell time steps from batch in an input of shape {tuple(x.shape)} (T={T}, batch={B}); "
        "layers must see [T*B, ...], [T, B, ...] or [B, ...]"
    )


@dataclass
class SynapticStats:
    """Running sums for one synaptic layer, over all recorded batches."""

    name: str
    layer_type: str
    calls: int = 0
    numel_per_step: list[int] = field(default_factory=list)  # input elements per step, summed over images
    nonzero_per_step: list[int] = field(default_factory=list)
    sops_per_step: list[int] = field(default_factory=list)
    nonbinary: int = 0  # input elements that are neither 0 nor 1
    numel: int = 0
    dense_macs: int = 0  # dense MACs actually executed, all calls
    repeats_over_steps: bool = True  # input identical at every step (direct encoding) in every call
    source_neuron: str | None = None  # the neuron layer that fired last before this layer's first call
    sees_image: bool = False  # its input is the model's input images (per step or once)


@dataclass
class NeuronStats:
    name: str
    layer_type: str
    spikes_per_step: list[int] = field(default_factory=list)
    numel_per_step: list[int] = field(default_factory=list)
    neurons_per_image: int = 0
    raster: torch.Tensor | None = None  # [T, n] spikes of the first recorded image, first n neurons


class ActivityRecorder:
    """Hooks on every synaptic and neuron layer of ``model``; use as a context manager.

    ``T`` is the number of time steps a forward pass runs (``model.T``, 1 for non-spiking models).
    """

    def __init__(self, model: nn.Module, T: int = 1, raster_neurons: int = 64, count_sops: bool = True):
        self.model = model
        self.T = int(T)
        self.raster_neurons = raster_neurons
        self.count_sops = count_sops
        self.synaptic: dict[str, SynapticStats] = {}
        self.neurons: dict[str, NeuronStats] = {}
        self._B: int | None = None
        self._images: torch.Tensor | None = None
        self._handles: list = []
        self._raster_taken: set[str] = set()
        self._last_neuron: str | None = None
        self.modules = dict(model.named_modules())
        self.images = 0

    # -- batch bookkeeping ------------------------------------------------------------------
    @contextmanager
    def batch(self, B: int, images: torch.Tensor | None = None):
        """Declare the batch size (and optionally the input images) of the forward pass(es) in this block."""
        self._B = int(B)
        self._images = images
        self.images += self._B
        self._last_neuron = None
        try:
            yield
        finally:
            self._B = None
            self._images = None

    # -- hooks ------------------------------------------------------------------------------
    def _synaptic_hook(self, name: str):
        def hook(module, inputs, output):
            if self._B is None or not inputs or not isinstance(inputs[0], torch.Tensor):
                return
            x = inputs[0].detach()
            out = _first_tensor(output)
            if name not in self.synaptic:
                self.synaptic[name] = SynapticStats(
                    name, type(module).__name__, source_neuron=self._last_neuron
                )
            st = self.synaptic[name]
            img = self._images
            if img is not None and x.shape == img.shape and x.data_ptr() == img.data_ptr():
                xs = x.unsqueeze(0)  # the images themselves: one computation for all steps
            else:
                xs = split_steps(x, self.T, self._B)
            S = xs.shape[0]
            if st.calls == 0 and self._images is not None and xs.shape[1:] == self._images.shape:
                st.sees_image = bool((xs == self._images.to(xs.dtype)).all())
            st.calls += 1
            active = xs != 0
            nonzero = active.flatten(1).sum(1)
            _accumulate(st.numel_per_step, [xs[0].numel()] * S)
            _accumulate(st.nonzero_per_step, nonzero.tolist())
            if self.count_sops:
                _accumulate(st.sops_per_step, sops_from_mask(module, active, nonzero).tolist())
            nonbinary = int((active & (xs != 1)).sum())
            st.nonbinary += nonbinary
            st.numel += x.numel()
            st.dense_macs += synaptic_macs(module, x, out)
            if nonbinary and S > 1 and st.repeats_over_steps:
                st.repeats_over_steps = bool((xs == xs[:1]).all())

        return hook

    def _neuron_hook(self, name: str):
        def hook(module, inputs, output):
            out = _first_tensor(output)
            if self._B is None or out is None:
                return
            fired_fn, steps_first = _NEURONS[type(module)]
            fired = fired_fn(module, out.detach())
            if not steps_first:
                fired = fired.unsqueeze(0)
            self._last_neuron = name
            st = self.neurons.setdefault(name, NeuronStats(name, type(module).__name__))
            steps = fired.shape[0]
            per_step = fired.flatten(1).sum(1, dtype=torch.int64).tolist()
            _accumulate(st.spikes_per_step, per_step)
            _accumulate(st.numel_per_step, [fired[0].numel()] * steps)
            st.neurons_per_image = fired[0].numel() // self._B
            if name not in self._raster_taken and fired[0].numel() % self._B == 0:
                # Batch-major inside a step ([B, ...] or [B*N, ...]), so the first block is image 0.
                first = fired.reshape(steps, self._B, -1)[:, 0]
                idx = torch.linspace(0, first.shape[1] - 1, min(self.raster_neurons, first.shape[1]))
                st.raster = first[:, idx.long()].to(torch.uint8).cpu()
                self._raster_taken.add(name)

        return hook

    def __enter__(self) -> ActivityRecorder:
        for name, m in self.model.named_modules():
            if is_synaptic(m):
                self._handles.append(m.register_forward_hook(self._synaptic_hook(name)))
            elif is_neuron(m):
                self._handles.append(m.register_forward_hook(self._neuron_hook(name)))
        return self

    def __exit__(self, *exc) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()


def _accumulate(acc: list[int], values: list[int]) -> None:
    if len(acc) < len(values):
        acc.extend([0] * (len(values) - len(acc)))
    for i, v in enumerate(values):
        acc[i] += int(v)


__all__ = ["ActivityRecorder", "NeuronStats", "SynapticStats", "is_neuron", "register_neuron", "split_steps"]
