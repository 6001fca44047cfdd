"""``verify``: check multiplication-free inference on real inputs (roles: spikemlp.analysis.layer_roles)."""

from __future__ import annotations

import torch
from torch import nn

from ..analysis.layer_roles import (
    ALLOWED_ROLES,
    NonBinaryLayer,
    classifier_name,
    layer_roles,
    non_binary_layers,
    summarise,
)
from ..analysis.recording import ActivityRecorder


@torch.no_grad()
def verify(model: nn.Module, images: torch.Tensor) -> list[NonBinaryLayer]:
    """Run ``model(images)`` in eval mode and list every synaptic layer whose input is not binary.

    For MLP-SPE the list holds only the stage-0 conv (role "encoding") and the classifier ("readout");
    for SNN-MLP it holds every layer (role "real-valued" after the first), which means: not MFI.
    """
    if not isinstance(images, torch.Tensor) or images.dim() != 4:
        shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise ValueError(f"verify expects a batch of images [B, C, H, W], got {shape}")
    was_training = model.training
    model.eval()
    try:
        with ActivityRecorder(model, T=getattr(model, "T", 1), count_sops=False) as rec:
            with rec.batch(images.shape[0], images):
                model(images)
    finally:
        model.train(was_training)
    if not rec.synaptic:
        raise ValueError(f"{type(model).__name__} has no conv or linear layer to verify")
    return non_binary_layers(rec, model)


__all__ = ["ALLOWED_ROLES", "NonBinaryLayer", "classifier_name", "layer_roles", "summarise", "verify"]
