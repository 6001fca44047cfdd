"""Dense multiply-accumulate counts of convolutions and linear layers, measured with forward hooks.

Counting on the real forward pass (rather than from a hand-written formula per model) means the count
follows whatever the model actually executes: strides, padding, groups and the axial rearrangements.
"MACs per step" follow docs/energy.md: multiply-accumulates of conv and linear layers only, per image and
per time step.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from contextlib import contextmanager

import torch
from torch import nn

SYNAPTIC_TYPES = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)


def layer_macs(module: nn.Module, inp: torch.Tensor, out: torch.Tensor) -> int:
    """MACs of one call of a conv or linear layer on the given input/output (all samples together)."""
    if isinstance(module, nn.Linear):
        return out.numel() * module.in_features
    if isinstance(module, (nn.Conv1d, nn.Conv2d, nn.Conv3d)):
        return out.numel() * (module.in_channels // module.groups) * math.prod(module.kernel_size)
    raise TypeError(f"not a synaptic layer: {type(module).__name__}")


@contextmanager
def _hooks(model: nn.Module, fn):
    handles = [
        m.register_forward_hook(lambda mod, i, o, name=name: fn(name, mod, i[0], o))
        for name, m in model.named_modules()
        if isinstance(m, SYNAPTIC_TYPES)
    ]
    try:
        yield
    finally:
        for h in handles:
            h.remove()


@torch.no_grad()
def count_macs(model: nn.Module, x: torch.Tensor) -> OrderedDict[str, int]:
    """Per-layer MACs of one forward pass of ``model(x)`` (summed over repeated calls of a layer)."""
    counts: OrderedDict[str, int] = OrderedDict()

    def record(name, mod, i, o):
        counts[name] = counts.get(name, 0) + layer_macs(mod, i, o)

    was_training = model.training
    model.eval()
    try:
        with _hooks(model, record):
            model(x)
    finally:
        model.train(was_training)
    return counts


@contextmanager
def _single_step(model: nn.Module):
    """Temporarily run a spiking model with T = 1, so that a forward pass is one time step."""
    if hasattr(model, "T"):
        old = model.T
        model.T = 1
        try:
            yield
        finally:
            model.T = old
    else:
        yield


def macs_per_step(model: nn.Module, img_size: int | tuple[int, int] | None = None, in_chans: int = 3):
    """Per-layer MACs per image and per time step, on a zero image of the model's input size."""
    if img_size is None:
        cfg = getattr(model, "pretrained_cfg", None) or getattr(model, "default_cfg", None) or {}
        img_size = cfg.get("input_size", (in_chans, 224, 224))[1:]
    if isinstance(img_size, int):
        img_size = (img_size, img_size)
    param = next(model.parameters())
    x = torch.zeros(1, in_chans, *img_size, dtype=param.dtype, device=param.device)
    with _single_step(model):
        return count_macs(model, x)
