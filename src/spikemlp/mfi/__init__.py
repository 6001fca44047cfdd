"""Multiplication-free inference (MFI): check it, fold batch norms away, and run on accumulations only.

- ``verify(model, images)`` lists the synaptic layers whose input is not binary, with their role.
- ``fold(model)`` returns an inference copy of an MLP-SPE model with every BatchNorm folded into
  neighbouring weights, biases or neuron thresholds (see ``spikemlp.mfi.fold`` for how).
- ``accumulate_only(folded)`` switches the folded model's layers on binary input to gather-and-add
  execution (no multiplications), as a demonstration and check of MFI.
"""

import torch

from ..analysis.recording import register_neuron
from ..analysis.sops import register_synaptic
from .accumulate import NonBinaryInputError, PerTokenLinear
from .fold import FoldedMLPSPE, accumulate_only, bn_affine, fold
from .neurons import ThresholdLIF
from .verify import ALLOWED_ROLES, NonBinaryLayer, classifier_name, verify

# Folded models stay analysable: the per-token Linear is a synaptic layer, the threshold LIF a neuron.
register_synaptic(
    PerTokenLinear,
    fan_out=lambda m, shape: torch.tensor(float(m.out_features), dtype=torch.float64),
    macs=lambda m, inp, out: out.numel() * m.in_features,
)
register_neuron(ThresholdLIF)

__all__ = [
    "ALLOWED_ROLES",
    "FoldedMLPSPE",
    "NonBinaryInputError",
    "NonBinaryLayer",
    "ThresholdLIF",
    "accumulate_only",
    "bn_affine",
    "classifier_name",
    "fold",
    "verify",
]
