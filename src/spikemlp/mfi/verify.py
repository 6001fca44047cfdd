"""Check multiplication-free inference: which synaptic layers receive something other than spikes.

MFI holds when every conv and linear layer sees binary input (its work is then accumulating weights),
except two layers that are allowed by design: the encoding layer, which multiplies real pixels once, and a
readout whose real-valued input is an affine map of spike counts (linear(mean(BN(spikes))) folds into one
accumulation per spike and one scaling per class). ``verify`` runs the model with hooks and lists every
layer with non-binary input, with its role, so a planted non-spiking path shows up at once.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn

from ..analysis.recording import ActivityRecorder

ALLOWED_ROLES = ("encoding", "readout")


class NonBinaryLayer(NamedTuple):
    """A synaptic layer whose input is not binary: name, fraction of non-binary input values, role.

    Roles: "encoding" (its input is the image itself), "readout" (the classifier, fed from
    spikes through an affine map and a mean), "real-valued" (anything else: breaks MFI).
    """

    name: str
    fraction: float
    role: str


def classifier_name(model: nn.Module) -> str | None:
    """Qualified name of the model's classifier (timm's ``get_classifier``), if it has one."""
    get = getattr(model, "get_classifier", None)
    head = get() if callable(get) else None
    if isinstance(head, nn.Module):
        for name, m in model.named_modules():
            if m is head:
                return name
    return None


def layer_roles(recorder: ActivityRecorder, model: nn.Module) -> dict[str, str]:
    """Role of every recorded synaptic layer whose input is not binary."""
    head = classifier_name(model)
    roles = {}
    for name, st in recorder.synaptic.items():
        if st.nonbinary == 0:
            continue
        if st.sees_image:
            roles[name] = "encoding"
        elif name == head:
            roles[name] = "readout"
        else:
            roles[name] = "real-valued"
    return roles


def non_binary_layers(recorder: ActivityRecorder, model: nn.Module) -> list[NonBinaryLayer]:
    roles = layer_roles(recorder, model)
    return [
        NonBinaryLayer(name, st.nonbinary / st.numel, roles[name])
        for name, st in recorder.synaptic.items()
        if name in roles
    ]


def summarise(layers: list[NonBinaryLayer], n_synaptic: int) -> dict:
    """JSON-ready MFI verdict for a report."""
    breaking = [item for item in layers if item.role not in ALLOWED_ROLES]
    is_mfi = not breaking and n_synaptic > 0
    if is_mfi:
        allowed = ", ".join(f"{item.name} ({item.role})" for item in layers) or "none"
        summary = (
            f"MFI holds: {n_synaptic - len(layers)} of {n_synaptic} synaptic layers receive binary spikes "
            f"only; the others are {allowed}."
        )
    else:
        allowed = [item for item in layers if item.role in ALLOWED_ROLES]
        besides = (
            f" (besides {', '.join(f'{item.name} ({item.role})' for item in allowed)})" if allowed else ""
        )
        summary = (
            f"Not multiplication-free: {len(breaking)} of {n_synaptic} synaptic layers receive real-valued "
            f"input{besides} and cost MACs."
        )
    return {
        "is_mfi": is_mfi,
        "summary": summary,
        "synaptic_layers": n_synaptic,
        "non_binary_layers": [item._asdict() for item in layers],
    }


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
