"""The optimizer and learning-rate schedule of a training run: a timm optimizer (``create_optimizer_v2``)
over the groups of :mod:`spikemlp.models._param_groups`, and timm's cosine schedule with linear warm-up,
stepped per optimizer update so that short runs and time budgets get a smooth curve.
"""

from __future__ import annotations

import difflib

import torch
from torch import nn

from ..models._param_groups import param_groups as _lif_param_groups


def param_groups(model: nn.Module, cfg, lr: float) -> list[dict]:
    """Parameter groups for ``model`` under ``cfg`` (see :func:`spikemlp.models.snn_mlp.param_groups`)."""
    return _lif_param_groups(
        model, lr, cfg.weight_decay, cfg.lif_lr, cfg.lif_weight_decay, cfg.wd_exclude_bias_norm
    )


def scaled_lr(cfg, global_batch: int) -> tuple[float, float, float]:
    """(lr, warmup_lr, min_lr), scaled linearly with the global batch when ``lr_base_batch`` is set."""
    scale = global_batch / cfg.lr_base_batch if cfg.lr_base_batch > 0 else 1.0
    return cfg.lr * scale, cfg.warmup_lr * scale, cfg.min_lr * scale


def build_optimizer(model: nn.Module, cfg, global_batch: int) -> torch.optim.Optimizer:
    from timm.optim import create_optimizer_v2, list_optimizers

    lr, _, _ = scaled_lr(cfg, global_batch)
    groups = param_groups(model, cfg, lr)
    # "sgd" is plain SGD with momentum (torch.optim.SGD), as papers mean it; timm's "sgd" is Nesterov's
    # variant, available here as "nesterov".
    name = "momentum" if cfg.opt.lower() == "sgd" else cfg.opt.lower()
    if name not in list_optimizers():
        close = difflib.get_close_matches(name, list_optimizers(), n=3)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise ValueError(f"unknown optimizer '{cfg.opt}'.{hint} Common choices: sgd, nesterov, adamw, lamb")
    kwargs = {"momentum": cfg.momentum} if name in ("momentum", "nesterov") else {}
    if cfg.opt_fused and name in _FUSED:
        kwargs["fused"] = True
    return create_optimizer_v2(groups, opt=name, lr=lr, weight_decay=cfg.weight_decay, **kwargs)


# timm names whose torch.optim class has a fused kernel on CPU and CUDA (Adam, AdamW, SGD with momentum).
_FUSED = ("adam", "adamw", "momentum")


def build_scheduler(optimizer, cfg, global_batch: int, total_steps: int, warmup_steps: int):
    """Cosine from the base lr to ``min_lr`` over ``total_steps`` updates, after a linear warm-up."""
    from timm.scheduler import CosineLRScheduler

    _, warmup_lr, min_lr = scaled_lr(cfg, global_batch)
    warmup_steps = min(warmup_steps, max(0, total_steps - 1))
    return CosineLRScheduler(
        optimizer,
        t_initial=max(1, total_steps - warmup_steps),
        lr_min=min_lr,
        warmup_t=warmup_steps,
        warmup_lr_init=warmup_lr,
        warmup_prefix=True,
        t_in_epochs=False,
    )


class ScheduleClock:
    """Maps optimizer steps to the time axis of the scheduler (built for ``total_steps``), so that the time
    budget can move the end of the schedule without a jump in the learning rate: ``refit`` (after warm-up)
    keeps the clock's value now and makes it run faster or slower, to reach the end at ``new_total``."""

    def __init__(self, warmup_steps: int, total_steps: int) -> None:
        self.warmup = int(warmup_steps)
        self.end = float(total_steps)  # the scheduler's own end, fixed
        self.total_steps = int(total_steps)
        self.anchor_step = float(self.warmup)
        self.anchor_value = float(self.warmup)
        self.slope = 1.0

    def __call__(self, step: int) -> float:
        if step <= self.warmup:
            return float(step)
        return min(self.end, self.anchor_value + (step - self.anchor_step) * self.slope)

    def refit(self, step: int, new_total: int) -> None:
        anchor = float(max(step, self.warmup))
        value = self(int(anchor)) if anchor == int(anchor) else self.anchor_value
        self.anchor_step, self.anchor_value = anchor, value
        self.slope = (self.end - value) / (new_total - anchor) if new_total > anchor else float("inf")
        self.total_steps = int(new_total)

    def state_dict(self) -> dict[str, float]:
        return dict(vars(self))

    def load_state_dict(self, state: dict[str, float]) -> None:
        for key, value in vars(self).items():  # each value keeps its type (int or float)
            setattr(self, key, type(value)(state[key]))
