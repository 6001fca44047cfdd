"""A named model with plain weights: a ``.safetensors`` file, a spikemlp checkpoint, or a PyTorch file
(``.pt``/``.pth``, read by ``spikemlp.convert.reader``) such as the SNN-MLP authors' snnmlp_tiny_81.88.pt,
whose keys the model family's ``checkpoint_filter_fn`` converts. Used by ``export``, ``eval`` and ``analyze``.
"""

from __future__ import annotations

import importlib
from pathlib import Path

import torch
from torch import nn

from ..convert.reader import TORCH_SUFFIXES, read_state_dict


def read_weights(path: Path) -> dict:
    if not path.exists():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    if path.is_file() and path.suffix in TORCH_SUFFIXES:
        return read_state_dict(path)
    from ..checkpoint import load_weights

    state_dict, _ = load_weights(path)
    return state_dict


def load_into(model: nn.Module, state_dict: dict, source: Path) -> None:
    # A model family may define timm's checkpoint_filter_fn(state_dict, model) for foreign layouts.
    filter_fn = getattr(importlib.import_module(type(model).__module__), "checkpoint_filter_fn", None)
    if filter_fn is not None:
        state_dict = filter_fn(state_dict, model)  # e.g. the SNN-MLP authors' layout -> ours
    result = model.load_state_dict(state_dict, strict=False)
    if result.missing_keys or result.unexpected_keys:
        from ..convert import KeyMismatchError

        raise KeyMismatchError(f"checkpoint {source}", result.missing_keys, result.unexpected_keys)


def training_checkpoint(path: Path) -> Path | None:
    """The checkpoint folder when ``path`` is a ``spikemlp train`` checkpoint (a run folder means its
    best/), else None (plain weights, or nothing there: ``read_weights`` reports that)."""
    from .. import checkpoint as ckpt

    if path.is_file() and path.suffix in TORCH_SUFFIXES:
        return None
    if path.is_dir() and not (path / ckpt.MODEL_FILE).exists() and (path / "best").exists():
        path = path / "best"
    try:
        _, meta = ckpt.load_weights(path)
    except ckpt.CheckpointError:
        return None
    return path if "config" in meta else None


def from_weights(
    name: str, path: str | Path | None = None, num_classes: int | None = None, img_size: int | None = None
) -> nn.Module:
    """Model ``name`` built fresh, with the weights at ``path`` (if any) loaded into it; the number of
    classes is read off the classifier unless given."""
    from ._factory import create

    state_dict = read_weights(Path(path)) if path else None
    head = (state_dict or {}).get("head.weight")
    kwargs = {"num_classes": head.shape[0]} if isinstance(head, torch.Tensor) and head.dim() == 2 else {}
    given = {"num_classes": num_classes, "img_size": img_size}
    kwargs.update({k: v for k, v in given.items() if v is not None})  # the arguments win over the weights
    model = create(name, **kwargs)
    if state_dict is not None:
        load_into(model, state_dict, Path(path))
    return model


def plain_model(name: str, path: Path, data: str | None):
    """(model ``name`` with the plain weights at ``path``, the configuration keys to evaluate it with: the
    data set ``data`` at the model's input size), or (None, None) for a ``spikemlp train`` checkpoint,
    which carries its own."""
    from ..errors import UserError

    if training_checkpoint(path) is not None:
        return None, None
    if not data:
        raise UserError(f"--model {name} with plain weights needs --data (the data set to evaluate on)")
    model = from_weights(name, path)
    size = (getattr(model, "pretrained_cfg", None) or {}).get("input_size", (3, None, None))[-1]
    return model, {"model": name, "data": data, "img_size": size, "T": getattr(model, "T", None)}


def load_initial_weights(model: nn.Module, pretrained: bool, initial_checkpoint: str | None) -> None:
    """The weights a fine-tuning run starts from: the model's released ones (timm's ``load_pretrained``,
    which drops a classifier of another size) and/or the file ``initial_checkpoint``, whose classifier is
    left out where its shape differs from the model's (another number of classes)."""
    if pretrained:
        from timm.models import load_pretrained

        filter_fn = getattr(importlib.import_module(type(model).__module__), "checkpoint_filter_fn", None)
        load_pretrained(model, num_classes=model.num_classes, filter_fn=filter_fn)
    if initial_checkpoint:
        path, own = Path(initial_checkpoint), model.state_dict()
        state_dict = read_weights(path)
        head = [k for k in ("head.weight", "head.bias") if k in state_dict and k in own]
        if any(state_dict[k].shape != own[k].shape for k in head):
            state_dict = {**state_dict, **{k: own[k] for k in head}}  # the fresh classifier stays
        load_into(model, state_dict, path)
