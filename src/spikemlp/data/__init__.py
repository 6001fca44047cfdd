"""Data sets and batch pipelines: readers for CIFAR-10/100, (Fashion-)MNIST and ImageNet-style folders,
the search for data folders, ``--download``, the tensor batch loader and ``spikemlp data check``."""

from .batch_loader import TensorBatchLoader, crop_flip
from .check import CheckReport, check_dataset, format_report
from .cifar import read_cifar10, read_cifar100
from .errors import DataError
from .fetch import download, md5_of
from .folders import ImageFileDataset, read_image_folder, read_tiny_imagenet
from .idx import read_fashion_mnist, read_idx, read_mnist
from .in_memory import InMemorySplit
from .info import DATASET_INFO, DatasetInfo, get_info
from .load import load_split
from .locations import find_data_dir, search_locations

__all__ = [
    "DATASET_INFO",
    "CheckReport",
    "DataError",
    "DatasetInfo",
    "ImageFileDataset",
    "InMemorySplit",
    "TensorBatchLoader",
    "check_dataset",
    "crop_flip",
    "download",
    "find_data_dir",
    "format_report",
    "get_info",
    "load_split",
    "md5_of",
    "read_cifar10",
    "read_cifar100",
    "read_fashion_mnist",
    "read_idx",
    "read_image_folder",
    "read_mnist",
    "read_tiny_imagenet",
    "search_locations",
]
