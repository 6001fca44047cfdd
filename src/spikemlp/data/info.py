"""What spikemlp knows about each data set: sizes, normalisation, folder names, files, official sums, URLs.

One table, so that the readers, the search for data folders, ``--download`` and ``spikemlp data check``
agree on names and files. Mean and std are the per-channel statistics of each training split in [0, 1]
(the values the field uses; the CIFAR-10 and Fashion-MNIST ones are checked against the real data in the
tests).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .errors import DataError


@dataclass(frozen=True)
class Download:
    """One file to fetch for ``--download``: mirrors tried in order, the official md5 of the file, and
    whether it is an archive to unpack (``tar.gz``, ``zip``) or a file to keep as it is."""

    filename: str
    urls: tuple[str, ...]
    md5: str
    archive: str | None = None


@dataclass(frozen=True)
class DatasetInfo:
    """Facts about one data set."""

    name: str
    num_classes: int
    image_size: int
    channels: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    folders: tuple[str, ...]  # names of its folder inside a data directory, the canonical one first
    layout: str  # a one-line description of the expected files, for error messages
    in_memory: bool = True
    # the in-memory formats: the files each split needs (idx files may also be plain, without .gz)
    split_files: dict[str, tuple[str, ...]] = field(default_factory=dict)
    official_md5: dict[str, str] = field(default_factory=dict)  # of the official release's files, where known
    downloads: tuple[Download, ...] = ()
    homepage: str = ""


_MNIST_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
_MNIST_LAYOUT = (
    "train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte "
    "(idx format, each .gz or plain)"
)
_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)


def _idx_downloads(mirrors: tuple[str, ...], md5: dict[str, str]) -> tuple[Download, ...]:
    return tuple(Download(name, tuple(m + name for m in mirrors), sum_) for name, sum_ in md5.items())


def _cifar_download(filename: str, md5: str) -> tuple[Download, ...]:
    return (Download(filename, (f"https://www.cs.toronto.edu/~kriz/{filename}",), md5, archive="tar.gz"),)


_FASHION_MD5 = {
    "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
    "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
    "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
    "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310",
}
_MNIST_MD5 = {
    "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
    "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
    "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
    "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
}

DATASET_INFO: dict[str, DatasetInfo] = {
    "cifar10": DatasetInfo(
        name="cifar10",
        num_classes=10,
        image_size=32,
        channels=3,
        mean=(0.4914, 0.4822, 0.4465),
        std=(0.2470, 0.2435, 0.2616),
        folders=("cifar-10-batches-py",),
        layout="data_batch_1 .. data_batch_5, test_batch, batches.meta (python pickle layout)",
        split_files={
            "train": tuple(f"data_batch_{i}" for i in range(1, 6)) + ("batches.meta",),
            "test": ("test_batch", "batches.meta"),
        },
        official_md5={
            "data_batch_1": "c99cafc152244af753f735de768cd75f",
            "data_batch_2": "d4bba439e000b95fd0a9bffe97cbabec",
            "data_batch_3": "54ebc095f3ab1f0389bbae665268c751",
            "data_batch_4": "634d18415352ddfa80567beed471001a",
            "data_batch_5": "482c414d41f54cd18b22e5b47cb7c3cb",
            "test_batch": "40351d587109b95175f43aff81a1287e",
            "batches.meta": "5ff9c542aee3614f3951f8cda6e48888",
        },
        downloads=_cifar_download("cifar-10-python.tar.gz", "c58f30108f718f92721af3b95e74349a"),
        homepage="https://www.cs.toronto.edu/~kriz/cifar.html",
    ),
    "cifar100": DatasetInfo(
        name="cifar100",
        num_classes=100,
        image_size=32,
        channels=3,
        mean=(0.5071, 0.4865, 0.4409),
        std=(0.2673, 0.2564, 0.2762),
        folders=("cifar-100-python",),
        layout="train, test, meta (python pickle layout with fine_labels and coarse_labels)",
        split_files={"train": ("train", "meta"), "test": ("test", "meta")},
        official_md5={
            "train": "16019d7e3df5f24257cddd939b257f8d",
            "test": "f0ef6b0ae62326f3e7ffdfab6717acfc",
            "meta": "7973b15100ade9c7d40fb424638fde48",
        },
        downloads=_cifar_download("cifar-100-python.tar.gz", "eb9058c3a382ffc7106e4002c42a8d85"),
        homepage="https://www.cs.toronto.edu/~kriz/cifar.html",
    ),
    "fashion_mnist": DatasetInfo(
        name="fashion_mnist",
        num_classes=10,
        image_size=28,
        channels=1,
        mean=(0.2860,),
        std=(0.3530,),
        # Debian's dataset-fashion-mnist installs /usr/share/datasets/fashion-mnist; torchvision keeps
        # its downloads in FashionMNIST/raw.
        folders=("fashion-mnist", "FashionMNIST/raw"),
        layout=_MNIST_LAYOUT,
        split_files=_MNIST_FILES,
        official_md5=_FASHION_MD5,
        downloads=_idx_downloads(
            ("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",), _FASHION_MD5
        ),
        homepage="https://github.com/zalandoresearch/fashion-mnist",
    ),
    "mnist": DatasetInfo(
        name="mnist",
        num_classes=10,
        image_size=28,
        channels=1,
        mean=(0.1307,),
        std=(0.3081,),
        folders=("mnist", "MNIST/raw"),
        layout=_MNIST_LAYOUT,
        split_files=_MNIST_FILES,
        official_md5=_MNIST_MD5,
        downloads=_idx_downloads(
            ("https://ossci-datasets.s3.amazonaws.com/mnist/", "http://yann.lecun.com/exdb/mnist/"),
            _MNIST_MD5,
        ),
        homepage="http://yann.lecun.com/exdb/mnist/",
    ),
    "tiny_imagenet": DatasetInfo(
        name="tiny_imagenet",
        num_classes=200,
        image_size=64,
        channels=3,
        mean=_IMAGENET_MEAN,
        std=_IMAGENET_STD,
        folders=("tiny-imagenet-200", "tiny-imagenet-200-20cls"),
        layout="wnids.txt, words.txt, train/<wnid>/images/*.JPEG, val/images/*.JPEG, val/val_annotations.txt",
        in_memory=False,
        downloads=(
            Download(
                "tiny-imagenet-200.zip",
                ("http://cs231n.stanford.edu/tiny-imagenet-200.zip",),
                "90528d7ca1a48142e341f4ef8d21d0de",
                archive="zip",
            ),
        ),
        homepage="http://cs231n.stanford.edu/",
    ),
    "imagenet": DatasetInfo(
        name="imagenet",
        num_classes=1000,
        image_size=224,
        channels=3,
        mean=_IMAGENET_MEAN,
        std=_IMAGENET_STD,
        folders=("imagenet",),
        layout="train/<class>/*.JPEG and val/<class>/*.JPEG (one folder per class)",
        in_memory=False,
        homepage="https://image-net.org/",
    ),
}

SPLITS = ("train", "test")

FASHION_MNIST_CLASSES = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
]
MNIST_CLASSES = [str(d) for d in range(10)]


def get_info(name: str) -> DatasetInfo:
    """The entry of ``DATASET_INFO`` for ``name``; an unknown name gets an error listing the known ones.
    Hyphens are accepted for underscores (``fashion-mnist``, ``tiny-imagenet``)."""
    key = name.strip().lower().replace("-", "_")
    if key not in DATASET_INFO:
        known = ", ".join(DATASET_INFO)
        raise DataError(f"unknown data set {name!r}; known data sets: {known}")
    return DATASET_INFO[key]


def check_split(split: str) -> str:
    """``split`` if it is 'train' or 'test' ('val' is accepted for 'test', as ImageNet names it)."""
    s = split.strip().lower()
    if s in ("val", "valid", "validation"):
        s = "test"
    if s not in SPLITS:
        raise DataError(f"unknown split {split!r}; use 'train' or 'test' ('val' means 'test')")
    return s
