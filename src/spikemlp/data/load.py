"""``load_split``: one entry point from a data set name to its data, wherever it lives."""

from __future__ import annotations

import os
from collections.abc import Callable

from .cifar import read_cifar10, read_cifar100
from .errors import DataError
from .fetch import download as download_dataset
from .folders import ImageFileDataset, read_image_folder, read_tiny_imagenet
from .idx import read_fashion_mnist, read_mnist
from .in_memory import InMemorySplit
from .info import check_split, get_info
from .locations import find_data_dir

_IN_MEMORY_READERS = {
    "cifar10": read_cifar10,
    "cifar100": read_cifar100,
    "fashion_mnist": read_fashion_mnist,
    "mnist": read_mnist,
}


def load_split(
    name: str,
    split: str,
    data_dir: str | os.PathLike | None = None,
    *,
    download: bool = False,
    transform: Callable | None = None,
) -> InMemorySplit | ImageFileDataset:
    """Data set ``name`` ('cifar10', 'cifar100', 'fashion_mnist', 'mnist', 'tiny_imagenet', 'imagenet'),
    ``split`` 'train' or 'test' ('test' is the val folder of the ImageNet-style sets).

    CIFAR and MNIST come back whole as an ``InMemorySplit``; the ImageNet-style sets as a streaming
    ``ImageFileDataset`` yielding ``(transform(PIL image), label)``. The folder is found as
    ``find_data_dir`` describes; with ``download=True`` a missing data set is fetched first.
    """
    info = get_info(name)
    split = check_split(split)
    if info.in_memory and transform is not None:
        raise DataError(
            f"{info.name} is read whole into tensors; transform= applies to the streamed "
            "ImageNet-style sets. Augment CIFAR/MNIST batches with TensorBatchLoader instead."
        )
    try:
        folder = find_data_dir(info.name, data_dir, split=split)
    except DataError:
        if not download:
            raise
        folder = download_dataset(info.name, data_dir)
    if info.in_memory:
        return _IN_MEMORY_READERS[info.name](folder, split)
    if info.name == "tiny_imagenet":
        return read_tiny_imagenet(folder, split, transform)
    return read_image_folder(folder, split, transform)
