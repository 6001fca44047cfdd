"""Training memory of an MLP-SPE model: the one switch, and what each of its parts keeps for the backward.

``MemorySaving`` is shared by every block of a model (the model builds one and hands it to its blocks),
so a switch flipped on the model holds for all of them. None of its parts changes a result: outputs,
gradients and BatchNorm statistics are bit for bit those of the plain layers (tests/models/test_mlp_spe.py).

- ``compact_spikes``: spikes that autograd saves are kept as bool, 1 byte instead of 4 in float32
  (``spikemlp.neurons.spike_storage``);
- ``fused_bn_lif``: a BatchNorm followed by a neuron keeps BN's input only, and recomputes BN in the
  backward (``spikemlp.neurons.bn_lif.batch_norm_lif``);
- ``recompute_projection``: an axial projection or the channel MLP's first Linear, followed by BN and a
  neuron, keeps its input spikes (compact) instead of its output, and recomputes the output in the
  backward (``projection_batch_norm_lif``).

All on keeps the least for the backward; all off (``memory_saving=False``) trains faster where memory is
no concern, such as the CPU speed run's small model (figures in BENCHMARKS.md).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from ..neurons.bn_lif import projection_batch_norm_lif


@dataclass
class MemorySaving:
    """Which training-memory savings a model's blocks use (see the module docs); all on by default."""

    compact_spikes: bool = True
    fused_bn_lif: bool = True
    recompute_projection: bool = True

    @classmethod
    def all(cls, enabled: bool) -> MemorySaving:
        on = bool(enabled)
        return cls(compact_spikes=on, fused_bn_lif=on, recompute_projection=on)

    def projection_bn_lif(
        self, inp, proj: nn.Module, project: Callable, bn_view: Callable, bn, lif, T: int, from_bn=None
    ) -> torch.Tensor:
        """Spikes ``from_bn(lif(bn(bn_view(proj(inp)))), y)``, keeping for the backward what this
        setting says (arguments as for ``projection_batch_norm_lif``)."""
        # Where the recomputation falls back, it fuses BN and the neuron whatever ``fused_bn_lif`` says.
        fuse = self.fused_bn_lif or self.recompute_projection
        return projection_batch_norm_lif(
            inp, proj, project, bn_view, bn, lif, T, from_bn, self.recompute_projection, fuse
        )
