"""Checks of what a run reads, made where they cost nothing: labels against the classifier's classes at
load (an out-of-range label is an IndexError mid-run on a CPU and a device-side assert on a GPU), and
each training batch's pixels folded into the per-step check of the loss (no extra synchronisation)."""

from __future__ import annotations

import torch

from ..errors import UserError


def _labels(split) -> torch.Tensor | None:
    for holder in (split, getattr(split, "dataset", None)):
        for name in ("labels", "targets"):
            labels = getattr(holder, name, None)
            if labels is not None:
                return torch.as_tensor(labels)
    return None


def check_labels_fit(split, num_classes: int, where: str) -> None:
    """UserError when a label of ``split`` (``where``: the data set and split) is not in [0, num_classes)."""
    labels = _labels(split)
    if labels is None or labels.numel() == 0:
        return
    lo, hi = int(labels.min()), int(labels.max())
    if lo < 0 or hi >= num_classes:
        raise UserError(
            f"{where} has labels {lo}..{hi} but the model classifies {num_classes} classes "
            f"(num_classes {num_classes}); set num_classes to 0 (the data set's own count) or to at least "
            f"{hi + 1}"
        )


def batch_problems(images: torch.Tensor) -> torch.Tensor:
    """1.0 when the batch holds a NaN or infinite pixel, as a tensor on the batch's device (not synced)."""
    return (~torch.isfinite(images).all()).to(torch.float32).reshape(1)
