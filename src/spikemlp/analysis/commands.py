"""``spikemlp analyze``: firing rates, exact synaptic operations, energy and the MFI check of a model on data.

    spikemlp analyze --checkpoint RUN/best --data cifar10 --limit 1000 --out analysis/
    spikemlp analyze --model mlp_spe_xt_cifar --data cifar10 --limit 256 --out analysis/   (untrained)

Writes report.json, report.md and the PNG plots into --out (see ``spikemlp.analysis.analyze``).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from .energy import ENERGY_PRESETS


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "analyze",
        help="firing rates, exact SOPs, energy and the MFI check of a model on a data set",
        description=(
            "Run a model over a data set with hooks and write report.json, report.md and plots: per synaptic "
            "layer its input kind, dense MACs, input firing rate per step, exact SOPs and energy; per neuron "
            "layer its firing rate per time step; the multiplication-free-inference check."
        ),
    )
    p.add_argument("--checkpoint", help="a run folder (its best weights), checkpoint folder or weights file")
    p.add_argument(
        "--model",
        help="a model name: alone, analysed with fresh (untrained) weights; with --checkpoint, the model "
        "plain weights are for (.safetensors, or .pt/.pth such as the SNN-MLP authors')",
    )
    p.add_argument("--data", help="data set name (default: the checkpoint's); e.g. cifar10")
    p.add_argument("--data-dir", help="where to look for the data first")
    p.add_argument("--split", default="test", choices=("train", "test"), help="which split (default test)")
    p.add_argument("--limit", type=int, help="analyse at most this many images")
    p.add_argument("--batch-size", type=int, default=100, help="images per forward pass (default 100)")
    p.add_argument("--out", required=True, help="folder for report.json, report.md and the plots")
    p.add_argument("--T", type=int, help="time steps (with --model; default: the model's)")
    p.add_argument(
        "--energy",
        default="fp32",
        choices=sorted(ENERGY_PRESETS),
        help="energy constants preset (default fp32)",
    )
    p.add_argument("--e-mac", type=float, help="picojoules per multiply-accumulate (overrides the preset)")
    p.add_argument("--e-ac", type=float, help="picojoules per accumulate (overrides the preset)")
    p.add_argument("--device", default="cpu", help="cpu (default), cuda, cuda:1, ...")
    p.add_argument("--no-plots", action="store_true", help="write the reports only")
    p.add_argument(
        "--deploy",
        action="store_true",
        help="also deploy the model (spikemlp.deploy, CPU) and report how its predictions and logits agree "
        "with the eval model's on the same images, and both speeds (a 'deployment' section)",
    )
    p.set_defaults(func=run_analyze)


def _load_model(args: argparse.Namespace):
    """(model or None, the run's configuration, number of classes or None)."""
    from .. import checkpoint as ckpt
    from .. import models

    if not (args.checkpoint or args.model):
        raise ValueError("say what to analyse: --checkpoint (a run or weights), --model NAME, or both")
    if args.checkpoint:
        path = Path(args.checkpoint)
        if not path.exists():
            raise FileNotFoundError(
                f"checkpoint not found: {path} (give a run folder, RUN/best, or a weights file)"
            )
        if args.model:
            from ..models.plain_weights import plain_model

            model, config = plain_model(args.model, path, args.data)
            if config is not None:  # plain weights
                return model, config, model.num_classes
        model, config, meta = models.from_checkpoint(ckpt.evaluation_weights(path))  # a run: its best
        if args.model and config["model"] != args.model:
            raise ValueError(
                f"{path} holds a {config['model']} model, not {args.model}; name the model it holds"
            )
        return model, config, int(meta["num_classes"])
    if not args.data:
        raise ValueError("--model needs --data (the data set decides the number of classes)")
    if args.T is not None and args.T < 1:
        raise ValueError(f"--T must be at least 1, got {args.T}")
    return None, {"model": args.model, "data": args.data, "T": args.T}, None


def _add_deployment(report: dict, model, loader, args: argparse.Namespace) -> None:
    """The deployed model against the eval model on the analysed images, into report.json and report.md."""
    from ..deployment import deploy_for_command, measure
    from .report import write_json, write_markdown

    report["deployment"] = measure(model, deploy_for_command(model), loader, limit=args.limit)
    out = Path(args.out)
    write_json(report, out / "report.json")
    write_markdown(report, out / "report.md")


def run_analyze(args: argparse.Namespace) -> int:
    import torch

    from .. import models
    from ..data import loaders
    from .analyzer import analyze

    if args.limit is not None and args.limit <= 0:
        raise ValueError(f"--limit must be a positive number of images, got {args.limit}")
    if args.batch_size <= 0:
        raise ValueError(f"--batch-size must be positive, got {args.batch_size}")
    model, config, num_classes = _load_model(args)
    name, data = config["model"], args.data or config["data"]
    settings = loaders.EvalSettings.from_config(
        config, eval_batch_size=args.batch_size, data_dir=args.data_dir or config.get("data_dir"), workers=0
    )
    device = torch.device(args.device)
    loader, split, facts = loaders.eval_batches(data, args.split, settings, device)
    if model is None:
        num_classes = config.get("num_classes") or facts.num_classes
        model = models.from_config(config, num_classes)
    elif facts.num_classes != num_classes:
        raise ValueError(
            f"the checkpoint classifies {num_classes} classes but {data} has {facts.num_classes}; "
            "pass the data set it was trained on with --data"
        )
    model = model.to(device).eval()
    if args.deploy and device.type != "cpu":
        raise ValueError(f"--deploy builds CPU inference; leave out --device {args.device} (or use cpu)")
    classes = loaders.class_names(split, num_classes)
    report = analyze(
        model,
        loader,
        args.out,
        limit=args.limit,
        energy=args.energy,
        e_mac=args.e_mac,
        e_ac=args.e_ac,
        num_classes=num_classes,
        classes=classes,
        model_name=name,
        data_name=f"{data} ({args.split})",
        make_plots=not args.no_plots,
        progress=True,
    )
    if args.deploy:
        _add_deployment(report, model, loader, args)
    net = report["network"]
    print(
        f"{name} on {data} {args.split}: {report['images']} images, top-1 {100 * report['accuracy']:.2f}%, "
        f"mean firing rate {report['mean_firing_rate']:.4f}"
    )
    mega = {k: net[k] / 1e6 for k in ("dense_macs_per_step", "macs", "sops", "sops_estimate")}
    print(
        f"per image: {mega['dense_macs_per_step']:.2f} M dense MACs/step, {mega['macs']:.2f} M MACs, "
        f"{mega['sops']:.2f} M SOPs (estimate {mega['sops_estimate']:.2f} M), "
        f"energy {net['energy_pj'] / 1e6:.3f} uJ ({report['energy']['name']}), "
        f"ANN {net['ann_energy_pj'] / 1e6:.3f} uJ"
    )
    print(report["mfi"]["summary"])
    if args.deploy:
        d = report["deployment"]
        print(
            f"{d['summary']}; {d['deployed_images_per_s']:.1f} images/s deployed ({d['speedup']:.2f}x eval)"
        )
    print(f"wrote {Path(args.out) / 'report.md'} and report.json" + ("" if args.no_plots else " and plots"))
    return 0
