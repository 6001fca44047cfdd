"""One training epoch: forward and backward passes over the training batches, optimizer steps with
gradient accumulation, mixing, clipping and the LIF freeze, EMA updates, mid-epoch checkpoints and the
time budget's checks after every step.

The loop waits for the device once per step, for the check that stops a run on a non-finite loss or
non-finite pixels before that step changes the weights (every rank agrees on it). The loss and accuracy
sums stay on the device and the host reads them at the read points only (every ``log_every`` optimizer
steps, before a mid-epoch checkpoint and at the end of the epoch).
"""

from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from .. import checkpoint as ckpt
from .config import TrainConfig
from .distributed import all_reduce_sum, broadcast_float
from .non_finite import NonFiniteInputError, SkippedSteps, batch_is_bad, gradients_finite
from .run_state import restore_rng


class NonFiniteLossError(ValueError):
    """The loss became NaN or infinite; the message names the step and the checkpoint that was kept."""


def criterion(cfg: TrainConfig, mixing: bool) -> nn.Module:
    from timm.loss import LabelSmoothingCrossEntropy, SoftTargetCrossEntropy

    if mixing:
        return SoftTargetCrossEntropy()  # mixup/CutMix give soft targets (smoothing already inside)
    if cfg.smoothing > 0:
        return LabelSmoothingCrossEntropy(smoothing=cfg.smoothing)
    return nn.CrossEntropyLoss()


def mixup(cfg: TrainConfig, num_classes: int):
    """timm's Mixup/CutMix for the recipe, or None when it mixes nothing."""
    if cfg.mixup <= 0 and cfg.cutmix <= 0:
        return None
    from timm.data import Mixup

    return Mixup(
        mixup_alpha=cfg.mixup,
        cutmix_alpha=cfg.cutmix,
        prob=cfg.mixup_prob,
        switch_prob=cfg.mixup_switch_prob,
        mode=cfg.mixup_mode,
        label_smoothing=cfg.smoothing,
        num_classes=num_classes,
    )


@dataclass
class EpochStats:
    """What one pass over (part of) the training set did: ``sums`` are this rank's (loss x images,
    correct, images), the resumed part included; ``images`` and ``updates`` count this pass only."""

    sums: torch.Tensor
    images: int
    updates: int
    seconds: float
    stopped: bool  # by the time budget's deadline


class EpochRunner:
    """Runs epochs of ``run.state`` over ``run.data.train_loader`` for ``run``, the training run
    (:class:`.trainer._Run`): it reads the run's parts and calls its ``save_last()`` (a collective)."""

    def __init__(self, run) -> None:
        cfg, info, data = run.cfg, run.info, run.data
        self.cfg, self.info, self.state, self.loader = cfg, info, run.state, data.train_loader
        self.micro_per_epoch, self.updates_per_epoch = data.micro_per_epoch, data.updates_per_epoch
        self.budget, self.log, self.save_last, self.run_dir = run.budget, run.log, run.save_last, run.run_dir
        self.dtype = torch.float64 if cfg.dtype == "float64" else torch.float32
        self.mixup_fn = mixup(cfg, data.num_classes)
        self.criterion = criterion(cfg, self.mixup_fn is not None)
        amp = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(cfg.amp)
        on_cuda = amp is not None and info.device.type == "cuda"  # amp applies to CUDA only
        self.autocast = torch.autocast("cuda", dtype=amp) if on_cuda else contextlib.nullcontext()
        self.skipped = SkippedSteps()

    def run(self) -> EpochStats:
        """Train from the state's position (``epoch``, ``micro``) to the end of the epoch, the end of
        the plan, or the budget's deadline, whichever comes first."""
        cfg, state = self.cfg, self.state
        state.train_model.train()
        self.loader.set_epoch(state.epoch)
        self.loader.skip(state.micro)  # non-zero: resumed mid-epoch
        if state.rng is not None:
            restore_rng(state.rng)
            state.rng = None
        p = state.partial
        device = self.info.device
        sums = torch.tensor([p["loss"], p["correct"], p["seen"]], dtype=torch.float64, device=device)
        use_mixup = self.mixup_fn is not None and (
            cfg.mixup_off_epoch == 0 or state.epoch < cfg.mixup_off_epoch
        )
        step_loss = self.criterion if use_mixup or self.mixup_fn is None else criterion(cfg, False)
        epochs = math.ceil(state.total_steps / self.updates_per_epoch)
        bar = self.log.progress_bar(self.micro_per_epoch, state.micro, f"epoch {state.epoch + 1}/{epochs}")
        stats = EpochStats(sums, 0, 0, 0.0, False)
        t_epoch = time.perf_counter()
        state.optimizer.zero_grad(set_to_none=True)
        try:
            for images, labels in self.loader:
                loss = self._forward_backward(images, labels, use_mixup, step_loss, stats)
                state.micro += 1
                if not self._update_due():
                    continue
                self._optimizer_step()
                stats.updates += 1
                self._after_step(loss, stats, bar, t_epoch)
                if state.global_step >= state.total_steps or self._epoch_over() or stats.stopped:
                    break
            self._read(stats, bar, t_epoch)
        finally:
            if bar is not None:
                bar.close()
        stats.seconds = time.perf_counter() - t_epoch
        return stats

    def _epoch_over(self) -> bool:
        return self.state.micro >= self.micro_per_epoch

    def _update_due(self) -> bool:
        """Whether the forward pass just done (``state.micro``) ends an accumulation group."""
        return self.state.micro % self.cfg.accum_steps == 0 or self._epoch_over()

    def _forward_backward(self, images, labels, use_mixup: bool, step_loss, stats: EpochStats):
        state, info, device = self.state, self.info, self.info.device
        images = images.to(device, dtype=self.dtype, non_blocking=True)
        bad_pixels = batch_is_bad(images)
        labels = labels.to(device, non_blocking=True)
        hard = labels
        if use_mixup:
            images, labels = self.mixup_fn(images, labels)
        last_micro = (state.micro + 1) % self.cfg.accum_steps == 0 or state.micro + 1 == self.micro_per_epoch
        sync = contextlib.nullcontext()
        if info.enabled and not last_micro:
            sync = state.train_model.no_sync()  # DDP: reduce the gradients once per optimizer step
        with sync:
            with self.autocast:
                logits = state.train_model(images)
                loss = step_loss(logits.float(), labels)
            bad = torch.stack([(~torch.isfinite(loss.detach())).float(), bad_pixels])
            bad_loss, bad_batch = all_reduce_sum(bad, info).tolist()  # every rank stops together
            if bad_batch > 0:
                raise self._non_finite(None)
            if bad_loss > 0:
                raise self._non_finite(loss)
            state.scaler.scale(loss / self.cfg.accum_steps).backward()
        with torch.no_grad():  # on the device: read at the read points
            correct = (logits.detach().argmax(1) == hard).sum().double()
            stats.sums[:2] += torch.stack([loss.detach().double() * len(hard), correct])
            stats.sums[2] += len(hard)
        stats.images += len(hard)
        return loss

    def _read(self, stats: EpochStats, bar, t_epoch: float) -> list[float]:
        """A read point: the host reads this rank's sums (loss x images, correct, images) and updates the
        progress bar."""
        sums = stats.sums.tolist()
        if bar is not None:
            dt = time.perf_counter() - t_epoch
            bar.set_postfix(
                loss=f"{sums[0] / sums[2]:.3f}",
                acc=f"{100 * sums[1] / sums[2]:.1f}%",
                img_s=f"{stats.images * self.info.world_size / max(dt, 1e-9):.0f}",
                refresh=False,
            )
        return sums

    def _non_finite(self, loss: torch.Tensor | None) -> ValueError:
        """The error for a non-finite loss, or (``loss`` None) for NaN or infinite pixels in the batch."""
        state = self.state
        where = f"at step {state.global_step + 1} (epoch {state.epoch + 1}, batch {state.micro + 1})"
        stopped = (
            f"training stopped before that step changed the weights and {_kept_checkpoint(self.run_dir)}"
        )
        if loss is None:
            return NonFiniteInputError(
                f"training batch {state.micro + 1} of epoch {state.epoch + 1} holds NaN or infinite pixels "
                f"(step {state.global_step + 1}); {stopped}. The data set has non-finite values: check or "
                "rebuild it (spikemlp data check)."
            )
        return NonFiniteLossError(
            f"loss became {loss.item()} {where}; {stopped}. Lower lr, add warm-up (warmup_epochs) or clip "
            "gradients (clip_grad), then --resume or start again."
        )

    def _optimizer_step(self) -> None:
        state, cfg = self.state, self.cfg
        if state.epoch < cfg.lif_freeze_epochs:
            for p in state.lif_params:
                p.grad = None  # frozen: the optimizer skips parameters without gradients
        if cfg.clip_grad is not None:
            state.scaler.unscale_(state.optimizer)
            torch.nn.utils.clip_grad_norm_(state.model.parameters(), cfg.clip_grad)
        # fp16's scaler skips non-finite steps itself (and adjusts its scale); otherwise skip them here
        finite = state.scaler.is_enabled() or gradients_finite(state.model.parameters())
        if finite:
            state.scaler.step(state.optimizer)
        state.scaler.update()
        state.optimizer.zero_grad(set_to_none=True)
        state.global_step += 1
        state.scheduler.step_update(num_updates=state.clock(state.global_step))
        if state.ema is not None and finite:
            state.ema.update(state.model, step=state.global_step)
        kept = lambda: _kept_checkpoint(self.run_dir)  # noqa: E731
        note = self.skipped.record(finite, state.global_step, state.epoch + 1, kept)
        if note:
            self.log.print(note)

    def _after_step(self, loss: torch.Tensor, stats: EpochStats, bar, t_epoch: float) -> None:
        """Progress, TensorBoard, the mid-epoch checkpoint and the time budget, after an optimizer step."""
        state, cfg = self.state, self.cfg
        if bar is not None:
            bar.update(state.micro - bar.n)
        if state.global_step % cfg.log_every == 0:
            self._read(stats, bar, t_epoch)
            lr = state.optimizer.param_groups[0]["lr"]
            self.log.scalars(state.global_step, **{"train/loss": float(loss.detach()), "train/lr": lr})
        every = cfg.checkpoint_every_steps
        if every and state.global_step % every == 0 and not self._epoch_over():
            sums = self._read(stats, bar, t_epoch)  # (also the non-finite check before the checkpoint)
            state.partial = {"loss": sums[0], "correct": sums[1], "seen": sums[2]}
            self.save_last()
        fitted = self.budget.after_step(state.global_step, self._epoch_over())
        if fitted is not None:
            state.replan(int(broadcast_float(float(fitted), self.info)))
            self.log.print(
                f"time budget: {self.budget.sec_per_step * 1000:.1f} ms per step measured; training for "
                f"{state.total_steps} steps ({state.total_steps / self.updates_per_epoch:.2f} epochs)"
            )
            if bar is not None:  # the bar was opened with the recipe's epochs, not the fitted ones
                epochs = math.ceil(state.total_steps / self.updates_per_epoch)
                bar.set_description(f"epoch {state.epoch + 1}/{epochs}")
        if self.budget.enabled:
            # rank 0's clock decides, so that every rank stops at the same step
            stats.stopped = broadcast_float(1.0 if self.budget.out_of_time() else 0.0, self.info) > 0


def _kept_checkpoint(run_dir: Path) -> str:
    try:
        folder = ckpt.resolve(run_dir / "last")
    except ckpt.CheckpointError:
        return "no checkpoint was written yet (nothing to resume: start it again without --resume)"
    return f"kept {folder} (step {ckpt.load_meta(folder).get('global_step', '?')})"
