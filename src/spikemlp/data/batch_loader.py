"""Batches from an in-memory split, augmented a whole batch at a time with tensor operations.

Per-image Python transforms (PIL crop, flip, ToTensor, Normalize), not the model, would set the pace of
CIFAR-sized models on a small CPU (BENCHMARKS.md). Here each batch is one ``index_select`` of the uint8
images; the random crop with zero padding and the horizontal flip are one ``gather`` through a table of
every window (:func:`window_table`); normalisation is a float conversion, then a scale and a shift in
place. The result equals torchvision's ``RandomCrop(size, padding=p)`` (zero fill) +
``RandomHorizontalFlip()`` + ``ToTensor()`` + ``Normalize(mean, std)``, computed where the images are (the
whole split is moved to ``device`` once).

Randomness (order and augmentation) is drawn on the CPU from a generator seeded by (seed, epoch), so a
run is reproducible and gives the same batches on CPU and GPU. Under data parallelism every rank draws
the same permutation and takes its own contiguous, equally long slice of it.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Sequence

import numpy as np
import torch

from .errors import DataError
from .in_memory import InMemorySplit
from .info import DATASET_INFO


def _seed(*parts: int) -> int:
    """A 63-bit seed mixing ``parts`` (so (seed, epoch) pairs never collide the way seed + epoch would)."""
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(1, np.uint64)[0] >> 1)


@contextlib.contextmanager
def _intra_op_threads(n: int | None) -> Iterator[None]:
    """Run the block with ``n`` PyTorch intra-op threads, then restore the previous setting."""
    previous = torch.get_num_threads()
    if n is None or n == previous:
        yield
        return
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def window_table(
    h: int, w: int, padding: int, flip: bool, device: torch.device | str = "cpu"
) -> torch.Tensor:
    """Flat indices into an ``(h + 2p) x (w + 2p)`` padded image of every crop window, ``[K, h * w]``: row
    ``(oy * (2p + 1) + ox) * F + f`` is the window at offset ``(oy, ox)``, mirrored when ``f`` is 1 (``F`` =
    2 with ``flip``, else 1). A batch's gather index is then one ``index_select`` of this small table."""
    k, nf, wp = 2 * padding + 1, 2 if flip else 1, w + 2 * padding
    oy = torch.arange(k, device=device).view(k, 1, 1, 1, 1)
    ox = torch.arange(k, device=device).view(1, k, 1, 1, 1)
    f = torch.arange(nf, device=device).view(1, 1, nf, 1, 1)
    r = torch.arange(h, device=device).view(1, 1, 1, h, 1)
    c = torch.arange(w, device=device).view(1, 1, 1, 1, w)
    cols = torch.where(f == 1, ox + (w - 1) - c, ox + c)
    return ((oy + r) * wp + cols).reshape(k * k * nf, h * w)


def window_ids(offsets: torch.Tensor, flips: torch.Tensor | None, padding: int) -> torch.Tensor:
    """Row of ``window_table`` for each sample's ``offsets[b] = (row, col)`` and ``flips[b]``."""
    ids = offsets[:, 0] * (2 * padding + 1) + offsets[:, 1]
    return ids if flips is None else ids * 2 + flips.long()


def _gather_windows(
    padded: torch.Tensor, table: torch.Tensor, ids: torch.Tensor, h: int, w: int
) -> torch.Tensor:
    b, c = padded.shape[:2]
    index = table.index_select(0, ids).view(b, 1, h * w).expand(b, c, h * w)
    return padded.reshape(b, c, -1).gather(2, index).view(b, c, h, w)


def crop_flip(
    images: torch.Tensor, offsets: torch.Tensor, flips: torch.Tensor | None, padding: int
) -> torch.Tensor:
    """Crop every image of ``images`` ``[B, C, H, W]`` to ``H x W`` from its zero-padded version (``padding``
    on each side), the window starting at ``offsets[b] = (row, col)`` in ``[0, 2 * padding]``; then flip
    left-right the samples where ``flips[b]`` is True. Returns a new tensor of the same dtype."""
    b, c, h, w = images.shape
    padded = images.new_zeros(b, c, h + 2 * padding, w + 2 * padding)
    padded[:, :, padding : padding + h, padding : padding + w] = images
    table = window_table(h, w, padding, flips is not None, images.device)
    return _gather_windows(padded, table, window_ids(offsets, flips, padding), h, w)


class TensorBatchLoader:
    """Iterate over ``split`` in batches of ``(float images [B, C, H, W] normalised, int64 labels [B])``.

    Args:
        split: the data, e.g. ``load_split("cifar10", "train")``.
        batch_size: samples per batch (per rank).
        shuffle: a new order each epoch (seeded by ``seed`` and the epoch).
        augment: random crop (``crop_padding`` zero pixels on each side; 0 disables it) and, with ``flip``,
            random horizontal flip with probability 1/2.
        mean, std: per-channel normalisation in [0, 1] units; ``None`` takes the data set's from
            ``DATASET_INFO`` (``split.name``), or none (images in [0, 1]) for an unknown data set.
        device: where batches are made and returned; the split is copied there once.
        drop_last: drop the last incomplete batch, and under sharding the last ``N mod world_size``
            samples of the epoch's order (every shard then disjoint). Otherwise the last batch is short and
            shards are padded by wrapping around the order (equal lengths, a few samples seen twice).
        seed: base seed for order and augmentation.
        rank, world_size: this process's shard under data parallelism.
        threads: intra-op threads PyTorch uses while a batch is built on the CPU (the setting is restored
            before the batch is returned). The default 1 is deliberate: these small memory-bound ops gain
            little from more threads, and a fork/join per op stalls badly whenever another process
            competes for the cores. ``None`` keeps PyTorch's setting.

    Each pass advances the epoch (``set_epoch`` chooses it); batches depend on (seed, epoch, rank,
    world_size) and the settings alone.
    """

    def __init__(
        self,
        split: InMemorySplit,
        batch_size: int,
        shuffle: bool = False,
        augment: bool = False,
        crop_padding: int = 4,
        flip: bool = True,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        device: str | torch.device = "cpu",
        drop_last: bool = False,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        dtype: torch.dtype = torch.float32,
        threads: int | None = 1,
    ) -> None:
        if batch_size < 1:
            raise DataError(f"batch_size must be at least 1, got {batch_size}")
        if world_size < 1 or not 0 <= rank < world_size:
            raise DataError(f"rank must be in [0, world_size); got rank={rank}, world_size={world_size}")
        if crop_padding < 0:
            raise DataError(f"crop_padding must be >= 0, got {crop_padding}")
        channels = split.images.shape[1]
        if mean is None and std is None:
            info = DATASET_INFO.get(split.name)
            mean, std = (info.mean, info.std) if info is not None else ((0.0,) * channels, (1.0,) * channels)
        if mean is None or std is None or len(mean) != channels or len(std) != channels:
            raise DataError(
                f"mean and std need one value per channel ({channels}); got mean={mean}, std={std}"
            )
        if min(std) <= 0:
            raise DataError(f"std must be positive, got {std}")
        self.device = torch.device(device)
        self.images = split.images.to(self.device)
        self.labels = split.labels.to(self.device)
        self.batch_size, self.shuffle, self.augment, self.drop_last = batch_size, shuffle, augment, drop_last
        self.crop_padding, self.flip, self.seed, self.dtype = crop_padding, flip, seed, dtype
        self.rank, self.world_size = rank, world_size
        self.mean = tuple(float(m) for m in mean)
        self.std = tuple(float(s) for s in std)
        self.threads = threads if self.device.type == "cpu" else None
        std_t = torch.tensor(self.std, dtype=torch.float32)
        mean_t = torch.tensor(self.mean, dtype=torch.float32)
        self._scale = (1.0 / (255.0 * std_t)).view(1, -1, 1, 1).to(self.device, dtype)
        self._shift = (-mean_t / std_t).view(1, -1, 1, 1).to(self.device, dtype)
        self._epoch = 0
        if augment:
            _, c, h, w = self.images.shape
            self._table = window_table(h, w, crop_padding, flip, self.device)
            # The zero border is kept across batches; each batch only overwrites the interior (no
            # per-batch allocation and fill of a padded tensor).
            self._padded = self.images.new_zeros(batch_size, c, h + 2 * crop_padding, w + 2 * crop_padding)
        n = len(split)
        self.num_samples = n // world_size if drop_last else math.ceil(n / world_size)

    def set_epoch(self, epoch: int) -> None:
        """Make the next pass epoch ``epoch`` (its order and augmentation)."""
        self._epoch = epoch

    def __len__(self) -> int:
        if self.drop_last:
            return self.num_samples // self.batch_size
        return math.ceil(self.num_samples / self.batch_size)

    def indices(self, epoch: int) -> torch.Tensor:
        """The sample indices this rank visits in ``epoch``, in order (CPU int64)."""
        n = self.images.shape[0]
        if self.shuffle:
            g = torch.Generator().manual_seed(_seed(self.seed, epoch))
            order = torch.randperm(n, generator=g)
        else:
            order = torch.arange(n)
        total = self.num_samples * self.world_size
        if total > n:  # pad by wrapping so that every rank gets the same number of samples
            order = torch.cat([order] * (total // n) + [order[: total % n]])
        return order[self.rank * self.num_samples : (self.rank + 1) * self.num_samples]

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 images -> floating, scaled to [0, 1] and normalised by mean/std."""
        # convert, then scale and shift in place: faster on CPU than one mixed-type fused op
        return images.to(self.dtype).mul_(self._scale).add_(self._shift)

    def _crop_flip(self, idx: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        b, p = idx.numel(), self.crop_padding
        h, w = self.images.shape[2:]
        padded = self._padded[:b]
        padded[:, :, p : p + h, p : p + w] = self.images.index_select(0, idx)
        return _gather_windows(padded, self._table, ids, h, w)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        epoch = self._epoch
        self._epoch += 1
        order = self.indices(epoch)
        m = order.numel()
        ids = None
        if self.augment:
            g = torch.Generator().manual_seed(_seed(self.seed, epoch, self.rank, 1))
            # drawn for the whole epoch at once: two small CPU calls instead of two per batch
            offsets = torch.randint(0, 2 * self.crop_padding + 1, (m, 2), generator=g)
            flips = torch.rand(m, generator=g) < 0.5 if self.flip else None
            ids = window_ids(offsets, flips, self.crop_padding).to(self.device)
        order = order.to(self.device)
        for i in range(len(self)):
            lo, hi = i * self.batch_size, min((i + 1) * self.batch_size, m)
            idx = order[lo:hi]
            with _intra_op_threads(self.threads):
                x = self.images.index_select(0, idx) if ids is None else self._crop_flip(idx, ids[lo:hi])
                batch = self.normalize(x), self.labels.index_select(0, idx)
            yield batch
