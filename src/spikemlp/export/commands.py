"""``spikemlp export onnx MODEL OUT.onnx``: write a model as ONNX and check it with onnxruntime.

``--checkpoint`` takes a spikemlp checkpoint (a run or checkpoint folder, or a .safetensors file) or a
PyTorch weights file (.pt/.pth, read by ``spikemlp.convert.reader``), e.g. the SNN-MLP authors'
snnmlp_tiny_81.88.pt, whose keys are converted. A checkpoint written by ``spikemlp train`` carries its
configuration, so the model is rebuilt as it was trained (width, depths, T, classes, image size); for
other weights the number of classes is read off the classifier unless ``--num-classes`` is given.
"""

from __future__ import annotations

import argparse
import importlib
import json
from pathlib import Path

from ..errors import UserError


def _model_from_training_checkpoint(args: argparse.Namespace, path: Path):
    from ..models import from_checkpoint

    model, config, _ = from_checkpoint(path)
    if config["model"] != args.model:
        raise UserError(f"{path} holds a {config['model']} model, not {args.model}; name the model it holds")
    if args.img_size is not None or args.num_classes is not None:
        raise UserError(
            f"{path} was written by spikemlp train and fixes the image size and classes; "
            "leave out --img-size and --num-classes"
        )
    return model


def run_onnx(args: argparse.Namespace) -> int:
    # Fail before building the model when the `onnx` extra is missing (the command line names it).
    importlib.import_module("onnx")
    if not args.no_check:
        importlib.import_module("onnxruntime")
    from ..models.plain_weights import from_weights, training_checkpoint
    from .onnx_export import export_onnx

    trained = training_checkpoint(Path(args.checkpoint)) if args.checkpoint else None
    # A training checkpoint fixes the image size: args.img_size is None there.
    if trained is None:
        model = from_weights(args.model, args.checkpoint, args.num_classes, args.img_size)
    else:
        model = _model_from_training_checkpoint(args, trained)
    summary = export_onnx(
        model,
        args.out,
        img_size=args.img_size,
        opset=args.opset,
        check=not args.no_check,
        batch_size=args.batch_size,
    )
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
        description="Write MODEL as ONNX (dynamic batch unless --batch-size, fixed image size) and check "
        "that onnxruntime reproduces PyTorch's logits on fresh random images (max abs difference <= 1e-4).",
    )
    onnx.add_argument("model", help="model name, e.g. snn_mlp_t (see `spikemlp models`)")
    onnx.add_argument("out", help="output file, e.g. snn_mlp_t.onnx")
    onnx.add_argument("--checkpoint", default=None, help="weights: checkpoint folder, .safetensors or .pt")
    onnx.add_argument(
        "--img-size", type=int, default=None, help="input size (default: the model's, e.g. 224)"
    )
    onnx.add_argument("--num-classes", type=int, default=None, help="classes (default: from the checkpoint)")
    onnx.add_argument(
        "--batch-size",
        type=int,
        default=None,
        help="fix the batch size (default: a dynamic batch axis)",
    )
    onnx.add_argument("--opset", type=int, default=17, help="ONNX opset (default 17)")
    onnx.add_argument("--no-check", action="store_true", help="skip the onnxruntime comparison")
    onnx.set_defaults(func=run_onnx)
