"""The one reader of foreign checkpoints (the authors' .pth/.pt, a torch zip or a legacy pickle, and
.safetensors), shared by ``spikemlp convert``, ``spikemlp export`` and the SNN-MLP pretrained loader.

``torch.load(weights_only=True)`` builds only tensors, numbers, strings and containers: a file holding
any other object is refused, never unpickled. The state dict may be bare or under "model" / "state_dict"
(the authors' training checkpoints); a DistributedDataParallel "module." prefix is removed.
"""

from __future__ import annotations

import os
import pickle
import re
import zipfile
from collections.abc import Mapping
from pathlib import Path

import torch

__all__ = ["TORCH_SUFFIXES", "read_state_dict", "refused_object", "state_dict_in"]

TORCH_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt")


def read_state_dict(path: str | os.PathLike, missing_hint: str = "") -> dict[str, torch.Tensor]:
    """The state dict in a .safetensors file or a PyTorch checkpoint, read without unpickling objects.

    Raises FileNotFoundError (``missing_hint`` appended, e.g. where to download the file) or ValueError
    naming the file and what to do.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}{missing_hint}")
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except (SafetensorError, OSError, ValueError) as err:
            raise ValueError(f"{path} is not a readable safetensors file ({err})") from None
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, zipfile.BadZipFile, EOFError, OSError, ValueError) as err:
        raise ValueError(
            f"{path} could not be read as a weights-only PyTorch checkpoint ({refused_object(err)}). "
            "torch.load with weights_only=True loads only tensors, numbers, strings and containers: "
            "spikemlp never unpickles arbitrary objects. Re-save just the state dict, "
            "torch.save(model.state_dict(), path) or as safetensors, in an environment you trust."
        ) from None
    return state_dict_in(obj, path)


def refused_object(err: BaseException) -> str:
    """What ``torch.load(weights_only=True)`` refused, in a few words that keep the refused class's name.

    PyTorch's own message goes on to suggest ``weights_only=False``, which would run the file's code: that
    advice is never passed on to users."""
    text = str(err)
    found = re.search(r"GLOBAL (\S+) was not an allowed global", text)
    if found:
        return f"it holds an object of class {found.group(1)}"
    for line in text.splitlines():
        if "WeightsUnpickler error:" in line:  # e.g. "Unsupported operand 149"
            return line.split("WeightsUnpickler error:", 1)[1].strip().split(". ")[0]
    first = (text.strip().splitlines() or [type(err).__name__])[0]
    return "it holds objects other than tensors and plain data" if "Weights only" in first else first


def state_dict_in(obj, source: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The mapping of names to tensors in a loaded checkpoint ``obj`` (bare or under a known key)."""
    if isinstance(obj, Mapping):
        for key in ("model", "state_dict", "model_state_dict"):
            if isinstance(obj.get(key), Mapping):
                obj = obj[key]
                break
    if not isinstance(obj, Mapping) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        what = type(obj).__name__ if not isinstance(obj, Mapping) else f"a dict with keys {list(obj)[:8]}"
        raise ValueError(
            f"{source} holds {what}, not a state dict (a mapping of names to tensors, bare or under "
            "'model' or 'state_dict')"
        )
    if all(k.startswith("module.") for k in obj):  # saved from a DistributedDataParallel wrapper
        obj = {k[len("module.") :]: v for k, v in obj.items()}
    return dict(obj)
