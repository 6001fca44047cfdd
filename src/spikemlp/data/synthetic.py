"""``synthetic``: a small learnable data set made on the fly, for tests and smoke runs of the training loop.

Each class is a fixed random smooth pattern, each image that pattern plus noise. The same for every call
(fixed seeds), so runs and processes agree without any file.
"""

from __future__ import annotations

import torch

from .in_memory import InMemorySplit
from .info import DatasetInfo

SYNTHETIC = "synthetic"
SYNTHETIC_INFO = DatasetInfo(
    name=SYNTHETIC,
    num_classes=10,
    image_size=32,
    channels=3,
    mean=(0.5, 0.5, 0.5),
    std=(0.25, 0.25, 0.25),
    folders=(),
    layout="made on the fly (no files)",
)


def synthetic_split(split: str, size: int, num_classes: int = 10, image_size: int = 32, channels: int = 3):
    """``size`` training images (a quarter as many test images, at least one per class) of the synthetic
    set, as an ``InMemorySplit``."""
    g = torch.Generator().manual_seed(1234)
    coarse = torch.rand(num_classes, channels, 2, 2, generator=g)
    protos = torch.nn.functional.interpolate(coarse, size=(image_size, image_size), mode="bilinear")
    n = size if split == "train" else max(num_classes, size // 4)
    g.manual_seed(1235 if split == "train" else 1236)
    labels = torch.arange(n) % num_classes
    labels = labels[torch.randperm(n, generator=g)]
    images = torch.empty(n, channels, image_size, image_size, dtype=torch.uint8)
    for lo in range(0, n, 1024):  # in chunks: at 224 x 224 a float copy of the whole set would be large
        hi = min(n, lo + 1024)
        noise = torch.randn(hi - lo, channels, image_size, image_size, generator=g) * 0.25
        images[lo:hi] = (
            ((protos[labels[lo:hi]] * 0.8 + 0.1 + noise).clamp(0, 1) * 255).round().to(torch.uint8)
        )
    return InMemorySplit(
        images=images,
        labels=labels.to(torch.int64),
        classes=[f"class_{i}" for i in range(num_classes)],
        name=SYNTHETIC,
        split=split,
    )
