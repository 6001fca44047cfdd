"""A whole data split held as two tensors, the form the small data sets (CIFAR, MNIST) are read into."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .errors import DataError


@dataclass
class InMemorySplit:
    """Images uint8 ``[N, C, H, W]``, labels int64 ``[N]`` in ``[0, len(classes))`` and the class names;
    CIFAR-100 also carries its 20 superclasses in ``coarse_labels`` / ``coarse_classes``."""

    images: torch.Tensor
    labels: torch.Tensor
    classes: list[str]
    name: str = ""  # the data set's key in DATASET_INFO (its normalisation is the default)
    split: str = ""
    source: str = ""  # the folder read
    coarse_labels: torch.Tensor | None = None
    coarse_classes: list[str] | None = None

    def __post_init__(self) -> None:
        if self.images.dtype != torch.uint8 or self.images.dim() != 4:
            raise DataError(
                f"images must be uint8 [N, C, H, W], got {self.images.dtype} {list(self.images.shape)}"
            )
        if self.labels.dtype != torch.int64 or self.labels.shape != (self.images.shape[0],):
            raise DataError(
                f"labels must be int64 [{self.images.shape[0]}] (one per image), "
                f"got {self.labels.dtype} {list(self.labels.shape)}"
            )

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        """Image ``i`` (uint8 ``[C, H, W]``) and its label, as a torch ``Dataset`` gives them."""
        return self.images[i], int(self.labels[i])

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def class_counts(self) -> list[int]:
        """Number of images of each class, in the order of ``classes``."""
        return torch.bincount(self.labels, minlength=self.num_classes).tolist()


def check_labels(labels: torch.Tensor, num_classes: int, path: object, what: str = "labels") -> None:
    """Raise ``DataError`` naming ``path`` when a label lies outside ``[0, num_classes)``."""
    if labels.numel() == 0:
        return
    lo, hi = int(labels.min()), int(labels.max())
    if lo < 0 or hi >= num_classes:
        bad = int(((labels < 0) | (labels >= num_classes)).sum())
        raise DataError(
            f"{path}: {bad} {what} out of range (found values {lo}..{hi}, expected 0..{num_classes - 1} for "
            f"{num_classes} classes). The file is corrupt or belongs to another data set; replace it with "
            f"the original."
        )
