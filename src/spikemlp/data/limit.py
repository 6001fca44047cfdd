"""The first ``limit`` images of a loader of (images, labels) batches (``--limit`` of eval and analyze)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator


def first_images(loader: Iterable, limit: int | None) -> Iterator:
    """The (images, labels) batches of ``loader``, the last one cut so that at most ``limit`` images come."""
    seen = 0
    for batch in loader:
        if not isinstance(batch, (tuple, list)) or len(batch) < 2:
            raise ValueError("the loader must yield (images, labels) pairs")
        images, labels = batch[0], batch[1]
        if limit is not None:
            if seen >= limit:
                return
            images, labels = images[: limit - seen], labels[: limit - seen]
        seen += images.shape[0]
        yield images, labels


def batch_count(loader: Iterable, limit: int | None) -> int | None:
    """How many batches ``first_images`` yields, where the loader says (None otherwise)."""
    count, size = getattr(loader, "__len__", lambda: None)(), getattr(loader, "batch_size", None)
    if limit is None or count is None:
        return count
    return min(count, -(-limit // size)) if isinstance(size, int) and size > 0 else None
