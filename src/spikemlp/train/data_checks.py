"""Labels checked against the classifier's classes when the data is loaded: an out-of-range label is an
IndexError mid-run on a CPU and a device-side assert on a GPU (the pixels are checked in ``non_finite``)."""

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
