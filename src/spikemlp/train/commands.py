"""``spikemlp train`` and ``spikemlp eval``: thin command-line wrappers around :mod:`spikemlp.train`.

Every key of :class:`spikemlp.train.config.TrainConfig` is an option of ``spikemlp train``
(``--epochs 10``, ``--T 4``, ``--model-kwargs '{embed_dim: 96}'`` or ``--model_kwargs.embed_dim 96``);
values are read as YAML and checked against the key's type. An unknown option is one error that names
the close matches.
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import json
import sys
from pathlib import Path

from .config import TTA_MODES, TrainConfig, field_help, field_names, parse_value


class _ConfigArgumentParser(argparse.ArgumentParser):
    """An ArgumentParser whose unknown ``--options`` get one error naming the close config keys, and
    which accepts ``--model_kwargs.NAME VALUE`` for single model arguments."""

    def parse_known_args(self, args=None, namespace=None):
        args = list(sys.argv[1:] if args is None else args)
        model_kwargs: dict = {}
        rest = []
        i = 0
        while i < len(args):
            a = args[i]
            key = a[2:].replace("-", "_") if a.startswith("--") else ""
            if key.startswith("model_kwargs."):
                name, _, inline = key.partition("=")
                if inline:
                    value, i = inline, i + 1
                elif i + 1 < len(args):
                    value, i = args[i + 1], i + 2
                else:
                    self.error(f"{a} needs a value")
                model_kwargs[name.split(".", 1)[1]] = parse_value(value)
                continue
            rest.append(a)
            i += 1
        ns, extras = super().parse_known_args(rest, namespace)
        unknown = [e for e in extras if e.startswith("-")]
        if unknown:
            key = unknown[0].lstrip("-").split("=")[0].replace("-", "_")
            valid = field_names()
            close = difflib.get_close_matches(key, valid, n=3, cutoff=0.6)
            hint = f" Did you mean {', '.join('--' + c for c in close)}?" if close else ""
            self.error(
                f"unknown option {unknown[0]}: '{key}' is not a config key.{hint} "
                f"Valid keys: {', '.join(valid)}"
            )
        if extras:
            self.error(f"unexpected argument(s) {' '.join(extras)}; options are --KEY VALUE pairs")
        if model_kwargs:
            ns.model_kwargs_items = model_kwargs
        return ns, []


# The flags of timm's train.py (and torchvision's reference scripts) for the same keys, typed from habit.
TIMM_FLAGS = {
    "accum_steps": ["--grad-accum-steps"],
    "auto_augment": ["--aa"],
    "batch_size": ["-b"],
    "workers": ["-j"],
    "ema": ["--model-ema"],
    "ema_decay": ["--model-ema-decay"],
}
AMP_SWITCH = "switch"  # `--amp` alone: autocast in --amp-dtype (timm's default float16)
AMP_DTYPES = {"float16": "fp16", "bfloat16": "bf16", "fp16": "fp16", "bf16": "bf16"}


def _option_strings(name: str) -> list[str]:
    dashed = name.replace("_", "-")
    return [f"--{name}"] + ([f"--{dashed}"] if dashed != name else []) + TIMM_FLAGS.get(name, [])


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "train",
        help="train a model from a recipe (configs/*.yaml); every recipe key can be overridden",
        description="Train a model. Example: spikemlp train -c configs/cifar10_cpu_speedrun.yaml "
        "--out runs/speedrun --time-budget 8. Every key of the recipe is an option "
        "(--epochs 10 --T 4 --model mlp_spe_t_cifar); values are read as YAML. Under torchrun "
        "(torchrun --nproc_per_node=N -m spikemlp train ...) the run is data-parallel.",
        usage="spikemlp train [-c RECIPE.yaml] --out RUN_DIR [--resume RUN_DIR] [--KEY VALUE ...]",
        allow_abbrev=False,
    )
    p.__class__ = _ConfigArgumentParser  # our parse_known_args: one clear error for unknown keys
    p.add_argument("-c", "--config", help="recipe YAML file (configs/NAME.yaml)")
    p.add_argument("--out", "--output", help="run folder for config, metrics, checkpoints and summary")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue the run in RUN_DIR from its last checkpoint")
    p.add_argument("--overwrite", action="store_true", help="replace the run already in --out (its files)")
    keys = p.add_argument_group("configuration keys (override the recipe; values are read as YAML)")
    helps, defaults = field_help(), TrainConfig()
    for f in dataclasses.fields(TrainConfig):
        flag = f.type in ("bool", bool) or f.name == "amp"  # --ema alone means --ema true
        keys.add_argument(
            *_option_strings(f.name),
            dest=f"cfg_{f.name}",
            default=argparse.SUPPRESS,
            metavar="VALUE",
            nargs="?" if flag else None,
            const=(AMP_SWITCH if f.name == "amp" else "true") if flag else None,
            help=f"{helps.get(f.name, '')} (default: {getattr(defaults, f.name)!r})".strip(),
        )
    keys.add_argument(
        "--amp-dtype", choices=sorted(AMP_DTYPES), help="the autocast type of --amp alone (default float16)"
    )
    p.set_defaults(func=run_train)

    e = subparsers.add_parser(
        "eval",
        help="evaluate a checkpoint: top-1, top-5 and per-class accuracy",
        description="Evaluate a checkpoint (a run folder, RUN_DIR/best, RUN_DIR/last, or a model.safetensors "
        "written by spikemlp train) on a data set's test split; with --model NAME, plain weights too "
        "(a .safetensors file, or a .pt/.pth such as the SNN-MLP authors', converted on reading).",
    )
    e.add_argument(
        "--checkpoint", required=True, help="RUN_DIR (uses best/), RUN_DIR/best, RUN_DIR/last, ..."
    )
    e.add_argument("--model", help="the model plain weights are for (with --data), e.g. snn_mlp_t")
    e.add_argument("--limit", type=int, help="evaluate the first this many images only")
    e.add_argument("--data", help="data set name (default: the one the model was trained on)")
    e.add_argument("--data-dir", help="where to look for the data first")
    e.add_argument("--batch-size", type=int, default=256)
    e.add_argument("--device", default="auto")
    e.add_argument("--ema", action="store_true", help="evaluate the EMA weights of a last/ checkpoint")
    e.add_argument("--split", default="test", choices=("train", "test"))
    e.add_argument(
        "--tta",
        choices=TTA_MODES,
        help="test-time augmentation (default: the run's own setting, the config key tta)",
    )
    e.add_argument(
        "--spike-kernels",
        action="store_true",
        help="CPU inference of MLP-SPE by its spike-driven kernels (model.set_spike_kernels): same "
        "model, faster on a CPU; results differ from the dense path only by float rounding",
    )
    e.add_argument(
        "--deploy",
        action="store_true",
        help="evaluate the deployed model (spikemlp.deploy: MLP-SPE, CPU inference on the spike-driven "
        "kernels with BNs folded and neurons fused); prints how it agrees with the eval model on the "
        "first batch",
    )
    e.add_argument("--json", help="also write the results (with per-class accuracy) to this JSON file")
    e.set_defaults(func=run_eval)


def _overrides(args: argparse.Namespace) -> dict:
    values = {}
    for key, raw in vars(args).items():
        if key.startswith("cfg_"):
            values[key[4:]] = parse_value(raw)
    amp_dtype = getattr(args, "amp_dtype", None)
    if values.get("amp") == AMP_SWITCH or (amp_dtype and "amp" not in values):
        values["amp"] = AMP_DTYPES[amp_dtype or "float16"]  # timm's --amp [--amp-dtype bfloat16]
    items = getattr(args, "model_kwargs_items", None)
    if items:
        values["model_kwargs"] = {**values.get("model_kwargs", {}), **items}
    return values


def run_train(args: argparse.Namespace) -> int:
    import time

    from .config import from_dict, load_config
    from .resume_checks import check_resume
    from .time_budget import resume_overrides
    from .trainer import read_run_config

    started_at = time.time()
    overrides = _overrides(args)
    if args.resume:
        if args.config:
            raise ValueError("--resume continues with the run's own config.yaml; leave out -c/--config")
        run_dir = Path(args.out or args.resume)
        if args.out and Path(args.out) != Path(args.resume):
            raise ValueError("--resume RUN_DIR writes into RUN_DIR; leave out --out or give the same folder")
        saved = read_run_config(run_dir)
        check_resume(saved, overrides, run_dir)
        overrides, note = resume_overrides(saved, overrides)
        if note:
            print(note)
        if "model_kwargs" in overrides:
            overrides["model_kwargs"] = {**saved.get("model_kwargs", {}), **overrides["model_kwargs"]}
        cfg = from_dict({**saved, **overrides}, where=f"{run_dir}/config.yaml and the command line")
        return _launch_or_train(cfg, run_dir, True, args.argv, started_at, False)
    if not args.out:
        raise ValueError("say where the run goes: --out RUN_DIR (for example --out runs/my_run)")
    if args.config is None and not overrides:
        raise ValueError("give a recipe with -c configs/NAME.yaml (and/or --KEY VALUE options)")
    if "model_kwargs" in overrides and args.config:
        from .config import load_yaml

        recipe_kwargs = load_yaml(args.config).get("model_kwargs", {}) or {}
        overrides["model_kwargs"] = {**recipe_kwargs, **overrides["model_kwargs"]}
    cfg = load_config(args.config, overrides)
    return _launch_or_train(cfg, Path(args.out), False, args.argv, started_at, args.overwrite)


def _launch_or_train(cfg, run_dir: Path, resume: bool, argv: list[str], started_at: float, overwrite) -> int:
    """Train here, or, with more than one process outside torchrun, check the run once and start the
    workers (holding the run folder's lock for them)."""
    from .distributed import launched_by_torchrun, local_process_count, run_local_workers
    from .run_folder import locked
    from .trainer import preflight, train

    if not launched_by_torchrun():
        n = local_process_count(cfg.processes, cfg.device)
        if n < cfg.processes:
            print(f"spikemlp train: processes: {cfg.processes} is a CPU setting; on CUDA one per GPU: {n}")
        if n > 1:
            preflight(cfg, run_dir, resume, overwrite)
            with locked(run_dir) as lock_fd:
                return run_local_workers(n, argv, started_at, lock_fd)
    train(cfg, run_dir, resume, overwrite)
    return 0


def _format_per_class(names: list[str], acc: list[float], totals: list[int]) -> str:
    cells = [f"{n[:18]:>18} {a:6.2f}% ({t})" for n, a, t in zip(names, acc, totals)]
    cols = 3 if len(cells) > 12 else 1
    return "\n".join("  ".join(cells[i : i + cols]) for i in range(0, len(cells), cols))


def _deployed(model, loader, device, args: argparse.Namespace):
    """(the deployed model, how it agrees with the eval model on the first batch), printed."""
    from ..deployment import deploy_for_command, measure

    if device.type != "cpu":
        raise ValueError(f"--deploy builds CPU inference; the device is {device} (pass --device cpu)")
    if args.spike_kernels:
        raise ValueError("--deploy already runs the spike kernels; leave out --spike-kernels")
    deployed = deploy_for_command(model)
    check = measure(model, deployed, loader, limit=min(args.batch_size, args.limit or args.batch_size))
    print(f"{check['summary']} (first batch)")
    return deployed, check


def run_eval(args: argparse.Namespace) -> int:
    import torch

    from .. import checkpoint as ckpt
    from ..data import loaders
    from .config import from_dict, to_dict
    from .distributed import pick_device
    from .evaluate import evaluate
    from .trainer import model_from_checkpoint

    if args.limit is not None and args.limit <= 0:
        raise ValueError(f"--limit must be a positive number of images, got {args.limit}")
    if args.batch_size < 1:  # eval's own flag, not the recipe's eval_batch_size (there 0 means 2 x batch)
        raise ValueError(f"--batch-size must be at least 1, got {args.batch_size}")
    path, cfg = Path(args.checkpoint), None
    if args.model:
        from ..models.plain_weights import plain_model

        model, config = plain_model(args.model, path, args.data)  # None: a training checkpoint
        if config is not None:
            cfg, meta = from_dict(config, where=f"--model {args.model}"), {"num_classes": model.num_classes}
    if cfg is None:
        path = ckpt.evaluation_weights(args.checkpoint)  # a run folder: its best weights
        model, cfg, meta = model_from_checkpoint(path, ema=args.ema)
        if args.model and cfg.model != args.model:
            raise ValueError(f"{path} holds a {cfg.model} model, not {args.model}; name the model it holds")
    data = args.data or cfg.data
    device = pick_device(args.device)
    model = model.to(device)
    if args.spike_kernels:
        if not hasattr(model, "set_spike_kernels"):
            raise ValueError(f"--spike-kernels: {cfg.model} has no spike-driven kernels (MLP-SPE models do)")
        model.set_spike_kernels(True)
    dtype = torch.float64 if cfg.dtype == "float64" else torch.float32
    settings = loaders.EvalSettings.from_config(
        to_dict(cfg), eval_batch_size=args.batch_size, data_dir=args.data_dir or cfg.data_dir
    )
    loader, split, facts = loaders.eval_batches(data, args.split, settings, device)
    deployment = None
    if args.deploy:
        model, deployment = _deployed(model.to(dtype), loader, device, args)
    num_classes = int(meta["num_classes"])
    if facts.num_classes != num_classes:
        raise ValueError(
            f"the checkpoint classifies {num_classes} classes but {data} has {facts.num_classes}"
        )
    tta = args.tta or cfg.tta
    result = evaluate(
        model, loader, num_classes, device, dtype=dtype, tta=tta, progress=True, limit=args.limit
    )
    names = loaders.class_names(split, num_classes)
    where = ckpt.resolve(path) if path.is_dir() else path
    print(
        f"{cfg.model} ({'EMA ' if args.ema else ''}weights {where}) on {data} {args.split} "
        f"({result.count} images)"
    )
    print(
        f"top-1 {result.top1:.2f}%  top-5 {result.top5:.2f}%  loss {result.loss:.4f}  "
        f"({result.count / max(result.seconds, 1e-9):.0f} img/s)"
    )
    if result.top1_single_view is not None:
        print(f"test-time augmentation {tta}: top-1 of the plain images alone {result.top1_single_view:.2f}%")
    print("per-class accuracy:")
    print(_format_per_class(names, result.per_class_accuracy(), result.per_class_total))
    if args.json:
        out = {
            "checkpoint": str(where),
            "model": cfg.model,
            "data": data,
            "split": args.split,
            "tta": tta,
            "spike_kernels": bool(getattr(model, "spike_kernels", False)),
            "deployment": deployment,
            "classes": names,
            **result.to_dict(),
        }
        Path(args.json).write_text(json.dumps(out, indent=1))
    return 0
