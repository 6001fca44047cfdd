"""One training epoch: forward and backward passes over the training batches, optimizer steps with
gradient accumulation, mixing, clipping and the LIF freeze, EMA updates, mid-epoch checkpoints and the
time budget's checks after every step.

The loop does not wait for the device between steps: the loss and accuracy sums stay on the device, and
the host reads them at the read points only (every ``log_every`` optimizer steps, before a mid-epoch
checkpoint and at the end of the epoch). A non-finite loss is remembered on the device (its step, batch
and value) and noticed at the next read point, where every rank agrees on it and the run stops: the
steps since the last read point may have changed the weights, but no checkpoint is written after a
non-finite loss, so ``last`` stays the last good checkpoint.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from .. import checkpoint as ckpt
from .config import TrainConfig
from .distributed import DistInfo, all_reduce_sum, broadcast_float
from .run_log import RunLog
from .run_state import RunState
from .state import restore_rng
from .time_budget import TimeBudget


class NonFiniteLossError(ValueError):
    """The loss became NaN or infinite; the message names the step and the checkpoint that was kept."""


def criterion(cfg: TrainConfig, mixing: bool) -> nn.Module:
    from timm.loss import LabelSmoothingCrossEntropy, SoftTargetCrossEntropy

    if mixing:
        return SoftTargetCrossEntropy()  # mixup/CutMix give soft targets (smoothing already inside)
    if cfg.smoothing > 0:
        return LabelSmoothingCrossEntropy(smoothing=cfg.smoothing)
    return nn.CrossEntropyLoss()


def autocast(cfg: TrainConfig, device: torch.device):
    if cfg.amp == "none" or device.type != "cuda":
        return contextlib.nullcontext()
    return torch.autocast("cuda", dtype=torch.bfloat16 if cfg.amp == "bf16" else torch.float16)


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
    """Runs epochs of ``state`` over ``data.train_loader`` (``data.micro_per_epoch`` forward passes each).

    ``save_last`` writes the resume checkpoint (a collective); ``run_dir`` names the kept checkpoint when
    the loss goes non-finite.
    """

    def __init__(
        self, cfg: TrainConfig, info: DistInfo, state: RunState, data, budget: TimeBudget, log: RunLog,
        save_last: Callable[[], None], run_dir: Path,
    ) -> None:  # fmt: skip
        self.cfg, self.info, self.state, self.loader = cfg, info, state, data.train_loader
        self.micro_per_epoch = data.micro_per_epoch
        self.budget, self.log, self.save_last, self.run_dir = budget, log, save_last, run_dir
        self.dtype = torch.float64 if cfg.dtype == "float64" else torch.float32
        self.mixup_fn = mixup(cfg, data.num_classes)
        self.criterion = criterion(cfg, self.mixup_fn is not None)
        self.autocast = autocast(cfg, info.device)
        self.updates_per_epoch = math.ceil(data.micro_per_epoch / cfg.accum_steps)

    def run(self) -> EpochStats:
        """Train from the state's position (``epoch``, ``micro``) to the end of the epoch, the end of
        the plan, or the budget's deadline, whichever comes first."""
        cfg, state = self.cfg, self.state
        state.train_model.train()
        self.loader.set_epoch(state.epoch)
        if state.micro:
            self.loader.skip(state.micro)
        if state.rng is not None:
            restore_rng(state.rng)
            state.rng = None
        p = state.partial
        device = self.info.device
        sums = torch.tensor([p["loss"], p["correct"], p["seen"]], dtype=torch.float64, device=device)
        self._bad = torch.tensor([-1.0, 0.0], dtype=torch.float64, device=device)  # see _watch
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
            self._watch(loss)
            state.scaler.scale(loss / self.cfg.accum_steps).backward()
        with torch.no_grad():  # on the device: read at the read points
            correct = (logits.detach().argmax(1) == hard).sum().double()
            stats.sums[:2] += torch.stack([loss.detach().double() * len(hard), correct])
            stats.sums[2] += len(hard)
        stats.images += len(hard)
        return loss

    def _watch(self, loss: torch.Tensor) -> None:
        """Keep the first non-finite loss of the epoch on the device: [step * 2^24 + batch index, loss]
        (exact in float64), [-1, 0] while every loss is finite. No host synchronisation."""
        loss = loss.detach().double().reshape(1)
        first = ~torch.isfinite(loss) & (self._bad[:1] < 0)
        code = float((self.state.global_step + 1) * 2**24 + self.state.micro)
        self._bad = torch.where(first, torch.cat([loss.new_full((1,), code), loss]), self._bad)

    def _read(self, stats: EpochStats, bar, t_epoch: float) -> list[float]:
        """A read point: the host waits for the device once, stops the run if a loss on any rank was
        non-finite, and updates the progress bar; this rank's sums (loss x images, correct, images)."""
        bad = all_reduce_sum((self._bad[:1] >= 0).double(), self.info)
        *sums, any_bad, code, value = torch.cat([stats.sums, bad, self._bad]).tolist()
        if any_bad > 0:
            raise self._non_finite(code, value)
        if bar is not None:
            dt = time.perf_counter() - t_epoch
            bar.set_postfix(
                loss=f"{sums[0] / sums[2]:.3f}",
                acc=f"{100 * sums[1] / sums[2]:.1f}%",
                img_s=f"{stats.images * self.info.world_size / max(dt, 1e-9):.0f}",
                refresh=False,
            )
        return sums

    def _non_finite(self, code: float, value: float) -> NonFiniteLossError:
        state = self.state
        step, batch = divmod(int(code), 2**24)
        where = f"{value} at step {step} (epoch {state.epoch + 1}, batch {batch + 1})"
        if code < 0:
            where = f"non-finite on another process by step {state.global_step}"
        return NonFiniteLossError(
            f"loss became {where}; training stopped at step {state.global_step}, before any checkpoint "
            f"held weights after it, and {_kept_checkpoint(self.run_dir)}. Lower lr, add warm-up "
            "(warmup_epochs) or clip gradients (clip_grad), then --resume or start again."
        )

    def _optimizer_step(self) -> None:
        state, cfg = self.state, self.cfg
        if state.epoch < cfg.lif_freeze_epochs:
            for p in state.lif_params:
                p.grad = None  # frozen: the optimizer skips parameters without gradients
        if cfg.clip_grad is not None:
            state.scaler.unscale_(state.optimizer)
            torch.nn.utils.clip_grad_norm_(state.model.parameters(), cfg.clip_grad)
        state.scaler.step(state.optimizer)
        state.scaler.update()
        state.optimizer.zero_grad(set_to_none=True)
        state.global_step += 1
        state.scheduler.step_update(num_updates=state.clock(state.global_step))
        if state.ema is not None:
            state.ema.update(state.model, step=state.global_step)

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
        return "no checkpoint was written yet"
    return f"kept {folder} (step {ckpt.load_meta(folder).get('global_step', '?')})"
