"""The training loop behind ``spikemlp train``: one function, :func:`train`, from a config to a run folder.

A run folder holds ``config.yaml`` (the resolved configuration), ``metrics.csv`` (one row per epoch),
TensorBoard event files, the checkpoints ``last/`` and ``best/`` (see :mod:`spikemlp.train.checkpoint`)
and, at the end, ``summary.json``. Under ``torchrun`` every rank trains its shard and only rank 0 writes.

Things that matter for correctness rather than speed:
- Resume is exact on CPU in deterministic mode: the checkpoint carries the optimizer, scheduler, EMA,
  RNG states and the position inside the epoch; the data loader is re-seeded for the epoch and skips the
  batches already seen.
- A non-finite loss stops the run before the bad step touches the weights; ``last`` stays the last good
  checkpoint.
- ``time_budget`` (minutes): after a few measured steps the number of optimizer steps is fitted so that
  the cosine schedule ends, and the final evaluation finishes, within the budget; the fit is refreshed
  at every epoch end, and a hard deadline stops the run cleanly if the machine slows down.
"""

from __future__ import annotations

import contextlib
import csv
import json
import math
import os
import resource
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from . import checkpoint as ckpt
from . import loaders
from .config import TrainConfig, load_yaml, save_config, to_dict
from .distributed import (
    DistInfo,
    all_reduce_sum,
    barrier,
    broadcast_buffers,
    broadcast_float,
    cleanup,
    seconds_since_launch,
    setup,
)
from .evaluate import EvalResult, evaluate
from .optim import ScheduleClock, build_optimizer, build_scheduler, lif_parameter_names
from .state import capture_rng, restore_rng, seed_everything

CHECKPOINT_FORMAT = "spikemlp-checkpoint-1"
METRIC_COLUMNS = [
    "epoch",
    "step",
    "lr",
    "train_loss",
    "train_top1",
    "test_top1",
    "test_top5",
    "test_loss",
    "test_top1_single_view",
    "ema_top1",
    "epoch_seconds",
    "images_per_second",
    "wall_minutes",
]


class NonFiniteLossError(ValueError):
    """The loss became NaN or infinite; the message names the step and the checkpoint that was kept."""


@dataclass
class TrainResult:
    summary: dict[str, Any]
    model: nn.Module  # the trained model (unwrapped from DDP)
    run_dir: Path


# --------------------------------------------------------------------------------------------------------
# model


def model_names() -> list[str]:
    import timm

    import spikemlp  # noqa: F401  (registers the spikemlp models with timm)

    return timm.list_models()


def build_model(cfg: TrainConfig, num_classes: int) -> nn.Module:
    """``timm.create_model`` with the config's model arguments; an unknown name lists the close matches."""
    import difflib

    import timm

    names = model_names()
    if cfg.model not in names:
        ours = [n for n in names if n.startswith(("mlp_spe", "mlp_s", "snn_mlp"))]
        close = difflib.get_close_matches(cfg.model, names, n=4, cutoff=0.6)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise ValueError(
            f"unknown model '{cfg.model}'.{hint} spikemlp models: {', '.join(ours) or '(none registered)'}; "
            "any timm model name also works"
        )
    kwargs = dict(cfg.model_kwargs)
    if cfg.T is not None:
        kwargs["T"] = cfg.T
    if cfg.img_size is not None:
        kwargs["img_size"] = cfg.img_size
    if cfg.drop_path > 0:
        kwargs["drop_path_rate"] = cfg.drop_path
    try:
        model = timm.create_model(cfg.model, num_classes=num_classes, **kwargs)
    except TypeError as err:
        raise ValueError(
            f"model '{cfg.model}' does not take the arguments {sorted(kwargs)} ({err}); for models without "
            "time steps set T: null, and check model_kwargs"
        ) from None
    return model


def model_metadata(cfg: TrainConfig, num_classes: int, classes: list[str]) -> dict[str, str]:
    """What a weights file needs to rebuild its model and its evaluation transform."""
    return {
        "format": CHECKPOINT_FORMAT,
        "model": cfg.model,
        "num_classes": str(num_classes),
        "classes": json.dumps(classes),
        "config": json.dumps(to_dict(cfg)),
    }


def model_from_checkpoint(
    path: str | Path, ema: bool = False
) -> tuple[nn.Module, TrainConfig, dict[str, str]]:
    """The model stored at ``path`` (run folder, checkpoint folder or weights file), in eval mode, with the
    configuration it was trained with."""
    from .config import from_dict

    weights, meta = ckpt.load_weights(path, ema=ema)
    if meta.get("format") != CHECKPOINT_FORMAT or "config" not in meta:
        raise ckpt.CheckpointError(
            f"{path} is not a spikemlp training checkpoint (its weights file has no model metadata); "
            "to load raw weights use timm.create_model(...).load_state_dict(safetensors.torch.load_file(...))"
        )
    cfg = from_dict(json.loads(meta["config"]), where=f"the metadata of {path}")
    model = build_model(cfg, int(meta["num_classes"]))
    if cfg.dtype == "float64":
        model = model.double()
    missing, unexpected = model.load_state_dict(weights, strict=False)
    if missing or unexpected:
        raise ckpt.CheckpointError(
            f"weights in {path} do not fit model '{cfg.model}': missing {list(missing)[:5]}, "
            f"unexpected {list(unexpected)[:5]}"
        )
    return model.eval(), cfg, meta


# --------------------------------------------------------------------------------------------------------
# small helpers


def _peak_memory_mb(device: torch.device) -> tuple[float, str]:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20, "cuda_max_allocated"
    # ru_maxrss is in KiB on Linux (bytes on macOS)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return (rss / 2**20 if sys.platform == "darwin" else rss / 2**10), "process_max_rss"


def _autocast(cfg: TrainConfig, device: torch.device):
    if cfg.amp == "none" or device.type != "cuda":
        return contextlib.nullcontext()
    return torch.autocast("cuda", dtype=torch.bfloat16 if cfg.amp == "bf16" else torch.float16)


def _criterion(cfg: TrainConfig, mixing: bool) -> nn.Module:
    from timm.loss import LabelSmoothingCrossEntropy, SoftTargetCrossEntropy

    if mixing:
        return SoftTargetCrossEntropy()  # mixup/CutMix give soft targets (smoothing already inside)
    if cfg.smoothing > 0:
        return LabelSmoothingCrossEntropy(smoothing=cfg.smoothing)
    return nn.CrossEntropyLoss()


def _set_deterministic(on: bool) -> None:
    if on:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.benchmark = False
    else:
        torch.backends.cudnn.benchmark = True


class _Log:
    """Rank-0 outputs: console lines, metrics.csv and TensorBoard (other ranks get a silent stand-in)."""

    def __init__(self, run_dir: Path, active: bool, start_epoch: int) -> None:
        self.active = active
        self.tb = None
        if not active:
            return
        self.csv_path = run_dir / "metrics.csv"
        rows = []
        if self.csv_path.exists() and start_epoch > 0:
            with open(self.csv_path, newline="") as f:
                # a resumed run redoes the epoch it was killed in: drop rows from that epoch on
                rows = [r for r in csv.DictReader(f) if int(r["epoch"]) <= start_epoch]
        with open(self.csv_path, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=METRIC_COLUMNS)
            w.writeheader()
            w.writerows(rows)
        try:
            from torch.utils.tensorboard import SummaryWriter

            self.tb = SummaryWriter(log_dir=str(run_dir))
        except ImportError:  # pragma: no cover (tensorboard is a dependency; stay usable without it)
            self.print("note: tensorboard is not installed; metrics go to metrics.csv only")

    def print(self, msg: str) -> None:
        if self.active:
            from tqdm import tqdm

            # tqdm.write clears an open progress bar, prints the line and redraws the bar below it
            tqdm.write(msg, file=sys.stdout)
            sys.stdout.flush()

    def scalars(self, step: int, **values: float) -> None:
        if self.tb is not None:
            for k, v in values.items():
                if v is not None and math.isfinite(v):
                    self.tb.add_scalar(k, v, step)

    def row(self, row: dict[str, Any]) -> None:
        if self.active:
            with open(self.csv_path, "a", newline="") as f:
                csv.DictWriter(f, fieldnames=METRIC_COLUMNS).writerow(
                    {k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()}
                )

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()


# --------------------------------------------------------------------------------------------------------
# the loop


def _check_run_dir(run_dir: Path, resume: bool) -> None:
    if not resume and ((run_dir / "last").exists() or (run_dir / "last.old").exists()):
        raise ValueError(
            f"{run_dir} already holds a training run; continue it with --resume {run_dir}, or choose "
            "another --out"
        )


def preflight(cfg: TrainConfig, run_dir: str | Path, resume: bool = False) -> None:
    """The checks that stop a run before it starts (run folder, data set, model), made once before
    ``spikemlp train`` starts worker processes: one clear error instead of one per worker."""
    _check_run_dir(Path(run_dir), resume)
    facts = loaders.facts(cfg.data, cfg.img_size)
    loaders.check_available(cfg.data, cfg.data_dir)
    build_model(cfg, cfg.num_classes or facts.num_classes)


def train(cfg: TrainConfig, run_dir: str | Path, resume: bool = False) -> TrainResult:
    """Train ``cfg`` into ``run_dir`` (continuing from ``run_dir/last`` when ``resume``)."""
    run_dir = Path(run_dir)
    _check_run_dir(run_dir, resume)
    info = setup(cfg.device)
    deterministic_before = torch.are_deterministic_algorithms_enabled()
    try:
        return _train(cfg, run_dir, resume, info)
    finally:
        torch.use_deterministic_algorithms(deterministic_before)
        cleanup(info)


def _train(cfg: TrainConfig, run_dir: Path, resume: bool, info: DistInfo) -> TrainResult:
    t_start = time.perf_counter() - seconds_since_launch()  # workers: the clock began at the launch
    device = info.device
    if cfg.threads > 0:
        torch.set_num_threads(cfg.threads)
    _set_deterministic(cfg.deterministic)
    dtype = torch.float64 if cfg.dtype == "float64" else torch.float32
    log = _Log(run_dir, False, 0)  # replaced once the run folder is known to be usable

    # ---- data
    facts = loaders.facts(cfg.data, cfg.img_size)
    train_split = loaders.load(cfg.data, "train", cfg.data_dir, cfg.synthetic_size, cfg.img_size)
    test_split = loaders.load(cfg.data, "test", cfg.data_dir, cfg.synthetic_size, cfg.img_size)
    num_classes = cfg.num_classes or facts.num_classes
    classes = loaders.class_names(train_split, num_classes)
    pipeline = loaders.choose_pipeline(
        cfg.pipeline, train_split, facts.image_size, cfg.img_size, cfg.auto_augment
    )
    train_loader = loaders.build_train_loader(
        cfg, train_split, facts, pipeline, info.rank, info.world_size, device
    )
    test_loader = loaders.build_eval_loader(
        cfg, test_split, facts, pipeline, info.rank, info.world_size, device
    )
    if len(train_loader) == 0:
        raise ValueError(
            f"the training set has fewer images per process than one batch ({cfg.batch_size}); lower "
            "batch_size"
        )

    # ---- model (same initial weights on every rank: seeded before building; DDP also broadcasts rank 0's)
    seed_everything(cfg.seed)
    model = build_model(cfg, num_classes).to(device=device, dtype=dtype)
    n_params = sum(p.numel() for p in model.parameters())
    if cfg.grad_checkpointing:
        if not hasattr(model, "set_grad_checkpointing"):
            raise ValueError(
                f"model '{cfg.model}' has no set_grad_checkpointing(); set grad_checkpointing: false"
            )
        model.set_grad_checkpointing(True)
    if info.enabled and cfg.sync_bn:
        if device.type == "cuda":
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        else:  # PyTorch's SyncBatchNorm is GPU-only
            from .sync_batchnorm import convert_sync_batchnorm

            model = convert_sync_batchnorm(model)
    ema = None
    if cfg.ema:
        from timm.utils import ModelEmaV3

        ema = ModelEmaV3(model, decay=cfg.ema_decay)
    train_model: nn.Module = model
    if info.enabled:
        from torch.nn.parallel import DistributedDataParallel

        train_model = DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None
        )
    if cfg.compile:
        # The training steps only: evaluation and checkpoints use `model` itself (no second compilation
        # for eval mode, no "_orig_mod." prefixes in the saved weights).
        train_model = torch.compile(train_model)
        if info.enabled:
            # Compiled 1x1 convolutions give their weight gradients other strides on the size-1 axes (the
            # same memory layout), which DDP reports on every step as a possible slowdown; it is not one.
            warnings.filterwarnings("ignore", message="Grad strides do not match bucket view strides")
    seed_everything(cfg.seed + info.rank)  # per-rank streams for dropout, mixup, augmentation

    # ---- optimisation
    global_batch = cfg.batch_size * cfg.accum_steps * info.world_size
    optimizer = build_optimizer(model, cfg, global_batch)
    lif_names = lif_parameter_names(model)
    lif_params = [p for n, p in model.named_parameters() if n in lif_names]
    micro_per_epoch = len(train_loader)
    if cfg.max_steps_per_epoch > 0:
        micro_per_epoch = min(micro_per_epoch, cfg.max_steps_per_epoch * cfg.accum_steps)
    updates_per_epoch = math.ceil(micro_per_epoch / cfg.accum_steps)
    total_steps = cfg.epochs * updates_per_epoch
    warmup_steps = round(cfg.warmup_epochs * updates_per_epoch)
    scheduler = build_scheduler(optimizer, cfg, global_batch, total_steps, warmup_steps)
    clock = ScheduleClock(scheduler.warmup_t, total_steps)
    scaler = torch.amp.GradScaler("cuda", enabled=cfg.amp == "fp16" and device.type == "cuda")
    mixup_fn = None
    if cfg.mixup > 0 or cfg.cutmix > 0:
        from timm.data import Mixup

        mixup_fn = Mixup(
            mixup_alpha=cfg.mixup,
            cutmix_alpha=cfg.cutmix,
            prob=cfg.mixup_prob,
            switch_prob=cfg.mixup_switch_prob,
            mode=cfg.mixup_mode,
            label_smoothing=cfg.smoothing,
            num_classes=num_classes,
        )
    criterion = _criterion(cfg, mixup_fn is not None)
    autocast = _autocast(cfg, device)

    # ---- resume
    epoch, start_micro, global_step = 0, 0, 0
    best_top1, best_epoch, elapsed_before = -1.0, -1, 0.0
    partial = {"loss": 0.0, "correct": 0.0, "seen": 0.0}
    rng_to_restore = None
    if resume:
        state = ckpt.load_state(run_dir / "last")
        weights, _ = ckpt.load_weights(run_dir / "last")
        model.load_state_dict(weights)
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        clock.load_state_dict(state["clock"])
        if "scaler" in state:
            scaler.load_state_dict(state["scaler"])
        if ema is not None:
            ema_weights, _ = ckpt.load_weights(run_dir / "last", ema=True)
            ema.module.load_state_dict(ema_weights)
        c = state["counters"]
        epoch, start_micro, global_step = int(c["epoch"]), int(c["micro"]), int(c["global_step"])
        total_steps = int(c["total_steps"])
        if (
            cfg.time_budget is None
            and cfg.epochs * updates_per_epoch != total_steps
            and global_step < (cfg.epochs * updates_per_epoch)
        ):
            # resumed with a new --epochs: the rest of the schedule stretches (or shrinks) to the new end
            total_steps = cfg.epochs * updates_per_epoch
            clock.refit(global_step, total_steps)
        best_top1, best_epoch = float(c["best_top1"]), int(c["best_epoch"])
        elapsed_before = float(c["elapsed_seconds"])
        partial = {k: float(v) for k, v in state["partial"].items()}
        rng_to_restore = state["rng"][info.rank] if info.rank < len(state["rng"]) else None
        if rng_to_restore is None:
            raise ckpt.CheckpointError(
                f"{run_dir / 'last'} was written by a run with {len(state['rng'])} processes; resume with "
                "the same number of processes"
            )

    if info.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        save_config(cfg, run_dir / "config.yaml")
    log = _Log(run_dir, info.is_main, epoch)
    if cfg.amp != "none" and device.type != "cuda":
        log.print(f"note: amp={cfg.amp} applies to CUDA only; training in {cfg.dtype} on {device.type}")
    log.print(
        f"spikemlp train: {cfg.model} ({n_params / 1e6:.3f}M parameters, T={cfg.T}) on {cfg.data} "
        f"[{pipeline} pipeline, {len(train_split)} train / {len(test_split)} test images], {info.world_size} "
        f"process(es) on {device}, global batch {global_batch}, {updates_per_epoch} steps per epoch"
        + (f", time budget {cfg.time_budget:g} min" if cfg.time_budget else "")
        + (f", resuming at epoch {epoch + 1} step {global_step}" if resume else "")
    )
    if lif_params:
        log.print(
            f"  LIF tau/V_th group: {len(lif_params)} tensors, lr {cfg.lif_lr:g}, frozen for "
            f"{cfg.lif_freeze_epochs} epoch(s)"
        )

    meta_model = model_metadata(cfg, num_classes, classes)

    def evaluate_now(module: nn.Module) -> EvalResult:
        broadcast_buffers(module, info)  # every rank evaluates with rank 0's statistics, the checkpoint's
        return evaluate(
            module, test_loader, num_classes, device, info, _autocast(cfg, device), dtype, cfg.tta
        )

    def elapsed() -> float:
        return elapsed_before + time.perf_counter() - t_start

    timings = {"save": 0.0}  # seconds the last checkpoint write took (the time budget keeps room for one)

    def save_last(epoch_: int, micro: int, partial_: dict[str, float]) -> None:
        t_save = time.perf_counter()
        rng_all = _gather_rng(info)
        if not info.is_main:
            return
        state_ = {
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "clock": clock.state_dict(),
            "scaler": scaler.state_dict(),
            "rng": rng_all,
            "counters": {
                "epoch": epoch_,
                "micro": micro,
                "global_step": global_step,
                "total_steps": total_steps,
                "best_top1": best_top1,
                "best_epoch": best_epoch,
                "elapsed_seconds": elapsed(),
            },
            "partial": dict(partial_),
        }
        ckpt.save_checkpoint(
            run_dir / "last",
            ckpt.plain_state_dict(model),
            meta_model,
            state=state_,
            ema_state=ckpt.plain_state_dict(ema.module) if ema is not None else None,
            meta={
                "epoch": epoch_,
                "micro": micro,
                "global_step": global_step,
                "total_steps": total_steps,
                "mid_epoch": micro > 0,
                "best_top1": best_top1,
            },
        )
        timings["save"] = time.perf_counter() - t_save

    # ---- time budget
    budget_s = cfg.time_budget * 60.0 if cfg.time_budget else None
    eval_seconds_est: float | None = None  # measured at the first evaluation
    eval_overhead_per_epoch = 0.0
    fit_done = resume  # a resumed run keeps the fitted number of steps (refreshed at epoch ends)
    measure_from: tuple[float, int] | None = None
    stop_reason = "epochs"

    sec_per_image: float | None = None  # training pace, measured once a few steps have run
    test_local = math.ceil(len(test_split) / info.world_size)

    def eval_reserve() -> float:
        """Seconds to keep for the final evaluation: measured once one has run, else estimated from the
        training pace (a forward pass costs about a third of a training step; count half to be safe)."""
        extra = 2 * timings["save"] + 1.0  # the checkpoints written at the end, and the summary
        if eval_seconds_est is not None:
            return eval_seconds_est * 1.15 + extra
        if sec_per_image is not None:
            return test_local * sec_per_image * 0.5 + extra
        return 0.0

    def fit_steps(sec_per_step: float) -> int:
        """Optimizer steps that fit in the rest of the budget, leaving the final evaluation's time."""
        remaining = budget_s - elapsed() - eval_reserve()
        per_step = sec_per_step + eval_overhead_per_epoch / updates_per_epoch
        fitted = global_step + max(1, int(remaining * 0.98 / per_step))
        return min(fitted, cfg.epochs * updates_per_epoch)

    # ---- epochs
    last_eval: EvalResult | None = None
    last_ema_eval: EvalResult | None = None
    train_seconds, train_images = 0.0, 0
    stop = False
    while global_step < total_steps and not stop:
        train_model.train()
        train_loader.set_epoch(epoch)
        if start_micro:
            train_loader.skip(start_micro)
        if rng_to_restore is not None:
            restore_rng(rng_to_restore)
            rng_to_restore = None
        sums = torch.tensor([partial["loss"], partial["correct"], partial["seen"]], dtype=torch.float64)
        epoch_images, epoch_updates = 0, 0
        t_epoch = time.perf_counter()
        frozen = epoch < cfg.lif_freeze_epochs
        use_mixup = mixup_fn is not None and (cfg.mixup_off_epoch == 0 or epoch < cfg.mixup_off_epoch)
        step_loss = criterion if use_mixup or mixup_fn is None else _criterion(cfg, mixing=False)
        epochs_shown = math.ceil(total_steps / updates_per_epoch)
        bar = None
        if info.is_main and cfg.progress:
            from tqdm import tqdm

            bar = tqdm(
                total=micro_per_epoch,
                initial=start_micro,
                desc=f"epoch {epoch + 1}/{epochs_shown}",
                unit="batch",
                dynamic_ncols=True,
                leave=False,
                file=sys.stderr,
                mininterval=1.0,
            )
        micro = start_micro
        optimizer.zero_grad(set_to_none=True)
        for images, labels in train_loader:
            images = images.to(device, dtype=dtype, non_blocking=True)
            labels = labels.to(device, non_blocking=True)
            hard = labels
            if use_mixup:
                images, labels = mixup_fn(images, labels)
            last_micro = (micro + 1) % cfg.accum_steps == 0 or micro + 1 == micro_per_epoch
            sync = contextlib.nullcontext()
            if info.enabled and not last_micro:
                sync = train_model.no_sync()
            with sync:
                with autocast:
                    logits = train_model(images)
                    loss = step_loss(logits.float(), labels)
                bad = torch.tensor([0.0 if torch.isfinite(loss.detach()) else 1.0], device=device)
                if all_reduce_sum(bad, info).item() > 0:
                    if bar is not None:
                        bar.close()
                    where = _kept_checkpoint(run_dir)
                    raise NonFiniteLossError(
                        f"loss became {loss.item()} at step {global_step + 1} (epoch {epoch + 1}, "
                        f"batch {micro + 1}); training stopped before that step changed the weights and "
                        f"{where}. Lower lr, add warm-up (warmup_epochs) or clip gradients (clip_grad), "
                        "then --resume or start again."
                    )
                scaler.scale(loss / cfg.accum_steps).backward()
            with torch.no_grad():
                sums += torch.stack(
                    [
                        loss.detach().double().cpu() * len(hard),
                        (logits.detach().argmax(1) == hard).sum().double().cpu(),
                        torch.tensor(float(len(hard)), dtype=torch.float64),
                    ]
                )
            epoch_images += len(hard)
            micro += 1
            if not last_micro:
                continue
            if frozen:
                for p in lif_params:
                    p.grad = None  # frozen: the optimizer skips parameters without gradients
            if cfg.clip_grad is not None:
                scaler.unscale_(optimizer)
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.clip_grad)
            scaler.step(optimizer)
            scaler.update()
            optimizer.zero_grad(set_to_none=True)
            global_step += 1
            epoch_updates += 1
            scheduler.step_update(num_updates=clock(global_step))
            if ema is not None:
                ema.update(model, step=global_step)
            if bar is not None:
                dt = time.perf_counter() - t_epoch
                bar.set_postfix(
                    loss=f"{sums[0] / sums[2]:.3f}",
                    acc=f"{100 * sums[1] / sums[2]:.1f}%",
                    img_s=f"{epoch_images * info.world_size / max(dt, 1e-9):.0f}",
                    refresh=False,
                )
                bar.update(micro - bar.n)
            if global_step % cfg.log_every == 0:
                log.scalars(
                    global_step,
                    **{"train/loss": float(loss.detach()), "train/lr": optimizer.param_groups[0]["lr"]},
                )
            if (
                cfg.checkpoint_every_steps
                and global_step % cfg.checkpoint_every_steps == 0
                and micro < micro_per_epoch
            ):
                save_last(
                    epoch, micro, {"loss": float(sums[0]), "correct": float(sums[1]), "seen": float(sums[2])}
                )
            # time budget: fit once a few steps are measured, then watch the deadline
            if budget_s is not None:
                if measure_from is None and global_step >= 3:
                    measure_from = (time.perf_counter(), global_step)
                # step counts only (not each rank's clock), so that every rank reaches the broadcast together
                if (
                    not fit_done
                    and measure_from is not None
                    and (global_step - measure_from[1] >= 20 or micro >= micro_per_epoch)
                ):
                    rate = (time.perf_counter() - measure_from[0]) / max(1, global_step - measure_from[1])
                    sec_per_image = rate / (cfg.batch_size * cfg.accum_steps)
                    if eval_seconds_est is None:  # no evaluation measured yet: estimate its share
                        eval_overhead_per_epoch = test_local * sec_per_image * 0.5 / cfg.eval_every
                    total_steps = int(broadcast_float(float(fit_steps(rate)), info))
                    clock.refit(global_step, total_steps)
                    fit_done = True
                    log.print(
                        f"time budget: {rate * 1000:.1f} ms per step measured; training for {total_steps} "
                        "steps "
                        f"({total_steps / updates_per_epoch:.2f} epochs)"
                    )
                    if bar is not None:  # the bar was opened with the recipe's epochs, not the fitted ones
                        bar.set_description(f"epoch {epoch + 1}/{math.ceil(total_steps / updates_per_epoch)}")
                late = 1.0 if elapsed() + eval_reserve() >= budget_s else 0.0
                if broadcast_float(late, info) > 0:
                    stop, stop_reason = True, "time_budget"
            if global_step >= total_steps or micro >= micro_per_epoch or stop:
                break
        if bar is not None:
            bar.close()
        epoch_seconds = time.perf_counter() - t_epoch
        train_seconds += epoch_seconds
        train_images += epoch_images * info.world_size
        start_micro = 0
        partial = {"loss": 0.0, "correct": 0.0, "seen": 0.0}
        epoch_done = micro >= micro_per_epoch
        finished = global_step >= total_steps or stop
        totals = all_reduce_sum(sums.to(device), info).cpu()
        train_loss, train_top1 = float(totals[0] / totals[2]), float(100 * totals[1] / totals[2])
        # ---- evaluate
        last_eval = last_ema_eval = None
        if (epoch + 1) % cfg.eval_every == 0 or finished:
            last_eval = evaluate_now(model)
            if ema is not None:
                last_ema_eval = evaluate_now(ema.module)
            eval_seconds_est = last_eval.seconds + (last_ema_eval.seconds if last_ema_eval else 0.0)
            eval_overhead_per_epoch = eval_seconds_est / cfg.eval_every
        ips = epoch_images * info.world_size / max(epoch_seconds, 1e-9)
        lr_now = optimizer.param_groups[0]["lr"]
        candidates = []
        if last_eval is not None:
            candidates.append((last_eval.top1, "model", model))
        if last_ema_eval is not None:
            candidates.append((last_ema_eval.top1, "ema", ema.module))
        improved = None
        for top1, which, module in candidates:
            if top1 > best_top1:
                best_top1, best_epoch, improved = top1, epoch + 1, (which, module)
        log.row(
            {
                "epoch": epoch + 1,
                "step": global_step,
                "lr": lr_now,
                "train_loss": train_loss,
                "train_top1": train_top1,
                "test_top1": last_eval.top1 if last_eval else "",
                "test_top5": last_eval.top5 if last_eval else "",
                "test_loss": last_eval.loss if last_eval else "",
                "test_top1_single_view": (
                    last_eval.top1_single_view if last_eval and last_eval.top1_single_view is not None else ""
                ),
                "ema_top1": last_ema_eval.top1 if last_ema_eval else "",
                "epoch_seconds": epoch_seconds,
                "images_per_second": ips,
                "wall_minutes": elapsed() / 60,
            }
        )
        log.scalars(
            epoch + 1,
            **{
                "epoch/train_loss": train_loss,
                "epoch/train_top1": train_top1,
                "epoch/images_per_second": ips,
                "epoch/lr": lr_now,
                "test/top1": last_eval.top1 if last_eval else None,
                "test/top5": last_eval.top5 if last_eval else None,
                "test/loss": last_eval.loss if last_eval else None,
                "test/ema_top1": last_ema_eval.top1 if last_ema_eval else None,
            },
        )
        test_txt = f"  test {last_eval.top1:.2f}% (top-5 {last_eval.top5:.2f}%)" if last_eval else ""
        if last_eval is not None and last_eval.top1_single_view is not None:
            test_txt += f" [{cfg.tta}; one view {last_eval.top1_single_view:.2f}%]"
        ema_txt = f"  ema {last_ema_eval.top1:.2f}%" if last_ema_eval else ""
        log.print(
            f"epoch {epoch + 1}/{math.ceil(total_steps / updates_per_epoch)}  step {global_step}  "
            f"loss {train_loss:.4f}  train {train_top1:.2f}%{test_txt}{ema_txt}  lr {lr_now:.3g}  "
            f"{ips:.0f} img/s  {epoch_seconds:.1f} s"
            f"  [{elapsed() / 60:.1f} min" + (f", best {best_top1:.2f}%]" if best_top1 >= 0 else "]")
        )
        if improved is not None and info.is_main:
            which, module = improved
            ckpt.save_checkpoint(
                run_dir / "best",
                ckpt.plain_state_dict(module),
                meta_model,
                meta={"epoch": epoch + 1, "global_step": global_step, "top1": best_top1, "weights": which},
            )
        if epoch_done:
            epoch += 1
        if budget_s is not None and fit_done and not finished and epoch_done:
            # refresh the fit with this epoch's pace (includes evaluation and checkpoint overheads)
            rate = epoch_seconds / max(1, epoch_updates)
            total_steps = int(broadcast_float(float(fit_steps(rate)), info))
            clock.refit(global_step, total_steps)
        save_last(epoch, 0 if epoch_done else micro, {"loss": 0.0, "correct": 0.0, "seen": 0.0})
        if finished:
            if global_step < cfg.epochs * updates_per_epoch and budget_s is not None:
                stop_reason = "time_budget"
            break

    # ---- final evaluation (already done at the last epoch end) and summary
    if last_eval is None:
        last_eval = evaluate_now(model)
    peak_mb, peak_kind = _peak_memory_mb(device)
    # every process's peak together: what the run needs of the machine (rank 0's alone is peak_memory_mb)
    peak_all_mb = float(all_reduce_sum(torch.tensor([peak_mb], dtype=torch.float64, device=device), info))
    summary = {
        "top1": last_eval.top1,
        "top5": last_eval.top5,
        "test_loss": last_eval.loss,
        "tta": cfg.tta,
        "top1_single_view": last_eval.top1_single_view,
        "ema_top1": last_ema_eval.top1 if last_ema_eval else None,
        "best_top1": best_top1,
        "best_epoch": best_epoch,
        "epochs": round(global_step / updates_per_epoch, 3),
        "steps": global_step,
        "wall_seconds": elapsed(),
        "train_seconds": train_seconds,
        "images_per_second": train_images / max(train_seconds, 1e-9),
        "peak_memory_mb": peak_mb,
        "peak_memory_kind": peak_kind,
        "peak_memory_mb_all_processes": peak_all_mb,
        "stopped_by": stop_reason,
        "model": cfg.model,
        "parameters": n_params,
        "T": cfg.T,
        "data": cfg.data,
        "test_images": last_eval.count,
        "device": str(device),
        "world_size": info.world_size,
        "global_batch": global_batch,
    }
    if info.is_main:
        (run_dir / "summary.json").write_text(json.dumps(summary, indent=1))
        log.print(
            f"done: top-1 {summary['top1']:.2f}% (best {best_top1:.2f}% at epoch {best_epoch}) after "
            f"{summary['epochs']:g} epochs in {summary['wall_seconds'] / 60:.1f} min; results in {run_dir}"
        )
    log.close()
    barrier(info)
    return TrainResult(summary=summary, model=model, run_dir=run_dir)


def _kept_checkpoint(run_dir: Path) -> str:
    try:
        folder = ckpt.resolve(run_dir / "last")
    except ckpt.CheckpointError:
        return "no checkpoint was written yet"
    return f"kept {folder} (step {ckpt.load_meta(folder).get('global_step', '?')})"


def _gather_rng(info: DistInfo) -> list[dict[str, Any]]:
    """Every rank's RNG state (rank 0 saves them all, so each rank resumes its own stream)."""
    mine = capture_rng()
    if not info.enabled:
        return [mine]
    import torch.distributed as dist

    out: list[Any] = [None] * info.world_size
    dist.all_gather_object(out, mine)
    return out


def read_run_config(run_dir: str | Path) -> dict[str, Any]:
    """The resolved configuration saved in a run folder (for ``--resume``)."""
    path = Path(run_dir) / "config.yaml"
    if not path.is_file():
        raise FileNotFoundError(f"{run_dir} is not a run folder: {path.name} is missing (nothing to resume)")
    return load_yaml(path)


__all__ = ["train", "TrainResult", "NonFiniteLossError", "build_model", "model_from_checkpoint"]
