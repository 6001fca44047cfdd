"""Evaluation: top-1, top-5, loss and per-class accuracy of a model on a data set, summed exactly over
ranks."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from ..data.limit import batch_count, first_images
from ..progress import wrap
from .config import TTA_MODES
from .distributed import DistInfo, all_reduce_sum


@dataclass
class EvalResult:
    top1: float  # percent
    top5: float  # percent
    loss: float
    count: int
    per_class_correct: list[int] = field(default_factory=list)
    per_class_total: list[int] = field(default_factory=list)
    seconds: float = 0.0
    # with test-time augmentation: top-1 of the plain images alone (the same pass computes it)
    top1_single_view: float | None = None

    def per_class_accuracy(self) -> list[float]:
        return [
            100.0 * c / t if t else float("nan") for c, t in zip(self.per_class_correct, self.per_class_total)
        ]

    def to_dict(self) -> dict:
        return {
            "top1": self.top1,
            "top5": self.top5,
            "loss": self.loss,
            "count": self.count,
            "per_class_accuracy": self.per_class_accuracy(),
            "per_class_total": self.per_class_total,
            "seconds": self.seconds,
            "top1_single_view": self.top1_single_view,
        }


@torch.no_grad()
def evaluate(
    model: torch.nn.Module,
    loader,
    num_classes: int,
    device: torch.device,
    dist_info: DistInfo | None = None,
    autocast: contextlib.AbstractContextManager | None = None,
    dtype: torch.dtype = torch.float32,
    tta: str = "none",
    progress: bool = False,
    limit: int | None = None,
) -> EvalResult:
    """Accuracy of ``model`` over ``loader`` (this rank's slice), counts summed over all ranks. With
    ``tta="hflip"`` an image's logits are the mean of its own and its mirror image's; ``top1_single_view``
    is then the top-1 of the plain images alone. ``progress``: show the batches done (spikemlp.progress);
    ``limit``: the first this many images only."""
    import time

    start = time.perf_counter()
    was_training = model.training
    model.eval()
    k5 = min(5, num_classes)
    if tta not in TTA_MODES:
        raise ValueError(f"tta must be one of {', '.join(TTA_MODES)}, got {tta!r}")
    # [correct top1 per class (K), total per class (K), correct top1 of the plain view, correct top5,
    # loss sum] in one tensor for one reduce
    stats = torch.zeros(2 * num_classes + 3, dtype=torch.float64, device=device)
    for images, labels in wrap(first_images(loader, limit), "eval", progress, batch_count(loader, limit)):
        images = images.to(device, dtype=dtype, non_blocking=True)
        labels = labels.to(device, non_blocking=True)
        with autocast or contextlib.nullcontext():
            logits = model(images).float()
            stats[-3] += (logits.argmax(dim=1) == labels).sum().double()
            if tta == "hflip":
                logits = 0.5 * (logits + model(images.flip(-1)).float())
        stats[-1] += F.cross_entropy(logits, labels, reduction="sum").double()
        top = logits.topk(k5, dim=1).indices
        hit1 = top[:, 0] == labels
        stats[:num_classes] += torch.bincount(labels[hit1], minlength=num_classes).double()
        stats[num_classes : 2 * num_classes] += torch.bincount(labels, minlength=num_classes).double()
        stats[-2] += (top == labels[:, None]).any(dim=1).sum().double()
    if dist_info is not None:
        all_reduce_sum(stats, dist_info)
    model.train(was_training)
    stats = stats.cpu()
    correct = stats[:num_classes].long().tolist()
    total = stats[num_classes : 2 * num_classes].long().tolist()
    n = sum(total)
    return EvalResult(
        top1=100.0 * sum(correct) / max(n, 1),
        top5=100.0 * float(stats[-2]) / max(n, 1),
        loss=float(stats[-1]) / max(n, 1),
        count=n,
        per_class_correct=correct,
        per_class_total=total,
        seconds=time.perf_counter() - start,
        top1_single_view=100.0 * float(stats[-3]) / max(n, 1) if tta != "none" else None,
    )
