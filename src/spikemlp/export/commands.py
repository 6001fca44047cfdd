"""``spikemlp export onnx MODEL OUT.onnx``: write a model as ONNX and check it with onnxruntime.

``--checkpoint`` takes a spikemlp checkpoint (a run or checkpoint folder, or a .safetensors file) or a
PyTorch weights file (.pt/.pth, read with ``weights_only=True``), e.g. the SNN-MLP authors'
snnmlp_tiny_81.88.pt, whose keys are converted. The number of classes is read off the checkpoint's
classifier unless ``--num-classes`` is given.
"""

from __future__ import annotations

import argparse
import importlib
import json
import pickle
import zipfile
from pathlib import Path

import torch

from ..cli import UserError

_TORCH_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt")


def _read_checkpoint(path: Path) -> dict:
    if not path.exists():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    if path.is_file() and path.suffix in _TORCH_SUFFIXES:
        try:
            checkpoint = torch.load(path, map_location="cpu", weights_only=True)
        except (pickle.UnpicklingError, RuntimeError, zipfile.BadZipFile, EOFError) as err:
            first = (str(err).strip().splitlines() or [type(err).__name__])[0]
            raise UserError(
                f"{path}: not a weights file readable with weights_only=True ({first}); "
                "save just the state dict (torch.save(model.state_dict(), F))"
            ) from None
        if isinstance(checkpoint, dict):
            for key in ("model", "state_dict"):
                if isinstance(checkpoint.get(key), dict):
                    return checkpoint[key]
            return checkpoint
        raise UserError(f"{path}: expected a state dict, found a {type(checkpoint).__name__}")
    from ..train.checkpoint import load_weights

    state_dict, _ = load_weights(path)
    return state_dict


def _load_into(model: torch.nn.Module, state_dict: dict, source: Path) -> None:
    # A model family may define timm's checkpoint_filter_fn(state_dict, model) for foreign layouts.
    filter_fn = getattr(importlib.import_module(type(model).__module__), "checkpoint_filter_fn", None)
    if filter_fn is not None:
        state_dict = filter_fn(state_dict, model)  # e.g. the SNN-MLP authors' layout -> ours
    result = model.load_state_dict(state_dict, strict=False)
    if result.missing_keys or result.unexpected_keys:
        from ..convert import KeyMismatchError

        raise KeyMismatchError(f"checkpoint {source}", result.missing_keys, result.unexpected_keys)


def run_onnx(args: argparse.Namespace) -> int:
    from ..models import create
    from .onnx_export import export_onnx

    kwargs = {}
    state_dict = None
    if args.checkpoint:
        state_dict = _read_checkpoint(Path(args.checkpoint))
        head = state_dict.get("head.weight")
        if args.num_classes is None and isinstance(head, torch.Tensor) and head.dim() == 2:
            kwargs["num_classes"] = head.shape[0]
    if args.num_classes is not None:
        kwargs["num_classes"] = args.num_classes
    if args.img_size is not None:
        kwargs["img_size"] = args.img_size
    model = create(args.model, **kwargs)
    if state_dict is not None:
        _load_into(model, state_dict, Path(args.checkpoint))
    summary = export_onnx(model, args.out, img_size=args.img_size, opset=args.opset, check=not args.no_check)
    summary["model"] = args.model
    print(json.dumps(summary))
    if "max_abs_diff" in summary:
        print(
            f"wrote {summary['path']}; onnxruntime matches PyTorch to {summary['max_abs_diff']:.2e} (max abs)"
        )
    else:
        print(f"wrote {summary['path']} (not checked)")
    return 0


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "export", help="export a model to another format (ONNX)", description="Export a model for deployment."
    )
    sub = p.add_subparsers(dest="format", metavar="FORMAT", required=True)
    onnx = sub.add_parser(
        "onnx",
        help="write ONNX and check it against PyTorch with onnxruntime",
        description="Write MODEL as ONNX (dynamic batch, fixed image size) and check that onnxruntime "
        "reproduces PyTorch's logits on a random image (max abs difference <= 1e-4).",
    )
    onnx.add_argument("model", help="model name, e.g. snn_mlp_t (see `spikemlp models`)")
    onnx.add_argument("out", help="output file, e.g. snn_mlp_t.onnx")
    onnx.add_argument("--checkpoint", default=None, help="weights: checkpoint folder, .safetensors or .pt")
    onnx.add_argument(
        "--img-size", type=int, default=None, help="input size (default: the model's, e.g. 224)"
    )
    onnx.add_argument("--num-classes", type=int, default=None, help="classes (default: from the checkpoint)")
    onnx.add_argument("--opset", type=int, default=17, help="ONNX opset (default 17)")
    onnx.add_argument("--no-check", action="store_true", help="skip the onnxruntime comparison")
    onnx.set_defaults(func=run_onnx)
