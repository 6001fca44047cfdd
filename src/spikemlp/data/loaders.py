"""The batch sources of training and evaluation, for every data set and pipeline.

- ``tensor``: in-memory data sets (CIFAR, MNIST) at their native size, augmented a whole batch at a time
  by ``TensorBatchLoader`` on the training device (then timm's batch-wise random erasing, if asked for).
- ``timm``: ImageNet-style data, and in-memory data resized (the authors' CIFAR-10 protocol at 224),
  image by image through timm's ``create_transform`` in a DataLoader with workers.

Both shard the training data over DDP ranks and can start an epoch part-way (a resume); the evaluation
set is split into disjoint slices ``rank::world_size`` so that summed counts are exact.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Mapping
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler, Subset

from .batch_loader import TensorBatchLoader
from .in_memory import InMemorySplit
from .info import DATASET_INFO, DatasetInfo
from .load import load_split
from .locations import find_data_dir
from .synthetic import SYNTHETIC, SYNTHETIC_INFO, synthetic_split


@dataclasses.dataclass(frozen=True)
class EvalSettings:
    """How an evaluation reads a data set: keys of the training configuration, with its defaults (so a
    ``TrainConfig`` works wherever one is asked for, and :meth:`from_config` reads a run's)."""

    img_size: int | None = None
    pipeline: str = "auto"
    auto_augment: str | None = None  # a RandAugment recipe trains (and so evaluates) through timm
    interpolation: str = "bicubic"
    crop_pct: float = 0.875
    synthetic_size: int = 1024
    data_dir: str | None = None
    eval_batch_size: int = 0  # 0: 2 x batch_size
    batch_size: int = 128
    workers: int = 4

    @classmethod
    def from_config(cls, config: Mapping[str, Any], **overrides) -> EvalSettings:
        """The settings in a run's configuration (other keys are ignored), then ``overrides``."""
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{**{k: v for k, v in config.items() if k in names}, **overrides})


def eval_batches(name: str, split: str, settings: EvalSettings, device):
    """(loader, split, facts) for evaluating on split ``split`` of data set ``name`` in one process."""
    facts_ = facts(name, settings.img_size)
    data = load(name, split, settings.data_dir, settings.synthetic_size, settings.img_size)
    facts_ = with_present_classes(facts_, data)
    pipeline = choose_pipeline(
        settings.pipeline, data, facts_.image_size, settings.img_size, settings.auto_augment
    )
    return build_eval_loader(settings, data, facts_, pipeline, 0, 1, device), data, facts_


def data_names() -> list[str]:
    return sorted(DATASET_INFO) + [SYNTHETIC]


def facts(name: str, image_size: int | None = None) -> DatasetInfo:
    """The facts of data set ``name`` (``image_size`` sets the synthetic set's); an unknown name is one
    error listing the known ones."""
    if name == SYNTHETIC:
        return dataclasses.replace(SYNTHETIC_INFO, image_size=image_size or SYNTHETIC_INFO.image_size)
    if name not in DATASET_INFO:
        import difflib

        close = difflib.get_close_matches(name, data_names(), n=3)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise ValueError(f"unknown data set '{name}'.{hint} Known data sets: {', '.join(data_names())}")
    return DATASET_INFO[name]


def with_present_classes(facts_: DatasetInfo, split: Any) -> DatasetInfo:
    """``facts_`` with the number of classes the loaded ``split`` holds: a folder may hold a subset (the
    20-class Tiny-ImageNet), which is then trained and evaluated with a head of that many classes."""
    present = len(getattr(split, "classes", None) or ()) or facts_.num_classes
    return facts_ if present == facts_.num_classes else dataclasses.replace(facts_, num_classes=present)


def check_available(name: str, data_dir: str | None) -> None:
    """Raise the data layer's error (every place searched) when data set ``name`` is not on disk."""
    if name != SYNTHETIC:
        find_data_dir(name, data_dir)


def load(
    name: str, split: str, data_dir: str | None, synthetic_size: int = 1024, image_size: int | None = None
):
    """The data layer's split (``InMemorySplit`` or a Dataset of ``(image, label)``), or the synthetic set."""
    if name == SYNTHETIC:
        return synthetic_split(split, synthetic_size, image_size=image_size or SYNTHETIC_INFO.image_size)
    return load_split(name, split, data_dir=data_dir)


def is_in_memory(split: Any) -> bool:
    return hasattr(split, "images") and hasattr(split, "labels") and isinstance(split.images, torch.Tensor)


def class_names(split: Any, num_classes: int) -> list[str]:
    names = getattr(split, "classes", None)
    if names is None and hasattr(split, "dataset"):
        names = getattr(split.dataset, "classes", None)
    return list(names) if names and len(names) == num_classes else [str(i) for i in range(num_classes)]


def choose_pipeline(
    requested: str, train_split: Any, native_size: int, img_size: int | None, auto_augment
) -> str:
    in_memory, native = is_in_memory(train_split), img_size in (None, native_size)
    if requested == "tensor" and not in_memory:
        raise ValueError(
            "pipeline 'tensor' needs an in-memory data set (CIFAR, MNIST); use --pipeline timm for "
            "ImageNet-style folders"
        )
    if requested == "tensor" and not native:
        raise ValueError(
            f"pipeline 'tensor' trains at the data's native size {native_size}, but img_size is "
            f"{img_size}; use --pipeline timm to resize (the authors' CIFAR protocol at 224 does)"
        )
    if requested != "auto":
        return requested
    return "tensor" if in_memory and native and not auto_augment else "timm"


class Transformed(Dataset):
    """A Dataset of ``(image, label)`` (an ``InMemorySplit`` too) with a transform of the PIL image."""

    def __init__(self, base: Dataset, transform) -> None:
        self.base = base
        self.transform = transform
        self.classes = getattr(base, "classes", None)

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, i: int):
        img, label = self.base[i]
        if isinstance(img, torch.Tensor):
            from torchvision.transforms.functional import to_pil_image

            img = to_pil_image(img)
        if getattr(img, "mode", "RGB") not in ("RGB", "L"):
            img = img.convert("RGB")
        return self.transform(img), int(label)


class _OffsetSampler(Sampler):
    """Yields the wrapped sampler's indices from ``start`` on (a resumed epoch skips what it has seen)."""

    def __init__(self, sampler: Sampler) -> None:
        self.sampler = sampler
        self.start = 0

    def __iter__(self):
        return itertools.islice(self.sampler, self.start, None)

    def __len__(self) -> int:
        return max(0, len(self.sampler) - self.start)

    def set_epoch(self, epoch: int) -> None:
        self.sampler.set_epoch(epoch)


class TimmTrainLoader:
    """Per-image timm augmentation in a DataLoader; ``set_epoch`` reshuffles, ``skip`` resumes mid-epoch."""

    def __init__(self, dataset: Dataset, cfg, rank: int, world_size: int, pin_memory: bool) -> None:
        if cfg.repeated_aug > 1:
            from timm.data.distributed_sampler import RepeatAugSampler

            base = RepeatAugSampler(
                dataset, num_replicas=world_size, rank=rank, shuffle=True, num_repeats=cfg.repeated_aug
            )
        else:
            base = DistributedSampler(
                dataset, num_replicas=world_size, rank=rank, shuffle=True, seed=cfg.seed
            )
        self.sampler = _OffsetSampler(base)
        self.seed = cfg.seed
        # Worker seeds come from this generator, re-seeded per epoch: augmentation then depends on
        # (seed, epoch), not on how much of the global random stream the run has used.
        self.generator = torch.Generator()
        self.batch_size = cfg.batch_size
        self.full_batches = len(base) // cfg.batch_size
        self.loader = DataLoader(
            dataset,
            batch_size=cfg.batch_size,
            sampler=self.sampler,
            num_workers=cfg.workers,
            pin_memory=pin_memory,
            drop_last=True,
            generator=self.generator,
        )

    def set_epoch(self, epoch: int) -> None:
        self.sampler.start = 0
        self.sampler.set_epoch(epoch)
        self.generator.manual_seed(self.seed * 1_000_003 + epoch)

    def skip(self, batches: int) -> None:
        self.sampler.start = batches * self.batch_size

    def __len__(self) -> int:
        return self.full_batches

    def __iter__(self):
        return iter(self.loader)


class TensorTrainLoader:
    """The data layer's ``TensorBatchLoader`` with a resume offset (batches before it are drawn and dropped,
    so the loader's random stream stays exactly where an uninterrupted epoch would have it)."""

    def __init__(self, inner, random_erasing=None) -> None:
        self.inner, self.random_erasing, self._skip = inner, random_erasing, 0

    def set_epoch(self, epoch: int) -> None:
        self._skip = 0
        self.inner.set_epoch(epoch)

    def skip(self, batches: int) -> None:
        self._skip = batches

    def __len__(self) -> int:
        return len(self.inner)

    def __iter__(self):
        for x, y in itertools.islice(self.inner, self._skip, None):
            if self.random_erasing is not None:
                x = self.random_erasing(x)
            yield x, y


def build_train_loader(cfg, split, facts_: DatasetInfo, pipeline: str, rank: int, world_size: int, device):
    if pipeline == "tensor":
        inner = TensorBatchLoader(
            split,
            batch_size=cfg.batch_size,
            shuffle=True,
            augment=cfg.crop_padding > 0 or cfg.hflip > 0,
            crop_padding=cfg.crop_padding,
            flip=cfg.hflip > 0,
            mean=facts_.mean,
            std=facts_.std,
            device=device,
            drop_last=True,
            seed=cfg.seed,
            rank=rank,
            world_size=world_size,
        )
        erasing = None
        if cfg.reprob > 0:
            from timm.data.random_erasing import RandomErasing

            erasing = RandomErasing(cfg.reprob, mode=cfg.remode, max_count=cfg.recount, device=str(device))
        return TensorTrainLoader(inner, erasing)
    from timm.data import create_transform

    transform = create_transform(
        input_size=(facts_.channels, cfg.img_size or facts_.image_size, cfg.img_size or facts_.image_size),
        is_training=True,
        scale=tuple(cfg.scale),
        ratio=tuple(cfg.ratio),
        hflip=cfg.hflip,
        color_jitter=cfg.color_jitter,
        auto_augment=cfg.auto_augment,
        interpolation=cfg.interpolation,
        mean=facts_.mean,
        std=facts_.std,
        re_prob=cfg.reprob,
        re_mode=cfg.remode,
        re_count=cfg.recount,
    )
    return TimmTrainLoader(
        Transformed(split, transform), cfg, rank, world_size, torch.device(device).type == "cuda"
    )


def build_eval_loader(cfg, split, facts_: DatasetInfo, pipeline: str, rank: int, world_size: int, device):
    """Batches of this rank's slice ``rank::world_size`` of the evaluation split, in order, unaugmented
    (``cfg``: an :class:`EvalSettings` or the training configuration)."""
    batch = cfg.eval_batch_size or 2 * cfg.batch_size
    if pipeline == "tensor":
        if world_size > 1:
            split = InMemorySplit(
                split.images[rank::world_size],
                split.labels[rank::world_size],
                split.classes,
                split.name,
                split.split,
            )
        return TensorBatchLoader(split, batch, mean=facts_.mean, std=facts_.std, device=device)
    from timm.data import create_transform

    size = cfg.img_size or facts_.image_size
    transform = create_transform(
        input_size=(facts_.channels, size, size),
        is_training=False,
        interpolation=cfg.interpolation if cfg.interpolation != "random" else "bicubic",
        mean=facts_.mean,
        std=facts_.std,
        crop_pct=cfg.crop_pct,
    )
    dataset = Transformed(split, transform)
    if world_size > 1:
        dataset = Subset(dataset, list(range(rank, len(dataset), world_size)))
    pin = torch.device(device).type == "cuda"
    return DataLoader(dataset, batch_size=batch, num_workers=cfg.workers, pin_memory=pin)
