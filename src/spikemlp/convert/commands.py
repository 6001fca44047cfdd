"""``spikemlp convert``: the authors' released weights <-> spikemlp safetensors, on the command line.

    spikemlp convert --from mixer-snn IN.pth OUT.safetensors   # authors' keys -> spikemlp keys
    spikemlp convert --to mixer-snn IN.safetensors OUT.pth     # spikemlp keys -> authors' keys

Checkpoints are read without unpickling code (``spikemlp.convert.reader``). Outputs are written atomically:
a temporary file in the same folder, then a rename.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping
from pathlib import Path

import torch

from .._files import atomic_write
from . import FORMATS, get_format
from .reader import read_state_dict


def save_state_dict(sd: Mapping[str, torch.Tensor], path: str | os.PathLike) -> None:
    """Write a state dict as .safetensors (or a PyTorch .pth for any other suffix), atomically."""
    path = Path(path)
    # safetensors stores each tensor on its own: no views into a shared buffer.
    tensors = {k: v.detach().cpu().contiguous().clone() for k, v in sd.items()}
    if path.suffix == ".safetensors":
        from safetensors.torch import save_file as save
    else:
        save = torch.save
    atomic_write(path, lambda tmp: save(tensors, tmp))


def run(args: argparse.Namespace) -> int:
    fmt_name = args.from_format or args.to_format
    fmt = get_format(fmt_name)
    sd = read_state_dict(args.input)
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
