"""``spikemlp convert``: the authors' released weights <-> spikemlp safetensors, on the command line.

    spikemlp convert --from mixer-snn IN.pth OUT.safetensors   # authors' keys -> spikemlp keys
    spikemlp convert --to mixer-snn IN.safetensors OUT.pth     # spikemlp keys -> authors' keys

Checkpoints are read without unpickling code (``torch.load(weights_only=True)`` or safetensors); the state
dict may be bare or stored under "model" / "state_dict" (a DistributedDataParallel "module." prefix is
removed). Outputs are written atomically: a temporary file in the same folder, then a rename.
"""

from __future__ import annotations

import argparse
import os
import pickle
from collections.abc import Mapping
from pathlib import Path

import torch

from .._files import atomic_write
from . import FORMATS, get_format


def _user_error(message: str) -> Exception:
    from ..errors import UserError

    return UserError(message)


def load_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """A state dict from a .safetensors file or a weights-only PyTorch checkpoint (.pth/.pt/.bin)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except (SafetensorError, OSError, ValueError) as err:
            raise _user_error(f"{path} is not a readable safetensors file ({err})") from None
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, ValueError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise _user_error(
            f"{path} could not be read as a weights-only PyTorch checkpoint ({first}). Only tensors, "
            "numbers, strings and containers are loaded (no pickled code); re-save the state dict with "
            "torch.save(model.state_dict(), path) or as safetensors"
        ) from None
    return _find_state_dict(obj, path)


def _find_state_dict(obj, path: Path) -> dict[str, torch.Tensor]:
    if isinstance(obj, Mapping):
        for key in ("model", "state_dict", "model_state_dict"):
            if isinstance(obj.get(key), Mapping):
                obj = obj[key]
                break
    if not isinstance(obj, Mapping) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        what = type(obj).__name__ if not isinstance(obj, Mapping) else f"a dict with keys {list(obj)[:8]}"
        raise _user_error(
            f"{path} holds {what}, not a state dict (a mapping of names to tensors, bare or under "
            "'model' or 'state_dict')"
        )
    if all(k.startswith("module.") for k in obj):  # saved from a DistributedDataParallel wrapper
        obj = {k[len("module.") :]: v for k, v in obj.items()}
    return dict(obj)


def save_state_dict(sd: Mapping[str, torch.Tensor], path: str | os.PathLike) -> None:
    """Write a state dict as .safetensors (or a PyTorch .pth for any other suffix), atomically."""
    path = Path(path)
    # safetensors stores each tensor on its own: no views into a shared buffer.
    tensors = {k: v.detach().cpu().contiguous().clone() for k, v in sd.items()}
    if path.suffix == ".safetensors":
        from safetensors.torch import save_file

        atomic_write(path, lambda tmp: save_file(tensors, tmp))
    else:
        atomic_write(path, lambda tmp: torch.save(tensors, tmp))


def run(args: argparse.Namespace) -> int:
    fmt_name = args.from_format or args.to_format
    fmt = get_format(fmt_name)
    sd = load_state_dict(args.input)
    out = fmt.to_spikemlp(sd) if args.from_format else fmt.from_spikemlp(sd)
    save_state_dict(out, args.output)
    direction = f"{fmt_name} -> spikemlp" if args.from_format else f"spikemlp -> {fmt_name}"
    print(f"converted {len(out)} tensors ({direction}): {args.input} -> {args.output}")
    return 0


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "convert",
        help="convert released weights to spikemlp's layout (or back)",
        description="Rename the tensors of a released checkpoint one to one between the authors' layout "
        "and spikemlp's. Reads .pth/.pt (weights only) or .safetensors; writes .safetensors or .pth "
        "by the output's suffix.",
    )
    direction = p.add_mutually_exclusive_group(required=True)
    direction.add_argument(
        "--from", dest="from_format", choices=sorted(FORMATS), help="convert from this format to spikemlp"
    )
    direction.add_argument(
        "--to", dest="to_format", choices=sorted(FORMATS), help="convert from spikemlp to this format"
    )
    p.add_argument("input", help="input checkpoint (.pth, .pt or .safetensors)")
    p.add_argument("output", help="output file (.safetensors, or .pth for the authors' format)")
    p.set_defaults(func=run)
