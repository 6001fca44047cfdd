"""Roles of the synaptic layers whose input is not binary: the check behind multiplication-free inference.

MFI holds when every conv and linear layer sees binary input, except the encoding layer (real pixels,
once) and a readout whose input is an affine map of spike counts (docs/energy.md). The analysis report
and ``spikemlp.mfi.verify`` both name the layers this way, so a planted non-spiking path shows up at once.
"""

from __future__ import annotations

from typing import NamedTuple

from torch import nn

from .recording import ActivityRecorder

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
    return {
        name: "encoding" if st.sees_image else "readout" if name == head else "real-valued"
        for name, st in recorder.synaptic.items()
        if st.nonbinary
    }


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


__all__ = [
    "ALLOWED_ROLES",
    "NonBinaryLayer",
    "classifier_name",
    "layer_roles",
    "non_binary_layers",
    "summarise",
]
