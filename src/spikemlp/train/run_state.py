"""The state of a training run: model, optimizer, schedule, EMA, gradient scaler, counters and random
streams, built from the config, saved to the ``last`` checkpoint and restored from it.

Resume is exact (bit for bit in deterministic CPU mode): the checkpoint carries all of these, with the
position inside the epoch and its running sums. The random streams, every rank's, are PyTorch's (CPU and
CUDA), NumPy's (timm's mixup) and Python's (timm's RandAugment), stored as plain tensors and numbers so
that the checkpoint loads with ``weights_only=True``.
"""

from __future__ import annotations

import random
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .. import checkpoint as ckpt
from .. import models
from .config import TrainConfig, to_dict
from .distributed import DistInfo
from .optim import ScheduleClock, build_optimizer, build_scheduler
from .state_checks import check_optimizer, check_weights


def _zero_sums() -> dict[str, float]:
    return {"loss": 0.0, "correct": 0.0, "seen": 0.0}


@dataclass
class RunState:
    """Everything a checkpoint must bring back. ``train_model`` is ``model`` as the training steps run it
    (wrapped by DDP and/or ``torch.compile``); evaluation and checkpoints use ``model`` itself."""

    model: nn.Module
    train_model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: Any
    clock: ScheduleClock
    scaler: torch.amp.GradScaler
    ema: Any | None  # timm ModelEmaV3
    lif_params: list[nn.Parameter]
    epoch: int = 0
    micro: int = 0  # forward passes already done in the current epoch (non-zero: resumed mid-epoch)
    global_step: int = 0
    best_top1: float = -1.0
    best_epoch: int = -1
    partial: dict[str, float] = field(default_factory=_zero_sums)  # the resumed epoch's running sums
    rng: dict[str, Any] | None = None  # this rank's random streams, restored when the epoch starts

    @property
    def total_steps(self) -> int:
        return self.clock.total_steps

    def replan(self, total_steps: int) -> None:
        """Move the end of the schedule to ``total_steps`` from the current step on."""
        self.clock.refit(self.global_step, total_steps)

    def save_last(self, folder: Path, model_meta: dict[str, str], info: DistInfo, elapsed: float) -> None:
        """Write the resume checkpoint (a collective: every rank's random streams go into rank 0's file)."""
        ranks = _gather_ranks(info, {"rng": capture_rng(), "partial": dict(self.partial)})
        if not info.is_main:
            return
        names = ("epoch", "micro", "global_step", "total_steps", "best_top1", "best_epoch")
        counters = {k: getattr(self, k) for k in names} | {"elapsed_seconds": elapsed}
        state = {
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "clock": self.clock.state_dict(),
            "scaler": self.scaler.state_dict(),
            "rng": [r["rng"] for r in ranks],
            "counters": counters,
            "partial": [r["partial"] for r in ranks],  # each rank's own sums (the epoch's are their total)
        }
        ckpt.save_checkpoint(
            folder,
            ckpt.plain_state_dict(self.model),
            model_meta,
            state=state,
            ema_state=ckpt.plain_state_dict(self.ema.module) if self.ema is not None else None,
            meta={k: v for k, v in counters.items() if k not in ("best_epoch", "elapsed_seconds")}
            | {"mid_epoch": self.micro > 0},
        )

    def restore(self, folder: Path, rank: int, world_size: int = 1) -> tuple[int, float]:
        """Load the checkpoint in ``folder``; returns (the total steps it had planned, the seconds the run
        had taken)."""
        state = ckpt.load_state(folder)
        if len(state["rng"]) != world_size:  # checked before anything is loaded
            raise ckpt.CheckpointError(
                f"{folder} was written by a run with {len(state['rng'])} process(es), this one has "
                f"{world_size}: resume with the same number of processes (the global batch would change)"
            )
        weights, _ = ckpt.load_weights(folder)
        ema_weights = ckpt.load_weights(folder, ema=True)[0] if self.ema is not None else None
        # all of it checked before anything is loaded (a fused optimizer given other shapes segfaults)
        check_weights(weights, self.model, folder)
        if ema_weights is not None:
            check_weights(ema_weights, self.ema.module, folder)
        check_optimizer(state["optimizer"], self.optimizer, folder)
        self.model.load_state_dict(weights)
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.clock.load_state_dict(state["clock"])
        if "scaler" in state:
            self.scaler.load_state_dict(state["scaler"])
        if ema_weights is not None:
            self.ema.module.load_state_dict(ema_weights)
        c = state["counters"]
        self.epoch, self.micro, self.global_step = int(c["epoch"]), int(c["micro"]), int(c["global_step"])
        self.best_top1, self.best_epoch = float(c["best_top1"]), int(c["best_epoch"])
        partial = state["partial"][rank] if isinstance(state["partial"], list) else state["partial"]
        self.partial = {k: float(v) for k, v in partial.items()}
        self.rng = state["rng"][rank]
        return int(c["total_steps"]), float(c["elapsed_seconds"])

    def next_epoch(self, epoch_done: bool) -> None:
        """After an epoch's checkpoint point: the next epoch starts from its first batch."""
        if epoch_done:
            self.epoch += 1
        self.micro = 0 if epoch_done else self.micro
        self.partial = _zero_sums()


def build_state(
    cfg: TrainConfig, info: DistInfo, num_classes: int, total_steps: int, warmup_steps: int
) -> RunState:
    """The run's model (the same initial weights on every rank: seeded before building; DDP also
    broadcasts rank 0's) and everything around it: DDP, compilation, EMA, optimizer, schedule, scaler."""
    device = info.device
    seed_everything(cfg.seed)
    model = models.from_config(to_dict(cfg), num_classes)
    if cfg.pretrained or cfg.initial_checkpoint:
        from ..models.plain_weights import load_initial_weights

        load_initial_weights(model, cfg.pretrained, cfg.initial_checkpoint)
    model = model.to(device)
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
    global_batch = cfg.batch_size * cfg.accum_steps * info.world_size
    optimizer = build_optimizer(model, cfg, global_batch)
    scheduler = build_scheduler(optimizer, cfg, global_batch, total_steps, warmup_steps)
    return RunState(
        model=model,
        train_model=train_model,
        optimizer=optimizer,
        scheduler=scheduler,
        clock=ScheduleClock(scheduler.warmup_t, total_steps),
        scaler=torch.amp.GradScaler("cuda", enabled=cfg.amp == "fp16" and device.type == "cuda"),
        ema=ema,
        # the LIF group of the optimizer (spikemlp.models.snn_mlp.param_groups), frozen for the first epochs
        lif_params=[p for g in optimizer.param_groups if g.get("name") == "lif" for p in g["params"]],
    )


def _gather_ranks(info: DistInfo, mine: dict[str, Any]) -> list[dict[str, Any]]:
    """Every rank's ``mine`` (its RNG state and running sums: rank 0 saves them all, so each rank resumes
    its own)."""
    if not info.enabled:
        return [mine]
    import torch.distributed as dist

    out: list[Any] = [None] * info.world_size
    dist.all_gather_object(out, mine)
    return out


def capture_rng() -> dict[str, Any]:
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    version, py_state, py_gauss = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": {
            "kind": kind,
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached": float(cached),
        },
        "python": {
            "version": int(version),
            "state": torch.tensor(py_state, dtype=torch.int64),
            "gauss": py_gauss,
        },
    }


def restore_rng(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if state.get("cuda") and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])
    n = state["numpy"]
    np.random.set_state(
        (n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached"])
    )
    p = state["python"]
    random.setstate((p["version"], tuple(p["state"].tolist()), p["gauss"]))


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
