"""Exact synaptic-operation (SOP) counts of conv and linear layers, on the inputs they actually receive.

SOPs = sum over nonzero inputs of their fan-out, the number of outputs each reaches (docs/energy.md). A
conv input position's fan-out is the gradient, at an all-ones input, of the sum of a one-channel conv with
an all-ones kernel and the layer's geometry: the number of products it takes part in, exact for any
padding mode (a reflected border element counts once per copy) and any number of spatial dims.

Custom synaptic modules (for example an axial projection written as a matmul) join by
``register_synaptic(cls, fan_out=..., macs=...)``.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache

import torch
from torch import nn

from .macs import SYNAPTIC_TYPES, layer_macs

_CONV_TYPES = (nn.Conv1d, nn.Conv2d, nn.Conv3d)

# cls -> (fan_out(module, sample_shape) -> tensor, macs(module, inp, out) -> int)
_CUSTOM: dict[type, tuple[Callable, Callable]] = {}


def register_synaptic(cls: type, fan_out: Callable, macs: Callable) -> None:
    """Make the analysis count a custom module as a synaptic layer.

    ``fan_out(module, sample_shape)`` returns a tensor broadcastable to one sample's input shape giving
    the number of outputs each input element reaches; ``macs(module, inp, out)`` returns the dense
    multiply-accumulates of one call.
    """
    _CUSTOM[cls] = (fan_out, macs)


def is_synaptic(module: nn.Module) -> bool:
    return isinstance(module, SYNAPTIC_TYPES) or type(module) in _CUSTOM


def synaptic_macs(module: nn.Module, inp: torch.Tensor, out: torch.Tensor) -> int:
    """Dense MACs of one call of any synaptic layer (built-in or registered)."""
    if type(module) in _CUSTOM:
        return int(_CUSTOM[type(module)][1](module, inp, out))
    return layer_macs(module, inp, out)


@lru_cache(maxsize=256)
def _conv_spatial_fan_out(
    dims: int, spatial: tuple, kernel: tuple, stride: tuple, padding, dilation: tuple, padding_mode: str
) -> torch.Tensor:
    conv_cls = _CONV_TYPES[dims - 1]
    probe = conv_cls(
        1, 1, kernel, stride=stride, padding=padding, dilation=dilation, bias=False, padding_mode=padding_mode
    ).double()
    with torch.no_grad():
        probe.weight.fill_(1.0)
    x = torch.ones(1, 1, *spatial, dtype=torch.float64, requires_grad=True)
    with torch.enable_grad():
        (grad,) = torch.autograd.grad(probe(x).sum(), x)
    return grad[0, 0].detach()


def conv_fan_out(module: nn.Module, sample_shape: tuple[int, ...]) -> torch.Tensor:
    """Fan-out of each input element of one sample [C_in, *spatial]: shape [1, *spatial] (same for all C)."""
    dims = len(module.kernel_size)
    spatial = tuple(int(s) for s in sample_shape[-dims:])
    padding = module.padding if isinstance(module.padding, str) else tuple(module.padding)
    geometry = (tuple(module.kernel_size), tuple(module.stride), padding, tuple(module.dilation))
    fan = _conv_spatial_fan_out(dims, spatial, *geometry, module.padding_mode)
    return (fan * (module.out_channels // module.groups)).unsqueeze(0)


def fan_out(module: nn.Module, sample_shape: tuple[int, ...]) -> torch.Tensor:
    """Number of outputs each input element of one sample reaches, broadcastable to ``sample_shape``."""
    if type(module) in _CUSTOM:
        return _CUSTOM[type(module)][0](module, tuple(sample_shape))
    if isinstance(module, nn.Linear):
        return torch.tensor(float(module.out_features), dtype=torch.float64)
    if isinstance(module, _CONV_TYPES):
        return conv_fan_out(module, tuple(sample_shape))
    raise TypeError(f"not a synaptic layer: {type(module).__name__}")


def sops_per_step(module: nn.Module, x_steps: torch.Tensor) -> torch.Tensor:
    """Exact SOPs per time step, summed over the batch, for input laid out as [S, B, *sample].

    Returns an int64 tensor of length S. Every nonzero input counts (for binary input: every spike).
    """
    return sops_from_mask(module, x_steps != 0)


def sops_from_mask(module: nn.Module, active: torch.Tensor, nonzero_per_step: torch.Tensor | None = None):
    """``sops_per_step`` from the boolean mask of nonzero inputs [S, B, *sample] (and its per-step counts)."""
    fan = fan_out(module, tuple(active.shape[2:])).to(active.device)
    if fan.dim() == 0:  # the same fan-out everywhere (linear layers): spikes x fan-out
        if nonzero_per_step is None:
            nonzero_per_step = active.flatten(1).sum(1)
        return (nonzero_per_step.to(torch.int64) * int(fan)).cpu()
    counts = active.sum(dim=1)  # [S, *sample]: spikes per input position, summed over the batch
    # Counts and fan-outs are integers well below 2**53, so the float64 products and sums are exact.
    per_step = (counts.to(torch.float64) * fan).flatten(1).sum(1)
    return per_step.round().to(torch.int64).cpu()


def count_sops(module: nn.Module, x: torch.Tensor) -> int:
    """Exact SOPs of one call of ``module`` on a batch ``x`` [B, *sample] (all nonzero inputs counted)."""
    if not is_synaptic(module):
        raise TypeError(f"count_sops needs a conv or linear layer, got {type(module).__name__}")
    return int(sops_per_step(module, x.unsqueeze(0)).sum())


__all__ = [
    "conv_fan_out",
    "count_sops",
    "fan_out",
    "is_synaptic",
    "register_synaptic",
    "sops_from_mask",
    "sops_per_step",
    "synaptic_macs",
]


def _register_model_layers() -> None:
    """spikemlp's own layers that subclass a conv but compute something else."""
    from ..layers.axial_token_mixing import AxialProjection

    # AxialProjection stores the authors' 1x1 Conv2d(N, N) but maps the N positions of one spatial axis:
    # each input element reaches the N outputs of its row (W) or column (H), whatever the layout.
    register_synaptic(
        AxialProjection,
        fan_out=lambda m, shape: torch.tensor(float(m.out_channels), dtype=torch.float64),
        macs=lambda m, inp, out: out.numel() * m.in_channels,
    )


_register_model_layers()
