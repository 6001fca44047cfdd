"""The training loop behind ``spikemlp train``: one function, :func:`train`, from a config to a run folder.

A run folder holds ``config.yaml`` (the resolved configuration), ``metrics.csv`` (one row per epoch),
TensorBoard event files, the checkpoints ``last/`` and ``best/`` (see :mod:`spikemlp.checkpoint`)
and, at the end, ``summary.json``. Under ``torchrun`` every rank trains its shard and only rank 0 writes.

This module reads the data and wires the parts of the loop together (docs/architecture.md names them).
"""

from __future__ import annotations

import json
import math
import os
import resource
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .. import checkpoint as ckpt
from .. import models
from ..data import loaders
from . import resume_checks, run_folder
from .config import TrainConfig, from_dict, load_yaml, save_config, to_dict
from .data_checks import check_labels_fit
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
from .epoch import EpochRunner, EpochStats, NonFiniteLossError
from .evaluate import EvalResult, evaluate
from .run_log import EpochRecord, RunLog
from .run_state import build_state
from .time_budget import TimeBudget, eval_passes, resumed_minutes


@dataclass
class TrainResult:
    summary: dict[str, Any]
    model: nn.Module  # the trained model (unwrapped from DDP)
    run_dir: Path


def build_model(cfg: TrainConfig, num_classes: int) -> nn.Module:
    """The model ``cfg`` describes (see :func:`spikemlp.models.from_config`)."""
    return models.from_config(to_dict(cfg), num_classes)


def model_from_checkpoint(
    path: str | Path, ema: bool = False
) -> tuple[nn.Module, TrainConfig, dict[str, str]]:
    """:func:`spikemlp.models.from_checkpoint`, with the configuration as a :class:`TrainConfig`."""
    model, config, meta = models.from_checkpoint(path, ema=ema)
    return model, from_dict(config, where=f"the metadata of {path}"), meta


def preflight(cfg: TrainConfig, run_dir: str | Path, resume: bool = False, overwrite: bool = False) -> None:
    """The checks that stop a run before it starts (run folder, data set, model), made once before
    ``spikemlp train`` starts worker processes: one clear error instead of one per worker."""
    run_folder.check_reuse(Path(run_dir), resume, overwrite)
    facts = loaders.facts(cfg.data, cfg.img_size)
    loaders.check_available(cfg.data, cfg.data_dir)
    build_model(cfg, cfg.num_classes or facts.num_classes)


def train(
    cfg: TrainConfig, run_dir: str | Path, resume: bool = False, overwrite: bool = False
) -> TrainResult:
    """Train ``cfg`` into ``run_dir`` (continuing from ``run_dir/last`` when ``resume``; replacing an earlier
    run's files when ``overwrite``), holding the folder's lock (:mod:`.run_folder`) throughout."""
    run_dir = Path(run_dir)
    with run_folder.locked(run_dir):
        if int(os.environ.get("RANK", "0")) == 0:  # the writer; other ranks could see its first files
            run_folder.check_reuse(run_dir, resume, overwrite)
            if resume:
                resume_checks.check_resumable(run_dir)
            if overwrite and not resume:
                run_folder.clear(run_dir)
        info = setup(cfg.device)
        deterministic_before = torch.are_deterministic_algorithms_enabled()
        try:
            return _Run(cfg, run_dir, resume, info).run()
        finally:
            torch.use_deterministic_algorithms(deterministic_before)
            cleanup(info)


@dataclass
class _Data:
    """The run's two splits and their loaders (this rank's shard)."""

    train_split: Any
    test_split: Any
    num_classes: int
    classes: list[str]
    pipeline: str
    train_loader: Any
    test_loader: Any
    micro_per_epoch: int  # forward passes per epoch (max_steps_per_epoch may cut the epoch)
    updates_per_epoch: int


def _read_data(cfg: TrainConfig, info: DistInfo) -> _Data:
    facts = loaders.facts(cfg.data, cfg.img_size)  # (first: an unknown name gets its did-you-mean)
    train_split = loaders.load(cfg.data, "train", cfg.data_dir, cfg.synthetic_size, cfg.img_size)
    test_split = loaders.load(cfg.data, "test", cfg.data_dir, cfg.synthetic_size, cfg.img_size)
    facts = loaders.with_present_classes(facts, train_split)
    num_classes = cfg.num_classes or facts.num_classes
    for split, name in ((train_split, "train"), (test_split, "test")):
        check_labels_fit(split, num_classes, f"{cfg.data} {name}")
    pipeline = loaders.choose_pipeline(
        cfg.pipeline, train_split, facts.image_size, cfg.img_size, cfg.auto_augment
    )
    shard = (info.rank, info.world_size, info.device)
    train_loader = loaders.build_train_loader(cfg, train_split, facts, pipeline, *shard)
    if len(train_loader) == 0:
        raise ValueError(
            f"the training set has fewer images per process than one batch ({cfg.batch_size}); lower "
            "batch_size"
        )
    micro = len(train_loader)
    if cfg.max_steps_per_epoch > 0:
        micro = min(micro, cfg.max_steps_per_epoch * cfg.accum_steps)
    return _Data(
        train_split=train_split,
        test_split=test_split,
        num_classes=num_classes,
        classes=loaders.class_names(train_split, num_classes),
        pipeline=pipeline,
        train_loader=train_loader,
        test_loader=loaders.build_eval_loader(cfg, test_split, facts, pipeline, *shard),
        micro_per_epoch=micro,
        updates_per_epoch=math.ceil(micro / cfg.accum_steps),
    )


class _Run:
    """One call of :func:`train`: the parts, built in the order that keeps resumes exact, and the epochs."""

    def __init__(self, cfg: TrainConfig, run_dir: Path, resume: bool, info: DistInfo) -> None:
        started_at = time.perf_counter() - seconds_since_launch()  # workers: the clock began at the launch
        self.cfg, self.run_dir, self.info = cfg, run_dir, info
        if cfg.threads > 0:
            torch.set_num_threads(cfg.threads)
        _set_deterministic(cfg.deterministic)
        self.data = d = _read_data(cfg, info)
        upe = d.updates_per_epoch
        max_steps = cfg.epochs * upe
        self.state = build_state(cfg, info, d.num_classes, max_steps, round(cfg.warmup_epochs * upe))
        planned, elapsed_before, fresh_budget = max_steps, 0.0, not resume
        if resume:
            planned, elapsed_before = self.state.restore(run_dir / "last", info.rank, info.world_size)
            saved_minutes = read_run_config(run_dir).get("time_budget")  # config.yaml is rewritten later
            cfg.time_budget, fresh_budget = resumed_minutes(saved_minutes, cfg.time_budget, elapsed_before)
        self.budget = TimeBudget(
            cfg.time_budget,
            max_steps=max_steps,
            updates_per_epoch=upe,
            images_per_step=cfg.batch_size * cfg.accum_steps,
            eval_images=math.ceil(len(d.test_split) / info.world_size),
            eval_every=cfg.eval_every,
            eval_passes=eval_passes(cfg.tta, cfg.ema),
            elapsed_before=elapsed_before,
            fitted=not fresh_budget,  # a resumed run keeps its fit (refreshed at epoch ends), unless new
            started_at=started_at,
        )
        replanned = self.budget.resumed_total(planned, self.state.global_step)
        if replanned != planned:  # resumed with a new --epochs: the rest of the schedule stretches or shrinks
            self.state.replan(replanned)
        run_dir.mkdir(parents=True, exist_ok=True)
        # a resume rewrites config.yaml with its first checkpoint: a resume that fails leaves the record
        self.config_pending = info.is_main
        if not resume:
            self._save_config()
        self.log = RunLog(run_dir, info.is_main, self.state.epoch, progress=cfg.progress)
        self._announce(resume)
        self.model_meta = ckpt.model_metadata(to_dict(cfg), d.num_classes, d.classes)
        self.epochs = EpochRunner(self)

    def _announce(self, resume: bool) -> None:
        cfg, d, s, info = self.cfg, self.data, self.state, self.info
        n_params = sum(p.numel() for p in s.model.parameters())
        if cfg.amp != "none" and info.device.type != "cuda":
            self.log.print(
                f"note: amp={cfg.amp} applies to CUDA only; training in {cfg.dtype} on {info.device.type}"
            )
        T = getattr(s.model, "T", cfg.T)  # the model's own when the configuration leaves it unset
        self.log.print(
            f"spikemlp train: {cfg.model} ({n_params / 1e6:.3f}M parameters, T={T}) on {cfg.data} "
            f"[{d.pipeline} pipeline, {len(d.train_split)} train / {len(d.test_split)} test images], "
            f"{info.world_size} process(es) on {info.device}, global batch {self.global_batch}, "
            f"{d.updates_per_epoch} steps per epoch"
            + (f", time budget {cfg.time_budget:g} min" if cfg.time_budget else "")
            + (f", resuming at epoch {s.epoch + 1} step {s.global_step}" if resume else "")
        )
        if s.lif_params:
            self.log.print(
                f"  LIF tau/V_th group: {len(s.lif_params)} tensors, lr {cfg.lif_lr:g}, frozen for "
                f"{cfg.lif_freeze_epochs} epoch(s)"
            )

    @property
    def global_batch(self) -> int:
        return self.cfg.batch_size * self.cfg.accum_steps * self.info.world_size

    def evaluate(self, module: nn.Module) -> EvalResult:
        d, e, info = self.data, self.epochs, self.info
        broadcast_buffers(module, info)  # every rank evaluates with rank 0's statistics, the checkpoint's
        return evaluate(
            module,
            d.test_loader,
            d.num_classes,
            info.device,
            info,
            e.autocast,
            e.dtype,
            self.cfg.tta,
            progress=self.log.progress,
        )

    def _save_config(self) -> None:
        if self.config_pending:
            save_config(self.cfg, self.run_dir / "config.yaml")
            self.config_pending = False

    def save_last(self) -> None:
        t_save = time.perf_counter()
        self.state.save_last(self.run_dir / "last", self.model_meta, self.info, self.budget.elapsed())
        self._save_config()
        self.budget.saved(time.perf_counter() - t_save)  # the time budget keeps room for the last ones

    def run(self) -> TrainResult:
        s = self.state
        self.train_seconds, self.train_images = 0.0, 0
        self.last_eval: EvalResult | None = None
        self.last_ema_eval: EvalResult | None = None
        stop_reason = "epochs"
        while s.global_step < s.total_steps:
            stats = self.epochs.run()
            finished = s.global_step >= s.total_steps or stats.stopped
            self._end_epoch(stats, finished)
            if finished:
                if stats.stopped or self.budget.cut_short(s.global_step):
                    stop_reason = "time_budget"
                break
        if self.last_eval is None:  # the final evaluation (already done at the last epoch end)
            self.last_eval = self.evaluate(s.model)
        summary = self._summary(stop_reason)
        if self.info.is_main:
            (self.run_dir / "summary.json").write_text(json.dumps(summary, indent=1))
            self.log.print(
                f"done: top-1 {summary['top1']:.2f}% (best {s.best_top1:.2f}% at epoch {s.best_epoch}) "
                f"after {summary['epochs']:g} epochs in {summary['wall_seconds'] / 60:.1f} min; results "
                f"in {self.run_dir}"
            )
        self.log.close()
        barrier(self.info)
        return TrainResult(summary=summary, model=s.model, run_dir=self.run_dir)

    def _end_epoch(self, stats: EpochStats, finished: bool) -> None:
        """Evaluate, log, keep the best weights, refresh the time budget's fit, save ``last``."""
        cfg, s, info = self.cfg, self.state, self.info
        self.train_seconds += stats.seconds
        self.train_images += stats.images * info.world_size
        epoch_done = s.micro >= self.data.micro_per_epoch
        totals = all_reduce_sum(stats.sums.to(info.device), info).cpu()
        self.last_eval = self.last_ema_eval = None
        if (s.epoch + 1) % cfg.eval_every == 0 or finished:
            self.last_eval = self.evaluate(s.model)
            if s.ema is not None:
                self.last_ema_eval = self.evaluate(s.ema.module)
            self.budget.evaluated(
                self.last_eval.seconds + (self.last_ema_eval.seconds if self.last_ema_eval else 0.0)
            )
        improved = self._keep_best()
        self.log.epoch(
            EpochRecord(
                epoch=s.epoch + 1,
                epochs=math.ceil(s.total_steps / self.data.updates_per_epoch),
                step=s.global_step,
                lr=s.optimizer.param_groups[0]["lr"],
                train_loss=float(totals[0] / totals[2]),
                train_top1=float(100 * totals[1] / totals[2]),
                seconds=stats.seconds,
                images_per_second=stats.images * info.world_size / max(stats.seconds, 1e-9),
                wall_seconds=self.budget.elapsed(),
                best_top1=s.best_top1,
                tta=cfg.tta,
                test=self.last_eval,
                ema=self.last_ema_eval,
            )
        )
        if improved is not None and info.is_main:
            which, module = improved
            ckpt.save_checkpoint(
                self.run_dir / "best",
                ckpt.plain_state_dict(module),
                self.model_meta,
                meta={
                    "epoch": s.epoch + 1,
                    "global_step": s.global_step,
                    "top1": s.best_top1,
                    "weights": which,
                },
            )
        s.next_epoch(epoch_done)
        if not finished and epoch_done:
            # refresh the fit with this epoch's pace (includes evaluation and checkpoint overheads)
            fitted = self.budget.after_epoch(s.global_step, stats.seconds, stats.updates)
            if fitted is not None:
                s.replan(int(broadcast_float(float(fitted), info)))
        self.save_last()

    def _keep_best(self) -> tuple[str, nn.Module] | None:
        """The weights (model or EMA) that beat the best top-1 so far, recorded in the state; else None."""
        s, improved = self.state, None
        ema = s.ema.module if s.ema is not None else None
        for ev, which, module in ((self.last_eval, "model", s.model), (self.last_ema_eval, "ema", ema)):
            if ev is not None and ev.top1 > s.best_top1:
                s.best_top1, s.best_epoch, improved = ev.top1, s.epoch + 1, (which, module)
        return improved

    def _summary(self, stop_reason: str) -> dict[str, Any]:
        cfg, s, info, ev = self.cfg, self.state, self.info, self.last_eval
        peak_mb, peak_kind = _peak_memory_mb(info.device)
        # every process's peak together: what the run needs of the machine (rank 0's alone is peak_memory_mb)
        peak_all = all_reduce_sum(torch.tensor([peak_mb], dtype=torch.float64, device=info.device), info)
        return {
            "top1": ev.top1,
            "top5": ev.top5,
            "test_loss": ev.loss,
            "tta": cfg.tta,
            "top1_single_view": ev.top1_single_view,
            "ema_top1": self.last_ema_eval.top1 if self.last_ema_eval else None,
            "best_top1": s.best_top1,
            "best_epoch": s.best_epoch,
            "epochs": round(s.global_step / self.data.updates_per_epoch, 3),
            "steps": s.global_step,
            "wall_seconds": self.budget.elapsed(),
            "train_seconds": self.train_seconds,
            "images_per_second": self.train_images / max(self.train_seconds, 1e-9),
            "peak_memory_mb": peak_mb,
            "peak_memory_kind": peak_kind,
            "peak_memory_mb_all_processes": float(peak_all),
            "stopped_by": stop_reason,
            "model": cfg.model,
            "parameters": sum(p.numel() for p in s.model.parameters()),
            "T": getattr(s.model, "T", cfg.T),
            "data": cfg.data,
            "test_images": ev.count,
            "device": str(info.device),
            "world_size": info.world_size,
            "global_batch": self.global_batch,
        }


def _peak_memory_mb(device: torch.device) -> tuple[float, str]:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20, "cuda_max_allocated"
    # ru_maxrss is in KiB on Linux (bytes on macOS)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return (rss / 2**20 if sys.platform == "darwin" else rss / 2**10), "process_max_rss"


def _set_deterministic(on: bool) -> None:
    if on:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.benchmark = False
    else:
        torch.backends.cudnn.benchmark = True


def read_run_config(run_dir: str | Path) -> dict[str, Any]:
    """The resolved configuration saved in a run folder (for ``--resume``)."""
    path = Path(run_dir) / "config.yaml"
    if not path.is_file():
        raise FileNotFoundError(f"{run_dir} is not a run folder: {path.name} is missing (nothing to resume)")
    return load_yaml(path)


__all__ = ["train", "TrainResult", "NonFiniteLossError", "build_model", "model_from_checkpoint"]
