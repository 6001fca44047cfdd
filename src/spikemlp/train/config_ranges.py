"""The range of every numeric configuration key, and the device names a run accepts.

``config.validate`` checks types first; these are the values that have the right type but cannot work
(``smoothing 1.5`` used to reach a bare assertion inside timm, ``eval_batch_size -1`` a confusing error
about another key). A NaN fails every interval, so it is refused too.
"""

from __future__ import annotations

import math
import re

# key: interval ("[" and "]" include the bound, "(" and ")" exclude it; inf for no upper bound). None
# values (optional keys) are not checked.
RANGES = {
    **dict.fromkeys(["batch_size", "processes", "epochs", "accum_steps", "eval_every"], "[1, inf)"),
    **dict.fromkeys(["log_every", "repeated_aug", "synthetic_size", "img_size", "T", "recount"], "[1, inf)"),
    **dict.fromkeys(
        ["num_classes", "eval_batch_size", "workers", "crop_padding", "mixup_off_epoch"], "[0, inf)"
    ),
    **dict.fromkeys(["lr_base_batch", "lif_freeze_epochs", "seed", "threads"], "[0, inf)"),
    **dict.fromkeys(["checkpoint_every_steps", "max_steps_per_epoch"], "[0, inf)"),
    **dict.fromkeys(["hflip", "reprob", "mixup_prob", "mixup_switch_prob", "ema_decay"], "[0, 1]"),
    **dict.fromkeys(["drop_path", "smoothing", "momentum"], "[0, 1)"),
    **dict.fromkeys(["color_jitter", "mixup", "cutmix", "weight_decay", "warmup_epochs"], "[0, inf)"),
    **dict.fromkeys(["warmup_lr", "min_lr", "lif_lr", "lif_weight_decay"], "[0, inf)"),
    **dict.fromkeys(["lr", "clip_grad", "time_budget"], "(0, inf)"),
    "crop_pct": "(0, 1]",
}
# auto, cpu, cuda, cuda:N (what ``distributed.pick_device`` can give a run)
DEVICE = re.compile(r"auto|cpu|cuda(:\d+)?")


def _inside(value: float, interval: str) -> bool:
    lo, hi = (float(v) for v in interval[1:-1].split(","))
    above = value >= lo if interval[0] == "[" else value > lo
    below = value <= hi if interval[-1] == "]" else value < hi
    return above and below and not math.isnan(value)


def _describe(interval: str) -> str:
    if interval.endswith(", inf)"):
        return f"at least {interval[1:-6]}" if interval[0] == "[" else f"greater than {interval[1:-6]}"
    return f"in {interval}"


def range_errors(values: dict) -> list[str]:
    """One message per key of ``values`` (a config as a dict) outside its range."""
    errors = [
        f"config key '{key}' must be {_describe(interval)}, got {values[key]}"
        for key, interval in RANGES.items()
        if values.get(key) is not None and not _inside(values[key], interval)
    ]
    errors += [
        f"config key '{key}' must be a pair [low, high] of positive numbers, got {values[key]}"
        for key in ("scale", "ratio")
        if len(values[key]) != 2 or not all(isinstance(v, (int, float)) and v > 0 for v in values[key])
    ]
    if not DEVICE.fullmatch(values["device"]):
        errors.append(f"config key 'device' must be auto, cpu, cuda or cuda:N, got {values['device']!r}")
    return errors
