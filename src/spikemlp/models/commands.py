"""``spikemlp models [PATTERN]``: the registered models with their parameters and MACs per time step.

Models are built on PyTorch's "meta" device (shapes without storage), so listing even the 66M models is
instant and allocates nothing; MACs come from ``spikemlp.analysis.macs.macs_per_step`` (the conv and
linear multiply-accumulates of one image and one time step, counted by hooks on a forward pass).
"""

from __future__ import annotations

import argparse
import json

import torch

from ._factory import create, family_modules, list_models


def describe(name: str, num_classes: int | None = None) -> dict:
    """Parameters and MACs per step of a registered model, built without allocating its weights."""
    from ..analysis.macs import macs_per_step

    kwargs = {} if num_classes is None else {"num_classes": num_classes}

    def count(device: str):
        with torch.device(device):
            model = create(name, **kwargs)
        cfg = getattr(model, "pretrained_cfg", {}) or {}
        input_size = tuple(cfg.get("input_size", (3, 224, 224)))
        macs = sum(macs_per_step(model, img_size=input_size[1:], in_chans=input_size[0]).values())
        return model, cfg, input_size, macs

    try:
        model, cfg, input_size, macs = count("meta")
    except (NotImplementedError, RuntimeError):  # an op without a meta kernel: count on real tensors
        model, cfg, input_size, macs = count("cpu")
    return {
        "model": name,
        "family": type(model).__module__.rsplit(".", 1)[-1],
        "input_size": list(input_size),
        "num_classes": getattr(model, "num_classes", cfg.get("num_classes")),
        "T": getattr(model, "T", None),
        "params": sum(p.numel() for p in model.parameters()),
        "macs_per_step": macs,
    }


def run(args: argparse.Namespace) -> int:
    names = list_models(args.pattern or "")
    if not names:
        raise ValueError(
            f"no spikemlp model matches {args.pattern!r}; known models: {', '.join(list_models())} "
            f"(families: {', '.join(family_modules())})"
        )
    rows = [describe(name, args.num_classes) for name in names]
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    header = (
        f"{'model':<20} {'family':<8} {'input':>9} {'classes':>7} {'T':>2} {'params':>9} {'MACs/step':>10}"
    )
    print(header)
    print("-" * len(header))
    for r in rows:
        size = f"{r['input_size'][1]}x{r['input_size'][2]}"
        print(
            f"{r['model']:<20} {r['family']:<8} {size:>9} {r['num_classes']:>7} {r['T'] or '-':>2} "
            f"{r['params'] / 1e6:>8.3f}M {r['macs_per_step'] / 1e9:>9.3f}G"
        )
    return 0


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "models",
        help="list the models with parameters and MACs per step",
        description="List the registered spikemlp models (all families) with their input size, "
        "parameter count and conv/linear MACs per image and time step.",
    )
    p.add_argument("pattern", nargs="?", default="", help="shell-style filter, e.g. 'mlp_spe*'")
    p.add_argument("--num-classes", type=int, default=None, help="count with this many classes")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=run)
